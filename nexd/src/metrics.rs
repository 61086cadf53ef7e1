//! `--metrics-listen ADDR:PORT`: Prometheus text at `/metrics`, liveness at `/healthz`.
//!
//! A deliberately small HTTP/1.1 responder (GET only, one request per connection, bounded
//! request head and time), so a scraper or a health probe needs no extra machinery.

use crate::engine::{EngineHandle, EngineStatus};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request, and the engine to answer.
const DEADLINE: Duration = Duration::from_secs(5);

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, engine: EngineHandle, cancel: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(DEADLINE, answer(stream, &engine)).await;
                });
            }
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, engine: &EngineHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (code, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match engine.status().await {
            Ok(st) => (200, render(&st)),
            Err(e) => (503, format!("engine unavailable: {e}\n")),
        },
        ("GET" | "HEAD", "/healthz") => match engine.status().await {
            Ok(_) => (200, "ok\n".to_string()),
            Err(e) => (503, format!("engine unavailable: {e}\n")),
        },
        ("GET" | "HEAD", _) => (404, "not found: try /metrics or /healthz\n".to_string()),
        _ => (405, "method not allowed\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let ctype = if path == "/metrics" && code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// A label value, escaped as the text format wants.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: HELP and TYPE, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The per-server families (SOCKS5, HTTP proxy), labelled `kind` and `listen` as rules are
/// labelled `direction` and `rule`.
fn servers(o: &mut String, servers: &[crate::engine::gateways::GatewayStats]) {
    let label = |g: &crate::engine::gateways::GatewayStats| {
        format!(
            "kind=\"{}\",listen=\"{}\"",
            g.spec.gateway.kind,
            esc(&g.spec.gateway.listen.to_string())
        )
    };
    let each = |f: &dyn Fn(&crate::engine::gateways::GatewayStats) -> u64| {
        servers.iter().map(|g| (label(g), f(g))).collect::<Vec<_>>()
    };
    family(
        o,
        "nexd_server_active_flows",
        "gauge",
        "Flows open through the proxy server.",
        &each(&|g| g.active as u64),
    );
    family(
        o,
        "nexd_server_flows_total",
        "counter",
        "Flows opened through the proxy server.",
        &each(&|g| g.counters.flows_total),
    );
    let mut bytes = Vec::new();
    let mut refused = Vec::new();
    for g in servers {
        let c = &g.counters;
        for (way, v) in [
            ("to_tunnel", c.bytes_to_tunnel),
            ("to_host", c.bytes_to_host),
        ] {
            bytes.push((format!("{},way=\"{way}\"", label(g)), v));
        }
        for (reason, v) in [
            ("not_allowed", c.refused_not_allowed),
            ("limit", c.refused_limit),
            ("auth_failed", c.auth_failed),
            ("bad_request", c.bad_requests),
        ] {
            refused.push((format!("{},reason=\"{reason}\"", label(g)), v));
        }
    }
    family(
        o,
        "nexd_server_bytes_total",
        "counter",
        "TCP bytes through the proxy server: from clients into the tunnel (to_tunnel) and back (to_host).",
        &bytes,
    );
    family(
        o,
        "nexd_server_refused_requests_total",
        "counter",
        "Requests the proxy server refused, by reason.",
        &refused,
    );
    family(
        o,
        "nexd_server_connect_failures_total",
        "counter",
        "Destinations that refused or never answered a connection through the proxy server.",
        &each(&|g| g.counters.connect_failed),
    );
    family(
        o,
        "nexd_server_datagrams_total",
        "counter",
        "UDP datagrams relayed through the proxy server (UDP ASSOCIATE), both ways.",
        &each(&|g| g.counters.datagrams),
    );
}

/// The Prometheus text exposition of a status snapshot and of the process.
pub fn render(st: &EngineStatus) -> String {
    let mut o = String::with_capacity(4096);
    family(
        &mut o,
        "nexd_up",
        "gauge",
        "1 while the engine runs.",
        &[(String::new(), 1)],
    );
    let peer = |p: &crate::engine::PeerStatus| {
        format!("public_key=\"{}\"", esc(&p.public_key.to_string()))
    };
    let peers = &st.peers;
    family(
        &mut o,
        "nexd_peers",
        "gauge",
        "Configured peers.",
        &[(String::new(), peers.len() as u64)],
    );
    family(
        &mut o,
        "nexd_peer_rx_bytes_total",
        "counter",
        "Bytes received from the peer.",
        &peers
            .iter()
            .map(|p| (peer(p), p.rx_bytes))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "nexd_peer_tx_bytes_total",
        "counter",
        "Bytes sent to the peer.",
        &peers
            .iter()
            .map(|p| (peer(p), p.tx_bytes))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "nexd_peer_handshakes_total",
        "counter",
        "Handshakes completed with the peer.",
        &peers
            .iter()
            .map(|p| (peer(p), p.handshakes))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "nexd_peer_last_handshake_age_seconds",
        "gauge",
        "Seconds since the latest handshake with the peer (absent if none yet).",
        &peers
            .iter()
            .filter_map(|p| p.since_handshake.map(|d| (peer(p), d.as_secs())))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "nexd_tcp_flows",
        "gauge",
        "Open TCP flows.",
        &[(String::new(), st.tcp_flows as u64)],
    );
    family(
        &mut o,
        "nexd_udp_flows",
        "gauge",
        "Open UDP flows.",
        &[(String::new(), st.udp_flows as u64)],
    );
    family(
        &mut o,
        "nexd_host_sockets",
        "gauge",
        "Host sockets held for flows and rules (TCP connections until closed, ingress UDP flows, listeners).",
        &[(String::new(), st.host_sockets as u64)],
    );
    let rule = |r: &crate::engine::rules::RuleStats| {
        format!(
            "direction=\"{}\",rule=\"{}\"",
            r.rule.direction,
            esc(&r.rule.rule.to_string())
        )
    };
    let rules = &st.rule_stats;
    family(
        &mut o,
        "nexd_rule_active_flows",
        "gauge",
        "Flows open through the rule.",
        &rules
            .iter()
            .map(|r| (rule(r), r.active as u64))
            .collect::<Vec<_>>(),
    );
    family(
        &mut o,
        "nexd_rule_flows_total",
        "counter",
        "Flows opened through the rule.",
        &rules
            .iter()
            .map(|r| (rule(r), r.counters.flows_total))
            .collect::<Vec<_>>(),
    );
    let mut bytes = Vec::new();
    let mut refused = Vec::new();
    for r in rules {
        bytes.push((
            format!("{},way=\"to_tunnel\"", rule(r)),
            r.counters.bytes_to_tunnel,
        ));
        bytes.push((
            format!("{},way=\"to_host\"", rule(r)),
            r.counters.bytes_to_host,
        ));
        refused.push((
            format!("{},reason=\"not_allowed\"", rule(r)),
            r.counters.refused_not_allowed,
        ));
        refused.push((
            format!("{},reason=\"rule_limit\"", rule(r)),
            r.counters.refused_rule_limit,
        ));
    }
    family(
        &mut o,
        "nexd_rule_bytes_total",
        "counter",
        "TCP bytes through the rule: host side into the tunnel (to_tunnel) and back (to_host).",
        &bytes,
    );
    family(
        &mut o,
        "nexd_rule_refused_flows_total",
        "counter",
        "New flows the rule refused, by reason.",
        &refused,
    );
    servers(&mut o, &st.gateways);
    for (group, name, help) in [
        (
            "dropped_packets",
            "nexd_dropped_packets_total",
            "Packets dropped, by reason.",
        ),
        (
            "refused_flows",
            "nexd_refused_flows_total",
            "New flows refused, by reason (all rules).",
        ),
        (
            "handshakes",
            "nexd_handshake_rejections_total",
            "Handshake messages rejected, by reason.",
        ),
        (
            "tcp",
            "nexd_tcp_events_total",
            "TCP events, by kind (see nexctl nexd status).",
        ),
    ] {
        let samples: Vec<(String, u64)> = st
            .counters
            .iter()
            .filter(|(g, _, _)| *g == group)
            .map(|(_, n, v)| (format!("reason=\"{n}\""), *v))
            .collect();
        family(&mut o, name, "counter", help, &samples);
    }
    if let Ok(me) = procfs::process::Process::myself() {
        if let Some(rss) = me.status().ok().and_then(|s| s.vmrss) {
            family(
                &mut o,
                "nexd_process_resident_memory_bytes",
                "gauge",
                "Resident memory.",
                &[(String::new(), rss * 1024)],
            );
        }
        if let Ok(fds) = me.fd_count() {
            family(
                &mut o,
                "nexd_process_open_fds",
                "gauge",
                "Open file descriptors.",
                &[(String::new(), fds as u64)],
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gateways::{GatewayCounters, GatewayStats};

    #[test]
    fn proxy_servers_get_families_labelled_kind_and_listen() {
        let st = EngineStatus {
            public_key: nexd_common::Key([1; 32]),
            listen_addr: "127.0.0.1:51820".parse().unwrap(),
            addresses: Vec::new(),
            rules: Vec::new(),
            rule_stats: Vec::new(),
            gateways: vec![GatewayStats {
                spec: "socks5 [::1]:1080"
                    .parse::<nexd_common::Gateway>()
                    .unwrap()
                    .into(),
                active: 2,
                counters: GatewayCounters {
                    flows_total: 7,
                    bytes_to_tunnel: 100,
                    refused_not_allowed: 3,
                    auth_failed: 1,
                    ..Default::default()
                },
            }],
            peers: Vec::new(),
            tcp_flows: 0,
            udp_flows: 0,
            host_sockets: 0,
            counters: Vec::new(),
        };
        let text = render(&st);
        let l = r#"kind="socks5",listen="[::1]:1080""#;
        for want in [
            format!("nexd_server_active_flows{{{l}}} 2"),
            format!("nexd_server_flows_total{{{l}}} 7"),
            format!("nexd_server_bytes_total{{{l},way=\"to_tunnel\"}} 100"),
            format!("nexd_server_bytes_total{{{l},way=\"to_host\"}} 0"),
            format!("nexd_server_refused_requests_total{{{l},reason=\"not_allowed\"}} 3"),
            format!("nexd_server_refused_requests_total{{{l},reason=\"auth_failed\"}} 1"),
            format!("nexd_server_connect_failures_total{{{l}}} 0"),
            format!("nexd_server_datagrams_total{{{l}}} 0"),
            "# TYPE nexd_server_flows_total counter".to_string(),
        ] {
            assert!(text.contains(&want), "{want} missing:\n{text}");
        }
    }
}
