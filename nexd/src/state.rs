//! Persistent state: rules, proxy servers and peers changed at runtime, restored at the next
//! start.
//!
//! One JSON file in the state directory (0700), mode 0600, replaced atomically: write a temp
//! file, fsync it, rename over the old one, fsync the directory. A kill at any moment leaves
//! either the old or the new file.
//!
//! The directory is trusted only if no other user can write it ([`crate::safe_dir`]); even
//! so, nexd never follows a symlink there: the state file is opened with `O_NOFOLLOW`, and
//! the temp file gets a random name and is created with `O_CREAT|O_EXCL|O_NOFOLLOW`.

use crate::bounded_read::{read_text, BoundedReadError};
use nexd_common::file_limits::{
    clip, MAX_ALLOWED_IPS, MAX_ALLOW_LIST, MAX_DEST_LIST, MAX_FIELD_LEN, MAX_PEERS,
    MAX_PROXY_SERVERS, MAX_RULES, MAX_STATE_BYTES,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// Temp files are `.state.json.<16 hex digits>.tmp`.
const TMP_PREFIX: &str = ".state.json.";
/// See [`TMP_PREFIX`].
const TMP_SUFFIX: &str = ".tmp";

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
    /// PROXY protocol versions (`v1`, `v2`) of runtime rules that send a header, keyed by the
    /// rule's line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_protocol: BTreeMap<String, String>,
    /// Proxy servers added at runtime, as `kind listen` lines (`socks5 127.0.0.1:1080`).
    /// Absent when empty, so a file without servers stays readable by older nexd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Destination allow-lists of runtime servers that have one, keyed by the server's line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_allow: BTreeMap<String, Vec<String>>,
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
            proxy_protocol: BTreeMap::new(),
            servers: Vec::new(),
            server_allow: BTreeMap::new(),
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
    /// The directory is one another user could write (or cannot be checked).
    #[error("{0}")]
    Unsafe(String),
    /// The file is a symlink, not a regular file, or too large.
    #[error("state file {path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
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
    /// Uses `dir`, creating it 0700 if missing; refuses a directory another user could
    /// write ([`StateError::Unsafe`]).
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
        crate::safe_dir::check(dir, "state directory", false).map_err(StateError::Unsafe)?;
        remove_stale_temp_files(dir);
        Ok(StateStore {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is an empty state. A symlink, anything but a regular
    /// file, or a file over [`MAX_STATE_BYTES`] is refused.
    pub fn load(&self) -> Result<State, StateError> {
        let refused = |reason: String| StateError::Refused {
            path: self.path.clone(),
            reason,
        };
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused(
                    "is a symbolic link; refusing to follow it (remove it)".into(),
                ))
            }
            Err(source) => return Err(io(source)),
        };
        if !file.metadata().map_err(io)?.is_file() {
            return Err(refused("is not a regular file".into()));
        }
        let text = match read_text(file, MAX_STATE_BYTES) {
            Ok(t) => t,
            Err(BoundedReadError::Io(source)) => return Err(io(source)),
            Err(e @ BoundedReadError::TooLarge { .. }) => return Err(refused(e.to_string())),
            Err(BoundedReadError::NotText) => {
                return Err(StateError::Corrupt {
                    path: self.path.clone(),
                    reason: "not UTF-8 text".into(),
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
        let json = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        // A fresh random name, created exclusively and never through a symlink: whatever
        // sits in the directory is never opened for writing.
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{:016x}{TMP_SUFFIX}",
            rand::random::<u64>()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let written = f
            .write_all(&json)
            .and_then(|_| f.sync_all())
            .map_err(io(&tmp));
        drop(f);
        if let Err(e) = written.and_then(|_| fs::rename(&tmp, &self.path).map_err(io(&self.path))) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

/// Removes temp files a crash left between create and rename. Only names nexd makes are
/// touched, only regular files, and `remove_file` unlinks a name without following it.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_ours = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|n| n.strip_suffix(TMP_SUFFIX))
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_ours && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Refuses a string longer than [`MAX_FIELD_LEN`], quoting only its start.
fn check_len(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_FIELD_LEN {
        return Err(format!(
            "{what} {:?} is longer than {MAX_FIELD_LEN} bytes",
            clip(s)
        ));
    }
    Ok(())
}

/// Refuses a list longer than `max`.
fn check_count(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        return Err(format!("more than {max} {what} ({n})"));
    }
    Ok(())
}

/// Checks every count and string length against the caps, before anything is parsed
/// further (and before an error could quote a huge value).
fn check_sizes(state: &State) -> Result<(), String> {
    check_count("rules", state.rules.len(), MAX_RULES)?;
    check_count("added peers", state.added_peers.len(), MAX_PEERS)?;
    check_count("removed peers", state.removed_peers.len(), MAX_PEERS)?;
    check_count("allow-lists", state.allowed_peers.len(), MAX_RULES)?;
    if let Some(k) = &state.interface {
        check_len("interface", k)?;
    }
    for r in &state.rules {
        check_len("rule", r)?;
    }
    for k in &state.removed_peers {
        check_len("removed peer", k)?;
    }
    for p in &state.added_peers {
        check_len("peer", &p.public_key)?;
        check_count(
            "allowed IPs of a peer",
            p.allowed_ips.len(),
            MAX_ALLOWED_IPS,
        )?;
        for s in p
            .allowed_ips
            .iter()
            .chain(p.endpoint.iter())
            .chain(p.preshared_key.iter())
        {
            check_len("peer field", s)?;
        }
    }
    for (rule, list) in &state.allowed_peers {
        check_len("allow-list rule", rule)?;
        check_count("allow-list entries of a rule", list.len(), MAX_ALLOW_LIST)?;
        for e in list {
            check_len("allow-list entry", e)?;
        }
    }
    check_count(
        "PROXY protocol settings",
        state.proxy_protocol.len(),
        MAX_RULES,
    )?;
    for (rule, v) in &state.proxy_protocol {
        check_len("PROXY protocol rule", rule)?;
        check_len("PROXY protocol version", v)?;
    }
    check_count("servers", state.servers.len(), MAX_PROXY_SERVERS)?;
    check_count(
        "server allow-lists",
        state.server_allow.len(),
        MAX_PROXY_SERVERS,
    )?;
    for g in &state.servers {
        check_len("server", g)?;
    }
    for (server, list) in &state.server_allow {
        check_len("server allow-list server", server)?;
        check_count("allow-dest entries of a server", list.len(), MAX_DEST_LIST)?;
        for e in list {
            check_len("allow-dest entry", e)?;
        }
    }
    Ok(())
}

/// Checks the proxy servers and PROXY protocol settings parse, and that a PROXY protocol
/// setting belongs to a TCP ingress rule, so a restart never fails half-way through them.
fn check_servers_and_proxy_protocol(state: &State) -> Result<(), String> {
    for g in &state.servers {
        g.parse::<nexd_common::Gateway>()
            .map_err(|e| format!("server {:?}: {}", clip(g), clip(&e.to_string())))?;
    }
    for (g, list) in &state.server_allow {
        let n = nexd_common::gateway::parse_dest_list(list)
            .map_err(|e| format!("server {:?}: {}", clip(g), clip(&e.to_string())))?
            .len();
        check_count("allow-dest entries of a server", n, MAX_DEST_LIST)?;
    }
    for (line, v) in &state.proxy_protocol {
        let bad = |e: String| format!("PROXY protocol of rule {:?}: {}", clip(line), clip(&e));
        v.parse::<nexd_common::ProxyProtocol>()
            .map_err(|e| bad(e.to_string()))?;
        if let Ok(r) = line.parse::<nexd_common::ProxyRule>() {
            if r.direction != nexd_common::Direction::Ingress
                || r.rule.protocol != nexd_common::Protocol::Tcp
            {
                return Err(bad("only TCP ingress rules send one".into()));
            }
        }
    }
    Ok(())
}

/// Parses and validates state JSON.
pub fn parse(text: &str) -> Result<State, String> {
    // serde would also accept a JSON array as a struct; the format is an object.
    if !text.trim_start().starts_with('{') {
        return Err("expected a JSON object".into());
    }
    let state: State = serde_json::from_str(text).map_err(|e| {
        // serde quotes unknown fields and mistyped values whole: keep the start and the place.
        let full = e.to_string();
        match clip(&full) {
            short if short == full => full,
            short => format!("{short} at line {} column {}", e.line(), e.column()),
        }
    })?;
    if state.version != 1 {
        return Err(format!("unsupported version {}", state.version));
    }
    check_sizes(&state)?;
    for r in &state.rules {
        r.parse::<nexd_common::ProxyRule>()
            .map_err(|e| format!("rule {:?}: {}", clip(r), clip(&e.to_string())))?;
    }
    for p in &state.added_peers {
        p.public_key
            .parse::<nexd_common::Key>()
            .map_err(|e| format!("peer {:?}: {e}", clip(&p.public_key)))?;
    }
    check_servers_and_proxy_protocol(&state)?;
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
            ..State::default()
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
    fn servers_and_proxy_protocol_round_trip_and_are_omitted_when_empty() {
        let rule = "ingress tcp:443:127.0.0.1:8080".to_string();
        let s = State {
            rules: vec![rule.clone()],
            proxy_protocol: BTreeMap::from([(rule, "v2".to_string())]),
            servers: vec![
                "socks5 127.0.0.1:1080".into(),
                "http-proxy [::1]:3128".into(),
            ],
            server_allow: BTreeMap::from([(
                "socks5 127.0.0.1:1080".to_string(),
                vec![
                    "100.100.0.0/24".to_string(),
                    "[fd00::/64]:80-90".to_string(),
                ],
            )]),
            ..State::default()
        };
        let json = serde_json::to_string_pretty(&s).unwrap();
        assert_eq!(parse(&json), Ok(s));
        // Empty, the new fields are not written: older nexd reads the file still.
        let json = serde_json::to_string(&State::default()).unwrap();
        for field in ["proxy_protocol", "servers", "server_allow"] {
            assert!(!json.contains(field), "{json}");
        }
        // A file written before they existed loads.
        let old = r#"{"version":1,"rules":["egress tcp:1:100.100.0.2:1"],"added_peers":[],"removed_peers":[]}"#;
        assert!(parse(old).unwrap().servers.is_empty());
    }

    #[test]
    fn bad_servers_and_proxy_protocol_are_refused_in_one_line() {
        let long = "9".repeat(3000);
        let many = vec!["socks5 1080"; MAX_PROXY_SERVERS + 1];
        for (text, want) in [
            (r#"{"servers":["socks5 0"]}"#.to_string(), "\"0\""),
            (r#"{"servers":["ftp 127.0.0.1:21"]}"#.into(), "\"ftp\""),
            (
                r#"{"server_allow":{"socks5 127.0.0.1:1080":["nowhere"]}}"#.into(),
                "\"nowhere\"",
            ),
            (
                r#"{"rules":["ingress tcp:443:127.0.0.1:8080"],"proxy_protocol":{"ingress tcp:443:127.0.0.1:8080":"v3"}}"#.into(),
                "\"v3\"",
            ),
            (
                r#"{"rules":["egress tcp:443:100.100.0.2:443"],"proxy_protocol":{"egress tcp:443:100.100.0.2:443":"v1"}}"#.into(),
                "TCP ingress",
            ),
            (
                r#"{"proxy_protocol":{"ingress udp:53:127.0.0.1:53":"v1"}}"#.into(),
                "TCP ingress",
            ),
            (
                serde_json::json!({ "servers": many }).to_string(),
                "more than 256 servers",
            ),
            (format!("{{\"servers\":[\"{long}\"]}}"), "longer than"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.len() < 200 && !e.contains('\n'), "{e}");
        }
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

    #[test]
    fn symlinks_are_never_followed_and_temp_names_are_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        let target = tmp.path().join("precious");
        fs::write(&target, "keep me").unwrap();
        // The old fixed temp name, planted as a symlink: never opened.
        let planted = tmp.path().join(".state.json.tmp");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        store.save(&State::default()).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
        assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
        // Only state.json and the planted link: the temp file was renamed.
        let mut names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".state.json.tmp", "precious", "state.json"]);
        // state.json as a symlink is refused, naming it.
        fs::remove_file(store.path()).unwrap();
        std::os::unix::fs::symlink(&target, store.path()).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(e.contains(&store.path().display().to_string()), "{e}");
    }

    #[test]
    fn stale_temp_files_of_ours_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join(".state.json.0123456789abcdef.tmp");
        let other = tmp.path().join(".state.json.tmp");
        fs::write(&ours, "x").unwrap();
        fs::write(&other, "x").unwrap();
        StateStore::open(tmp.path()).unwrap();
        assert!(!ours.exists());
        assert!(other.exists());
    }

    #[test]
    fn oversized_files_counts_and_fields_are_refused_briefly() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::open(tmp.path()).unwrap();
        let f = fs::File::create(store.path()).unwrap();
        f.set_len(MAX_STATE_BYTES + 1).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let many = vec!["egress tcp:1:10.0.0.1:1"; MAX_RULES + 1];
        for (text, want) in [
            (
                format!("{{\"rules\":[\"{long}\"]}}"),
                "longer than 2048 bytes",
            ),
            (
                serde_json::json!({ "rules": many }).to_string(),
                "more than 4096 rules",
            ),
            (format!("{{\"{long}\":1}}"), "unknown field"),
            (format!("{{\"version\":\"{long}\"}}"), "invalid type"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.len() < 200, "{e}");
        }
    }
}
