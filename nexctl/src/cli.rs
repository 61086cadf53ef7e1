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
    /// Proxy rules
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

/// Exactly one of --ingress or --egress.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("direction").required(true).args(["ingress", "egress"])))]
pub struct RuleArg {
    /// protocol:port:destination_ip:destination_port, from the WireGuard network to the host
    #[arg(long, value_name = "RULE")]
    pub ingress: Option<String>,
    /// protocol:[bind_address:]port:destination_ip:destination_port, from the host (loopback
    /// unless a bind address is given) to the WireGuard network
    #[arg(long, value_name = "RULE")]
    pub egress: Option<String>,
}

/// `proxy add`: a rule and, for ingress, who may use it.
#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    pub rule: RuleArg,
    /// Ingress only: a peer allowed to use the rule, as a base64 public key, a tunnel IP
    /// address or a CIDR (repeatable or comma-separated; default: every peer)
    #[arg(long = "allow-peer", value_name = "PEER", value_delimiter = ',')]
    pub allow_peer: Vec<String>,
}

/// `nexctl nexd proxy ...`
#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    /// Add a rule; its listener is up when this returns
    Add(AddArgs),
    /// Remove a rule; stops accepting at once, live connections finish
    Remove(RuleArg),
    /// List the active rules
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
