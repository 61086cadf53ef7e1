//! nexd: a daemon that joins a WireGuard network entirely in userspace and proxies
//! layer-4 traffic between host sockets and addresses on that network.

use nexd::{cli, keys, proxy};

use std::process::ExitCode;

#[global_allocator]
static ALLOC: nexd::page_alloc::PageAlloc = nexd::page_alloc::PageAlloc;

/// sysexits: command line usage error.
const EX_USAGE: u8 = 64;
/// sysexits: input data incorrect.
const EX_DATAERR: u8 = 65;
/// sysexits: service unavailable.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: cannot create output.
const EX_CANTCREAT: u8 = 73;
/// sysexits: input/output error.
const EX_IOERR: u8 = 74;

fn init_logging(level: Option<&str>, format: cli::LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("invalid RUST_LOG {v:?}: {e}"))?
        }
        _ => {
            let l = level.unwrap_or("info");
            // A bare level applies to nexd only; dependencies stay at warn.
            let spec = if l.contains('=') || l.contains(',') {
                l.to_string()
            } else {
                // boringtun logs session expiry of idle peers at ERROR and names no peer;
                // nexd logs WireGuard events itself, with the peer's key, at sane levels.
                let bt = match l.to_ascii_lowercase().as_str() {
                    "debug" | "trace" => l,
                    _ => "off",
                };
                format!("warn,boringtun={bt},nexd={l}")
            };
            let valid = ["error", "warn", "info", "debug", "trace", "off"];
            if !l.contains('=') && !valid.contains(&l.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "invalid --log-level {l:?}: expected one of {}",
                    valid.join(", ")
                ));
            }
            EnvFilter::try_new(&spec).map_err(|e| format!("invalid --log-level {l:?}: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => builder.json().with_current_span(false).init(),
    }
    Ok(())
}

/// `nexd genkey`.
fn genkey() -> ExitCode {
    match keys::generate() {
        Ok(k) => print_line(&k.to_string()),
        Err(e) => {
            eprintln!("nexd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `nexd pubkey`: private key on stdin, public key on stdout.
fn pubkey() -> ExitCode {
    use std::io::Read as _;
    let mut text = String::new();
    // Two keys' worth is plenty; more is not a key.
    if let Err(e) = std::io::stdin().take(4096).read_to_string(&mut text) {
        eprintln!("nexd: cannot read a private key from stdin: {e}");
        return ExitCode::from(EX_DATAERR);
    }
    match keys::parse_private(&text) {
        Ok(k) => print_line(&keys::public(&k).to_string()),
        Err(e) => {
            eprintln!("nexd: {e}");
            ExitCode::from(EX_DATAERR)
        }
    }
}

/// Prints one line to stdout; a closed stdout is an I/O error, not a panic.
fn print_line(s: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|_| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexd: cannot write to stdout: {e}");
            ExitCode::from(EX_IOERR)
        }
    }
}

fn main() -> ExitCode {
    nexd::fd_limit::raise();
    let cli: cli::Cli = match nexd_common::usage::parse_or_exit("nexd") {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("nexd: {e}");
        return ExitCode::from(EX_USAGE);
    }
    match cli.command {
        cli::Command::Version => {
            println!("nexd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::Genkey => genkey(),
        cli::Command::Pubkey => pubkey(),
        cli::Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = std::io::stdout().lock();
            match nexd_common::clidoc::completions(cli::Cli::command(), shell, &mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nexd: cannot write to stdout: {e}");
                    ExitCode::from(EX_IOERR)
                }
            }
        }
        cli::Command::Man { dir } => {
            match nexd_common::clidoc::man_pages(nexd_common::usage::command::<cli::Cli>(), &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nexd: cannot write man pages to {}: {e}", dir.display());
                    ExitCode::from(EX_CANTCREAT)
                }
            }
        }
        cli::Command::Agent => {
            eprintln!("nexd: agent mode is not yet implemented; use 'nexd proxy'");
            ExitCode::from(EX_UNAVAILABLE)
        }
        cli::Command::Proxy(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("nexd: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let paths = proxy::Paths::resolve(cli.state_dir, cli.unix_socket);
            match rt.block_on(proxy::run(*args, paths)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nexd: {}", e.message);
                    ExitCode::from(e.code)
                }
            }
        }
    }
}
