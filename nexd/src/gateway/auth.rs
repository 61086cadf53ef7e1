//! SOCKS5 username/password credentials (RFC 1929) from `--socks5-auth-file`.
//! (Placeholder: the real loader replaces this file.)

use std::path::Path;

/// Username/password pairs.
#[derive(Debug, Default)]
pub struct Credentials {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthFileError(String);

impl Credentials {
    /// Loads `user:password` lines from `path`, refusing a file other users can read.
    pub fn load(path: &Path) -> Result<Credentials, AuthFileError> {
        Err(AuthFileError(format!(
            "{}: not implemented yet",
            path.display()
        )))
    }

    /// Whether the pair is known.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        self.pairs.iter().any(|(u, p)| u == user && p == password)
    }
}
