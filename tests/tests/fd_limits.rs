//! The flow limit fits the descriptor limit: past it, new flows are refused cleanly and
//! counted, and the daemon stays responsive (issue 13, findings 2 and 3).

use nexd_e2e::nexd::Launch;
use nexd_e2e::pair::Pair;
use nexd_e2e::status::{counter, status_json};
use nexd_e2e::traffic::{echo_server, local};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Descriptor limit nexd A starts with: half of it is kept back, so it may hold 100 flows.
const NOFILE: u64 = 200;
const FLOWS: usize = 100;
const EXTRA: usize = 30;

/// Opens a connection through A and checks one echo; returns it open, or why not.
fn echo_once(port: u16, i: usize) -> Result<TcpStream, String> {
    let mut c = TcpStream::connect_timeout(&local(port), Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let msg = format!("hello {i}\n");
    c.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != msg.as_bytes() {
        return Err(format!("echo mismatch: {got:?}"));
    }
    Ok(c)
}

#[test]
fn the_flow_limit_follows_the_descriptor_limit_and_refuses_cleanly_past_it() {
    let mut pair = Pair::new(true);
    let echo = echo_server();
    pair.b.start(
        &pair.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    let port = nexd_e2e::free_port();
    let launch = Launch {
        nofile: Some(NOFILE),
        ..Launch::default_user()
    };
    pair.a.start_with(
        &pair.scratch,
        &["--egress".into(), format!("tcp:{port}:100.100.0.2:7000")],
        &launch,
    );
    let log = pair.a.log();
    assert!(
        log.contains(&format!("max_flows={FLOWS}")) && log.contains(&format!("fd_limit={NOFILE}")),
        "A should announce the flow limit the descriptor limit allows: {log}"
    );

    let mut open = Vec::new();
    let mut refused = Vec::new();
    for i in 0..FLOWS + EXTRA {
        let started = Instant::now();
        match echo_once(port, i) {
            Ok(c) => open.push(c),
            Err(e) => refused.push((i, e, started.elapsed())),
        }
    }
    assert_eq!(
        open.len(),
        FLOWS,
        "exactly the flow limit's worth of connections work; refused: {refused:?}\n{}",
        pair.a.log()
    );
    for (i, e, took) in &refused {
        assert!(
            *took < Duration::from_secs(5)
                && !e.contains("timed out")
                && !e.contains("would block"),
            "connection {i} past the limit should be reset at once, not hang: {e} after {took:?}"
        );
    }

    let asked = Instant::now();
    let st = status_json(&pair.a).expect("status past the limit");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "status should answer promptly at the limit: {took:?}"
    );
    assert_eq!(
        counter(&st, "total_limit"),
        EXTRA as u64,
        "refusals are counted: {st}"
    );
    assert_eq!(
        counter(&st, "accept_failed"),
        0,
        "no accept ran out of descriptors: {st}"
    );
    let fds = st["open_fds"].as_u64().unwrap_or(0);
    assert!(
        fds > FLOWS as u64 && fds < NOFILE,
        "A holds its flows' sockets, under the limit: {fds} of {NOFILE}"
    );
    assert!(
        !pair.a.log().contains("accept failed"),
        "no accept failed: {}",
        pair.a.log()
    );

    // The slots come back: with the flows closed, new connections work again.
    drop(open);
    assert!(
        nexd_e2e::wait_until(Duration::from_secs(20), || echo_once(port, 0).is_ok()),
        "connections work again once flows closed\n{}",
        pair.a.log()
    );
}

#[test]
fn accept_loops_back_off_when_descriptors_run_out_and_recover() {
    let mut pair = Pair::new(true);
    let echo = echo_server();
    pair.b.start(
        &pair.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{echo}")],
    );
    let port = nexd_e2e::free_port();
    pair.a.start_with(
        &pair.scratch,
        &["--egress".into(), format!("tcp:{port}:100.100.0.2:7000")],
        &Launch {
            nofile: Some(NOFILE),
            ..Launch::default_user()
        },
    );
    let pid = nexd_e2e::leak::pid(&pair.a);
    let fds = || nexd_e2e::procstat::usage(pid).map_or(0, |u| u.fds as u64);
    // 80 flows (of 100) and idle API connections (at most 128) take every descriptor.
    let flows: Vec<TcpStream> = (0..80)
        .map(|i| echo_once(port, i).expect("a flow within the limit"))
        .collect();
    let mut api = Vec::new();
    for _ in 0..NOFILE {
        if fds() >= NOFILE {
            break;
        }
        let want = fds() + 1;
        match std::os::unix::net::UnixStream::connect(&pair.a.socket) {
            Ok(c) => api.push(c),
            Err(_) => break,
        }
        if !nexd_e2e::wait_until(Duration::from_secs(2), || fds() >= want) {
            break;
        }
    }
    assert_eq!(
        fds(),
        NOFILE,
        "A should be out of descriptors ({} API connections)",
        api.len()
    );

    // A new client waits in the backlog while accept fails with EMFILE; nexd must not spin.
    let mut waiting = TcpStream::connect(local(port)).expect("the kernel accepts into the backlog");
    let before = nexd_e2e::procstat::cpu_ticks(pid);
    let window = Instant::now();
    // A measuring window, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(2));
    let used = nexd_e2e::procstat::cpu_ticks(pid) - before;
    let elapsed = window.elapsed();
    assert!(
        used <= 30,
        "A used {used} clock ticks in {elapsed:?} while out of descriptors (spinning)\n{}",
        pair.a.log()
    );
    let warnings = pair.a.log().matches("accept failed").count();
    assert!(
        (1..=4).contains(&warnings),
        "accept failures are logged once per interval, not per attempt: {warnings} lines\n{}",
        pair.a.log()
    );

    // Descriptors come back: the waiting client is served.
    drop(api);
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    waiting.write_all(b"late\n").expect("write");
    let mut got = [0u8; 5];
    waiting.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "the waiting client is served once descriptors free up: {e}\n{}",
            pair.a.log()
        )
    });
    assert_eq!(&got, b"late\n");
    let st = status_json(&pair.a).expect("status");
    assert!(counter(&st, "accept_failed") >= 1, "{st}");
    drop(flows);
}
