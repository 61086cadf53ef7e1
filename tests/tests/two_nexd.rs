//! Two real nexd processes peered over loopback: egress on A → WireGuard → ingress on B →
//! a real local server. nexd runs as `nobody` whenever the suite runs as root.

use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{self, echo_server, local, tcp_echo_roundtrip, udp_echo_check};
use nexd_e2e::{free_port, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Starts B with `ingress` rules and A with `egress` rules (A = 100.100.0.1 / fd00::1,
/// B = 100.100.0.2 / fd00::2), both running when this returns.
fn pair(egress: &[String], ingress: &[String]) -> Pair {
    let flags = |flag: &str, rules: &[String]| -> Vec<String> {
        rules
            .iter()
            .flat_map(|r| [flag.to_string(), r.clone()])
            .collect()
    };
    let mut p = Pair::new(true);
    p.b.start(&p.scratch, &flags("--ingress", ingress));
    p.a.start(&p.scratch, &flags("--egress", egress));
    p
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn tcp_multi_megabyte_and_fifty_concurrent_connections() {
    let echo = echo_server();
    let (e4, e6) = (free_port(), free_port());
    let p = pair(
        &[
            format!("tcp:{e4}:100.100.0.2:7000"),
            format!("tcp:{e6}:[fd00::2]:7000"),
        ],
        &[format!("tcp:7000:127.0.0.1:{echo}")],
    );
    // 8 MiB each way, checksummed, with a half-close before the echo finishes.
    tcp_echo_roundtrip(local(e4), 8 << 20, 1).unwrap();
    // Same through IPv6 tunnel addresses.
    tcp_echo_roundtrip(local(e6), 2 << 20, 2).unwrap();

    let handles: Vec<_> = (0..50)
        .map(|i| std::thread::spawn(move || tcp_echo_roundtrip(local(e4), 256 * 1024, 100 + i)))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join().unwrap() {
            panic!(
                "connection {i}: {e}\n--- a ---\n{}\n--- b ---\n{}",
                tail(&p.a.log()),
                tail(&p.b.log())
            );
        }
    }
    // nexd logs the handshake from its 100 ms timer tick, which may come after a fast transfer.
    assert!(
        wait_until(Duration::from_secs(5), || p
            .a
            .log()
            .contains("handshake completed")),
        "{}",
        p.a.log()
    );
}

#[test]
fn udp_datagrams_round_trip_to_the_right_clients() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    traffic::udp_echo_server(server);
    let e = free_port();
    let _p = pair(
        &[format!("udp:{e}:100.100.0.2:5353")],
        &[format!("udp:5353:127.0.0.1:{sport}")],
    );
    // Two clients at once, with sizes up to the largest that fits MTU 1420 over IPv4.
    let t = std::thread::spawn(move || udp_echo_check(local(e), 100, 1392));
    udp_echo_check(local(e), 100, 512).unwrap();
    t.join().unwrap().unwrap();
    // Small and odd sizes too.
    udp_echo_check(local(e), 20, 1).unwrap();
    // The very first datagram of a new flow must get through, with no retry.
    for i in 0..5u8 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&[i; 33], local(e)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|err| panic!("first datagram of flow {i} lost: {err}"));
        assert_eq!(&buf[..n], &[i; 33]);
    }
}

#[test]
fn udp_datagrams_larger_than_the_mtu_pass_whole() {
    // As over a kernel WireGuard interface, IPv4 fragments what exceeds the tunnel MTU;
    // nothing is truncated.
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sport = server.local_addr().unwrap().port();
    traffic::udp_echo_server(server);
    let (e4, e6) = (free_port(), free_port());
    let _p = pair(
        &[
            format!("udp:{e4}:100.100.0.2:5353"),
            format!("udp:{e6}:[fd00::2]:5353"),
        ],
        &[format!("udp:5353:127.0.0.1:{sport}")],
    );
    for size in [1393, 1400, 4000, 9000, 30000, 65507] {
        udp_echo_check(local(e4), 3, size).unwrap_or_else(|e| panic!("IPv4 tunnel, {size} B: {e}"));
    }
    // smoltcp does not fragment IPv6: up to the MTU passes, larger is dropped, not cut.
    udp_echo_check(local(e6), 3, 1420 - 48).unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    s.send_to(&[7u8; 1420 - 47], local(e6)).unwrap();
    let mut buf = [0u8; 8192];
    if let Ok((n, _)) = s.recv_from(&mut buf) {
        panic!("a {n}-byte reply came back for a datagram too large for the IPv6 tunnel");
    }
}

#[test]
fn load_balances_round_robin_over_rules_sharing_a_port() {
    let mut ports = Vec::new();
    for banner in ["one\n", "two\n"] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(l.local_addr().unwrap().port());
        traffic::tcp_banner_server(l, banner);
    }
    let e = free_port();
    let _p = pair(
        &[format!("tcp:{e}:100.100.0.2:80")],
        &[
            format!("tcp:80:127.0.0.1:{}", ports[0]),
            format!("tcp:80:127.0.0.1:{}", ports[1]),
        ],
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(local(e)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        seen.push(s);
    }
    assert_eq!(seen, ["one\n", "two\n", "one\n", "two\n"]);
}

#[test]
fn refused_destination_closes_the_client_promptly() {
    // Nothing listens on `closed`.
    let closed = free_port();
    let e = free_port();
    let _p = pair(
        &[format!("tcp:{e}:100.100.0.2:81")],
        &[format!("tcp:81:127.0.0.1:{closed}")],
    );
    let start = Instant::now();
    let mut c = TcpStream::connect(local(e)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected close or reset, got {r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn egress_to_an_address_no_peer_owns_is_refused_promptly() {
    let e = free_port();
    let p = pair(&[format!("tcp:{e}:100.100.0.99:80")], &[]);
    let mut c = TcpStream::connect(local(e)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected close or reset, got {r:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || p
        .a
        .log()
        .contains("no peer's AllowedIPs")));
}

#[test]
fn reset_from_the_server_reaches_the_client_as_a_reset() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            // Wait for a request, then reset.
            let mut buf = [0u8; 4];
            let _ = c.read(&mut buf);
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            drop(c);
        }
    });
    let e = free_port();
    let _p = pair(
        &[format!("tcp:{e}:100.100.0.2:82")],
        &[format!("tcp:82:127.0.0.1:{sport}")],
    );
    let mut c = TcpStream::connect(local(e)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset, got {r:?}"
    );
}

#[test]
fn garbage_on_the_wireguard_port_does_not_disturb_flows() {
    let echo = echo_server();
    let e = free_port();
    let mut p = pair(
        &[format!("tcp:{e}:100.100.0.2:7000")],
        &[format!("tcp:7000:127.0.0.1:{echo}")],
    );
    tcp_echo_roundtrip(local(e), 64 * 1024, 5).unwrap();
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = local(p.b.wg_port);
    for i in 0..2000u32 {
        let len = (i as usize * 37) % 1500;
        let mut d = traffic::payload(len, i as u64);
        // Valid-looking message types, to reach deeper parsing.
        if len >= 4 {
            d[0] = (i % 5) as u8;
            d[1..4].fill(0);
        }
        let _ = junk.send_to(&d, target);
    }
    tcp_echo_roundtrip(local(e), 1 << 20, 6).unwrap();
    assert!(
        p.b.proc()
            .terminate(Duration::from_secs(15))
            .is_some_and(|s| s.success()),
        "B died or hung:\n{}",
        p.b.log()
    );
}

#[test]
fn sigterm_with_an_idle_connection_open_exits_after_the_drain_timeout() {
    let echo = echo_server();
    let e = free_port();
    let mut p = pair(
        &[format!("tcp:{e}:100.100.0.2:7000")],
        &[format!("tcp:7000:127.0.0.1:{echo}")],
    );
    tcp_echo_roundtrip(local(e), 1024, 7).unwrap();
    // Leave a connection open across shutdown: the default drain (5 s) waits for it, then
    // resets it; nothing holds nexd longer.
    let mut open = TcpStream::connect(local(e)).unwrap();
    open.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    open.read_exact(&mut one).unwrap();
    let start = Instant::now();
    let status = p.a.proc().terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        p.a.log()
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    // The egress port is closed with it, and the open connection was reset, not ended.
    assert!(TcpStream::connect(local(e)).is_err());
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = open.read(&mut one);
    assert!(r.is_err(), "idle connection ended cleanly: {r:?}");
}

#[test]
fn runs_as_nobody_with_an_unwritable_home_without_the_api() {
    // `setpriv --reuid=nobody nexd proxy ...` with root's HOME: the default state dir and
    // socket cannot be created. The proxy must still work; only the API is off, with a warning.
    if !nexd_e2e::is_root() {
        nexd_e2e::skip("unwritable home", "needs root to run nexd as nobody");
        return;
    }
    let echo = echo_server();
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    let e = free_port();
    let args = vec![
        "proxy".to_string(),
        "--config".into(),
        p.a.conf.display().to_string(),
        "--egress".into(),
        format!("tcp:{e}:100.100.0.2:7000"),
    ];
    let launch = nexd_e2e::nexd::Launch {
        unprivileged: true,
        netns: None,
        unwritable_home: true,
        nofile: None,
    };
    let mut a = nexd_e2e::nexd::Nexd::start(&p.scratch, "a-nohome", &args, &launch);
    a.wait_for_log("nexd proxy running", Duration::from_secs(10));
    assert!(a.log().contains("the control API is off"), "{}", a.log());
    tcp_echo_roundtrip(local(e), 256 * 1024, 11).unwrap();
}
