//! Leak checks for a running nexd: its idle resources, and waiting (with a deadline) until
//! flows, descriptors and memory are back near idle after a load.

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

/// How close to idle a node must come back.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Descriptors allowed above the idle count.
    pub fd_slack: usize,
    /// Resident KiB allowed above the idle RSS.
    pub rss_slack_kib: u64,
}

/// A node's figures once it came back to idle.
#[derive(Debug, Clone, Copy)]
pub struct Settled {
    /// Resources at that moment.
    pub usage: Usage,
    /// How long after the call it took.
    pub after: Duration,
}

/// Waits until `node` reports no flows and its resources are within `bounds` of `idle`.
pub fn wait_settled(
    node: &Node,
    idle: Usage,
    bounds: Bounds,
    timeout: Duration,
) -> Result<Settled, String> {
    let pid = pid(node);
    let start = Instant::now();
    let mut last = (None::<Flows>, None::<Usage>, String::new());
    let max_polls = (timeout.as_millis() / POLL.as_millis()).max(1) + 1;
    for _ in 0..max_polls {
        let f = flows(node);
        let u = usage(pid);
        if let (Ok(f), Some(u)) = (&f, u) {
            if f.tcp == 0
                && f.udp == 0
                && u.fds <= idle.fds + bounds.fd_slack
                && u.rss_kib <= idle.rss_kib + bounds.rss_slack_kib
            {
                return Ok(Settled {
                    usage: u,
                    after: start.elapsed(),
                });
            }
        }
        last = (f.as_ref().ok().copied(), u, f.err().unwrap_or_default());
        if start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(POLL);
    }
    Err(format!(
        "{} did not return to idle within {timeout:?}: flows {:?}, now {}, idle {idle}, \
         allowed +{} fds and +{:.1} MiB {}",
        node.name,
        last.0,
        last.1.map(|u| u.to_string()).unwrap_or("gone".into()),
        bounds.fd_slack,
        bounds.rss_slack_kib as f64 / 1024.0,
        last.2
    ))
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
