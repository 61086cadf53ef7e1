//! `nexd proxy`: load the configuration, start the engine, the rules and the proxy servers,
//! run until a signal.

use crate::api::{self, ApiService, RuntimeState};
use crate::cli::ProxyArgs;
use crate::engine::{self, EngineConfig, Tunables};
use crate::state::{State, StateStore};
use nexd_common::allow;
use nexd_common::limits::{self, quote_prefix};
use nexd_common::paths::PathEnv;
use nexd_common::{Direction, NetworkConfig, Protocol, ProxyProtocol, ProxyRule, Rule, RuleSpec};
use nexd_common::{Key, PeerConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
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
pub(crate) const EX_USAGE: u8 = 64;
/// sysexits: cannot create output (state directory).
const EX_CANTCREAT: u8 = 73;
/// sysexits: configuration error.
pub(crate) const EX_CONFIG: u8 = 78;

/// A [`Fatal`] with `code` and the one-line `message`.
pub(crate) fn fatal(code: u8, message: impl Into<String>) -> Fatal {
    Fatal {
        message: message.into(),
        code,
    }
}

/// Parses `--ingress`/`--egress` values; `--allow-peer` applies to the ingress ones,
/// `--proxy-protocol` to the TCP ingress ones.
pub fn parse_rules(args: &ProxyArgs) -> Result<Vec<RuleSpec>, Fatal> {
    // The API's caps (common/src/limits.rs), checked before anything is parsed.
    let too_big = |e: limits::LimitError| fatal(EX_USAGE, e.to_string());
    limits::check_count(
        "rules",
        args.ingress.len() + args.egress.len(),
        limits::MAX_RULES,
    )
    .map_err(too_big)?;
    for s in args.ingress.iter().chain(&args.egress) {
        limits::check_len("rule", s).map_err(too_big)?;
    }
    limits::check_list(
        "--allow-peer entry",
        "--allow-peer entries",
        &args.allow_peer,
        limits::MAX_ALLOW_PEERS_PER_RULE,
    )
    .map_err(too_big)?;
    let allowed = allow::parse_list(&args.allow_peer)
        .map_err(|e| fatal(EX_USAGE, format!("--allow-peer: {e}")))?;
    if !allowed.is_empty() && args.ingress.is_empty() {
        return Err(fatal(
            EX_USAGE,
            "--allow-peer applies to --ingress rules, and none is given",
        ));
    }
    let proxy_protocol = match &args.proxy_protocol {
        None => None,
        Some(v) => Some(
            v.parse::<ProxyProtocol>()
                .map_err(|e| fatal(EX_USAGE, format!("--proxy-protocol: {e}")))?,
        ),
    };
    let mut out: Vec<RuleSpec> = Vec::new();
    for (direction, flag, list) in [
        (Direction::Ingress, "--ingress", &args.ingress),
        (Direction::Egress, "--egress", &args.egress),
    ] {
        for s in list {
            let rule: Rule = s.parse().map_err(|e| {
                fatal(
                    EX_USAGE,
                    format!("invalid {flag} rule {}: {e}", quote_prefix(s)),
                )
            })?;
            let pr = ProxyRule { direction, rule };
            pr.validate().map_err(|e| {
                fatal(
                    EX_USAGE,
                    format!("invalid {flag} rule {}: {e}", quote_prefix(s)),
                )
            })?;
            if out.iter().any(|r| r.rule == pr) {
                return Err(fatal(
                    EX_USAGE,
                    format!("{flag} rule {} given twice", quote_prefix(s)),
                ));
            }
            out.push(RuleSpec {
                rule: pr,
                allowed_peers: match direction {
                    Direction::Ingress => allowed.clone(),
                    Direction::Egress => Vec::new(),
                },
                proxy_protocol: proxy_protocol.filter(|_| sends_proxy_protocol(&pr)),
            });
        }
    }
    if proxy_protocol.is_some() && !out.iter().any(|r| r.proxy_protocol.is_some()) {
        return Err(fatal(
            EX_USAGE,
            "--proxy-protocol applies to TCP --ingress rules, and none is given",
        ));
    }
    Ok(out)
}

/// Whether a rule may send a PROXY protocol header: TCP ingress only.
fn sends_proxy_protocol(r: &ProxyRule) -> bool {
    r.direction == Direction::Ingress && r.rule.protocol == Protocol::Tcp
}

/// Reads and parses the configuration file (`-`: stdin); see [`crate::config_file`].
pub fn load_config(path: &std::path::Path) -> Result<NetworkConfig, Fatal> {
    crate::config_file::load(path)
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

/// Where state and the API socket live.
pub struct Paths {
    /// State directory.
    pub state_dir: PathBuf,
    /// API socket.
    pub unix_socket: PathBuf,
    /// Whether the user chose the state dir (flag or env); only defaults may degrade.
    pub state_dir_chosen: bool,
    /// Whether the user chose the socket path (flag or env).
    pub unix_socket_chosen: bool,
}

impl Paths {
    /// Applies the documented defaults to what the flags left unset.
    pub fn resolve(state_dir: Option<PathBuf>, unix_socket: Option<PathBuf>) -> Paths {
        let is_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let env = PathEnv::from_process(is_root);
        let (state_dir_chosen, unix_socket_chosen) = (state_dir.is_some(), unix_socket.is_some());
        let state_dir = state_dir.unwrap_or_else(|| env.state_dir());
        let unix_socket = unix_socket.unwrap_or_else(|| env.unix_socket(&state_dir));
        Paths {
            state_dir,
            unix_socket,
            state_dir_chosen,
            unix_socket_chosen,
        }
    }
}

/// Applies the saved runtime changes to the configured peers and flag rules.
fn merge_state(
    state: &State,
    network: &mut NetworkConfig,
    rules: &mut Vec<RuleSpec>,
) -> Result<(), Fatal> {
    network
        .peers
        .retain(|p| !state.removed_peers.contains(&p.public_key.to_string()));
    for sp in &state.added_peers {
        let bad = |e: String| fatal(EX_CONFIG, format!("state: peer {}: {e}", sp.public_key));
        let public_key: Key = sp.public_key.parse().map_err(|e| bad(format!("{e}")))?;
        network.peers.retain(|p| p.public_key != public_key);
        network.peers.push(PeerConfig {
            public_key,
            preshared_key: match &sp.preshared_key {
                Some(k) => Some(k.parse().map_err(|e| bad(format!("preshared key: {e}")))?),
                None => None,
            },
            allowed_ips: sp
                .allowed_ips
                .iter()
                .map(|s| s.parse().map_err(|_| bad(format!("allowed IP {s:?}"))))
                .collect::<Result<_, _>>()?,
            endpoint: sp.endpoint.clone(),
            persistent_keepalive: sp.persistent_keepalive,
        });
    }
    for line in &state.rules {
        let bad = |e: String| fatal(EX_CONFIG, format!("state: rule {line:?}: {e}"));
        let r: ProxyRule = line.parse().map_err(|e| bad(format!("{e}")))?;
        let allowed_peers = allow::parse_list(state.allowed_peers.get(line).map_or(&[][..], |v| v))
            .map_err(|e| bad(e.to_string()))?;
        let proxy_protocol = match state.proxy_protocol.get(line) {
            None => None,
            Some(v) => Some(v.parse::<ProxyProtocol>().map_err(|e| bad(e.to_string()))?),
        };
        if !rules.iter().any(|x| x.rule == r) {
            rules.push(RuleSpec {
                rule: r,
                allowed_peers,
                proxy_protocol,
            });
        }
    }
    Ok(())
}

/// Removes the API socket however `run` ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the proxy until SIGINT/SIGTERM.
pub async fn run(args: ProxyArgs, paths: Paths) -> Result<(), Fatal> {
    let signals = Signals::install();
    let mut rules = parse_rules(&args)?;
    let mut servers = crate::servers::parse_flags(&args)?;
    let gateway_options = crate::servers::options(&args)?;
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    let mut network = load_config(&args.config)?;
    // A user running as, say, nobody with an unwritable HOME still gets a working proxy: the
    // *default* state dir and socket degrade with a warning; paths the user chose are fatal.
    let store = match StateStore::open(&paths.state_dir) {
        Ok(s) => Some(s),
        // A directory someone else could write is a misconfiguration to fix, never to
        // work around silently, default or not.
        Err(e @ crate::state::StateError::Unsafe(_)) => {
            return Err(fatal(EX_CONFIG, e.to_string()))
        }
        Err(e) if !paths.state_dir_chosen => {
            warn!("{e}; runtime changes will not be saved (set --state-dir)");
            None
        }
        Err(e) => return Err(fatal(EX_CANTCREAT, e.to_string())),
    };
    let mut state = match &store {
        Some(s) => s.load().map_err(|e| fatal(EX_CONFIG, e.to_string()))?,
        None => State::default(),
    };
    let interface = crate::keys::public(&network.private_key).to_string();
    match (&state.interface, &store) {
        (Some(k), Some(s)) if *k != interface => {
            return Err(fatal(
                EX_CONFIG,
                format!(
                    "state file {} belongs to interface {k}, not to this config's interface \
                     {interface}: give this instance its own --state-dir",
                    s.path().display()
                ),
            ))
        }
        _ => state.interface = Some(interface),
    }
    let reloader = std::sync::Arc::new(crate::reload::Reloader::new(&args.config, network.clone()));
    merge_state(&state, &mut network, &mut rules)?;
    crate::servers::merge_state(&state, &mut servers)?;
    let own = crate::keys::public(&network.private_key);
    if network.peers.iter().any(|p| p.public_key == own) {
        return Err(fatal(
            EX_CONFIG,
            format!(
                "state file {}: peer {own} is this interface's own public key; remove it",
                paths.state_dir.join(crate::state::STATE_FILE).display()
            ),
        ));
    }
    if !(state.rules.is_empty()
        && state.servers.is_empty()
        && state.added_peers.is_empty()
        && state.removed_peers.is_empty())
    {
        info!(
            path = %paths.state_dir.join(crate::state::STATE_FILE).display(),
            rules_restored = state.rules.len(),
            servers_restored = state.servers.len(),
            peers_added_or_changed = state.added_peers.len(),
            config_peers_removed = state.removed_peers.len(),
            "state file applied: runtime changes restored over the flags and the config file"
        );
    }
    let endpoints = resolve_endpoints(&network)?;
    let listener = match api::bind_private(&paths.unix_socket).await {
        Ok(l) => Some(l),
        Err(e @ api::BindError::Unsafe(_)) => return Err(fatal(EX_CONFIG, e.to_string())),
        Err(api::BindError::Other(e)) if !paths.unix_socket_chosen => {
            warn!("{e}; the control API is off (set --unix-socket)");
            None
        }
        Err(e) => return Err(fatal(1, e.to_string())),
    };
    let _socket_guard = listener
        .as_ref()
        .map(|_| RemoveOnDrop(paths.unix_socket.clone()));
    let fd_limit = crate::fd_limit::current();
    let (max_flows, lowered) = crate::fd_limit::max_flows(
        args.max_flows,
        crate::engine::DEFAULT_MAX_FLOWS as u64,
        fd_limit,
    );
    if lowered {
        warn!(
            requested = args.max_flows,
            max_flows,
            fd_limit,
            "--max-flows lowered to fit the file-descriptor limit (every flow holds a host socket)"
        );
    }
    let tunables = Tunables {
        mtu: network.mtu.map(usize::from).unwrap_or(1420),
        udp_idle_timeout: Duration::from_secs(args.udp_idle_timeout),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        max_flows: max_flows as usize,
        max_flows_per_rule: args.max_flows_per_rule as usize,
        max_pending_bytes: args.max_pending_bytes,
        max_tcp_window: args.max_tcp_window,
        tcp_congestion: args.tcp_congestion,
        ephemeral_ports: args.ephemeral_ports,
    };
    let cancel = CancellationToken::new();
    let (handle, task, listen_addr) = engine::start(
        EngineConfig {
            network,
            endpoints,
            tunables,
            gateway: gateway_options,
        },
        cancel.clone(),
    )
    .await
    .map_err(|e| fatal(1, e.to_string()))?;
    for rule in rules {
        if let Err(e) = handle.add_rule(rule).await {
            cancel.cancel();
            let code = match e {
                crate::engine::EngineError::InvalidRule { .. } => EX_USAGE,
                _ => 1,
            };
            return Err(fatal(code, e.to_string()));
        }
    }
    // After the rules, as the API would add them; a port in use is a runtime failure (1).
    for server in servers {
        if let Err(e) = handle.add_gateway(server).await {
            cancel.cancel();
            return Err(fatal(1, e.to_string()));
        }
    }
    if let Some(addr) = args.metrics_listen {
        let l = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                cancel.cancel();
                return Err(fatal(
                    1,
                    format!("--metrics-listen {addr}: cannot listen: {e}"),
                ));
            }
        };
        info!(%addr, "metrics at /metrics, health at /healthz");
        tokio::spawn(crate::metrics::serve(l, handle.clone(), cancel.clone()));
    }
    let runtime = std::sync::Arc::new(tokio::sync::Mutex::new(RuntimeState { store, state }));
    let api_task = listener.map(|listener| {
        let service = ApiService::new(handle.clone(), runtime.clone(), reloader.clone());
        tokio::spawn(api::serve(
            listener,
            paths.unix_socket.clone(),
            service,
            cancel.clone(),
        ))
    });
    match handle.status().await {
        Ok(st) => {
            info!(public_key = %st.public_key, %listen_addr, peers = st.peers.len(), rules = st.rules.len(), proxy_servers = st.gateways.len(), max_flows, fd_limit, "nexd proxy running");
            crate::config_file::log_deferred_warnings();
            crate::sd_notify::ready(&cancel);
        }
        Err(e) => return Err(fatal(1, e.to_string())),
    }
    let mut task = task;
    let engine_failure = tokio::select! {
        _ = wait_for_signal(signals, &cancel, |sig| {
            let (handle, runtime, reloader) = (handle.clone(), runtime.clone(), reloader.clone());
            async move {
                match sig {
                    Signal::Hup => match reloader.reload(&handle, &runtime).await {
                        Ok(r) => crate::reload::log_report(&r, "SIGHUP"),
                        Err(e) => warn!("reload on SIGHUP failed, running configuration kept: {e}"),
                    },
                    Signal::Usr1 => match handle.status().await {
                        Ok(st) => crate::status_dump::log_status(&st, "SIGUSR1"),
                        Err(e) => warn!("status on SIGUSR1: {e}"),
                    },
                    Signal::Usr2 => info!("SIGUSR2 received: it has no use yet and is ignored"),
                }
            }
        }) => None,
        // The engine never ends on its own: if it does, a half-alive daemon that answers the
        // API but moves no packet is worse than exiting for a supervisor to restart.
        r = &mut task => Some(match r {
            Ok(Err(panic)) => panic,
            _ => "it stopped unexpectedly".to_string(),
        }),
    };
    info!("shutting down");
    crate::sd_notify::stopping();
    if engine_failure.is_none() {
        crate::drain::drain(&handle, drain_timeout).await;
    }
    cancel.cancel();
    if engine_failure.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    // A timeout here means clients that never close; they must not hold up shutdown, and
    // the guard removes the socket either way.
    if let Some(api_task) = api_task {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), api_task).await {
            warn!("{e}");
        }
    }
    match engine_failure {
        Some(why) => Err(fatal(EX_SOFTWARE, format!("the engine failed: {why}"))),
        None => Ok(()),
    }
}

/// sysexits EX_SOFTWARE: an internal error.
const EX_SOFTWARE: u8 = 70;

/// The streams of the signals that must not stop nexd, installed first thing so that one
/// arriving during start-up waits for the main loop instead of taking its default action
/// (terminate). SIGTERM and SIGINT keep their default until the main loop: a start that
/// hangs (say, on DNS) can still be stopped.
struct Signals {
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; `None` if the runtime cannot (then only cancellation stops
    /// nexd, as before).
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Signals {
            hup: signal(SignalKind::hangup()).ok()?,
            usr1: signal(SignalKind::user_defined1()).ok()?,
            usr2: signal(SignalKind::user_defined2()).ok()?,
        })
    }
}

/// Signals that do something other than stop nexd.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// Reload the config file.
    Hup,
    /// Log a status summary.
    Usr1,
    /// No use yet; handled so that its default action (terminate) cannot kill nexd.
    Usr2,
}

/// Waits for SIGTERM or SIGINT; on each SIGHUP, SIGUSR1 or SIGUSR2 runs `on_signal` and
/// goes on. Installing the handlers replaces the default action of SIGUSR1/2 (terminate,
/// leaving the socket file behind).
async fn wait_for_signal<F, Fut>(
    signals: Option<Signals>,
    cancel: &CancellationToken,
    mut on_signal: F,
) where
    F: FnMut(Signal) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let (
        Some(Signals {
            mut hup,
            mut usr1,
            mut usr2,
        }),
        Ok(mut term),
        Ok(mut int),
    ) = (
        signals,
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    )
    else {
        cancel.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => on_signal(Signal::Hup).await,
            _ = usr1.recv() => on_signal(Signal::Usr1).await,
            _ = usr2.recv() => on_signal(Signal::Usr2).await,
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn rules(flags: &[&str]) -> Result<Vec<String>, (u8, String)> {
        let mut argv = vec!["nexd", "proxy", "--config", "/dev/null"];
        argv.extend(flags);
        let crate::cli::Command::Proxy(args) = crate::cli::Cli::try_parse_from(argv)
            .map_err(|e| (EX_USAGE, e.to_string()))?
            .command
        else {
            unreachable!()
        };
        parse_rules(&args)
            .map(|v| v.iter().map(|r| r.to_string()).collect())
            .map_err(|f| (f.code, f.message))
    }

    #[test]
    fn proxy_protocol_goes_to_the_tcp_ingress_rules_only() {
        let r = rules(&[
            "--ingress",
            "tcp:443:127.0.0.1:8443",
            "--ingress",
            "udp:53:127.0.0.1:53",
            "--egress",
            "tcp:5432:100.100.0.2:5432",
            "--proxy-protocol",
            "v2",
        ]);
        assert_eq!(
            r,
            Ok(vec![
                "ingress tcp:443:127.0.0.1:8443 proxy-protocol=v2".to_string(),
                "ingress udp:53:127.0.0.1:53".to_string(),
                "egress tcp:5432:100.100.0.2:5432".to_string(),
            ])
        );
        for (flags, want) in [
            (
                &["--egress", "tcp:1:100.100.0.2:1", "--proxy-protocol", "v1"][..],
                "none is given",
            ),
            (
                &["--ingress", "udp:53:127.0.0.1:53", "--proxy-protocol", "v1"],
                "none is given",
            ),
            (
                &["--ingress", "tcp:1:127.0.0.1:1", "--proxy-protocol", "v3"],
                "--proxy-protocol: invalid PROXY protocol version \"v3\"",
            ),
        ] {
            match rules(flags) {
                Err((code, m)) => {
                    assert_eq!(code, EX_USAGE, "{m}");
                    assert!(m.contains(want) && m.lines().count() == 1, "{m}");
                }
                Ok(r) => panic!("{flags:?} accepted: {r:?}"),
            }
        }
    }
}
