//! A WAN for end-to-end tests: a `testkit wan-relay` process (see [`crate::wan_relay`])
//! between two WireGuard endpoints, impaired as a [`Path`] says, stopped on drop.
//!
//! ```text
//! peer A ──▶ relay.a ══ delay, jitter, loss, bottleneck, reordering ══ relay.b ──▶ peer B
//! ```

use crate::netns::Netns;
use crate::nexd::workspace_bin;
use crate::wan_relay::counters::Snapshot;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The impairments of each direction of the path (the same both ways).
#[derive(Clone, Debug)]
pub struct Path {
    /// Fixed delay each way (half the round trip).
    pub one_way_delay: Duration,
    /// Uniform variation of the delay, ±.
    pub jitter: Duration,
    /// Random loss each way, percent.
    pub loss: f64,
    /// Bottleneck rate, bits per second; None = unlimited.
    pub rate: Option<u64>,
    /// Drop-tail queue in front of the bottleneck, bytes.
    pub queue: usize,
    /// Percent of datagrams delayed by a further 10 ms, so later ones overtake them.
    pub reorder: f64,
    /// Seed of the random decisions.
    pub seed: u64,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            one_way_delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate: None,
            queue: 1 << 20,
            reorder: 0.0,
            seed: 1,
        }
    }
}

impl Path {
    /// A path with this round-trip time and nothing else.
    pub fn rtt(rtt: Duration) -> Path {
        Path {
            one_way_delay: rtt / 2,
            ..Default::default()
        }
    }

    /// The same path with `loss` percent random loss each way.
    pub fn with_loss(self, loss: f64) -> Path {
        Path { loss, ..self }
    }

    /// The relay's flags for this path.
    pub fn args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}", d.as_secs_f64() * 1000.0);
        let mut v = vec![
            "--delay-ms".to_string(),
            ms(self.one_way_delay),
            "--jitter-ms".into(),
            ms(self.jitter),
            "--loss".into(),
            self.loss.to_string(),
            "--queue-bytes".into(),
            self.queue.to_string(),
            "--reorder".into(),
            self.reorder.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ];
        if let Some(r) = self.rate {
            v.extend(["--rate-mbit".into(), (r as f64 / 1e6).to_string()]);
        }
        v
    }
}

/// A running relay; SIGTERM (then SIGKILL) on drop.
pub struct Relay {
    child: Option<Child>,
    /// Side A's address (peer A sends here).
    pub a: SocketAddr,
    /// Side B's address (peer B sends here).
    pub b: SocketAddr,
    /// Lines it printed after `ready`.
    lines: Arc<Mutex<Vec<String>>>,
}

/// How the sides of a relay are placed.
pub struct Ends {
    /// Side A's socket (port 0: any; the relay reports what it bound).
    pub listen_a: SocketAddr,
    /// Side B's socket.
    pub listen_b: SocketAddr,
    /// Where datagrams from A go.
    pub peer_b: SocketAddr,
    /// Where datagrams from B go; None = wherever A's datagrams came from.
    pub peer_a: Option<SocketAddr>,
}

fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix("ready ")?;
    let mut a = None;
    let mut b = None;
    for part in rest.split_whitespace() {
        match part.split_once('=')? {
            ("a", v) => a = v.parse().ok(),
            ("b", v) => b = v.parse().ok(),
            _ => {}
        }
    }
    Some((a?, b?))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Starts `testkit wan-relay` (inside `ns` if given) and waits for its ready line.
    pub fn start(ns: Option<&Netns>, ends: &Ends, path: &Path) -> Result<Relay, String> {
        let testkit = workspace_bin("testkit");
        let mut cmd = match ns {
            Some(ns) => ns.command(&testkit.display().to_string()),
            None => Command::new(&testkit),
        };
        cmd.arg("wan-relay")
            .args(["--listen-a", &ends.listen_a.to_string()])
            .args(["--listen-b", &ends.listen_b.to_string()])
            .args(["--peer-b", &ends.peer_b.to_string()]);
        if let Some(p) = ends.peer_a {
            cmd.args(["--peer-a", &p.to_string()]);
        }
        let mut child = cmd
            .args(path.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("wan-relay: {e}"))?;
        let stdout = child.stdout.take().ok_or("wan-relay: no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let l = lines.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if first {
                    first = false;
                    let _ = ready_tx.send(line);
                } else {
                    lock(&l).push(line);
                }
            }
        });
        let mut relay = Relay {
            child: Some(child),
            a: ends.listen_a,
            b: ends.listen_b,
            lines,
        };
        let line = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| "wan-relay never said ready".to_string())?;
        let (a, b) = parse_ready(&line).ok_or_else(|| format!("wan-relay said {line:?}"))?;
        relay.a = a;
        relay.b = b;
        Ok(relay)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// The counters of A→B and B→A now (asked for with SIGUSR1).
    pub fn counters(&self) -> Result<(Snapshot, Snapshot), String> {
        let before = lock(&self.lines).len();
        self.signal("-USR1");
        let mut out = None;
        crate::wait_until(Duration::from_secs(10), || {
            out = Self::counters_after(&lock(&self.lines), before);
            out.is_some()
        });
        out.ok_or_else(|| "wan-relay did not print its counters".to_string())
    }

    /// The first pair of counter lines printed after line `from`.
    fn counters_after(lines: &[String], from: usize) -> Option<(Snapshot, Snapshot)> {
        let mut ab = None;
        for l in lines.get(from..)? {
            if let Some(v) = l.strip_prefix("counters a->b ") {
                ab = v.parse().ok();
            } else if let Some(v) = l.strip_prefix("counters b->a ") {
                return Some((ab?, v.parse().ok()?));
            }
        }
        None
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let before = lock(&self.lines).len();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        if !crate::wait_until(Duration::from_secs(5), || {
            matches!(c.try_wait(), Ok(Some(_)))
        }) {
            let _ = c.kill();
        }
        let _ = c.wait();
        // The last counters, in the test's output (shown when it fails).
        crate::wait_until(Duration::from_secs(1), || {
            Self::counters_after(&lock(&self.lines), before).is_some()
        });
        if let Some((ab, ba)) = Self::counters_after(&lock(&self.lines), before) {
            eprintln!("wan-relay a->b {ab}\nwan-relay b->a {ba}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_both_addresses() {
        assert_eq!(
            parse_ready("ready a=127.0.0.1:5 b=[::1]:6\n"),
            Some(("127.0.0.1:5".parse().unwrap(), "[::1]:6".parse().unwrap()))
        );
        assert_eq!(parse_ready("ready"), None);
        assert_eq!(parse_ready("ready a=x b=127.0.0.1:1"), None);
    }

    #[test]
    fn path_args_are_what_the_relay_parses() {
        let p = Path {
            rate: Some(100_000_000),
            queue: 1_250_000,
            ..Path::rtt(Duration::from_millis(20)).with_loss(0.5)
        };
        let mut args: Vec<String> = ["--listen-a", "127.0.0.1:1", "--listen-b", "127.0.0.1:2"]
            .iter()
            .chain(&["--peer-b", "127.0.0.1:3"])
            .map(|s| s.to_string())
            .collect();
        args.extend(p.args());
        let c = crate::wan_relay::Config::parse(&args).unwrap();
        assert_eq!(c.impairment.delay, Duration::from_millis(10));
        assert_eq!(c.impairment.loss, 0.5);
        assert_eq!(c.impairment.rate, Some(100_000_000));
        assert_eq!(c.impairment.queue, 1_250_000);
    }
}
