//! Small real servers and clients for end-to-end tests that must run inside a network
//! namespace (`ip netns exec NS testkit ...`).

use nexd_e2e::traffic;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: testkit genkey | tcp-echo ADDR | udp-echo ADDR | http-serve ADDR FILE | \
         tcp-echo-check ADDR BYTES SEED | udp-echo-check ADDR COUNT SIZE | \
         conn-rate ADDR THREADS SECONDS [client-closes|server-closes] | \
         tcp-reply-close ADDR BYTES | rtt ADDR COUNT SIZE | hold-server ADDR | hold-conns ADDR N | \
         firehose ADDR | slow-read ADDR SECONDS KBPS | paced-echo-check ADDR BYTES SEED KBPS | \
         udp-probe SRC DST COUNT | tcp-probe SRC DST SECONDS | \
         tcp-load ADDR CONNS BYTES SEED | udp-flood SINK DST SECONDS SIZE MBIT | \
         tcp-echo-close ADDR BYTES | conn-serial ADDR COUNT SECONDS BYTES | \
         socks-forward LISTEN SOCKS DEST | socks-request SOCKS connect|udp DEST [USER:PASS] | \
         socks-get SOCKS DEST PATH now|pause | count-accepts ADDR FILE | \
         http-serve ADDR FILE [REQUEST_LOG] | proxy-proto-server ADDR | \
         proxy-proto-client SRC DST BYTES SEED | {}",
        nexd_e2e::wan_relay::USAGE
    );
    ExitCode::from(64)
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd] if cmd == "genkey" => {
            let k = nexd_e2e::nexd::Keypair::generate();
            println!("{} {}", k.private, k.public);
            Ok(())
        }
        [cmd, a] if cmd == "tcp-echo" => {
            traffic::tcp_echo_server(traffic::listen(addr(a)?).map_err(|e| e.to_string())?);
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a, len] if cmd == "tcp-reply-close" => {
            let len = len.parse().map_err(|_| "bad BYTES")?;
            traffic::tcp_reply_close_server(
                traffic::listen(addr(a)?).map_err(|e| e.to_string())?,
                len,
            );
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a, n] if cmd == "tcp-echo-close" => {
            let n = n.parse().map_err(|_| "bad BYTES")?;
            traffic::tcp_echo_close_server(
                traffic::listen(addr(a)?).map_err(|e| e.to_string())?,
                n,
            );
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a, count, secs, n] if cmd == "conn-serial" => conn_serial(a, count, secs, n),
        [cmd, a] if cmd == "udp-echo" => {
            traffic::udp_echo_server(UdpSocket::bind(addr(a)?).map_err(|e| e.to_string())?);
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a, file, log @ ..] if cmd == "http-serve" && log.len() <= 1 => {
            // Any request gets FILE; with REQUEST_LOG, each request's head is appended to it
            // (followed by an empty line) before the answer goes out.
            let body = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let l = traffic::listen(addr(a)?).map_err(|e| e.to_string())?;
            let log = log.first().cloned();
            println!("ready");
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let body = body.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Some(log) = log {
                        let end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                        let entry = format!("{}\r\n\r\n", String::from_utf8_lossy(&req[..end]));
                        let appended = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .and_then(|mut f| f.write_all(entry.as_bytes()));
                        if let Err(e) = appended {
                            eprintln!("testkit: {log}: {e}");
                            return;
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(&body);
                });
            }
            Ok(())
        }
        [cmd, a, n, seed] if cmd == "tcp-echo-check" => {
            let n = n.parse().map_err(|_| "bad BYTES")?;
            let seed = seed.parse().map_err(|_| "bad SEED")?;
            traffic::tcp_echo_roundtrip(addr(a)?, n, seed)?;
            println!("ok");
            Ok(())
        }
        [cmd, a, count, size] if cmd == "udp-echo-check" => {
            let count = count.parse().map_err(|_| "bad COUNT")?;
            let size = size.parse().map_err(|_| "bad SIZE")?;
            traffic::udp_echo_check(addr(a)?, count, size)?;
            println!("ok");
            Ok(())
        }
        [cmd, a, threads, secs, mode @ ..] if cmd == "conn-rate" && mode.len() <= 1 => {
            let threads = threads.parse().map_err(|_| "bad THREADS")?;
            let secs: f64 = secs.parse().map_err(|_| "bad SECONDS")?;
            let closer = match mode.first().map(String::as_str) {
                None | Some("client-closes") => traffic::Closer::Client,
                Some("server-closes") => traffic::Closer::Server,
                Some(m) => return Err(format!("bad MODE {m:?}")),
            };
            let r = traffic::connection_rate(
                addr(a)?,
                threads,
                std::time::Duration::from_secs_f64(secs),
                closer,
            );
            println!(
                "conn_per_sec={:.0} ok={} failed={} max_ms={} over_500ms={}",
                r.ok as f64 / r.elapsed.as_secs_f64(),
                r.ok,
                r.failed,
                r.slowest.as_millis(),
                r.over_500ms
            );
            Ok(())
        }
        [cmd, a, count, size] if cmd == "rtt" => {
            let count: usize = count.parse().map_err(|_| "bad COUNT")?;
            let size = size.parse().map_err(|_| "bad SIZE")?;
            let r = traffic::round_trips(addr(a)?, count, size).map_err(|e| e.to_string())?;
            let pct = |p: f64| r[((r.len() as f64 * p) as usize).min(r.len() - 1)].as_micros();
            println!("p50_us={} p99_us={}", pct(0.5), pct(0.99));
            Ok(())
        }
        [cmd, a] if cmd == "hold-server" => {
            // Accepts and keeps connections without reading: for idle-connection memory.
            let l = traffic::listen(addr(a)?).map_err(|e| e.to_string())?;
            println!("ready");
            let mut held = Vec::new();
            for c in l.incoming() {
                held.extend(c.ok());
            }
            Ok(())
        }
        [cmd, a, n] if cmd == "hold-conns" => {
            // Opens N connections, says "ready", holds them until stdin closes.
            let n: usize = n.parse().map_err(|_| "bad N")?;
            let target = addr(a)?;
            let mut held = Vec::with_capacity(n);
            for i in 0..n {
                let c = std::net::TcpStream::connect_timeout(
                    &target,
                    std::time::Duration::from_secs(10),
                )
                .map_err(|e| format!("connection {i}: {e}"))?;
                held.push(c);
            }
            println!("ready {}", held.len());
            let mut sink = String::new();
            let _ = std::io::stdin().read_to_string(&mut sink);
            Ok(())
        }
        [cmd, a] if cmd == "firehose" => {
            // Writes pseudo-random bytes to every connection as fast as it is read.
            let l = traffic::listen(addr(a)?).map_err(|e| e.to_string())?;
            println!("ready");
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let chunk = traffic::payload(64 * 1024, 1);
                    while c.write_all(&chunk).is_ok() {}
                });
            }
            Ok(())
        }
        [cmd, a, secs, kbps] if cmd == "slow-read" => {
            // Reads from a firehose at a limited rate for SECS seconds.
            let secs: u64 = secs.parse().map_err(|_| "bad SECONDS")?;
            let kbps: u64 = kbps.parse().map_err(|_| "bad KBPS")?;
            let mut c = std::net::TcpStream::connect(addr(a)?).map_err(|e| e.to_string())?;
            let start = std::time::Instant::now();
            let mut buf = vec![0u8; 1024];
            let mut total = 0u64;
            println!("ready");
            while start.elapsed().as_secs() < secs {
                let n = c.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("firehose closed".into());
                }
                total += n as u64;
                let due = std::time::Duration::from_secs_f64(total as f64 / (kbps as f64 * 1024.0));
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            println!("read {total} bytes");
            Ok(())
        }
        [cmd, a, n, seed, kbps] if cmd == "paced-echo-check" => paced_echo_check(a, n, seed, kbps),
        [cmd, src, dst, count] if cmd == "udp-probe" => udp_probe(src, dst, count),
        [cmd, src, dst, secs] if cmd == "tcp-probe" => tcp_probe(src, dst, secs),
        [cmd, a, conns, bytes, seed] if cmd == "tcp-load" => tcp_load(a, conns, bytes, seed),
        [cmd, rest @ ..] if cmd == "wan-relay" => nexd_e2e::wan_relay::cli::main(rest),
        [cmd, sink, dst, secs, size, mbit] if cmd == "udp-flood" => {
            nexd_e2e::wan_relay::flood::main(sink, dst, secs, size, mbit)
        }
        [cmd, l, socks, dest] if cmd == "socks-forward" => proxy_kit::socks_forward(l, socks, dest),
        [cmd, socks, command, dest, auth @ ..] if cmd == "socks-request" && auth.len() <= 1 => {
            proxy_kit::socks_request(socks, command, dest, auth.first().map(String::as_str))
        }
        [cmd, socks, dest, path, mode] if cmd == "socks-get" => {
            proxy_kit::socks_get(socks, dest, path, mode)
        }
        [cmd, a, file] if cmd == "count-accepts" => proxy_kit::count_accepts(a, file),
        [cmd, a] if cmd == "proxy-proto-server" => proxy_kit::proxy_proto_server(a),
        [cmd, src, dst, n, seed] if cmd == "proxy-proto-client" => {
            proxy_kit::proxy_proto_client(src, dst, n, seed)
        }
        _ => Err(String::new()),
    }
}

/// A checksummed echo round trip at a limited rate that reports `progress BYTES` (bytes
/// echoed back) on stdout every 256 KiB, then `ok`: the caller injects a fault mid-transfer.
fn paced_echo_check(a: &str, n: &str, seed: &str, kbps: &str) -> Result<(), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let n: usize = n.parse().map_err(|_| "bad BYTES")?;
    let seed: u64 = seed.parse().map_err(|_| "bad SEED")?;
    let kbps: u64 = kbps.parse().map_err(|_| "bad KBPS")?;
    let progress = Arc::new(AtomicU64::new(0));
    let target = addr(a)?;
    let p = progress.clone();
    let t = std::thread::spawn(move || {
        nexd_e2e::faults::paced_echo_roundtrip(
            target,
            n,
            seed,
            kbps * 1024,
            std::time::Duration::from_secs(60),
            p,
        )
    });
    let mut reported = 0u64;
    // Bounded: the transfer itself gives up after 60 s without data.
    while !t.is_finished() {
        let now = progress.load(Ordering::SeqCst);
        if now >= reported + 256 * 1024 {
            reported = now;
            println!("progress {now}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.join().map_err(|_| "transfer panicked")??;
    println!("ok");
    Ok(())
}

/// COUNT connections one after another (at most SECONDS) to an echo server that closes
/// first: prints `ok=N failed=F slow=S max_ms=M p99_ms=P conn_per_sec=R`, where slow counts
/// connections over 500 ms, and the slowest and failed ones on stderr.
fn conn_serial(a: &str, count: &str, secs: &str, n: &str) -> Result<(), String> {
    let count: u64 = count.parse().map_err(|_| "bad COUNT")?;
    let secs: f64 = secs.parse().map_err(|_| "bad SECONDS")?;
    let n: usize = n.parse().map_err(|_| "bad BYTES")?;
    let slow = std::time::Duration::from_millis(500);
    let r = traffic::serial_connections(
        addr(a)?,
        count,
        std::time::Duration::from_secs_f64(secs),
        n,
        slow,
    );
    let mut sorted = r.times.clone();
    sorted.sort_unstable();
    let ms = |d: Option<&std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let p99 = sorted.get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)));
    println!(
        "ok={} failed={} slow={} max_ms={:.1} p99_ms={:.1} conn_per_sec={:.0}",
        r.ok,
        r.failed,
        r.slow,
        ms(sorted.last()),
        ms(p99),
        r.ok as f64 / r.elapsed.as_secs_f64().max(1e-9),
    );
    for (i, t) in r
        .times
        .iter()
        .enumerate()
        .filter(|(_, t)| **t > slow)
        .take(20)
    {
        eprintln!(
            "testkit: connection {i} took {:.0} ms",
            t.as_secs_f64() * 1e3
        );
    }
    for e in &r.errors {
        eprintln!("testkit: {e}");
    }
    Ok(())
}

/// Sends COUNT datagrams from SRC (an address, port chosen by the kernel) to DST and prints
/// `replies N`: how many came back within a second of the last one sent.
fn udp_probe(src: &str, dst: &str, count: &str) -> Result<(), String> {
    let count: usize = count.parse().map_err(|_| "bad COUNT")?;
    let sock = UdpSocket::bind((src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let dst = addr(dst)?;
    let mut replies = 0;
    let mut buf = [0u8; 2048];
    for i in 0..count {
        sock.send_to(&traffic::payload(100, i as u64), dst)
            .map_err(|e| format!("send: {e}"))?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        if sock.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
    }
    println!("replies {replies}");
    Ok(())
}

/// Connects from SRC to DST within SECONDS and prints `connected` or `failed: REASON`.
fn tcp_probe(src: &str, dst: &str, secs: &str) -> Result<(), String> {
    let secs: u64 = secs.parse().map_err(|_| "bad SECONDS")?;
    let src: std::net::IpAddr = src.parse().map_err(|_| "bad SRC")?;
    let dst = addr(dst)?;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(dst),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::new(src, 0).into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    match sock.connect_timeout(&dst.into(), std::time::Duration::from_secs(secs)) {
        Ok(()) => println!("connected"),
        Err(e) => println!("failed: {e}"),
    }
    Ok(())
}

/// CONNS concurrent echo connections to ADDR: prints "open N" once all are open, waits for a
/// line on stdin (the test inspects the proxy meanwhile), then moves BYTES each way per
/// connection and prints "verified V failed F".
fn tcp_load(a: &str, conns: &str, bytes: &str, seed: &str) -> Result<(), String> {
    let conns = conns.parse().map_err(|_| "bad CONNS")?;
    let bytes = bytes.parse().map_err(|_| "bad BYTES")?;
    let seed = seed.parse().map_err(|_| "bad SEED")?;
    nexd_e2e::procstat::raise_nofile_limit();
    let rt = nexd_e2e::load::runtime();
    let report = nexd_e2e::load::tcp::concurrent_echo(
        &rt,
        addr(a)?,
        conns,
        bytes,
        seed,
        std::time::Duration::from_secs(60),
        |open| {
            println!("open {open}");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        },
    );
    println!(
        "verified {} failed {}",
        report.verified,
        report.failures.len()
    );
    for f in report.failures.iter().take(10) {
        eprintln!("testkit: {f}");
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} connections failed", report.failures.len()))
    }
}

/// Clients and servers for the SOCKS5/HTTP proxy server and PROXY protocol tests.
mod proxy_kit {
    use super::addr;
    use nexd_e2e::socks::{self, Dest};
    use nexd_e2e::traffic;
    use std::io::{BufRead, Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::time::Duration;

    fn dest(s: &str) -> Result<Dest, String> {
        s.parse()
    }

    /// Copies `from` to `to` until EOF, then half-closes `to`.
    fn pump(mut from: TcpStream, mut to: TcpStream) {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    }

    /// Listens on LISTEN; every connection is carried to DEST through a SOCKS5 CONNECT via
    /// SOCKS (no authentication), both ways, half-closes passed on (for clients without
    /// SOCKS support, such as psql).
    pub fn socks_forward(l: &str, s: &str, d: &str) -> Result<(), String> {
        let server = addr(s)?;
        let target = dest(d)?;
        let listener = traffic::listen(addr(l)?).map_err(|e| e.to_string())?;
        println!("ready");
        for c in listener.incoming() {
            let Ok(client) = c else { continue };
            let target = target.clone();
            std::thread::spawn(move || {
                let upstream = match socks::connect(server, &target, None) {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("testkit socks-forward: {e}");
                        return;
                    }
                };
                let _ = upstream.set_read_timeout(None);
                let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                    return;
                };
                let up = std::thread::spawn(move || pump(client, upstream));
                pump(u2, c2);
                let _ = up.join();
            });
        }
        Ok(())
    }

    /// One SOCKS5 request; prints how it ended (`method 0xff`, `auth 0x01` or
    /// `reply 0xNN bound ADDR`). Exits 0 whatever the server answered.
    pub fn socks_request(
        s: &str,
        command: &str,
        d: &str,
        auth: Option<&str>,
    ) -> Result<(), String> {
        let cmd = match command {
            "connect" => socks::CMD_CONNECT,
            "udp" => socks::CMD_UDP_ASSOCIATE,
            c => return Err(format!("bad command {c:?}: connect or udp")),
        };
        let auth = match auth {
            Some(a) => Some(a.split_once(':').ok_or("USER:PASS")?),
            None => None,
        };
        let (_conn, outcome) = socks::request(addr(s)?, cmd, &dest(d)?, auth)?;
        println!("{outcome}");
        Ok(())
    }

    /// `GET PATH` from the HTTP server DEST through a SOCKS5 CONNECT via SOCKS; checks the
    /// status and length, prints `body LEN SHA256`. With `pause`, it prints `started` once
    /// the first body bytes are in and waits for a line on stdin before reading the rest.
    pub fn socks_get(s: &str, d: &str, path: &str, mode: &str) -> Result<(), String> {
        let pause = match mode {
            "now" => false,
            "pause" => true,
            m => return Err(format!("bad mode {m:?}: now or pause")),
        };
        let target = dest(d)?;
        let mut c = socks::connect(addr(s)?, &target, None)?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        c.write_all(req.as_bytes())
            .map_err(|e| format!("request: {e}"))?;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let head_end = loop {
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match c.read(&mut buf) {
                Ok(0) => return Err(format!("closed after {} bytes of head", got.len())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("head: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200 ") {
            return Err(format!("response {head:?}"));
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        let mut body = got.split_off(head_end);
        if pause {
            while body.is_empty() {
                match c.read(&mut buf) {
                    Ok(0) => return Err("closed before the body".into()),
                    Ok(n) => body.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(format!("body: {e}")),
                }
            }
            println!("started {}", body.len());
            std::io::stdout().flush().map_err(|e| e.to_string())?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
        }
        c.read_to_end(&mut body)
            .map_err(|e| format!("body after {} bytes: {e}", body.len()))?;
        if body.len() != len {
            return Err(format!(
                "body has {} bytes, Content-Length {len}",
                body.len()
            ));
        }
        println!("body {} {}", body.len(), traffic::sha256(&body));
        Ok(())
    }

    /// Accepts connections on ADDR and appends `accepted FROM` to FILE for each (then
    /// closes it): a server that tells whether anything ever reached it.
    pub fn count_accepts(a: &str, file: &str) -> Result<(), String> {
        let l = traffic::listen(addr(a)?).map_err(|e| e.to_string())?;
        std::fs::write(file, "").map_err(|e| format!("{file}: {e}"))?;
        println!("ready");
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let from = c.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            std::fs::OpenOptions::new()
                .append(true)
                .open(file)
                .and_then(|mut f| writeln!(f, "accepted {from}"))
                .map_err(|e| format!("{file}: {e}"))?;
        }
        Ok(())
    }

    /// A server behind a PROXY protocol sender: each connection must start with a v1 or v2
    /// header (parsed strictly); it answers `proxy=vN src=IP:PORT dst=IP:PORT` and a newline,
    /// then echoes the rest of the stream. A bad header gets `error: WHY` and the close.
    pub fn proxy_proto_server(a: &str) -> Result<(), String> {
        let l = traffic::listen(addr(a)?).map_err(|e| e.to_string())?;
        println!("ready");
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                match nexd_e2e::proxy_proto::read_header(&mut c) {
                    Ok(h) => {
                        let line = format!("proxy=v{} src={} dst={}\n", h.version, h.src, h.dst);
                        if c.write_all(line.as_bytes()).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = c.write_all(format!("error: {e}\n").as_bytes());
                        return;
                    }
                }
                traffic::echo_until_eof(&mut c);
            });
        }
        Ok(())
    }

    /// Connects from SRC (IP:PORT) to DST, prints the server's first line as
    /// `header: LINE`, then sends BYTES (seeded) and checks the echo (length and SHA-256):
    /// `ok`.
    pub fn proxy_proto_client(src: &str, dst: &str, n: &str, seed: &str) -> Result<(), String> {
        let n: usize = n.parse().map_err(|_| "bad BYTES")?;
        let seed: u64 = seed.parse().map_err(|_| "bad SEED")?;
        let (src, dst) = (addr(src)?, addr(dst)?);
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| e.to_string())?;
        sock.bind(&src.into())
            .map_err(|e| format!("bind {src}: {e}"))?;
        sock.connect_timeout(&dst.into(), Duration::from_secs(10))
            .map_err(|e| format!("connect {dst}: {e}"))?;
        let mut c: TcpStream = sock.into();
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\n") {
            match c.read(&mut b) {
                Ok(0) => {
                    return Err(format!(
                        "closed before a full first line: {:?}",
                        String::from_utf8_lossy(&line)
                    ))
                }
                Ok(_) => line.push(b[0]),
                Err(e) => return Err(format!("first line: {e}")),
            }
            if line.len() > 512 {
                return Err("first line too long".into());
            }
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        println!("header: {line}");
        if line.starts_with("error") {
            return Err(format!("server: {line}"));
        }
        let data = traffic::payload(n, seed);
        let mut w = c.try_clone().map_err(|e| e.to_string())?;
        let to_send = data.clone();
        let writer = std::thread::spawn(move || -> Result<(), String> {
            w.write_all(&to_send).map_err(|e| format!("write: {e}"))?;
            w.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))
        });
        let mut got = Vec::with_capacity(n);
        c.read_to_end(&mut got)
            .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
        writer.join().map_err(|_| "writer panicked")??;
        traffic::check_echo(&data, &got)?;
        println!("ok");
        Ok(())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => usage(),
        Err(e) => {
            eprintln!("testkit: {e}");
            ExitCode::FAILURE
        }
    }
}
