//! Command-line interface.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// nexd: join a WireGuard (Nexodus) network from userspace.
#[derive(Parser, Debug)]
#[command(name = "nexd", version, about)]
pub struct Cli {
    /// State directory [default: /var/lib/nexd as root, else $XDG_STATE_HOME/nexd or ~/.local/state/nexd]
    #[arg(long, global = true, env = "NEXD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// API socket [default: /run/nexd.sock as root, else $XDG_RUNTIME_DIR/nexd.sock, else <state-dir>/nexd.sock]
    #[arg(long, global = true, env = "NEXD_UNIX_SOCKET", value_name = "PATH")]
    pub unix_socket: Option<PathBuf>,

    /// Log level or filter (error, warn, info, debug, trace); RUST_LOG overrides it
    #[arg(long, global = true, env = "NEXD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Unprivileged userspace L4 proxy: WireGuard and TCP/IP run inside nexd
    Proxy(ProxyArgs),
    /// Privileged L3 mode with a TUN device (not yet implemented)
    Agent,
    /// Print the version
    Version,
}

/// `nexd proxy` options.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// wg-quick style configuration file
    #[arg(long, env = "NEXD_CONFIG", value_name = "FILE")]
    pub config: PathBuf,

    /// Proxy connections from the WireGuard network to a host address:
    /// protocol:port:destination_ip:destination_port (repeatable)
    #[arg(long = "ingress", value_name = "RULE")]
    pub ingress: Vec<String>,

    /// Proxy connections to a host port over WireGuard:
    /// protocol:port:destination_ip:destination_port (repeatable)
    #[arg(long = "egress", value_name = "RULE")]
    pub egress: Vec<String>,

    /// Seconds without traffic after which a UDP flow is closed
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_idle_timeout: u64,

    /// Seconds to wait for a destination to accept a TCP connection
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
}
