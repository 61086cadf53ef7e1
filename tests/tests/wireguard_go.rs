//! Interop with a real wireguard-go peer in a network namespace. nexd runs as `nobody` in a
//! second namespace; the two are joined by a veth pair. Needs root (as in .ci/run).

use nexd_e2e::netns::Background;
use nexd_e2e::nexd::{workspace_bin, Nexd};
use nexd_e2e::postgres::{md5_hex, Postgres};
use nexd_e2e::traffic::{payload, sha256};
use nexd_e2e::wait_until;
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR};
use std::time::Duration;

/// nexd (in `net.a`) peered with wireguard-go (in `net.b`), nexd with `rules`.
fn world(test: &str, rules: &[&str]) -> Option<WgWorld> {
    let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
    WgWorld::start(test, &rules, &format!("{NEXD_ADDR}/32"))
}

fn testkit() -> String {
    workspace_bin("testkit").display().to_string()
}

/// The process runs as nobody: its real uid in /proc is 65534.
fn assert_unprivileged(n: &Nexd) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", n.pid().unwrap())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "nexd is not running as nobody: {uid_line}"
    );
}

#[test]
fn seed_example_1_ingress_serves_a_local_http_server_to_the_peer() {
    let Some(w) = world("ingress_http", &["--ingress", "tcp:443:127.0.0.1:8080"]) else {
        return;
    };
    assert_unprivileged(&w.nexd);
    let body = payload(3 << 20, 42);
    let file = w.scratch.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let _http = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["http-serve", "127.0.0.1:8080", &file.display().to_string()]);
        c
    })
    .unwrap();
    let out = w.scratch.path().join("fetched.bin");
    w.net
        .b
        .run(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "30",
            "-o",
            &out.display().to_string(),
            &format!("http://{NEXD_ADDR}:443/body.bin"),
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", w.nexd.log()));
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&body));
    assert!(w.peer.as_ref().unwrap().has_handshake());
    // nexd logs the handshake from its 100 ms timer tick, which may come after a fast fetch.
    assert!(
        wait_until(Duration::from_secs(5), || w
            .nexd
            .log()
            .contains("handshake completed")),
        "{}",
        w.nexd.log()
    );
}

#[test]
fn seed_example_2_egress_reaches_a_remote_postgresql_with_psql() {
    let Some(w) = world(
        "egress_psql",
        &["--egress", &format!("tcp:5432:{PEER_ADDR}:5432")],
    ) else {
        return;
    };
    assert_unprivileged(&w.nexd);
    let _pg = match Postgres::start(&w.net.b) {
        Ok(pg) => pg,
        Err(e) => panic!("cannot start PostgreSQL: {e}"),
    };
    let psql = |sql: &str| nexd_e2e::postgres::psql(&w.net.a, 5432, sql);
    // PostgreSQL needs a moment to start; poll through the tunnel.
    if let Err(last) = nexd_e2e::postgres::wait_ready(&w.net.a, 5432, Duration::from_secs(30)) {
        panic!(
            "psql never reached PostgreSQL through nexd: {last}\n{}",
            w.nexd.log()
        );
    }
    psql("create table t (id int primary key, v text)").unwrap();
    psql("insert into t select g, md5(g::text) from generate_series(1, 20000) g").unwrap();
    // Pull ~700 KB back and check it against what PostgreSQL computes itself.
    let rows = psql("select string_agg(v, ',' order by id) from t").unwrap();
    let digest = psql("select md5(string_agg(v, ',' order by id)) from t").unwrap();
    assert_eq!(rows.trim().len(), 20000 * 33 - 1);
    assert_eq!(md5_hex(rows.trim().as_bytes()), digest.trim());
}

#[test]
fn udp_egress_and_ingress_with_wireguard_go() {
    let Some(w) = world(
        "udp",
        &[
            "--egress",
            &format!("udp:7007:{PEER_ADDR}:7"),
            "--ingress",
            "udp:53:127.0.0.1:5300",
        ],
    ) else {
        return;
    };
    // Echo servers: one behind the peer (egress target), one on nexd's host (ingress target).
    let _far = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit());
        c.args(["udp-echo", &format!("{PEER_ADDR}:7")]);
        c
    })
    .unwrap();
    let _near = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["udp-echo", "127.0.0.1:5300"]);
        c
    })
    .unwrap();
    w.net
        .a
        .run(&[
            &testkit(),
            "udp-echo-check",
            "127.0.0.1:7007",
            "100",
            "1392",
        ])
        .unwrap_or_else(|e| panic!("egress: {e}\n{}", w.nexd.log()));
    w.net
        .b
        .run(&[
            &testkit(),
            "udp-echo-check",
            &format!("{NEXD_ADDR}:53"),
            "100",
            "1000",
        ])
        .unwrap_or_else(|e| panic!("ingress: {e}\n{}", w.nexd.log()));
    // Larger than the MTU: nexd fragments, the peer's kernel reassembles, and back.
    w.net
        .a
        .run(&[&testkit(), "udp-echo-check", "127.0.0.1:7007", "20", "4000"])
        .unwrap_or_else(|e| panic!("egress, fragmented: {e}\n{}", w.nexd.log()));
}

#[test]
fn tcp_echo_both_directions_with_wireguard_go() {
    let Some(w) = world(
        "tcp_echo",
        &[
            "--egress",
            &format!("tcp:7000:{PEER_ADDR}:7"),
            "--ingress",
            "tcp:7:127.0.0.1:7001",
        ],
    ) else {
        return;
    };
    let _far = Background::spawn_ready({
        let mut c = w.net.b.command(&testkit());
        c.args(["tcp-echo", &format!("{PEER_ADDR}:7")]);
        c
    })
    .unwrap();
    let _near = Background::spawn_ready({
        let mut c = w.net.a.command(&testkit());
        c.args(["tcp-echo", "127.0.0.1:7001"]);
        c
    })
    .unwrap();
    w.net
        .a
        .run(&[
            &testkit(),
            "tcp-echo-check",
            "127.0.0.1:7000",
            "8388608",
            "1",
        ])
        .unwrap_or_else(|e| panic!("egress: {e}\n{}", w.nexd.log()));
    w.net
        .b
        .run(&[
            &testkit(),
            "tcp-echo-check",
            &format!("{NEXD_ADDR}:7"),
            "8388608",
            "2",
        ])
        .unwrap_or_else(|e| panic!("ingress: {e}\n{}", w.nexd.log()));
}
