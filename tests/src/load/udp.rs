//! Many UDP flows: each from its own client socket (a distinct source port), each verified by
//! its own echo.

use crate::traffic::payload;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

/// What [`flows`] saw.
#[derive(Debug)]
pub struct UdpLoadReport {
    /// Flows whose echo came back intact.
    pub verified: usize,
    /// Distinct client source ports used (all sockets stay bound until the end).
    pub distinct_ports: usize,
    /// Datagrams sent again because no echo came back in time.
    pub retries: u64,
    /// Most retries any one flow needed.
    pub max_retries: u32,
    /// One line per failed flow.
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// How hard to push.
#[derive(Debug, Clone, Copy)]
pub struct UdpLoad {
    /// Number of flows (client sockets).
    pub flows: usize,
    /// Flows waiting for their echo at any moment.
    pub in_flight: usize,
    /// Sends per flow before giving up (UDP may drop; every retry is counted).
    pub attempts: u32,
    /// Wait for an echo before sending again.
    pub reply_timeout: Duration,
}

/// Runs `load.flows` flows against a UDP echo at `addr`. Each flow sends one datagram of
/// 16–527 bytes whose content is unique to the flow, so a reply carrying another flow's bytes
/// (a mix-up in the proxy's flow table) is reported, not mistaken for a late echo.
pub fn flows(rt: &Runtime, addr: SocketAddr, load: UdpLoad) -> UdpLoadReport {
    let start = Instant::now();
    let gate = Arc::new(Semaphore::new(load.in_flight));
    let tasks: Vec<_> = (0..load.flows)
        .map(|i| {
            let gate = gate.clone();
            rt.spawn(async move { one_flow(i, addr, load, gate).await })
        })
        .collect();
    let mut report = UdpLoadReport {
        verified: 0,
        distinct_ports: 0,
        retries: 0,
        max_retries: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    // Sockets are kept until every flow is done, so no two flows can share a port.
    let mut sockets = Vec::with_capacity(load.flows);
    let mut ports = HashSet::new();
    for t in tasks {
        match rt.block_on(t) {
            Ok(outcome) => {
                if let Some(p) = outcome.port {
                    ports.insert(p);
                }
                report.retries += u64::from(outcome.retries);
                report.max_retries = report.max_retries.max(outcome.retries);
                match outcome.result {
                    Ok(()) => report.verified += 1,
                    Err(e) => report.failures.push(e),
                }
                sockets.extend(outcome.socket);
            }
            Err(e) => report.failures.push(format!("task failed: {e}")),
        }
    }
    report.distinct_ports = ports.len();
    report.elapsed = start.elapsed();
    // Close the client sockets on the runtime they were registered with.
    rt.block_on(async move { drop(sockets) });
    report
}

struct Outcome {
    socket: Option<UdpSocket>,
    port: Option<u16>,
    retries: u32,
    result: Result<(), String>,
}

async fn one_flow(i: usize, addr: SocketAddr, load: UdpLoad, gate: Arc<Semaphore>) -> Outcome {
    let mut out = Outcome {
        socket: None,
        port: None,
        retries: 0,
        result: Ok(()),
    };
    let Ok(_permit) = gate.acquire().await else {
        out.result = Err(format!("flow {i}: gate closed"));
        return out;
    };
    let sock = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            out.result = Err(format!("flow {i}: bind: {e}"));
            return out;
        }
    };
    out.port = sock.local_addr().ok().map(|a| a.port());
    let msg = payload(16 + i % 512, 0x5eed_0000 + i as u64);
    let mut buf = vec![0u8; 2048];
    out.result = Err(format!("flow {i}: no echo after {} sends", load.attempts));
    for attempt in 0..load.attempts {
        if attempt > 0 {
            out.retries += 1;
        }
        if let Err(e) = sock.send_to(&msg, addr).await {
            out.result = Err(format!("flow {i}: send: {e}"));
            break;
        }
        // A late echo of an earlier attempt is identical to `msg`, so any reply either
        // proves the flow or is another flow's bytes.
        match tokio::time::timeout(load.reply_timeout, sock.recv_from(&mut buf)).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                out.result = Err(format!("flow {i}: recv: {e}"));
                break;
            }
            Ok(Ok((n, from))) if from == addr && buf[..n] == msg[..] => {
                out.result = Ok(());
                break;
            }
            Ok(Ok((n, from))) => {
                out.result = Err(format!(
                    "flow {i}: got {n} foreign bytes from {from} (sent {} bytes)",
                    msg.len()
                ));
                break;
            }
        }
    }
    out.socket = Some(sock);
    out
}
