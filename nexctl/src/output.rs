//! Printing results as aligned text or as one JSON document.

use crate::cli::Output;
use nexd_common::api;
use nexd_common::{GatewaySpec, RuleSpec};
use serde_json::json;

/// `println!` that never panics: a reader that went away (`nexctl ... | head -1`) ends
/// nexctl quietly, as it does ripgrep; any other write error is exit 74 (EX_IOERR).
macro_rules! outln {
    ($($arg:tt)*) => {
        crate::output::write_line(format_args!($($arg)*))
    };
}

/// Writes one line to stdout; see [`outln!`].
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("nexctl: cannot write to stdout: {e}");
        std::process::exit(i32::from(crate::EX_IOERR));
    }
}

/// `cell` left-aligned in `width` columns. Not `{:<width$}`: format widths above 65,535
/// panic ("Formatting argument out of range"), and a peer with thousands of AllowedIPs
/// makes a column that wide.
fn pad(cell: &str, width: usize) -> String {
    let mut s = String::with_capacity(width.max(cell.len()));
    s.push_str(cell);
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.len())));
    s
}

fn direction_name(d: i32) -> &'static str {
    match api::Direction::try_from(d) {
        Ok(api::Direction::Ingress) => "ingress",
        Ok(api::Direction::Egress) => "egress",
        _ => "unknown",
    }
}

fn server_kind_name(k: i32) -> &'static str {
    match api::ProxyServerKind::try_from(k) {
        Ok(api::ProxyServerKind::Socks5) => "socks5",
        Ok(api::ProxyServerKind::Http) => "http-proxy",
        _ => "unknown",
    }
}

/// After add/remove of a rule.
pub fn done(out: Output, verb: &str, spec: &RuleSpec) {
    match out {
        Output::Text => outln!("{verb} {spec}"),
        Output::Json => {
            let allowed: Vec<String> = spec.allowed_peers.iter().map(|a| a.to_string()).collect();
            let mut v = json!({"result": verb, "direction": spec.rule.direction.to_string(),
                               "rule": spec.rule.rule.to_string(), "allowed_peers": allowed});
            if let Some(pp) = spec.proxy_protocol {
                v["proxy_protocol"] = json!(pp.to_string());
            }
            outln!("{v}")
        }
    }
}

/// After add/remove of a proxy server.
pub fn server_done(out: Output, verb: &str, spec: &GatewaySpec) {
    match out {
        Output::Text => outln!("{verb} {spec}"),
        Output::Json => {
            let allow: Vec<String> = spec.allow.iter().map(|a| a.to_string()).collect();
            outln!(
                "{}",
                json!({"result": verb, "kind": spec.gateway.kind.name(),
                       "listen": spec.gateway.listen.to_string(), "allow_destinations": allow})
            )
        }
    }
}

/// After add/remove of a peer.
pub fn peer_done(out: Output, verb: &str, key: &str) {
    match out {
        Output::Text => outln!("{verb} peer {key}"),
        Output::Json => outln!("{}", json!({"result": verb, "public_key": key})),
    }
}

/// After `reload`: what changed; warnings go to stderr in text mode.
pub fn reloaded(out: Output, r: &api::ReloadResponse) {
    match out {
        Output::Text => {
            outln!(
                "reloaded: {} peer(s) added, {} removed, {} changed",
                r.peers_added,
                r.peers_removed,
                r.peers_changed
            );
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
        }
        Output::Json => outln!(
            "{}",
            json!({"result": "reloaded", "peers_added": r.peers_added,
                   "peers_removed": r.peers_removed, "peers_changed": r.peers_changed,
                   "warnings": r.warnings})
        ),
    }
}

/// `proxy list`: one rule a line, then one proxy server a line, each as `proxy add` takes
/// it (`socks5 127.0.0.1:1080 allow-dest=100.100.0.0/24 origin=runtime`).
pub fn rules(out: Output, rules: &[api::ProxyRule], servers: &[api::ProxyServer]) {
    match out {
        Output::Text => {
            for r in rules {
                let mut line = format!("{} {}", direction_name(r.direction), r.rule);
                if !r.allowed_peers.is_empty() {
                    line += &format!(" allow-peer={}", r.allowed_peers.join(","));
                }
                if !r.proxy_protocol.is_empty() {
                    line += &format!(" proxy-protocol={}", r.proxy_protocol);
                }
                if !r.origin.is_empty() {
                    line += &format!(" origin={}", r.origin);
                }
                outln!("{line}");
            }
            for s in servers {
                let mut line = format!("{} {}", server_kind_name(s.kind), s.listen);
                if !s.allow_destinations.is_empty() {
                    line += &format!(" allow-dest={}", s.allow_destinations.join(","));
                }
                if !s.origin.is_empty() {
                    line += &format!(" origin={}", s.origin);
                }
                outln!("{line}");
            }
        }
        Output::Json => {
            let list: Vec<_> = rules
                .iter()
                .map(|r| {
                    let mut v = json!({"direction": direction_name(r.direction), "rule": r.rule,
                           "allowed_peers": r.allowed_peers, "origin": r.origin});
                    if !r.bind_addresses.is_empty() {
                        v["bind_addresses"] = json!(r.bind_addresses);
                    }
                    if !r.proxy_protocol.is_empty() {
                        v["proxy_protocol"] = json!(r.proxy_protocol);
                    }
                    v
                })
                .collect();
            let servers: Vec<_> = servers
                .iter()
                .map(|s| {
                    json!({"kind": server_kind_name(s.kind), "listen": s.listen,
                           "allow_destinations": s.allow_destinations, "origin": s.origin})
                })
                .collect();
            outln!("{}", json!({ "rules": list, "servers": servers }));
        }
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `status`.
pub fn status(out: Output, s: &api::GetStatusResponse) {
    match out {
        Output::Text => {
            let rows = [
                ("public key", s.public_key.clone()),
                ("addresses", s.addresses.join(", ")),
                ("listen port", s.listen_port.to_string()),
                ("uptime", human_duration(s.uptime_seconds)),
                ("peers", s.peer_count.to_string()),
                ("rules", s.rule_count.to_string()),
                ("servers", s.server_counters.len().to_string()),
                ("tcp flows", s.tcp_flows.to_string()),
                ("udp flows", s.udp_flows.to_string()),
                ("sockets", s.host_sockets.to_string()),
                ("open fds", format!("{} of {}", s.open_fds, s.fd_limit)),
                ("version", s.version.clone()),
            ];
            for (k, v) in rows {
                outln!("{:<12} {v}", format!("{k}:"));
            }
            for (group, title) in [
                ("dropped_packets", "dropped:"),
                ("refused_flows", "refused:"),
                ("handshakes", "handshakes:"),
                ("tcp", "tcp:"),
                ("api", "api:"),
            ] {
                let nonzero: Vec<String> = s
                    .counters
                    .iter()
                    .filter(|c| c.value > 0 && c.group == group)
                    .map(|c| format!("{}={}", c.name, c.value))
                    .collect();
                let line = match nonzero.is_empty() {
                    true => "none".to_string(),
                    false => nonzero.join(" "),
                };
                outln!("{title:<12} {line}");
            }
            for r in &s.rule_counters {
                let Some(rule) = &r.rule else { continue };
                outln!(
                    "rule:        {} {}  active={} total={} to_tunnel={} to_host={} refused_not_allowed={} refused_rule_limit={}",
                    direction_name(rule.direction),
                    rule.rule,
                    r.active_flows,
                    r.flows_total,
                    human_bytes(r.bytes_to_tunnel),
                    human_bytes(r.bytes_to_host),
                    r.refused_not_allowed,
                    r.refused_rule_limit
                );
            }
            for c in &s.server_counters {
                let Some(server) = &c.server else { continue };
                outln!(
                    "server:      {} {}  active={} total={} to_tunnel={} to_host={} refused_not_allowed={} refused_limit={} auth_failed={} bad_requests={} connect_failed={} datagrams={}",
                    server_kind_name(server.kind),
                    server.listen,
                    c.active_flows,
                    c.flows_total,
                    human_bytes(c.bytes_to_tunnel),
                    human_bytes(c.bytes_to_host),
                    c.refused_not_allowed,
                    c.refused_limit,
                    c.auth_failed,
                    c.bad_requests,
                    c.connect_failed,
                    c.datagrams
                );
            }
        }
        Output::Json => {
            let counters: serde_json::Map<String, serde_json::Value> = s
                .counters
                .iter()
                .map(|c| (c.name.clone(), json!(c.value)))
                .collect();
            let mut groups = serde_json::Map::new();
            for c in &s.counters {
                if let Some(g) = groups
                    .entry(c.group.clone())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                {
                    g.insert(c.name.clone(), json!(c.value));
                }
            }
            outln!(
                "{}",
                json!({
                    "public_key": s.public_key,
                    "addresses": s.addresses,
                    "listen_port": s.listen_port,
                    "uptime_seconds": s.uptime_seconds,
                    "peer_count": s.peer_count,
                    "rule_count": s.rule_count,
                    "tcp_flows": s.tcp_flows,
                    "udp_flows": s.udp_flows,
                    "host_sockets": s.host_sockets,
                    "open_fds": s.open_fds,
                    "fd_limit": s.fd_limit,
                    "counters": counters,
                    "counter_groups": groups,
                    "rules": s.rule_counters.iter().filter_map(|r| r.rule.as_ref().map(|rule| json!({
                        "direction": direction_name(rule.direction),
                        "rule": rule.rule,
                        "active_flows": r.active_flows,
                        "flows_total": r.flows_total,
                        "bytes_to_tunnel": r.bytes_to_tunnel,
                        "bytes_to_host": r.bytes_to_host,
                        "refused_not_allowed": r.refused_not_allowed,
                        "refused_rule_limit": r.refused_rule_limit,
                    }))).collect::<Vec<_>>(),
                    "servers": s.server_counters.iter().filter_map(|c| c.server.as_ref().map(|server| json!({
                        "kind": server_kind_name(server.kind),
                        "listen": server.listen,
                        "active_flows": c.active_flows,
                        "flows_total": c.flows_total,
                        "bytes_to_tunnel": c.bytes_to_tunnel,
                        "bytes_to_host": c.bytes_to_host,
                        "refused_not_allowed": c.refused_not_allowed,
                        "refused_limit": c.refused_limit,
                        "auth_failed": c.auth_failed,
                        "bad_requests": c.bad_requests,
                        "connect_failed": c.connect_failed,
                        "datagrams": c.datagrams,
                    }))).collect::<Vec<_>>(),
                    "version": s.version,
                })
            );
        }
    }
}

/// `peers list`.
pub fn peers(out: Output, peers: &[api::Peer]) {
    match out {
        Output::Text => {
            let rows: Vec<[String; 7]> = peers
                .iter()
                .map(|p| {
                    [
                        p.public_key.clone(),
                        if p.endpoint.is_empty() {
                            "-".into()
                        } else {
                            p.endpoint.clone()
                        },
                        p.allowed_ips.join(","),
                        p.latest_handshake_seconds_ago
                            .map(|s| format!("{} ago", human_duration(s)))
                            .unwrap_or_else(|| "never".into()),
                        human_bytes(p.rx_bytes),
                        human_bytes(p.tx_bytes),
                        p.origin.clone(),
                    ]
                })
                .collect();
            let header = [
                "PUBLIC KEY",
                "ENDPOINT",
                "ALLOWED IPS",
                "LATEST HANDSHAKE",
                "RX",
                "TX",
                "ORIGIN",
            ];
            let mut widths = header.map(str::len);
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            let line = |cells: [&str; 7]| {
                let s: Vec<String> = cells.iter().zip(widths).map(|(c, w)| pad(c, w)).collect();
                outln!("{}", s.join("  ").trim_end());
            };
            line(header);
            for r in &rows {
                line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
            }
        }
        Output::Json => {
            let list: Vec<_> = peers
                .iter()
                .map(|p| {
                    json!({
                        "public_key": p.public_key,
                        "endpoint": if p.endpoint.is_empty() { serde_json::Value::Null } else { json!(p.endpoint) },
                        "allowed_ips": p.allowed_ips,
                        "latest_handshake_seconds_ago": p.latest_handshake_seconds_ago,
                        "rx_bytes": p.rx_bytes,
                        "tx_bytes": p.tx_bytes,
                        "persistent_keepalive": p.persistent_keepalive,
                        "origin": p.origin,
                    })
                })
                .collect();
            outln!("{}", json!({ "peers": list }));
        }
    }
}

/// `version`.
pub fn version(out: Output, mine: &str, daemon: Option<&str>) {
    match out {
        Output::Text => {
            outln!("nexctl {mine}");
            match daemon {
                Some(v) => outln!("nexd {v}"),
                None => outln!("nexd unreachable"),
            }
        }
        Output::Json => outln!("{}", json!({"nexctl": mine, "nexd": daemon})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_takes_widths_a_format_width_cannot() {
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(pad("abcdef", 4), "abcdef");
        assert_eq!(pad("", 100_000).len(), 100_000);
    }
}
