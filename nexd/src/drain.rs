//! Graceful shutdown (SIGTERM/SIGINT): stop accepting, let open TCP connections finish for up
//! to `--drain-timeout`, then reset what is left, to the host client and to the peer, so an
//! unfinished stream never ends with a clean FIN that looks like a complete transfer.

use crate::engine::EngineHandle;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// How often the drain looks at the open connections.
const POLL: Duration = Duration::from_millis(50);
/// The most it waits for the host connections' resets to be done.
const RESET_WAIT: Duration = Duration::from_secs(1);

/// Drains the engine: returns once no connection is left open (finished or reset).
pub async fn drain(engine: &EngineHandle, timeout: Duration) {
    let Ok(open) = engine.stop_accepting().await else {
        return;
    };
    if open > 0 && !timeout.is_zero() {
        info!(
            open,
            timeout_s = timeout.as_secs(),
            "draining: new connections refused, waiting for open ones to finish (a second \
             signal resets them at once)"
        );
        let second = second_signal();
        tokio::pin!(second);
        let deadline = Instant::now() + timeout;
        loop {
            tokio::select! {
                _ = &mut second => {
                    info!("second signal: resetting open connections now");
                    break;
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            match engine.drain_progress().await {
                Ok((0, _)) | Err(_) => break,
                _ if Instant::now() >= deadline => break,
                _ => {}
            }
        }
    }
    match engine.reset_all().await {
        Ok(0) | Err(_) => {}
        Ok(n) => warn!(
            connections = n,
            "drain timeout: reset the connections still open (RST to both ends)"
        ),
    }
    // The host sockets are reset by their own tasks: let them run before the engine stops.
    let deadline = Instant::now() + RESET_WAIT;
    while Instant::now() < deadline {
        match engine.drain_progress().await {
            Ok((_, 0)) | Err(_) => break,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Resolves at the next SIGTERM or SIGINT (never, if they cannot be watched).
async fn second_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
