//! Proxy servers (SOCKS5, HTTP) at start: the ones the flags give (`--socks5`,
//! `--http-proxy`, `--proxy-allow-dest`), the ones the state file restores, and the settings
//! they all share (`--socks5-resolve`, `--socks5-auth-file`).

use crate::cli::{ProxyArgs, Socks5Resolve};
use crate::gateway::{auth::Credentials, GatewayOptions};
use crate::proxy::{fatal, Fatal, EX_CONFIG, EX_USAGE};
use crate::state::State;
use nexd_common::gateway::{self, Gateway, GatewayKind, GatewaySpec};
use nexd_common::limits;
use std::sync::Arc;

/// sysexits: cannot open input (an auth file that is missing or unreadable).
const EX_NOINPUT: u8 = 66;

/// Parses `--socks5`/`--http-proxy` values; `--proxy-allow-dest` applies to each of them.
/// Errors are one line, exit 64, naming the flag and quoting the value.
pub fn parse_flags(args: &ProxyArgs) -> Result<Vec<GatewaySpec>, Fatal> {
    // The API's caps, checked before anything is parsed (as for --ingress/--egress).
    let too_big = |e: limits::LimitError| fatal(EX_USAGE, e.to_string());
    let given = args.socks5.len() + args.http_proxy.len();
    limits::check_count("proxy servers", given, limits::MAX_PROXY_SERVERS).map_err(too_big)?;
    for s in args.socks5.iter().chain(&args.http_proxy) {
        limits::check_len("listen address", s).map_err(too_big)?;
    }
    limits::check_list(
        "--proxy-allow-dest entry",
        "--proxy-allow-dest entries",
        &args.proxy_allow_dest,
        limits::MAX_ALLOW_DESTS_PER_SERVER,
    )
    .map_err(too_big)?;
    let allow = gateway::parse_dest_list(&args.proxy_allow_dest)
        .map_err(|e| fatal(EX_USAGE, format!("--proxy-allow-dest: {e}")))?;
    if !allow.is_empty() && given == 0 {
        return Err(fatal(
            EX_USAGE,
            "--proxy-allow-dest applies to --socks5 and --http-proxy servers, and none is given",
        ));
    }
    let mut out: Vec<GatewaySpec> = Vec::new();
    for (kind, flag, list) in [
        (GatewayKind::Socks5, "--socks5", &args.socks5),
        (GatewayKind::Http, "--http-proxy", &args.http_proxy),
    ] {
        for s in list {
            let listen =
                gateway::parse_listen(s).map_err(|e| fatal(EX_USAGE, format!("{flag}: {e}")))?;
            // One address serves one server: a second bind would fail later, less clearly.
            if let Some(other) = out.iter().find(|g| g.gateway.listen == listen) {
                return Err(fatal(
                    EX_USAGE,
                    format!(
                        "{flag} {}: {listen} is already given for {}",
                        limits::quote_prefix(s),
                        other.gateway
                    ),
                ));
            }
            out.push(GatewaySpec {
                gateway: Gateway { kind, listen },
                allow: allow.clone(),
            });
        }
    }
    Ok(out)
}

/// The settings every proxy server shares. An auth file nexd cannot open is exit 66, one
/// it refuses (other users may read it, bad lines) exit 78.
pub fn options(args: &ProxyArgs) -> Result<GatewayOptions, Fatal> {
    let credentials = match &args.socks5_auth_file {
        None => None,
        Some(path) => {
            // Opened once here only to tell "cannot read" from "refused" by its exit code.
            if let Err(e) = std::fs::File::open(path) {
                return Err(fatal(
                    EX_NOINPUT,
                    format!("--socks5-auth-file: cannot read {}: {e}", path.display()),
                ));
            }
            let c = Credentials::load(path)
                .map_err(|e| fatal(EX_CONFIG, format!("--socks5-auth-file: {e}")))?;
            Some(Arc::new(c))
        }
    };
    Ok(GatewayOptions {
        resolve_names: args.socks5_resolve == Socks5Resolve::Host,
        credentials,
    })
}

/// Adds the servers saved at runtime to the flag servers; a saved server the flags also give
/// is started once, as the flags give it.
pub fn merge_state(state: &State, servers: &mut Vec<GatewaySpec>) -> Result<(), Fatal> {
    for line in &state.servers {
        let bad = |e: String| fatal(EX_CONFIG, format!("state: server {line:?}: {e}"));
        let g: Gateway = line.parse().map_err(|e| bad(format!("{e}")))?;
        let allow = gateway::parse_dest_list(state.server_allow.get(line).map_or(&[][..], |v| v))
            .map_err(|e| bad(e.to_string()))?;
        if !servers.iter().any(|s| s.gateway == g) {
            servers.push(GatewaySpec { gateway: g, allow });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(flags: &[&str]) -> ProxyArgs {
        let mut argv = vec!["nexd", "proxy", "--config", "/dev/null"];
        argv.extend(flags);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Proxy(a) => *a,
            _ => unreachable!(),
        }
    }

    fn error(flags: &[&str]) -> (u8, String) {
        let e = parse_flags(&args(flags)).unwrap_err();
        assert_eq!(e.message.lines().count(), 1, "{}", e.message);
        (e.code, e.message)
    }

    #[test]
    fn flag_servers_with_their_allow_list() {
        let s = parse_flags(&args(&[
            "--socks5",
            "1080",
            "--http-proxy",
            "[::1]:3128",
            "--socks5",
            "0.0.0.0:1081",
            "--proxy-allow-dest",
            "100.100.0.0/24,100.100.1.9:22",
            "--proxy-allow-dest",
            "[fd00::/64]:80-90",
        ]))
        .unwrap_or_else(|e| panic!("{}", e.message));
        let names: Vec<String> = s.iter().map(|g| g.to_string()).collect();
        let allow = "allow-dest=100.100.0.0/24,100.100.1.9:22,[fd00::/64]:80-90";
        assert_eq!(
            names,
            [
                format!("socks5 127.0.0.1:1080 {allow}"),
                format!("socks5 0.0.0.0:1081 {allow}"),
                format!("http-proxy [::1]:3128 {allow}"),
            ]
        );
        assert!(parse_flags(&args(&[])).unwrap_or_default().is_empty());
    }

    #[test]
    fn bad_flag_values_are_usage_errors_quoting_the_value() {
        for (flags, want) in [
            (
                &["--socks5", "0"][..],
                "--socks5: invalid listen address \"0\"",
            ),
            (
                &["--http-proxy", "host:80"],
                "--http-proxy: invalid listen address \"host:80\"",
            ),
            (
                &["--socks5", "1080", "--proxy-allow-dest", "100.100.0.0/33"],
                "--proxy-allow-dest: invalid destination \"100.100.0.0/33\"",
            ),
            (&["--proxy-allow-dest", "100.100.0.0/24"], "none is given"),
            (
                &["--socks5", "1080", "--http-proxy", "127.0.0.1:1080"],
                "already given for socks5 127.0.0.1:1080",
            ),
        ] {
            let (code, message) = error(flags);
            assert_eq!(code, EX_USAGE, "{message}");
            assert!(message.contains(want), "{want:?} not in {message:?}");
        }
        let long = "1".repeat(5000);
        let (code, message) = error(&["--socks5", &long]);
        assert_eq!(code, EX_USAGE);
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn names_are_resolved_unless_refused() {
        let o = options(&args(&[])).unwrap_or_else(|e| panic!("{}", e.message));
        assert!(o.resolve_names && o.credentials.is_none());
        let o = options(&args(&["--socks5-resolve", "host"])).unwrap_or_default();
        assert!(o.resolve_names);
        let o = options(&args(&["--socks5-resolve", "none"])).unwrap_or_default();
        assert!(!o.resolve_names);
        assert!(crate::cli::Cli::try_parse_from([
            "nexd",
            "proxy",
            "--config",
            "x",
            "--socks5-resolve",
            "maybe"
        ])
        .is_err());
        let e = options(&args(&["--socks5-auth-file", "/nonexistent/nexd-auth"]))
            .err()
            .map(|e| (e.code, e.message));
        assert!(
            matches!(&e, Some((EX_NOINPUT, m)) if m.contains("/nonexistent/nexd-auth")),
            "{e:?}"
        );
    }

    #[test]
    fn saved_servers_join_the_flag_ones_once() {
        let mut servers = parse_flags(&args(&["--socks5", "1080"])).unwrap_or_default();
        let state = State {
            servers: vec![
                "socks5 127.0.0.1:1080".into(),
                "http-proxy 127.0.0.1:3128".into(),
            ],
            server_allow: [(
                "http-proxy 127.0.0.1:3128".to_string(),
                vec!["100.100.0.2:80".to_string()],
            )]
            .into(),
            ..State::default()
        };
        merge_state(&state, &mut servers).unwrap_or_else(|e| panic!("{}", e.message));
        let names: Vec<String> = servers.iter().map(|g| g.to_string()).collect();
        assert_eq!(
            names,
            [
                "socks5 127.0.0.1:1080",
                "http-proxy 127.0.0.1:3128 allow-dest=100.100.0.2:80"
            ]
        );
    }
}
