//! Fault injection, end to end (issue 6): real nexd processes, real wireguard-go peers in
//! network namespaces, real kernels on the far side. Each test breaks something mid-flight
//! (a peer restart, a link outage, a new address, SIGKILL, a dead destination, a rule
//! removal) and checks that bytes still arrive intact, or fail fast, and that nothing leaks.
//! Tests with namespaces need root (as in .ci/run) and print SKIPPED otherwise.

use nexd_e2e::faults::{
    counter, fd_count, paced_echo_roundtrip, peer_endpoint, peer_traffic, progress_of, sigkill,
    status, tcp_flows, LineChild,
};
use nexd_e2e::netns::Background;
use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{echo_server, local, tcp_echo_roundtrip};
use nexd_e2e::wg_world::{WgWorld, NEXD_ADDR, PEER_ADDR, PEER_WG_PORT};
use nexd_e2e::{free_port, wait_until};
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The last lines of a log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn flags(flag: &str, rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|r| [flag.to_string(), r.clone()])
        .collect()
}

/// A TCP echo server inside `ns` at `addr`.
fn ns_tcp_echo(ns: &nexd_e2e::netns::Netns, addr: &str) -> Background {
    Background::spawn_ready({
        let mut c = ns.command(&WgWorld::testkit());
        c.args(["tcp-echo", addr]);
        c
    })
    .expect("tcp echo server")
}

/// Starts a paced, checksummed echo transfer inside `ns` and returns once `at_least` bytes
/// have come back, so the caller's fault lands mid-transfer.
fn start_transfer(
    ns: &nexd_e2e::netns::Netns,
    target: &str,
    bytes: usize,
    kbps: u64,
    at_least: u64,
) -> LineChild {
    let mut t = LineChild::spawn({
        let mut c = ns.command(&WgWorld::testkit());
        c.args([
            "paced-echo-check",
            target,
            &bytes.to_string(),
            "7",
            &kbps.to_string(),
        ]);
        c
    });
    let started = t.wait_line(Duration::from_secs(30), |l| {
        progress_of(l).is_some_and(|p| p >= at_least) || l == "ok"
    });
    assert!(
        started.as_deref().and_then(progress_of).is_some(),
        "transfer did not get under way (or finished before the fault): {:?}",
        t.seen
    );
    t
}

/// Waits for the transfer's final `ok` (checksum matched) and returns how long that took.
fn finish_transfer(t: &mut LineChild, w: &WgWorld, what: &str) -> Duration {
    let start = Instant::now();
    let done = t.wait_line(Duration::from_secs(90), |l| l == "ok");
    assert!(
        done.is_some(),
        "{what}: transfer did not complete intact; output {:?}\n{}",
        t.seen.last(),
        tail(&w.nexd.log())
    );
    start.elapsed()
}

/// Polls small checksummed round trips from `ns` to `target` until one succeeds; returns the
/// time it took.
fn new_connections_work(ns: &nexd_e2e::netns::Netns, target: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    let ok = wait_until(within, || {
        match ns.run(&[&WgWorld::testkit(), "tcp-echo-check", target, "65536", "3"]) {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(ok, "new connections to {target} never worked: {last}");
    start.elapsed()
}

// ---------------------------------------------------------------------------------------
// Peer restart, link down/up, roaming (nexd ↔ wireguard-go in namespaces)
// ---------------------------------------------------------------------------------------

#[test]
fn wireguard_go_peer_restarting_mid_transfer_does_not_break_the_transfer() {
    let rules = flags("--egress", &[format!("tcp:7000:{PEER_ADDR}:7")]);
    let Some(mut w) = WgWorld::start("peer_restart", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let _echo = ns_tcp_echo(&w.net.b, &format!("{PEER_ADDR}:7"));
    // 6 MiB at 1 MiB/s: the restart lands about a quarter of the way in.
    let mut t = start_transfer(&w.net.a, "127.0.0.1:7000", 6 << 20, 1024, 1 << 20);
    w.stop_peer();
    let restarted = Instant::now();
    w.start_peer();
    // A restarted node with PersistentKeepalive handshakes as soon as it is up; without
    // one, nexd (like kernel WireGuard) keeps using the dead session until its 15 s
    // REKEY_TIMEOUT + KEEPALIVE_TIMEOUT timer fires.
    w.set_peer_keepalive(25);
    // New connections work within a few seconds, while the old transfer is still running.
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(5));
    let fresh = restarted.elapsed();
    let took = finish_transfer(&mut t, &w, "after wireguard-go restart");
    eprintln!(
        "peer restart: new connection ok {fresh:?} after the restart; transfer done {:?} after it",
        fresh + took
    );
    assert!(w.peer.as_ref().unwrap().has_handshake());
}

#[test]
fn wireguard_go_peer_restarting_without_keepalive_recovers_on_nexds_rekey_timer() {
    // The restarted peer stays silent (no keepalive, nothing of its own to send): nexd keeps
    // sending into the dead session until WireGuard's REKEY_TIMEOUT + KEEPALIVE_TIMEOUT
    // (15 s) makes it handshake again, as kernel WireGuard does. It must recover by itself.
    // (An in-flight transfer also survives this, but TCP's exponential backoff on both ends
    // makes its completion time anything from 1 to 60 s: the keepalive test covers that.)
    let rules = flags("--egress", &[format!("tcp:7000:{PEER_ADDR}:7")]);
    let Some(mut w) = WgWorld::start("peer_restart_nka", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let _echo = ns_tcp_echo(&w.net.b, &format!("{PEER_ADDR}:7"));
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(10));
    w.stop_peer();
    let restarted = Instant::now();
    w.start_peer();
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(40));
    let fresh = restarted.elapsed();
    eprintln!("peer restart, no keepalive: new connection ok {fresh:?} after the restart");
    assert!(w.peer.as_ref().unwrap().has_handshake());
}

#[test]
fn link_down_and_up_mid_transfer_completes_intact() {
    let rules = flags("--egress", &[format!("tcp:7000:{PEER_ADDR}:7")]);
    let Some(w) = WgWorld::start("link_flap", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let _echo = ns_tcp_echo(&w.net.b, &format!("{PEER_ADDR}:7"));
    let mut t = start_transfer(&w.net.a, "127.0.0.1:7000", 6 << 20, 1024, 1 << 20);
    w.net
        .a
        .run(&["ip", "link", "set", &w.net.a_if, "down"])
        .unwrap();
    // The outage itself: three seconds without a link (the fault, not a synchronisation).
    // Datagrams already in nexd's socket buffer may still be read in the first half; in the
    // second half nothing may arrive, which proves the link really was down.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, rx0) = peer_traffic(&w.socket, &w.peer_keys.public);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, rx1) = peer_traffic(&w.socket, &w.peer_keys.public);
    w.net
        .a
        .run(&["ip", "link", "set", &w.net.a_if, "up"])
        .unwrap();
    let took = finish_transfer(&mut t, &w, "after link down/up");
    assert!(
        rx1 - rx0 < 64 << 10,
        "{} bytes arrived through a downed link?",
        rx1 - rx0
    );
    eprintln!("link flap: transfer finished {took:?} after the link came back");
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(10));
}

#[test]
fn peer_roaming_to_a_new_address_is_followed_both_ways() {
    let mut rules = flags("--egress", &[format!("tcp:7000:{PEER_ADDR}:7")]);
    rules.extend(flags("--ingress", &["tcp:7:127.0.0.1:7001".to_string()]));
    let Some(w) = WgWorld::start("roaming", &rules, &format!("{NEXD_ADDR}/32")) else {
        return;
    };
    let _far = ns_tcp_echo(&w.net.b, &format!("{PEER_ADDR}:7"));
    let _near = ns_tcp_echo(&w.net.a, "127.0.0.1:7001");
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(10));
    let old = format!("{}:{PEER_WG_PORT}", w.net.b_addr);
    assert_eq!(
        peer_endpoint(&w.socket, &w.peer_keys.public).as_deref(),
        Some(old.as_str())
    );

    // First a new source port (a NAT rebinding): wireguard-go rebinds its socket.
    const NEW_PORT: u16 = PEER_WG_PORT + 1;
    let iface = w.peer.as_ref().unwrap().iface.clone();
    let b = &w.net.b;
    b.run(&["wg", "set", &iface, "listen-port", &NEW_PORT.to_string()])
        .unwrap();
    let rebound = new_connections_work(b, &format!("{NEXD_ADDR}:7"), Duration::from_secs(30));
    let moved = format!("{}:{NEW_PORT}", w.net.b_addr);
    assert_eq!(
        peer_endpoint(&w.socket, &w.peer_keys.public).as_deref(),
        Some(moved.as_str()),
        "nexd did not follow the peer to its new port"
    );
    new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(10));

    // Then another address on the same link (a new DHCP lease, say).
    let new_ip = format!(
        "{}.3",
        w.net
            .b_addr
            .strip_suffix(".2")
            .expect("B's address ends in .2")
    );
    b.run(&[
        "ip",
        "addr",
        "del",
        &format!("{}/24", w.net.b_addr),
        "dev",
        &w.net.b_if,
    ])
    .unwrap();
    b.run(&[
        "ip",
        "addr",
        "add",
        &format!("{new_ip}/24"),
        "dev",
        &w.net.b_if,
    ])
    .unwrap();
    // nexd cannot know until the peer speaks: the peer opens a connection to nexd's ingress
    // (its packets now come from the new address), and nexd must answer there. This takes
    // about 15 s with wireguard-go 0.0.20220316: it keeps its cached ("sticky") source
    // address until its own handshake retry, so until then nothing reaches nexd from it.
    let followed = new_connections_work(b, &format!("{NEXD_ADDR}:7"), Duration::from_secs(30));
    let new = format!("{new_ip}:{NEW_PORT}");
    assert_eq!(
        peer_endpoint(&w.socket, &w.peer_keys.public).as_deref(),
        Some(new.as_str()),
        "nexd did not follow the peer to its new address"
    );
    // And nexd-initiated traffic goes to the new address too.
    let back = new_connections_work(&w.net.a, "127.0.0.1:7000", Duration::from_secs(10));
    eprintln!("roaming: new port followed after {rebound:?}; new address: peer-initiated connection ok {followed:?} after the move, nexd-initiated {back:?} after that");
    w.net
        .a
        .run(&[
            &WgWorld::testkit(),
            "tcp-echo-check",
            "127.0.0.1:7000",
            "2097152",
            "4",
        ])
        .unwrap_or_else(|e| panic!("egress after roaming: {e}\n{}", tail(&w.nexd.log())));
}

// ---------------------------------------------------------------------------------------
// Cryptokey routing (nexd ↔ wireguard-go)
// ---------------------------------------------------------------------------------------

/// Runs a testkit probe in `ns` and returns its one line of output.
fn probe(ns: &nexd_e2e::netns::Netns, args: &[&str]) -> String {
    let mut full = vec![WgWorld::testkit()];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    ns.run(&refs).unwrap().trim().to_string()
}

#[test]
fn spoofed_sources_and_unowned_destinations_are_dropped_and_counted() {
    let mut rules = flags(
        "--ingress",
        &[
            "udp:53:127.0.0.1:5300".to_string(),
            "tcp:7:127.0.0.1:7001".to_string(),
            "tcp:9:127.0.0.1:7002".to_string(),
        ],
    );
    rules.extend(["--udp-idle-timeout".to_string(), "600".to_string()]);
    // wireguard-go routes 100.100.0.99 to nexd too, so it will carry packets nexd must not
    // accept as its own.
    let Some(w) = WgWorld::start(
        "cryptokey",
        &rules,
        &format!("{NEXD_ADDR}/32,100.100.0.99/32"),
    ) else {
        return;
    };
    let _udp = Background::spawn_ready({
        let mut c = w.net.a.command(&WgWorld::testkit());
        c.args(["udp-echo", "127.0.0.1:5300"]);
        c
    })
    .unwrap();
    let _tcp = ns_tcp_echo(&w.net.a, "127.0.0.1:7001");
    let iface = w.peer.as_ref().unwrap().iface.clone();
    // An address on the peer's tunnel interface that nexd's AllowedIPs for it do not cover.
    const SPOOF: &str = "100.100.0.77";
    w.net
        .b
        .run(&["ip", "addr", "add", &format!("{SPOOF}/32"), "dev", &iface])
        .unwrap();

    // Control: from the peer's own address the same probes are answered.
    let target_udp = format!("{NEXD_ADDR}:53");
    let mut answered = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            answered = probe(&w.net.b, &["udp-probe", PEER_ADDR, &target_udp, "5"]);
            answered != "replies 0"
        }),
        "legitimate source never answered: {answered}"
    );
    assert_eq!(
        probe(
            &w.net.b,
            &["tcp-probe", PEER_ADDR, &format!("{NEXD_ADDR}:7"), "5"]
        ),
        "connected"
    );
    assert!(wait_until(Duration::from_secs(5), || tcp_flows(&status(
        &w.socket
    )) == 0));
    let before = status(&w.socket);
    let udp_flows = before["udp_flows"].as_u64().unwrap();
    assert_eq!(udp_flows, 1, "{before}");

    // Spoofed: authenticated by wireguard-go's key, but from an address that is not its own.
    assert_eq!(
        probe(&w.net.b, &["udp-probe", SPOOF, &target_udp, "20"]),
        "replies 0"
    );
    let probe_tcp = probe(
        &w.net.b,
        &["tcp-probe", SPOOF, &format!("{NEXD_ADDR}:7"), "2"],
    );
    assert!(probe_tcp.starts_with("failed"), "{probe_tcp}");
    let after = status(&w.socket);
    // 20 datagrams and at least one SYN (plus its retries).
    assert!(
        counter(&after, "spoofed_source") >= counter(&before, "spoofed_source") + 21,
        "before {before}\nafter {after}"
    );
    assert_eq!(after["udp_flows"].as_u64(), Some(udp_flows), "{after}");
    assert_eq!(tcp_flows(&after), 0, "{after}");

    // Unowned destination: packets for 100.100.0.99 reach nexd, which must neither answer
    // for that address nor send them back into the tunnel.
    let (tx0, _) = peer_traffic(&w.socket, &w.peer_keys.public);
    assert_eq!(
        probe(&w.net.b, &["udp-probe", PEER_ADDR, "100.100.0.99:53", "50"]),
        "replies 0"
    );
    let unowned = probe(&w.net.b, &["tcp-probe", PEER_ADDR, "100.100.0.99:7", "2"]);
    assert!(unowned.starts_with("failed"), "{unowned}");
    let (tx1, _) = peer_traffic(&w.socket, &w.peer_keys.public);
    // 50 datagrams of 128+ bytes would be over 6 KB if looped; keepalives are 32 bytes.
    assert!(tx1 - tx0 < 1000, "nexd sent {} bytes back", tx1 - tx0);
    assert_eq!(tcp_flows(&status(&w.socket)), 0);

    // no_route: a live flow whose peer is removed; what nexd still has to send for it
    // (retransmissions, window probes) has no route any more and is counted, not sent.
    let _firehose = Background::spawn_ready({
        let mut c = w.net.a.command(&WgWorld::testkit());
        c.args(["firehose", "127.0.0.1:7002"]);
        c
    })
    .unwrap();
    let mut hold = LineChild::spawn({
        let mut c = w.net.b.command(&WgWorld::testkit());
        c.args(["hold-conns", &format!("{NEXD_ADDR}:9"), "1"]);
        c
    });
    assert!(hold
        .wait_line(Duration::from_secs(10), |l| l.starts_with("ready"))
        .is_some());
    assert!(wait_until(Duration::from_secs(10), || tcp_flows(&status(
        &w.socket
    )) == 1));
    let no_route0 = counter(&status(&w.socket), "no_route");
    let (code, out, err) = w.nexctl(&[
        "nexd",
        "peers",
        "remove",
        "--public-key",
        &w.peer_keys.public,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = status(&w.socket);
            counter(&last, "no_route") > no_route0
        }),
        "no_route never counted: {last}"
    );
}

// ---------------------------------------------------------------------------------------
// Two nexd on loopback
// ---------------------------------------------------------------------------------------

/// B serves an echo server at tunnel port 7000; A has `egress` rules.
fn echo_pair(egress: &[String]) -> Pair {
    let echo = echo_server();
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &flags("--ingress", &[format!("tcp:7000:127.0.0.1:{echo}")]),
    );
    p.a.start(&p.scratch, &flags("--egress", egress));
    p
}

#[test]
fn ingress_nexd_restarting_mid_transfer_resets_the_client_and_recovers() {
    let e = free_port();
    let mut p = echo_pair(&[format!("tcp:{e}:100.100.0.2:7000")]);
    let progress = Arc::new(AtomicU64::new(0));
    let pr = progress.clone();
    let transfer = std::thread::spawn(move || {
        let r = paced_echo_roundtrip(local(e), 8 << 20, 9, 1 << 20, Duration::from_secs(120), pr);
        (r, Instant::now())
    });
    assert!(wait_until(Duration::from_secs(30), || progress
        .load(Ordering::SeqCst)
        >= 1 << 20));
    let b_args = flags(
        "--ingress",
        &[format!("tcp:7000:127.0.0.1:{}", echo_server())],
    );
    // B crashes and comes back (same keys, port and state dir) while A's client is mid-transfer.
    sigkill(p.b.proc().pid().unwrap());
    let killed = Instant::now();
    p.b.nexd = None; // reaps it
    p.b.start(&p.scratch, &b_args);
    let restarted = Instant::now();

    // New connections work within a few seconds of B being back.
    let mut last = String::new();
    let recovered = wait_until(Duration::from_secs(30), || {
        match tcp_echo_roundtrip(local(e), 65536, 10) {
            Ok(()) => true,
            Err(x) => {
                last = x;
                false
            }
        }
    });
    let fresh = restarted.elapsed();
    assert!(
        recovered,
        "new connections never worked after the restart: {last}\n{}",
        tail(&p.a.log())
    );

    // The in-flight client cannot complete (B lost its socket) but must not hang: it sees a
    // reset once A reaches the new B.
    let (result, ended) = transfer.join().unwrap();
    let to_error = ended - killed;
    let err = result.expect_err("a transfer through a crashed ingress cannot complete");
    eprintln!(
        "ingress restart: new connection ok {fresh:?} after B came back; in-flight client saw {err:?} {to_error:?} after the kill"
    );
    assert!(
        !err.contains("timed out") && !err.contains("would block"),
        "the client hung until its own timeout: {err}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || tcp_flows(&status(&p.a.socket))
            == 0),
        "half-dead flows left on A: {}",
        status(&p.a.socket)
    );
    assert!(
        fresh < Duration::from_secs(5),
        "new connections took {fresh:?} to work after B restarted (A kept its dead session)"
    );
    assert!(
        to_error < Duration::from_secs(10),
        "in-flight client reset only after {to_error:?}"
    );
}

#[test]
fn sigkill_while_rules_are_added_restores_exactly_the_acknowledged_ones() {
    let mut p = echo_pair(&[]);
    for round in 0..3 {
        let ports: Vec<u16> = (0..30).map(|_| free_port()).collect();
        let rules: Vec<String> = ports
            .iter()
            .map(|port| format!("tcp:{port}:100.100.0.2:7000"))
            .collect();
        let next = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let socket = p.a.socket.clone();
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (next, killed, started, acked, rules, socket) = (
                    next.clone(),
                    killed.clone(),
                    started.clone(),
                    acked.clone(),
                    rules.clone(),
                    socket.clone(),
                );
                std::thread::spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= rules.len() || killed.load(Ordering::SeqCst) {
                        return;
                    }
                    started.lock().unwrap().push(rules[i].clone());
                    let args = ["nexd", "proxy", "add", "--egress", &rules[i]];
                    if nexd_e2e::pair::nexctl_as(None, &socket, &args).0 == 0 {
                        acked.lock().unwrap().push(rules[i].clone());
                    }
                })
            })
            .collect();
        // Kill once a few adds are acknowledged, while others are in flight.
        let target = 4 + round * 4;
        assert!(wait_until(Duration::from_secs(30), || acked
            .lock()
            .unwrap()
            .len()
            >= target));
        sigkill(p.a.proc().pid().unwrap());
        killed.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        p.a.nexd = None;
        let acked: std::collections::BTreeSet<String> =
            acked.lock().unwrap().iter().cloned().collect();
        let started: std::collections::BTreeSet<String> =
            started.lock().unwrap().iter().cloned().collect();

        // The state file is whole JSON (old or new, never torn).
        let text = std::fs::read_to_string(p.a.state_dir.join("state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("round {round}: state file does not parse ({e}): {text}"));
        let saved: std::collections::BTreeSet<String> = state["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();

        p.a.start(&p.scratch, &[]);
        let listed: std::collections::BTreeSet<String> =
            nexd_e2e::faults::nexctl_json(&p.a.socket, &["nexd", "proxy", "list"])["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["direction"].as_str().unwrap(),
                        r["rule"].as_str().unwrap()
                    )
                })
                .collect();
        assert_eq!(
            listed, saved,
            "round {round}: restored table differs from the state file"
        );
        let listed: std::collections::BTreeSet<String> = listed
            .iter()
            .map(|r| r.trim_start_matches("egress ").to_string())
            .collect();
        for r in &acked {
            assert!(
                listed.contains(r),
                "round {round}: acknowledged {r} was lost"
            );
        }
        for r in &listed {
            assert!(
                started.contains(r),
                "round {round}: {r} appeared from nowhere"
            );
        }
        eprintln!(
            "sigkill round {round}: {} acknowledged, {} started, {} restored",
            acked.len(),
            started.len(),
            listed.len()
        );
        // Every restored rule carries traffic.
        for (i, r) in listed.iter().enumerate() {
            let port: u16 = r.split(':').nth(1).unwrap().parse().unwrap();
            tcp_echo_roundtrip(local(port), 4096, i as u64)
                .unwrap_or_else(|e| panic!("round {round}: restored {r}: {e}"));
        }
        // Start the next round from an empty table.
        for r in &listed {
            let (code, out, err) = p.a.nexctl(&["nexd", "proxy", "remove", "--egress", r]);
            assert_eq!(code, 0, "{out}{err}");
        }
    }
}

/// Connects to `port` and expects a close or reset well within `bound`; returns the time.
fn expect_prompt_close(port: u16, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 16];
    // A reset can arrive before connect() has even returned: that is prompt too.
    let r = TcpStream::connect_timeout(&local(port), bound).and_then(|mut c| {
        c.set_read_timeout(Some(bound))?;
        c.read(&mut buf)
    });
    assert!(
        matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "port {port}: expected close or reset, got {r:?} after {:?}",
        start.elapsed()
    );
    start.elapsed()
}

#[test]
fn dead_destinations_close_clients_promptly_and_leak_nothing() {
    let closed = free_port(); // nothing listens here
    let (e_refused, e_no_rule, e_no_peer) = (free_port(), free_port(), free_port());
    let echo = echo_server();
    let mut p = Pair::new(true);
    p.b.start(
        &p.scratch,
        &flags(
            "--ingress",
            &[
                format!("tcp:81:127.0.0.1:{closed}"),
                format!("tcp:7000:127.0.0.1:{echo}"),
            ],
        ),
    );
    p.a.start(
        &p.scratch,
        &flags(
            "--egress",
            &[
                // B's ingress dials a local port where nothing listens.
                format!("tcp:{e_refused}:100.100.0.2:81"),
                // B has no ingress rule on port 99 at all.
                format!("tcp:{e_no_rule}:100.100.0.2:99"),
                // No peer owns the address.
                format!("tcp:{e_no_peer}:100.100.0.99:80"),
            ],
        ),
    );
    let ports = [e_refused, e_no_rule, e_no_peer];
    let bound = Duration::from_secs(5);
    // Warm up (lazily created runtime resources), then take the baseline.
    for &port in &ports {
        expect_prompt_close(port, bound);
    }
    let (pa, pb) = (p.a.proc().pid().unwrap(), p.b.proc().pid().unwrap());
    assert!(wait_until(Duration::from_secs(10), || {
        tcp_flows(&status(&p.a.socket)) == 0 && tcp_flows(&status(&p.b.socket)) == 0
    }));
    let (fa, fb) = (fd_count(pa), fd_count(pb));

    let worst = Arc::new(Mutex::new(Duration::ZERO));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let worst = worst.clone();
            std::thread::spawn(move || {
                for i in 0..75 {
                    let took = expect_prompt_close(ports[(t + i) % 3], bound);
                    let mut w = worst.lock().unwrap();
                    *w = (*w).max(took);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    eprintln!(
        "dead destinations: 300 attempts, slowest close {:?}",
        worst.lock().unwrap()
    );
    let mut last = String::new();
    let settled = wait_until(Duration::from_secs(30), || {
        let (sa, sb) = (status(&p.a.socket), status(&p.b.socket));
        let (na, nb) = (fd_count(pa), fd_count(pb));
        last = format!(
            "A: tcp_flows {} fds {na} (baseline {fa}); B: tcp_flows {} fds {nb} (baseline {fb})",
            tcp_flows(&sa),
            tcp_flows(&sb)
        );
        tcp_flows(&sa) == 0 && tcp_flows(&sb) == 0 && na <= fa && nb <= fb
    });
    assert!(settled, "something leaked: {last}");
    let sa = status(&p.a.socket);
    assert!(counter(&sa, "egress_no_route") >= 100, "{sa}");
    let sb = status(&p.b.socket);
    assert!(counter(&sb, "ingress_dial_failed") >= 100, "{sb}");
    // And the pair still works.
    let e = free_port();
    let (code, out, err) = p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--egress",
        &format!("tcp:{e}:100.100.0.2:7000"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    tcp_echo_roundtrip(local(e), 1 << 20, 12).unwrap();
}

#[test]
fn removing_a_rule_with_a_hundred_live_connections_returns_at_once() {
    let e = free_port();
    let rule = format!("tcp:{e}:100.100.0.2:7000");
    let p = echo_pair(std::slice::from_ref(&rule));
    // 100 connections, each echoing 256 KiB at 64 KiB/s: data flows for about 4 s.
    let progress: Vec<Arc<AtomicU64>> = (0..100).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let handles: Vec<_> = progress
        .iter()
        .enumerate()
        .map(|(i, pr)| {
            let pr = pr.clone();
            std::thread::spawn(move || {
                paced_echo_roundtrip(
                    local(e),
                    256 << 10,
                    200 + i as u64,
                    64 << 10,
                    Duration::from_secs(60),
                    pr,
                )
            })
        })
        .collect();
    let all_flowing = wait_until(Duration::from_secs(30), || {
        progress.iter().all(|p| p.load(Ordering::SeqCst) > 0)
    });
    assert!(all_flowing, "not all 100 connections got data flowing");
    assert!(
        progress
            .iter()
            .any(|p| p.load(Ordering::SeqCst) < 256 << 10),
        "all transfers already done before the removal"
    );
    let start = Instant::now();
    let (code, out, err) = p.a.nexctl(&["nexd", "proxy", "remove", "--egress", &rule]);
    let took = start.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    assert!(took < Duration::from_secs(2), "remove took {took:?}");
    let refused = TcpStream::connect_timeout(&local(e), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "new connection accepted after the removal"
    );
    let unfinished = progress
        .iter()
        .filter(|p| p.load(Ordering::SeqCst) < 256 << 10)
        .count();
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(err) = h.join().unwrap() {
            panic!("connection {i}: {err}\n--- a ---\n{}", tail(&p.a.log()));
        }
    }
    eprintln!("rule removal: nexctl returned in {took:?} with {unfinished} of 100 transfers still running; all completed intact");
    assert!(wait_until(Duration::from_secs(10), || tcp_flows(&status(
        &p.a.socket
    )) == 0));
}
