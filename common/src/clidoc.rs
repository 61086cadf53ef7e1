//! Shell completions and man pages, generated from a binary's clap definitions, so the
//! documentation cannot drift from the parser.

use std::io::Write;
use std::path::Path;

/// The shells completions can be written for.
pub use clap_complete::Shell;

/// Writes `shell`'s completion script for `cmd` to `out`.
pub fn completions(
    mut cmd: clap::Command,
    shell: clap_complete::Shell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)?;
    out.flush()
}

/// Writes `NAME.1` and one `NAME-SUBCOMMAND.1` page per visible subcommand (recursively)
/// into `dir`, creating it if needed.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
}
