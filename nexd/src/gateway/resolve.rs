//! Turning a requested destination into addresses: IP literals as they are, names through
//! the host resolver (unless names are refused).

use std::net::SocketAddr;
use std::time::Duration;

/// The resolver has this long to answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a destination has no addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// A name, and names are refused (`--socks5-resolve none`).
    NamesRefused,
    /// The name did not resolve (or not in time).
    Unresolved,
}

/// The addresses of `name`:`port` from the host resolver, or of an IP literal.
pub async fn addresses(
    name: &str,
    port: u16,
    names_allowed: bool,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if !names_allowed {
        return Err(ResolveError::NamesRefused);
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.take(16).collect();
            if addrs.is_empty() {
                Err(ResolveError::Unresolved)
            } else {
                Ok(addrs)
            }
        }
        _ => Err(ResolveError::Unresolved),
    }
}
