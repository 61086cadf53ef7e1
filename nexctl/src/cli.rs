//! nexctl's command line.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// nexctl: control a running nexd.
#[derive(Parser, Debug)]
#[command(name = "nexctl", version, about)]
pub struct Cli {
    /// nexd's API socket [default: /run/nexd.sock as root, else $XDG_RUNTIME_DIR/nexd.sock, else <state-dir>/nexd.sock]
    #[arg(long, global = true, env = "NEXD_UNIX_SOCKET", value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,

    /// Give up on nexd after this many seconds (connecting and the call together); exit 69
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// Output format
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Text,
    /// One JSON document per command, for scripts.
    Json,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Talk to nexd
    Nexd {
        #[command(subcommand)]
        command: NexdCommand,
    },
    /// Print nexctl's version and, if reachable, the daemon's
    Version,
    /// Print shell completions for nexctl
    Completions {
        /// Shell to write completions for
        #[arg(value_enum)]
        shell: nexd_common::clidoc::Shell,
    },
    /// Write man pages for nexctl and its subcommands into DIR
    #[command(hide = true)]
    Man {
        /// Directory for the pages (e.g. /usr/local/share/man/man1); created if missing
        dir: PathBuf,
    },
}

/// `nexctl nexd ...`
#[derive(Subcommand, Debug)]
pub enum NexdCommand {
    /// Proxy rules and proxy servers (SOCKS5, HTTP)
    Proxy {
        #[command(subcommand)]
        command: ProxyCommand,
    },
    /// Node public key, addresses, listen port, uptime, peer and rule counts
    Status,
    /// WireGuard peers
    Peers {
        #[command(subcommand)]
        command: PeersCommand,
    },
    /// Re-read nexd's config file and apply its peer changes (as SIGHUP does)
    Reload,
}

/// Exactly one of --ingress, --egress, --socks5 or --http-proxy.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["ingress", "egress", "socks5", "http_proxy"])))]
pub struct TargetArg {
    /// protocol:port:destination_ip:destination_port, from the WireGuard network to the host
    #[arg(long, value_name = "RULE")]
    pub ingress: Option<String>,
    /// protocol:[bind_address:]port:destination_ip:destination_port, from the host (loopback
    /// unless a bind address is given) to the WireGuard network
    #[arg(long, value_name = "RULE")]
    pub egress: Option<String>,
    /// A SOCKS5 server into the tunnel at [ADDR:]PORT (address default 127.0.0.1); it reaches
    /// only addresses some peer's AllowedIPs cover
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub socks5: Option<String>,
    /// An HTTP proxy (CONNECT and plain GET) into the tunnel at [ADDR:]PORT (address default
    /// 127.0.0.1); it reaches only addresses some peer's AllowedIPs cover
    #[arg(long = "http-proxy", value_name = "[ADDR:]PORT")]
    pub http_proxy: Option<String>,
}

/// `proxy add`: a rule or proxy server, and what it admits.
#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub target: TargetArg,
    /// Ingress only: a peer allowed to use the rule, as a base64 public key, a tunnel IP
    /// address or a CIDR (repeatable or comma-separated; default: every peer)
    #[arg(long = "allow-peer", value_name = "PEER", value_delimiter = ',')]
    pub allow_peer: Vec<String>,
    /// --socks5/--http-proxy only: a destination the server may reach, CIDR[:PORT[-PORT]]
    /// (repeatable or comma-separated; default: every tunnel destination)
    #[arg(
        long = "allow-dest",
        value_name = "CIDR[:PORT[-PORT]]",
        value_delimiter = ','
    )]
    pub allow_dest: Vec<String>,
    /// TCP --ingress only: send a PROXY protocol header (v1: text, v2: binary) with the peer's
    /// tunnel address to the local server
    #[arg(long = "proxy-protocol", value_name = "VERSION")]
    pub proxy_protocol: Option<String>,
}

/// `nexctl nexd proxy ...`
#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    /// Add a rule or proxy server; its listener is up when this returns
    Add(AddArgs),
    /// Remove a rule or proxy server; stops accepting at once, live connections finish
    Remove(TargetArg),
    /// List the active rules, then the proxy servers
    List,
}

/// `nexctl nexd peers ...`
#[derive(Subcommand, Debug)]
pub enum PeersCommand {
    /// List peers with endpoint, allowed IPs, latest handshake and traffic
    List,
    /// Add a peer
    Add {
        /// Base64 public key
        #[arg(long, value_name = "KEY")]
        public_key: String,
        /// Comma-separated CIDRs
        #[arg(
            long,
            value_name = "CIDR[,CIDR]",
            value_delimiter = ',',
            required = true
        )]
        allowed_ips: Vec<String>,
        /// host:port or [v6]:port
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// Keepalive interval in seconds
        #[arg(long, value_name = "S")]
        persistent_keepalive: Option<u16>,
        /// File holding a base64 preshared key
        #[arg(long, value_name = "F")]
        preshared_key_file: Option<PathBuf>,
    },
    /// Change a peer in place (options left out stay as they are)
    Set {
        /// Base64 public key
        #[arg(long, value_name = "KEY")]
        public_key: String,
        /// Comma-separated CIDRs, replacing the current ones
        #[arg(long, value_name = "CIDR[,CIDR]", value_delimiter = ',')]
        allowed_ips: Vec<String>,
        /// host:port or [v6]:port
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// Keepalive interval in seconds (0: off)
        #[arg(long, value_name = "S")]
        persistent_keepalive: Option<u16>,
        /// File holding a base64 preshared key (an empty file removes it)
        #[arg(long, value_name = "F")]
        preshared_key_file: Option<PathBuf>,
    },
    /// Remove a peer
    Remove {
        /// Base64 public key
        #[arg(long, value_name = "KEY")]
        public_key: String,
    },
}
