//! `nexd proxy`: load the configuration, start the engine and the rules, run until a signal.

use crate::cli::ProxyArgs;
use crate::engine::{self, EngineConfig, Tunables};
use nexd_common::{Direction, NetworkConfig, ProxyRule, Rule};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A fatal error with its exit code.
pub struct Fatal {
    /// One line for stderr.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

/// sysexits: usage error (bad flag value).
const EX_USAGE: u8 = 64;
/// sysexits: cannot open input.
const EX_NOINPUT: u8 = 66;
/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;

fn fatal(code: u8, message: impl Into<String>) -> Fatal {
    Fatal {
        message: message.into(),
        code,
    }
}

/// Parses `--ingress`/`--egress` values.
pub fn parse_rules(args: &ProxyArgs) -> Result<Vec<ProxyRule>, Fatal> {
    let mut out = Vec::new();
    for (direction, flag, list) in [
        (Direction::Ingress, "--ingress", &args.ingress),
        (Direction::Egress, "--egress", &args.egress),
    ] {
        for s in list {
            let rule: Rule = s
                .parse()
                .map_err(|e| fatal(EX_USAGE, format!("invalid {flag} rule {s:?}: {e}")))?;
            let pr = ProxyRule { direction, rule };
            if out.contains(&pr) {
                return Err(fatal(EX_USAGE, format!("{flag} rule {s:?} given twice")));
            }
            out.push(pr);
        }
    }
    Ok(out)
}

/// Reads and parses the configuration file.
pub fn load_config(path: &std::path::Path) -> Result<NetworkConfig, Fatal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fatal(EX_NOINPUT, format!("cannot read config {}: {e}", path.display()))
    })?;
    let cfg = NetworkConfig::parse(&text)
        .map_err(|e| fatal(EX_CONFIG, format!("config {}: {e}", path.display())))?;
    for (line, key) in &cfg.ignored {
        warn!("config {}: line {line}: {key} is for the kernel interface; ignored", path.display());
    }
    Ok(cfg)
}

/// Resolves `host:port` endpoints (names like localhost are allowed).
pub fn resolve_endpoints(cfg: &NetworkConfig) -> Result<Vec<Option<SocketAddr>>, Fatal> {
    cfg.peers
        .iter()
        .map(|p| match &p.endpoint {
            None => Ok(None),
            Some(ep) => ep
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(Some)
                .ok_or_else(|| {
                    fatal(
                        EX_CONFIG,
                        format!("peer {}: cannot resolve endpoint {ep:?}", p.public_key),
                    )
                }),
        })
        .collect()
}

/// Runs the proxy until SIGINT/SIGTERM.
pub async fn run(args: ProxyArgs) -> Result<(), Fatal> {
    let rules = parse_rules(&args)?;
    let network = load_config(&args.config)?;
    let endpoints = resolve_endpoints(&network)?;
    let tunables = Tunables {
        mtu: network.mtu.map(usize::from).unwrap_or(1420),
        udp_idle_timeout: Duration::from_secs(args.udp_idle_timeout),
        connect_timeout: Duration::from_secs(args.connect_timeout),
    };
    let cancel = CancellationToken::new();
    let (handle, task, listen_addr) = engine::start(
        EngineConfig {
            network,
            endpoints,
            tunables,
        },
        cancel.clone(),
    )
    .await
    .map_err(|e| fatal(1, e.to_string()))?;
    for rule in rules {
        if let Err(e) = handle.add_rule(rule).await {
            cancel.cancel();
            return Err(fatal(1, e.to_string()));
        }
    }
    match handle.status().await {
        Ok(st) => info!(public_key = %st.public_key, %listen_addr, peers = st.peers.len(), rules = st.rules.len(), "nexd proxy running"),
        Err(e) => return Err(fatal(1, e.to_string())),
    }
    wait_for_signal(&cancel).await;
    info!("shutting down");
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    Ok(())
}

async fn wait_for_signal(cancel: &CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        cancel.cancelled().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = cancel.cancelled() => {}
    }
}
