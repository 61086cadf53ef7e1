//! Two nexd nodes peered over loopback, each with its own state dir and API socket:
//! A = 100.100.0.1 / fd00::1, B = 100.100.0.2 / fd00::2.

use crate::free_port;
use crate::nexd::{config, Keypair, Launch, Nexd, PeerSpec, Scratch};
use crate::wan::{Ends, Path, Relay};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One node's files and (when running) process.
pub struct Node {
    /// Log/test name.
    pub name: String,
    /// Config file.
    pub conf: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// API socket.
    pub socket: PathBuf,
    /// Keys.
    pub keys: Keypair,
    /// WireGuard UDP port.
    pub wg_port: u16,
    /// The running process.
    pub nexd: Option<Nexd>,
}

/// Two nodes.
pub struct Pair {
    /// Egress side.
    pub a: Node,
    /// Ingress side.
    pub b: Node,
    /// Where everything lives.
    pub scratch: Scratch,
    /// The WAN between the two, if any ([`Pair::new_via`]).
    pub relay: Option<Relay>,
}

fn node_dir(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path().join(name);
    std::fs::create_dir(&dir).expect("node dir");
    if crate::is_root() {
        // nexd runs as nobody and must create its state dir and socket here.
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    }
    dir
}

impl Pair {
    /// Writes both configs; `b_knows_a` = whether B's config lists A as a peer.
    pub fn new(b_knows_a: bool) -> Pair {
        Self::new_with(b_knows_a, None)
    }

    /// Both nodes knowing each other, with a WAN relay on loopback between their WireGuard
    /// endpoints, impaired as `path`.
    pub fn new_via(path: &Path) -> Pair {
        Self::new_with(true, Some(path))
    }

    fn new_with(b_knows_a: bool, path: Option<&Path>) -> Pair {
        let scratch = Scratch::new();
        let (ka, kb) = (Keypair::generate(), Keypair::generate());
        let (pa, pb) = (free_port(), free_port());
        let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let relay = path.map(|p| {
            let ends = Ends {
                listen_a: local(0),
                listen_b: local(0),
                peer_b: local(pb),
                peer_a: Some(local(pa)),
            };
            Relay::start(None, &ends, p).expect("wan relay")
        });
        let (a_to_b, b_to_a) = match &relay {
            Some(r) => (r.a, r.b),
            None => (local(pb), local(pa)),
        };
        let a_peer = [PeerSpec {
            public: &kb.public,
            allowed_ips: "100.100.0.2/32, fd00::2/128",
            endpoint: Some(a_to_b.to_string()),
        }];
        let b_peer = [PeerSpec {
            public: &ka.public,
            allowed_ips: "100.100.0.1/32, fd00::1/128",
            endpoint: Some(b_to_a.to_string()),
        }];
        let ca = scratch.write(
            "a.conf",
            &config(&ka.private, "100.100.0.1/32, fd00::1/128", pa, &a_peer),
        );
        let cb = scratch.write(
            "b.conf",
            &config(
                &kb.private,
                "100.100.0.2/32, fd00::2/128",
                pb,
                if b_knows_a { &b_peer } else { &[] },
            ),
        );
        let mk = |name: &str, conf: PathBuf, keys: Keypair, wg_port: u16| {
            let dir = node_dir(&scratch, name);
            Node {
                name: name.to_string(),
                conf,
                state_dir: dir.join("state"),
                socket: dir.join("nexd.sock"),
                keys,
                wg_port,
                nexd: None,
            }
        };
        let a = mk("a", ca, ka, pa);
        let b = mk("b", cb, kb, pb);
        Pair {
            a,
            b,
            scratch,
            relay,
        }
    }
}

impl Pair {
    /// Starts B with `--ingress tcp:7000:127.0.0.1:<target>` and A with an egress rule from a
    /// free host port to B's port 7000, each with its `extra` flags. Returns A's host port.
    pub fn start_tcp_path(&mut self, target: u16, b_extra: &[&str], a_extra: &[&str]) -> u16 {
        let mut b: Vec<String> = b_extra.iter().map(|s| s.to_string()).collect();
        b.extend(["--ingress".into(), format!("tcp:7000:127.0.0.1:{target}")]);
        self.b.start(&self.scratch, &b);
        let port = free_port();
        let mut a: Vec<String> = a_extra.iter().map(|s| s.to_string()).collect();
        a.extend(["--egress".into(), format!("tcp:{port}:100.100.0.2:7000")]);
        self.a.start(&self.scratch, &a);
        port
    }
}

impl Node {
    /// Starts nexd with `extra` proxy arguments and waits until it runs.
    pub fn start(&mut self, scratch: &Scratch, extra: &[String]) {
        self.start_with(scratch, extra, &Launch::default_user());
    }

    /// [`Node::start`], launched as `launch` says.
    pub fn start_with(&mut self, scratch: &Scratch, extra: &[String], launch: &Launch) {
        let mut args = vec![
            "--state-dir".to_string(),
            self.state_dir.display().to_string(),
            "--unix-socket".into(),
            self.socket.display().to_string(),
            "proxy".into(),
            "--config".into(),
            self.conf.display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut n = Nexd::start(scratch, &self.name, &args, launch);
        n.wait_for_log("nexd proxy running", Duration::from_secs(10));
        self.nexd = Some(n);
    }

    /// The running process's log so far (empty if not started).
    pub fn log(&self) -> String {
        self.nexd.as_ref().map(Nexd::log).unwrap_or_default()
    }

    /// The running process.
    pub fn proc(&mut self) -> &mut Nexd {
        self.nexd.as_mut().expect("node not started")
    }

    /// Runs `nexctl --unix-socket <socket> <args>`: (exit code, stdout, stderr).
    pub fn nexctl(&self, args: &[&str]) -> (i32, String, String) {
        nexctl_as(None, &self.socket, args)
    }
}

/// Runs nexctl, optionally as another user (via setpriv); see [`nexctl_command`].
pub fn nexctl_as(
    user: Option<&str>,
    socket: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = nexctl_command(user, socket);
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nexctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `nexctl --unix-socket SOCKET`, as `user` (via setpriv) if given; else as the socket's
/// owner when that is another user and we are root (nexd runs as nobody in the tests, and
/// nexctl trusts only root's or its own user's sockets), else as ourselves.
pub fn nexctl_command(user: Option<&str>, socket: &std::path::Path) -> Command {
    use std::os::unix::fs::MetadataExt as _;
    let bin = crate::nexd::shared_bin("nexctl");
    let owner = std::fs::metadata(socket)
        .ok()
        .map(|m| m.uid())
        .filter(|&uid| uid != 0 && crate::is_root())
        .map(|uid| uid.to_string());
    let mut cmd = match user.or(owner.as_deref()) {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
                "--",
            ]);
            c.arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.arg("--unix-socket")
        .arg(socket)
        .env_remove("NEXD_UNIX_SOCKET");
    cmd
}
