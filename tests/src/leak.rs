//! Leak checks for running nexd processes: their idle resources, then after each round of
//! load: flows gone and descriptors back to idle (polled with a deadline) and resident memory
//! within a bound of idle.

use crate::pair::Node;
use crate::procstat::{usage, Usage};
use crate::status::{flows, Flows};
use std::time::{Duration, Instant};

/// Time between polls: each poll runs nexctl, so not too often on a busy machine.
const POLL: Duration = Duration::from_millis(200);

/// The PID of a started node.
pub fn pid(node: &Node) -> u32 {
    node.nexd
        .as_ref()
        .and_then(|n| n.pid())
        .expect("node not started")
}

/// How close to idle nodes must come back.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Descriptors allowed above the idle count.
    pub fd_slack: usize,
    /// Resident KiB allowed above the idle RSS once the flows are gone.
    pub rss_slack_kib: u64,
    /// Deadline for flows and descriptors to drain.
    pub drain: Duration,
    /// Deadline for RSS to come within bound once drained.
    pub rss_wait: Duration,
}

/// The bounds the load tests use (see tests/tests/load.rs for why these numbers).
pub const BOUNDS: Bounds = Bounds {
    fd_slack: 2,
    rss_slack_kib: 48 * 1024,
    // UDP flows close after the idle timeout plus a sweep; TCP flows as soon as both ends close.
    drain: Duration::from_secs(30),
    rss_wait: Duration::from_secs(5),
};

/// Waits until `node` reports no flows and at most `idle.fds + fd_slack` descriptors;
/// returns its resources then and how long that took.
pub fn wait_drained(
    node: &Node,
    idle: Usage,
    fd_slack: usize,
    timeout: Duration,
) -> Result<(Usage, Duration), String> {
    let pid = pid(node);
    let start = Instant::now();
    let mut last: (Option<Flows>, Option<Usage>, String) = (None, None, String::new());
    let max_polls = (timeout.as_millis() / POLL.as_millis()).max(1) + 1;
    for _ in 0..max_polls {
        let f = flows(node);
        let u = usage(pid);
        if let (Ok(f), Some(u)) = (&f, u) {
            if f.tcp == 0 && f.udp == 0 && u.fds <= idle.fds + fd_slack {
                return Ok((u, start.elapsed()));
            }
        }
        last = (f.as_ref().ok().copied(), u, f.err().unwrap_or_default());
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    Err(format!(
        "{}: flows/descriptors did not drain within {timeout:?}: flows {:?}, now {}, idle {idle} \
         (+{fd_slack} fds allowed) {}",
        node.name,
        last.0,
        last.1.map(|u| u.to_string()).unwrap_or("gone".into()),
        last.2
    ))
}

/// Polls the RSS of `pid` until it is at most `limit_kib` or `timeout` passes; returns the
/// last reading and whether it was within the limit.
pub fn wait_rss_within(pid: u32, limit_kib: u64, timeout: Duration) -> (Usage, bool) {
    let start = Instant::now();
    let max_polls = (timeout.as_millis() / POLL.as_millis()).max(1) + 1;
    let mut last = Usage::default();
    for _ in 0..max_polls {
        if let Some(u) = usage(pid) {
            last = u;
            if u.rss_kib <= limit_kib {
                return (u, true);
            }
        }
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    (last, false)
}

/// Waits until `node` reports no flows and its descriptor count holds still for a moment,
/// then returns its resources: the idle baseline.
pub fn idle_usage(node: &Node, timeout: Duration) -> Usage {
    let pid = pid(node);
    let start = Instant::now();
    let mut prev: Option<Usage> = None;
    let max_polls = (timeout.as_millis() / POLL.as_millis()).max(1) + 1;
    for _ in 0..max_polls {
        let idle = flows(node).is_ok_and(|f| f.tcp == 0 && f.udp == 0);
        let u = usage(pid).expect("nexd is running");
        if idle && prev.is_some_and(|p| p.fds == u.fds) {
            return u;
        }
        prev = idle.then_some(u);
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    panic!("{} never became idle: {prev:?}\n{}", node.name, node.log());
}

/// Figures of several nodes across rounds of load, and every bound they broke.
pub struct Ledger {
    test: String,
    bounds: Bounds,
    idle: Vec<Usage>,
    rounds: Vec<Vec<Usage>>,
    /// Broken bounds, one line each.
    pub errors: Vec<String>,
}

impl Ledger {
    /// Records the idle baseline of `nodes` (in this order from now on).
    pub fn new(test: &str, nodes: &[&Node], bounds: Bounds) -> Ledger {
        let idle = nodes
            .iter()
            .map(|n| idle_usage(n, Duration::from_secs(30)))
            .collect();
        Ledger {
            test: test.to_string(),
            bounds,
            idle,
            rounds: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The idle baseline, in node order.
    pub fn idle(&self) -> &[Usage] {
        &self.idle
    }

    /// After a round of load: waits for every node to drain, then checks its RSS bound.
    pub fn after_round(&mut self, nodes: &[&Node]) {
        let round = self.rounds.len() + 1;
        let b = self.bounds;
        let mut figures = Vec::new();
        for (node, idle) in nodes.iter().zip(self.idle.clone()) {
            let drained = wait_drained(node, idle, b.fd_slack, b.drain);
            let (rss, within) =
                wait_rss_within(pid(node), idle.rss_kib + b.rss_slack_kib, b.rss_wait);
            match &drained {
                Ok((_, took)) => eprintln!(
                    "LOAD {} round {round} nexd {}: drained in {:.1}s; now {rss} (idle {idle})",
                    self.test,
                    node.name,
                    took.as_secs_f64()
                ),
                Err(e) => {
                    eprintln!("LOAD {} round {round} {e}", self.test);
                    self.errors.push(format!("round {round}: {e}"));
                }
            }
            if !within {
                self.errors.push(format!(
                    "round {round}: {} keeps RSS {:.1} MiB after the load, idle was {:.1} MiB \
                     (+{:.1} MiB allowed)",
                    node.name,
                    rss.rss_mib(),
                    idle.rss_mib(),
                    b.rss_slack_kib as f64 / 1024.0
                ));
            }
            figures.push(rss);
        }
        self.rounds.push(figures);
    }

    /// Prints the summary (idle, peak, after each round, growth from the first round to the
    /// last) and returns all broken bounds.
    pub fn finish(self, nodes: &[&Node], peaks: &[Usage]) -> Vec<String> {
        for (i, node) in nodes.iter().enumerate() {
            let after: Vec<String> = self
                .rounds
                .iter()
                .map(|r| format!("{:.1} MiB/{} fds", r[i].rss_mib(), r[i].fds))
                .collect();
            let growth = match (self.rounds.first(), self.rounds.last()) {
                (Some(first), Some(last)) => last[i].rss_mib() - first[i].rss_mib(),
                _ => 0.0,
            };
            eprintln!(
                "LOAD {} nexd {}: idle {} | peak {} | after each round: {} | growth {growth:+.1} MiB",
                self.test,
                node.name,
                self.idle[i],
                peaks.get(i).copied().unwrap_or_default(),
                after.join(", ")
            );
        }
        self.errors
    }
}
