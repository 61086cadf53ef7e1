//! The engine task: waits on the WireGuard socket, host events, commands and timers, and
//! after each wake-up pumps the stack until it is quiet.

mod gateway_flows;

use super::gateways::{GatewayEntry, GatewayTable};
use super::host::{self, Event, FlowId};
use super::rules::{FlowOrigin, Listener, Origin, Refusal, RuleTable, ServiceKey};
use super::stack::NetStack;
use super::syn_guard::SynGuard;
use super::tcp::{FlowState, TcpFlow};
use super::tcp_demux::{self, Tuple};
use super::udp::{self, EgressUdpFlow, EgressUdpOrigin, IngressUdpFlow};
use super::udp_batch::{self, SendBatch};
use super::wg::{WgDevice, WgIo};
use super::{Command, EngineConfig, EngineError, EngineHandle, EngineStatus, PeerStatus, Tunables};
use crate::gateway::proxy_protocol;
use bytes::Bytes;
use nexd_common::{Direction, Gateway, GatewaySpec, Protocol, ProxyRule, RuleSpec};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp as sudp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Listening sockets kept ready per ingress TCP port.
/// Datagrams and events handled per wake-up before the stack is polled.
const INPUT_BATCH: usize = 256;
/// Bound on poll rounds per wake-up, so the loop always returns to its inputs.
const PUMP_ROUNDS: usize = 64;
/// How often TCP flows are checked for stalls (debug logging only).
const STALL_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Checks in a row without progress before a flow is reported stalled.
const STALL_CHECKS: u8 = 3;

/// Counters the engine keeps beyond the WireGuard layer's.
#[derive(Default)]
struct Counters {
    udp_send_dropped: u64,
    oversize_datagrams: u64,
    not_local: u64,
    duplicate_syn: u64,
    egress_no_route: u64,
    ingress_dial_failed: u64,
    ports_exhausted: u64,
    ports_reused_early: u64,
    ingress_handshake_incomplete: u64,
    egress_connect_failed: u64,
    flows_reset: u64,
    refused_not_allowed: u64,
    refused_rule_limit: u64,
    refused_total_limit: u64,
    gateway_not_allowed: u64,
}

impl Counters {
    fn refused(&mut self, why: Refusal) {
        match why {
            Refusal::NotAllowed => self.refused_not_allowed += 1,
            Refusal::RuleLimit => self.refused_rule_limit += 1,
        }
    }
}

struct Engine {
    wg: WgDevice,
    stack: NetStack,
    udp: Arc<UdpSocket>,
    /// Encrypted datagrams waiting to be sent (batched; see `udp_batch`).
    out: SendBatch,
    listen_addr: SocketAddr,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    commands: mpsc::Receiver<Command>,
    rules: RuleTable,
    /// Proxy servers (SOCKS5, HTTP CONNECT).
    gateways: GatewayTable,
    /// Settings the proxy servers share.
    gateway_options: crate::gateway::GatewayOptions,
    tcp_flows: HashMap<FlowId, TcpFlow>,
    /// Which flow each TCP connection's packets go to.
    tcp_index: HashMap<Tuple, FlowId>,
    /// Flows to service in this pump: packets came, the host side moved, or a timer fired.
    dirty: Vec<FlowId>,
    /// Flow timers (smoltcp clock, µs), earliest first; entries a flow no longer expects are
    /// skipped.
    timers: BinaryHeap<Reverse<(i64, FlowId)>>,
    /// Ingress connections with a socket, so retransmitted SYNs stay away from the backlog.
    syn_guard: SynGuard,
    /// Flows closed since freed memory was last returned to the OS.
    closed_since_trim: usize,
    /// Bytes by which TCP buffers have grown beyond their first size, over all flows.
    tcp_grown: usize,
    egress_udp: HashMap<FlowId, EgressUdpFlow>,
    /// Which egress UDP flow each tunnel address and port belongs to (its packets' route).
    egress_udp_by_local: HashMap<(IpAddr, u16), FlowId>,
    /// Egress UDP flows to service in this pump: packets came or datagrams wait to go.
    udp_dirty: Vec<FlowId>,
    /// The egress UDP flow of each datagram whose first fragment went to one, so its later
    /// fragments follow (smoltcp reassembles in whichever set they meet); oldest first.
    udp_fragments: VecDeque<((IpAddr, IpAddr, u32), FlowId)>,
    /// Ports of the UDP packets left to the shared set this pump (ingress UDP rules);
    /// `None`: a packet whose port is unknown (a fragment), so look at every rule.
    udp_ports: Option<Vec<u16>>,
    egress_udp_index: HashMap<(ServiceKey, SocketAddr), FlowId>,
    /// The egress UDP flow of each SOCKS5 UDP association and destination.
    association_index: HashMap<(u64, SocketAddr), FlowId>,
    ingress_udp: HashMap<FlowId, IngressUdpFlow>,
    ingress_udp_index: HashMap<(u16, IpEndpoint), FlowId>,
    next_flow: FlowId,
    tunables: Tunables,
    addresses: Vec<ipnet::IpNet>,
    /// The tunnel addresses, the only destinations accepted from peers.
    local_ips: Vec<IpAddr>,
    counters: Counters,
    /// Shutting down: listeners are closed and no rule may be added.
    draining: bool,
    /// Host connections of flows reset at shutdown, alive until their reset is done.
    resetting: Vec<std::sync::Weak<super::host::FlowShared>>,
    /// Host TCP connections held by flows' I/O tasks, until each socket is closed.
    host_connections: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

/// Datagrams waiting for the UDP socket to become writable. Beyond this, drop like a wire.
const SEND_BACKLOG: usize = 8192;

/// The engine's I/O for the WireGuard layer: datagrams to the UDP socket, packets to smoltcp.
struct Io<'a> {
    out: &'a mut SendBatch,
    device: &'a mut super::device::QueueDevice,
    local: &'a [IpAddr],
    syn_guard: &'a SynGuard,
    counters: &'a mut Counters,
}

impl WgIo for Io<'_> {
    fn send_datagram(&mut self, to: SocketAddr, data: &[u8]) {
        // Sent in batches at the end of the pump. A full socket buffer must not lose packets
        // (a lost window update stalls a smoltcp sender for good): they wait, bounded.
        if self.out.len() < SEND_BACKLOG {
            self.out.push(to, data);
        } else {
            self.counters.udp_send_dropped += 1;
        }
    }
    fn deliver_packet(&mut self, packet: &[u8]) {
        // The stack would drop these too, silently; nexd never forwards between peers.
        match boringtun::noise::Tunn::dst_address(packet) {
            Some(dst) if !self.local.contains(&dst) => self.counters.not_local += 1,
            None => self.counters.not_local += 1,
            Some(_) if self.syn_guard.is_duplicate_syn(packet) => self.counters.duplicate_syn += 1,
            Some(_) => self.device.push_rx(packet),
        }
    }
}

/// The WireGuard layer's I/O over the engine's fields. A macro, not a method, so the borrows
/// stay field by field and `self.wg` remains usable beside it.
macro_rules! io {
    ($e:expr) => {
        Io {
            out: &mut $e.out,
            device: &mut $e.stack.device,
            local: &$e.local_ips,
            syn_guard: &$e.syn_guard,
            counters: &mut $e.counters,
        }
    };
}

/// How the engine thread ended: `Err` names a panic.
pub type EngineExit = Result<(), String>;

/// Binds the WireGuard socket and starts the engine on its own thread; returns its handle, a
/// receiver that resolves when the engine ends, and the bound address.
///
/// The engine and every host-side task of the data path share that one thread, with a
/// single-threaded runtime: handing a chunk between a host task and the engine is then a
/// queue push, not a cross-thread wake-up, and control-plane work (such as fsyncing the state
/// file) never stalls packets.
pub async fn start(
    cfg: EngineConfig,
    cancel: CancellationToken,
) -> Result<(EngineHandle, oneshot::Receiver<EngineExit>, SocketAddr), EngineError> {
    let port = cfg.network.listen_port.unwrap_or(0);
    let udp =
        host::bind_udp_std(port).map_err(|source| EngineError::WireGuardSocket { port, source })?;
    let listen_addr = udp
        .local_addr()
        .map_err(|source| EngineError::WireGuardSocket { port, source })?;
    let mut wg = WgDevice::new(&cfg.network.private_key);
    for (peer, endpoint) in cfg.network.peers.iter().zip(cfg.endpoints.iter()) {
        wg.add_peer(peer, *endpoint, false)?;
    }
    let (cmd_tx, commands) = mpsc::channel(64);
    let (exit_tx, exit_rx) = oneshot::channel();
    let engine_cancel = cancel.clone();
    let spawned = std::thread::Builder::new()
        .name("nexd-engine".to_string())
        .spawn(move || {
            let exit = run_on_own_runtime(cfg, wg, udp, listen_addr, commands, engine_cancel);
            let _ = exit_tx.send(exit);
        });
    if let Err(e) = spawned {
        return Err(EngineError::Thread(e.to_string()));
    }
    Ok((
        EngineHandle {
            commands: cmd_tx,
            cancel,
        },
        exit_rx,
        listen_addr,
    ))
}

fn run_on_own_runtime(
    cfg: EngineConfig,
    wg: WgDevice,
    udp: std::net::UdpSocket,
    listen_addr: SocketAddr,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) -> EngineExit {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the engine runtime: {e}"))?;
    rt.block_on(async move {
        let udp = UdpSocket::from_std(udp)
            .map_err(|e| format!("cannot register the WireGuard socket: {e}"))?;
        if std::env::var_os("NEXD_NO_GRO").is_some() || !udp_batch::enable_gro(&udp) {
            debug!("UDP GRO unavailable; receiving one datagram per call");
        }
        let mut stack = NetStack::new(&cfg.network.addresses, cfg.tunables.mtu);
        stack.tcp_buffer = cfg.tunables.max_pending_bytes;
        stack.tcp_window_max = cfg.tunables.max_tcp_window;
        stack.tcp_congestion = cfg.tunables.tcp_congestion;
        stack.set_ephemeral_ports(cfg.tunables.ephemeral_ports);
        let (events_tx, events_rx) = mpsc::channel(4096);
        let engine = Engine {
            wg,
            stack,
            udp: Arc::new(udp),
            // GSO is opt-in (NEXD_GSO=1): see udp_batch. NEXD_NO_GRO turns GRO off.
            out: SendBatch::new(std::env::var_os("NEXD_GSO").is_some_and(|v| v == "1")),
            listen_addr,
            events_tx,
            events_rx,
            commands,
            rules: RuleTable::default(),
            gateways: GatewayTable::default(),
            gateway_options: cfg.gateway,
            tcp_flows: HashMap::new(),
            tcp_index: HashMap::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            closed_since_trim: 0,
            tcp_grown: 0,
            syn_guard: SynGuard::default(),
            egress_udp: HashMap::new(),
            egress_udp_by_local: HashMap::new(),
            udp_dirty: Vec::new(),
            udp_fragments: VecDeque::new(),
            udp_ports: Some(Vec::new()),
            egress_udp_index: HashMap::new(),
            association_index: HashMap::new(),
            ingress_udp: HashMap::new(),
            ingress_udp_index: HashMap::new(),
            next_flow: 1,
            tunables: cfg.tunables,
            addresses: cfg.network.addresses.clone(),
            local_ips: cfg.network.addresses.iter().map(|a| a.addr()).collect(),
            counters: Counters::default(),
            draining: false,
            resetting: Vec::new(),
            host_connections: Arc::default(),
            cancel,
        };
        // A task of its own, so a panic comes back as a JoinError naming it.
        match tokio::spawn(engine.run()).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => Err(panic_message(e.into_panic())),
            Err(_) => Err("the engine task was cancelled".to_string()),
        }
    })
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map_or_else(|| "panic".to_string(), |s| s.to_string()),
    }
}

impl Engine {
    async fn run(mut self) {
        let mut buf = vec![0u8; 65536];
        let mut stall_check = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        loop {
            let delay = if self.stack.device.rx.is_empty() && self.dirty.is_empty() {
                self.stack
                    .poll_delay()
                    .unwrap_or(Duration::from_secs(1))
                    .min(self.next_timer())
                    .min(Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                // drain_inputs below reads what arrived.
                _ = self.udp.readable() => {}
                ev = self.events_rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can stop us any more, so stop now.
                    None => break,
                },
                _ = tick.tick() => {
                    let mut io = io!(self);
                    self.wg.tick(&mut io);
                    if last_sweep.elapsed() >= Duration::from_secs(1) {
                        last_sweep = Instant::now();
                        self.sweep_udp();
                        let now = self.stack.now();
                        self.stack.ports.sweep(now);
                        if self.closed_since_trim >= super::memory::TRIM_AFTER_CLOSED {
                            self.closed_since_trim = 0;
                            super::memory::release_free_memory();
                        }
                        if stall_check.elapsed() >= STALL_CHECK_EVERY {
                            stall_check = Instant::now();
                            self.report_stalls();
                        }
                        if tracing::enabled!(tracing::Level::TRACE) {
                            for (id, f) in &self.tcp_flows {
                                tracing::trace!(flow = id, "{}", f.describe());
                            }
                        }
                    }
                }
                _ = self.udp.writable(), if !self.out.is_empty() => self.send_out(),
                _ = tokio::time::sleep(delay) => {}
            }
            self.drain_inputs(&mut buf);
            self.pump();
        }
        self.shutdown();
    }

    /// Takes whatever else is ready without waiting, so one poll serves a batch.
    fn drain_inputs(&mut self, buf: &mut [u8]) {
        let mut datagrams = 0;
        while datagrams < INPUT_BATCH {
            match udp_batch::try_recv(&self.udp, buf) {
                Ok((n, from, segment)) => {
                    for d in buf[..n].chunks(segment.max(1)) {
                        self.on_datagram(from, d);
                        datagrams += 1;
                    }
                }
                Err(_) => break,
            }
        }
        for _ in 0..INPUT_BATCH {
            match self.events_rx.try_recv() {
                Ok(ev) => self.on_event(ev),
                Err(_) => break,
            }
        }
    }

    /// Sends the queued datagrams, as far as the socket takes them.
    fn send_out(&mut self) {
        self.counters.udp_send_dropped += self.out.flush(&self.udp) as u64;
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let mut io = io!(self);
        self.wg.handle_datagram(from, data, &mut io);
    }

    /// Polls smoltcp and services flows until nothing moves (bounded).
    fn pump(&mut self) {
        for _ in 0..PUMP_ROUNDS {
            self.route_packets();
            let changed = self.stack.poll();
            self.expire_timers();
            let progress = self.service_tcp() | self.service_udp();
            self.flush_tx();
            if !changed && !progress && self.stack.device.rx.is_empty() && self.dirty.is_empty() {
                break;
            }
        }
        self.flush_tx();
    }

    /// Hands each received packet of a known TCP connection to its flow, and each new
    /// connection to an ingress rule to a new flow; the rest (UDP, refused connections)
    /// stay for the shared socket set.
    fn route_packets(&mut self) {
        // One pass round the queue, in place: routed packets leave, the rest go back in order.
        for _ in 0..self.stack.device.rx.len() {
            let Some(pkt) = self.stack.device.rx.pop_front() else {
                break;
            };
            let Some(header) = tcp_demux::parse(&pkt) else {
                self.route_udp(pkt);
                continue;
            };
            let id = self.tcp_index.get(&header.tuple).copied();
            match id.and_then(|id| self.tcp_flows.get_mut(&id).map(|f| (id, f))) {
                Some((id, flow)) => {
                    flow.rx.push_back(pkt);
                    mark_dirty(&mut self.dirty, id, flow);
                }
                None if header.is_bare_syn() => {
                    if let Err(pkt) = self.accept_syn(pkt, &header) {
                        self.stack.device.rx.push_back(pkt);
                    }
                }
                None => self.stack.device.rx.push_back(pkt),
            }
        }
    }

    /// A packet that is not TCP: to its egress UDP flow, or to the shared set (ingress UDP
    /// rules, noting its port).
    fn route_udp(&mut self, pkt: Vec<u8>) {
        let flow = match tcp_demux::udp_destination(&pkt) {
            Some(dst) => {
                let flow = self.egress_udp_by_local.get(&dst).copied();
                if flow.is_none() {
                    if let Some(ports) = &mut self.udp_ports {
                        ports.push(dst.1);
                    }
                }
                flow
            }
            None => self.route_udp_fragment(&pkt),
        };
        match flow.and_then(|id| self.egress_udp.get_mut(&id).map(|f| (id, f))) {
            Some((id, f)) => {
                f.rx.push_back(pkt);
                mark_udp_dirty(&mut self.udp_dirty, id, f);
            }
            None => self.stack.device.rx.push_back(pkt),
        }
    }

    /// The egress UDP flow a fragment goes to, if its datagram's first fragment went to
    /// one. A later fragment that overtakes the first goes to the shared set, where that
    /// datagram cannot be reassembled: lost, as UDP may be.
    fn route_udp_fragment(&mut self, pkt: &[u8]) -> Option<FlowId> {
        // In flight at once; older entries belong to datagrams long complete or lost.
        const TRACKED: usize = 64;
        // Not UDP, or a fragment of a datagram for an ingress rule: look at every rule.
        self.udp_ports = None;
        let frag = tcp_demux::udp_fragment(pkt)?;
        if let Some(dst) = frag.first {
            let id = *self.egress_udp_by_local.get(&dst)?;
            if self.udp_fragments.len() == TRACKED {
                self.udp_fragments.pop_front();
            }
            self.udp_fragments.push_back((frag.key, id));
            return Some(id);
        }
        self.udp_fragments
            .iter()
            .rev()
            .find(|(k, _)| *k == frag.key)
            .map(|&(_, id)| id)
    }

    /// Queues for servicing the flows whose smoltcp timer is due.
    fn expire_timers(&mut self) {
        let now = self.stack.now().total_micros();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(flow) = self.tcp_flows.get_mut(&id) {
                if flow.deadline == Some(at) {
                    flow.deadline = None;
                    mark_dirty(&mut self.dirty, id, flow);
                }
            }
        }
    }

    /// Time until the earliest flow timer.
    fn next_timer(&mut self) -> Duration {
        let now = self.stack.now().total_micros();
        match self.timers.peek() {
            Some(&Reverse((at, _))) => Duration::from_micros(at.saturating_sub(now).max(0) as u64),
            None => Duration::MAX,
        }
    }

    /// Encrypts and sends every packet smoltcp produced.
    fn flush_tx(&mut self) {
        let mut tx = std::mem::take(&mut self.stack.device.tx);
        for pkt in tx.drain(..) {
            let mut io = io!(self);
            self.wg.send_packet(&pkt, &mut io);
            self.stack.device.recycle(pkt);
        }
        // Keep the queue's allocation.
        if self.stack.device.tx.is_empty() {
            self.stack.device.tx = tx;
        }
        self.send_out();
    }

    fn flow_count(&self) -> usize {
        self.tcp_flows.len() + self.egress_udp.len() + self.ingress_udp.len()
    }

    /// Picks a destination of service `key` for a new flow, within the limits and the
    /// allow-lists, counting the refusal if there is none.
    fn admit(&mut self, key: ServiceKey, origin: Option<Origin>) -> Option<FlowOrigin> {
        if self.flow_count() >= self.tunables.max_flows {
            self.counters.refused_total_limit += 1;
            debug!(?key, "flow limit reached; refusing");
            return None;
        }
        let service = self.rules.services.get_mut(&key)?;
        match service.pick(origin, self.tunables.max_flows_per_rule) {
            Ok(destination) => Some(FlowOrigin { key, destination }),
            Err(why) => {
                self.counters.refused(why);
                debug!(?key, ?why, "new flow refused");
                None
            }
        }
    }

    fn flow_id(&mut self) -> FlowId {
        let id = self.next_flow;
        self.next_flow += 1;
        id
    }

    // ---- TCP ----

    /// A bare SYN no flow knows: if an ingress rule listens on its port and admits the
    /// peer, a new flow takes it, with a socket of its own listening for just this
    /// connection. Finding the rule is one map lookup, so new connections cost the same
    /// whatever the number of rules. Otherwise the packet is handed back: it goes to the
    /// shared set, where no socket listens, and smoltcp answers with a reset.
    fn accept_syn(&mut self, pkt: Vec<u8>, header: &tcp_demux::TcpHeader) -> Result<(), Vec<u8>> {
        let (remote, rport, _, port) = header.tuple;
        let key = (Direction::Ingress, Protocol::Tcp, port, None);
        if !self.rules.services.contains_key(&key) {
            return Err(pkt);
        }
        let peer = self.wg.owner(remote).copied();
        let origin = Origin {
            src: remote,
            peer: peer.as_ref(),
        };
        let Some(origin) = self.admit(key, Some(origin)) else {
            return Err(pkt);
        };
        let mut socket = self.stack.tcp_socket();
        // A peer that sends a SYN and no more gets --connect-timeout to complete the
        // handshake (smoltcp then resets the connection); the flow slot is freed.
        socket.set_timeout(Some(smoltcp::time::Duration::from_micros(
            self.tunables.connect_timeout.as_micros() as u64,
        )));
        if socket
            .listen(IpListenEndpoint { addr: None, port })
            .is_err()
        {
            self.rules.flow_closed(&origin);
            return Err(pkt);
        }
        let dest = origin.destination;
        let id = self.flow_id();
        debug!(flow = id, port, remote = %SocketAddr::new(remote, rport), %dest, "ingress tcp flow");
        let mut flow = TcpFlow::new(socket, header.tuple, None, dest);
        flow.origin = Some(origin);
        let t = (remote, rport, port);
        self.syn_guard.insert(t);
        flow.ingress_tuple = Some(t);
        // Dialled once the handshake completes (service_tcp), not on a bare SYN.
        flow.dial_when_established();
        flow.rx.push_back(pkt);
        self.insert_tcp_flow(id, flow);
        Ok(())
    }

    /// Adds a flow to the table and the demux index, queued for its first poll.
    fn insert_tcp_flow(&mut self, id: FlowId, mut flow: TcpFlow) {
        self.tcp_index.insert(flow.tuple, id);
        mark_dirty(&mut self.dirty, id, &mut flow);
        self.tcp_flows.insert(id, flow);
    }

    /// Logs (at debug level) every TCP flow whose queued data has not moved for
    /// [`STALL_CHECKS`] checks: the queues and the sender's timers say which side holds it.
    fn report_stalls(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        for (id, f) in self.tcp_flows.iter_mut() {
            if f.stalled(STALL_CHECKS) {
                debug!(
                    flow = id,
                    dest = %f.dest,
                    state = %f.describe(),
                    sender = %f.sender_state(),
                    "tcp flow stalled: no byte moved for {} s",
                    STALL_CHECKS as u64 * STALL_CHECK_EVERY.as_secs()
                );
            }
        }
    }

    /// Polls and services the flows queued in this pump (only those: the cost of a pump
    /// does not grow with idle connections).
    fn service_tcp(&mut self) -> bool {
        let mut progress = false;
        let mut done = Vec::new();
        let now = self.stack.now().total_micros();
        for id in std::mem::take(&mut self.dirty) {
            let Some(flow) = self.tcp_flows.get_mut(&id) else {
                continue;
            };
            flow.dirty = false;
            let mut changed = self.stack.poll_flow(&mut flow.set, &mut flow.rx);
            let (moved, state) = flow.service();
            // Keep the sum of grown buffers under the budget: past it, no flow grows more.
            let grown = flow.buffer_growth();
            if grown != flow.grown {
                self.tcp_grown = self.tcp_grown + grown - flow.grown;
                flow.grown = grown;
            }
            flow.allow_growth(self.tcp_grown < super::stack::TCP_GROWTH_BUDGET);
            if state == FlowState::Open && flow.take_dial() {
                let (remote, rport, local, port) = flow.tuple;
                let header = flow
                    .origin
                    .as_ref()
                    .and_then(|o| self.rules.proxy_protocol_of(o))
                    .map(|v| {
                        proxy_protocol::header(
                            v,
                            SocketAddr::new(remote, rport),
                            SocketAddr::new(local, port),
                        )
                    });
                host::spawn_ingress_dial(
                    flow.dest,
                    id,
                    self.tunables.connect_timeout,
                    header,
                    self.events_tx.clone(),
                );
            }
            if flow.connect_reply.is_some() && (flow.established() || state == FlowState::Done) {
                gateway_flows::answer_connect(
                    flow,
                    id,
                    &state,
                    &mut self.gateways,
                    self.tunables.connect_timeout,
                );
                mark_dirty(&mut self.dirty, id, flow);
            }
            if moved {
                // Send what the service queued, and look again next round.
                changed |= self.stack.poll_flow(&mut flow.set, &mut flow.rx);
                mark_dirty(&mut self.dirty, id, flow);
            }
            progress |= moved | changed;
            if state == FlowState::Done {
                done.push(id);
                continue;
            }
            match self.stack.poll_at(&flow.set) {
                Some(at) if at <= now => mark_dirty(&mut self.dirty, id, flow),
                // A later deadline waits behind the queued earlier one, which polls the flow
                // and queues it then: one entry per flow instead of one per ACK.
                Some(at) if flow.deadline.is_none_or(|d| at < d) => {
                    flow.deadline = Some(at);
                    self.timers.push(Reverse((at, id)));
                }
                _ => {}
            }
        }
        for id in done {
            if let Some(flow) = self.tcp_flows.remove(&id) {
                flow.close_host();
                self.closed_since_trim += 1;
                self.tcp_grown -= flow.grown;
                self.tcp_index.remove(&flow.tuple);
                if let Some(t) = &flow.ingress_tuple {
                    self.syn_guard.remove(t);
                    if !flow.established() {
                        // Reset or timed out in SYN-RECEIVED: the local server never saw it.
                        self.counters.ingress_handshake_incomplete += 1;
                    }
                }
                match (flow.local.is_some(), flow.end_reason()) {
                    // The destination refused or never answered within --connect-timeout.
                    (true, "never established") => self.counters.egress_connect_failed += 1,
                    (_, "reset" | "closed by the host side, then reset") => {
                        self.counters.flows_reset += 1
                    }
                    _ => {}
                }
                if let Some(o) = &flow.origin {
                    self.rules.add_bytes(o, flow.moved);
                    self.rules.flow_closed(o);
                }
                if let Some(g) = &flow.gateway {
                    self.gateways.flow_closed(g, flow.moved);
                }
                if let Some((addr, port)) = flow.local {
                    // The peer may hold this 4-tuple in TIME-WAIT for 60 s: keep it unused.
                    self.stack
                        .ports
                        .release_tcp(addr, port, flow.dest, self.stack.now());
                }
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let rule = flow.origin.as_ref().and_then(|o| self.rules.rule_of(o));
                    let (remote, rport, _, _) = flow.tuple;
                    debug!(
                        flow = id,
                        rule = rule.as_deref().unwrap_or("(removed)"),
                        tunnel_peer = %SocketAddr::new(remote, rport),
                        peer = %self.wg.owner(remote).map(crate::reload::short_key).unwrap_or_default(),
                        host_to_tunnel = flow.moved.0,
                        tunnel_to_host = flow.moved.1,
                        duration_ms = flow.started.elapsed().as_millis() as u64,
                        end = flow.end_reason(),
                        "tcp flow closed"
                    );
                }
            }
        }
        progress
    }

    fn start_egress_tcp(
        &mut self,
        key: ServiceKey,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
    ) {
        let reset = |stream: tokio::net::TcpStream| {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        };
        if !self.rules.services.contains_key(&key) {
            return; // Rule removed meanwhile: dropping the stream closes it.
        }
        let Some(origin) = self.admit(key, None) else {
            return reset(stream);
        };
        let Some(mut flow) = self.connect_tunnel_tcp(client, origin.destination) else {
            // Gives the slot back.
            self.rules.flow_closed(&origin);
            return reset(stream);
        };
        let id = self.flow_id();
        debug!(flow = id, %client, dest = %flow.dest, "egress tcp flow");
        flow.origin = Some(origin);
        attach(
            &mut flow,
            id,
            stream,
            &self.events_tx,
            &self.host_connections,
        );
        self.insert_tcp_flow(id, flow);
    }

    /// A tunnel-side TCP connection to `dest`, its SYN queued: a flow without a host side
    /// yet. `None`: refused (no route, no source address or port), counted and logged.
    fn connect_tunnel_tcp(&mut self, client: SocketAddr, dest: SocketAddr) -> Option<TcpFlow> {
        if self.wg.route(dest.ip()).is_none() {
            self.counters.egress_no_route += 1;
            warn!(%client, %dest, "no peer's AllowedIPs cover the destination; refusing");
            return None;
        }
        let Some(src) = self.stack.source_for(dest.ip()) else {
            self.counters.egress_no_route += 1;
            warn!(%client, %dest, "no tunnel address of the destination's family; refusing");
            return None;
        };
        let now = self.stack.now();
        let Some(pick) = self.stack.ports.allocate_tcp(src, dest, now) else {
            self.counters.ports_exhausted += 1;
            warn!(%client, %dest, "no free tunnel source port; refusing");
            return None;
        };
        let sport = pick.port;
        if let Some(age) = pick.reused_after {
            self.counters.ports_reused_early += 1;
            // Logged at 1, 2, 4, 8... so a sustained burst cannot flood the log.
            if self.counters.ports_reused_early.is_power_of_two() {
                warn!(
                    %dest,
                    port = sport,
                    closed_ms_ago = age.total_millis(),
                    times = self.counters.ports_reused_early,
                    "every source port closed a connection to this destination in the last 60 s; \
                     reusing the oldest (timestamps and RFC 6528 sequence numbers let the peer \
                     accept it while it holds the old one in TIME-WAIT)"
                );
            }
        }
        let mut socket = self.stack.tcp_socket();
        socket.set_timeout(Some(smoltcp::time::Duration::from_micros(
            self.tunables.connect_timeout.as_micros() as u64,
        )));
        if let Err(e) = socket.connect(self.stack.iface.context(), dest, (src, sport)) {
            warn!(%dest, "connect: {e}");
            self.stack.ports.release(src, sport);
            return None;
        }
        let tuple = (dest.ip(), dest.port(), src, sport);
        Some(TcpFlow::new(socket, tuple, Some((src, sport)), dest))
    }

    // ---- UDP ----

    fn start_or_find_egress_udp(
        &mut self,
        key: ServiceKey,
        host: Arc<tokio::net::UdpSocket>,
        client: SocketAddr,
    ) -> Option<FlowId> {
        if let Some(&id) = self.egress_udp_index.get(&(key, client)) {
            return Some(id);
        }
        let origin = self.admit(key, None)?;
        let dest = origin.destination;
        let Some(id) = self.open_tunnel_udp(client, host, dest, EgressUdpOrigin::Rule(origin))
        else {
            self.rules.flow_closed(&origin);
            return None;
        };
        self.egress_udp_index.insert((key, client), id);
        Some(id)
    }

    /// A tunnel-side UDP socket from an ephemeral port to `dest`, as a new flow; `None`:
    /// refused (no route, no source address or port) and counted.
    fn open_tunnel_udp(
        &mut self,
        client: SocketAddr,
        host: Arc<tokio::net::UdpSocket>,
        dest: SocketAddr,
        origin: EgressUdpOrigin,
    ) -> Option<FlowId> {
        if self.wg.route(dest.ip()).is_none() {
            self.counters.egress_no_route += 1;
            return None;
        }
        let Some(src) = self.stack.source_for(dest.ip()) else {
            self.counters.egress_no_route += 1;
            return None;
        };
        let Some(sport) = self.stack.ports.allocate_udp(src) else {
            self.counters.ports_exhausted += 1;
            return None;
        };
        let mut socket = self.stack.udp_flow_socket();
        let bound = socket.bind(IpListenEndpoint {
            addr: Some(src.into()),
            port: sport,
        });
        if bound.is_err() {
            self.stack.ports.release(src, sport);
            return None;
        }
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        let id = self.flow_id();
        debug!(flow = id, %client, %dest, "egress udp flow");
        self.egress_udp_by_local.insert((src, sport), id);
        self.egress_udp.insert(
            id,
            EgressUdpFlow {
                set,
                handle,
                rx: VecDeque::new(),
                dirty: false,
                local: (src, sport),
                client,
                host,
                dest,
                last_active: Instant::now(),
                origin,
            },
        );
        Some(id)
    }

    fn egress_udp_datagram(
        &mut self,
        key: ServiceKey,
        socket: Arc<tokio::net::UdpSocket>,
        client: SocketAddr,
        data: Bytes,
    ) {
        let Some(id) = self.start_or_find_egress_udp(key, socket, client) else {
            return;
        };
        self.send_egress_udp(id, data);
    }

    /// Sends a host datagram out through egress UDP flow `id`.
    fn send_egress_udp(&mut self, id: FlowId, data: Bytes) {
        let Some(flow) = self.egress_udp.get_mut(&id) else {
            return;
        };
        if data.len() > udp::max_payload(self.tunables.mtu, flow.dest.ip()) {
            self.counters.oversize_datagrams += 1;
            debug!(
                flow = id,
                len = data.len(),
                "datagram larger than the tunnel MTU; dropped"
            );
            return;
        }
        flow.last_active = Instant::now();
        mark_udp_dirty(&mut self.udp_dirty, id, flow);
        let ep: IpEndpoint = flow.dest.into();
        let send = |f: &mut EgressUdpFlow| {
            f.set
                .get_mut::<sudp::Socket>(f.handle)
                .send_slice(&data, ep)
                .is_ok()
        };
        if send(flow) {
            return;
        }
        // A burst from the host can fill the flow's send queue before the next pump: send
        // what is queued, then try again.
        self.stack.poll_flow(&mut flow.set, &mut flow.rx);
        if !send(flow) {
            self.counters.udp_send_dropped += 1;
        }
    }

    fn ingress_udp_reply(&mut self, id: FlowId, data: Bytes) {
        let Some(flow) = self.ingress_udp.get_mut(&id) else {
            return;
        };
        let Some(service) =
            self.rules
                .services
                .get(&(Direction::Ingress, Protocol::Udp, flow.port, None))
        else {
            return;
        };
        let Listener::IngressUdp(h) = service.listener else {
            return;
        };
        if data.len() > udp::max_payload(self.tunables.mtu, flow.remote.addr.into()) {
            self.counters.oversize_datagrams += 1;
            return;
        }
        flow.last_active = Instant::now();
        let meta = sudp::UdpMetadata {
            endpoint: flow.remote,
            local_address: flow.local_addr,
            meta: Default::default(),
        };
        if self
            .stack
            .sockets
            .get_mut::<sudp::Socket>(h)
            .send_slice(&data, meta)
            .is_err()
        {
            self.counters.udp_send_dropped += 1;
        }
    }

    fn service_udp(&mut self) -> bool {
        let mut progress = false;
        // Egress flows: datagrams out, replies (tunnel → host client) in.
        for id in std::mem::take(&mut self.udp_dirty) {
            let Some(flow) = self.egress_udp.get_mut(&id) else {
                continue;
            };
            flow.dirty = false;
            progress |= self.stack.poll_flow(&mut flow.set, &mut flow.rx);
            let s = flow.set.get_mut::<sudp::Socket>(flow.handle);
            while let Ok((data, meta)) = s.recv() {
                progress = true;
                if SocketAddr::from((IpAddr::from(meta.endpoint.addr), meta.endpoint.port))
                    != flow.dest
                {
                    continue;
                }
                flow.last_active = Instant::now();
                let sent = match &flow.origin {
                    EgressUdpOrigin::Rule(_) => flow.host.try_send_to(data, flow.client),
                    EgressUdpOrigin::Association {
                        gateway, header, ..
                    } => {
                        self.gateways.count_datagram(gateway);
                        flow.host.try_send_to(&[header, data].concat(), flow.client)
                    }
                };
                if sent.is_err() {
                    self.counters.udp_send_dropped += 1;
                }
            }
        }
        // Ingress datagrams: tunnel client → host destination, from the rules whose ports
        // got packets (all of them after a fragment).
        let touched = self.udp_ports.replace(Vec::new());
        let ports: Vec<(u16, SocketHandle)> = match touched {
            Some(mut ports) => {
                ports.sort_unstable();
                ports.dedup();
                ports
                    .into_iter()
                    .filter_map(|port| {
                        let key = (Direction::Ingress, Protocol::Udp, port, None);
                        match self.rules.services.get(&key)?.listener {
                            Listener::IngressUdp(h) => Some((port, h)),
                            _ => None,
                        }
                    })
                    .collect()
            }
            None => self
                .rules
                .services
                .iter()
                .filter_map(|(&(_, _, port, _), s)| match s.listener {
                    Listener::IngressUdp(h) => Some((port, h)),
                    _ => None,
                })
                .collect(),
        };
        for (port, h) in ports {
            loop {
                let s = self.stack.sockets.get_mut::<sudp::Socket>(h);
                let Ok((data, meta)) = s.recv() else { break };
                progress = true;
                let data = Bytes::copy_from_slice(data);
                let id = match self.ingress_udp_index.get(&(port, meta.endpoint)) {
                    Some(&id) => id,
                    None => match self.start_ingress_udp(port, meta.endpoint, meta.local_address) {
                        Some(id) => id,
                        None => continue,
                    },
                };
                if let Some(flow) = self.ingress_udp.get_mut(&id) {
                    flow.last_active = Instant::now();
                    if udp::send_now(&flow.host, &data).is_err() {
                        self.counters.udp_send_dropped += 1;
                    }
                }
            }
        }
        progress
    }

    fn start_ingress_udp(
        &mut self,
        port: u16,
        remote: IpEndpoint,
        local_addr: Option<smoltcp::wire::IpAddress>,
    ) -> Option<FlowId> {
        let src = IpAddr::from(remote.addr);
        let peer = self.wg.owner(src).copied();
        let origin = Origin {
            src,
            peer: peer.as_ref(),
        };
        let origin = self.admit(
            (Direction::Ingress, Protocol::Udp, port, None),
            Some(origin),
        )?;
        let dest = origin.destination;
        let host = match udp::connect_host(dest) {
            Ok(sock) => sock,
            Err(e) => {
                warn!(%dest, "cannot open udp socket to destination: {e}");
                self.rules.flow_closed(&origin);
                return None;
            }
        };
        let id = self.flow_id();
        debug!(flow = id, ?remote, %dest, "ingress udp flow");
        let reader = host::spawn_udp_reply_reader(host.clone(), id, self.events_tx.clone());
        self.ingress_udp.insert(
            id,
            IngressUdpFlow {
                port,
                remote,
                local_addr,
                host,
                reader,
                last_active: Instant::now(),
                origin,
            },
        );
        self.ingress_udp_index.insert((port, remote), id);
        Some(id)
    }

    fn sweep_udp(&mut self) {
        let idle = self.tunables.udp_idle_timeout;
        let expired: Vec<FlowId> = self
            .egress_udp
            .iter()
            .filter(|(_, f)| f.last_active.elapsed() >= idle)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.close_egress_udp(id);
        }
        let expired: Vec<FlowId> = self
            .ingress_udp
            .iter()
            .filter(|(_, f)| f.last_active.elapsed() >= idle)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.close_ingress_udp(id);
        }
    }

    fn close_egress_udp(&mut self, id: FlowId) {
        if let Some(f) = self.egress_udp.remove(&id) {
            self.closed_since_trim += 1;
            match &f.origin {
                EgressUdpOrigin::Rule(o) => {
                    self.rules.flow_closed(o);
                    self.egress_udp_index.remove(&(o.key, f.client));
                }
                EgressUdpOrigin::Association { gateway, id, .. } => {
                    self.gateways.flow_closed(gateway, (0, 0));
                    self.association_index.remove(&(*id, f.dest));
                }
            }
            self.egress_udp_by_local.remove(&f.local);
            self.stack.ports.release(f.local.0, f.local.1);
            debug!(flow = id, "udp flow closed");
        }
    }

    fn close_ingress_udp(&mut self, id: FlowId) {
        if let Some(f) = self.ingress_udp.remove(&id) {
            self.closed_since_trim += 1;
            self.rules.flow_closed(&f.origin);
            self.ingress_udp_index.remove(&(f.port, f.remote));
            f.reader.abort();
            debug!(flow = id, "udp flow closed");
        }
    }

    // ---- events and commands ----

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::EgressTcp {
                key,
                stream,
                client,
            } => self.start_egress_tcp(key, stream, client),
            Event::EgressUdp {
                key,
                socket,
                client,
                data,
            } => self.egress_udp_datagram(key, socket, client, data),
            Event::HostData { flow, data } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    f.host_data(data);
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            Event::HostEof { flow } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    f.host_eof();
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            Event::HostReset { flow } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    f.abort();
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            // Servicing the flow in the next pump moves the data.
            Event::HostRoom { flow } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            Event::IngressConnected { flow, stream } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    attach(f, flow, stream, &self.events_tx, &self.host_connections);
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            Event::IngressFailed { flow, error } => {
                if let Some(f) = self.tcp_flows.get_mut(&flow) {
                    self.counters.ingress_dial_failed += 1;
                    warn!(flow, dest = %f.dest, "ingress destination unreachable: {error}");
                    f.abort();
                    mark_dirty(&mut self.dirty, flow, f);
                }
            }
            Event::UdpReply { flow, data } => self.ingress_udp_reply(flow, data),
            Event::GatewayConnect {
                gateway,
                candidates,
                client,
                reply,
            } => self.gateway_connect(gateway, candidates, client, reply),
            Event::GatewayAttach {
                flow,
                stream,
                preface,
            } => self.gateway_attach(flow, stream, preface),
            Event::GatewayDatagram {
                gateway,
                association,
                socket,
                client,
                candidates,
                data,
            } => self.gateway_datagram(gateway, association, socket, client, candidates, data),
            Event::AssociationEnded { association } => self.association_ended(association),
            Event::GatewayFailed { gateway, why } => self.gateway_failed(gateway, why),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::AddRule(rule, reply) => {
                let _ = reply.send(self.add_rule(rule));
            }
            Command::RemoveRule(rule, reply) => {
                let _ = reply.send(self.remove_rule(rule));
            }
            Command::AddGateway(spec, reply) => {
                let _ = reply.send(self.add_gateway(spec));
            }
            Command::RemoveGateway(gateway, reply) => {
                let _ = reply.send(self.remove_gateway(gateway));
            }
            Command::AddPeer(peer, endpoint, exclusive, reply) => {
                let r = self
                    .wg
                    .add_peer(&peer, endpoint, exclusive)
                    .map_err(EngineError::from);
                if r.is_ok() {
                    info!(peer = %peer.public_key, "peer added");
                    if peer.persistent_keepalive.is_some() {
                        let mut io = io!(self);
                        self.wg.initiate(&peer.public_key, &mut io);
                    }
                }
                let _ = reply.send(r);
            }
            Command::SetPeer(key, update, reply) => {
                let r = self.wg.update_peer(&key, &update).map_err(|e| match e {
                    super::wg::PeerError::Unknown(k) => EngineError::UnknownPeer(k),
                    e => EngineError::from(e),
                });
                if r.is_ok() {
                    info!(peer = %key, "peer updated");
                }
                let _ = reply.send(r);
            }
            Command::RemovePeer(key, reply) => {
                let r = if self.wg.remove_peer(&key) {
                    info!(peer = %key, "peer removed");
                    Ok(())
                } else {
                    Err(EngineError::UnknownPeer(key))
                };
                let _ = reply.send(r);
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::StopAccepting(reply) => {
                self.stop_accepting();
                let _ = reply.send(Ok(self.tcp_flows.len()));
            }
            Command::DrainProgress(reply) => {
                self.resetting.retain(|w| w.strong_count() > 0);
                let _ = reply.send(Ok((self.tcp_flows.len(), self.resetting.len())));
            }
            Command::ResetAll(reply) => {
                let n = self.reset_all();
                let _ = reply.send(Ok(n));
            }
        }
    }

    /// Shutdown: closes every listener (new connections are refused, from the host and from
    /// peers) and ends the UDP flows, which have no end of their own to wait for. TCP flows
    /// go on.
    fn add_gateway(&mut self, spec: GatewaySpec) -> Result<(), EngineError> {
        if self.draining {
            return Err(EngineError::Stopped);
        }
        let gateway = spec.gateway;
        if self.gateways.servers.contains_key(&gateway) {
            return Err(EngineError::DuplicateGateway(gateway));
        }
        let running = self.gateways.servers.len();
        if running >= nexd_common::limits::MAX_PROXY_SERVERS {
            return Err(EngineError::TooManyGateways(running));
        }
        let listener =
            host::bind_tcp(gateway.listen).map_err(|e| EngineError::GatewayUnavailable {
                gateway,
                reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!("port {} is already in use", gateway.listen.port())
                } else {
                    format!("cannot bind {}: {e}", gateway.listen)
                },
            })?;
        let task = crate::gateway::spawn_listener(
            listener,
            gateway,
            self.gateway_options.clone(),
            self.events_tx.clone(),
        );
        info!(server = %spec, "proxy server listening");
        self.gateways.servers.insert(
            gateway,
            GatewayEntry {
                allow: spec.allow,
                flows: 0,
                counters: Default::default(),
                listener: task,
            },
        );
        Ok(())
    }

    fn remove_gateway(&mut self, gateway: Gateway) -> Result<(), EngineError> {
        let Some(entry) = self.gateways.servers.remove(&gateway) else {
            return Err(EngineError::UnknownGateway(gateway));
        };
        entry.listener.abort();
        info!(server = %gateway, "proxy server removed; live connections drain");
        Ok(())
    }

    fn stop_accepting(&mut self) {
        self.draining = true;
        for (_, entry) in std::mem::take(&mut self.gateways.servers) {
            entry.listener.abort();
        }
        for (key, service) in std::mem::take(&mut self.rules.services) {
            match service.listener {
                Listener::EgressTcp(t) | Listener::EgressUdp(t) => t.iter().for_each(|t| t.abort()),
                Listener::IngressTcp => self.stack.ports.unreserve(key.2),
                Listener::IngressUdp(h) => {
                    self.stack.ports.unreserve(key.2);
                    self.stack.sockets.remove(h);
                }
            }
        }
        let egress: Vec<FlowId> = self.egress_udp.keys().copied().collect();
        egress.into_iter().for_each(|id| self.close_egress_udp(id));
        let ingress: Vec<FlowId> = self.ingress_udp.keys().copied().collect();
        ingress
            .into_iter()
            .for_each(|id| self.close_ingress_udp(id));
    }

    /// Shutdown: resets every TCP flow, RST to the peer and to the host client, so an
    /// unfinished stream never looks complete; sends the RSTs before returning.
    fn reset_all(&mut self) -> usize {
        let ids: Vec<FlowId> = self.tcp_flows.keys().copied().collect();
        for &id in &ids {
            if let Some(f) = self.tcp_flows.get_mut(&id) {
                f.abort();
                self.resetting.push(f.host_liveness());
                mark_dirty(&mut self.dirty, id, f);
            }
        }
        self.pump();
        ids.len()
    }

    fn add_rule(&mut self, spec: RuleSpec) -> Result<(), EngineError> {
        if self.draining {
            return Err(EngineError::Stopped);
        }
        let rule = spec.rule;
        if self.rules.contains(&rule) {
            return Err(EngineError::DuplicateRule(rule));
        }
        if self.rules.count() >= nexd_common::limits::MAX_RULES {
            return Err(EngineError::TooManyRules(self.rules.count()));
        }
        if rule.direction == Direction::Egress && !spec.allowed_peers.is_empty() {
            return Err(EngineError::InvalidRule {
                rule,
                reason: "allowed peers apply to ingress rules only".to_string(),
            });
        }
        let dest_ip = rule.rule.destination.ip();
        if rule.direction == Direction::Egress && self.stack.source_for(dest_ip).is_none() {
            return Err(EngineError::InvalidRule {
                rule,
                reason: format!(
                    "the node has no {} tunnel address to reach {dest_ip}",
                    if dest_ip.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            });
        }
        if let Some(reason) = super::loops::loop_reason(&self.rules, &rule, &self.local_ips) {
            return Err(EngineError::InvalidRule { rule, reason });
        }
        if self.rules.join(&spec) {
            info!(rule = %spec, "rule added to existing listener");
            return Ok(());
        }
        let port = rule.rule.port;
        let unavailable = |e: std::io::Error| EngineError::PortUnavailable {
            rule,
            port,
            reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                "is already in use".to_string()
            } else {
                format!("cannot be bound: {e}")
            },
        };
        let key = super::rules::key_of(&rule);
        let listener = match (rule.direction, rule.rule.protocol) {
            (Direction::Egress, Protocol::Tcp) => {
                let events = &self.events_tx;
                Listener::EgressTcp(
                    host::listen_on_each(&rule.rule, |addr| {
                        let l = host::bind_tcp(addr)?;
                        Ok(host::spawn_tcp_listener(l, key, events.clone()))
                    })
                    .map_err(unavailable)?,
                )
            }
            (Direction::Egress, Protocol::Udp) => {
                let events = &self.events_tx;
                Listener::EgressUdp(
                    host::listen_on_each(&rule.rule, |addr| {
                        let s = Arc::new(host::bind_udp(addr)?);
                        Ok(host::spawn_udp_listener(s, key, events.clone()))
                    })
                    .map_err(unavailable)?,
                )
            }
            (Direction::Ingress, Protocol::Tcp) => {
                self.stack.ports.reserve(port);
                Listener::IngressTcp
            }
            (Direction::Ingress, Protocol::Udp) => {
                self.stack.ports.reserve(port);
                let h = self.stack.new_udp_socket();
                let bound = self
                    .stack
                    .sockets
                    .get_mut::<sudp::Socket>(h)
                    .bind(IpListenEndpoint { addr: None, port });
                if bound.is_err() {
                    self.stack.sockets.remove(h);
                    return Err(unavailable(std::io::ErrorKind::AddrInUse.into()));
                }
                Listener::IngressUdp(h)
            }
        };
        self.rules.create(&spec, listener);
        // Ingress listeners exist once the next refill runs; run it now so the port works
        // when the caller hears back.
        info!(rule = %spec, "rule started");
        Ok(())
    }

    fn remove_rule(&mut self, rule: ProxyRule) -> Result<(), EngineError> {
        let Some(listener) = self.rules.remove(&rule) else {
            return Err(EngineError::UnknownRule(rule));
        };
        info!(%rule, "rule removed; live connections drain");
        match listener {
            None => {}
            Some(Listener::EgressTcp(tasks)) => tasks.iter().for_each(|t| t.abort()),
            Some(Listener::EgressUdp(tasks)) => {
                tasks.iter().for_each(|t| t.abort());
                let key = super::rules::key_of(&rule);
                let ids: Vec<FlowId> = self
                    .egress_udp_index
                    .iter()
                    .filter(|((k, _), _)| *k == key)
                    .map(|(_, &id)| id)
                    .collect();
                for id in ids {
                    self.close_egress_udp(id);
                }
            }
            Some(Listener::IngressTcp) => self.stack.ports.unreserve(rule.rule.port),
            Some(Listener::IngressUdp(h)) => {
                self.stack.ports.unreserve(rule.rule.port);
                self.stack.sockets.remove(h);
                let port = rule.rule.port;
                let ids: Vec<FlowId> = self
                    .ingress_udp
                    .iter()
                    .filter(|(_, f)| f.port == port)
                    .map(|(&id, _)| id)
                    .collect();
                for id in ids {
                    self.close_ingress_udp(id);
                }
            }
        }
        Ok(())
    }

    fn status(&self) -> EngineStatus {
        let c = &self.wg.counters;
        EngineStatus {
            public_key: self.wg.public_key(),
            listen_addr: self.listen_addr,
            addresses: self.addresses.clone(),
            rules: self.rules.list(),
            rule_stats: self.rules.stats(
                self.tcp_flows
                    .values()
                    .filter_map(|f| f.origin.as_ref().map(|o| (o, f.moved))),
            ),
            gateways: self.gateways.stats(
                self.tcp_flows
                    .values()
                    .filter_map(|f| f.gateway.as_ref().map(|g| (g, f.moved))),
            ),
            peers: self
                .wg
                .peers()
                .map(|p| {
                    let (tx, rx) = p.traffic();
                    PeerStatus {
                        public_key: p.public_key,
                        endpoint: p.endpoint,
                        allowed_ips: p.allowed_ips.clone(),
                        since_handshake: p.handshake_age(),
                        handshakes: p.handshakes,
                        tx_bytes: tx as u64,
                        rx_bytes: rx as u64,
                        persistent_keepalive: p.persistent_keepalive,
                    }
                })
                .collect(),
            tcp_flows: self.tcp_flows.len(),
            udp_flows: self.egress_udp.len() + self.ingress_udp.len(),
            host_sockets: self.host_connections.load(Ordering::Relaxed)
                + self.ingress_udp.len()
                + self.rules.host_listeners()
                + self.gateways.servers.len(),
            counters: {
                let e = &self.counters;
                const D: &str = "dropped_packets";
                const R: &str = "refused_flows";
                const H: &str = "handshakes";
                vec![
                    (D, "invalid_datagrams", c.invalid_datagrams),
                    (D, "spoofed_source", c.spoofed_source),
                    (D, "no_route", c.no_route),
                    (D, "no_endpoint", c.no_endpoint),
                    (D, "udp_send_dropped", e.udp_send_dropped),
                    (D, "oversize_datagrams", e.oversize_datagrams),
                    (D, "not_local", e.not_local),
                    (D, "duplicate_syn", e.duplicate_syn),
                    (R, "egress_no_route", e.egress_no_route),
                    (R, "ingress_dial_failed", e.ingress_dial_failed),
                    (R, "ports_exhausted", e.ports_exhausted),
                    ("tcp", "ports_reused_early", e.ports_reused_early),
                    (
                        "tcp",
                        "ingress_handshake_incomplete",
                        e.ingress_handshake_incomplete,
                    ),
                    ("tcp", "egress_connect_failed", e.egress_connect_failed),
                    ("tcp", "flows_reset", e.flows_reset),
                    (R, "not_allowed", e.refused_not_allowed),
                    (R, "rule_limit", e.refused_rule_limit),
                    (R, "total_limit", e.refused_total_limit),
                    (R, "proxy_not_allowed", e.gateway_not_allowed),
                    (
                        R,
                        "accept_failed",
                        host::ACCEPT_FAILURES.load(Ordering::Relaxed),
                    ),
                    (H, "unknown_peer", c.unknown_peer),
                    (H, "handshake_failed", c.handshake_failed),
                    (H, "rate_limited", c.handshake_rate_limited),
                ]
            },
        }
    }

    fn shutdown(&mut self) {
        for service in self.rules.services.values() {
            match &service.listener {
                Listener::EgressTcp(t) | Listener::EgressUdp(t) => t.iter().for_each(|t| t.abort()),
                _ => {}
            }
        }
        for e in self.gateways.servers.values() {
            e.listener.abort();
        }
        for f in self.ingress_udp.values() {
            f.reader.abort();
        }
        debug!("engine stopped");
    }
}

/// Hands flow `id`'s host connection to its I/O tasks (`open` counts the connections held).
fn attach(
    flow: &mut TcpFlow,
    id: FlowId,
    stream: tokio::net::TcpStream,
    events: &mpsc::Sender<Event>,
    open: &Arc<AtomicUsize>,
) {
    let (rx, credits, shared) = flow.attach_host();
    host::spawn_tcp_io(
        stream,
        id,
        events.clone(),
        rx,
        credits,
        shared,
        open.clone(),
    );
}

/// Queues an egress UDP flow for servicing in the current pump, once.
fn mark_udp_dirty(dirty: &mut Vec<FlowId>, id: FlowId, flow: &mut EgressUdpFlow) {
    if !flow.dirty {
        flow.dirty = true;
        dirty.push(id);
    }
}

/// Queues a flow for servicing in the current pump, once.
fn mark_dirty(dirty: &mut Vec<FlowId>, id: FlowId, flow: &mut TcpFlow) {
    if !flow.dirty {
        flow.dirty = true;
        dirty.push(id);
    }
}
