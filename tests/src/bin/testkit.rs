//! Small real servers and clients for end-to-end tests that must run inside a network
//! namespace (`ip netns exec NS testkit ...`).

use nexd_e2e::traffic;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: testkit genkey | tcp-echo ADDR | udp-echo ADDR | http-serve ADDR FILE | \
         tcp-echo-check ADDR BYTES SEED | udp-echo-check ADDR COUNT SIZE"
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
            traffic::tcp_echo_server(TcpListener::bind(addr(a)?).map_err(|e| e.to_string())?);
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a] if cmd == "udp-echo" => {
            traffic::udp_echo_server(UdpSocket::bind(addr(a)?).map_err(|e| e.to_string())?);
            println!("ready");
            std::thread::park();
            Ok(())
        }
        [cmd, a, file] if cmd == "http-serve" => {
            let body = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let l = TcpListener::bind(addr(a)?).map_err(|e| e.to_string())?;
            println!("ready");
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
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
        _ => Err(String::new()),
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
