//! A proxy server's accept loop: each client's session (handshake, request, answer) runs
//! in a task of its own until its connection joins a flow.

use super::GatewayOptions;
use crate::engine::host::{AcceptBackoff, ConnectOutcome, Event, GatewayFailure};
use nexd_common::{Gateway, GatewayKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::AbortHandle;

/// A client has this long from connecting to a complete request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients of one server between accept and request at once; more are closed at once, so
/// idle connections cannot hold unbounded tasks and memory.
const MAX_HANDSHAKES: usize = 1024;

/// What a session needs to talk to the engine.
#[derive(Clone)]
pub struct Session {
    /// The server the client came to.
    pub gateway: Gateway,
    /// Settings shared by the servers.
    pub options: GatewayOptions,
    /// The engine's event channel.
    pub events: mpsc::Sender<Event>,
}

impl Session {
    /// Counts a client that failed before asking for a flow.
    pub async fn failed(&self, why: GatewayFailure) {
        let gateway = self.gateway;
        let _ = self
            .events
            .send(Event::GatewayFailed { gateway, why })
            .await;
    }

    /// Asks the engine for a TCP flow to the first reachable of `candidates` and waits for
    /// the connection to come up or fail.
    pub async fn connect(
        &self,
        candidates: Vec<SocketAddr>,
        client: SocketAddr,
    ) -> Option<ConnectOutcome> {
        let (reply, answer) = oneshot::channel();
        let ev = Event::GatewayConnect {
            gateway: self.gateway,
            candidates,
            client,
            reply,
        };
        self.events.send(ev).await.ok()?;
        answer.await.ok()
    }
}

/// Accepts a proxy server's clients; each runs its session in a task of its own.
pub fn spawn_listener(
    listener: TcpListener,
    gateway: Gateway,
    options: GatewayOptions,
    events: mpsc::Sender<Event>,
) -> AbortHandle {
    let session = Session {
        gateway,
        options,
        events,
    };
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            match listener.accept().await {
                Ok((stream, client)) => {
                    backoff.succeeded();
                    let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                        tracing::debug!(server = %gateway, %client, "too many clients in handshake; closing");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let session = session.clone();
                    tokio::spawn(async move {
                        run(stream, client, session, slot).await;
                    });
                }
                Err(e) => backoff.failed(&e, gateway.listen.port()).await,
            }
        }
    })
    .abort_handle()
}

async fn run(
    stream: TcpStream,
    client: SocketAddr,
    session: Session,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    match session.gateway.kind {
        GatewayKind::Socks5 => super::socks5_session::run(stream, client, session, slot).await,
        GatewayKind::Http => super::http_session::run(stream, client, session, slot).await,
    }
}
