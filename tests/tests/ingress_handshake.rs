//! A peer that sends a SYN to an ingress rule and never completes the handshake (its final
//! ACK and everything after are dropped by a firewall rule in its namespace, so nexd sees a
//! SYN and then silence) must neither reach the local server nor hold the rule's only flow
//! slot for longer than --connect-timeout. Needs root, as the other namespace tests.

use nexd_e2e::netns::Background;
use nexd_e2e::wait_until;
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR};
use std::time::{Duration, Instant};

/// nexd's --connect-timeout in this test, which also bounds an incomplete handshake.
const CONNECT_TIMEOUT: u64 = 3;

fn status(w: &WgWorld) -> serde_json::Value {
    let (code, out, err) = w.nexctl(&["--output", "json", "nexd", "status"]);
    assert_eq!(code, 0, "nexctl status: {err}");
    serde_json::from_str(&out).unwrap_or_default()
}

fn tcp_flows(w: &WgWorld) -> u64 {
    status(w)["tcp_flows"].as_u64().unwrap_or(u64::MAX)
}

/// Established connections nexd has open to the local server (in nexd's namespace).
fn local_connections(w: &WgWorld) -> usize {
    w.net
        .a
        .run(&["ss", "-Htn", "state", "established", "( dport = :7001 )"])
        .map(|o| o.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

#[test]
fn a_syn_that_never_completes_neither_dials_nor_keeps_the_flow_slot() {
    let rules = [
        "--ingress",
        "tcp:7:127.0.0.1:7001",
        "--connect-timeout",
        &CONNECT_TIMEOUT.to_string(),
        "--max-flows-per-rule",
        "1",
    ]
    .map(String::from);
    let Some(w) = WgWorld::start("ingress_syn", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let testkit = WgWorld::testkit();
    let _server = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit);
        c.args(["tcp-echo", "127.0.0.1:7001"]);
        c
    })
    .expect("local server");
    // In the peer's namespace: drop every segment to nexd's port 7 that carries an ACK but
    // no SYN, i.e. the handshake's final ACK and all that would follow.
    let nft = |args: &[&str]| {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        w.net.b.run(&full).expect("nft")
    };
    nft(&["add", "table", "inet", "nexd_test"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "nexd_test",
        "out",
        "{ type filter hook output priority 0; }",
    ]);
    nft(&[
        "add",
        "rule",
        "inet",
        "nexd_test",
        "out",
        "ip",
        "daddr",
        NEXD_ADDR,
        "tcp",
        "dport",
        "7",
        "tcp",
        "flags",
        "&",
        "(syn|ack)",
        "==",
        "ack",
        "drop",
    ]);

    // The peer's kernel sends the SYN and gets the SYN-ACK (its connect succeeds); nexd
    // hears nothing more.
    let probe = w
        .net
        .b
        .run(&[
            &testkit,
            "tcp-probe",
            PEER_ADDR,
            &format!("{NEXD_ADDR}:7"),
            "10",
        ])
        .expect("tcp-probe");
    assert_eq!(probe.trim(), "connected", "the SYN-ACK must reach the peer");
    let syn_seen = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || tcp_flows(&w) == 1),
        "nexd never took the SYN: {}",
        w.nexd.log()
    );

    // While the handshake is incomplete: no connection to the local server.
    let dialled_early = wait_until(Duration::from_secs(1), || local_connections(&w) > 0);
    let observed_for = syn_seen.elapsed();

    // Within --connect-timeout (and a generous margin for a busy machine) the flow is gone.
    let freed = wait_until(Duration::from_secs(CONNECT_TIMEOUT + 15), || {
        tcp_flows(&w) == 0
    });
    let freed_after = syn_seen.elapsed();
    let s = status(&w);
    let incomplete = s["counters"]["ingress_handshake_incomplete"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "INGRESS_SYN dialled_early={dialled_early} (watched {observed_for:?}) \
         freed={freed} after {freed_after:?} incomplete={incomplete}"
    );
    assert!(
        !dialled_early && freed && incomplete == 1,
        "dialled before the handshake: {dialled_early}; slot freed: {freed}; \
         counted incomplete: {incomplete}\n{s}\n{}",
        w.nexd.log()
    );

    // The rule's only slot is usable again by a peer that completes its handshake.
    nft(&["delete", "table", "inet", "nexd_test"]);
    w.net
        .b
        .run(&[
            &testkit,
            "tcp-echo-check",
            &format!("{NEXD_ADDR}:7"),
            "65536",
            "3",
        ])
        .unwrap_or_else(|e| panic!("a complete connection after the timeout: {e}\n{s}"));
}

/// The dial waits for the handshake, so it must follow it at once: short connections back to
/// back from behind wireguard-go into an ingress rule all complete, none slower than 500 ms.
#[test]
fn short_ingress_connections_back_to_back_never_stall() {
    let rules = ["--ingress", "tcp:7:127.0.0.1:7001"].map(String::from);
    let Some(w) = WgWorld::start("ingress_serial", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let testkit = WgWorld::testkit();
    let _server = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit);
        c.args(["tcp-echo-close", "127.0.0.1:7001", "32"]);
        c
    })
    .expect("local server");
    let out = w
        .net
        .b
        .command(&testkit)
        .args([
            "conn-serial",
            &format!("{NEXD_ADDR}:7"),
            "1000",
            "120",
            "32",
        ])
        .output()
        .expect("run testkit conn-serial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().find(|l| l.starts_with("ok=")).unwrap_or("");
    eprintln!("INGRESS_SERIAL {summary}");
    let context = || format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.contains("ok=1000 "), "{}", context());
    assert!(summary.contains(" failed=0 "), "{}", context());
    assert!(summary.contains(" slow=0 "), "{}", context());
}
