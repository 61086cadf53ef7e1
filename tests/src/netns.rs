//! Network namespaces joined by a veth pair, and a wireguard-go peer inside one of them.
//! Everything is deleted on drop; only processes started here are killed.

use crate::{have, is_root, wait_until};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    // pid keeps parallel test binaries apart, the counter keeps tests in one binary apart.
    (std::process::id() % 10_000) * 100 + COUNTER.fetch_add(1, Ordering::SeqCst) % 100
}

/// Runs a command and fails with its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why namespace tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some(
            "needs root for network namespaces (run the suite as root, as .ci/run does)".into(),
        );
    }
    for p in ["ip", "wireguard-go", "wg", "setpriv"] {
        if !have(p) {
            return Some(format!("{p} is not installed (.ci/run installs it)"));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// A network namespace with loopback up.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates `nexd-e2e-<tag>-<unique>`.
    pub fn create(tag: &str) -> Result<Netns, String> {
        let name = format!("nexd-e2e-{tag}-{}", unique());
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Runs a command inside the namespace to completion.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Gives every process started in the namespace from now on (through `ip netns exec`,
    /// which bind-mounts `/etc/netns/<ns>/<file>` over `/etc/<file>`) its own `/etc/<file>`,
    /// e.g. a `hosts` file; the rest of the machine keeps its own. Removed with the
    /// namespace.
    pub fn set_etc_file(&self, file: &str, contents: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = dir.join(file);
        std::fs::write(&p, contents).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    fn etc_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
        // Only this namespace's own directory (its name is unique to this test process).
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Two namespaces joined by veth: `a` has 10.199.<n>.1/24, `b` has 10.199.<n>.2/24.
pub struct NetPair {
    /// Side A (nexd runs here).
    pub a: Netns,
    /// Side B (the peer runs here).
    pub b: Netns,
    /// A's veth address.
    pub a_addr: String,
    /// B's veth address.
    pub b_addr: String,
    /// A's veth interface (inside `a`).
    pub a_if: String,
    /// B's veth interface (inside `b`).
    pub b_if: String,
}

impl NetPair {
    /// Creates both namespaces and the link.
    pub fn create() -> Result<NetPair, String> {
        let a = Netns::create("a")?;
        let b = Netns::create("b")?;
        let n = unique();
        let (va, vb) = (format!("nxa{n}"), format!("nxb{n}"));
        let subnet = n % 250 + 1;
        sh(&[
            "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb,
            "netns", &b.name,
        ])?;
        let a_addr = format!("10.199.{subnet}.1");
        let b_addr = format!("10.199.{subnet}.2");
        sh(&[
            "ip",
            "-n",
            &a.name,
            "addr",
            "add",
            &format!("{a_addr}/24"),
            "dev",
            &va,
        ])?;
        sh(&[
            "ip",
            "-n",
            &b.name,
            "addr",
            "add",
            &format!("{b_addr}/24"),
            "dev",
            &vb,
        ])?;
        sh(&["ip", "-n", &a.name, "link", "set", &va, "up"])?;
        sh(&["ip", "-n", &b.name, "link", "set", &vb, "up"])?;
        Ok(NetPair {
            a,
            b,
            a_addr,
            b_addr,
            a_if: va,
            b_if: vb,
        })
    }
}

/// A wireguard-go interface inside a namespace.
pub struct WgGoPeer {
    child: Option<Child>,
    /// Interface name (unique: UAPI sockets are shared across namespaces).
    pub iface: String,
    /// Listen port.
    pub port: u16,
    ns: String,
}

impl WgGoPeer {
    /// Starts wireguard-go in `ns` with `address` (a CIDR, or several comma-separated) and
    /// one peer.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        ns: &Netns,
        private_key: &str,
        address: &str,
        port: u16,
        peer_public: &str,
        peer_allowed: &str,
        peer_endpoint: &str,
    ) -> Result<WgGoPeer, String> {
        let iface = format!("nxw{}", unique());
        let child = ns
            .command("wireguard-go")
            .args(["-f", &iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("wireguard-go: {e}"))?;
        let peer = WgGoPeer {
            child: Some(child),
            iface: iface.clone(),
            port,
            ns: ns.name.clone(),
        };
        let sock = format!("/var/run/wireguard/{iface}.sock");
        if !wait_until(Duration::from_secs(10), || {
            std::path::Path::new(&sock).exists()
        }) {
            return Err("wireguard-go did not create its UAPI socket".into());
        }
        let keyfile = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::fs::write(keyfile.path(), private_key).map_err(|e| e.to_string())?;
        let keypath = keyfile.path().display().to_string();
        ns.run(&[
            "wg",
            "set",
            &iface,
            "private-key",
            &keypath,
            "listen-port",
            &port.to_string(),
            "peer",
            peer_public,
            "allowed-ips",
            peer_allowed,
            "endpoint",
            peer_endpoint,
        ])?;
        for a in address.split(',').map(str::trim) {
            // No duplicate address detection: an IPv6 address is usable at once.
            let mut cmd = vec!["ip", "addr", "add", a, "dev", &iface];
            if a.contains(':') {
                cmd.push("nodad");
            }
            ns.run(&cmd)?;
        }
        ns.run(&["ip", "link", "set", &iface, "up"])?;
        for net in peer_allowed.split(',') {
            let _ = ns.run(&["ip", "route", "add", net.trim(), "dev", &iface]);
        }
        Ok(peer)
    }

    /// `wg show <iface> latest-handshakes` reports a handshake.
    pub fn has_handshake(&self) -> bool {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "wg",
            "show",
            &self.iface,
            "latest-handshakes",
        ])
        .map(|o| o.split_whitespace().nth(1).is_some_and(|t| t != "0"))
        .unwrap_or(false)
    }
}

impl Drop for WgGoPeer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

/// A background process inside a namespace (a server), killed on drop.
pub struct Background {
    child: Child,
}

impl Background {
    /// Spawns and waits for "ready" on its stdout (testkit servers print it).
    pub fn spawn_ready(mut cmd: Command) -> Result<Background, String> {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server did not start: {line:?}"));
        }
        Ok(Background { child })
    }

    /// Spawns without waiting.
    pub fn spawn(mut cmd: Command) -> Result<Background, String> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Background { child })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
