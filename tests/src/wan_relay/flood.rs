//! `testkit udp-flood SINK DST SECONDS SIZE [MBIT]`: sends numbered datagrams of SIZE bytes
//! to DST for SECONDS (as fast as possible, or paced at MBIT) while a sink on SINK counts
//! what arrives, then prints
//! `sent=N received=N out_of_order=N sent_mbit=X received_mbit=X`. With a relay between
//! DST and SINK it measures the relay.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the sink saw.
#[derive(Default)]
struct Seen {
    received: u64,
    bytes: u64,
    out_of_order: u64,
}

fn sink(sock: UdpSocket, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut top = None;
    let mut buf = vec![0u8; 65_536];
    let mut quiet_since = Instant::now();
    // After `stop`, stragglers still queued in a relay get 500 ms of quiet (5 s at most).
    let mut hard_end = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            let end = *hard_end.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
            if quiet_since.elapsed() > Duration::from_millis(500) || Instant::now() > end {
                return seen;
            }
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        quiet_since = Instant::now();
        seen.received += 1;
        seen.bytes += n as u64;
        if n >= 8 {
            let mut s = [0u8; 8];
            s.copy_from_slice(&buf[..8]);
            let seq = u64::from_be_bytes(s);
            if top.is_some_and(|t| seq < t) {
                seen.out_of_order += 1;
            }
            top = Some(top.map_or(seq, |t: u64| t.max(seq)));
        }
    }
}

/// Runs the flood and prints the figures.
pub fn main(sink_addr: &str, dst: &str, secs: &str, size: &str, mbit: &str) -> Result<(), String> {
    let sink_addr: SocketAddr = sink_addr.parse().map_err(|_| "bad SINK")?;
    let dst: SocketAddr = dst.parse().map_err(|_| "bad DST")?;
    let secs: f64 = secs.parse().map_err(|_| "bad SECONDS")?;
    let size: usize = size.parse().map_err(|_| "bad SIZE")?;
    let mbit: f64 = mbit.parse().map_err(|_| "bad MBIT")?;
    if !(8..=65_000).contains(&size) || !(0.0..=600.0).contains(&secs) {
        return Err("SIZE must be 8..65000 and SECONDS at most 600".into());
    }
    let rx = socket2::Socket::new(
        socket2::Domain::for_address(sink_addr),
        socket2::Type::DGRAM,
        None,
    )
    .map_err(|e| e.to_string())?;
    let _ = rx.set_recv_buffer_size(8 << 20);
    rx.bind(&sink_addr.into())
        .map_err(|e| format!("bind {sink_addr}: {e}"))?;
    let rx: UdpSocket = rx.into();
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sink_thread = std::thread::spawn(move || sink(rx, s));
    let bind: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let tx = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    let mut msg = vec![0xa5u8; size];
    let start = Instant::now();
    let run = Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while start.elapsed() < run {
        msg[..8].copy_from_slice(&sent.to_be_bytes());
        if tx.send_to(&msg, dst).is_ok() {
            sent += 1;
        }
        if mbit > 0.0 && sent.is_multiple_of(16) {
            let due = Duration::from_secs_f64(sent as f64 * size as f64 * 8.0 / (mbit * 1e6));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let seen = sink_thread.join().map_err(|_| "sink panicked")?;
    let mb = |bytes: u64| bytes as f64 * 8.0 / elapsed / 1e6;
    println!(
        "sent={sent} received={} out_of_order={} sent_mbit={:.0} received_mbit={:.0}",
        seen.received,
        seen.out_of_order,
        mb(sent * size as u64),
        mb(seen.bytes)
    );
    Ok(())
}
