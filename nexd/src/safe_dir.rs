//! Refusing a state or socket directory that another user could write, as ssh's StrictModes
//! does: whoever can write the directory can plant a state file (extra peers, rules), swap
//! nexd's files for symlinks, or replace its socket.
//!
//! The state directory must be owned by nexd's effective user and not writable by group or
//! others. The socket directory may also be a shared one like `/tmp`: owned by root and
//! sticky (others may create entries there but cannot rename or remove ours; a socket they
//! planted at our path is never replaced). Directories above either one (after resolving
//! symlinks) should be owned by root or nexd's user and not writable by group or others
//! unless sticky; there a problem is logged as a warning, not refused, since the issue of
//! trust is the directory nexd writes into and scratch trees made `chmod 777` are common.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Write permission for group or others.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// The sticky bit.
const STICKY: u32 = 0o1000;

/// What is wrong with one directory, if anything.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// Owned by someone nexd does not trust.
    Owner(u32),
    /// Others may write it.
    Writable(u32),
}

/// Judges one directory; `leaf`: held to the strict rule (the state directory), else to the
/// rule for shared directories (the socket directory, and every directory above).
fn judge(uid: u32, mode: u32, euid: u32, leaf: bool) -> Option<Problem> {
    let owner_ok = uid == euid || (!leaf && uid == 0);
    if !owner_ok {
        return Some(Problem::Owner(uid));
    }
    let sticky_ok = !leaf && mode & STICKY != 0;
    if mode & GROUP_OTHER_WRITE != 0 && !sticky_ok {
        return Some(Problem::Writable(mode & 0o7777));
    }
    None
}

/// Checks `dir` (which must exist) and every directory above it; `what` names it in the
/// one-line error ("state directory", "socket directory"); `shared_ok`: `dir` may be a
/// root-owned sticky directory such as `/tmp`.
pub fn check(dir: &Path, what: &str, shared_ok: bool) -> Result<(), String> {
    let shown = dir.display();
    let real = dir
        .canonicalize()
        .map_err(|e| format!("{what} {shown}: {e}"))?;
    let euid = rustix::process::geteuid().as_raw();
    for (i, d) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(d).map_err(|e| format!("{what} {shown}: {e}"))?;
        if i == 0 && !meta.is_dir() {
            return Err(format!("{what} {shown} is not a directory"));
        }
        let problem = match judge(meta.uid(), meta.mode(), euid, i == 0 && !shared_ok) {
            None => continue,
            Some(p) => p,
        };
        let whose = if i == 0 {
            format!("{what} {shown}")
        } else {
            format!("{what} {shown}: the directory above it, {},", d.display())
        };
        let message = match problem {
            Problem::Owner(uid) => format!(
                "{whose} is owned by uid {uid}, not by nexd's user (uid {euid}){}; \
                 refusing to trust it: another user could plant or replace files there",
                if i == 0 { "" } else { " or root" }
            ),
            Problem::Writable(mode) => format!(
                "{whose} is writable by group or others (mode {mode:04o}); refusing to \
                 trust it: another user could plant or replace files there (chmod go-w it)"
            ),
        };
        if i == 0 {
            return Err(message);
        }
        tracing::warn!("{message} (a warning only: nexd's own directory is safe)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_itself_must_be_ours_and_private() {
        assert_eq!(judge(1000, 0o40700, 1000, true), None);
        assert_eq!(judge(1000, 0o40755, 1000, true), None);
        assert_eq!(judge(0, 0o40700, 1000, true), Some(Problem::Owner(0)));
        assert_eq!(judge(65534, 0o40700, 0, true), Some(Problem::Owner(65534)));
        assert_eq!(
            judge(1000, 0o40770, 1000, true),
            Some(Problem::Writable(0o770))
        );
        // Sticky does not make the directory nexd writes into safe.
        assert_eq!(
            judge(1000, 0o41777, 1000, true),
            Some(Problem::Writable(0o1777))
        );
    }

    #[test]
    fn directories_above_may_be_roots_and_sticky() {
        assert_eq!(judge(0, 0o40755, 1000, false), None);
        assert_eq!(judge(0, 0o41777, 1000, false), None);
        assert_eq!(judge(1000, 0o40750, 1000, false), None);
        assert_eq!(
            judge(0, 0o40777, 1000, false),
            Some(Problem::Writable(0o777))
        );
        assert_eq!(
            judge(1001, 0o40755, 1000, false),
            Some(Problem::Owner(1001))
        );
    }

    #[test]
    fn a_private_temp_dir_passes_and_an_open_one_is_named() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        check(&d, "state directory", false).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check(&d, "state directory", false).unwrap_err();
        assert!(e.contains(&d.display().to_string()), "{e}");
        assert!(e.contains("mode 0777"), "{e}");
        assert!(!e.contains('\n'));
    }
}
