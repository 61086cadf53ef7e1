//! The API's unix socket: owner-only from its first instant, one daemon per path.

use super::conn::accept_loop;
use super::service::ApiService;
use nexd_common::api::nexd_server::NexdServer;
use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// Streams open at once on one API connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Largest request message nexd decodes; the largest legitimate one (a peer with 1,024
/// AllowedIPs, or a rule with 1,024 allow-list entries) is well under 100 KiB.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest reply (a status or list with every rule and peer at their caps).
const MAX_REPLY_BYTES: usize = 64 << 20;
/// Request headers per stream (gRPC sends a few hundred bytes).
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Sets the process umask and returns the previous one.
#[allow(unsafe_code)]
fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask(2) cannot fail and touches no memory; it is process-wide, which is why
    // it is only changed around bind() during start-up, before other threads create files.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Why the socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another nexd answers on the path.
    Live(String),
    /// The directory is one another user could write ([`crate::safe_dir`]).
    Unsafe(String),
    /// Anything else (permissions, missing directory, not a socket, ...).
    Other(String),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Live(m) | BindError::Unsafe(m) | BindError::Other(m) => f.write_str(m),
        }
    }
}

/// Binds `path` as a 0600 socket (umask 0177 during bind, so it is never wider). Creates a missing parent directory 0700. A live daemon on
/// the path is an error; a stale socket left by a crashed one is replaced. A directory
/// another user could write is refused before anything in it is touched.
pub async fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    let other = BindError::Other;
    let shown = path.display();
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    other(format!(
                        "cannot create socket directory {}: {e}",
                        parent.display()
                    ))
                })?;
        }
        crate::safe_dir::check(parent, "socket directory", true).map_err(BindError::Unsafe)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(other(format!(
                "{shown} exists and is not a socket; refusing to replace it"
            )));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::Live(format!(
                "another nexd is already serving {shown}"
            )));
        }
        tracing::info!("replacing stale socket {shown}");
        std::fs::remove_file(path)
            .map_err(|e| other(format!("cannot remove stale socket {shown}: {e}")))?;
    }
    let old = set_umask(0o177);
    let bound = UnixListener::bind(path);
    set_umask(old);
    bound.map_err(|e| other(format!("cannot bind API socket {shown}: {e}")))
}

/// Serves the API until `cancel`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    service: ApiService,
    cancel: CancellationToken,
) -> Result<(), String> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexd_common::api::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(nexd_common::api::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    // Our own accept loop, not tonic's: it pauses when descriptors run out and enforces
    // the connection cap and silence timeouts (conn.rs).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(accept_loop(listener, tx, service.counters()));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    // grpc.health.v1: SERVING for the server ("") and for nexd.v1.Nexd while the API runs.
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<NexdServer<ApiService>>()
        .await;
    let nexd = NexdServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES);
    let result = tonic::transport::Server::builder()
        // Streams one connection may have open (HTTP/2 SETTINGS and the handler side both):
        // without them one connection opening 100k streams grew nexd to 884 MB.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS_PER_CONNECTION as usize))
        .add_service(health)
        .add_service(nexd)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .serve_with_incoming_shutdown(incoming, cancel.cancelled())
        .await;
    let _ = std::fs::remove_file(&path);
    result.map_err(|e| format!("API server: {e}"))
}
