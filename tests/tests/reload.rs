//! Reload: SIGHUP and `nexctl nexd reload` re-read the config file. Two real nexd on
//! loopback; B starts without A as a peer, so A's egress rule gets nowhere until B's file
//! gains A and B reloads. Bytes are checksummed end to end.

use nexd_e2e::nexd::{config, PeerSpec};
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use nexd_e2e::{free_port, wait_until};
use std::time::Duration;

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}", r.2);
    r.1
}

/// B's config with or without A as a peer, on `listen_port`.
fn b_config(p: &Pair, with_a: bool, listen_port: u16) -> String {
    let a_peer = [PeerSpec {
        public: &p.a.keys.public,
        allowed_ips: "100.100.0.1/32, fd00::1/128",
        endpoint: Some(format!("127.0.0.1:{}", p.a.wg_port)),
    }];
    config(
        &p.b.keys.private,
        "100.100.0.2/32, fd00::2/128",
        listen_port,
        if with_a { &a_peer } else { &[] },
    )
}

fn sighup(pid: u32) {
    // SAFETY: kill(2) on a PID this test started.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert_eq!(r, 0, "kill -HUP {pid}");
}

#[test]
fn sighup_and_nexctl_reload_apply_peer_changes_and_keep_running_on_a_bad_file() {
    let echo = echo_server();
    let mut p = Pair::new(false);
    let e = p.start_tcp_path(echo, &[], &["--connect-timeout", "2"]);
    let works = |seed| tcp_echo_roundtrip(local(e), 64 * 1024, seed);
    assert!(works(1).is_err(), "B accepted A before knowing it");

    // SIGHUP after B's file gains A: A gets through, and B is still running.
    std::fs::write(&p.b.conf, b_config(&p, true, p.b.wg_port)).unwrap();
    let b_pid = p.b.proc().pid().unwrap();
    sighup(b_pid);
    assert!(
        wait_until(Duration::from_secs(20), || works(2).is_ok()),
        "A never got through after SIGHUP:\n{}",
        p.b.log()
    );
    assert!(!p.b.proc().exited(), "SIGHUP killed nexd");
    assert!(p.b.log().contains("config reloaded"), "{}", p.b.log());
    let peers = ok(p.b.nexctl(&["nexd", "peers", "list"]));
    assert!(peers.contains(&p.a.keys.public), "{peers}");

    // An invalid file: exit 65 naming the problem; nothing changes.
    std::fs::write(&p.b.conf, "[Interface]\nPrivateKey = nonsense\n").unwrap();
    let (code, _, err) = p.b.nexctl(&["nexd", "reload"]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("PrivateKey"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    works(3).unwrap();
    sighup(b_pid);
    assert!(
        wait_until(Duration::from_secs(10), || p
            .b
            .log()
            .contains("running configuration kept")),
        "{}",
        p.b.log()
    );
    works(4).unwrap();

    // An [Interface] change is reported, not applied; peers are unchanged.
    std::fs::write(&p.b.conf, b_config(&p, true, free_port())).unwrap();
    let (code, out, err) = p.b.nexctl(&["nexd", "reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 peer(s) added, 0 removed, 0 changed"),
        "{out}"
    );
    assert!(err.contains("ListenPort"), "{err}");
    works(5).unwrap();

    // A removed from the file: reported, and A's traffic stops.
    std::fs::write(&p.b.conf, b_config(&p, false, p.b.wg_port)).unwrap();
    let out = ok(p.b.nexctl(&["--output", "json", "nexd", "reload"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["peers_removed"], 1, "{out}");
    let peers = ok(p.b.nexctl(&["nexd", "peers", "list"]));
    assert!(!peers.contains(&p.a.keys.public), "{peers}");
    assert!(works(6).is_err(), "A still gets through after its removal");
    // A counted its connects that B never answered (the first and this one).
    let (_, out, _) = p.a.nexctl(&["--output", "json", "nexd", "status"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["counters"]["egress_connect_failed"].as_u64() >= Some(2),
        "{out}"
    );
}
