//! nexd (as nobody, in namespace A, with its own state dir and API socket) peered with a
//! wireguard-go peer in namespace B that a test can stop and start again with the same key,
//! port and addresses, as a rebooted or restarted peer would come back.

use crate::netns::{self, NetPair, WgGoPeer};
use crate::nexd::{config, workspace_bin, Keypair, Launch, Nexd, PeerSpec, Scratch};
use crate::wan::{Ends, Path, Relay};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// nexd's tunnel address.
pub const NEXD_ADDR: &str = "100.100.0.1";
/// The wireguard-go peer's tunnel address.
pub const PEER_ADDR: &str = "100.100.0.2";
/// nexd's IPv6 tunnel address, in a world started with [`Setup::ipv6`].
pub const NEXD_ADDR6: &str = "fd00::1";
/// The peer's IPv6 tunnel address, in a world started with [`Setup::ipv6`].
pub const PEER_ADDR6: &str = "fd00::2";
/// nexd's WireGuard port (inside namespace A).
pub const NEXD_WG_PORT: u16 = 51820;
/// wireguard-go's WireGuard port (inside namespace B).
pub const PEER_WG_PORT: u16 = 51821;
/// The WAN relay's side A (nexd's side) port, on B's veth address.
pub const RELAY_A_PORT: u16 = 51830;
/// The WAN relay's side B (wireguard-go's side) port, on B's loopback.
pub const RELAY_B_PORT: u16 = 51831;

/// Optional parts of a world ([`WgWorld::start_with`]).
#[derive(Default)]
pub struct Setup<'a> {
    /// Files of namespace A's own `/etc`, in place before nexd starts (`(name, contents)`,
    /// e.g. `("hosts", "100.100.0.2 peer.test\n")`): nexd and every command run in
    /// namespace A see them instead of the machine's.
    pub etc: &'a [(&'a str, &'a str)],
    /// Both ends also get an IPv6 tunnel address ([`NEXD_ADDR6`], [`PEER_ADDR6`]) and nexd
    /// routes the peer's to it; `peer_allowed` should then hold `fd00::1/128` too.
    pub ipv6: bool,
}

/// nexd in `net.a`, wireguard-go in `net.b`.
pub struct WgWorld {
    /// The running nexd.
    pub nexd: Nexd,
    /// The running wireguard-go peer (None while stopped).
    pub peer: Option<WgGoPeer>,
    /// The WAN between the two, when there is one (declared before `net`: fields drop in
    /// order, and the relay must stop before its namespace goes).
    pub relay: Option<Relay>,
    /// Namespaces and veth link.
    pub net: NetPair,
    /// Files.
    pub scratch: Scratch,
    /// nexd's keys.
    pub nexd_keys: Keypair,
    /// The peer's keys.
    pub peer_keys: Keypair,
    /// nexd's API socket.
    pub socket: PathBuf,
    /// What wireguard-go routes to nexd (its AllowedIPs for nexd).
    peer_allowed: String,
    /// wireguard-go's tunnel addresses (CIDRs, comma-separated).
    peer_addresses: String,
    /// Where wireguard-go sends to reach nexd (nexd itself, or the relay).
    peer_endpoint: String,
}

impl WgWorld {
    /// Starts both sides, nexd with `rules` (flag pairs such as `--egress R`), or returns None
    /// (after printing SKIPPED) when namespaces or wireguard-go are unavailable.
    /// `peer_allowed` is wireguard-go's AllowedIPs for nexd (at least `100.100.0.1/32`).
    pub fn start(test: &str, rules: &[String], peer_allowed: &str) -> Option<WgWorld> {
        Self::start_via(test, rules, peer_allowed, None)
    }

    /// As [`WgWorld::start`], with a WAN relay impaired as `path` (when given) between the
    /// two WireGuard endpoints. The relay runs in namespace B: nexd sends to it over the
    /// veth, it forwards to wireguard-go over B's loopback, and back.
    pub fn start_via(
        test: &str,
        rules: &[String],
        peer_allowed: &str,
        path: Option<&Path>,
    ) -> Option<WgWorld> {
        Self::start_inner(test, rules, peer_allowed, path, &Setup::default())
    }

    /// As [`WgWorld::start`], with the optional parts of `setup`.
    pub fn start_with(
        test: &str,
        rules: &[String],
        peer_allowed: &str,
        setup: &Setup,
    ) -> Option<WgWorld> {
        Self::start_inner(test, rules, peer_allowed, None, setup)
    }

    fn start_inner(
        test: &str,
        rules: &[String],
        peer_allowed: &str,
        path: Option<&Path>,
        setup: &Setup,
    ) -> Option<WgWorld> {
        if let Some(why) = netns::unavailable() {
            crate::skip(test, &why);
            return None;
        }
        let scratch = Scratch::new();
        let net = NetPair::create().expect("namespaces");
        for (file, contents) in setup.etc {
            net.a
                .set_etc_file(file, contents)
                .expect("namespace /etc file");
        }
        let (nexd_addresses, peer_addresses) = match setup.ipv6 {
            false => (format!("{NEXD_ADDR}/32"), format!("{PEER_ADDR}/32")),
            true => (
                format!("{NEXD_ADDR}/32, {NEXD_ADDR6}/128"),
                format!("{PEER_ADDR}/32, {PEER_ADDR6}/128"),
            ),
        };
        let (nexd_keys, peer_keys) = (Keypair::generate(), Keypair::generate());
        let sa = |ip: &str, port: u16| -> SocketAddr {
            format!("{ip}:{port}").parse().expect("socket address")
        };
        let relay = path.map(|p| {
            let ends = Ends {
                listen_a: sa(&net.b_addr, RELAY_A_PORT),
                listen_b: sa("127.0.0.1", RELAY_B_PORT),
                peer_b: sa("127.0.0.1", PEER_WG_PORT),
                peer_a: Some(sa(&net.a_addr, NEXD_WG_PORT)),
            };
            Relay::start(Some(&net.b), &ends, p).expect("wan relay")
        });
        let (nexd_endpoint, peer_endpoint) = match &relay {
            Some(r) => (r.a.to_string(), r.b.to_string()),
            None => (
                format!("{}:{PEER_WG_PORT}", net.b_addr),
                format!("{}:{NEXD_WG_PORT}", net.a_addr),
            ),
        };
        let conf = scratch.write(
            "nexd.conf",
            &config(
                &nexd_keys.private,
                &nexd_addresses,
                NEXD_WG_PORT,
                &[PeerSpec {
                    public: &peer_keys.public,
                    allowed_ips: &peer_addresses,
                    endpoint: Some(nexd_endpoint),
                }],
            ),
        );
        // nexd runs as nobody and creates its state dir and socket here.
        let dir = scratch.path().join("node");
        std::fs::create_dir(&dir).expect("node dir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        let socket = dir.join("nexd.sock");
        let mut args = vec![
            "--state-dir".to_string(),
            dir.join("state").display().to_string(),
            "--unix-socket".into(),
            socket.display().to_string(),
            "proxy".into(),
            "--config".into(),
            conf.display().to_string(),
        ];
        args.extend(rules.iter().cloned());
        let mut nexd = Nexd::start(
            &scratch,
            "nexd",
            &args,
            &Launch {
                unprivileged: true,
                netns: Some(net.a.name.clone()),
                unwritable_home: false,
                nofile: None,
            },
        );
        nexd.wait_for_log("nexd proxy running", Duration::from_secs(10));
        let mut w = WgWorld {
            nexd,
            peer: None,
            relay,
            net,
            scratch,
            nexd_keys,
            peer_keys,
            socket,
            peer_allowed: peer_allowed.to_string(),
            peer_addresses: peer_addresses.replace(' ', ""),
            peer_endpoint,
        };
        w.start_peer();
        Some(w)
    }

    /// Starts wireguard-go (again) with the same key, port and addresses.
    pub fn start_peer(&mut self) {
        assert!(self.peer.is_none(), "peer already running");
        let peer = WgGoPeer::start(
            &self.net.b,
            &self.peer_keys.private,
            &self.peer_addresses,
            PEER_WG_PORT,
            &self.nexd_keys.public,
            &self.peer_allowed,
            &self.peer_endpoint,
        )
        .expect("wireguard-go");
        self.peer = Some(peer);
    }

    /// Kills wireguard-go; its interface, addresses and sessions vanish with it.
    pub fn stop_peer(&mut self) {
        let iface = self.peer.take().map(|p| p.iface.clone());
        // Dropping kills and reaps the process; wait until the kernel removed its interface,
        // so a restart cannot race the old one.
        if let Some(iface) = iface {
            let gone = crate::wait_until(Duration::from_secs(10), || {
                self.net.b.run(&["ip", "link", "show", &iface]).is_err()
            });
            assert!(gone, "wireguard-go interface {iface} did not go away");
        }
    }

    /// Gives wireguard-go a persistent keepalive for nexd; like a node that comes up with
    /// `PersistentKeepalive`, it then handshakes at once instead of waiting for traffic.
    pub fn set_peer_keepalive(&self, secs: u16) {
        let peer = self.peer.as_ref().expect("peer not running");
        self.net
            .b
            .run(&[
                "wg",
                "set",
                &peer.iface,
                "peer",
                &self.nexd_keys.public,
                "persistent-keepalive",
                &secs.to_string(),
            ])
            .expect("wg set persistent-keepalive");
    }

    /// Runs nexctl against this nexd: (exit code, stdout, stderr).
    pub fn nexctl(&self, args: &[&str]) -> (i32, String, String) {
        crate::pair::nexctl_as(None, &self.socket, args)
    }

    /// Path of the testkit helper binary.
    pub fn testkit() -> String {
        workspace_bin("testkit").display().to_string()
    }
}
