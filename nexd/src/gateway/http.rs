//! HTTP proxy requests (placeholder; the real codec replaces this file).

use super::socks5::Target;
use tokio::io::AsyncRead;

/// A request.
pub enum HttpRequest {
    /// CONNECT.
    Connect {
        /// Destination.
        target: Target,
    },
    /// Absolute-form request.
    Forward {
        /// Destination.
        target: Target,
        /// Rewritten head.
        head: Vec<u8>,
    },
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// I/O.
    #[error("{0}")]
    Io(std::io::Error),
    /// Closed.
    #[error("closed")]
    Closed,
    /// Too large.
    #[error("too large")]
    TooLarge,
}

/// Placeholder.
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(HttpRequest, bytes::Bytes), HttpError> {
    let _ = s;
    Err(HttpError::Closed)
}

/// Placeholder.
pub fn status_response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Placeholder.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
