//! Forwarding loops (issue 13, finding 4): a rule pointing at the node's own listener is
//! refused, and a loop across two nodes stays within the flow limit and unwinds.

use nexd_e2e::leak::{pid, wait_drained};
use nexd_e2e::nexd::{run_to_exit, Launch};
use nexd_e2e::pair::Pair;
use nexd_e2e::procstat::{usage, PeakSampler};
use nexd_e2e::traffic::local;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn rules_that_forward_into_the_nodes_own_listeners_are_refused() {
    let mut pair = Pair::new(true);
    let egress_port = nexd_e2e::free_port();
    pair.a.start(
        &pair.scratch,
        &[
            "--egress".into(),
            format!("tcp:{egress_port}:100.100.0.2:7000"),
        ],
    );
    for (flag, rule) in [
        ("--ingress", format!("tcp:7001:127.0.0.1:{egress_port}")),
        ("--ingress", format!("tcp:7002:0.0.0.0:{egress_port}")),
        ("--ingress", format!("tcp:7003:[::1]:{egress_port}")),
        ("--egress", "tcp:127.0.0.1:7100:100.100.0.1:22".to_string()),
    ] {
        let (code, out, err) = pair.a.nexctl(&["nexd", "proxy", "add", flag, &rule]);
        assert_eq!(code, 65, "{flag} {rule} should be refused: {out}{err}");
        assert!(
            err.contains("loop back into nexd") && err.trim().lines().count() == 1,
            "one line naming the loop: {err}"
        );
    }
    // The other way round: an egress port that an ingress rule already targets.
    let target = nexd_e2e::free_port();
    let ingress = format!("tcp:7004:127.0.0.1:{target}");
    let (code, _, err) = pair
        .a
        .nexctl(&["nexd", "proxy", "add", "--ingress", &ingress]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pair.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--egress",
        &format!("tcp:{target}:100.100.0.2:7000"),
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains(&ingress), "names the ingress rule: {err}");
    // UDP and TCP are separate: a UDP ingress to the TCP egress port is no loop.
    let (code, _, err) = pair.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        &format!("udp:7005:127.0.0.1:{egress_port}"),
    ]);
    assert_eq!(code, 0, "{err}");

    // At start-up the same rule is a usage error, in one line.
    let conf = pair.b.conf.display().to_string();
    let (code, err) = run_to_exit(
        &[
            "proxy",
            "--config",
            &conf,
            "--egress",
            &format!("tcp:{target}:100.100.0.1:7000"),
            "--ingress",
            &format!("tcp:7000:127.0.0.1:{target}"),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("loop back into nexd"), "{err}");
}

#[test]
fn a_loop_across_two_nodes_stays_within_the_flow_limit_and_unwinds() {
    // A's egress port leads to B, and B's ingress rule leads back to A's egress port: each
    // connection through A makes another one. Neither node can see the loop by itself.
    let mut pair = Pair::new(true);
    let a_port = nexd_e2e::free_port();
    pair.b.start(
        &pair.scratch,
        &["--ingress".into(), format!("tcp:7000:127.0.0.1:{a_port}")],
    );
    const NOFILE: u64 = 200;
    pair.a.start_with(
        &pair.scratch,
        &["--egress".into(), format!("tcp:{a_port}:100.100.0.2:7000")],
        &Launch {
            nofile: Some(NOFILE),
            ..Launch::default_user()
        },
    );
    let nodes = [&pair.a, &pair.b];
    let idle: Vec<_> = nodes
        .iter()
        .map(|n| usage(pid(n)).expect("usage"))
        .collect();
    let peaks = PeakSampler::start(
        nodes.iter().map(|n| pid(n)).collect(),
        Duration::from_millis(20),
    );

    let started = Instant::now();
    let mut client = TcpStream::connect(local(a_port)).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let ended = client.read(&mut buf);
    let took = started.elapsed();
    assert!(
        matches!(&ended, Ok(0)) || ended.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the looping connection should end once the chain hits the flow limit: {ended:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop(client);

    for (node, idle) in nodes.iter().zip(&idle) {
        if let Err(e) = wait_drained(node, *idle, 2, Duration::from_secs(30)) {
            panic!("{e}\n{}", node.log());
        }
    }
    let peaks = peaks.finish();
    // A's descriptor limit allows it 100 flows; B holds one socket per flow of the chain.
    assert!(
        peaks[1].fds <= idle[1].fds + 100 + 8,
        "B's part of the chain is bounded by A's flow limit: peak {}, idle {}",
        peaks[1],
        idle[1]
    );
}
