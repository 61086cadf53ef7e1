//! nexd across a WAN: a `testkit wan-relay` between the two WireGuard endpoints delays,
//! drops and queues their datagrams, and every byte must still arrive. These are correctness
//! tests (slow is allowed, wrong or stuck is not); bench/run.sh --wan measures the speed.

use nexd_e2e::netns::Background;
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{self, payload};
use nexd_e2e::wan::{Ends, Path, Relay};
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR};
use nexd_e2e::{free_port, wait_until};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Concurrent connections per direction, and bytes each echoes (each way).
const CONNS: usize = 20;
const BYTES: usize = 2_000_000;
/// For all transfers of one test: generous, as the machine is shared.
const DEADLINE: Duration = Duration::from_secs(240);

/// 20 ms round trip, 1 % loss each way.
fn lossy() -> Path {
    Path::rtt(Duration::from_millis(20)).with_loss(1.0)
}

fn testkit() -> String {
    nexd_e2e::nexd::workspace_bin("testkit")
        .display()
        .to_string()
}

/// `testkit tcp-load ADDR CONNS BYTES SEED` (all connections open, then all echo at once).
fn tcp_load(mut cmd: Command, addr: &str, seed: u64) -> Child {
    cmd.args([
        "tcp-load",
        addr,
        &CONNS.to_string(),
        &BYTES.to_string(),
        &seed.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn testkit tcp-load")
}

/// Waits for every client (killing what outlives the deadline); returns a failure line per
/// client that did not verify all its connections.
fn finish(clients: Vec<(&str, Child)>) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut failures = Vec::new();
    for (label, mut c) in clients {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_until(left, || matches!(c.try_wait(), Ok(Some(_)))) {
            let _ = c.kill();
            failures.push(format!("{label}: not done after {DEADLINE:?}"));
        }
        let out = c.wait_with_output().expect("wait for tcp-load");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let want = format!("verified {CONNS} failed 0");
        if !out.status.success() || !stdout.contains(&want) {
            failures.push(format!(
                "{label}: {} {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    failures
}

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn relay_delays_drops_and_keeps_order_both_ways() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    traffic::udp_echo_server(echo);
    let path = Path {
        loss: 5.0,
        seed: 3,
        ..Path::rtt(Duration::from_millis(30))
    };
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    // Peer A is learned from the first datagram.
    let relay = Relay::start(
        None,
        &Ends {
            listen_a: any,
            listen_b: any,
            peer_b: echo_addr,
            peer_a: None,
        },
        &path,
    )
    .unwrap();
    let client = UdpSocket::bind(any).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let n = 400u64;
    let sent_at: Vec<Instant> = Vec::with_capacity(n as usize);
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(sent_at));
    // Replies are read while datagrams are still going out: a socket buffer left to fill
    // would drop them.
    let reader = {
        let sock = client.try_clone().unwrap();
        let sent_at = sent_at.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            let mut quiet = Instant::now();
            while quiet.elapsed() < Duration::from_secs(2) {
                if let Ok(len) = sock.recv(&mut buf) {
                    quiet = Instant::now();
                    let i = u64::from_be_bytes(buf[..8].try_into().unwrap());
                    let mut want = payload(1000, i);
                    want[..8].copy_from_slice(&i.to_be_bytes());
                    assert_eq!(&buf[..len], &want[..], "datagram {i} changed on the way");
                    got.push((i, sent_at.lock().unwrap()[i as usize].elapsed()));
                }
            }
            got
        })
    };
    for i in 0..n {
        let mut msg = payload(1000, i);
        msg[..8].copy_from_slice(&i.to_be_bytes());
        sent_at.lock().unwrap().push(Instant::now());
        client.send_to(&msg, relay.a).unwrap();
        // Half a millisecond apart: the echo server's socket buffer is not under test.
        std::thread::sleep(Duration::from_micros(500));
    }
    let got = reader.join().unwrap();
    let (ab, ba) = relay.counters().unwrap();
    eprintln!("a->b {ab}\nb->a {ba}");
    assert_eq!(ab.received, n);
    assert_eq!(ab.forwarded + ab.lost, n);
    assert_eq!(ba.received, ab.forwarded, "the echo answers all it gets");
    assert_eq!(ba.forwarded + ba.lost, ba.received);
    assert_eq!(got.len() as u64, ba.forwarded);
    // 5 % of 400 each way: a seeded draw, so the same numbers every run.
    assert!((5..40).contains(&ab.lost) && (5..40).contains(&ba.lost));
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "reordered without --reorder"
    );
    let fastest = got.iter().map(|g| g.1).min().unwrap();
    assert!(
        fastest >= Duration::from_millis(30),
        "a round trip took {fastest:?}"
    );
    eprintln!(
        "fastest round trip {fastest:?} (30 ms asked), slowest {:?}",
        got.iter().map(|g| g.1).max().unwrap()
    );
}

/// nexd (namespace A) and wireguard-go (namespace B) through a 20 ms, 1 % loss relay:
/// 20 echoes of 2 MB through an egress rule to a server behind wireguard-go, and 20 from
/// B's namespace through an ingress rule to a server beside nexd, all at once.
#[test]
fn nexd_and_wireguard_go_over_a_lossy_wan() {
    let rules: Vec<String> = [
        "--egress",
        &format!("tcp:7000:{PEER_ADDR}:7"),
        "--ingress",
        "tcp:7:127.0.0.1:7001",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Some(w) = WgWorld::start_via(
        "wan_wireguard_go",
        &rules,
        &format!("{NEXD_ADDR}/32"),
        Some(&lossy()),
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
    let start = Instant::now();
    let failures = finish(vec![
        (
            "egress",
            tcp_load(w.net.a.command(&testkit()), "127.0.0.1:7000", 1),
        ),
        (
            "ingress",
            tcp_load(w.net.b.command(&testkit()), &format!("{NEXD_ADDR}:7"), 1000),
        ),
    ]);
    eprintln!(
        "{} × {BYTES} bytes echoed each way in {:?}",
        2 * CONNS,
        start.elapsed()
    );
    if let Some(r) = &w.relay {
        if let Ok((ab, ba)) = r.counters() {
            eprintln!("relay a->b {ab}\nrelay b->a {ba}");
            assert!(ab.lost > 0 && ba.lost > 0, "the path lost nothing");
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- nexd ---\n{}",
        failures.join("\n"),
        tail(&w.nexd.log())
    );
}

/// Two nexd on loopback through a 20 ms, 1 % loss relay: 20 echoes of 2 MB from A's egress
/// to B's ingress and 20 from B's egress to A's ingress, all at once.
#[test]
fn two_nexd_over_a_lossy_wan() {
    let echo = traffic::echo_server();
    let (a_port, b_port) = (free_port(), free_port());
    let mut p = Pair::new_via(&lossy());
    let rules = |egress_port: u16, to: &str| {
        vec![
            "--ingress".to_string(),
            format!("tcp:7000:127.0.0.1:{echo}"),
            "--egress".into(),
            format!("tcp:{egress_port}:{to}:7000"),
        ]
    };
    p.b.start(&p.scratch, &rules(b_port, "100.100.0.1"));
    p.a.start(&p.scratch, &rules(a_port, "100.100.0.2"));
    let start = Instant::now();
    let failures = finish(vec![
        (
            "a to b",
            tcp_load(Command::new(testkit()), &format!("127.0.0.1:{a_port}"), 1),
        ),
        (
            "b to a",
            tcp_load(
                Command::new(testkit()),
                &format!("127.0.0.1:{b_port}"),
                1000,
            ),
        ),
    ]);
    eprintln!(
        "{} × {BYTES} bytes echoed each way in {:?}",
        2 * CONNS,
        start.elapsed()
    );
    if let Some(r) = &p.relay {
        if let Ok((ab, ba)) = r.counters() {
            eprintln!("relay a->b {ab}\nrelay b->a {ba}");
            assert!(ab.lost > 0 && ba.lost > 0, "the path lost nothing");
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- a ---\n{}\n--- b ---\n{}",
        failures.join("\n"),
        tail(&p.a.log()),
        tail(&p.b.log())
    );
}
