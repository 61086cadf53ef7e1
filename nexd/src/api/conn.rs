//! API connections: how many may be open, how long one may sit without sending, and what
//! happens when descriptors run out. The gRPC server sees only connections that passed.

use nexd_common::api::Counter;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// Connections open at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a new connection has to send the HTTP/2 client preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may go without a byte in either direction.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The HTTP/2 client preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") is 24 bytes.
const PREFACE_LEN: u64 = 24;
/// First and longest pause after accept(2) failed for want of descriptors.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per kind of trouble per interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the connection limits did, for `nexctl nexd status` (group "api").
#[derive(Default)]
pub struct ApiCounters {
    accept_fd_exhausted: AtomicU64,
    connections_refused: AtomicU64,
    connections_timed_out: AtomicU64,
}

impl ApiCounters {
    /// The counters as the status reply carries them.
    pub fn snapshot(&self) -> Vec<Counter> {
        [
            ("api_accept_fd_exhausted", &self.accept_fd_exhausted),
            ("api_connections_refused", &self.connections_refused),
            ("api_connections_timed_out", &self.connections_timed_out),
        ]
        .into_iter()
        .map(|(name, v)| Counter {
            name: name.to_string(),
            value: v.load(Ordering::Relaxed),
            group: "api".to_string(),
        })
        .collect()
    }
}

/// Logs a kind of trouble at most once per [`LOG_INTERVAL`], saying how often it happened.
struct Throttle {
    last: Option<Instant>,
    since: u64,
}

impl Throttle {
    fn new() -> Self {
        Throttle {
            last: None,
            since: 0,
        }
    }

    /// Counts one occurrence; returns how many happened since the last line if one is due.
    fn hit(&mut self) -> Option<u64> {
        self.since += 1;
        let due = self.last.is_none_or(|t| t.elapsed() >= LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since))
    }
}

fn fd_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts connections into `tx` until its receiver is gone. Out of descriptors, the
/// listener stays readable and accept(2) fails at once: without the pause this loop would
/// take a whole core. Over [`MAX_CONNECTIONS`], a new connection is closed at once.
pub async fn accept_loop(
    listener: UnixListener,
    tx: mpsc::Sender<io::Result<ApiConn>>,
    counters: Arc<ApiCounters>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = BACKOFF_MIN;
    let (mut exhausted_log, mut refused_log, mut error_log) =
        (Throttle::new(), Throttle::new(), Throttle::new());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tx.closed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = BACKOFF_MIN;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = refused_log.hit() {
                        tracing::warn!(
                            refused = n,
                            limit = MAX_CONNECTIONS,
                            "API connection limit reached: closing new connections"
                        );
                    }
                    continue;
                };
                let conn = ApiConn::new(stream, slot, counters.clone());
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
            Err(e) if fd_exhausted(&e) => {
                counters.accept_fd_exhausted.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = exhausted_log.hit() {
                    tracing::warn!(
                        failures = n,
                        "API accept failed: {e}; pausing accepts until descriptors free up"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 3 / 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                // ECONNABORTED and the like concern one connection; still pause briefly so
                // no error can make this loop spin.
                if let Some(n) = error_log.hit() {
                    tracing::warn!(failures = n, "API accept failed: {e}");
                }
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

/// An accepted API connection: holds one of the [`MAX_CONNECTIONS`] slots until dropped,
/// and fails its reads once it has been silent too long ([`PREFACE_TIMEOUT`] before the
/// HTTP/2 preface is in, then [`IDLE_TIMEOUT`]), which makes the server close it.
pub struct ApiConn {
    inner: UnixStream,
    _slot: OwnedSemaphorePermit,
    counters: Arc<ApiCounters>,
    deadline: Pin<Box<Sleep>>,
    read: u64,
    /// Set by writes; the deadline is moved past it lazily, when it fires.
    last_write: Option<Instant>,
}

impl ApiConn {
    fn new(inner: UnixStream, slot: OwnedSemaphorePermit, counters: Arc<ApiCounters>) -> Self {
        ApiConn {
            inner,
            _slot: slot,
            counters,
            deadline: Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)),
            read: 0,
            last_write: None,
        }
    }

    /// Whether the silence deadline has passed (moving it when writes kept the line busy).
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let busy_until = match self.last_write.take() {
                Some(w) if self.read >= PREFACE_LEN => w + IDLE_TIMEOUT,
                _ => return true,
            };
            if busy_until <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(busy_until.into());
        }
    }
}

impl AsyncRead for ApiConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.read += n;
                    if self.read >= PREFACE_LEN {
                        let next = tokio::time::Instant::now() + IDLE_TIMEOUT;
                        self.deadline.as_mut().reset(next);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if self.timed_out(cx) {
                    self.counters
                        .connections_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(bytes_read = self.read, "closing a silent API connection");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "API connection silent too long",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for ApiConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last_write = Some(Instant::now());
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for ApiConn {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_hit_then_once_per_interval() {
        let mut t = Throttle::new();
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        t.last = Some(Instant::now() - LOG_INTERVAL);
        assert_eq!(t.hit(), Some(3));
    }
}
