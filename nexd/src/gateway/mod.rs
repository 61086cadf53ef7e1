//! Proxy servers into the tunnel — SOCKS5 (RFC 1928, RFC 1929) and HTTP CONNECT — and the
//! PROXY protocol header sent to ingress servers.
//!
//! The protocol codecs here do no engine work: a connection's handshake runs in its own
//! task on the engine's thread and asks the engine for a flow once it knows the destination.

pub mod auth;
pub mod http;
mod http_session;
mod listener;
pub mod proxy_protocol;
mod resolve;
pub mod socks5;
mod socks5_session;

pub use listener::spawn_listener;

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
