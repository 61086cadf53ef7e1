//! Reload (SIGHUP, `nexctl nexd reload`): re-read the config file and apply what changed in
//! its peers. Peers that did not change keep their sessions and flows; a changed peer is
//! replaced (its flows continue once the new session is up). Runtime changes made through
//! the API (peers added or removed, kept in the state file) win over the file, as they do at
//! start. An invalid file changes nothing.

use crate::api::RuntimeState;
use crate::engine::EngineHandle;
use crate::proxy::{load_config, resolve_endpoints};
use nexd_common::{Key, NetworkConfig, PeerConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// What a reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Peers new in the file.
    pub added: usize,
    /// Peers gone from the file.
    pub removed: usize,
    /// Peers whose settings changed (replaced).
    pub changed: usize,
    /// Changes that need a restart, and peers that could not be applied.
    pub warnings: Vec<String>,
}

/// The config file and what was last applied from it.
pub struct Reloader {
    path: PathBuf,
    applied: Mutex<NetworkConfig>,
    /// `--socks5-auth-file` and the credentials in force, re-read on reload.
    socks5_auth: Option<(PathBuf, crate::gateway::CredentialsCell)>,
}

impl Reloader {
    /// `applied` is the configuration nexd started with (as read from `path`).
    pub fn new(path: &Path, applied: NetworkConfig) -> Self {
        Reloader {
            path: path.to_path_buf(),
            applied: Mutex::new(applied),
            socks5_auth: None,
        }
    }

    /// Re-reads `path` into `cell` on every reload too: a file nexd refuses keeps the
    /// credentials in force, with a warning.
    pub fn with_socks5_auth(mut self, path: &Path, cell: crate::gateway::CredentialsCell) -> Self {
        self.socks5_auth = Some((path.to_path_buf(), cell));
        self
    }

    /// Re-reads the SOCKS5 credentials file, if there is one; a warning when it is refused.
    async fn reload_socks5_auth(&self) -> Option<String> {
        let (path, cell) = self.socks5_auth.as_ref()?;
        let p = path.clone();
        let loaded =
            tokio::task::spawn_blocking(move || crate::gateway::auth::Credentials::load(&p)).await;
        match loaded {
            Ok(Ok(c)) => {
                cell.set(c);
                tracing::info!(file = %path.display(), "SOCKS5 credentials re-read");
                None
            }
            Ok(Err(e)) => Some(format!(
                "--socks5-auth-file: {e}; the previous credentials stay in force"
            )),
            Err(e) => Some(format!("--socks5-auth-file: {e}")),
        }
    }

    /// Public keys of the peers in the config file as last read.
    pub async fn config_peers(&self) -> Vec<Key> {
        self.applied
            .lock()
            .await
            .peers
            .iter()
            .map(|p| p.public_key)
            .collect()
    }

    /// Re-reads the file and applies its peer changes; `Err` (nothing changed) when the
    /// file cannot be read or is invalid.
    pub async fn reload(
        &self,
        engine: &EngineHandle,
        runtime: &Mutex<RuntimeState>,
    ) -> Result<ReloadReport, String> {
        if self.path.as_os_str() == "-" {
            return Err(
                "the config was read from standard input: nothing to re-read (restart nexd)".into(),
            );
        }
        let path = self.path.clone();
        let new = tokio::task::spawn_blocking(move || {
            let cfg = load_config(&path).map_err(|f| f.message)?;
            let endpoints = resolve_endpoints(&cfg).map_err(|f| f.message)?;
            Ok::<_, String>((cfg, endpoints))
        })
        .await
        .map_err(|e| format!("reload: {e}"))??;
        let (new, endpoints) = new;
        // Only once the config file is known good: an invalid file changes nothing.
        let auth_warning = self.reload_socks5_auth().await;
        // Held across the engine calls: API changes and reloads apply in one order.
        let rt = runtime.lock().await;
        let mut applied = self.applied.lock().await;
        let runtime_owned = |k: &Key| {
            let s = k.to_string();
            rt.state.added_peers.iter().any(|p| p.public_key == s)
                || rt.state.removed_peers.contains(&s)
        };
        let old_peers: HashMap<Key, &PeerConfig> =
            applied.peers.iter().map(|p| (p.public_key, p)).collect();
        let mut report = ReloadReport {
            warnings: interface_changes(&applied, &new),
            ..ReloadReport::default()
        };
        report.warnings.extend(auth_warning);
        for (peer, endpoint) in new.peers.iter().zip(endpoints) {
            if runtime_owned(&peer.public_key) {
                continue;
            }
            let short = short_key(&peer.public_key);
            match old_peers.get(&peer.public_key) {
                Some(old) if *old == peer => continue,
                Some(_) => {
                    // Replace: remove may fail only if the peer is already gone.
                    let _ = engine.remove_peer(peer.public_key).await;
                    match engine.add_peer(peer.clone(), endpoint, false).await {
                        Ok(()) => report.changed += 1,
                        Err(e) => report.warnings.push(format!("peer {short}: {e}")),
                    }
                }
                None => match engine.add_peer(peer.clone(), endpoint, false).await {
                    Ok(()) => report.added += 1,
                    Err(e) => report.warnings.push(format!("peer {short}: {e}")),
                },
            }
        }
        for old in applied.peers.iter() {
            let gone = !new.peers.iter().any(|p| p.public_key == old.public_key);
            if gone && !runtime_owned(&old.public_key) {
                match engine.remove_peer(old.public_key).await {
                    Ok(()) => report.removed += 1,
                    Err(e) => report
                        .warnings
                        .push(format!("peer {}: {e}", short_key(&old.public_key))),
                }
            }
        }
        // The interface part stays as running; only the peers are taken from the new file.
        let interface = (*applied).clone();
        *applied = NetworkConfig {
            peers: new.peers,
            peer_lines: new.peer_lines,
            ..interface
        };
        Ok(report)
    }
}

/// Logs what a reload did, naming what asked for it.
pub fn log_report(r: &ReloadReport, by: &str) {
    tracing::info!(
        by,
        added = r.added,
        removed = r.removed,
        changed = r.changed,
        "config reloaded"
    );
    for w in &r.warnings {
        tracing::warn!("reload: {w}");
    }
}

/// `[Interface]` settings that differ: they need a restart.
fn interface_changes(old: &NetworkConfig, new: &NetworkConfig) -> Vec<String> {
    let mut keys = Vec::new();
    if old.private_key != new.private_key {
        keys.push("PrivateKey");
    }
    if old.addresses != new.addresses {
        keys.push("Address");
    }
    if old.listen_port != new.listen_port {
        keys.push("ListenPort");
    }
    if old.mtu != new.mtu {
        keys.push("MTU");
    }
    if keys.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "[Interface] {} changed: not applied, takes effect at the next start",
        keys.join(", ")
    )]
}

/// A public key's first characters, as logs name peers.
pub fn short_key(k: &Key) -> String {
    let s = k.to_string();
    format!("{}…", &s[..8.min(s.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> NetworkConfig {
        NetworkConfig::parse(text).unwrap()
    }

    const K: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    #[test]
    fn interface_changes_are_named_and_peer_changes_are_not() {
        let a = cfg(&format!(
            "[Interface]\nPrivateKey = {K}\nAddress = 10.0.0.1/32\n"
        ));
        assert!(interface_changes(&a, &a).is_empty());
        let b = cfg(&format!(
            "[Interface]\nPrivateKey = {K}\nAddress = 10.0.0.2/32\nListenPort = 5000\n"
        ));
        let w = interface_changes(&a, &b);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("Address, ListenPort"), "{w:?}");
    }
}
