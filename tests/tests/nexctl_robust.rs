//! nexctl against daemons that do not answer, huge replies, closed pipes and sockets it
//! must not trust (issue 13, round 2).

use nexd_e2e::nexd::{shared_bin, Keypair};
use nexd_e2e::pair::Pair;
use nexd_e2e::{is_root, skip, wait_until};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nexctl(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(shared_bin("nexctl"))
        .arg("--unix-socket")
        .arg(socket)
        .args(args)
        .env_remove("NEXD_UNIX_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run nexctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_daemon_that_never_answers_is_exit_69_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nexd.sock");
    // Accepts (the backlog does) and never says a word.
    let listener = UnixListener::bind(&sock).unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        // Keep them open until the test process ends.
        std::thread::park();
    });
    let t = Instant::now();
    let out = nexctl(&sock, &["--timeout", "2", "nexd", "status"]);
    let took = t.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("did not answer within 2 s"), "{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    // `version` reports the daemon unreachable instead of hanging.
    let out = nexctl(&sock, &["--timeout", "1", "version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nexd unreachable"));
    drop(held);
}

/// Node A with one peer holding `n` AllowedIPs (v4 /32s), added through nexctl.
fn peer_with_allowed_ips(n: usize) -> (Pair, String) {
    let mut p = Pair::new(false);
    p.a.start(&p.scratch, &[]);
    let key = Keypair::generate().public;
    let ips: Vec<String> = (0..n)
        .map(|i| format!("100.64.{}.{}/32", i / 250, i % 250 + 1))
        .collect();
    let (code, _, err) = p.a.nexctl(&[
        "nexd",
        "peers",
        "add",
        "--public-key",
        &key,
        "--allowed-ips",
        &ips.join(","),
    ]);
    assert_eq!(code, 0, "{err}");
    (p, key)
}

#[test]
fn a_peer_with_5000_allowed_ips_lists_without_panic() {
    let (p, key) = peer_with_allowed_ips(5000);
    let (code, out, err) = p.a.nexctl(&["nexd", "peers", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let row = out.lines().find(|l| l.starts_with(&key)).expect("peer row");
    // The column is wider than a format width may be (65,535).
    assert!(row.len() > 65_535, "row only {} bytes", row.len());
    assert!(row.contains("100.64.19.250/32"), "last AllowedIP missing");
    let (code, out, err) = p.a.nexctl(&["-o", "json", "nexd", "peers", "list"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let peer = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["public_key"] == key.as_str())
        .expect("peer in JSON");
    assert_eq!(peer["allowed_ips"].as_array().unwrap().len(), 5000);
}

#[test]
fn a_closed_stdout_ends_nexctl_quietly() {
    let (p, _) = peer_with_allowed_ips(2000);
    for args in [&["nexd", "status"][..], &["nexd", "peers", "list"]] {
        let mut child = nexd_e2e::pair::nexctl_command(None, &p.a.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nexctl");
        // The reader goes away before nexctl has its answer (`nexctl ... | head -0`).
        drop(child.stdout.take());
        let mut status = None;
        assert!(
            wait_until(Duration::from_secs(30), || {
                status = child.try_wait().ok().flatten();
                status.is_some()
            }),
            "nexctl did not exit"
        );
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: not quiet: {err}");
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_socket_owned_by_another_user_is_refused_with_77() {
    if !is_root() {
        skip(
            "a_socket_owned_by_another_user_is_refused_with_77",
            "needs root to chown the socket",
        );
        return;
    }
    // A stand-in daemon's socket owned by nobody in a directory anyone may write: what a
    // local user could plant where nexctl looks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sock = dir.path().join("nexd.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let check = |out: Output| {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(77), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&sock.display().to_string()), "{err}");
        assert!(err.contains("uid 65534"), "{err}");
    };
    // As root.
    check(nexctl(&sock, &["--timeout", "2", "nexd", "status"]));
    // As root, in a private root-owned directory: root trusts only root's sockets.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let inner = private.path().join("nexd.sock");
    let _inner_listener = UnixListener::bind(&inner).unwrap();
    std::os::unix::fs::chown(&inner, Some(65534), Some(65534)).unwrap();
    let out = nexctl(&inner, &["--timeout", "2", "nexd", "status"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("uid 65534") && err.contains("run nexctl as that user"),
        "{err}"
    );
    // As another unprivileged user, who could connect (the socket is 0777).
    let out = Command::new("setpriv")
        .args(["--reuid=65533", "--regid=65533", "--clear-groups", "--"])
        .arg(shared_bin("nexctl"))
        .arg("--unix-socket")
        .arg(&sock)
        .args(["--timeout", "2", "nexd", "status"])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv nexctl");
    check(out);
}
