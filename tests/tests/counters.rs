//! What nexd rejects is counted where an operator sees it (`nexctl nexd status`): failed
//! handshakes, unknown peers, spoofed sources and packets for other addresses. Two real nexd
//! on loopback, each rejection provoked for real.

use nexd_e2e::nexd::{config, PeerSpec};
use nexd_e2e::pair::{Node, Pair};
use nexd_e2e::status::{count, flows};
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use nexd_e2e::{free_port, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Rewrites a node's config: its address, one peer (the other node) with `allowed_ips`, and
/// optional extra `[Peer]` lines.
fn write_conf(node: &Node, other: &Node, address: &str, allowed_ips: &str, extra: &str) {
    let peer = [PeerSpec {
        public: &other.keys.public,
        allowed_ips,
        endpoint: Some(format!("127.0.0.1:{}", other.wg_port)),
    }];
    let text = config(&node.keys.private, address, node.wg_port, &peer)
        .replace("\n[Peer]\n", &format!("\n[Peer]\n{extra}"));
    std::fs::write(&node.conf, text).unwrap();
}

/// A client through `port` gets nothing back: the flow cannot reach its destination.
fn no_echo(port: u16) {
    let Ok(mut c) = TcpStream::connect_timeout(&local(port), Duration::from_secs(5)) else {
        return;
    };
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let _ = c.write_all(b"ping");
    let mut buf = [0u8; 8];
    assert!(
        !matches!(c.read(&mut buf), Ok(n) if n > 0),
        "data crossed a tunnel that must not carry it"
    );
}

#[test]
fn preshared_key_mismatch_counts_failed_handshakes_and_carries_nothing() {
    let echo = echo_server();
    let mut p = Pair::new(true);
    let (psk1, psk2) = (
        nexd_e2e::nexd::Keypair::generate().public,
        nexd_e2e::nexd::Keypair::generate().public,
    );
    write_conf(
        &p.a,
        &p.b,
        "100.100.0.1/32",
        "100.100.0.2/32",
        &format!("PresharedKey = {psk1}\n"),
    );
    write_conf(
        &p.b,
        &p.a,
        "100.100.0.2/32",
        "100.100.0.1/32",
        &format!("PresharedKey = {psk2}\n"),
    );
    let e = p.start_tcp_path(echo, &[], &["--connect-timeout", "2"]);
    no_echo(e);
    assert!(
        wait_until(Duration::from_secs(10), || {
            count(&p.a, "handshake_failed") + count(&p.b, "handshake_failed") > 0
        }),
        "failed handshakes not counted"
    );
    assert_eq!(
        flows(&p.b).unwrap().tcp,
        0,
        "a flow opened without a session"
    );
}

#[test]
fn unknown_peer_is_counted_and_gets_no_answer() {
    let echo = echo_server();
    let mut p = Pair::new(false);
    let e = p.start_tcp_path(echo, &[], &["--connect-timeout", "2"]);
    // The connection makes A start a handshake that B cannot place.
    no_echo(e);
    assert!(
        wait_until(Duration::from_secs(10), || count(&p.b, "unknown_peer") > 0),
        "handshake from an unknown key not counted"
    );
    assert_eq!(flows(&p.b).unwrap().tcp, 0);
}

#[test]
fn spoofed_sources_and_foreign_destinations_are_dropped_and_counted() {
    let echo = echo_server();
    let mut p = Pair::new(true);
    // A claims 100.100.0.5, outside the AllowedIPs B gives it (100.100.0.1/32): every packet
    // it sends is a spoof in B's eyes. A routes all of 100.100.0.0/24 to B, so it also sends
    // to 100.100.0.3, an address B does not have.
    write_conf(&p.a, &p.b, "100.100.0.5/32", "100.100.0.0/24", "");
    write_conf(&p.b, &p.a, "100.100.0.2/32", "100.100.0.1/32", "");
    p.b.start(
        &p.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    let (spoof, foreign) = (free_port(), free_port());
    p.a.start(
        &p.scratch,
        &[
            "--connect-timeout".into(),
            "2".into(),
            "--egress".into(),
            format!("tcp:{spoof}:100.100.0.2:7000"),
        ],
    );
    no_echo(spoof);
    assert!(
        wait_until(Duration::from_secs(10), || count(&p.b, "spoofed_source")
            > 0),
        "spoofed source not counted"
    );
    assert_eq!(
        flows(&p.b).unwrap().tcp,
        0,
        "a spoofed packet opened a flow"
    );

    // Now give A an address B accepts, and aim one rule at an address B does not own.
    p.a.proc()
        .terminate(Duration::from_secs(15))
        .expect("nexd exits");
    write_conf(&p.a, &p.b, "100.100.0.1/32", "100.100.0.0/24", "");
    let good = free_port();
    p.a.start(
        &p.scratch,
        &[
            "--connect-timeout".into(),
            "2".into(),
            "--egress".into(),
            format!("tcp:{foreign}:100.100.0.3:7000"),
            "--egress".into(),
            format!("tcp:{good}:100.100.0.2:7000"),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || tcp_echo_roundtrip(
            local(good),
            4096,
            1
        )
        .is_ok()),
        "tunnel does not work with a valid source"
    );
    no_echo(foreign);
    assert!(
        wait_until(Duration::from_secs(10), || count(&p.b, "not_local") > 0),
        "packet for a foreign address not counted"
    );
    assert!(wait_until(Duration::from_secs(10), || flows(&p.b)
        .unwrap()
        .tcp
        == 0));
}
