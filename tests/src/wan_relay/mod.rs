//! A userspace WAN between two WireGuard endpoints (this kernel has no netem): a UDP relay
//! with two sockets, side A and side B. Datagrams arriving on A leave from B to peer B;
//! datagrams arriving on B leave from A to peer A (fixed, or the source of the last datagram
//! seen on A). Each direction has its own delay, jitter, random loss, rate-limited drop-tail
//! bottleneck and reordering ([`link`]), applied by its own threads ([`forward`]).
//!
//! `testkit wan-relay` runs it; [`crate::wan`] starts that from tests.

pub mod cli;
pub mod counters;
pub mod flood;
pub mod forward;
pub mod link;

use link::Impairment;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything `testkit wan-relay` is told.
#[derive(Clone, Debug)]
pub struct Config {
    /// Side A's socket (peer A sends here).
    pub listen_a: SocketAddr,
    /// Side B's socket (peer B sends here).
    pub listen_b: SocketAddr,
    /// Where datagrams from A go.
    pub peer_b: SocketAddr,
    /// Where datagrams from B go; None = the source of the last datagram received on A.
    pub peer_a: Option<SocketAddr>,
    /// Impairments of each direction (the same both ways).
    pub impairment: Impairment,
    /// Seed of the random decisions (direction B→A uses a different stream of it).
    pub seed: u64,
    /// Exit (printing the counters) after this long; None = until SIGTERM/SIGINT.
    pub duration: Option<Duration>,
}

/// The flags `testkit wan-relay` takes.
pub const USAGE: &str = "wan-relay --listen-a ADDR --listen-b ADDR --peer-b ADDR [--peer-a ADDR] \
[--delay-ms MS] [--jitter-ms MS] [--loss PCT] [--rate-mbit MBIT] [--queue-bytes N] \
[--reorder PCT] [--reorder-ms MS] [--seed N] [--duration-s S]";

fn ms(v: &str, flag: &str) -> Result<Duration, String> {
    let f: f64 = v.parse().map_err(|_| format!("{flag}: bad number {v:?}"))?;
    if !(0.0..=3_600_000.0).contains(&f) {
        return Err(format!("{flag}: {v} out of range"));
    }
    Ok(Duration::from_secs_f64(f / 1000.0))
}

fn pct(v: &str, flag: &str) -> Result<f64, String> {
    let f: f64 = v.parse().map_err(|_| format!("{flag}: bad number {v:?}"))?;
    if !(0.0..=100.0).contains(&f) {
        return Err(format!("{flag}: {v} is not a percentage"));
    }
    Ok(f)
}

fn sock(v: &str, flag: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|e| format!("{flag}: bad address {v:?}: {e}"))
}

impl Config {
    /// Parses `--flag value` pairs (see [`USAGE`]).
    pub fn parse(args: &[String]) -> Result<Config, String> {
        let (mut la, mut lb, mut pb, mut pa) = (None, None, None, None);
        let mut imp = Impairment::default();
        let (mut seed, mut duration) = (1u64, None);
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .as_str();
            let f = flag.as_str();
            match f {
                "--listen-a" => la = Some(sock(v, f)?),
                "--listen-b" => lb = Some(sock(v, f)?),
                "--peer-b" => pb = Some(sock(v, f)?),
                "--peer-a" => pa = Some(sock(v, f)?),
                "--delay-ms" => imp.delay = ms(v, f)?,
                "--jitter-ms" => imp.jitter = ms(v, f)?,
                "--reorder-ms" => imp.reorder_delay = ms(v, f)?,
                "--loss" => imp.loss = pct(v, f)?,
                "--reorder" => imp.reorder = pct(v, f)?,
                "--rate-mbit" => {
                    let r: f64 = v.parse().map_err(|_| format!("{f}: bad number {v:?}"))?;
                    if !(r > 0.0 && r <= 1_000_000.0) {
                        return Err(format!("{f}: {v} out of range"));
                    }
                    imp.rate = Some((r * 1e6) as u64);
                }
                "--queue-bytes" => {
                    imp.queue = v.parse().map_err(|_| format!("{f}: bad number {v:?}"))?
                }
                "--seed" => seed = v.parse().map_err(|_| format!("{f}: bad number {v:?}"))?,
                "--duration-s" => duration = Some(ms(v, f)? * 1000),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(Config {
            listen_a: la.ok_or("--listen-a is required")?,
            listen_b: lb.ok_or("--listen-b is required")?,
            peer_b: pb.ok_or("--peer-b is required")?,
            peer_a: pa,
            impairment: imp,
            seed,
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_every_flag() {
        let c = Config::parse(&args(
            "--listen-a 127.0.0.1:1 --listen-b 127.0.0.1:2 --peer-b 127.0.0.1:3 \
             --peer-a 127.0.0.1:4 --delay-ms 10.5 --jitter-ms 1 --loss 0.3 --rate-mbit 100 \
             --queue-bytes 1250000 --reorder 2 --reorder-ms 4 --seed 9 --duration-s 3",
        ))
        .unwrap();
        assert_eq!(c.peer_a, Some("127.0.0.1:4".parse().unwrap()));
        assert_eq!(c.impairment.delay, Duration::from_micros(10_500));
        assert_eq!(c.impairment.rate, Some(100_000_000));
        assert_eq!(c.impairment.queue, 1_250_000);
        assert_eq!(c.impairment.loss, 0.3);
        assert_eq!(c.impairment.reorder_delay, Duration::from_millis(4));
        assert_eq!((c.seed, c.duration), (9, Some(Duration::from_secs(3))));
    }

    #[test]
    fn rejects_bad_input() {
        let base = "--listen-a 127.0.0.1:1 --listen-b 127.0.0.1:2 --peer-b 127.0.0.1:3";
        for extra in [
            "--loss 101",
            "--loss x",
            "--rate-mbit 0",
            "--delay-ms -1",
            "--bogus 1",
            "--seed",
        ] {
            assert!(
                Config::parse(&args(&format!("{base} {extra}"))).is_err(),
                "{extra}"
            );
        }
        assert!(Config::parse(&args("--listen-a 127.0.0.1:1")).is_err());
    }
}
