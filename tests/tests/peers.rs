//! Peers changed in place (`nexctl nexd peers set`) and AllowedIPs that belong to one peer
//! only: two real nexd on loopback, traffic checked through every change, and the changes
//! surviving a restart.

use nexd_e2e::nexd::Keypair;
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use std::time::Duration;

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}{}", r.1, r.2);
    r.1
}

/// A's view of peer `key` in `peers list --output json`.
fn peer(p: &Pair, key: &str) -> serde_json::Value {
    let out = ok(p.a.nexctl(&["--output", "json", "nexd", "peers", "list"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["public_key"] == key).cloned())
        .unwrap_or_else(|| panic!("{key} not in {out}"))
}

#[test]
fn peers_set_changes_a_peer_in_place_and_allowed_ips_are_never_taken_silently() {
    let echo = echo_server();
    let mut p = Pair::new(true);
    let e = p.start_tcp_path(echo, &[], &[]);
    tcp_echo_roundtrip(local(e), 256 * 1024, 1).unwrap();
    let b = p.b.keys.public.clone();

    // A new peer may not take B's address.
    let c = Keypair::generate();
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &c.public,
        "--allowed-ips",
        "100.100.0.2/32",
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains(&b) && err.contains("100.100.0.2/32"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    tcp_echo_roundtrip(local(e), 64 * 1024, 2).unwrap();
    ok(p.a.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &c.public,
        "--allowed-ips",
        "10.50.0.0/24",
    ]));

    // Set in place: AllowedIPs grow, the session and the traffic go on.
    ok(p.a.nexctl(&[
        "nexd",
        "peers",
        "set",
        "--public-key",
        &b,
        "--allowed-ips",
        "100.100.0.2/32,fd00::2/128,10.9.0.0/24",
    ]));
    assert_eq!(
        peer(&p, &b)["allowed_ips"],
        serde_json::json!(["100.100.0.2/32", "fd00::2/128", "10.9.0.0/24"])
    );
    tcp_echo_roundtrip(local(e), 256 * 1024, 3).unwrap();
    // Nor may a set take another peer's network.
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "peers",
        "set",
        "--public-key",
        &b,
        "--allowed-ips",
        "100.100.0.2/32,10.50.0.0/24",
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains(&c.public), "{err}");
    // A keepalive: a new session, and the traffic goes on after it.
    ok(p.a.nexctl(&[
        "nexd",
        "peers",
        "set",
        "--public-key",
        &b,
        "--persistent-keepalive",
        "7",
    ]));
    assert_eq!(peer(&p, &b)["persistent_keepalive"], 7);
    tcp_echo_roundtrip(local(e), 256 * 1024, 4).unwrap();
    // Unknown peer: not found.
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "peers",
        "set",
        "--public-key",
        &Keypair::generate().public,
        "--persistent-keepalive",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no such peer"), "{err}");

    // The changes survive a restart.
    assert!(p
        .a
        .proc()
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    p.a.nexd = None;
    p.a.start(
        &p.scratch,
        &["--egress".into(), format!("tcp:{e}:100.100.0.2:7000")],
    );
    let bp = peer(&p, &b);
    assert_eq!(bp["persistent_keepalive"], 7, "{bp}");
    assert_eq!(
        bp["allowed_ips"],
        serde_json::json!(["100.100.0.2/32", "fd00::2/128", "10.9.0.0/24"])
    );
    tcp_echo_roundtrip(local(e), 64 * 1024, 5).unwrap();
}
