//! SOCKS5 username/password credentials (RFC 1929) from `--socks5-auth-file`.
//!
//! The file holds `user:password` lines (split at the first `:`, so a password may hold
//! one); blank lines and lines starting with `#` are skipped. It is read only if no other
//! user can read or change it, as ssh treats private keys, and reads are bounded.

use crate::bounded_read::{read_text, BoundedReadError};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Largest credentials file read.
const MAX_AUTH_FILE_BYTES: u64 = 1024 * 1024;
/// Longest user name or password: RFC 1929 sends each with a one-byte length.
const MAX_FIELD: usize = 255;

/// Username/password pairs.
#[derive(Default)]
pub struct Credentials {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why the credentials file cannot be used; one line, never holding a password.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthFileError(String);

impl Credentials {
    /// Loads `user:password` lines from `path`, refusing a symlink, anything but a regular
    /// file, a file owned by another user than nexd's or root, or one that group or others
    /// may access.
    pub fn load(path: &Path) -> Result<Credentials, AuthFileError> {
        let fail = |m: String| AuthFileError(format!("{}: {m}", path.display()));
        let file = open_private(path).map_err(fail)?;
        let text = read_text(file, MAX_AUTH_FILE_BYTES).map_err(|e| match e {
            BoundedReadError::Io(e) => fail(format!("cannot read it: {e}")),
            e => fail(e.to_string()),
        })?;
        Credentials::parse(&text).map_err(fail)
    }

    /// Parses the file's text; the error names a line, never its content.
    pub(crate) fn parse(text: &str) -> Result<Credentials, String> {
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(format!("line {n}: expected user:password"));
            };
            check_field(n, "user name", user)?;
            check_field(n, "password", password)?;
            pairs.push((user.as_bytes().to_vec(), password.as_bytes().to_vec()));
        }
        if pairs.is_empty() {
            return Err("no user:password lines; SOCKS5 authentication needs at least one".into());
        }
        Ok(Credentials { pairs })
    }

    /// Whether the pair is known.
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        // Every pair is compared, user and password both (`&`, not `&&`), so the time taken
        // tells neither which user exists nor how much of a password was right.
        let mut found = false;
        for (u, p) in &self.pairs {
            found |= same(u, user) & same(p, password);
        }
        found
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

fn check_field(line: usize, what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("line {line}: empty {what}"));
    }
    if value.len() > MAX_FIELD {
        return Err(format!(
            "line {line}: {what} longer than {MAX_FIELD} bytes, the most SOCKS5 can carry"
        ));
    }
    Ok(())
}

/// Equality in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// Opens `path` for reading if it is a regular file only nexd's user (or root) controls.
fn open_private(path: &Path) -> Result<File, String> {
    // O_NOFOLLOW: the file checked is the one named, not wherever a link points.
    // O_NONBLOCK: a FIFO would otherwise block the open until a writer came, before the
    // type check below could refuse it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symbolic link; refusing to follow it".to_string()
            } else {
                format!("cannot open it: {e}")
            }
        })?;
    // fstat of the open file: the checks apply to exactly what is read.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    judge(meta.uid(), meta.mode(), rustix::process::geteuid().as_raw())?;
    Ok(file)
}

/// Refuses an owner other than `euid` or root, and any access for group or others.
fn judge(uid: u32, mode: u32, euid: u32) -> Result<(), String> {
    if uid != euid && uid != 0 {
        return Err(format!(
            "owned by uid {uid}, not by nexd's user (uid {euid}) or root; refusing to trust \
             the SOCKS5 passwords in it"
        ));
    }
    if mode & 0o077 != 0 {
        let what = if mode & 0o044 != 0 {
            "read"
        } else if mode & 0o022 != 0 {
            "change"
        } else {
            "access"
        };
        return Err(format!(
            "mode {:04o} lets other users {what} the SOCKS5 passwords; chmod 600 it",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(dir: &tempfile::TempDir, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.path().join("socks5-auth");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn loads_pairs_and_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# users\n\nalice:s3cret\r\nbob:pa:ss:word\n   \n#carol:x\ndave: spaced \n";
        let c = Credentials::load(&write(&dir, text, 0o600)).unwrap();
        assert!(c.check(b"alice", b"s3cret"));
        assert!(c.check(b"bob", b"pa:ss:word"));
        assert!(c.check(b"dave", b" spaced "));
        assert!(!c.check(b"alice", b"s3cre"));
        assert!(!c.check(b"alice", b"s3cretX"));
        assert!(!c.check(b"alice", b"pa:ss:word"));
        assert!(!c.check(b"bob", b"s3cret"));
        assert!(!c.check(b"carol", b"x"));
        assert!(!c.check(b"#carol", b"x"));
        assert!(!c.check(b"", b""));
        // Read-only for the owner is fine too.
        assert!(Credentials::load(&write(&dir, "a:b", 0o400)).is_ok());
    }

    #[test]
    fn debug_hides_passwords() {
        let c = Credentials::parse("alice:hunter2").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn bad_lines_name_their_number_not_their_password() {
        let long = "x".repeat(256);
        let max = "x".repeat(255);
        assert!(Credentials::parse(&format!("{max}:{max}")).is_ok());
        let long_user = format!("{long}:hunter2");
        let long_password = format!("a:b\nu:hunter2{long}");
        let cases: [(&str, &str); 5] = [
            ("a:b\nnocolon-hunter2\n", "line 2: expected user:password"),
            ("a:b\n\n:hunter2\n", "line 3: empty user name"),
            ("a:\n", "line 1: empty password"),
            (&long_user, "line 1: user name longer than 255"),
            (&long_password, "line 2: password longer than 255"),
        ];
        for (text, want) in cases {
            let e = Credentials::parse(text).unwrap_err();
            assert!(e.starts_with(want), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn no_pairs_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["", "\n\n", "# only a comment\n"] {
            let path = write(&dir, text, 0o600);
            let e = Credentials::load(&path).unwrap_err().to_string();
            assert!(e.contains("no user:password lines"), "{e}");
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn refuses_a_file_others_may_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "alice:hunter2\n", 0o644);
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: mode 0644 lets other users read the SOCKS5 passwords; chmod 600 it",
                path.display()
            )
        );
        for mode in [0o640, 0o604, 0o620, 0o602, 0o610, 0o660] {
            let e = Credentials::load(&write(&dir, "a:b", mode))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
        }
    }

    #[test]
    fn owner_must_be_nexd_or_root() {
        assert_eq!(judge(1000, 0o100600, 1000), Ok(()));
        assert_eq!(judge(0, 0o100600, 1000), Ok(()));
        assert_eq!(judge(0, 0o100400, 0), Ok(()));
        let e = judge(1001, 0o100600, 1000).unwrap_err();
        assert!(e.contains("owned by uid 1001"), "{e}");
        assert!(judge(1000, 0o100620, 1000).unwrap_err().contains("change"));
        assert!(judge(1000, 0o100601, 1000).unwrap_err().contains("access"));
    }

    #[test]
    fn refuses_symlinks_directories_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = write(&dir, "a:b", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Credentials::load(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = Credentials::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = Credentials::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot open it"), "{e}");
    }

    #[test]
    fn refuses_huge_and_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_AUTH_FILE_BYTES + 1).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let path = dir.path().join("bin");
        std::fs::write(&path, b"a:\xff\xfe").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn constant_time_equality() {
        assert!(same(b"", b""));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"xbc"));
        assert!(!same(b"abc", b"ab"));
    }
}
