//! The gRPC API and nexctl, end to end: real daemons, real sockets, real traffic.

use nexd_e2e::nexd::{run_to_exit_as, Keypair};
use nexd_e2e::pair::{nexctl_as, Pair};
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use nexd_e2e::{free_port, is_root, skip, wait_until};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}{}", r.1, r.2);
    r.1
}

/// A pair where B serves the echo server at tunnel port 7000 and A starts with no rules.
fn echo_pair() -> Pair {
    let echo = echo_server();
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    p.a.start(&p.scratch, &[]);
    p
}

#[test]
fn rules_added_at_runtime_work_at_once_are_removed_at_once_and_survive_restart() {
    let mut p = echo_pair();
    let e = free_port();
    let rule = format!("tcp:{e}:100.100.0.2:7000");
    assert!(
        TcpStream::connect(local(e)).is_err(),
        "port open before the rule exists"
    );

    let out = ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    assert_eq!(out.trim(), format!("added egress {rule}"));
    // No waiting: when nexctl returns, the port works.
    tcp_echo_roundtrip(local(e), 1 << 20, 1).unwrap();
    assert_eq!(
        nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        format!("egress {rule}")
    );
    let json = ok(p.a.nexctl(&["--output", "json", "nexd", "proxy", "list"]));
    assert_eq!(
        json.trim(),
        format!(
            r#"{{"rules":[{{"allowed_peers":[],"bind_addresses":["127.0.0.1","::1"],"direction":"egress","origin":"runtime","rule":"{rule}"}}],"servers":[]}}"#
        )
    );

    // A live connection across the removal.
    let mut live = TcpStream::connect(local(e)).unwrap();
    ok(p.a.nexctl(&["nexd", "proxy", "remove", "--egress", &rule]));
    assert!(
        TcpStream::connect(local(e)).is_err(),
        "new connections still accepted after remove"
    );
    assert_eq!(
        nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        ""
    );
    // The live connection still works (removal drains, it does not cut).
    {
        use std::io::{Read, Write};
        live.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        live.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        live.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
    }

    ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    tcp_echo_roundtrip(local(e), 4096, 2).unwrap();

    // SIGTERM, then restart with the same state dir: the rule is back and works.
    let status = p.a.proc().terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()));
    assert!(!p.a.socket.exists(), "socket not removed on shutdown");
    p.a.nexd = None;
    p.a.start(&p.scratch, &[]);
    assert_eq!(
        nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        format!("egress {rule}")
    );
    tcp_echo_roundtrip(local(e), 1 << 20, 3).unwrap();
}

#[test]
fn peers_added_and_removed_at_runtime_decide_who_reaches_an_ingress() {
    let echo = echo_server();
    let mut p = Pair::new(false);
    p.b.start(
        &p.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    let e = free_port();
    p.a.start(
        &p.scratch,
        &[
            "--egress".into(),
            format!("tcp:{e}:100.100.0.2:7000"),
            "--connect-timeout".into(),
            "2".into(),
        ],
    );
    // B does not know A yet: the connection cannot be established.
    assert!(tcp_echo_roundtrip(local(e), 100, 1).is_err());

    let a_pub = p.a.keys.public.clone();
    let endpoint = format!("127.0.0.1:{}", p.a.wg_port);
    ok(p.b.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &a_pub,
        "--allowed-ips",
        "100.100.0.1/32,fd00::1/128",
        "--endpoint",
        &endpoint,
        "--persistent-keepalive",
        "25",
    ]));
    // B starts a handshake as soon as the peer is added (it has a keepalive).
    let mut last = String::new();
    let reached = wait_until(Duration::from_secs(10), || {
        match tcp_echo_roundtrip(local(e), 64 * 1024, 2) {
            Ok(()) => true,
            Err(err) => {
                last = err;
                false
            }
        }
    });
    assert!(
        reached,
        "A never reached B's ingress after peers add: {last}"
    );
    let peers = ok(p.b.nexctl(&["nexd", "peers", "list"]));
    assert!(
        peers.contains(&a_pub) && peers.contains("100.100.0.1/32"),
        "{peers}"
    );
    let json = ok(p.b.nexctl(&["--output", "json", "nexd", "peers", "list"]));
    assert!(
        json.contains("\"rx_bytes\"") && json.contains(&a_pub),
        "{json}"
    );
    // Duplicate add is an error.
    let dup = p.b.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &a_pub,
        "--allowed-ips",
        "100.100.0.1/32",
    ]);
    assert_eq!(dup.0, 1, "{dup:?}");

    ok(p.b.nexctl(&["nexd", "peers", "remove", "--public-key", &a_pub]));
    assert!(
        tcp_echo_roundtrip(local(e), 100, 3).is_err(),
        "removed peer still reaches the ingress"
    );
    let status = ok(p.b.nexctl(&["nexd", "status"]));
    assert!(status.contains("peers:       0"), "{status}");
}

#[test]
fn bad_api_input_is_rejected_and_the_daemon_keeps_proxying() {
    let p = echo_pair();
    let e = free_port();
    let rule = format!("tcp:{e}:100.100.0.2:7000");
    ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    let bad_key = Keypair::generate().public[..20].to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["nexd", "proxy", "add", "--egress", "tcp:0:100.100.0.2:80"],
            65,
            "\"0\"",
        ),
        (
            vec![
                "nexd",
                "proxy",
                "add",
                "--egress",
                "tcp:70000:100.100.0.2:80",
            ],
            65,
            "\"70000\"",
        ),
        (
            vec!["nexd", "proxy", "add", "--ingress", "icmp:80:127.0.0.1:80"],
            65,
            "\"icmp\"",
        ),
        (
            vec!["nexd", "proxy", "add", "--egress", "tcp:80:nope:80"],
            65,
            "\"nope\"",
        ),
        (
            vec!["nexd", "proxy", "add", "--egress", "garbage"],
            65,
            "too few fields",
        ),
        (
            vec!["nexd", "proxy", "add", "--egress", &rule],
            1,
            "already exists",
        ),
        (
            vec![
                "nexd",
                "proxy",
                "remove",
                "--ingress",
                "tcp:443:127.0.0.1:8080",
            ],
            1,
            "no such rule",
        ),
        (
            vec![
                "nexd",
                "peers",
                "add",
                "--public-key",
                &bad_key,
                "--allowed-ips",
                "10.0.0.1/32",
            ],
            65,
            &bad_key,
        ),
        (
            vec![
                "nexd",
                "peers",
                "add",
                "--public-key",
                "x",
                "--allowed-ips",
                "300.1.1.1/32",
            ],
            65,
            "invalid public key",
        ),
        (
            vec!["nexd", "peers", "remove", "--public-key", "AAAA"],
            65,
            "AAAA",
        ),
        (vec!["nexd", "proxy", "add"], 64, "--ingress"),
        (
            vec![
                "nexd",
                "proxy",
                "add",
                "--ingress",
                "tcp:1:1.1.1.1:1",
                "--egress",
                "tcp:1:1.1.1.1:1",
            ],
            64,
            "cannot be used",
        ),
        (vec!["nexd", "frobnicate"], 64, "frobnicate"),
    ];
    for (args, code, needle) in cases {
        let (c, out, err) = p.a.nexctl(&args);
        assert_eq!(c, code, "{args:?}: {out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr {err:?} should mention {needle:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line expected: {err:?}"
        );
    }
    // Over the raw API too: an egress rule whose port is taken fails cleanly.
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_rule = format!("tcp:{}:100.100.0.2:7000", busy.local_addr().unwrap().port());
    let (c, _, err) =
        p.a.nexctl(&["nexd", "proxy", "add", "--egress", &busy_rule]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("already in use"), "{err}");
    // Still alive and proxying, with the state unchanged.
    tcp_echo_roundtrip(local(e), 256 * 1024, 9).unwrap();
    assert_eq!(
        nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"]))),
        format!("egress {rule}")
    );
}

#[test]
fn unreachable_daemon_is_exit_69_naming_the_socket() {
    let (c, _, err) = nexctl_as(
        None,
        std::path::Path::new("/nonexistent/nexd.sock"),
        &["nexd", "status"],
    );
    assert_eq!(c, 69);
    assert!(err.contains("/nonexistent/nexd.sock"), "{err}");
    let (c, out, _) = nexctl_as(
        None,
        std::path::Path::new("/nonexistent/nexd.sock"),
        &["version"],
    );
    assert_eq!(c, 0);
    assert!(
        out.contains("nexctl ") && out.contains("unreachable"),
        "{out}"
    );
}

#[test]
fn socket_is_private_single_owner_and_replaces_stale_ones() {
    let mut p = echo_pair();
    let mode = std::fs::metadata(&p.a.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let state_mode = std::fs::metadata(&p.a.state_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(state_mode, 0o700);
    let v = ok(p.a.nexctl(&["version"]));
    assert!(v.contains("nexd 0."), "{v}");

    // Another user cannot connect (nexd runs as nobody; root would bypass permissions).
    if is_root() {
        let (c, _, err) = nexctl_as(Some("daemon"), &p.a.socket, &["nexd", "status"]);
        assert_eq!(c, 77, "EX_NOPERM: {err}");
        assert!(err.to_lowercase().contains("permission denied"), "{err}");
    } else {
        skip(
            "socket_is_private (second uid)",
            "needs root to switch users",
        );
    }

    // A second daemon on the same socket refuses to start.
    let socket = p.a.socket.display().to_string();
    let state = p.a.state_dir.display().to_string();
    let conf = p.a.conf.display().to_string();
    // As the first daemon's user: root would refuse the directories nobody owns.
    let (code, err) = run_to_exit_as(
        true,
        &[
            "--state-dir",
            &state,
            "--unix-socket",
            &socket,
            "proxy",
            "--config",
            &conf,
        ],
        Duration::from_secs(5),
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("already serving") && err.contains(&socket),
        "{err}"
    );
    assert!(p.a.socket.exists(), "the live daemon's socket was removed");

    // SIGKILL leaves a stale socket; the next start replaces it.
    let pid = p.a.proc().pid().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        std::os::unix::net::UnixStream::connect(&p.a.socket).is_err()
    }));
    assert!(p.a.socket.exists(), "expected a stale socket after SIGKILL");
    p.a.nexd = None;
    p.a.start(&p.scratch, &[]);
    ok(p.a.nexctl(&["nexd", "status"]));
}

#[test]
fn a_hundred_parallel_calls_leave_a_consistent_table() {
    let mut p = echo_pair();
    // 100 concurrent adds of distinct ingress rules (no host ports involved)...
    let rules: Vec<String> = (0..100)
        .map(|i| format!("tcp:{}:127.0.0.1:9", 20000 + i))
        .collect();
    let socket = p.a.socket.clone();
    let adds: Vec<_> = rules
        .iter()
        .cloned()
        .map(|r| {
            let s = socket.clone();
            std::thread::spawn(move || {
                nexctl_as(None, &s, &["nexd", "proxy", "add", "--ingress", &r]).0
            })
        })
        .collect();
    assert!(adds.into_iter().all(|h| h.join().unwrap() == 0));
    // ...then 50 concurrent removes interleaved with 50 duplicate adds (which must fail).
    let mut handles = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let (s, r) = (socket.clone(), r.clone());
        let verb = if i % 2 == 0 { "remove" } else { "add" };
        handles.push(std::thread::spawn(move || {
            (
                verb,
                nexctl_as(None, &s, &["nexd", "proxy", verb, "--ingress", &r]).0,
            )
        }));
    }
    for h in handles {
        let (verb, code) = h.join().unwrap();
        assert_eq!(code, if verb == "remove" { 0 } else { 1 }, "{verb}");
    }
    let listed: std::collections::BTreeSet<String> =
        nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"])))
            .lines()
            .map(str::to_string)
            .collect();
    let want: std::collections::BTreeSet<String> = rules
        .iter()
        .skip(1)
        .step_by(2)
        .map(|r| format!("ingress {r}"))
        .collect();
    assert_eq!(listed, want);
    // The state file agrees with the table.
    let state: String = std::fs::read_to_string(p.a.state_dir.join("state.json")).unwrap();
    for r in &want {
        assert!(state.contains(r.as_str()), "{r} missing from state file");
    }
    assert_eq!(state.matches("ingress tcp:").count(), 50);
    let _ = p.a.proc().terminate(Duration::from_secs(15));
}

#[test]
fn corrupt_state_file_names_the_file() {
    let p = Pair::new(true);
    std::fs::create_dir_all(&p.a.state_dir).unwrap();
    let f = p.a.state_dir.join("state.json");
    std::fs::write(&f, "{ not json").unwrap();
    if is_root() {
        // The state dir must be the daemon's own (nexd runs as nobody, below).
        for x in [&p.a.state_dir, &f] {
            std::os::unix::fs::chown(x, Some(65534), Some(65534)).unwrap();
        }
    }
    let (code, err) = run_to_exit_as(
        true,
        &[
            "--state-dir",
            &p.a.state_dir.display().to_string(),
            "--unix-socket",
            &p.a.socket.display().to_string(),
            "proxy",
            "--config",
            &p.a.conf.display().to_string(),
        ],
        Duration::from_secs(5),
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains(&f.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn reflection_lists_the_service() {
    let p = echo_pair();
    let services = nexd_e2e::reflection::list_services(&p.a.socket).unwrap();
    assert!(services.iter().any(|s| s == "nexd.v1.Nexd"), "{services:?}");
}

#[test]
fn a_state_file_of_another_interface_is_refused_naming_both_keys() {
    let mut p = echo_pair();
    let e = free_port();
    ok(p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--egress",
        &format!("tcp:{e}:100.100.0.2:7000"),
    ]));
    assert!(p
        .a
        .proc()
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    // B's config with A's state dir: A's runtime rule must not be restored into B.
    let state = p.a.state_dir.display().to_string();
    let conf = p.b.conf.display().to_string();
    let sock = p.scratch.path().join("other.sock").display().to_string();
    // As A's user, who owns A's state dir (the state file is refused before the socket).
    let (code, err) = run_to_exit_as(
        true,
        &[
            "--state-dir",
            &state,
            "--unix-socket",
            &sock,
            "proxy",
            "--config",
            &conf,
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&p.a.keys.public) && err.contains(&p.b.keys.public),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn lists_show_where_each_rule_and_peer_came_from() {
    let mut p = echo_pair();
    let flag_list = ok(p.b.nexctl(&["nexd", "proxy", "list"]));
    assert!(
        flag_list.lines().any(|l| l.ends_with(" origin=flag")),
        "{flag_list}"
    );
    let rule = format!("tcp:{}:100.100.0.2:7000", free_port());
    ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    let list = ok(p.a.nexctl(&["nexd", "proxy", "list"]));
    assert_eq!(list.trim(), format!("egress {rule} origin=runtime"));

    // Peers: B from the config file, C added at runtime, then B removed at runtime.
    let origin = |p: &Pair, key: &str| -> String {
        let out = ok(p.a.nexctl(&["--output", "json", "nexd", "peers", "list"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["public_key"] == key))
            .map(|x| x["origin"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let b = p.b.keys.public.clone();
    let c = Keypair::generate().public;
    assert_eq!(origin(&p, &b), "config");
    ok(p.a.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &c,
        "--allowed-ips",
        "10.77.0.0/24",
    ]));
    assert_eq!(origin(&p, &c), "runtime");
    ok(p.a.nexctl(&["nexd", "peers", "remove", "--public-key", &b]));
    assert_eq!(origin(&p, &b), "config-removed");
    let text = ok(p.a.nexctl(&["nexd", "peers", "list"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&b) && l.ends_with("config-removed")),
        "{text}"
    );

    // At the next start, one line says what the state file changed.
    assert!(p
        .a
        .proc()
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    p.a.nexd = None;
    p.a.start(&p.scratch, &[]);
    let log = p.a.log();
    let line = log
        .lines()
        .find(|l| l.contains("state file applied"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains("rules_restored=1")
            && line.contains("peers_added_or_changed=1")
            && line.contains("config_peers_removed=1"),
        "{line}"
    );
}
