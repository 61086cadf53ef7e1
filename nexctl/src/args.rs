//! What `proxy add` and `proxy remove` act on, checked before nexd is called so that bad
//! input is reported as such: 65 for a value that does not parse, 64 for an option that
//! does not apply to the rule or server given.

use crate::cli::{AddArgs, TargetArg};
use crate::{Failure, EX_DATAERR, EX_USAGE};
use nexd_common::limits::quote_prefix;
use nexd_common::{allow, gateway};
use nexd_common::{
    Direction, Gateway, GatewayKind, GatewaySpec, Protocol, ProxyProtocol, ProxyRule, Rule,
    RuleSpec,
};

/// A proxy rule or a proxy server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--ingress` / `--egress`.
    Rule(RuleSpec),
    /// `--socks5` / `--http-proxy`.
    Server(GatewaySpec),
}

/// `proxy remove`: the rule or server alone (allow-lists play no part in removing).
pub fn target(arg: &TargetArg) -> Result<Target, Failure> {
    let given = [
        arg.ingress.as_ref().map(|t| ("--ingress", t)),
        arg.egress.as_ref().map(|t| ("--egress", t)),
        arg.socks5.as_ref().map(|t| ("--socks5", t)),
        arg.http_proxy.as_ref().map(|t| ("--http-proxy", t)),
    ];
    let mut given = given.into_iter().flatten();
    let (Some((flag, text)), None) = (given.next(), given.next()) else {
        return Err(Failure::new(
            EX_USAGE,
            "give exactly one of --ingress, --egress, --socks5 or --http-proxy",
        ));
    };
    let kind = match flag {
        "--ingress" => return rule(Direction::Ingress, flag, text),
        "--egress" => return rule(Direction::Egress, flag, text),
        "--socks5" => GatewayKind::Socks5,
        _ => GatewayKind::Http,
    };
    let listen = gateway::parse_listen(text)
        .map_err(|e| Failure::new(EX_DATAERR, format!("{flag}: {e}")))?;
    Ok(Target::Server(GatewaySpec::from(Gateway { kind, listen })))
}

fn rule(direction: Direction, flag: &str, text: &str) -> Result<Target, Failure> {
    let invalid =
        |e: &dyn std::fmt::Display| format!("invalid {flag} rule {}: {e}", quote_prefix(text));
    let rule: Rule = text
        .parse()
        .map_err(|e| Failure::new(EX_DATAERR, invalid(&e)))?;
    let rule = ProxyRule { direction, rule };
    rule.validate()
        .map_err(|e| Failure::new(EX_DATAERR, invalid(&e)))?;
    Ok(Target::Rule(RuleSpec::from(rule)))
}

/// `proxy add`: the rule or server with what it admits; `--allow-peer` and
/// `--proxy-protocol` go with ingress rules, `--allow-dest` with servers.
pub fn add_target(arg: &AddArgs) -> Result<Target, Failure> {
    match target(&arg.target)? {
        Target::Rule(mut spec) => {
            if !arg.allow_dest.is_empty() {
                return Err(Failure::new(
                    EX_USAGE,
                    "--allow-dest applies to --socks5 and --http-proxy servers only",
                ));
            }
            if spec.rule.direction == Direction::Egress && !arg.allow_peer.is_empty() {
                return Err(Failure::new(
                    EX_USAGE,
                    "--allow-peer applies to --ingress rules only",
                ));
            }
            spec.allowed_peers = allow::parse_list(&arg.allow_peer)
                .map_err(|e| Failure::new(EX_DATAERR, format!("--allow-peer: {e}")))?;
            if let Some(v) = &arg.proxy_protocol {
                let r = spec.rule;
                if r.direction != Direction::Ingress || r.rule.protocol != Protocol::Tcp {
                    return Err(Failure::new(
                        EX_USAGE,
                        "--proxy-protocol applies to TCP --ingress rules only",
                    ));
                }
                spec.proxy_protocol = Some(
                    v.parse::<ProxyProtocol>()
                        .map_err(|e| Failure::new(EX_DATAERR, format!("--proxy-protocol: {e}")))?,
                );
            }
            Ok(Target::Rule(spec))
        }
        Target::Server(mut spec) => {
            for (given, flag) in [
                (!arg.allow_peer.is_empty(), "--allow-peer"),
                (arg.proxy_protocol.is_some(), "--proxy-protocol"),
            ] {
                if given {
                    return Err(Failure::new(
                        EX_USAGE,
                        format!("{flag} applies to --ingress rules only"),
                    ));
                }
            }
            spec.allow = gateway::parse_dest_list(&arg.allow_dest)
                .map_err(|e| Failure::new(EX_DATAERR, format!("--allow-dest: {e}")))?;
            Ok(Target::Server(spec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, NexdCommand, ProxyCommand};
    use clap::Parser as _;

    /// `nexctl nexd proxy add|remove ARGS`, parsed and checked.
    fn parse(words: &[&str]) -> Result<Target, (u8, String)> {
        let mut argv = vec!["nexctl", "nexd", "proxy"];
        argv.extend(words);
        let cli = Cli::try_parse_from(&argv).map_err(|e| (64, e.to_string()))?;
        let r = match cli.command {
            Command::Nexd {
                command: NexdCommand::Proxy { command },
            } => match command {
                ProxyCommand::Add(a) => add_target(&a),
                ProxyCommand::Remove(t) => target(&t),
                ProxyCommand::List => unreachable!(),
            },
            _ => unreachable!(),
        };
        r.map_err(|f| (f.code, f.message))
    }

    fn shown(t: Target) -> String {
        match t {
            Target::Rule(r) => r.to_string(),
            Target::Server(s) => s.to_string(),
        }
    }

    #[test]
    fn servers_and_rules_with_what_they_admit() {
        for (words, want) in [
            (&["add", "--socks5", "1080"][..], "socks5 127.0.0.1:1080"),
            (
                &[
                    "add",
                    "--http-proxy",
                    "[::1]:3128",
                    "--allow-dest",
                    "100.100.0.0/24,100.100.0.9:22",
                    "--allow-dest",
                    "fd00::/64",
                ],
                "http-proxy [::1]:3128 allow-dest=100.100.0.0/24,100.100.0.9:22,fd00::/64",
            ),
            (
                &["remove", "--socks5", "127.0.0.1:1080"],
                "socks5 127.0.0.1:1080",
            ),
            (
                &[
                    "add",
                    "--ingress",
                    "tcp:443:127.0.0.1:8080",
                    "--proxy-protocol",
                    "v2",
                ],
                "ingress tcp:443:127.0.0.1:8080 proxy-protocol=v2",
            ),
            (
                &["add", "--egress", "tcp:5432:100.100.0.2:5432"],
                "egress tcp:5432:100.100.0.2:5432",
            ),
        ] {
            match parse(words) {
                Ok(t) => assert_eq!(shown(t), want, "{words:?}"),
                Err(e) => panic!("{words:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn options_that_do_not_apply_are_64_and_bad_values_65() {
        for (words, code, want) in [
            (
                &["add", "--socks5", "0"][..],
                65,
                "--socks5: invalid listen address \"0\"",
            ),
            (
                &["add", "--http-proxy", "localhost:3128"],
                65,
                "\"localhost:3128\"",
            ),
            (
                &["add", "--socks5", "1080", "--allow-dest", "10.0.0.0/33"],
                65,
                "--allow-dest: invalid destination \"10.0.0.0/33\"",
            ),
            (
                &[
                    "add",
                    "--ingress",
                    "tcp:1:127.0.0.1:1",
                    "--proxy-protocol",
                    "v3",
                ],
                65,
                "\"v3\"",
            ),
            (
                &[
                    "add",
                    "--egress",
                    "tcp:1:100.100.0.2:1",
                    "--allow-dest",
                    "10.0.0.0/8",
                ],
                64,
                "--allow-dest applies",
            ),
            (
                &[
                    "add",
                    "--egress",
                    "tcp:1:100.100.0.2:1",
                    "--proxy-protocol",
                    "v1",
                ],
                64,
                "TCP --ingress rules only",
            ),
            (
                &[
                    "add",
                    "--ingress",
                    "udp:53:127.0.0.1:53",
                    "--proxy-protocol",
                    "v1",
                ],
                64,
                "TCP --ingress rules only",
            ),
            (
                &["add", "--socks5", "1080", "--proxy-protocol", "v1"],
                64,
                "--proxy-protocol applies",
            ),
            (
                &["add", "--socks5", "1080", "--allow-peer", "100.100.0.2"],
                64,
                "--allow-peer applies",
            ),
            (
                &["add", "--socks5", "1080", "--http-proxy", "3128"],
                64,
                "cannot be used",
            ),
            (
                &["remove", "--socks5", "1080", "--allow-dest", "10.0.0.0/8"],
                64,
                "--allow-dest",
            ),
            (&["add"], 64, "--socks5"),
        ] {
            match parse(words) {
                Ok(t) => panic!("{words:?} accepted: {t:?}"),
                Err((c, m)) => {
                    assert_eq!(c, code, "{words:?}: {m}");
                    assert!(m.contains(want), "{words:?}: {m:?} lacks {want:?}");
                }
            }
        }
    }
}
