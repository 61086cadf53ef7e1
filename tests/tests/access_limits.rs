//! Who may use an ingress rule (--allow-peer) and how many flows a rule or the node may hold
//! (--max-flows-per-rule, --max-flows): two real nexd on loopback, real echo servers.

use nexd_e2e::nexd::run_to_exit;
use nexd_e2e::pair::Pair;
use nexd_e2e::status::{count, flows};
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip, udp_echo_server};
use nexd_e2e::{free_port, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}{}", r.1, r.2);
    r.1
}

/// A connection that echoed one byte end to end, so it holds a flow on both nodes.
fn held(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("held connection echoes");
    c
}

/// The connection must be refused or reset promptly, never echo and never hang.
fn expect_refused(addr: SocketAddr) {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"hello");
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("refused flow echoed {n} bytes"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("refused flow hung instead of being reset")
        }
        Err(_) => {}
    }
}

fn egress(p: &Pair, port: u16, tunnel_port: u16) -> u16 {
    let rule = format!("tcp:{port}:100.100.0.2:{tunnel_port}");
    ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    port
}

#[test]
fn allow_peer_admits_listed_peers_resets_others_and_persists() {
    let echo = echo_server();
    let mut p = Pair::new(true);
    let a_key = p.a.keys.public.clone();
    let open = format!("tcp:7000:127.0.0.1:{echo}");
    p.b.start(
        &p.scratch,
        &[
            "--ingress".into(),
            open.clone(),
            // A comma-separated list, as nexctl takes it too.
            "--allow-peer".into(),
            format!("100.100.0.9,{a_key}"),
        ],
    );
    p.a.start(&p.scratch, &[]);

    // Allowed by key, from the command line.
    let e_key = egress(&p, free_port(), 7000);
    tcp_echo_roundtrip(local(e_key), 256 << 10, 1).unwrap();

    // At runtime: one rule allows someone else's address, one allows A's address.
    let other = format!("tcp:7001:127.0.0.1:{echo}");
    let mine = format!("tcp:7002:127.0.0.1:{echo}");
    let out = ok(p.b.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        &other,
        "--allow-peer",
        "100.100.0.9",
    ]));
    assert_eq!(
        out.trim(),
        format!("added ingress {other} allow-peer=100.100.0.9")
    );
    ok(p.b.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        &mine,
        "--allow-peer",
        "100.100.0.0/30",
    ]));
    let e_other = egress(&p, free_port(), 7001);
    let e_mine = egress(&p, free_port(), 7002);

    tcp_echo_roundtrip(local(e_mine), 256 << 10, 2).unwrap();
    let before = count(&p.b, "not_allowed");
    expect_refused(local(e_other));
    assert!(
        wait_until(Duration::from_secs(5), || count(&p.b, "not_allowed")
            > before),
        "refusal not counted"
    );

    let list = nexd_e2e::rules_as_given(&ok(p.b.nexctl(&["nexd", "proxy", "list"])));
    for line in [
        format!("ingress {open} allow-peer=100.100.0.9,{a_key}"),
        format!("ingress {other} allow-peer=100.100.0.9"),
        format!("ingress {mine} allow-peer=100.100.0.0/30"),
    ] {
        assert!(list.lines().any(|l| l == line), "{line:?} not in:\n{list}");
    }
    let json = ok(p.b.nexctl(&["--output", "json", "nexd", "proxy", "list"]));
    assert!(
        json.contains(r#""allowed_peers":["100.100.0.9"]"#),
        "{json}"
    );

    // Restart: the runtime allow-lists come back from the state file and still decide.
    p.b.proc()
        .terminate(Duration::from_secs(15))
        .expect("nexd exits");
    p.b.start(
        &p.scratch,
        &[
            "--ingress".into(),
            open.clone(),
            "--allow-peer".into(),
            a_key,
        ],
    );
    let list = nexd_e2e::rules_as_given(&ok(p.b.nexctl(&["nexd", "proxy", "list"])));
    assert!(
        list.contains(&format!("ingress {other} allow-peer=100.100.0.9")),
        "{list}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || tcp_echo_roundtrip(
            local(e_mine),
            4096,
            3
        )
        .is_ok()),
        "allowed rule does not work after restart"
    );
    expect_refused(local(e_other));
    // Nothing is left behind by refused flows.
    assert!(wait_until(Duration::from_secs(10), || flows(&p.b)
        .unwrap()
        .tcp
        == 0));
}

#[test]
fn bad_allow_peer_input_is_rejected_with_one_line() {
    let mut p = Pair::new(true);
    p.b.start(&p.scratch, &[]);
    let (code, _, err) = p.b.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        "tcp:7000:127.0.0.1:1",
        "--allow-peer",
        "bogus",
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("\"bogus\"") && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = p.b.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--egress",
        "tcp:7000:100.100.0.1:1",
        "--allow-peer",
        "10.0.0.1",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("ingress"), "{err}");
    assert_eq!(
        nexd_e2e::rules_as_given(&ok(p.b.nexctl(&["nexd", "proxy", "list"]))),
        ""
    );

    let conf = p.b.conf.display().to_string();
    let (code, err) = run_to_exit(
        &[
            "proxy",
            "--config",
            &conf,
            "--egress",
            "tcp:1:100.100.0.1:1",
            "--allow-peer",
            "10.0.0.1",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--allow-peer"), "{err}");
    let (code, err) = run_to_exit(
        &["proxy", "--config", &conf, "--max-pending-bytes", "1K"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("16K to 64M"), "{err}");
    for bad in ["1G", "8X", "0"] {
        let (code, err) = run_to_exit(
            &["proxy", "--config", &conf, "--max-tcp-window", bad],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(64), "--max-tcp-window {bad}: {err}");
        assert!(err.contains("--max-tcp-window"), "{err}");
    }
    let (code, err) = run_to_exit(
        &["proxy", "--config", &conf, "--tcp-congestion", "reno"],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "--tcp-congestion reno: {err}");
    assert!(
        err.contains("--tcp-congestion") && err.contains("cubic or bbr"),
        "{err}"
    );
}

#[test]
fn rule_flow_limit_refuses_new_flows_and_spares_live_ones() {
    let echo = echo_server();
    let usock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uecho = usock.local_addr().unwrap().port();
    udp_echo_server(usock);
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &[
            "--max-flows-per-rule".into(),
            "3".into(),
            "--ingress".into(),
            format!("tcp:7000:127.0.0.1:{echo}"),
            "--ingress".into(),
            format!("udp:7100:127.0.0.1:{uecho}"),
        ],
    );
    let e = free_port();
    let u = free_port();
    p.a.start(
        &p.scratch,
        &[
            "--egress".into(),
            format!("tcp:{e}:100.100.0.2:7000"),
            "--egress".into(),
            format!("udp:{u}:100.100.0.2:7100"),
        ],
    );

    let mut live: Vec<TcpStream> = (0..3).map(|_| held(local(e))).collect();
    let before = count(&p.b, "rule_limit");
    expect_refused(local(e));
    assert!(count(&p.b, "rule_limit") > before, "refusal not counted");
    // The live flows are untouched.
    for (i, c) in live.iter_mut().enumerate() {
        let msg = format!("still here {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    // Closing one frees its slot.
    drop(live.pop());
    assert!(
        wait_until(Duration::from_secs(10), || tcp_echo_roundtrip(
            local(e),
            64 << 10,
            4
        )
        .is_ok()),
        "slot not released after a flow closed"
    );

    // UDP: three client sockets fill the rule, a fourth is refused and counted.
    let clients: Vec<UdpSocket> = (0..4)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .collect();
    let echoes = |s: &UdpSocket, tag: &[u8]| {
        let mut buf = [0u8; 64];
        wait_until(Duration::from_secs(5), || {
            let _ = s.send_to(tag, local(u));
            matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == tag)
        })
    };
    for (i, s) in clients[..3].iter().enumerate() {
        assert!(
            echoes(s, format!("flow {i}").as_bytes()),
            "udp flow {i} failed"
        );
    }
    let before = count(&p.b, "rule_limit");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        let _ = clients[3].send_to(b"fourth", local(u));
        assert!(
            clients[3].recv(&mut buf).is_err(),
            "fourth udp flow was echoed"
        );
    }
    assert!(
        count(&p.b, "rule_limit") > before,
        "udp refusal not counted"
    );
    assert!(echoes(&clients[0], b"first again"), "live udp flow broken");
}

#[test]
fn total_flow_limit_refuses_new_flows_and_spares_live_ones() {
    let mut p = Pair::new(true);
    let e = p.start_tcp_path(echo_server(), &[], &["--max-flows", "2"]);
    let mut live: Vec<TcpStream> = (0..2).map(|_| held(local(e))).collect();
    let before = count(&p.a, "total_limit");
    expect_refused(local(e));
    assert!(count(&p.a, "total_limit") > before, "refusal not counted");
    live[0].write_all(b"y").unwrap();
    let mut b = [0u8; 1];
    live[0].read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y");
    live.clear();
    assert!(
        wait_until(Duration::from_secs(10), || tcp_echo_roundtrip(
            local(e),
            64 << 10,
            5
        )
        .is_ok()),
        "slots not released after flows closed"
    );
}

#[test]
fn small_pending_byte_limit_still_moves_data_intact() {
    let mut p = Pair::new(true);
    let limit = ["--max-pending-bytes", "16K"];
    let e = p.start_tcp_path(echo_server(), &limit, &limit);
    tcp_echo_roundtrip(local(e), 4 << 20, 6).unwrap();
}

#[test]
fn idle_udp_flows_close_after_the_timeout_and_free_their_slot() {
    let usock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uecho = usock.local_addr().unwrap().port();
    udp_echo_server(usock);
    let mut p = Pair::new(true);
    let idle = ["--udp-idle-timeout", "1", "--max-flows-per-rule", "1"];
    let mut b: Vec<String> = idle.iter().map(|s| s.to_string()).collect();
    b.extend(["--ingress".into(), format!("udp:7100:127.0.0.1:{uecho}")]);
    p.b.start(&p.scratch, &b);
    let u = free_port();
    let mut a: Vec<String> = idle.iter().map(|s| s.to_string()).collect();
    a.extend(["--egress".into(), format!("udp:{u}:100.100.0.2:7100")]);
    p.a.start(&p.scratch, &a);

    let echoes = |tag: &[u8]| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        wait_until(Duration::from_secs(5), || {
            let _ = s.send_to(tag, local(u));
            matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == tag)
        })
    };
    assert!(echoes(b"one"), "first flow failed");
    assert_eq!(flows(&p.a).unwrap().udp, 1);
    assert_eq!(flows(&p.b).unwrap().udp, 1);
    assert!(
        wait_until(Duration::from_secs(10), || flows(&p.a).unwrap().udp == 0
            && flows(&p.b).unwrap().udp == 0),
        "idle udp flows not closed"
    );
    // The one slot of each rule is free again: a new client gets through.
    assert!(echoes(b"two"), "slot not freed by the idle timeout");
}
