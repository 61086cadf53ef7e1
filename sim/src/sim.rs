//! The event loop: two hosts, a link each way, a virtual clock that jumps to the next event.

use crate::host::{Host, TUNNEL_MTU};
use crate::link::{Link, LinkConfig};
use crate::tap::Tap;
use crate::wire::TcpInfo;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::Ipv4Address;
use std::time::Duration;

/// Index of host A (the connecting side in the transfer scenarios).
pub const A: usize = 0;
/// Index of host B.
pub const B: usize = 1;
/// Tunnel address of host A.
pub const ADDR_A: Ipv4Address = Ipv4Address::new(100, 100, 0, 1);
/// Tunnel address of host B.
pub const ADDR_B: Ipv4Address = Ipv4Address::new(100, 100, 0, 2);

/// Rounds at one instant before the loop gives up settling (an application that always
/// reports progress would otherwise hold the clock still).
const SETTLE_ROUNDS: usize = 64;

/// The application side: reads and writes sockets between polls.
pub trait App {
    /// Moves data between the application and the hosts' sockets at `now`. Returns true when
    /// it did anything (wrote, read, closed), so the hosts are polled again at the same instant.
    fn step(&mut self, now: Instant, hosts: &mut [Host; 2]) -> bool;
    /// True when the run is over.
    fn done(&self) -> bool;
    /// The next instant the application wants to act with no packet or timer due (a flow
    /// that starts later, a sender that stops at a given time).
    fn next_wakeup(&self, _now: Instant) -> Option<Instant> {
        None
    }
}

/// Why a run ended without the application finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The virtual time limit passed.
    TimedOut,
    /// Nothing in flight, no timer pending, and the application waits: it can never finish.
    Idle,
}

/// Loop counters, to judge the simulator's own cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Distinct instants the clock stopped at.
    pub instants: u64,
    /// Interface polls (both hosts).
    pub polls: u64,
    /// Times smoltcp asked for a poll at or before the instant it was just polled at
    /// (the clock then moves on by 1 µs).
    pub early_polls: u64,
}

/// Two hosts joined by a link each way, on a virtual clock.
pub struct Sim {
    now: Instant,
    /// Host A (index [`A`]) and host B (index [`B`]).
    pub hosts: [Host; 2],
    /// `links[A]` carries A → B, `links[B]` carries B → A.
    pub links: [Link; 2],
    /// Segment counts seen at the links.
    pub tap: Tap,
    stats: LoopStats,
    /// Prints every segment of this port (from `SIM_TRACE_PORT`), for debugging a case.
    trace_port: Option<u16>,
}

impl Sim {
    /// Hosts A (100.100.0.1) and B (100.100.0.2) with MTU 1420 over these links.
    pub fn new(a_to_b: LinkConfig, b_to_a: LinkConfig, seed: u64) -> Self {
        Sim {
            now: Instant::ZERO,
            hosts: [
                Host::new(ADDR_A, TUNNEL_MTU, crate::rng::mix(seed ^ 0xA)),
                Host::new(ADDR_B, TUNNEL_MTU, crate::rng::mix(seed ^ 0xB)),
            ],
            links: [Link::new(a_to_b), Link::new(b_to_a)],
            tap: Tap::default(),
            stats: LoopStats::default(),
            trace_port: std::env::var("SIM_TRACE_PORT")
                .ok()
                .and_then(|p| p.parse().ok()),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Loop counters so far.
    pub fn loop_stats(&self) -> LoopStats {
        self.stats
    }

    /// Runs until `app` is done or `limit` of virtual time has passed from now.
    pub fn run(&mut self, app: &mut dyn App, limit: Duration) -> Result<(), RunError> {
        let deadline = self.now + SmolDuration::from_micros(limit.as_micros() as u64);
        loop {
            set_virtual_clock(self.now);
            self.stats.instants += 1;
            self.deliver_due();
            for _ in 0..SETTLE_ROUNDS {
                self.poll_hosts();
                if !app.step(self.now, &mut self.hosts) {
                    break;
                }
            }
            if app.done() {
                return Ok(());
            }
            let next = self.next_event(app).ok_or(RunError::Idle)?;
            if next > deadline {
                self.now = deadline;
                return Err(RunError::TimedOut);
            }
            self.now = next;
        }
    }

    /// The earliest of: a packet arriving, a host's timer, the application's wake-up.
    fn next_event(&mut self, app: &dyn App) -> Option<Instant> {
        let now = self.now;
        let mut next = app
            .next_wakeup(now)
            .map(|t| t.max(now + SmolDuration::from_micros(1)));
        for link in &self.links {
            // A zero-delay link may deliver at this very instant.
            next = earliest(next, link.next_arrival().map(|t| t.max(now)));
        }
        for host in &mut self.hosts {
            if let Some(t) = host.poll_at(now) {
                let t = if t <= now {
                    // Polled at `now` already: asking again for `now` would freeze the clock.
                    self.stats.early_polls += 1;
                    now + SmolDuration::from_micros(1)
                } else {
                    t
                };
                next = earliest(next, Some(t));
            }
        }
        next
    }

    fn deliver_due(&mut self) {
        for (i, link) in self.links.iter_mut().enumerate() {
            while let Some(p) = link.pop_due(self.now) {
                if let Some(seg) = TcpInfo::parse(&p) {
                    trace(self.trace_port, self.now, "deliver", &seg);
                    self.tap.on_deliver(&seg);
                }
                self.hosts[1 - i].device.rx.push_back(p);
            }
        }
    }

    fn poll_hosts(&mut self) {
        for (host, link) in self.hosts.iter_mut().zip(self.links.iter_mut()) {
            host.poll(self.now);
            self.stats.polls += 1;
            while let Some(p) = host.device.tx.pop_front() {
                if let Some(seg) = TcpInfo::parse(&p) {
                    trace(self.trace_port, self.now, "send", &seg);
                    self.tap.on_send(&seg);
                }
                link.send(self.now, p);
            }
        }
    }
}

thread_local! {
    /// The virtual clock in milliseconds, for TCP timestamps (smoltcp's generator is a plain
    /// `fn`, so it cannot capture the simulator).
    static VIRTUAL_MS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn set_virtual_clock(now: Instant) {
    // From 1: a zero echo means "no timestamp" to the receiver.
    VIRTUAL_MS.with(|c| c.set(now.total_millis() as u32 + 1));
}

/// RFC 7323 timestamp values on the virtual clock: every simulated socket sending
/// timestamps uses this instead of a wall clock, so runs stay deterministic.
pub fn virtual_tsval() -> u32 {
    VIRTUAL_MS.with(|c| c.get())
}

fn trace(port: Option<u16>, now: Instant, what: &str, seg: &TcpInfo) {
    if port.is_some_and(|p| p == seg.src_port || p == seg.dst_port) {
        eprintln!(
            "{:>10.3} {what:<7} {seg:?}",
            now.total_micros() as f64 / 1000.0
        );
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
