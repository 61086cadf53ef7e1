//! Bulk transfers as a simulator application: A connects to B, one side sends a byte
//! pattern, the other checks every byte, both close.

use crate::host::Host;
use crate::pattern;
use crate::report::FlowReport;
use crate::sim::{App, A, ADDR_A, ADDR_B, B};
use crate::tap::Tap;
use crate::wire::FlowKey;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::IpListenEndpoint;
use std::time::Duration;

/// A gap this long with no new byte for the receiving application counts as a stall: longer
/// than any fast recovery on the paths simulated, the shape of a retransmission timeout.
pub const STALL: Duration = Duration::from_millis(200);

/// Builds the TCP socket each side of a flow uses.
pub type SocketFactory = dyn Fn() -> tcp::Socket<'static>;

/// Which way a flow's data goes (A always opens the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The connecting side sends (nexd's egress: smoltcp sends into the tunnel).
    AToB,
    /// The accepting side sends.
    BToA,
}

/// One flow of a transfer scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// Bytes to send (an upper bound when `send_for` is set).
    pub bytes: u64,
    /// Which way the data goes.
    pub direction: Direction,
    /// When A connects, from the start of the run.
    pub start_at: Duration,
    /// Stop writing new data after this long and close.
    pub send_for: Option<Duration>,
}

impl FlowSpec {
    /// A → B, `bytes` bytes, starting at once.
    pub fn bulk(bytes: u64) -> Self {
        FlowSpec {
            bytes,
            direction: Direction::AToB,
            start_at: Duration::ZERO,
            send_for: None,
        }
    }

    /// A → B for `d` of virtual time, as fast as TCP goes.
    pub fn timed(d: Duration) -> Self {
        FlowSpec {
            send_for: Some(d),
            ..FlowSpec::bulk(u64::MAX)
        }
    }

    /// The same flow with B sending.
    pub fn reverse(mut self) -> Self {
        self.direction = Direction::BToA;
        self
    }

    /// The same flow starting later.
    pub fn start_at(mut self, t: Duration) -> Self {
        self.start_at = t;
        self
    }
}

/// First server port; flow i listens on `SERVER_PORT + i`.
const SERVER_PORT: u16 = 5001;
/// First client port; flow i connects from `CLIENT_PORT + i`.
const CLIENT_PORT: u16 = 10001;

struct FlowRun {
    spec: FlowSpec,
    seed: u64,
    client: SocketHandle,
    server: SocketHandle,
    start: Instant,
    connected: bool,
    target: u64,
    sent: u64,
    received: u64,
    send_closed: bool,
    recv_closed: bool,
    last_progress: Instant,
    last_byte_at: Option<Instant>,
    stalls: u32,
    max_gap: SmolDuration,
    done_at: Option<Instant>,
    failure: Option<String>,
}

impl FlowRun {
    fn sender(&self) -> (usize, SocketHandle) {
        match self.spec.direction {
            Direction::AToB => (A, self.client),
            Direction::BToA => (B, self.server),
        }
    }

    fn receiver(&self) -> (usize, SocketHandle) {
        match self.spec.direction {
            Direction::AToB => (B, self.server),
            Direction::BToA => (A, self.client),
        }
    }

    fn finished(&self) -> bool {
        self.done_at.is_some() || self.failure.is_some()
    }

    fn step(&mut self, id: usize, now: Instant, hosts: &mut [Host; 2]) -> bool {
        if self.finished() || now < self.start {
            return false;
        }
        let mut progress = false;
        if !self.connected {
            self.connected = true;
            progress = true;
            let h = &mut hosts[A];
            let remote = (ADDR_B, SERVER_PORT + id as u16);
            let local = CLIENT_PORT + id as u16;
            let sock = h.sockets.get_mut::<tcp::Socket>(self.client);
            if let Err(e) = sock.connect(h.iface.context(), remote, local) {
                self.failure = Some(format!("connect: {e}"));
                return true;
            }
        }
        progress |= self.send(now, hosts);
        progress |= self.receive(now, hosts);
        self.check_end(now, hosts);
        progress
    }

    fn send(&mut self, now: Instant, hosts: &mut [Host; 2]) -> bool {
        let (h, handle) = self.sender();
        let s = hosts[h].tcp(handle);
        if self.send_closed || !s.may_send() {
            return false;
        }
        if let Some(d) = self.spec.send_for {
            if now >= self.start + SmolDuration::from_micros(d.as_micros() as u64) {
                self.target = self.target.min(self.sent);
            }
        }
        let mut progress = false;
        while self.sent < self.target && s.can_send() {
            let (seed, off) = (self.seed, self.sent);
            let want = usize::try_from(self.target - self.sent).unwrap_or(usize::MAX);
            let n = s
                .send(|buf| {
                    let n = buf.len().min(want);
                    pattern::fill(seed, off, &mut buf[..n]);
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.sent += n as u64;
            progress = true;
        }
        if self.sent == self.target {
            s.close();
            self.send_closed = true;
            progress = true;
        }
        progress
    }

    fn receive(&mut self, now: Instant, hosts: &mut [Host; 2]) -> bool {
        let (h, handle) = self.receiver();
        let r = hosts[h].tcp(handle);
        let before = self.received;
        while r.can_recv() {
            let (seed, off) = (self.seed, self.received);
            let Ok((n, bad)) = r.recv(|buf| {
                (
                    buf.len(),
                    (buf.len(), pattern::first_mismatch(seed, off, buf)),
                )
            }) else {
                break;
            };
            if let Some(at) = bad {
                self.failure = Some(format!("byte {at} differs from what was sent"));
            }
            self.received += n as u64;
        }
        let mut progress = false;
        if self.received > before {
            progress = true;
            let gap = now - self.last_progress;
            if gap > SmolDuration::from_micros(STALL.as_micros() as u64) {
                self.stalls += 1;
            }
            self.max_gap = self.max_gap.max(gap);
            self.last_progress = now;
            self.last_byte_at = Some(now);
        }
        if !self.recv_closed && r.state() == State::CloseWait && !r.can_recv() {
            r.close();
            self.recv_closed = true;
            progress = true;
        }
        progress
    }

    fn check_end(&mut self, now: Instant, hosts: &mut [Host; 2]) {
        let (sh, s) = self.sender();
        let (rh, r) = self.receiver();
        let ss = hosts[sh].tcp(s).state();
        let rs = hosts[rh].tcp(r).state();
        let over = |st: State| matches!(st, State::Closed | State::TimeWait);
        if ss == State::Closed && !self.send_closed {
            self.failure = Some(format!(
                "sender's socket closed (reset or timeout) after {} bytes",
                self.sent
            ));
        } else if rs == State::Closed && !self.recv_closed {
            self.failure = Some(format!(
                "receiver's socket closed (reset or timeout) after {} bytes",
                self.received
            ));
        } else if over(ss) && over(rs) && self.failure.is_none() {
            if self.received == self.sent && self.send_closed && self.recv_closed {
                self.done_at = Some(now);
            } else {
                self.failure = Some(format!(
                    "closed with {} of {} bytes",
                    self.received, self.sent
                ));
            }
        }
    }

    fn report(&self, id: usize, tap: &Tap) -> FlowReport {
        let (sender, receiver) = match self.spec.direction {
            Direction::AToB => ((ADDR_A, CLIENT_PORT), (ADDR_B, SERVER_PORT)),
            Direction::BToA => ((ADDR_B, SERVER_PORT), (ADDR_A, CLIENT_PORT)),
        };
        let key = FlowKey {
            src: sender.0,
            src_port: sender.1 + id as u16,
            dst: receiver.0,
            dst_port: receiver.1 + id as u16,
        };
        let to_std = |d: SmolDuration| Duration::from_micros(d.total_micros());
        let transfer_time = self
            .last_byte_at
            .map(|t| to_std(t - self.start))
            .unwrap_or_default();
        let secs = transfer_time.as_secs_f64();
        FlowReport {
            id,
            direction: self.spec.direction,
            bytes: self.received,
            complete: self.done_at.is_some(),
            failure: self.failure.clone(),
            transfer_time,
            elapsed: self.done_at.map(|t| to_std(t - self.start)),
            goodput_mbit: if secs > 0.0 {
                self.received as f64 * 8.0 / secs / 1e6
            } else {
                0.0
            },
            stalls: self.stalls,
            max_gap: to_std(self.max_gap),
            segments: tap.stats(&key),
        }
    }
}

/// The application running every flow of a scenario.
pub struct Transfer {
    flows: Vec<FlowRun>,
}

impl Transfer {
    /// Creates each flow's sockets (B listens at once; A connects at the flow's start).
    /// `factories[A]` and `factories[B]` build the sockets of each side.
    pub fn new(hosts: &mut [Host; 2], specs: &[FlowSpec], factories: [&SocketFactory; 2]) -> Self {
        let flows = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let client = hosts[A].add_tcp(factories[A]());
                let mut server_socket = factories[B]();
                let port = SERVER_PORT + i as u16;
                let failure = server_socket
                    .listen(IpListenEndpoint { addr: None, port })
                    .err()
                    .map(|e| format!("listen: {e}"));
                let server = hosts[B].add_tcp(server_socket);
                let start = Instant::from_micros(spec.start_at.as_micros() as i64);
                FlowRun {
                    spec: spec.clone(),
                    seed: crate::rng::mix(i as u64 + 1),
                    client,
                    server,
                    start,
                    connected: false,
                    target: spec.bytes,
                    sent: 0,
                    received: 0,
                    send_closed: false,
                    recv_closed: false,
                    last_progress: start,
                    last_byte_at: None,
                    stalls: 0,
                    max_gap: SmolDuration::ZERO,
                    done_at: None,
                    failure,
                }
            })
            .collect();
        Transfer { flows }
    }

    /// Per-flow results so far.
    pub fn reports(&self, tap: &Tap) -> Vec<FlowReport> {
        self.flows
            .iter()
            .enumerate()
            .map(|(i, f)| f.report(i, tap))
            .collect()
    }
}

impl App for Transfer {
    fn step(&mut self, now: Instant, hosts: &mut [Host; 2]) -> bool {
        let mut progress = false;
        for (i, f) in self.flows.iter_mut().enumerate() {
            progress |= f.step(i, now, hosts);
        }
        progress
    }

    fn done(&self) -> bool {
        self.flows.iter().all(FlowRun::finished)
    }

    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.flows
            .iter()
            .filter(|f| !f.finished())
            .flat_map(|f| {
                let stop = f
                    .spec
                    .send_for
                    .filter(|_| !f.send_closed)
                    .map(|d| f.start + SmolDuration::from_micros(d.as_micros() as u64));
                [Some(f.start), stop]
            })
            .flatten()
            .filter(|&t| t > now)
            .min()
    }
}
