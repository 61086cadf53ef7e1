//! Running the real nexd binary: keys, config files, processes with captured logs.

use crate::wait_until;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand::RngCore;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A WireGuard key pair, base64-encoded.
#[derive(Clone, Debug)]
pub struct Keypair {
    /// Private key.
    pub private: String,
    /// Public key.
    pub public: String,
}

impl Keypair {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Keypair {
            private: STANDARD.encode(secret.to_bytes()),
            public: STANDARD.encode(public.as_bytes()),
        }
    }
}

/// Path of a workspace binary built next to the test binary (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// A scratch directory that other users can read (nexd may run as nobody).
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new world-readable temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nexd-e2e-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Scratch { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a world-readable file and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p
    }

    /// Copies a binary in, so a user without access to the build tree can run it.
    pub fn install_bin(&self, src: &Path) -> PathBuf {
        let name = src.file_name().expect("file name");
        let p = self.dir.path().join(name);
        std::fs::copy(src, &p).expect("copy binary");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of nexd that any user can execute, made once per test process: copying per test
/// races with other threads' fork/exec and fails with ETXTBSY.
pub fn shared_nexd_bin() -> PathBuf {
    shared_bin("nexd")
}

/// The directory of the shared binary copies, removed when the test process exits.
static SHARED_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

extern "C" fn remove_shared_dir() {
    if let Some(p) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// A world-executable copy of a workspace binary (`nexd` or `nexctl`), made once.
#[allow(unsafe_code)]
pub fn shared_bin(name: &str) -> PathBuf {
    static BINS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    let (nexd, nexctl) = BINS.get_or_init(|| {
        let s = Scratch::new();
        let a = s.install_bin(&workspace_bin("nexd"));
        let b = s.install_bin(&workspace_bin("nexctl"));
        // A static is never dropped, so the TempDir would leak ~175 MB of binaries per test
        // process; remove the directory at exit instead.
        let _ = SHARED_DIR.set(s.dir.keep());
        // SAFETY: registers a plain function with no captured state.
        unsafe {
            libc::atexit(remove_shared_dir);
        }
        (a, b)
    });
    match name {
        "nexd" => nexd.clone(),
        "nexctl" => nexctl.clone(),
        other => panic!("no shared copy of {other}"),
    }
}

/// One `[Peer]` entry for a config.
pub struct PeerSpec<'a> {
    /// Public key.
    pub public: &'a str,
    /// AllowedIPs.
    pub allowed_ips: &'a str,
    /// Endpoint, if any.
    pub endpoint: Option<String>,
}

/// Renders a wg-quick config.
pub fn config(private: &str, address: &str, listen_port: u16, peers: &[PeerSpec]) -> String {
    let mut s = format!(
        "[Interface]\nPrivateKey = {private}\nAddress = {address}\nListenPort = {listen_port}\n"
    );
    for p in peers {
        s += &format!(
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            p.public, p.allowed_ips
        );
        if let Some(ep) = &p.endpoint {
            s += &format!("Endpoint = {ep}\n");
        }
    }
    s
}

/// How to start nexd.
pub struct Launch {
    /// Run as `nobody` through setpriv (only possible as root).
    pub unprivileged: bool,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// Give nexd a HOME it cannot write and no state/socket paths, as a careless
    /// `setpriv --reuid=nobody` would.
    pub unwritable_home: bool,
    /// Start with this descriptor limit (soft and hard, so nexd cannot raise it).
    pub nofile: Option<u64>,
}

impl Launch {
    /// As nobody when we are root (the product's promise), else as ourselves.
    pub fn default_user() -> Self {
        Launch {
            unprivileged: crate::is_root(),
            netns: None,
            unwritable_home: false,
            nofile: None,
        }
    }
}

/// A running nexd; killed (TERM, then KILL) when dropped.
pub struct Nexd {
    child: Option<Child>,
    log: PathBuf,
}

impl Nexd {
    /// Starts `nexd <args>` from a private copy of the binary in `scratch`.
    pub fn start(scratch: &Scratch, name: &str, args: &[String], launch: &Launch) -> Nexd {
        let bin = shared_nexd_bin();
        let log = scratch.path().join(format!("{name}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Vec::<String>::new();
        if let Some(ns) = &launch.netns {
            cmd.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(n) = launch.nofile {
            // prlimit sets its own limits and execs the rest: the pid stays nexd's.
            cmd.extend([
                "prlimit".to_string(),
                format!("--nofile={n}:{n}"),
                "--".into(),
            ]);
        }
        if launch.unprivileged {
            cmd.extend(
                [
                    "setpriv",
                    "--reuid=nobody",
                    "--regid=nogroup",
                    "--clear-groups",
                    "--",
                ]
                .map(String::from),
            );
        }
        cmd.push(bin.display().to_string());
        cmd.extend(args.iter().cloned());
        // A private home for this instance, writable by the user nexd runs as; flags in
        // `args` still win over these variables.
        let home = scratch.path().join(format!("{name}-home"));
        std::fs::create_dir_all(&home).expect("home dir");
        if launch.unprivileged {
            std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown home");
        }
        let mut command = Command::new(&cmd[0]);
        if launch.unwritable_home {
            command
                .env("HOME", "/nonexistent-nexd-home")
                .env_remove("XDG_STATE_HOME")
                .env_remove("XDG_RUNTIME_DIR");
        } else {
            command
                .env("HOME", &home)
                .env("NEXD_STATE_DIR", home.join("state"))
                .env("NEXD_UNIX_SOCKET", home.join("nexd.sock"));
        }
        let child = command
            .args(&cmd[1..])
            .env(
                "NEXD_LOG_LEVEL",
                std::env::var("E2E_NEXD_LOG").unwrap_or("debug".into()),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn nexd");
        Nexd {
            child: Some(child),
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log otherwise.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.log().contains(needle) || self.exited());
        assert!(
            ok && self.log().contains(needle),
            "nexd log never showed {needle:?}:\n{}",
            self.log()
        );
    }

    /// Whether the process has ended.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Sends SIGTERM and waits up to `timeout` for exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// PID of the launched process (setpriv/ip exec replace themselves, so this is nexd).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Nexd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let pid = c.id().to_string();
                let term = || {
                    let _ = Command::new("kill").args(["-TERM", &pid]).status();
                };
                term();
                // Open connections would hold the drain (5 s by default): a second signal
                // resets them at once.
                if !wait_until(Duration::from_millis(500), || {
                    matches!(c.try_wait(), Ok(Some(_)))
                }) {
                    term();
                }
                if !wait_until(Duration::from_secs(3), || {
                    matches!(c.try_wait(), Ok(Some(_)))
                }) {
                    let _ = c.kill();
                }
            }
            let _ = c.wait();
        }
    }
}

/// Runs nexd to completion (for bad-input tests): (exit code, stderr).
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    run_to_exit_as(false, args, timeout)
}

/// [`run_to_exit`], as `nobody` when `as_nobody` and we are root (the user
/// [`Launch::default_user`] runs nexd as, which owns the directories it created).
pub fn run_to_exit_as(as_nobody: bool, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    // Never the system paths (/var/lib/nexd, /run/nexd.sock): a private temp dir.
    let home = tempfile::tempdir().expect("tempdir");
    let as_nobody = as_nobody && crate::is_root();
    let mut command = if as_nobody {
        std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).expect("chown home");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(shared_nexd_bin());
        c
    } else {
        Command::new(workspace_bin("nexd"))
    };
    let mut child = command
        .args(args)
        .env_remove("RUST_LOG")
        .env("HOME", home.path())
        .env("NEXD_STATE_DIR", home.path().join("state"))
        .env("NEXD_UNIX_SOCKET", home.path().join("nexd.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexd");
    let done = wait_until(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait");
    (
        if done { out.status.code() } else { None },
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
