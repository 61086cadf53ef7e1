//! Running nexd day to day: keys (`genkey`, `pubkey`, `PrivateKeyFile`), the config from
//! stdin, permission warnings, JSON logs, completions, man pages, typo suggestions, `-o`,
//! nexctl's exit code on a socket it may not use, and systemd's notify protocol.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use nexd_e2e::nexd::{config, workspace_bin, PeerSpec};
use nexd_e2e::{free_port, is_root, wait_until};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// RFC 7748's Alice, as wg writes keys (checked with `wg pubkey`).
const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

/// Runs `bin args` with `stdin`, private state/socket paths, and waits for it.
fn run(bin: &str, args: &[&str], stdin: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_bin(bin))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NEXD_LOG_FORMAT")
        .env("HOME", home.path())
        .env("NEXD_STATE_DIR", home.path().join("state"))
        .env("NEXD_UNIX_SOCKET", home.path().join("nexd.sock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a usage-style failure: `code`, exactly one line on stderr.
fn one_line_failure(out: &Output, code: i32) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err:?}");
    err
}

#[test]
fn genkey_prints_a_fresh_base64_private_key() {
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let out = run("nexd", &["genkey"], "");
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        })
        .collect();
    for k in &keys {
        assert_eq!(k.lines().count(), 1, "{k:?}");
        let k = k.trim_end();
        assert_eq!(k.len(), 44, "{k:?}");
        assert_eq!(STANDARD.decode(k).unwrap().len(), 32);
    }
    assert_ne!(keys[0], keys[1], "two calls gave the same key");
}

#[test]
fn pubkey_derives_the_public_key_as_wg_does() {
    let out = run("nexd", &["pubkey"], &format!("{PRIVATE}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{PUBLIC}\n"));

    // genkey | pubkey agrees with x25519 as the tests compute it.
    let private = text(&run("nexd", &["genkey"], "").stdout);
    let public = text(&run("nexd", &["pubkey"], &private).stdout);
    let bytes: [u8; 32] = STANDARD.decode(private.trim()).unwrap().try_into().unwrap();
    let want = STANDARD.encode(PublicKey::from(&StaticSecret::from(bytes)).as_bytes());
    assert_eq!(public.trim(), want);
}

#[test]
fn pubkey_rejects_what_is_not_a_key() {
    for bad in ["", "not a key\n", "AAAA\n"] {
        let out = run("nexd", &["pubkey"], bad);
        one_line_failure(&out, 65);
        assert!(
            out.stdout.is_empty(),
            "{bad:?} printed {:?}",
            text(&out.stdout)
        );
    }
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run("nexd", &["completions", shell], "");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("proxy"), "nexd {shell}");
        let out = run("nexctl", &["completions", shell], "");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("status"), "nexctl {shell}");
    }
    one_line_failure(&run("nexd", &["completions", "tcsh"], ""), 64);
}

#[test]
fn man_pages_for_the_commands_and_their_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("man1");
    let ds = d.display().to_string();
    for bin in ["nexd", "nexctl"] {
        let out = run(bin, &["man", &ds], "");
        assert!(out.status.success(), "{bin}: {}", text(&out.stderr));
    }
    for page in [
        "nexd.1",
        "nexd-proxy.1",
        "nexctl.1",
        "nexctl-nexd-proxy-add.1",
    ] {
        let t = std::fs::read_to_string(d.join(page)).unwrap_or_default();
        assert!(t.contains(".TH"), "{page} is not a man page: {t:?}");
    }
    // Global options are described once, in the top-level page.
    let top = std::fs::read_to_string(d.join("nexd.1")).unwrap();
    let sub = std::fs::read_to_string(d.join("nexd-proxy.1")).unwrap();
    assert!(top.contains("Log line format"), "{top}");
    assert!(!sub.contains("Log line format"), "{sub}");
}

#[test]
fn typos_get_a_suggestion() {
    let err = one_line_failure(&run("nexctl", &["nexd", "proxi"], ""), 64);
    assert!(err.contains("did you mean 'proxy'"), "{err}");
    let err = one_line_failure(&run("nexd", &["proxi"], ""), 64);
    assert!(err.contains("did you mean 'proxy'"), "{err}");
    let err = one_line_failure(&run("nexctl", &["--outpt", "json", "version"], ""), 64);
    assert!(err.contains("did you mean '--output'"), "{err}");
}

#[test]
fn global_options_are_listed_once_and_accepted_anywhere() {
    let top = text(&run("nexctl", &["--help"], "").stdout);
    assert!(top.contains("--unix-socket"), "{top}");
    let sub = text(&run("nexctl", &["nexd", "status", "--help"], "").stdout);
    assert!(!sub.contains("--unix-socket <PATH>"), "{sub}");
    assert!(sub.contains("nexctl --help"), "{sub}");
    let out = run("nexctl", &["version", "-o", "json"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn short_o_selects_json_output() {
    let out = run("nexctl", &["-o", "json", "version"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nexctl"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_socket_nexctl_may_not_use_is_exit_77() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nexd.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = if is_root() {
        // Root ignores file modes: ask as nobody, who cannot enter the 0700 directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let bin = nexd_e2e::nexd::shared_bin("nexctl");
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(bin)
            .args([
                "--unix-socket",
                &sock.display().to_string(),
                "nexd",
                "status",
            ])
            .output()
            .unwrap()
    } else {
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
        run(
            "nexctl",
            &[
                "--unix-socket",
                &sock.display().to_string(),
                "nexd",
                "status",
            ],
            "",
        )
    };
    let err = one_line_failure(&out, 77);
    assert!(err.contains("permission denied on"), "{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");

    let missing = dir.path().join("missing.sock").display().to_string();
    one_line_failure(
        &run("nexctl", &["--unix-socket", &missing, "nexd", "status"], ""),
        69,
    );
}

/// A nexd started as this user with `args`, its stderr in `log`; TERM then KILL on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("nexd.log");
        let mut child = Command::new(workspace_bin("nexd"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("NEXD_LOG_FORMAT")
            .env("HOME", dir.path())
            .env("NEXD_STATE_DIR", dir.path().join("state"))
            .env("NEXD_UNIX_SOCKET", dir.path().join("nexd.sock"))
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input.write_all(text.as_bytes()).unwrap();
        }
        Daemon {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for "nexd proxy running"; panics with the log if nexd exits or never gets there.
    fn wait_running(&mut self) -> String {
        let ok = wait_until(Duration::from_secs(20), || {
            self.log().contains("nexd proxy running")
                || matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let log = self.log();
        assert!(ok && log.contains("nexd proxy running"), "nexd log:\n{log}");
        log
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let child = &mut self.child;
        if !wait_until(Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// A valid config for `private_line` (`PrivateKey = ...` or `PrivateKeyFile = ...`).
fn config_text(private_line: &str) -> String {
    let peer = nexd_e2e::nexd::Keypair::generate();
    config(
        "PLACEHOLDER",
        "100.100.0.1/32",
        free_port(),
        &[PeerSpec {
            public: &peer.public,
            allowed_ips: "100.100.0.2/32",
            endpoint: Some("127.0.0.1:9".into()),
        }],
    )
    .replace("PrivateKey = PLACEHOLDER", private_line)
}

fn write_mode(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn private_key_file_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    write_mode(
        &dir.path().join("keys/nexd.key"),
        &format!("\n  {PRIVATE}\n"),
        0o600,
    );
    let conf = dir.path().join("nexd.conf");
    write_mode(&conf, &config_text("PrivateKeyFile = keys/nexd.key"), 0o600);
    // Started from another directory: the key path is relative to the config's.
    let mut d = Daemon::start(
        &["proxy", "--config", &conf.display().to_string()],
        None,
        &[],
    );
    let log = d.wait_running();
    assert!(
        log.contains(PUBLIC),
        "nexd did not use the key file:\n{log}"
    );
    assert!(
        !log.contains("accessible"),
        "0600 files need no warning:\n{log}"
    );

    // A key file that is missing is named with the config line.
    write_mode(&conf, &config_text("PrivateKeyFile = nope.key"), 0o600);
    let out = run(
        "nexd",
        &["proxy", "--config", &conf.display().to_string()],
        "",
    );
    let err = one_line_failure(&out, 78);
    assert!(err.contains("line 2: PrivateKeyFile \"nope.key\""), "{err}");
    assert!(
        err.contains(&dir.path().join("nope.key").display().to_string()),
        "{err}"
    );
}

#[test]
fn config_from_stdin() {
    let text = config_text(&format!("PrivateKey = {PRIVATE}"));
    let mut d = Daemon::start(&["proxy", "--config", "-"], Some(&text), &[]);
    let log = d.wait_running();
    assert!(log.contains(PUBLIC), "{log}");
    let out = run(
        "nexd",
        &["proxy", "--config", "-"],
        "[Interface]\nPrivateKey = x\n",
    );
    let err = one_line_failure(&out, 78);
    assert!(err.contains("<stdin>") && err.contains("line 2"), "{err}");
}

#[test]
fn world_readable_config_and_key_files_are_warned_about() {
    let warning = |p: &Path| format!("Warning: `{}' is world accessible", p.display());
    let dir = tempfile::tempdir().unwrap();

    // A config holding its private key.
    let conf = dir.path().join("inline.conf");
    write_mode(
        &conf,
        &config_text(&format!("PrivateKey = {PRIVATE}")),
        0o644,
    );
    let mut d = Daemon::start(
        &["proxy", "--config", &conf.display().to_string()],
        None,
        &[],
    );
    d.wait_running();
    let ok = wait_until(Duration::from_secs(5), || d.log().contains(&warning(&conf)));
    assert!(ok, "no {:?} in:\n{}", warning(&conf), d.log());
    drop(d);

    // A key file readable by all, named by a config that holds no secret itself.
    let key = dir.path().join("nexd.key");
    write_mode(&key, PRIVATE, 0o644);
    let conf = dir.path().join("by-file.conf");
    write_mode(
        &conf,
        &config_text(&format!("PrivateKeyFile = {}", key.display())),
        0o644,
    );
    let mut d = Daemon::start(
        &["proxy", "--config", &conf.display().to_string()],
        None,
        &[],
    );
    d.wait_running();
    let ok = wait_until(Duration::from_secs(5), || d.log().contains(&warning(&key)));
    assert!(ok, "no {:?} in:\n{}", warning(&key), d.log());
    // The config holds no key, yet others may read it: warned too, as wg-quick does.
    let ok = wait_until(Duration::from_secs(5), || d.log().contains(&warning(&conf)));
    assert!(ok, "no {:?} in:\n{}", warning(&conf), d.log());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nexd.conf");
    write_mode(
        &conf,
        &config_text(&format!("PrivateKey = {PRIVATE}")),
        0o600,
    );
    let conf = conf.display().to_string();
    for (args, env) in [
        (
            vec!["--log-format", "json", "proxy", "--config", &conf],
            vec![],
        ),
        (
            vec!["proxy", "--config", &conf],
            vec![("NEXD_LOG_FORMAT", "json")],
        ),
    ] {
        let mut d = Daemon::start(&args, None, &env);
        let log = d.wait_running();
        let line = log
            .lines()
            .find(|l| l.contains("nexd proxy running"))
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["fields"]["message"], "nexd proxy running", "{v}");
        assert_eq!(v["fields"]["public_key"], PUBLIC, "{v}");
    }
    let err = one_line_failure(&run("nexd", &["--log-format", "xml", "version"], ""), 64);
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conf = dir.path().join("nexd.conf");
    write_mode(
        &conf,
        &config_text(&format!("PrivateKey = {PRIVATE}")),
        0o600,
    );
    let mut d = Daemon::start(
        &["proxy", "--config", &conf.display().to_string()],
        None,
        &[
            ("NOTIFY_SOCKET", &notify.display().to_string()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let recv = || {
        let mut buf = [0u8; 256];
        let n = rx
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); log:\n{}", d.log()));
        text(&buf[..n])
    };
    assert!(recv().starts_with("READY=1"), "READY=1 comes first");
    // Pings every 100 ms.
    assert_eq!(recv(), "WATCHDOG=1");
    assert_eq!(recv(), "WATCHDOG=1");
    d.terminate();
    let mut rest = Vec::new();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = rx.recv(&mut buf) {
        rest.push(text(&buf[..n]));
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}
