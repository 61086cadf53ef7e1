//! Persistent state: rules and peers changed at runtime, restored at the next start.
//!
//! One JSON file in the state directory (0700), mode 0600, replaced atomically: write a temp
//! file, fsync it, rename over the old one, fsync the directory. A kill at any moment leaves
//! either the old or the new file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// A peer added at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPeer {
    /// Base64 public key.
    pub public_key: String,
    /// CIDRs.
    pub allowed_ips: Vec<String>,
    /// host:port, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Keepalive seconds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
    /// Base64 preshared key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
}

/// Everything changed at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version.
    #[serde(default = "version_one")]
    pub version: u32,
    /// Public key of the interface this state belongs to (base64); absent in files written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Rules added at runtime, as `direction rule` lines.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Peers added at runtime.
    #[serde(default)]
    pub added_peers: Vec<SavedPeer>,
    /// Public keys of configured peers removed at runtime.
    #[serde(default)]
    pub removed_peers: Vec<String>,
    /// Allow-lists of runtime rules that have one, keyed by the rule's line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_peers: BTreeMap<String, Vec<String>>,
}

fn version_one() -> u32 {
    1
}

impl Default for State {
    fn default() -> Self {
        State {
            version: version_one(),
            interface: None,
            rules: Vec::new(),
            added_peers: Vec::new(),
            removed_peers: Vec::new(),
            allowed_peers: BTreeMap::new(),
        }
    }
}

impl State {
    /// Records a peer added or changed at runtime: it overrides the config file's, and is no
    /// longer removed.
    pub fn record_runtime_peer(&mut self, peer: SavedPeer) {
        self.removed_peers.retain(|k| *k != peer.public_key);
        self.added_peers.retain(|p| p.public_key != peer.public_key);
        self.added_peers.push(peer);
    }
}

/// Why the state could not be read or written; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O failure.
    #[error("state file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid state JSON.
    #[error("state file {path} is corrupt: {reason}; fix or remove it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The state file of one state directory.
pub struct StateStore {
    dir: PathBuf,
    path: PathBuf,
}

impl StateStore {
    /// Uses `dir`, creating it 0700 if missing.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<State, StateError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        parse(&text).map_err(|reason| StateError::Corrupt {
            path: self.path.clone(),
            reason,
        })
    }

    /// Replaces the state file atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&json).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

/// Parses and validates state JSON.
pub fn parse(text: &str) -> Result<State, String> {
    // serde would also accept a JSON array as a struct; the format is an object.
    if !text.trim_start().starts_with('{') {
        return Err("expected a JSON object".into());
    }
    let state: State = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if state.version != 1 {
        return Err(format!("unsupported version {}", state.version));
    }
    for r in &state.rules {
        r.parse::<nexd_common::ProxyRule>()
            .map_err(|e| format!("rule {r:?}: {e}"))?;
    }
    for p in &state.added_peers {
        p.public_key
            .parse::<nexd_common::Key>()
            .map_err(|e| format!("peer {:?}: {e}", p.public_key))?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = StateStore::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let s = State {
            version: 1,
            interface: Some("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into()),
            rules: vec!["egress tcp:5432:100.100.0.2:5432".into()],
            added_peers: vec![],
            removed_peers: vec![],
            allowed_peers: BTreeMap::new(),
        };
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        store.save(&State::default()).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        use std::os::unix::fs::PermissionsExt;
        let fmode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        let dmode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!((fmode, dmode), (0o600, 0o700));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        for bad in [
            "{",
            "[]",
            "{\"rules\":[\"sideways x\"]}",
            "{\"version\":9}",
            "{\"bogus\":1}",
        ] {
            fs::write(store.path(), bad).unwrap();
            let e = store.load().unwrap_err().to_string();
            assert!(e.contains(&store.path().display().to_string()), "{e}");
            assert!(e.contains("corrupt"), "{e}");
        }
    }
}
