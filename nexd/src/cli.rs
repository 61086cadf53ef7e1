//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
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

    /// Log line format: text for people, json (one object per line) for log collectors
    #[arg(
        long,
        global = true,
        env = "NEXD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Unprivileged userspace L4 proxy: WireGuard and TCP/IP run inside nexd
    // Boxed: its options outweigh every other command's many times over.
    Proxy(Box<ProxyArgs>),
    /// Privileged L3 mode with a TUN device (not yet implemented)
    Agent,
    /// Print the version
    Version,
    /// Print a new private key (base64), as `wg genkey` does
    Genkey,
    /// Read a private key on stdin and print its public key, as `wg pubkey` does
    Pubkey,
    /// Print shell completions for nexd
    Completions {
        /// Shell to write completions for
        #[arg(value_enum)]
        shell: nexd_common::clidoc::Shell,
    },
    /// Write man pages for nexd and its subcommands into DIR
    #[command(hide = true)]
    Man {
        /// Directory for the pages (e.g. /usr/local/share/man/man1); created if missing
        dir: PathBuf,
    },
}

/// Default of the per-rule flow limit, as clap wants it.
mod nexd_limits {
    pub const MAX_FLOWS_PER_RULE: u64 = crate::engine::DEFAULT_MAX_FLOWS_PER_RULE as u64;
}

/// Parses a byte count with an optional K or M suffix (powers of 1024), within 16K..=64M.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let unit = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1024,
        "M" | "MB" | "MIB" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{s:?} is not a byte count such as 524288, 512K or 4M"
            ))
        }
    };
    let n = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{s:?} is not a byte count such as 524288, 512K or 4M"))?;
    if !(16 * 1024..=64 * 1024 * 1024).contains(&n) {
        return Err(format!("{s:?} is out of range: 16K to 64M"));
    }
    Ok(n)
}

/// `nexd proxy` options.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// wg-quick style configuration file; `-` reads it from stdin
    #[arg(long, env = "NEXD_CONFIG", value_name = "FILE")]
    pub config: PathBuf,

    /// Proxy connections from the WireGuard network to a host address:
    /// protocol:port:destination_ip:destination_port (repeatable)
    #[arg(long = "ingress", value_name = "RULE")]
    pub ingress: Vec<String>,

    /// Proxy connections to a host port over WireGuard:
    /// protocol:[bind_address:]port:destination_ip:destination_port (repeatable; without a
    /// bind address the port listens on loopback only)
    #[arg(long = "egress", value_name = "RULE")]
    pub egress: Vec<String>,

    /// Only these peers may use the --ingress rules given here: a base64 public key, a tunnel
    /// IP address or a CIDR (repeatable; default: every peer). Others get a reset
    #[arg(long = "allow-peer", value_name = "PEER", value_delimiter = ',')]
    pub allow_peer: Vec<String>,

    /// Send a PROXY protocol header (v1: text, v2: binary) with the peer's tunnel address to
    /// the local server of every TCP --ingress rule given here
    #[arg(long = "proxy-protocol", value_name = "VERSION")]
    pub proxy_protocol: Option<String>,

    /// Serve SOCKS5 into the tunnel at [ADDR:]PORT (address default 127.0.0.1; repeatable).
    /// It reaches only addresses some peer's AllowedIPs cover
    #[arg(long = "socks5", value_name = "[ADDR:]PORT")]
    pub socks5: Vec<String>,

    /// Serve an HTTP proxy (CONNECT and plain GET) into the tunnel at [ADDR:]PORT (address
    /// default 127.0.0.1; repeatable). It reaches only addresses some peer's AllowedIPs cover
    #[arg(long = "http-proxy", value_name = "[ADDR:]PORT")]
    pub http_proxy: Vec<String>,

    /// Only these destinations for the --socks5/--http-proxy servers given here:
    /// CIDR[:PORT[-PORT]] (repeatable or comma-separated; default: every tunnel destination)
    #[arg(
        long = "proxy-allow-dest",
        value_name = "CIDR[:PORT[-PORT]]",
        value_delimiter = ','
    )]
    pub proxy_allow_dest: Vec<String>,

    /// Domain names in SOCKS5 requests: host (resolve them with the host resolver) or none
    /// (refuse them; clients must send addresses)
    #[arg(long, value_enum, default_value_t = Socks5Resolve::Host, value_name = "MODE")]
    pub socks5_resolve: Socks5Resolve,

    /// SOCKS5 username/password file, `user:password` lines; only the owner may read it.
    /// Without it, SOCKS5 servers ask for no authentication
    #[arg(long, value_name = "PATH")]
    pub socks5_auth_file: Option<PathBuf>,

    /// Open flows (TCP and UDP, all rules) beyond which new ones are refused [default: 32768,
    /// lowered to fit the file-descriptor limit, as is a larger value given here]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_flows: Option<u64>,

    /// Open flows through one rule beyond which its new ones are refused
    #[arg(long, default_value_t = nexd_limits::MAX_FLOWS_PER_RULE, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_flows_per_rule: u64,

    /// Bytes a TCP flow holds in each direction at first, also its first receive window (K and M
    /// suffixes: 256K, 4M; 16K to 64M); busy flows grow up to --max-tcp-window
    #[arg(long, default_value = "512K", value_name = "BYTES", value_parser = parse_bytes)]
    pub max_pending_bytes: usize,

    /// Largest TCP window (and buffer) per flow and direction that a flow may grow to as it
    /// measures the path's bandwidth-delay product (16K to 64M)
    #[arg(long, default_value = "8M", value_name = "BYTES", value_parser = parse_bytes)]
    pub max_tcp_window: usize,

    /// Congestion control of TCP flows on the tunnel side: bbr (paces at the measured
    /// bandwidth; holds its rate through random loss) or cubic (loss-based)
    #[arg(
        long,
        env = "NEXD_TCP_CONGESTION",
        default_value = "bbr",
        value_name = "ALGORITHM"
    )]
    pub tcp_congestion: crate::engine::stack::TcpCongestion,

    /// Seconds without traffic after which a UDP flow is closed
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub udp_idle_timeout: u64,

    /// Seconds to wait for a destination to accept a TCP connection, and for an ingress peer
    /// to complete its TCP handshake
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics and a health check at /healthz
    #[arg(long, env = "NEXD_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// On SIGTERM/SIGINT, seconds to let open connections finish (new ones are refused)
    /// before resetting what is left; a second signal resets at once
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_timeout: u64,

    /// Tunnel-side source ports of egress flows, LOW-HIGH. Hidden: tests narrow it so that
    /// the ports wrap after a few hundred connections.
    #[arg(long, hide = true, env = "NEXD_EPHEMERAL_PORTS", default_value = "32768-60999", value_name = "LOW-HIGH", value_parser = parse_port_range)]
    pub ephemeral_ports: (u16, u16),
}

/// How SOCKS5 servers treat domain names (`--socks5-resolve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Socks5Resolve {
    /// Resolve with the host resolver.
    Host,
    /// Refuse names.
    None,
}

/// Parses `LOW-HIGH`: two ports, 0 < LOW <= HIGH.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range such as 40000-40255");
    let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::parse_port_range;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-40255"), Ok((40000, 40255)));
        assert_eq!(parse_port_range(" 1 - 1 "), Ok((1, 1)));
        for bad in ["", "40000", "0-10", "10-9", "1-65536", "a-b", "-5", "5-"] {
            assert!(parse_port_range(bad).is_err(), "{bad:?}");
        }
    }
}
