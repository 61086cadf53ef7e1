//! Thousands of rules do not slow new connections (issue 13, finding 8: 5,000 ingress rules
//! made every new connection take ~1.2 s instead of ~0.2 s): a new connection finds its rule
//! with one lookup and the stack holds no per-rule sockets.

use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, local};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const RULES: u16 = 4000;
const CONNECTIONS: usize = 100;

#[test]
fn new_connections_stay_fast_with_thousands_of_ingress_rules() {
    let mut pair = Pair::new(true);
    let echo = echo_server();
    // Rule ports 10000..14000 on B's tunnel address, all to the echo server.
    let mut b_args = Vec::new();
    for port in 10000..10000 + RULES {
        b_args.push("--ingress".to_string());
        b_args.push(format!("tcp:{port}:127.0.0.1:{echo}"));
    }
    pair.b.start(&pair.scratch, &b_args);
    let a_port = nexd_e2e::free_port();
    // The last rule added, so a scan in order would reach it last.
    let last = 10000 + RULES - 1;
    pair.a.start(
        &pair.scratch,
        &[
            "--egress".into(),
            format!("tcp:{a_port}:100.100.0.2:{last}"),
        ],
    );

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..CONNECTIONS {
        let t = Instant::now();
        let mut c = TcpStream::connect(local(a_port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let msg = format!("connection {i}\n");
        c.write_all(msg.as_bytes()).expect("write");
        let mut got = vec![0u8; msg.len()];
        if let Err(e) = c.read_exact(&mut got) {
            panic!("connection {i}: {e}\n{}", pair.b.log());
        }
        assert_eq!(got, msg.as_bytes());
        slowest = slowest.max(t.elapsed());
    }
    let took = started.elapsed();
    eprintln!(
        "{CONNECTIONS} connections through one of {RULES} ingress rules: {took:?} in all, slowest {slowest:?}"
    );
    // About 1-5 ms each on an idle machine; the per-rule listeners made each take ~1 s.
    assert!(
        took < Duration::from_secs(10),
        "{CONNECTIONS} connections took {took:?} (slowest {slowest:?})"
    );
    // An idle node with thousands of rules uses no CPU between packets.
    let pid = nexd_e2e::leak::pid(&pair.b);
    let ticks = || nexd_e2e::procstat::cpu_ticks(pid);
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let idle = ticks() - before;
    assert!(
        idle <= 20,
        "B used {idle} clock ticks in 2 s idle with {RULES} rules"
    );
}
