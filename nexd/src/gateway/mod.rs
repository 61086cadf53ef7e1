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
    /// SOCKS5 username/password pairs (`--socks5-auth-file`); empty: no authentication.
    pub credentials: CredentialsCell,
}

/// The SOCKS5 credentials in force, shared by every server and replaced on reload (SIGHUP):
/// a session takes the set current when its client connects.
#[derive(Clone, Default)]
pub struct CredentialsCell(Arc<std::sync::RwLock<Option<Arc<auth::Credentials>>>>);

impl CredentialsCell {
    /// A cell holding `c` (`None`: no authentication).
    pub fn new(c: Option<auth::Credentials>) -> Self {
        CredentialsCell(Arc::new(std::sync::RwLock::new(c.map(Arc::new))))
    }

    /// The credentials in force.
    pub fn get(&self) -> Option<Arc<auth::Credentials>> {
        // A poisoned lock still holds a valid Arc: a panic cannot leave it half-written.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts `c` in force for clients from now on.
    pub fn set(&self, c: auth::Credentials) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Some(Arc::new(c));
    }
}
