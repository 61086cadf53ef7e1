//! A flow ends on both nodes within seconds of either end resetting, whatever the state of
//! the other side, and the host sockets it held are closed with it (issue 13, finding 1).

use nexd_e2e::leak::pid;
use nexd_e2e::pair::Pair;
use nexd_e2e::procstat::usage;
use nexd_e2e::status::{flows, status_json};
use nexd_e2e::traffic::{listen, local};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

const CLIENTS: usize = 50;

/// A server that accepts and never reads, holding every connection until the test ends.
/// Sends each accepted connection back to the test.
fn silent_server() -> (u16, mpsc::Receiver<TcpStream>) {
    let l = listen(local(0)).expect("bind server");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().take(CLIENTS) {
            let Ok(c) = c else { return };
            if tx.send(c).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Host sockets a node reports holding.
fn host_sockets(node: &nexd_e2e::pair::Node) -> u64 {
    status_json(node)
        .ok()
        .and_then(|s| s["host_sockets"].as_u64())
        .unwrap_or(u64::MAX)
}

/// Writes up to `len` bytes without blocking: the rest would wait on a server that never reads.
fn send_what_fits(c: &mut TcpStream, len: usize) {
    c.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    c.set_nonblocking(false).expect("blocking");
}

#[test]
fn clients_resetting_half_closed_and_stalled_connections_end_flows_and_sockets_on_both_nodes() {
    let mut pair = Pair::new(true);
    let (target, accepted) = silent_server();
    let port = pair.start_tcp_path(target, &[], &[]);
    let (pid_a, pid_b) = (pid(&pair.a), pid(&pair.b));
    let idle = (
        usage(pid_a).expect("a usage"),
        usage(pid_b).expect("b usage"),
    );
    let sockets_idle = (host_sockets(&pair.a), host_sockets(&pair.b));

    // Half the clients send a little (it all reaches the server's buffer) and half send
    // more than the path can hold while the server does not read, so nexd's reader on A
    // stalls waiting for the tunnel; all of them then half-close.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = TcpStream::connect(local(port)).expect("connect to A");
        let len = if i % 2 == 0 { 16 * 1024 } else { 8 << 20 };
        send_what_fits(&mut c, len);
        c.shutdown(Shutdown::Write).expect("shutdown write");
        clients.push(c);
    }
    let mut upstream = Vec::new();
    for _ in 0..CLIENTS {
        match accepted.recv_timeout(Duration::from_secs(30)) {
            Ok(c) => upstream.push(c),
            Err(e) => panic!(
                "the server got {} of {CLIENTS} connections: {e}\nA: {}\nB: {}",
                upstream.len(),
                pair.a.log(),
                pair.b.log()
            ),
        }
    }
    assert!(
        nexd_e2e::wait_until(Duration::from_secs(20), || flows(&pair.b)
            .is_ok_and(|f| f.tcp == CLIENTS as u64)),
        "B should hold {CLIENTS} flows: {:?}",
        flows(&pair.b)
    );
    let busy = (host_sockets(&pair.a), host_sockets(&pair.b));
    assert!(
        busy.0 >= sockets_idle.0 + CLIENTS as u64 && busy.1 >= sockets_idle.1 + CLIENTS as u64,
        "each flow's host socket is counted: idle {sockets_idle:?}, busy {busy:?}"
    );

    // Close every client with a reset.
    for c in clients.drain(..) {
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
    }

    // Both nodes end every flow and close every socket they held for them, well before any
    // tunnel-side timeout (120 s) could have done it.
    let deadline = Duration::from_secs(15);
    for (node, pid, idle, sockets) in [
        (&pair.a, pid_a, idle.0, sockets_idle.0),
        (&pair.b, pid_b, idle.1, sockets_idle.1),
    ] {
        let drained = nexd_e2e::wait_until(deadline, || {
            flows(node).is_ok_and(|f| f.tcp == 0)
                && host_sockets(node) == sockets
                && usage(pid).is_some_and(|u| u.fds <= idle.fds + 1)
        });
        assert!(
            drained,
            "{}: flows {:?}, host sockets {} (idle {sockets}), {:?} (idle {idle}) {deadline:?} after the resets\n{}",
            node.name,
            flows(node),
            host_sockets(node),
            usage(pid),
            node.log()
        );
    }

    // B closed the upstream connections (reset): the server sees them end instead of
    // holding them half-closed, after the bytes that reached its buffer.
    let mut buf = vec![0u8; 1 << 20];
    for (i, mut c) in upstream.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let ended = (0..64).find_map(|_| match c.read(&mut buf) {
            Ok(0) => Some(Ok(())),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(Ok(())),
            Err(e) => Some(Err(e)),
        });
        assert!(
            matches!(ended, Some(Ok(()))),
            "upstream connection {i} still open on the server: {ended:?}"
        );
    }
}
