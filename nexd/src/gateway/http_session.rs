//! One HTTP proxy client: a CONNECT request (answered `200`, then the connection joins a
//! TCP flow) or an absolute-form request such as `GET http://…` (rewritten to origin form
//! and sent on, the response streaming back). One request per connection.

use super::http::{self, HttpError, HttpRequest};
use super::listener::{Session, HANDSHAKE_TIMEOUT};
use super::resolve::{self, ResolveError};
use super::socks5::Target;
use crate::engine::host::{ConnectRefusal, Event, GatewayFailure};
use bytes::Bytes;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Runs the client's session until its connection joins a flow or gets its error answer.
pub async fn run(
    mut stream: TcpStream,
    client: SocketAddr,
    session: Session,
    slot: OwnedSemaphorePermit,
) {
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, http::read_request(&mut stream)).await;
    let (request, leftover) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(HttpError::Io(_) | HttpError::Closed)) => return,
        Ok(Err(e)) => {
            tracing::debug!(server = %session.gateway, %client, "http proxy: {e}");
            session.failed(GatewayFailure::BadRequest).await;
            let (code, reason) = match e {
                HttpError::TooLarge => (431, "Request Header Fields Too Large"),
                _ => (400, "Bad Request"),
            };
            return respond(&mut stream, code, reason, &e.to_string()).await;
        }
        Err(_) => {
            session.failed(GatewayFailure::BadRequest).await;
            return respond(
                &mut stream,
                408,
                "Request Timeout",
                "no complete request in time",
            )
            .await;
        }
    };
    drop(slot);
    let (target, preface, tunnel) = match request {
        HttpRequest::Connect { target } => (target, leftover, true),
        HttpRequest::Forward { target, head } => {
            let mut p = head;
            p.extend_from_slice(&leftover);
            (target, Bytes::from(p), false)
        }
    };
    let addrs = match &target {
        Target::Ip(a) => vec![*a],
        // Names always go to the host resolver: --socks5-resolve is SOCKS5's setting.
        Target::Name(name, port) => match resolve::addresses(name, *port, true).await {
            Ok(a) => a,
            Err(ResolveError::NamesRefused | ResolveError::Unresolved) => {
                session.failed(GatewayFailure::Unresolved).await;
                return respond(&mut stream, 502, "Bad Gateway", "the name did not resolve").await;
            }
        },
    };
    let connected = match session.connect(addrs, client).await {
        Some(Ok(c)) => c,
        Some(Err(why)) => {
            tracing::debug!(server = %session.gateway, %client, %target, ?why, "http proxy request refused");
            let (code, reason, body) = refusal_status(why);
            return respond(&mut stream, code, reason, body).await;
        }
        None => {
            return respond(
                &mut stream,
                503,
                "Service Unavailable",
                "nexd is shutting down",
            )
            .await
        }
    };
    let flow = connected.flow;
    if tunnel && stream.write_all(http::CONNECT_ESTABLISHED).await.is_err() {
        let _ = session.events.send(Event::HostReset { flow }).await;
        return;
    }
    let _ = session
        .events
        .send(Event::GatewayAttach {
            flow,
            stream,
            preface,
        })
        .await;
}

fn refusal_status(why: ConnectRefusal) -> (u16, &'static str, &'static str) {
    match why {
        ConnectRefusal::NotAllowed => (
            403,
            "Forbidden",
            "destination outside the WireGuard network or the proxy's allow-list",
        ),
        ConnectRefusal::Refused => (502, "Bad Gateway", "the destination refused the connection"),
        ConnectRefusal::TimedOut => (504, "Gateway Timeout", "the destination did not answer"),
        ConnectRefusal::Limit => (503, "Service Unavailable", "too many connections"),
        ConnectRefusal::Unavailable => (503, "Service Unavailable", "no connection possible now"),
    }
}

async fn respond(stream: &mut TcpStream, code: u16, reason: &str, body: &str) {
    let _ = stream
        .write_all(&http::status_response(code, reason, &format!("{body}\n")))
        .await;
    let _ = stream.shutdown().await;
}
