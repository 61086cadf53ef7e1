//! Proxy servers into the tunnel — SOCKS5 (RFC 1928, RFC 1929) and HTTP CONNECT — and the
//! PROXY protocol header sent to ingress servers.
//!
//! The protocol codecs here do no engine work: a connection's handshake runs in its own
//! task on the engine's thread and asks the engine for a flow once it knows the destination.

pub mod auth;
pub mod http;
pub mod proxy_protocol;
pub mod socks5;

use std::sync::Arc;

/// Settings shared by every proxy server of the daemon.
#[derive(Clone, Default)]
pub struct GatewayOptions {
    /// Resolve domain names with the host resolver; `false` (`--socks5-resolve none`)
    /// refuses them.
    pub resolve_names: bool,
    /// SOCKS5 username/password pairs (`--socks5-auth-file`); `None`: no authentication.
    pub credentials: Option<Arc<auth::Credentials>>,
}

/// Accepts a proxy server's clients; each runs its handshake in a task of its own.
/// (Placeholder: closes every connection.)
pub fn spawn_listener(
    listener: tokio::net::TcpListener,
    gateway: nexd_common::Gateway,
    options: GatewayOptions,
    events: tokio::sync::mpsc::Sender<crate::engine::host::Event>,
) -> tokio::task::AbortHandle {
    let _ = (gateway, options, events);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
    .abort_handle()
}
