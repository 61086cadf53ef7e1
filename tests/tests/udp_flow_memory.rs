//! What an egress UDP flow costs in resident memory (issue 13, finding 8: ~33 KiB each,
//! 16k flows → 549 MB, before flow sockets got buffers sized to their use).

use nexd_e2e::leak::pid;
use nexd_e2e::pair::Pair;
use nexd_e2e::procstat::usage;
use nexd_e2e::status::flows;
use nexd_e2e::traffic::{local, udp_echo_server};
use std::net::UdpSocket;
use std::time::Duration;

const FLOWS: usize = 2000;
/// Resident bytes one idle UDP flow may add (its smoltcp socket, slot metadata, the two
/// payload pages its datagrams touched, index entries, a share of the allocator's slack).
/// Measured ~14 KiB; the bound leaves room for the allocator on a busy machine and still
/// fails at the old ~33 KiB.
const PER_FLOW_BOUND: u64 = 20 * 1024;

#[test]
fn an_egress_udp_flow_costs_little_resident_memory() {
    let mut pair = Pair::new(true);
    let echo = UdpSocket::bind(local(0)).expect("bind echo");
    let echo_port = echo.local_addr().expect("addr").port();
    udp_echo_server(echo);
    pair.b.start(
        &pair.scratch,
        &[
            "--ingress".into(),
            format!("udp:7000:127.0.0.1:{echo_port}"),
        ],
    );
    let port = nexd_e2e::free_port();
    pair.a.start(
        &pair.scratch,
        &[
            "--egress".into(),
            format!("udp:{port}:100.100.0.2:7000"),
            "--udp-idle-timeout".into(),
            "600".into(),
        ],
    );
    // One round trip first, so the session and the stack's first allocations exist.
    let warm = UdpSocket::bind(local(0)).expect("bind");
    warm.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let warmed = (0..10).any(|_| {
        warm.send_to(b"warm", local(port)).is_ok() && warm.recv(&mut buf).is_ok_and(|n| n == 4)
    });
    assert!(warmed, "no echo through the pair\n{}", pair.a.log());
    let before = usage(pid(&pair.a)).expect("usage");

    let mut clients = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let c = UdpSocket::bind(local(0)).expect("bind client");
        c.send_to(format!("flow {i}").as_bytes(), local(port))
            .expect("send");
        clients.push(c);
    }
    assert!(
        nexd_e2e::wait_until(Duration::from_secs(30), || flows(&pair.a)
            .is_ok_and(|f| f.udp as usize > FLOWS)),
        "A should hold {FLOWS} UDP flows: {:?}",
        flows(&pair.a)
    );
    let after = usage(pid(&pair.a)).expect("usage");
    let per_flow = after.rss_kib.saturating_sub(before.rss_kib) * 1024 / FLOWS as u64;
    eprintln!("RSS before {before}, with {FLOWS} UDP flows {after}: {per_flow} bytes a flow");
    assert!(
        per_flow <= PER_FLOW_BOUND,
        "an idle UDP flow costs {per_flow} bytes (bound {PER_FLOW_BOUND}): before {before}, after {after}"
    );
}
