//! Observability: `--metrics-listen` serves Prometheus text at /metrics and /healthz,
//! `grpc.health.v1` answers on the API socket, and `nexctl nexd status` gives per-rule
//! counters. Two real nexd on loopback; the figures are checked against traffic the test
//! moved itself.

use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use nexd_e2e::{free_port, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP request; (status code, body).
fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(local(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"))
}

/// The value of the sample `name{labels}` (labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_health_and_per_rule_counters_follow_real_traffic() {
    let echo = echo_server();
    let m = free_port();
    let mut p = Pair::new(true);
    let metrics = format!("127.0.0.1:{m}");
    let e = p.start_tcp_path(
        echo,
        &["--log-level", "debug"],
        &["--metrics-listen", &metrics],
    );
    let (code, body) = get(m, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    for seed in 0..3 {
        tcp_echo_roundtrip(local(e), 256 * 1024, seed).unwrap();
    }
    let rule = format!("direction=\"egress\",rule=\"tcp:{e}:100.100.0.2:7000\"");
    let b = format!("public_key=\"{}\"", p.b.keys.public);
    // Closed flows' bytes land when the flows are done: poll for them.
    let mut text = String::new();
    let done = wait_until(Duration::from_secs(15), || {
        text = get(m, "/metrics").1;
        sample(
            &text,
            &format!("nexd_rule_bytes_total{{{rule},way=\"to_tunnel\"}}"),
        )
        .is_some_and(|v| v >= 3 * 256 * 1024)
            && sample(&text, &format!("nexd_rule_active_flows{{{rule}}}")) == Some(0)
            // The handshake is noted on the 100 ms timer tick, maybe after a fast transfer.
            && sample(&text, &format!("nexd_peer_handshakes_total{{{b}}}")).is_some_and(|v| v >= 1)
    });
    assert!(done, "{text}");
    assert_eq!(
        sample(&text, &format!("nexd_rule_flows_total{{{rule}}}")),
        Some(3),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("nexd_rule_bytes_total{{{rule},way=\"to_host\"}}")
        )
        .is_some_and(|v| v >= 3 * 256 * 1024),
        "{text}"
    );
    assert!(
        sample(&text, &format!("nexd_peer_rx_bytes_total{{{b}}}"))
            .is_some_and(|v| v > 3 * 256 * 1024),
        "{text}"
    );
    assert!(
        sample(&text, &format!("nexd_peer_handshakes_total{{{b}}}")).is_some_and(|v| v >= 1),
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("nexd_peer_last_handshake_age_seconds{{{b}}}")
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "nexd_process_resident_memory_bytes").is_some_and(|v| v > 1 << 20),
        "{text}"
    );
    assert!(
        sample(&text, "nexd_process_open_fds").is_some_and(|v| v > 3),
        "{text}"
    );
    assert_eq!(sample(&text, "nexd_up"), Some(1));
    // Every line is a comment or `name[{labels}] value`, each family with HELP and TYPE.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = l
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {l:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {l:?}");
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("nexd_"), "{l:?}");
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    // A client that resets its connection: counted.
    {
        let mut c = TcpStream::connect(local(e)).unwrap();
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap();
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || sample(
            &get(m, "/metrics").1,
            "nexd_tcp_events_total{reason=\"flows_reset\"}"
        )
        .is_some_and(|v| v >= 1)),
        "reset not counted"
    );
    assert_eq!(get(m, "/nope").0, 404);
    assert_eq!(
        http(m, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );

    // The same counters in nexctl status.
    let (code, out, err) = p.a.nexctl(&["--output", "json", "nexd", "status"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rules"][0]["flows_total"], 4, "{out}"); // three echoes and the reset one
    assert!(
        v["rules"][0]["bytes_to_tunnel"].as_u64().unwrap() >= 3 * 256 * 1024,
        "{out}"
    );

    // grpc.health.v1 on the API socket.
    let socket = p.a.socket.clone();
    assert_eq!(nexd_e2e::reflection::health_check(&socket, ""), Ok(1));
    assert_eq!(
        nexd_e2e::reflection::health_check(&socket, "nexd.v1.Nexd"),
        Ok(1)
    );

    // B's one summary line per flow at debug: rule, peer, bytes each way, how it ended.
    let want = format!("rule=\"ingress tcp:7000:127.0.0.1:{echo}\"");
    let short = &p.a.keys.public[..8];
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = p.b.log();
            log.lines().any(|l| {
                l.contains("tcp flow closed")
                    && l.contains(&want)
                    && l.contains(short)
                    && l.contains("tunnel_to_host=262144")
                    && l.contains("host_to_tunnel=262144")
                    && l.contains("end=\"closed\"")
            })
        }),
        "{}",
        p.b.log()
    );
}
