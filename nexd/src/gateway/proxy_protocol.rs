//! PROXY protocol headers (placeholder; the real codec replaces this file).

use nexd_common::ProxyProtocol;
use std::net::SocketAddr;

/// The header announcing a connection from `src` to `dst`.
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let _ = version;
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}
