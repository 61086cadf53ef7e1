//! Drain on SIGTERM: nexd stops accepting, lets open connections finish within
//! `--drain-timeout`, then resets what is left both ways (never a clean FIN for an
//! unfinished stream), and exits 0; a second signal resets at once. Two real nexd on
//! loopback: client → A (egress) → WireGuard → B (ingress) → a server of the test's own.

use nexd_e2e::pair::Pair;
use nexd_e2e::traffic::{local, payload, sha256};
use nexd_e2e::wait_until;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a connection ended for the side that read it.
#[derive(Debug, PartialEq)]
enum End {
    /// Clean end of stream after this many bytes.
    Fin(usize),
    /// Reset (or another error) after this many bytes.
    Reset(usize),
}

/// Reads to the end; how it ended, and the bytes.
fn read_to_end(s: &mut TcpStream) -> (End, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (End::Fin(got.len()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (End::Reset(got.len()), got),
        }
    }
}

/// A server that sends `data` in 16 chunks, `gap` apart, then closes cleanly; or, with
/// nothing to send, just reads. Reports how each connection ended on its side.
fn server(data: Vec<u8>, gap: Duration) -> (u16, mpsc::Receiver<()>, mpsc::Receiver<End>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let (accepted_tx, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = accepted_tx.send(());
            let (data, tx) = (data.clone(), tx.clone());
            std::thread::spawn(move || {
                if !data.is_empty() {
                    for chunk in data.chunks(data.len().div_ceil(16)) {
                        if s.write_all(chunk).is_err() {
                            return;
                        }
                        std::thread::sleep(gap);
                    }
                    let _ = s.shutdown(Shutdown::Write);
                }
                let _ = tx.send(read_to_end(&mut s).0);
            });
        }
    });
    (port, accepted, rx)
}

fn start(target: u16, drain: &str) -> (Pair, u16) {
    let mut p = Pair::new(true);
    let e = p.start_tcp_path(target, &[], &["--drain-timeout", drain]);
    (p, e)
}

fn sigterm(p: &mut Pair) {
    let pid = p.a.proc().pid().unwrap();
    // SAFETY: kill(2) on a PID this test started.
    #[allow(unsafe_code)]
    let r = unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
}

#[test]
fn an_open_stream_finishes_during_the_drain_and_new_connections_are_refused() {
    let data = payload(2 << 20, 7);
    let (target, _, _) = server(data.clone(), Duration::from_millis(150));
    let (mut p, e) = start(target, "20");
    let c = TcpStream::connect(local(e)).unwrap();
    finishes_during_the_drain(&mut p, c, e, &data);
}

/// With `c` receiving `data` through A, SIGTERM A: A stops accepting on `port` at once,
/// `c` still gets every byte and a clean end, and A exits 0.
fn finishes_during_the_drain(p: &mut Pair, mut c: TcpStream, port: u16, data: &[u8]) {
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    sigterm(p);
    p.a.proc().wait_for_log("draining", Duration::from_secs(10));
    // Not accepting any more.
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(local(port))
            .is_err()),
        "new connections still accepted on {port} while draining"
    );
    let (end, rest) = read_to_end(&mut c);
    let mut got = first.to_vec();
    got.extend_from_slice(&rest);
    assert_eq!(end, End::Fin(got.len() - 1), "{}", p.a.log());
    assert_eq!(
        sha256(&got),
        sha256(data),
        "stream changed during the drain"
    );
    drop(c);
    let status = p.a.proc().terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        p.a.log()
    );
}

#[test]
fn what_is_left_at_the_drain_timeout_is_reset_both_ways() {
    // The server never sends and never closes: the stream cannot finish.
    let (target, accepted, ends) = server(Vec::new(), Duration::ZERO);
    let (mut p, e) = start(target, "1");
    let mut c = TcpStream::connect(local(e)).unwrap();
    c.write_all(b"hello").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The connection reaches the server before the signal.
    accepted.recv_timeout(Duration::from_secs(15)).unwrap();
    let t0 = Instant::now();
    sigterm(&mut p);
    let (end, _) = read_to_end(&mut c);
    assert_eq!(
        end,
        End::Reset(0),
        "the client saw a clean end:\n{}",
        p.a.log()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "reset before the drain timeout"
    );
    // The peer side was reset too: the server saw a reset, not a FIN.
    let server_end = ends.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(server_end, End::Reset(5), "{}", p.b.log());
    let status = p.a.proc().terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        p.a.log()
    );
}

#[test]
fn a_second_signal_resets_at_once() {
    let (target, accepted, _) = server(Vec::new(), Duration::ZERO);
    let (mut p, e) = start(target, "120");
    let mut c = TcpStream::connect(local(e)).unwrap();
    c.write_all(b"hello").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The connection is a flow on both nodes before the signal (else there is nothing to drain).
    accepted.recv_timeout(Duration::from_secs(15)).unwrap();
    sigterm(&mut p);
    p.a.proc().wait_for_log("draining", Duration::from_secs(10));
    let t0 = Instant::now();
    // terminate() sends the second SIGTERM.
    let status = p.a.proc().terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        p.a.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "second signal did not cut the drain"
    );
    let (end, _) = read_to_end(&mut c);
    assert_eq!(end, End::Reset(0), "{}", p.a.log());
}

#[test]
fn a_socks5_stream_finishes_during_the_drain_and_the_server_stops_accepting() {
    let data = payload(2 << 20, 9);
    let (target, _, _) = server(data.clone(), Duration::from_millis(150));
    let socks = nexd_e2e::free_port();
    let mut p = Pair::new(true);
    p.start_tcp_path(
        target,
        &[],
        &["--drain-timeout", "20", "--socks5", &socks.to_string()],
    );
    let dest: nexd_e2e::socks::Dest = "100.100.0.2:7000".parse().unwrap();
    let c = nexd_e2e::socks::connect(local(socks), &dest, None).unwrap();
    finishes_during_the_drain(&mut p, c, socks, &data);
}
