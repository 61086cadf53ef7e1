//! Command-line parsing failures as one line and a sysexits code, for nexd and nexctl alike.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use std::process::ExitCode;

/// sysexits EX_USAGE.
pub const EX_USAGE: u8 = 64;

/// `P`'s command with its global options listed once, in the top-level help: every
/// subcommand gets a hidden copy of each global option (so it is still accepted after the
/// subcommand, and clap does not propagate a visible one) and a line pointing at the
/// top-level help.
pub fn command<P: clap::CommandFactory>() -> clap::Command {
    let cmd = P::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    if globals.is_empty() {
        return cmd;
    }
    let names: Vec<String> = globals
        .iter()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let note = format!(
        "Global options ({}): see '{} --help'",
        names.join(", "),
        cmd.get_name()
    );
    hide_globals(cmd, &globals, &note)
}

fn hide_globals(cmd: clap::Command, globals: &[clap::Arg], note: &str) -> clap::Command {
    cmd.mut_subcommands(|sc| {
        let mut sc = globals.iter().fold(sc, |sc, a| {
            if sc.get_arguments().any(|x| x.get_id() == a.get_id()) {
                sc
            } else {
                sc.arg(a.clone().hide(true))
            }
        });
        if sc.get_after_help().is_none() {
            sc = sc.after_help(note.to_string());
        }
        hide_globals(sc, globals, note)
    })
}

/// Parses the command line; on failure prints help/version (exit 0) or a one-line error
/// prefixed with `prog` (exit 64), and returns the code to exit with.
pub fn parse_or_exit<P: clap::Parser>(prog: &str) -> Result<P, ExitCode> {
    let mut cmd = command::<P>();
    let parsed = cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut m| P::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd)));
    match parsed {
        Ok(p) => Ok(p),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Err(ExitCode::from(EX_USAGE))
        }
        Err(e) => {
            eprintln!("{prog}: {}", one_line(&e));
            Err(ExitCode::from(EX_USAGE))
        }
    }
}

/// clap's error as one line: its first paragraph (what is wrong), plus clap's suggestion
/// for a typo, if any ("did you mean 'proxy'?"); the usage boilerplate is dropped.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let mut line = first.join(" ").trim_start_matches("error: ").to_string();
    if let Some(s) = suggestion(e) {
        line.push_str("; ");
        line.push_str(&s);
    }
    line
}

/// "did you mean 'x'?" from clap's similar-name suggestions.
fn suggestion(e: &clap::Error) -> Option<String> {
    let kinds = [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ];
    kinds.into_iter().find_map(|k| match e.get(k)? {
        ContextValue::String(s) => Some(format!("did you mean '{s}'?")),
        ContextValue::Strings(v) if !v.is_empty() => {
            let quoted: Vec<String> = v.iter().map(|s| format!("'{s}'")).collect();
            Some(format!("did you mean {}?", quoted.join(" or ")))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser, Debug)]
    #[command(name = "demo")]
    struct Demo {
        /// A global flag
        #[arg(long, global = true)]
        sock: Option<String>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand, Debug)]
    enum Cmd {
        Proxy,
        Status,
    }

    fn parse(args: &[&str]) -> Result<Demo, clap::Error> {
        let mut cmd = command::<Demo>();
        let mut m = cmd.try_get_matches_from_mut(args)?;
        <Demo as clap::FromArgMatches>::from_arg_matches_mut(&mut m)
    }

    #[test]
    fn typos_get_a_suggestion_on_the_one_line() {
        let e = parse(&["demo", "proxi"]).unwrap_err();
        let line = one_line(&e);
        assert!(line.contains("did you mean 'proxy'?"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let e = parse(&["demo", "--sok", "x", "status"]).unwrap_err();
        assert!(one_line(&e).contains("did you mean '--sock'?"), "{e}");
    }

    #[test]
    fn globals_are_accepted_after_the_subcommand_but_listed_once() {
        let d = parse(&["demo", "status", "--sock", "/s"]).unwrap();
        assert_eq!(d.sock.as_deref(), Some("/s"));
        let d = parse(&["demo", "--sock", "/t", "proxy"]).unwrap();
        assert_eq!(d.sock.as_deref(), Some("/t"));
        let mut cmd = command::<Demo>();
        let top = cmd.render_long_help().to_string();
        assert!(top.contains("--sock"), "{top}");
        let sub = cmd
            .find_subcommand_mut("status")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!sub.contains("A global flag"), "{sub}");
        assert!(
            sub.contains("Global options (--sock): see 'demo --help'"),
            "{sub}"
        );
    }
}
