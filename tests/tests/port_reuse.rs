//! Connection identity against a real Linux peer: short connections back to back through an
//! egress rule, to a server behind wireguard-go that closes first (so its kernel holds every
//! finished connection in TIME-WAIT for 60 s), for long enough that nexd's tunnel-side source
//! ports go round their range several times. A SYN that reuses a 4-tuple the server still
//! holds must get through at once: no connection fails and none takes 500 ms (a SYN answered
//! with an ACK waits ~1 s for its retransmission). Needs root, as the other namespace tests.

use nexd_e2e::netns::Background;
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR};
use std::collections::HashMap;

/// nexd's tunnel-side source ports in this test: 256 of them, so they wrap every 256
/// connections.
const PORTS: (u16, u16) = (40000, 40255);
/// Connections in a run (about eight times round the ports) and the most time it may take.
const CONNECTIONS: u64 = 2000;
const MAX_SECONDS: u64 = 150;

fn fields(line: &str) -> HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn short_connections_reusing_tunnel_ports_never_stall() {
    let rules = vec![
        "--egress".to_string(),
        format!("tcp:7000:{PEER_ADDR}:7"),
        "--ephemeral-ports".to_string(),
        format!("{}-{}", PORTS.0, PORTS.1),
    ];
    let Some(w) = WgWorld::start("port_reuse", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let testkit = WgWorld::testkit();
    let _server = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit);
        c.args(["tcp-echo-close", &format!("{PEER_ADDR}:7"), "32"]);
        c
    })
    .expect("server behind wireguard-go");
    let out = w
        .net
        .a
        .command(&testkit)
        .args([
            "conn-serial",
            "127.0.0.1:7000",
            &CONNECTIONS.to_string(),
            &MAX_SECONDS.to_string(),
            "32",
        ])
        .output()
        .expect("run testkit conn-serial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().find(|l| l.starts_with("ok=")).unwrap_or("");
    eprintln!("PORT_REUSE {summary}");
    let f = fields(summary);
    let get = |k: &str| f.get(k).copied().unwrap_or(f64::NAN);
    let span = f64::from(PORTS.1 - PORTS.0 + 1);
    let (_, status, _) = w.nexctl(&["--output", "json", "nexd", "status"]);
    let context = || format!("{stdout}{stderr}\nstatus: {status}");
    assert!(
        get("ok") >= 3.0 * span,
        "the ports must wrap at least three times: {}",
        context()
    );
    assert_eq!(get("failed"), 0.0, "failed connections: {}", context());
    assert_eq!(
        get("slow"),
        0.0,
        "connections over 500 ms (a SYN answered with an ACK): {}",
        context()
    );
    assert!(get("max_ms") < 500.0, "{}", context());
    // 256 ports cannot stay out of use for 60 s at this rate: the reuses happened, and the
    // peer took them at once.
    let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    let reused = status["counters"]["ports_reused_early"]
        .as_u64()
        .unwrap_or(0);
    assert!(reused > 0, "no early reuse counted: {}", context());
    eprintln!("PORT_REUSE ports_reused_early={reused}");
}
