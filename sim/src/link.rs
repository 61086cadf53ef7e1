//! One direction of an impaired path: loss, a rate-limited drop-tail bottleneck, delay,
//! jitter and reordering, on a virtual clock.

use crate::rng::Rng;
use smoltcp::time::Instant;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

/// Impairments of one direction. Built with [`LinkConfig::new`] and the setters.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from [0, jitter] per packet; order is kept (as on one path).
    pub jitter: Duration,
    /// Probability that a packet is lost, drawn per packet before the bottleneck.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is infinitely fast (no queue).
    pub rate_bps: Option<u64>,
    /// Drop-tail queue of the bottleneck in bytes, counting the packet being serialised.
    pub queue_bytes: usize,
    /// Probability that a packet is held back by `reorder_delay` and overtaken by later ones.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
    /// Seed of this link's random draws.
    pub seed: u64,
}

impl LinkConfig {
    /// A clean link with this one-way delay.
    pub fn new(delay: Duration) -> Self {
        LinkConfig {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_bytes: usize::MAX,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            seed: 1,
        }
    }

    /// Sets the per-packet jitter bound.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the random loss probability (0.01 is 1 %).
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Adds a bottleneck of `bits_per_second` with a drop-tail queue of `queue_bytes`.
    pub fn rate(mut self, bits_per_second: u64, queue_bytes: usize) -> Self {
        self.rate_bps = Some(bits_per_second);
        self.queue_bytes = queue_bytes;
        self
    }

    /// Holds back a fraction `p` of packets by `delay` so that later packets overtake them.
    pub fn reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }

    /// Sets the seed of the link's random draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// What happened to the packets offered to a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Packets handed to the link.
    pub offered: u64,
    /// Packets that came out at the far end.
    pub delivered: u64,
    /// Bytes that came out at the far end.
    pub delivered_bytes: u64,
    /// Packets lost at random.
    pub lost: u64,
    /// Packets dropped because the bottleneck queue was full.
    pub queue_drops: u64,
    /// Packets dropped by a test's filter.
    pub filtered: u64,
    /// Packets held back and overtaken.
    pub reordered: u64,
    /// Largest bottleneck queue seen, in bytes.
    pub max_queue_bytes: u64,
}

/// A test's drop rule: returns true for packets the link must drop.
pub type DropFilter = Box<dyn FnMut(&[u8]) -> bool>;

/// A packet on its way, ordered by arrival time, then by the order it was sent.
struct InFlight {
    arrival_us: i64,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest arrival must come out first.
        (other.arrival_us, other.seq).cmp(&(self.arrival_us, self.seq))
    }
}

/// One direction of a path.
pub struct Link {
    cfg: LinkConfig,
    rng: Rng,
    in_flight: BinaryHeap<InFlight>,
    /// Departure times (ns) and sizes of the packets in the bottleneck queue.
    queue: VecDeque<(u64, usize)>,
    queued_bytes: usize,
    /// When the bottleneck finishes serialising its last queued packet (ns).
    busy_until_ns: u64,
    /// Arrival of the last in-order packet (ns), so jitter never reorders.
    last_arrival_ns: u64,
    seq: u64,
    filter: Option<DropFilter>,
    counters: LinkCounters,
}

impl Link {
    /// A link with these impairments and nothing in flight.
    pub fn new(cfg: LinkConfig) -> Self {
        Link {
            rng: Rng::new(cfg.seed),
            cfg,
            in_flight: BinaryHeap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until_ns: 0,
            last_arrival_ns: 0,
            seq: 0,
            filter: None,
            counters: LinkCounters::default(),
        }
    }

    /// The link's impairments.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Drops every packet for which `filter` returns true (before any random draw).
    pub fn set_filter(&mut self, filter: DropFilter) {
        self.filter = Some(filter);
    }

    /// Hands a packet to the link at `now`.
    pub fn send(&mut self, now: Instant, packet: Vec<u8>) {
        self.counters.offered += 1;
        if let Some(f) = self.filter.as_mut() {
            if f(&packet) {
                self.counters.filtered += 1;
                return;
            }
        }
        if self.rng.chance(self.cfg.loss) {
            self.counters.lost += 1;
            return;
        }
        let now_ns = now.total_micros().max(0) as u64 * 1000;
        let Some(depart_ns) = self.enqueue(now_ns, packet.len()) else {
            self.counters.queue_drops += 1;
            return;
        };
        let jitter_ns = self.rng.up_to(self.cfg.jitter.as_nanos() as u64);
        let mut arrival_ns = depart_ns + self.cfg.delay.as_nanos() as u64 + jitter_ns;
        if self.rng.chance(self.cfg.reorder) {
            self.counters.reordered += 1;
            arrival_ns += self.cfg.reorder_delay.as_nanos() as u64;
        } else {
            arrival_ns = arrival_ns.max(self.last_arrival_ns);
            self.last_arrival_ns = arrival_ns;
        }
        self.seq += 1;
        self.in_flight.push(InFlight {
            arrival_us: arrival_ns.div_ceil(1000) as i64,
            seq: self.seq,
            packet,
        });
    }

    /// Puts a packet of `len` bytes through the bottleneck: its departure time in ns, or
    /// `None` when the queue has no room.
    fn enqueue(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        let Some(rate) = self.cfg.rate_bps else {
            return Some(now_ns);
        };
        while let Some(&(depart, size)) = self.queue.front() {
            if depart > now_ns {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= size;
        }
        if self.queued_bytes.saturating_add(len) > self.cfg.queue_bytes {
            return None;
        }
        let serialise_ns = (len as u128 * 8 * 1_000_000_000 / u128::from(rate.max(1))) as u64;
        let depart = self.busy_until_ns.max(now_ns) + serialise_ns;
        self.busy_until_ns = depart;
        self.queue.push_back((depart, len));
        self.queued_bytes += len;
        self.counters.max_queue_bytes = self.counters.max_queue_bytes.max(self.queued_bytes as u64);
        Some(depart)
    }

    /// When the next packet comes out, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight
            .peek()
            .map(|p| Instant::from_micros(p.arrival_us))
    }

    /// The next packet that has arrived by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.in_flight.peek()?.arrival_us > now.total_micros() {
            return None;
        }
        let p = self.in_flight.pop()?;
        self.counters.delivered += 1;
        self.counters.delivered_bytes += p.packet.len() as u64;
        Some(p.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(link: &mut Link, until_ms: i64) -> Vec<(i64, u8)> {
        let mut out = Vec::new();
        while let Some(t) = link.next_arrival() {
            if t.total_millis() > until_ms {
                break;
            }
            let p = link.pop_due(t).unwrap_or_default();
            out.push((t.total_micros(), p[0]));
        }
        out
    }

    #[test]
    fn delay_and_serialisation() {
        // 1000-byte packets at 8 Mbit/s take 1 ms each; queue holds three.
        let mut l = Link::new(LinkConfig::new(Duration::from_millis(10)).rate(8_000_000, 3000));
        for i in 0..5u8 {
            l.send(Instant::ZERO, vec![i; 1000]);
        }
        let got = drain(&mut l, 100);
        assert_eq!(got, vec![(11_000, 0), (12_000, 1), (13_000, 2)]);
        assert_eq!(l.counters().queue_drops, 2);
        assert_eq!(l.counters().max_queue_bytes, 3000);
    }

    #[test]
    fn reordering_lets_later_packets_overtake() {
        let cfg = LinkConfig::new(Duration::from_millis(5)).reorder(0.3, Duration::from_millis(3));
        let mut l = Link::new(cfg);
        for i in 0..50u8 {
            l.send(Instant::from_micros(i64::from(i) * 100), vec![i]);
        }
        let order: Vec<u8> = drain(&mut l, 1000).into_iter().map(|(_, b)| b).collect();
        assert_eq!(order.len(), 50);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "{order:?}");
        assert!(l.counters().reordered > 5);
    }

    #[test]
    fn jitter_keeps_order() {
        let cfg = LinkConfig::new(Duration::from_millis(5)).jitter(Duration::from_millis(4));
        let mut l = Link::new(cfg);
        for i in 0..100u8 {
            l.send(Instant::from_micros(i64::from(i) * 100), vec![i]);
        }
        let order: Vec<u8> = drain(&mut l, 1000).into_iter().map(|(_, b)| b).collect();
        assert_eq!(order, (0..100).collect::<Vec<u8>>());
    }
}
