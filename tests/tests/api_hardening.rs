//! The control API under abuse (issue 13, round 2): out of descriptors, stream floods,
//! connection floods, silent connections, oversized requests, stock gRPC clients.

use nexd_e2e::nexd::{Launch, Nexd};
use nexd_e2e::pair::Pair;
use nexd_e2e::procstat::{usage, PeakSampler};
use nexd_e2e::status::{counter, status_json};
use nexd_e2e::{skip, wait_until};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One nexd (node A of a pair, no peers, no rules).
fn lone() -> Pair {
    let mut p = Pair::new(false);
    p.a.start(&p.scratch, &[]);
    p
}

fn pid(p: &mut Pair) -> u32 {
    p.a.proc().pid().expect("nexd pid")
}

/// Whether the server closed the connection (EOF or reset) within `within`.
fn closed_within(s: &mut UnixStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // SETTINGS and the like: keep reading until the close.
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => return false,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn api_counter(p: &Pair, name: &str) -> u64 {
    counter(&status_json(&p.a).unwrap_or_else(|e| panic!("{e}")), name)
}

#[test]
fn out_of_descriptors_the_api_pauses_instead_of_spinning_and_recovers() {
    // nexd with 64 descriptors (it needs about half at start).
    let mut p = Pair::new(false);
    let args = [
        "--state-dir".to_string(),
        p.a.state_dir.display().to_string(),
        "--unix-socket".into(),
        p.a.socket.display().to_string(),
        "proxy".into(),
        "--config".into(),
        p.a.conf.display().to_string(),
    ];
    let launch = Launch {
        nofile: Some(64),
        ..Launch::default_user()
    };
    let mut n = Nexd::start(&p.scratch, "a", &args, &launch);
    n.wait_for_log("nexd proxy running", Duration::from_secs(10));
    p.a.nexd = Some(n);
    let pid = pid(&mut p);
    // More connections than descriptors: the rest wait in the listen backlog, keeping the
    // socket readable while accept(2) fails with EMFILE.
    let conns: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&p.a.socket).expect("connect"))
        .collect();
    p.a.proc()
        .wait_for_log("API accept failed", Duration::from_secs(20));
    let before = nexd_e2e::procstat::cpu_ticks(pid);
    let t = Instant::now();
    wait_until(Duration::from_secs(2), || false);
    let ticks = nexd_e2e::procstat::cpu_ticks(pid) - before;
    let hz = 100.0; // USER_HZ on Linux
    let share = ticks as f64 / hz / t.elapsed().as_secs_f64();
    assert!(
        share < 0.15,
        "nexd used {:.0}% of a core while out of descriptors ({ticks} ticks)",
        share * 100.0
    );
    // One log line per interval, not one per failed accept.
    let lines = p.a.log().matches("API accept failed").count();
    assert!(lines <= 2, "{lines} log lines in ~2 s:\n{}", p.a.log());
    // While exhausted, nexctl gives up within its timeout instead of hanging.
    let t = Instant::now();
    let (code, _, err) = p.a.nexctl(&["--timeout", "2", "nexd", "status"]);
    assert_ne!(code, 0, "status answered while out of descriptors?");
    assert!(t.elapsed() < Duration::from_secs(10), "{err}");

    drop(conns);
    let mut last = String::new();
    let back = wait_until(Duration::from_secs(20), || {
        let (code, out, err) = p.a.nexctl(&["--timeout", "5", "nexd", "status"]);
        last = format!("{code} {out} {err}");
        code == 0
    });
    assert!(back, "status never worked again: {last}");
    assert!(api_counter(&p, "api_accept_fd_exhausted") > 0);
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend((stream & 0x7fff_ffff).to_be_bytes());
    f.extend(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HPACK for a GetStatus request's headers (static table and literals, no Huffman).
fn get_status_headers() -> Vec<u8> {
    fn string(b: &mut Vec<u8>, s: &str) {
        b.push(s.len() as u8);
        b.extend(s.as_bytes());
    }
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    b.push(0x04); // :path, literal without indexing
    string(&mut b, "/nexd.v1.Nexd/GetStatus");
    b.push(0x01); // :authority
    string(&mut b, "nexd");
    b.extend([0x0f, 0x10]); // content-type (static index 31)
    string(&mut b, "application/grpc");
    b.push(0x00); // te: a new name
    string(&mut b, "te");
    string(&mut b, "trailers");
    b
}

#[test]
fn a_stream_flood_on_one_connection_keeps_memory_bounded() {
    let mut p = lone();
    let pid = pid(&mut p);
    let base = usage(pid).expect("usage");
    let mut s = UnixStream::connect(&p.a.socket).expect("connect");
    let mut reader = s.try_clone().unwrap();
    // Drain what nexd sends (SETTINGS, RST_STREAMs, GOAWAY) so it never blocks on us.
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        reader
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let sampler = PeakSampler::start(vec![pid], Duration::from_millis(50));
    let block = get_status_headers();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // empty SETTINGS
    s.write_all(&out).unwrap();
    // 100k streams, each HEADERS without END_STREAM: requests that never finish.
    let mut sent = 0u32;
    for chunk in 0..100u32 {
        let mut batch = Vec::with_capacity(1000 * (block.len() + 9));
        for i in 0..1000u32 {
            let id = 2 * (chunk * 1000 + i) + 1;
            batch.extend(frame(0x1, 0x4, id, &block)); // HEADERS, END_HEADERS
        }
        if s.write_all(&batch).is_err() {
            break; // nexd closed the connection (GOAWAY): also bounded
        }
        sent += 1000;
    }
    // Both ways: the drain thread's clone shares the socket.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    let peak = sampler.finish()[0];
    let grew_mib = (peak.rss_kib.saturating_sub(base.rss_kib)) as f64 / 1024.0;
    assert!(
        grew_mib < 64.0,
        "RSS grew {grew_mib:.1} MiB after {sent} streams (base {base}, peak {peak})"
    );
    // Still serving.
    let (code, _, err) = p.a.nexctl(&["nexd", "status"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let p = lone();
    const CAP: usize = 128;
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut s = UnixStream::connect(&p.a.socket).expect("connect");
        s.write_all(PREFACE).unwrap();
        s.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        held.push(s);
    }
    // All of those are in (nexd answered each with its SETTINGS) before we go over.
    for s in held.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("nexd SETTINGS");
    }
    for _ in 0..3 {
        let mut extra = UnixStream::connect(&p.a.socket).expect("connect");
        let _ = extra.write_all(PREFACE);
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)),
            "a connection over the cap was kept open"
        );
    }
    let (code, _, _) = p.a.nexctl(&["--timeout", "3", "nexd", "status"]);
    assert_ne!(code, 0, "status answered with every slot taken");
    drop(held);
    let mut refused = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            match status_json(&p.a) {
                Ok(v) => {
                    refused = counter(&v, "api_connections_refused");
                    true
                }
                Err(_) => false,
            }
        }),
        "status never worked again"
    );
    assert!(refused >= 3, "api_connections_refused = {refused}");
}

#[test]
fn silent_and_half_preface_connections_are_closed() {
    let p = lone();
    let mut silent = UnixStream::connect(&p.a.socket).expect("connect");
    let mut half = UnixStream::connect(&p.a.socket).expect("connect");
    half.write_all(&PREFACE[..12]).unwrap();
    // nexd allows 10 s for the preface; generous margin for a loaded machine.
    let t = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(30)),
        "silent connection kept"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(30)),
        "half preface kept"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(8),
        "closed after {:?}: before the preface timeout",
        t.elapsed()
    );
    assert!(api_counter(&p, "api_connections_timed_out") >= 2);
}

/// A gRPC call from the test, for requests nexctl would refuse to send.
fn grpc<T>(
    socket: &Path,
    call: impl AsyncFnOnce(nexd_common::api::nexd_client::NexdClient<tonic::transport::Channel>) -> T,
) -> T {
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Endpoint, Uri};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = socket.to_path_buf();
    rt.block_on(async move {
        let channel = Endpoint::from_static("http://nexd.sock")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let s = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(s).await?))
                }
            }))
            .await
            .expect("channel");
        call(nexd_common::api::nexd_client::NexdClient::new(channel)).await
    })
}

fn add_rule(rule: String, allowed_peers: Vec<String>) -> nexd_common::api::AddProxyRuleRequest {
    nexd_common::api::AddProxyRuleRequest {
        rule: Some(nexd_common::api::ProxyRule {
            direction: nexd_common::api::Direction::Ingress as i32,
            rule,
            allowed_peers,
            ..Default::default()
        }),
    }
}

#[test]
fn oversized_requests_are_refused_with_a_short_message() {
    use tonic::Code;
    let p = lone();
    let long_rule = format!("tcp:443:127.0.0.1:{}", "9".repeat(2000));
    let e = grpc(&p.a.socket, async |mut c| {
        c.add_proxy_rule(add_rule(long_rule, vec![])).await
    })
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("rule too long"), "{}", e.message());
    assert!(e.message().len() < 200, "{}", e.message());
    // Over the 1 MiB request limit: refused before decoding.
    let huge = "x".repeat(4 << 20);
    let e = grpc(&p.a.socket, async |mut c| {
        c.add_proxy_rule(add_rule(huge, vec![])).await
    })
    .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(e.message().len() < 300, "{}", e.message());
    // An invalid entry in a long list is quoted short.
    let bad_entry = format!("nobody{}", "y".repeat(900));
    let e = grpc(&p.a.socket, async |mut c| {
        c.add_proxy_rule(add_rule("tcp:443:127.0.0.1:8443".into(), vec![bad_entry]))
            .await
    })
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("…"), "{}", e.message());
    assert!(e.message().len() < 200, "{}", e.message());

    // Through nexctl: over a cap is exit 65 with one line.
    let peers: Vec<String> = (0..1025)
        .map(|i| format!("100.100.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "proxy",
        "add",
        "--ingress",
        "tcp:443:127.0.0.1:8443",
        "--allow-peer",
        &peers.join(","),
    ]);
    assert_eq!(code, 65, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("too many allow-list entries (1025, at most 1024)"),
        "{err}"
    );
    let ips: Vec<String> = (0..8193)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let key = nexd_e2e::nexd::Keypair::generate().public;
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &key,
        "--allowed-ips",
        &ips.join(","),
    ]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("too many allowed IPs (8193, at most 8192)"),
        "{err}"
    );
    // Nothing was half-applied.
    let (code, out, err) = p.a.nexctl(&["nexd", "peers", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&key), "{out}");
}

/// A python3 that has grpcio (pyenv shims may shadow the Debian one).
fn python_with_grpc() -> Option<String> {
    ["python3", "/usr/bin/python3"].into_iter().find_map(|py| {
        Command::new(py)
            .args(["-c", "import grpc"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| py.to_string())
    })
}

const PY_CLIENT: &str = r#"
import sys, grpc
sock = sys.argv[1]
# grpcio's own default, the percent-encoded path newer grpcio sends, the raw path, nothing.
for authority in [None, sock.replace("/", "%2F"), sock, "unix:" + sock, ""]:
    opts = [] if authority is None else [("grpc.default_authority", authority)]
    with grpc.insecure_channel("unix:" + sock, options=opts) as ch:
        # Empty GetStatusRequest; the reply is checked for nexd's version field.
        reply = ch.unary_unary("/nexd.v1.Nexd/GetStatus")(b"", timeout=10)
        assert len(reply) > 0, authority
        # HealthCheckRequest{service: "nexd.v1.Nexd"}; reply status 1 = SERVING.
        svc = b"nexd.v1.Nexd"
        health = ch.unary_unary("/grpc.health.v1.Health/Check")(
            b"\x0a" + bytes([len(svc)]) + svc, timeout=10)
        assert health == b"\x08\x01", (authority, health)
print("ok")
"#;

#[test]
fn stock_grpc_client_python_works_whatever_the_authority() {
    let Some(py) = python_with_grpc() else {
        skip(
            "stock_grpc_client_python_works_whatever_the_authority",
            "no python3 with grpcio (Debian: python3-grpcio; scripts/install-deps.sh)",
        );
        return;
    };
    let p = lone();
    let script = p.scratch.write("client.py", PY_CLIENT);
    let out = Command::new("timeout")
        .args(["120", &py])
        .arg(&script)
        .arg(&p.a.socket)
        .output()
        .expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ok"), "{text}");
}

#[test]
fn flag_rules_over_the_caps_are_refused_at_start() {
    use nexd_e2e::nexd::{config, run_to_exit, Keypair, Scratch};
    let s = Scratch::new();
    let keys = Keypair::generate();
    let conf = s.write(
        "n.conf",
        &config(&keys.private, "100.100.0.1/24", nexd_e2e::free_port(), &[]),
    );
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let conf = conf.display().to_string();
    let long = format!("tcp:443:127.0.0.1:{}", "9".repeat(2000));
    let (code, err) = run_to_exit(
        &["proxy", "--config", &conf, "--ingress", &long],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("rule too long (2018 bytes, at most 1024)"),
        "{err}"
    );
    assert!(err.len() < 300, "{err}");
    let peers: Vec<String> = (0..1025)
        .map(|i| format!("100.100.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let (code, err) = run_to_exit(
        &[
            "proxy",
            "--config",
            &conf,
            "--ingress",
            "tcp:443:127.0.0.1:8443",
            "--allow-peer",
            &peers.join(","),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("too many --allow-peer entries (1025, at most 1024)"),
        "{err}"
    );
}
