//! nexctl: command-line client for nexd's gRPC API on a unix socket. Thin by design: the
//! daemon owns all logic; nexctl parses, calls, and prints.

mod args;
mod cli;
mod client;
mod output;

use args::Target;
use cli::{Cli, Command, NexdCommand, PeersCommand, ProxyCommand};
use nexd_common::api;
use nexd_common::paths::PathEnv;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits codes.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_CANTCREAT: u8 = 73;
const EX_IOERR: u8 = 74;
const EX_NOPERM: u8 = 77;

/// A failure with its exit code and one line for stderr.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

fn default_socket() -> PathBuf {
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let env = PathEnv::from_process(is_root);
    let state_dir = std::env::var_os("NEXD_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.state_dir());
    env.unix_socket(&state_dir)
}

/// Runs `work` (connecting to nexd and calling it) within `--timeout`: a daemon that
/// accepts but never answers (stopped, wedged, out of descriptors) is exit 69, not a hang.
async fn bounded<T>(
    cli_timeout: u64,
    socket: &std::path::Path,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(std::time::Duration::from_secs(cli_timeout), work)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::new(
                EX_UNAVAILABLE,
                format!(
                    "nexd at {} did not answer within {cli_timeout} s (--timeout)",
                    socket.display()
                ),
            ))
        })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let socket = cli.unix_socket.clone().unwrap_or_else(default_socket);
    let out = cli.output;
    let secs = cli.timeout;
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = std::io::stdout().lock();
            nexd_common::clidoc::completions(Cli::command(), shell, &mut out)
                .map_err(|e| Failure::new(EX_IOERR, format!("cannot write to stdout: {e}")))
        }
        Command::Man { dir } => {
            nexd_common::clidoc::man_pages(nexd_common::usage::command::<Cli>(), &dir).map_err(
                |e| {
                    Failure::new(
                        EX_CANTCREAT,
                        format!("cannot write man pages to {}: {e}", dir.display()),
                    )
                },
            )
        }
        Command::Version => {
            let daemon = bounded(secs, &socket, async {
                let mut c = client::connect(&socket).await?;
                c.get_version(api::GetVersionRequest {})
                    .await
                    .map(|r| r.into_inner().version)
                    .map_err(client::failure)
            })
            .await
            .ok();
            output::version(out, env!("CARGO_PKG_VERSION"), daemon.as_deref());
            Ok(())
        }
        Command::Nexd { command } => {
            // Validate locally before connecting, so bad input is reported as such.
            let target = match &command {
                NexdCommand::Proxy {
                    command: ProxyCommand::Add(a),
                } => Some(args::add_target(a)?),
                NexdCommand::Proxy {
                    command: ProxyCommand::Remove(a),
                } => Some(args::target(a)?),
                _ => None,
            };
            let psk_file = match &command {
                NexdCommand::Peers {
                    command:
                        PeersCommand::Add {
                            preshared_key_file: Some(f),
                            ..
                        }
                        | PeersCommand::Set {
                            preshared_key_file: Some(f),
                            ..
                        },
                } => Some(
                    std::fs::read_to_string(f)
                        .map(|s| s.trim().to_string())
                        .map_err(|e| {
                            Failure::new(
                                EX_DATAERR,
                                format!("cannot read preshared key file {}: {e}", f.display()),
                            )
                        })?,
                ),
                _ => None,
            };
            bounded(secs, &socket, call(&socket, out, command, target, psk_file)).await
        }
    }
}

/// Connects and makes the call for `nexctl nexd ...`; input was validated by the caller.
async fn call(
    socket: &std::path::Path,
    out: cli::Output,
    command: NexdCommand,
    target: Option<Target>,
    psk_file: Option<String>,
) -> Result<(), Failure> {
    let mut c = client::connect(socket).await?;
    match command {
        NexdCommand::Proxy { command } => {
            let missing = || Failure::new(EX_USAGE, "missing rule or server");
            match (command, target) {
                (ProxyCommand::Add(_), Some(Target::Rule(r))) => {
                    c.add_proxy_rule(api::AddProxyRuleRequest {
                        rule: Some((&r).into()),
                    })
                    .await
                    .map_err(client::failure)?;
                    output::done(out, "added", &r);
                }
                (ProxyCommand::Add(_), Some(Target::Server(s))) => {
                    c.add_proxy_server(api::AddProxyServerRequest {
                        server: Some((&s).into()),
                    })
                    .await
                    .map_err(client::failure)?;
                    output::server_done(out, "added", &s);
                }
                (ProxyCommand::Remove(_), Some(Target::Rule(r))) => {
                    c.remove_proxy_rule(api::RemoveProxyRuleRequest {
                        rule: Some((&r).into()),
                    })
                    .await
                    .map_err(client::failure)?;
                    output::done(out, "removed", &r);
                }
                (ProxyCommand::Remove(_), Some(Target::Server(s))) => {
                    c.remove_proxy_server(api::RemoveProxyServerRequest {
                        server: Some((&s).into()),
                    })
                    .await
                    .map_err(client::failure)?;
                    output::server_done(out, "removed", &s);
                }
                (ProxyCommand::Add(_) | ProxyCommand::Remove(_), None) => return Err(missing()),
                (ProxyCommand::List, _) => {
                    let r = c
                        .list_proxy_rules(api::ListProxyRulesRequest {})
                        .await
                        .map_err(client::failure)?
                        .into_inner();
                    output::rules(out, &r.rules, &r.servers);
                }
            }
        }
        NexdCommand::Reload => {
            let r = c
                .reload(api::ReloadRequest {})
                .await
                .map_err(client::failure)?;
            output::reloaded(out, &r.into_inner());
        }
        NexdCommand::Status => {
            let s = c
                .get_status(api::GetStatusRequest {})
                .await
                .map_err(client::failure)?;
            output::status(out, &s.into_inner());
        }
        NexdCommand::Peers { command } => match command {
            PeersCommand::List => {
                let r = c
                    .list_peers(api::ListPeersRequest {})
                    .await
                    .map_err(client::failure)?;
                output::peers(out, &r.into_inner().peers);
            }
            PeersCommand::Add {
                public_key,
                allowed_ips,
                endpoint,
                persistent_keepalive,
                ..
            } => {
                c.add_peer(api::AddPeerRequest {
                    public_key: public_key.clone(),
                    allowed_ips,
                    endpoint: endpoint.unwrap_or_default(),
                    persistent_keepalive: persistent_keepalive.unwrap_or(0) as u32,
                    preshared_key: psk_file.unwrap_or_default(),
                })
                .await
                .map_err(client::failure)?;
                output::peer_done(out, "added", &public_key);
            }
            PeersCommand::Set {
                public_key,
                allowed_ips,
                endpoint,
                persistent_keepalive,
                ..
            } => {
                c.set_peer(api::SetPeerRequest {
                    public_key: public_key.clone(),
                    allowed_ips,
                    endpoint,
                    persistent_keepalive: persistent_keepalive.map(u32::from),
                    preshared_key: psk_file,
                })
                .await
                .map_err(client::failure)?;
                output::peer_done(out, "updated", &public_key);
            }
            PeersCommand::Remove { public_key } => {
                c.remove_peer(api::RemovePeerRequest {
                    public_key: public_key.clone(),
                })
                .await
                .map_err(client::failure)?;
                output::peer_done(out, "removed", &public_key);
            }
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli: Cli = match nexd_common::usage::parse_or_exit("nexctl") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexctl: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("nexctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
