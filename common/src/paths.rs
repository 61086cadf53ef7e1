//! Default locations of the state directory and the API socket, shared by nexd and nexctl.

use std::path::PathBuf;

/// What the defaults depend on, read from the environment by the caller.
#[derive(Debug, Clone, Default)]
pub struct PathEnv {
    /// Running as uid 0.
    pub is_root: bool,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

fn non_empty(p: &Option<PathBuf>) -> Option<PathBuf> {
    p.clone().filter(|p| !p.as_os_str().is_empty())
}

impl PathEnv {
    /// Reads the current process's environment.
    pub fn from_process(is_root: bool) -> Self {
        PathEnv {
            is_root,
            xdg_state_home: std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// `/var/lib/nexd` as root, else `$XDG_STATE_HOME/nexd` or `~/.local/state/nexd`.
    pub fn state_dir(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/var/lib/nexd");
        }
        if let Some(x) = non_empty(&self.xdg_state_home) {
            return x.join("nexd");
        }
        non_empty(&self.home)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/state/nexd")
    }

    /// `/run/nexd.sock` as root, else `$XDG_RUNTIME_DIR/nexd.sock`, else `<state-dir>/nexd.sock`.
    pub fn unix_socket(&self, state_dir: &std::path::Path) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/run/nexd.sock");
        }
        match non_empty(&self.xdg_runtime_dir) {
            Some(x) => x.join("nexd.sock"),
            None => state_dir.join("nexd.sock"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let root = PathEnv {
            is_root: true,
            ..Default::default()
        };
        assert_eq!(root.state_dir(), PathBuf::from("/var/lib/nexd"));
        assert_eq!(
            root.unix_socket(&root.state_dir()),
            PathBuf::from("/run/nexd.sock")
        );
        let user = PathEnv {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(user.state_dir(), PathBuf::from("/home/u/.local/state/nexd"));
        assert_eq!(
            user.unix_socket(&user.state_dir()),
            PathBuf::from("/home/u/.local/state/nexd/nexd.sock")
        );
        let xdg = PathEnv {
            xdg_state_home: Some("/x/state".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(xdg.state_dir(), PathBuf::from("/x/state/nexd"));
        assert_eq!(
            xdg.unix_socket(&xdg.state_dir()),
            PathBuf::from("/run/user/1000/nexd.sock")
        );
    }
}
