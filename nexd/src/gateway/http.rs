//! HTTP/1.x proxy requests: CONNECT opens a tunnel; an absolute-form request
//! (`GET http://host/path`) is forwarded once, its head rewritten to origin-form without the
//! hop-by-hop headers and with `Connection: close`, so each client connection carries one
//! request.

use super::socks5::Target;
use bytes::Bytes;
use std::borrow::Cow;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Headers that concern one connection, never forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];
/// Headers kept even when `Connection` names them: the body is relayed byte for byte, so
/// its framing must reach the server, and Host is always sent.
const KEEP_ALWAYS: [&str; 3] = ["host", "content-length", "transfer-encoding"];
/// Most of a client's URL scheme quoted in an error.
const MAX_SCHEME_SHOWN: usize = 32;

/// The reply to a CONNECT once the tunnel is open.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// A client's proxy request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRequest {
    /// `CONNECT host:port`: a tunnel, to be answered with [`CONNECT_ESTABLISHED`].
    Connect {
        /// Where to.
        target: Target,
    },
    /// An absolute-form request, to be sent to the target as `head`.
    Forward {
        /// Where to.
        target: Target,
        /// The rewritten request head, ending in a blank line.
        head: Vec<u8>,
    },
}

/// Why a request cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The head is larger than 16 KiB.
    #[error("request head larger than 16 KiB")]
    TooLarge,
    /// The request breaks HTTP/1.x syntax.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Not a proxy request: an origin-form or asterisk-form target.
    #[error("not a proxy request: the target is not an absolute http:// URL")]
    NotAbsolute,
    /// A URL scheme other than `http` (https goes through CONNECT).
    #[error("unsupported URL scheme {0:?}")]
    UnsupportedScheme(String),
    /// The client closed the connection before a complete head.
    #[error("connection closed before a complete request")]
    Closed,
}

/// Reads one request head (at most 16 KiB, ending in a blank line) and returns the request
/// with whatever was read past the head (a body's start, pipelined data), to be sent first.
pub async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(HttpRequest, Bytes), HttpError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        // A terminator may straddle reads: "\n" then "\r\n".
        let scan_from = filled.saturating_sub(2);
        filled += n;
        if let Some(end) = head_end(&buf[..filled], scan_from) {
            let request = parse_head(&buf[..end])?;
            return Ok((request, Bytes::copy_from_slice(&buf[end..filled])));
        }
        if filled == MAX_HEAD {
            return Err(HttpError::TooLarge);
        }
    }
}

/// A complete response with a plain-text body, closing the connection.
pub fn status_response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The end of the head (just past its blank line), looking for line ends from `from` on;
/// `\n\n` counts as well as `\r\n\r\n`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf.get(i) == Some(&b'\n') {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// One header line, as the client sent it (without its line end).
struct Header<'a> {
    name: &'a str,
    value: &'a [u8],
    line: &'a [u8],
}

fn parse_head(head: &[u8]) -> Result<HttpRequest, HttpError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let (method, target) = parse_request_line(lines.next().unwrap_or_default())?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        headers.push(parse_header(line)?);
    }
    if method == "CONNECT" {
        let target = parse_authority(target, None)?;
        return Ok(HttpRequest::Connect { target });
    }
    let (target, authority, path) = parse_absolute(target)?;
    let head = rewrite(method, &path, authority, &headers)?;
    Ok(HttpRequest::Forward { target, head })
}

/// `METHOD SP request-target SP HTTP/1.x`: the method and the target.
fn parse_request_line(line: &[u8]) -> Result<(&str, &str), HttpError> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(HttpError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if !matches!(*version, b"HTTP/1.1" | b"HTTP/1.0") {
        return Err(HttpError::Malformed("not HTTP/1.0 or HTTP/1.1"));
    }
    let method = token(method).ok_or(HttpError::Malformed("invalid method"))?;
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(HttpError::Malformed("invalid request target"));
    }
    let target =
        std::str::from_utf8(target).map_err(|_| HttpError::Malformed("invalid request target"))?;
    Ok((method, target))
}

fn parse_header(line: &[u8]) -> Result<Header<'_>, HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::Malformed("folded header line"));
    }
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HttpError::Malformed("control character in a header"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::Malformed("header line without ':'"))?;
    let (name, value) = line.split_at(colon);
    // Whitespace before the colon fails here too, as RFC 9112 requires.
    let name = token(name).ok_or(HttpError::Malformed("invalid header name"))?;
    let value = value.get(1..).unwrap_or_default().trim_ascii();
    Ok(Header { name, value, line })
}

/// `b` as a token (RFC 9110 tchar+), if it is one.
fn token(b: &[u8]) -> Option<&str> {
    let tchar = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c);
    if b.is_empty() || !b.iter().all(tchar) {
        return None;
    }
    std::str::from_utf8(b).ok()
}

/// `http://authority[/path][?query]`: the target, the authority as written, and the
/// origin-form path.
fn parse_absolute(target: &str) -> Result<(Target, &str, Cow<'_, str>), HttpError> {
    if target.starts_with('/') || target == "*" {
        return Err(HttpError::NotAbsolute);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(HttpError::NotAbsolute);
    };
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return Err(HttpError::NotAbsolute);
    }
    if !scheme.eq_ignore_ascii_case("http") {
        let shown: String = scheme.chars().take(MAX_SCHEME_SHOWN).collect();
        return Err(HttpError::UnsupportedScheme(shown));
    }
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(HttpError::Malformed("no host in the URL"));
    }
    if authority.contains('@') {
        return Err(HttpError::Malformed("user name in the URL"));
    }
    let target = parse_authority(authority, Some(80))?;
    // A fragment is for the client only.
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.is_empty() {
        Cow::Borrowed("/")
    } else if path.starts_with('?') {
        Cow::Owned(format!("/{path}"))
    } else {
        Cow::Borrowed(path)
    };
    Ok((target, authority, path))
}

/// `host:port` or `[v6]:port`; the port may be left out only when `default_port` is given.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<Target, HttpError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or(HttpError::Malformed("unclosed '[' in the host"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| HttpError::Malformed("not an IPv6 address in '[ ]'"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(HttpError::Malformed("junk after ']' in the host"))?,
            ),
        };
        let port = port_or(port, default_port)?;
        return Ok(Target::Ip(SocketAddr::new(ip.into(), port)));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.contains(':') {
        return Err(HttpError::Malformed("IPv6 address not in '[ ]'"));
    }
    let port = port_or(port, default_port)?;
    Target::from_host(host, port).ok_or(HttpError::Malformed("invalid host name"))
}

fn port_or(port: Option<&str>, default_port: Option<u16>) -> Result<u16, HttpError> {
    let Some(port) = port else {
        return default_port.ok_or(HttpError::Malformed("no port: expected host:port"));
    };
    // Digits only: u16's parser would also take a leading '+'.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed("invalid port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(HttpError::Malformed("invalid port")),
    }
}

/// The head sent to the server: origin-form request line, a Host header from the URL's
/// authority (which replaces the client's, RFC 9112 §3.2.2), the client's other end-to-end
/// headers and `Connection: close`.
fn rewrite(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[Header<'_>],
) -> Result<Vec<u8>, HttpError> {
    let named_by_connection: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !KEEP_ALWAYS.contains(&t.as_str()))
        .collect();
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(HttpError::Malformed("more than one Host header"));
    }
    let mut out = Vec::with_capacity(MAX_HEAD);
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    for h in headers {
        let name = h.name.to_ascii_lowercase();
        if name == "host"
            || HOP_BY_HOP.contains(&name.as_str())
            || named_by_connection.contains(&name)
        {
            continue;
        }
        out.extend_from_slice(h.line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng as _};
    use tokio::io::AsyncWriteExt as _;

    /// Feeds `input` then EOF to read_request.
    async fn read(input: &[u8]) -> Result<(HttpRequest, Bytes), HttpError> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        read_request(&mut server).await
    }

    async fn forward(input: &[u8]) -> (Target, String, Bytes) {
        match read(input).await {
            Ok((HttpRequest::Forward { target, head }, rest)) => {
                (target, String::from_utf8(head).unwrap(), rest)
            }
            other => panic!("{other:?}"),
        }
    }

    fn ip(s: &str) -> Target {
        Target::Ip(s.parse().unwrap())
    }

    #[tokio::test]
    async fn connect_requests() {
        for (authority, want) in [
            ("example.com:443", Target::Name("example.com".into(), 443)),
            ("100.100.0.2:22", ip("100.100.0.2:22")),
            ("[fd00::2]:8443", ip("[fd00::2]:8443")),
        ] {
            let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            let (r, rest) = read(req.as_bytes()).await.unwrap();
            assert_eq!(r, HttpRequest::Connect { target: want });
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn connect_needs_a_valid_host_and_port() {
        for authority in [
            "example.com",
            "example.com:",
            "example.com:+443",
            "example.com:0",
            "example.com:65536",
            "fd00::2:443",
            "[fd00::2]",
            "[fd00::2",
            "[example.com]:443",
            "[fd00::2]x:443",
            "exa mple.com:443",
            ":443",
            "user@example.com:443",
        ] {
            let req = format!("CONNECT {authority} HTTP/1.1\r\n\r\n");
            let r = read(req.as_bytes()).await;
            assert!(
                matches!(r, Err(HttpError::Malformed(_))),
                "{authority}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn leftover_bytes_are_returned() {
        let (r, rest) = read(b"CONNECT h:1 HTTP/1.1\r\n\r\n\x16\x03\x01tls hello")
            .await
            .unwrap();
        assert_eq!(
            r,
            HttpRequest::Connect {
                target: Target::Name("h".into(), 1)
            }
        );
        assert_eq!(&rest[..], b"\x16\x03\x01tls hello");
    }

    #[tokio::test]
    async fn bare_newlines_end_a_head_too() {
        let (r, rest) = read(b"CONNECT h:1 HTTP/1.0\nX: y\n\nrest").await.unwrap();
        assert_eq!(
            r,
            HttpRequest::Connect {
                target: Target::Name("h".into(), 1)
            }
        );
        assert_eq!(&rest[..], b"rest");
    }

    #[tokio::test]
    async fn a_head_split_over_many_reads() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move { read_request(&mut server).await });
        for chunk in [
            &b"CONNECT h:1 HTTP/1.1\r"[..],
            b"\n",
            b"X: y\r\n",
            b"\r",
            b"\nbody",
        ] {
            client.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let (r, rest) = task.await.unwrap().unwrap();
        assert_eq!(
            r,
            HttpRequest::Connect {
                target: Target::Name("h".into(), 1)
            }
        );
        assert_eq!(&rest[..], b"body");
    }

    #[tokio::test]
    async fn forward_rewrites_to_origin_form() {
        let (target, head, rest) = forward(
            b"GET http://example.com/a/b?c=d#frag HTTP/1.1\r\n\
              Host: example.com\r\n\
              User-Agent: curl/8\r\n\
              Proxy-Connection: keep-alive\r\n\
              Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
              Accept: */*\r\n\r\n",
        )
        .await;
        assert_eq!(target, Target::Name("example.com".into(), 80));
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn forward_strips_hop_by_hop_and_connection_named_headers() {
        let (_, head, _) = forward(
            b"POST http://10.0.0.5:8080?q HTTP/1.1\r\n\
              connection: Keep-Alive, X-Secret , content-length\r\n\
              KEEP-ALIVE: timeout=5\r\n\
              TE: trailers\r\n\
              Trailer: X-T\r\n\
              Upgrade: websocket\r\n\
              x-secret: 1\r\n\
              Content-Length: 4\r\n\
              X-Kept:  spaced value \r\n\r\nbody",
        )
        .await;
        assert_eq!(
            head,
            "POST /?q HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nContent-Length: 4\r\n\
             X-Kept:  spaced value \r\nConnection: close\r\n\r\n"
        );
        let (target, _, rest) = forward(b"POST http://10.0.0.5:8080?q HTTP/1.1\r\n\r\nbody").await;
        assert_eq!(target, ip("10.0.0.5:8080"));
        assert_eq!(&rest[..], b"body");
    }

    #[tokio::test]
    async fn forward_host_comes_from_the_url() {
        let (target, head, _) = forward(b"GET HTTP://[fd00::1]:81 HTTP/1.0\n\n").await;
        assert_eq!(target, ip("[fd00::1]:81"));
        assert_eq!(
            head,
            "GET / HTTP/1.1\r\nHost: [fd00::1]:81\r\nConnection: close\r\n\r\n"
        );
        let (target, head, _) = forward(b"HEAD http://h_1 HTTP/1.1\r\nhost: other\r\n\r\n").await;
        assert_eq!(target, Target::Name("h_1".into(), 80));
        assert_eq!(
            head,
            "HEAD / HTTP/1.1\r\nHost: h_1\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn forward_refusals() {
        /// An input and whether its error is the expected one.
        type Case = (&'static [u8], fn(&HttpError) -> bool);
        let cases: [Case; 11] = [
            (b"GET / HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::NotAbsolute)
            }),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::NotAbsolute)
            }),
            (b"GET example.com HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::NotAbsolute)
            }),
            (b"GET h/x://y HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::NotAbsolute)
            }),
            (
                b"GET https://example.com/ HTTP/1.1\r\n\r\n",
                |e| matches!(e, HttpError::UnsupportedScheme(s) if s == "https"),
            ),
            (
                b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
                |e| matches!(e, HttpError::UnsupportedScheme(s) if s == "ftp"),
            ),
            (b"GET http://u:p@example.com/ HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::Malformed(_))
            }),
            (b"GET http:///x HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::Malformed(_))
            }),
            (b"GET http://h/ HTTP/2.0\r\n\r\n", |e| {
                matches!(e, HttpError::Malformed(_))
            }),
            (
                b"GET http://h/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                |e| matches!(e, HttpError::Malformed(_)),
            ),
            (b"GET  http://h/ HTTP/1.1\r\n\r\n", |e| {
                matches!(e, HttpError::Malformed(_))
            }),
        ];
        for (input, ok) in cases {
            let r = read(input).await;
            match r {
                Err(ref e) if ok(e) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[tokio::test]
    async fn bad_header_lines_are_malformed() {
        for header in [
            &b" folded"[..],
            b"\tfolded",
            b"NoColon",
            b"Bad Name: x",
            b"Name : x",
            b": empty name",
            b"X: a\x00b",
            b"X: a\rb",
            b"X: \x7f",
        ] {
            let mut req = b"GET http://h/ HTTP/1.1\r\nA: b\r\n".to_vec();
            req.extend_from_slice(header);
            req.extend_from_slice(b"\r\n\r\n");
            let r = read(&req).await;
            assert!(
                matches!(r, Err(HttpError::Malformed(_))),
                "{header:?}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn obs_text_in_values_is_kept() {
        let (r, _) = read(b"GET http://h/ HTTP/1.1\r\nX: caf\xc3\xa9\t\xff\r\n\r\n")
            .await
            .unwrap();
        let HttpRequest::Forward { head, .. } = r else {
            panic!("{r:?}")
        };
        let want = b"\r\nX: caf\xc3\xa9\t\xff\r\n";
        assert!(head.windows(want.len()).any(|w| w == want));
    }

    #[tokio::test]
    async fn oversize_heads_are_refused() {
        let mut req = b"GET http://h/ HTTP/1.1\r\n".to_vec();
        while req.len() < MAX_HEAD + 100 {
            req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        req.extend_from_slice(b"\r\n");
        assert!(matches!(read(&req).await, Err(HttpError::TooLarge)));
        // A head of exactly the limit is fine; what did not fit in the buffer is still
        // in the stream, after the leftover.
        let mut req = b"CONNECT h:1 HTTP/1.1\r\nX: ".to_vec();
        req.resize(MAX_HEAD - 4, b'a');
        req.extend_from_slice(b"\r\n\r\nmore");
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&req).await.unwrap();
        client.shutdown().await.unwrap();
        let (r, rest) = read_request(&mut server).await.unwrap();
        assert!(matches!(r, HttpRequest::Connect { .. }));
        let mut after = rest.to_vec();
        server.read_to_end(&mut after).await.unwrap();
        assert_eq!(after, b"more");
    }

    #[tokio::test]
    async fn early_close() {
        assert!(matches!(read(b"").await, Err(HttpError::Closed)));
        assert!(matches!(
            read(b"GET http://h/ HTTP/1.1\r\nHost").await,
            Err(HttpError::Closed)
        ));
    }

    #[test]
    fn status_responses() {
        assert_eq!(
            status_response(403, "Forbidden", "not allowed\n"),
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\
              Connection: close\r\n\r\nnot allowed\n"
        );
        assert_eq!(
            CONNECT_ESTABLISHED,
            b"HTTP/1.1 200 Connection established\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn random_input_never_panics() {
        let seeds: [&[u8]; 3] = [
            b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com\r\nConnection: x\r\nx: 1\r\n\r\nbody",
            b"CONNECT [fd00::1]:443 HTTP/1.1\r\n\r\n",
            b"GET http://h HTTP/1.0\n\n",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7230);
        for i in 0..3000 {
            let mut v = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(0..6) {
                let at = rng.random_range(0..=v.len());
                match rng.random_range(0..3) {
                    0 if at < v.len() => v[at] = rng.random(),
                    1 => v.insert(at, rng.random()),
                    _ => v.truncate(at),
                }
            }
            let _ = read(&v).await;
        }
        for _ in 0..200 {
            let mut v = vec![0u8; rng.random_range(0..40_000)];
            rng.fill(&mut v[..]);
            let _ = read(&v).await;
        }
    }
}
