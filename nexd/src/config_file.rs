//! Reading the wg-quick style configuration: from a file or stdin (`--config -`), with the
//! private key inline or in a `PrivateKeyFile`, warning (as wg-quick does) about a key file,
//! or a config file holding a PrivateKey or PresharedKey, that group or others may read.
//!
//! Reads are bounded ([`MAX_CONFIG_BYTES`], [`MAX_KEY_FILE_BYTES`]): `--config /dev/zero`
//! is an error, not an out-of-memory kill. A peer with the node's own public key is refused.
//!
//! Parsing stays pure in nexd-common ([`NetworkConfig::parse_with`]); this module does the I/O.

use crate::bounded_read::{read_file, read_text, BoundedReadError};
use crate::proxy::Fatal;
use nexd_common::file_limits::{MAX_CONFIG_BYTES, MAX_KEY_FILE_BYTES};
use nexd_common::NetworkConfig;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;

/// sysexits: cannot open input.
const EX_NOINPUT: u8 = 66;
/// sysexits: configuration error.
const EX_CONFIG: u8 = 78;

/// The `--config` value that means standard input.
pub const STDIN: &str = "-";

/// Permission warnings wait until nexd is running: a start that fails must still print
/// exactly one line, the error.
static DEFERRED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Reads and parses the configuration at `path`, or stdin when `path` is `-`. A relative
/// `PrivateKeyFile` is taken relative to the config file's directory (the current directory
/// for stdin).
pub fn load(path: &Path) -> Result<NetworkConfig, Fatal> {
    let from_stdin = path.as_os_str() == STDIN;
    let name = if from_stdin {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    };
    let read = if from_stdin {
        read_text(std::io::stdin().lock(), MAX_CONFIG_BYTES)
    } else {
        read_file(path, MAX_CONFIG_BYTES)
    };
    let text = read.map_err(|e| match e {
        BoundedReadError::Io(e) => fatal(EX_NOINPUT, format!("cannot read config {name}: {e}")),
        e => fatal(EX_CONFIG, format!("config {name}: {e}")),
    })?;
    let base = if from_stdin {
        PathBuf::new()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut key_file = None;
    let cfg = NetworkConfig::parse_with(&text, |p| {
        let full = base.join(p);
        key_file = Some(full.clone());
        read_file(&full, MAX_KEY_FILE_BYTES).map_err(|e| match e {
            BoundedReadError::Io(e) => format!("cannot read {}: {e}", full.display()),
            e => format!("{}: {e}", full.display()),
        })
    })
    .map_err(|e| fatal(EX_CONFIG, format!("config {name}: {e}")))?;
    let own = crate::keys::public(&cfg.private_key);
    if let Some(i) = cfg.peers.iter().position(|p| p.public_key == own) {
        let line = cfg.peer_lines.get(i).copied().unwrap_or(0);
        return Err(fatal(
            EX_CONFIG,
            format!(
                "config {name}: line {line}: peer {own} is this interface's own public key; \
                 a node cannot be its own peer"
            ),
        ));
    }
    for (line, key) in &cfg.ignored {
        warn!("config {name}: line {line}: {key} is for the kernel interface; ignored");
    }
    // As wg-quick: a config others may read gets a warning, sharper when it holds a key.
    let holds_secret = key_file.is_none() || cfg.peers.iter().any(|p| p.preshared_key.is_some());
    if !from_stdin {
        defer_if_accessible(path, holds_secret);
    }
    if let Some(k) = key_file {
        defer_if_accessible(&k, true);
    }
    Ok(cfg)
}

/// Logs the warnings [`load`] held back; call once nexd is up.
pub fn log_deferred_warnings() {
    let pending = match DEFERRED.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(_) => return,
    };
    for w in pending {
        warn!("{w}");
    }
}

/// The wg-quick style warning for a config or key file that group or others may read, if
/// it is one; `secret`: it holds a private or preshared key.
pub fn accessible_warning(path: &Path, mode: u32, secret: bool) -> Option<String> {
    let who = if mode & 0o007 != 0 {
        "world"
    } else if mode & 0o070 != 0 {
        "group"
    } else {
        return None;
    };
    Some(format!(
        "Warning: `{}' is {who} accessible (mode {:04o}){}: chmod 600 it",
        path.display(),
        mode & 0o7777,
        if secret {
            "; it holds a secret key"
        } else {
            ""
        }
    ))
}

fn defer_if_accessible(path: &Path, secret: bool) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if let Some(w) = accessible_warning(path, meta.permissions().mode(), secret) {
        if let Ok(mut v) = DEFERRED.lock() {
            v.push(w);
        }
    }
}

fn fatal(code: u8, message: String) -> Fatal {
    Fatal { message, code }
}

#[cfg(test)]
mod tests {
    use super::accessible_warning;
    use std::path::Path;

    #[test]
    fn warns_for_group_or_world_access_only() {
        let p = Path::new("/etc/nexd/nexd.conf");
        assert_eq!(accessible_warning(p, 0o100600, true), None);
        assert_eq!(accessible_warning(p, 0o100400, true), None);
        let w = accessible_warning(p, 0o100644, true).unwrap();
        assert!(
            w.contains("`/etc/nexd/nexd.conf' is world accessible"),
            "{w}"
        );
        let w = accessible_warning(p, 0o100640, false).unwrap();
        assert!(w.contains("is group accessible"), "{w}");
    }
}
