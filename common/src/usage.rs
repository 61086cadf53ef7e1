//! Command-line parsing failures as one line and a sysexits code, for nexd and nexctl alike.

use std::process::ExitCode;

/// sysexits EX_USAGE.
pub const EX_USAGE: u8 = 64;

/// Parses the command line; on failure prints help/version (exit 0) or a one-line error
/// prefixed with `prog` (exit 64), and returns the code to exit with.
pub fn parse_or_exit<P: clap::Parser>(prog: &str) -> Result<P, ExitCode> {
    use clap::error::ErrorKind;
    match P::try_parse() {
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
            // clap's first paragraph says what is wrong; the rest is usage boilerplate.
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{prog}: {}", first.join(" ").trim_start_matches("error: "));
            Err(ExitCode::from(EX_USAGE))
        }
    }
}
