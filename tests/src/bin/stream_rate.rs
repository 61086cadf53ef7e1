//! One TCP stream's throughput, directly or through a SOCKS5 proxy, for the benchmark's
//! "SOCKS5 vs rule" rows: the same client measures both, so only the path differs.
//!
//!   stream_rate discard ADDR                     a server that reads and drops everything
//!   stream_rate up|down ADDR SECS                to a discard server / from a firehose
//!   stream_rate up|down PROXY SECS DEST          the same through SOCKS5 proxy PROXY
//!
//! Prints `Mbit/s N` (bytes moved in SECS seconds, after the connection is set up).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("bad address {s:?}: {e}"))
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// A SOCKS5 CONNECT (no authentication) through `proxy` to `dest`.
fn socks5(proxy: SocketAddr, dest: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).map_err(io)?;
    s.write_all(&[5, 1, 0]).map_err(io)?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).map_err(io)?;
    if method != [5, 0] {
        return Err(format!("proxy chose method {method:?}"));
    }
    let mut req = vec![5, 1, 0];
    match dest {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&dest.port().to_be_bytes());
    s.write_all(&req).map_err(io)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).map_err(io)?;
    if head[1] != 0 {
        return Err(format!("proxy replied {:#04x}", head[1]));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        t => return Err(format!("reply address type {t}")),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).map_err(io)?;
    Ok(s)
}

fn measure(mut s: TcpStream, up: bool, secs: u64) -> Result<f64, String> {
    s.set_nodelay(true).map_err(io)?;
    let mut buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut moved = 0u64;
    while Instant::now() < end {
        let n = if up {
            s.write(&buf).map_err(io)?
        } else {
            s.read(&mut buf).map_err(io)?
        };
        if n == 0 {
            return Err("connection closed".into());
        }
        moved += n as u64;
    }
    Ok(moved as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e6)
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, a] if cmd == "discard" => {
            let l = TcpListener::bind(addr(a)?).map_err(io)?;
            println!("ready");
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 * 1024];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
            Ok(())
        }
        [dir, a, secs, rest @ ..] if (dir == "up" || dir == "down") && rest.len() <= 1 => {
            let secs: u64 = secs.parse().map_err(|_| format!("bad SECS {secs:?}"))?;
            let s = match rest {
                [dest] => socks5(addr(a)?, addr(dest)?)?,
                _ => TcpStream::connect(addr(a)?).map_err(io)?,
            };
            let mbits = measure(s, dir == "up", secs)?;
            println!("Mbit/s {}", mbits.floor());
            Ok(())
        }
        _ => Err("usage: stream_rate discard ADDR | up|down ADDR SECS [DEST]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream_rate: {e}");
            ExitCode::from(1)
        }
    }
}
