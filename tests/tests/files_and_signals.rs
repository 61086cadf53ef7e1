//! Files an attacker controls, file sizes, signals and config errors (issue 13, round 2):
//! state and socket directories another user could write are refused; nothing in the state
//! directory is followed through a symlink; config and state reads are bounded; SIGUSR1
//! logs a status summary and SIGUSR2 is harmless; a duplicate peer or the node's own key is
//! a config error with file and line.

use nexd_e2e::nexd::{
    config, run_to_exit, shared_nexd_bin, Keypair, Launch, Nexd, PeerSpec, Scratch,
};
use nexd_e2e::pair::nexctl_as;
use nexd_e2e::{free_port, have, is_root, skip, wait_until};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// sysexits EX_CONFIG.
const EX_CONFIG: i32 = 78;

/// A config with one peer; returns (path, node keys, peer keys).
fn write_config(scratch: &Scratch, name: &str) -> (PathBuf, Keypair, Keypair) {
    let (k, p) = (Keypair::generate(), Keypair::generate());
    let text = config(
        &k.private,
        "100.100.0.1/32",
        free_port(),
        &[PeerSpec {
            public: &p.public,
            allowed_ips: "100.100.0.2/32",
            endpoint: Some("127.0.0.1:9".into()),
        }],
    );
    (scratch.write(name, &text), k, p)
}

fn mkdir_mode(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs nexd as ourselves; asserts exit `code` and exactly one stderr line; returns it.
fn one_line_exit(args: &[&str], code: i32) -> String {
    let (got, err) = run_to_exit(args, Duration::from_secs(10));
    assert_eq!(got, Some(code), "nexd {args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn proxy_args<'a>(state: &'a str, socket: &'a str, conf: &'a str) -> Vec<&'a str> {
    vec![
        "--state-dir",
        state,
        "--unix-socket",
        socket,
        "proxy",
        "--config",
        conf,
    ]
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn state_and_socket_dirs_another_user_could_write_are_refused() {
    let scratch = Scratch::new();
    let (conf, _, _) = write_config(&scratch, "n.conf");
    let conf = s(&conf);
    let socket = s(&scratch.path().join("nexd.sock"));

    // Mode 0777, our own: refused, naming the directory and its mode.
    let open = scratch.path().join("open-state");
    mkdir_mode(&open, 0o777);
    let err = one_line_exit(&proxy_args(&s(&open), &socket, &conf), EX_CONFIG);
    assert!(
        err.contains(&format!("state directory {}", s(&open))) && err.contains("mode 0777"),
        "{err}"
    );
    assert!(!Path::new(&socket).exists(), "nothing was bound");

    if !is_root() {
        skip(
            "state_and_socket_dirs_another_user_could_write_are_refused (other owners)",
            "needs root to chown",
        );
        return;
    }
    // Owned by nobody, with a planted state file that would open an ingress to sshd and add
    // a peer: refused before the file is read.
    let foreign = scratch.path().join("foreign-state");
    mkdir_mode(&foreign, 0o700);
    let intruder = Keypair::generate();
    std::fs::write(
        foreign.join("state.json"),
        serde_json::json!({
            "rules": [format!("ingress tcp:{}:127.0.0.1:22", free_port())],
            "added_peers": [{"public_key": intruder.public, "allowed_ips": ["100.100.0.66/32"]}],
        })
        .to_string(),
    )
    .unwrap();
    for p in [foreign.clone(), foreign.join("state.json")] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let err = one_line_exit(&proxy_args(&s(&foreign), &socket, &conf), EX_CONFIG);
    assert!(
        err.contains(&format!("state directory {}", s(&foreign)))
            && err.contains("owned by uid 65534"),
        "{err}"
    );

    // A socket directory of nobody's, mode 0777; the state dir is fine (nexd makes it).
    let run = scratch.path().join("run");
    mkdir_mode(&run, 0o777);
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let fresh_state = s(&scratch.path().join("fresh-state"));
    let sock_in_run = s(&run.join("nexd.sock"));
    let err = one_line_exit(&proxy_args(&fresh_state, &sock_in_run, &conf), EX_CONFIG);
    assert!(
        err.contains(&format!("socket directory {}", s(&run))) && err.contains("uid 65534"),
        "{err}"
    );
    assert!(!run.join("nexd.sock").exists());

    // A state dir of ours inside a directory nobody owns: nexd starts, and warns naming
    // the directory above.
    let theirs = scratch.path().join("theirs");
    mkdir_mode(&theirs.join("state"), 0o700);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let mut n = nexd_e2e::nexd::Nexd::start(
        &scratch,
        "theirs",
        &proxy_args(&s(&theirs.join("state")), &socket, &conf)
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        &nexd_e2e::nexd::Launch {
            unprivileged: false,
            ..nexd_e2e::nexd::Launch::default_user()
        },
    );
    n.wait_for_log("nexd proxy running", Duration::from_secs(20));
    assert!(
        n.log()
            .contains(&format!("the directory above it, {}", s(&theirs))),
        "{}",
        n.log()
    );
    // The config names a fixed WireGuard port.
    drop(n);

    // /tmp-like: a root-owned sticky 1777 socket directory is fine (others cannot replace
    // our socket there); the same without the sticky bit is refused (above).
    let shared = scratch.path().join("shared");
    mkdir_mode(&shared, 0o1777);
    let mut n = nexd_e2e::nexd::Nexd::start(
        &scratch,
        "shared",
        &proxy_args(
            &s(&scratch.path().join("state-shared")),
            &s(&shared.join("nexd.sock")),
            &conf,
        )
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>(),
        &nexd_e2e::nexd::Launch {
            unprivileged: false,
            ..nexd_e2e::nexd::Launch::default_user()
        },
    );
    n.wait_for_log("nexd proxy running", Duration::from_secs(20));
}

#[test]
fn planted_symlinks_in_the_state_dir_are_never_followed() {
    let scratch = Scratch::new();
    let (conf, _, _) = write_config(&scratch, "n.conf");
    let state = scratch.path().join("state");
    mkdir_mode(&state, 0o700);
    // A private file of ours that a planted link points at.
    let precious = scratch.path().join("precious");
    std::fs::write(&precious, "do not overwrite").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mtime = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    let before = mtime(&precious);
    let links = [
        state.join(".state.json.tmp"),
        state.join(".state.json.0123456789abcdef.tmp"),
    ];
    for l in &links {
        std::os::unix::fs::symlink(&precious, l).unwrap();
    }
    let socket = scratch.path().join("nexd.sock");
    let args: Vec<String> = proxy_args(&s(&state), &s(&socket), &s(&conf))
        .into_iter()
        .map(String::from)
        .collect();
    let as_us = Launch {
        unprivileged: false,
        ..Launch::default_user()
    };
    let mut n = Nexd::start(&scratch, "links", &args, &as_us);
    n.wait_for_log("nexd proxy running", Duration::from_secs(10));
    let rule = format!("tcp:{}:100.100.0.2:80", free_port());
    let (code, _, err) = nexctl_as(None, &socket, &["nexd", "proxy", "add", "--egress", &rule]);
    assert_eq!(code, 0, "{err}");
    let saved = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(saved.contains(&rule), "{saved}");
    let meta = std::fs::symlink_metadata(state.join("state.json")).unwrap();
    assert!(meta.is_file() && meta.mode() & 0o777 == 0o600, "{meta:?}");
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "do not overwrite"
    );
    assert_eq!(mtime(&precious), before);
    for l in &links {
        assert!(std::fs::symlink_metadata(l).unwrap().is_symlink(), "{l:?}");
    }
    assert!(n.terminate(Duration::from_secs(15)).is_some());

    // state.json as a symlink (to a valid state file) is refused, naming it.
    let real = state.join("real.json");
    std::fs::rename(state.join("state.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, state.join("state.json")).unwrap();
    let err = one_line_exit(&proxy_args(&s(&state), &s(&socket), &s(&conf)), EX_CONFIG);
    assert!(
        err.contains(&s(&state.join("state.json"))) && err.contains("symbolic link"),
        "{err}"
    );
}

/// The cap on nexd's data segment (heap and anonymous mappings) in the /dev/zero run: the
/// old unbounded read failed with "out of memory" (exit 66) under it.
const DATA_LIMIT: &str = "--data=134217728";

/// Runs nexd under `prlimit DATA_LIMIT` to its exit: (exit code, stderr, seconds taken).
fn run_with_data_limit(args: &[&str]) -> (Option<i32>, String, f64) {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new("prlimit")
        .args([DATA_LIMIT, "--"])
        .arg(shared_nexd_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env("HOME", home.path())
        .env("NEXD_STATE_DIR", home.path().join("state"))
        .env("NEXD_UNIX_SOCKET", home.path().join("nexd.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let done = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().filter(|_| done),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

#[test]
fn oversized_config_and_state_files_are_refused_briefly() {
    // --config /dev/zero: refused after the cap, at once, within a 128 MiB data limit.
    if have("prlimit") {
        let (code, err, secs) = run_with_data_limit(&["proxy", "--config", "/dev/zero"]);
        assert_eq!(code, Some(EX_CONFIG), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("/dev/zero") && err.contains("larger than 1048576 bytes"),
            "{err}"
        );
        assert!(secs < 5.0, "took {secs:.1} s");
    } else {
        skip("--config /dev/zero under a data limit", "no prlimit");
    }
    let err = one_line_exit(&["proxy", "--config", "/dev/zero"], EX_CONFIG);
    assert!(err.contains("larger than 1048576 bytes"), "{err}");

    let scratch = Scratch::new();
    let k = Keypair::generate();
    // A 10 MB line (over the file cap) and a 900 KB one (under it): short errors.
    for (name, len, want) in [
        ("ten-mb.conf", 10_000_000, "larger than 1048576 bytes"),
        (
            "long-line.conf",
            900_000,
            "line 4: longer than 524288 bytes",
        ),
    ] {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.1/32\nAddress = {}\n",
            k.private,
            "1".repeat(len)
        );
        let conf = s(&scratch.write(name, &text));
        let err = one_line_exit(&["proxy", "--config", &conf], EX_CONFIG);
        assert!(err.contains(&conf) && err.contains(want), "{err}");
        assert!(err.len() < 300, "{} bytes: {err}", err.len());
    }

    // A state file over 16 MiB, and one under it with a 5 MB rule: refused, naming it.
    let (conf, _, _) = write_config(&scratch, "n.conf");
    let socket = s(&scratch.path().join("nexd.sock"));
    let state = scratch.path().join("state");
    mkdir_mode(&state, 0o700);
    let file = state.join("state.json");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    let err = one_line_exit(&proxy_args(&s(&state), &socket, &s(&conf)), EX_CONFIG);
    assert!(
        err.contains(&s(&file)) && err.contains("larger than 16777216 bytes"),
        "{err}"
    );
    let huge_rule = format!("egress tcp:1:{}", "9".repeat(5_000_000));
    std::fs::write(
        &file,
        serde_json::json!({ "rules": [huge_rule] }).to_string(),
    )
    .unwrap();
    let err = one_line_exit(&proxy_args(&s(&state), &socket, &s(&conf)), EX_CONFIG);
    assert!(
        err.contains(&s(&file)) && err.contains("longer than 2048 bytes"),
        "{err}"
    );
    assert!(
        err.len() < 300 + s(&file).len(),
        "{} bytes: {err}",
        err.len()
    );
}

#[test]
fn sigusr1_logs_a_status_summary_and_sigusr2_is_harmless() {
    let scratch = Scratch::new();
    let (conf, _, _) = write_config(&scratch, "n.conf");
    // Directories nexd makes itself (0700), in the home of the user it runs as.
    let home = scratch.path().join("sig-home");
    let (state, socket) = (home.join("new/state"), home.join("run/nexd.sock"));
    let args: Vec<String> = proxy_args(&s(&state), &s(&socket), &s(&conf))
        .into_iter()
        .map(String::from)
        .collect();
    let mut n = Nexd::start(&scratch, "sig", &args, &Launch::default_user());
    n.wait_for_log("nexd proxy running", Duration::from_secs(10));
    for d in [&state, &home.join("run")] {
        let mode = std::fs::metadata(d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "{d:?}");
    }
    let pid = n.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    };
    for round in 1..=2 {
        signal("USR2");
        signal("USR1");
        let dumped = wait_until(Duration::from_secs(10), || {
            n.log().matches("status counters").count() >= round || n.exited()
        });
        assert!(dumped && !n.exited(), "no status dump:\n{}", n.log());
        let (code, out, err) = nexctl_as(None, &socket, &["nexd", "status"]);
        assert_eq!(code, 0, "API after signals: {err}");
        assert!(out.contains("peers"), "{out}");
    }
    let log = n.log();
    let summary = log
        .lines()
        .find(|l| l.contains("SIGUSR1") && l.contains(" status "))
        .unwrap_or_else(|| panic!("no summary line:\n{log}"));
    for field in ["peers=1", "rules=0", "tcp_flows=0", "udp_flows=0"] {
        assert!(summary.contains(field), "{field}: {summary}");
    }
    assert!(log.contains("SIGUSR2 received"), "{log}");
    assert!(socket.exists());
    let status = n.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn a_duplicate_peer_or_the_nodes_own_key_is_refused_with_file_and_line() {
    let scratch = Scratch::new();
    let (k, p) = (Keypair::generate(), Keypair::generate());
    let head = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 100.100.0.1/32\n",
        k.private
    );
    let dup = scratch.write(
        "dup.conf",
        &format!(
            "{head}\n[Peer]\nPublicKey = {}\nAllowedIPs = 100.100.0.2/32\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 100.100.0.3/32\n",
            p.public, p.public
        ),
    );
    let err = one_line_exit(&["proxy", "--config", &s(&dup)], EX_CONFIG);
    assert!(
        err.contains(&s(&dup))
            && err.contains("line 9")
            && err.contains("already listed in the [Peer] section at line 5"),
        "{err}"
    );
    let own = scratch.write(
        "own.conf",
        &format!(
            "{head}\n[Peer]\nPublicKey = {}\nAllowedIPs = 100.100.0.2/32\n",
            k.public
        ),
    );
    let err = one_line_exit(&["proxy", "--config", &s(&own)], EX_CONFIG);
    assert!(
        err.contains(&s(&own)) && err.contains("line 5") && err.contains("own public key"),
        "{err}"
    );

    // Through the API: InvalidArgument (exit 65), nothing added.
    let (conf, node, _) = write_config(&scratch, "n.conf");
    let home = scratch.path().join("api-home");
    let socket = home.join("nexd.sock");
    let args: Vec<String> = proxy_args(&s(&home.join("state")), &s(&socket), &s(&conf))
        .into_iter()
        .map(String::from)
        .collect();
    let mut n = Nexd::start(&scratch, "api", &args, &Launch::default_user());
    n.wait_for_log("nexd proxy running", Duration::from_secs(10));
    let (code, _, err) = nexctl_as(
        None,
        &socket,
        &[
            "nexd",
            "peers",
            "add",
            "--public-key",
            &node.public,
            "--allowed-ips",
            "100.100.0.9/32",
        ],
    );
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("own public key"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, out, err) = nexctl_as(None, &socket, &["nexd", "peers", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&node.public), "{out}");
}
