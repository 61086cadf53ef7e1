//! Egress bind addresses (`tcp:127.0.0.2:PORT:…`, as `ssh -L` takes them): a rule without
//! one listens on loopback only; a rule with one listens there and nowhere else. Two real
//! nexd processes peered over loopback, an echo server behind B, checksummed round trips.
//! Only loopback addresses are used (127.0.0.0/8 and ::1).

use nexd_e2e::free_port;
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, tcp_echo_roundtrip, udp_echo_check, udp_echo_server};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Whether a TCP connection to `addr` is refused (nothing listens there).
fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "nexctl failed: {}", r.2);
    r.1
}

#[test]
fn egress_rules_listen_on_loopback_by_default_and_on_their_bind_address_otherwise() {
    let echo = echo_server();
    let udp_server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp_server.local_addr().unwrap().port();
    udp_echo_server(udp_server);
    let (plain, bound, any, udp) = (free_port(), free_port(), free_port(), free_port());
    let rules = [
        format!("tcp:{plain}:100.100.0.2:7000"),
        format!("tcp:127.0.0.2:{bound}:100.100.0.2:7000"),
        format!("tcp:0.0.0.0:{any}:100.100.0.2:7000"),
        format!("udp:127.0.0.3:{udp}:100.100.0.2:5353"),
    ];
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &[
            "--ingress".into(),
            format!("tcp:7000:127.0.0.1:{echo}"),
            "--ingress".into(),
            format!("udp:5353:127.0.0.1:{udp_port}"),
        ],
    );
    let args: Vec<String> = rules
        .iter()
        .flat_map(|r| ["--egress".to_string(), r.clone()])
        .collect();
    p.a.start(&p.scratch, &args);

    // No bind address: 127.0.0.1 and ::1 only.
    tcp_echo_roundtrip(at("127.0.0.1", plain), 256 * 1024, 1).unwrap();
    if has_ipv6_loopback() {
        tcp_echo_roundtrip(at("::1", plain), 64 * 1024, 2).unwrap();
    }
    assert!(
        refused(at("127.0.0.2", plain)),
        "default rule reachable on 127.0.0.2"
    );
    // 127.0.0.2 only.
    tcp_echo_roundtrip(at("127.0.0.2", bound), 256 * 1024, 3).unwrap();
    assert!(
        refused(at("127.0.0.1", bound)),
        "127.0.0.2 rule reachable on 127.0.0.1"
    );
    // 0.0.0.0: every IPv4 address of the host.
    tcp_echo_roundtrip(at("127.0.0.5", any), 64 * 1024, 4).unwrap();
    // UDP too, and replies come back from the address the client sent to.
    udp_echo_check(at("127.0.0.3", udp), 20, 512).unwrap();

    // Listed as given; JSON also gives the effective bind addresses.
    let list = nexd_e2e::rules_as_given(&ok(p.a.nexctl(&["nexd", "proxy", "list"])));
    for r in &rules {
        assert!(list.contains(&format!("egress {r}")), "{r} not in {list}");
    }
    let json = ok(p.a.nexctl(&["--output", "json", "nexd", "proxy", "list"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rules_json = v["rules"].as_array().unwrap();
    let binds = |rule: &str| {
        rules_json
            .iter()
            .find(|r| r["rule"] == rule)
            .map(|r| r["bind_addresses"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        binds(&rules[0]),
        serde_json::json!(["127.0.0.1", "::1"]),
        "{json}"
    );
    assert_eq!(binds(&rules[1]), serde_json::json!(["127.0.0.2"]), "{json}");

    // At runtime: add on another address, use it, remove it by the same text.
    let extra = free_port();
    let rule = format!("tcp:127.0.0.4:{extra}:100.100.0.2:7000");
    ok(p.a.nexctl(&["nexd", "proxy", "add", "--egress", &rule]));
    tcp_echo_roundtrip(at("127.0.0.4", extra), 64 * 1024, 5).unwrap();
    assert!(refused(at("127.0.0.1", extra)));
    ok(p.a.nexctl(&["nexd", "proxy", "remove", "--egress", &rule]));
    assert!(
        refused(at("127.0.0.4", extra)),
        "removed rule still listens"
    );

    // Ingress rules listen on the tunnel addresses: a bind address is an error.
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        "tcp:127.0.0.1:7001:127.0.0.1:80",
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("takes no bind address"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The daemon is unharmed.
    tcp_echo_roundtrip(at("127.0.0.1", plain), 64 * 1024, 6).unwrap();
}
