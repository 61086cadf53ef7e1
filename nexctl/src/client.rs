//! Connecting to nexd over its unix socket, and mapping gRPC errors to exit codes.

use crate::{Failure, EX_DATAERR, EX_NOPERM, EX_UNAVAILABLE};
use hyper_util::rt::TokioIo;
use nexd_common::api::nexd_client::NexdClient;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

/// Connects to the daemon; an unreachable socket is exit code 69 with a hint.
pub async fn connect(path: &Path) -> Result<NexdClient<Channel>, Failure> {
    let unreachable = |why: String| {
        Failure::new(
            EX_UNAVAILABLE,
            format!(
                "cannot reach nexd at {}: {why} (is nexd running? set --unix-socket or NEXD_UNIX_SOCKET)",
                path.display()
            ),
        )
    };
    // Probe first: tonic's connect error hides the OS reason. A socket we may not even
    // connect to is a plain permission problem, reported as such; one we may connect to must
    // also be trusted before anything is sent.
    if let Err(e) = tokio::net::UnixStream::connect(path).await {
        return Err(connect_failure(path, &e));
    }
    check_owner(path)?;
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://nexd.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(NexdClient::new(channel))
}

/// This process's effective uid (the owner of /proc/self), without unsafe code.
fn my_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// A user name for messages: from /etc/passwd, else the number.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| format!("{name} (uid {uid})"))
        })
        .next()
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Refuses a socket owned by anyone but root or the caller: another user's socket could be
/// a fake nexd, which nexctl would send preshared keys to and believe. Root is no exception
/// (a root nexctl trusts only root's sockets); to control a nexd that runs as another user,
/// run nexctl as that user. A missing socket is left to the connect, which reports it.
pub fn check_owner(path: &Path) -> Result<(), Failure> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let owner = meta.uid();
    if owner == 0 || Some(owner) == my_uid() {
        return Ok(());
    }
    let name = user_name(owner);
    Err(Failure::new(
        EX_NOPERM,
        format!(
            "refusing {}: owned by {name}, not by root or you (another user's socket could be \
             a fake nexd); to control a nexd running as {name}, run nexctl as that user",
            path.display(),
        ),
    ))
}

/// Maps a failed connect to the socket to an exit code: permission denied is 77
/// (EX_NOPERM), since starting nexd would not help; anything else is 69 (EX_UNAVAILABLE).
pub fn connect_failure(path: &Path, e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return Failure::new(
            EX_NOPERM,
            format!(
                "permission denied on {}: run as a user that may use nexd's socket (or sudo)",
                path.display()
            ),
        );
    }
    Failure::new(
        EX_UNAVAILABLE,
        format!(
            "cannot reach nexd at {}: {e} (is nexd running? set --unix-socket or NEXD_UNIX_SOCKET)",
            path.display()
        ),
    )
}

/// Maps a gRPC status to an exit code and one line.
pub fn failure(s: tonic::Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument => EX_DATAERR,
        Code::Unavailable => EX_UNAVAILABLE,
        _ => 1,
    };
    let msg = s.message().lines().next().unwrap_or("").to_string();
    Failure::new(
        code,
        if msg.is_empty() {
            format!("{:?}", s.code())
        } else {
            msg
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn permission_denied_is_77_and_says_so() {
        let p = Path::new("/run/nexd.sock");
        let f = connect_failure(p, &Error::from(ErrorKind::PermissionDenied));
        assert_eq!(f.code, 77);
        assert!(f.message.contains("permission denied on /run/nexd.sock"));
        for kind in [ErrorKind::NotFound, ErrorKind::ConnectionRefused] {
            let f = connect_failure(p, &Error::from(kind));
            assert_eq!(f.code, 69, "{kind:?}");
            assert!(f.message.contains("cannot reach nexd at /run/nexd.sock"));
        }
    }
}
