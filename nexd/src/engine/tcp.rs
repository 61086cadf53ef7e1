//! One proxied TCP connection: a smoltcp socket on the tunnel side, a host socket on the
//! other, and the bounded queues between them.

use super::host::{FlowShared, CHUNK};
use bytes::{Buf, Bytes};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, State};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};

/// An established connection whose sent data is not acknowledged for this long is aborted.
const UNACKED_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(120);

/// A TCP flow as the engine sees it.
pub struct TcpFlow {
    /// The flow's own socket set, holding just its socket (see `tcp_demux`).
    pub set: SocketSet<'static>,
    /// The socket in `set`.
    handle: SocketHandle,
    /// Packets routed to this flow, waiting for its next poll.
    pub rx: VecDeque<Vec<u8>>,
    /// The timer queued for this flow (smoltcp clock, µs); older queue entries are stale.
    pub deadline: Option<i64>,
    /// Queued for servicing in the current pump.
    pub dirty: bool,
    /// The connection's tuple as packets arrive (remote, local): its key in the demux index.
    pub tuple: super::tcp_demux::Tuple,
    /// Ephemeral tunnel source (egress only), released when the socket is closed.
    pub local: Option<(IpAddr, u16)>,
    /// Where the flow goes (for logs).
    pub dest: SocketAddr,
    /// The rule it was opened through, whose flow slot it holds.
    pub origin: Option<super::rules::FlowOrigin>,
    /// The proxy server it was opened through, whose flow slot it holds.
    pub gateway: Option<nexd_common::Gateway>,
    /// A proxy server's client waiting for the connection to come up (or fail).
    pub connect_reply: Option<tokio::sync::oneshot::Sender<super::host::ConnectOutcome>>,
    /// Bytes moved host → tunnel and tunnel → host (per-rule counters).
    pub moved: (u64, u64),
    /// When the flow began (for its summary line).
    pub started: std::time::Instant,
    /// Ingress only: the connection's 4-tuple, guarded against duplicate SYNs while it lives.
    pub ingress_tuple: Option<super::syn_guard::Tuple>,
    /// Buffer bytes (both directions) the socket has grown by beyond its first buffers, as
    /// last counted in the engine's memory budget.
    pub grown: usize,
    initial_buffers: usize,
    /// Ingress only: the host destination is dialled once the peer completes the handshake,
    /// so a SYN that goes no further never reaches the local server.
    dial_when_established: bool,
    /// Bytes for the host writer. `None` before the host side exists (ingress dialing)
    /// and after the remote side finished.
    to_host: Option<mpsc::Sender<Bytes>>,
    /// Host bytes not yet accepted by smoltcp; bounded by the reader's credits.
    pending: VecDeque<Bytes>,
    credits: Arc<Semaphore>,
    shared: Arc<FlowShared>,
    host_attached: bool,
    host_eof: bool,
    fin_sent: bool,
    remote_fin: bool,
    established: bool,
    /// Stall watch: the queues at the last check and how many checks in a row saw them
    /// unchanged with data waiting.
    last_queues: (usize, usize),
    still_checks: u8,
}

/// What [`TcpFlow::service`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Still running.
    Open,
    /// Socket closed and host side told; remove the flow.
    Done,
}

impl TcpFlow {
    /// A flow whose host side will be attached later, owning `socket`.
    pub fn new(
        socket: Socket<'static>,
        tuple: super::tcp_demux::Tuple,
        local: Option<(IpAddr, u16)>,
        dest: SocketAddr,
    ) -> Self {
        let (rx, tx) = socket.buffer_capacities();
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        TcpFlow {
            set,
            handle,
            rx: VecDeque::new(),
            deadline: None,
            dirty: false,
            tuple,
            local,
            dest,
            origin: None,
            gateway: None,
            connect_reply: None,
            moved: (0, 0),
            started: std::time::Instant::now(),
            ingress_tuple: None,
            grown: 0,
            initial_buffers: rx + tx,
            dial_when_established: false,
            to_host: None,
            pending: VecDeque::new(),
            credits: Arc::new(Semaphore::new(super::host::HOST_CREDITS)),
            shared: Arc::new(FlowShared::default()),
            host_attached: false,
            host_eof: false,
            fin_sent: false,
            remote_fin: false,
            established: false,
            last_queues: (0, 0),
            still_checks: 0,
        }
    }

    /// Ingress: dial [`TcpFlow::dest`] once the handshake completes (see
    /// [`TcpFlow::take_dial`]).
    pub fn dial_when_established(&mut self) {
        self.dial_when_established = true;
    }

    /// Whether the host side should be dialled now: once, after the handshake completed.
    pub fn take_dial(&mut self) -> bool {
        let now = self.dial_when_established && self.established;
        if now {
            self.dial_when_established = false;
        }
        now
    }

    /// How the flow ended, for its summary line.
    pub fn end_reason(&self) -> &'static str {
        match (self.established, self.remote_fin, self.fin_sent) {
            (false, _, _) => "never established",
            (true, true, true) => "closed",
            (true, true, false) => "closed by the tunnel side",
            (true, false, true) => "closed by the host side, then reset",
            (true, false, false) => "reset",
        }
    }

    /// Whether the connection ever got past the handshake.
    pub fn established(&self) -> bool {
        self.established
    }

    /// Connects the host side: returns what the host I/O task needs.
    pub fn attach_host(&mut self) -> (mpsc::Receiver<Bytes>, Arc<Semaphore>, Arc<FlowShared>) {
        let (tx, rx) = mpsc::channel(super::host::TO_HOST_DEPTH);
        self.to_host = Some(tx);
        self.host_attached = true;
        (rx, self.credits.clone(), self.shared.clone())
    }

    /// Alive while this flow or its host tasks still hold the host connection.
    pub fn host_liveness(&self) -> std::sync::Weak<FlowShared> {
        Arc::downgrade(&self.shared)
    }

    /// Bytes from the host.
    pub fn host_data(&mut self, data: Bytes) {
        self.pending.push_back(data);
    }

    /// Bytes a proxy server's client sent past its request, to go into the tunnel before
    /// anything its connection sends later. They take one of the reader's credits, which
    /// comes back when smoltcp has taken them, as a read chunk's does.
    pub fn host_preface(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let took = self.credits.try_acquire().map(|p| p.forget()).is_ok();
        if took {
            self.pending.push_back(data);
        } else {
            // Unreachable before attaching (every credit is free), but never hand out more.
            self.abort();
        }
    }

    /// The host finished writing.
    pub fn host_eof(&mut self) {
        self.host_eof = true;
    }

    /// The flow's socket.
    pub fn socket(&self) -> &Socket<'static> {
        self.set.get::<Socket>(self.handle)
    }

    /// Buffer bytes the socket has grown by beyond its first buffers (autotuning).
    pub fn buffer_growth(&self) -> usize {
        let (rx, tx) = self.socket().buffer_capacities();
        (rx + tx).saturating_sub(self.initial_buffers)
    }

    /// Allows or pauses the socket's buffer growth (the engine's memory budget).
    pub fn allow_growth(&mut self, allowed: bool) {
        self.set
            .get_mut::<Socket>(self.handle)
            .set_buffer_growth(allowed);
    }

    /// Aborts: RST to the tunnel side, reset to the host side (at once, even while the host
    /// writer waits on a slow reader).
    pub fn abort(&mut self) {
        self.set.get_mut::<Socket>(self.handle).abort();
        self.shared.graceful.store(false, Ordering::SeqCst);
        self.shared.reset.notify_one();
        self.to_host = None;
        self.pending.clear();
        self.credits.close();
    }

    /// The flow is over: tells its host I/O task to close the host connection, cleanly
    /// after a clean end, with a reset otherwise.
    pub fn close_host(&self) {
        if self.shared.graceful.load(Ordering::SeqCst) {
            self.shared.ended.notify_one();
        } else {
            self.shared.reset.notify_one();
        }
    }

    /// One line describing the flow's state, for diagnosing stalls.
    pub fn describe(&self) -> String {
        let socket = self.socket();
        format!(
            "state={} send_queue={} recv_queue={} pending={} to_host={:?} host_eof={} fin_sent={} remote_fin={}",
            socket.state(),
            socket.send_queue(),
            socket.recv_queue(),
            self.pending.len(),
            self.to_host.as_ref().map(|t| t.capacity()),
            self.host_eof,
            self.fin_sent,
            self.remote_fin,
        )
    }

    /// Called every few seconds: true once when data has waited with no byte moving for
    /// `checks` calls in a row (a stalled connection, worth a log line).
    pub fn stalled(&mut self, checks: u8) -> bool {
        let socket = self.socket();
        let queues = (socket.send_queue(), socket.recv_queue());
        let waiting = queues.0 > 0 || queues.1 > 0 || !self.pending.is_empty();
        if !waiting || queues != self.last_queues {
            self.last_queues = queues;
            self.still_checks = 0;
            return false;
        }
        self.still_checks = self.still_checks.saturating_add(1);
        self.still_checks == checks
    }

    /// The tunnel-side sender's state, for a stall report.
    pub fn sender_state(&self) -> String {
        self.socket().sender_state().to_string()
    }

    /// Moves data both ways as far as buffers allow and follows the socket's state.
    /// Returns whether any byte moved, and the flow's state.
    pub fn service(&mut self) -> (bool, FlowState) {
        let socket = self.set.get_mut::<Socket>(self.handle);
        if socket.state() == State::Listen {
            // Flows are made from sockets that left LISTEN, so this one was reset in
            // SYN-RECEIVED, and smoltcp (per RFC 9293) returned it to LISTEN. The connection
            // is gone: close it like any reset. Otherwise the flow, its dialed host
            // connection and the socket stay forever (hundreds after a burst of abandoned
            // connects), and the socket could take over a later SYN on the port.
            socket.abort();
        }
        let state = socket.state();
        if matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        ) {
            self.remote_fin = true;
        }
        // Closed here means reset or timed out, possibly before the handshake completed.
        if !self.established
            && !matches!(
                state,
                State::Listen | State::SynSent | State::SynReceived | State::Closed
            )
        {
            self.established = true;
            // The connect timeout is over; now only give up when sent data stays
            // unacknowledged this long (like TCP_USER_TIMEOUT).
            socket.set_timeout(Some(UNACKED_TIMEOUT));
        }
        let mut progress = false;

        // Host → tunnel.
        while let Some(front) = self.pending.front_mut() {
            if !socket.can_send() {
                break;
            }
            match socket.send_slice(front) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    progress = true;
                    self.moved.0 += n as u64;
                    front.advance(n);
                    if front.is_empty() {
                        self.pending.pop_front();
                        self.credits.add_permits(1);
                    }
                }
            }
        }
        if self.host_eof && self.pending.is_empty() && !self.fin_sent && self.established {
            socket.close();
            self.fin_sent = true;
            progress = true;
        }

        // Tunnel → host.
        if let Some(tx) = &self.to_host {
            while socket.can_recv() {
                let permit = match tx.try_reserve() {
                    Ok(p) => p,
                    Err(TrySendError::Full(())) => {
                        self.shared.blocked.store(true, Ordering::SeqCst);
                        // Re-check: the writer may have drained the queue before it saw the flag.
                        if tx.capacity() > 0 {
                            continue;
                        }
                        break;
                    }
                    Err(TrySendError::Closed(())) => {
                        // The host writer is gone (host reset); tell the peer.
                        socket.abort();
                        break;
                    }
                };
                let chunk = socket.recv(|buf| {
                    let n = buf.len().min(CHUNK);
                    (n, Bytes::copy_from_slice(&buf[..n]))
                });
                match chunk {
                    Ok(c) if !c.is_empty() => {
                        progress = true;
                        self.moved.1 += c.len() as u64;
                        permit.send(c);
                    }
                    _ => break,
                }
            }
            if self.remote_fin && socket.recv_queue() == 0 {
                // Dropping the sender after a clean FIN makes the writer shut down its side.
                self.shared.graceful.store(true, Ordering::SeqCst);
                self.to_host = None;
            }
        }

        // TIME-WAIT is over for a proxy: both FINs are exchanged and acknowledged. Holding the
        // socket for smoltcp's 10 s would hold its source port too and cap new egress
        // connections at ~2,800/s; the allocator's round-robin already delays any reuse.
        if socket.state() == State::TimeWait && self.to_host.is_none() {
            self.credits.close();
            return (progress, FlowState::Done);
        }
        if socket.state() == State::Closed {
            if self.remote_fin && self.to_host.is_some() && socket.recv_queue() > 0 {
                // Both FINs are acknowledged (LAST-ACK → CLOSED) but the host writer has not
                // taken everything yet: smoltcp still hands out what its buffer holds. Closing
                // now would drop those bytes and reset the host connection.
                return (progress, FlowState::Open);
            }
            if !self.remote_fin {
                // Closed without the peer's FIN: a reset or a timeout. Reset the host side.
                self.shared.graceful.store(false, Ordering::SeqCst);
            }
            self.to_host = None;
            self.credits.close();
            return (progress, FlowState::Done);
        }
        (progress, FlowState::Open)
    }
}
