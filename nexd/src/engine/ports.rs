//! Tunnel-side source ports for egress flows, and the TCP 4-tuples they recently closed.
//!
//! The peer's TCP (Linux behind wireguard-go or kernel WireGuard) keeps a connection it closed
//! first in TIME-WAIT for 60 s. A SYN on that 4-tuple meanwhile gets through only if its
//! timestamp or sequence number is newer than the old connection's; otherwise Linux answers it
//! with an ACK, and the connection waits for the SYN's retransmission (~1 s). So a TCP source
//! port is not used again towards the same destination until [`QUARANTINE`] after its last
//! connection there closed, as long as any other port is free. When every port is
//! quarantined for a destination (hundreds of connections a second to one server), the port
//! closed longest ago is reused: nexd's SYNs carry RFC 7323 timestamps and RFC 6528
//! sequence numbers, both newer than the old connection's, so the peer accepts it at once.

use smoltcp::time::{Duration, Instant};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// How long a closed TCP 4-tuple is kept out of use: Linux's TIME-WAIT (`TCP_TIMEWAIT_LEN`).
pub const QUARANTINE: Duration = Duration::from_secs(60);
/// First and last ephemeral port by default (the Linux default range).
pub const DEFAULT_RANGE: (u16, u16) = (32768, 60999);
/// Most closed 4-tuples remembered at once (about 32 bytes each). Beyond it a destination's
/// oldest entry makes room, so memory stays bounded under any connection churn.
const MAX_TRACKED: usize = 1 << 17;
/// Ports a TCP allocation looks at before it reuses a quarantined one. Free ports rarer than
/// one in this many (the range nearly exhausted) may go unseen; the cursor moves on, so the
/// next allocations look further, and a reuse is still accepted by the peer (see above).
const MAX_PROBES: usize = 1024;

/// A TCP source port for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPort {
    /// The port.
    pub port: u16,
    /// Set when every usable port had closed a connection to this destination less than
    /// [`QUARANTINE`] ago: how long ago this one, the oldest, closed there.
    pub reused_after: Option<Duration>,
}

/// Ports one destination saw closing, per source address.
#[derive(Default)]
struct Recent {
    /// Port → when its last connection to the destination closed (engine clock, ms).
    closed: HashMap<u16, i64>,
    /// The same in closing order; an entry superseded by a later close of its port is stale
    /// and skipped.
    order: VecDeque<(u16, i64)>,
}

impl Recent {
    /// Forgets closes at or before `cutoff`.
    fn expire(&mut self, cutoff: i64) -> usize {
        let mut forgotten = 0;
        while let Some(&(port, at)) = self.order.front() {
            if at > cutoff {
                break;
            }
            self.order.pop_front();
            if self.closed.get(&port) == Some(&at) {
                self.closed.remove(&port);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Drops stale order entries once they outnumber live ones, so `order` stays within
    /// twice the live entries.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.closed.len() + 64 {
            let closed = &self.closed;
            self.order.retain(|(p, at)| closed.get(p) == Some(at));
        }
    }

    /// Forgets the oldest live entry; returns whether there was one.
    fn evict_oldest(&mut self) -> bool {
        while let Some((port, at)) = self.order.pop_front() {
            if self.closed.get(&port) == Some(&at) {
                self.closed.remove(&port);
                return true;
            }
        }
        false
    }
}

/// Ephemeral source ports for egress flows, one range per tunnel address.
pub struct PortAllocator {
    first: u16,
    last: u16,
    in_use: HashSet<(IpAddr, u16)>,
    /// Ports of ingress rules: never used as egress sources.
    reserved: HashSet<u16>,
    next: u16,
    /// Recently closed TCP connections, by (source address, destination).
    recent: HashMap<(IpAddr, SocketAddr), Recent>,
    /// Live entries in `recent`, all destinations together.
    tracked: usize,
}

impl PortAllocator {
    /// Ports `range.0..=range.1`, handed out round the range from a point picked by `seed`.
    pub fn new(range: (u16, u16), seed: u64) -> Self {
        let (first, last) = if range.0 <= range.1 {
            range
        } else {
            (range.1, range.0)
        };
        let span = u64::from(last - first) + 1;
        PortAllocator {
            first,
            last,
            in_use: HashSet::new(),
            reserved: HashSet::new(),
            // A random start, so a restarted nexd does not reuse the ports of connections
            // its peers may still hold (its memory of them is gone).
            next: first + (seed % span) as u16,
            recent: HashMap::new(),
            tracked: 0,
        }
    }

    fn span(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// The next port round the range (within `probes` ports) that is neither reserved, in
    /// use on `addr`, nor quarantined for `towards`; marks it in use.
    fn take_next(
        &mut self,
        addr: IpAddr,
        towards: Option<(IpAddr, SocketAddr)>,
        probes: usize,
    ) -> Option<u16> {
        let span = self.span().min(probes);
        let quarantined = towards.and_then(|k| self.recent.get(&k)).map(|r| &r.closed);
        for _ in 0..span {
            let p = self.next;
            self.next = if p >= self.last { self.first } else { p + 1 };
            if !self.reserved.contains(&p)
                && !quarantined.is_some_and(|q| q.contains_key(&p))
                && self.in_use.insert((addr, p))
            {
                return Some(p);
            }
        }
        None
    }

    /// A UDP source port not in use on `addr`. Ports go round the range so a just-freed
    /// port is reused last.
    pub fn allocate_udp(&mut self, addr: IpAddr) -> Option<u16> {
        self.take_next(addr, None, usize::MAX)
    }

    /// A TCP source port on `src` for a connection to `dst`: one whose last connection to
    /// `dst` closed at least [`QUARANTINE`] before `now` if there is any (among the next
    /// [`MAX_PROBES`]), else the one that closed longest ago (see [`TcpPort::reused_after`]).
    /// `None` when every port is in use.
    pub fn allocate_tcp(&mut self, src: IpAddr, dst: SocketAddr, now: Instant) -> Option<TcpPort> {
        let key = (src, dst);
        self.expire_one(key, now);
        let quarantined = self.recent.get(&key).map_or(0, |r| r.closed.len());
        // With every port of the range quarantined there is nothing to look for.
        if quarantined < self.span() {
            if let Some(port) = self.take_next(src, Some(key), MAX_PROBES) {
                return Some(TcpPort {
                    port,
                    reused_after: None,
                });
            }
        }
        self.reuse_oldest(key, now)
    }

    /// The quarantined port of `key` that closed longest ago and is free now.
    fn reuse_oldest(&mut self, key: (IpAddr, SocketAddr), now: Instant) -> Option<TcpPort> {
        let recent = self.recent.get_mut(&key)?;
        // Stale entries at the front go for good, so the search below starts at a live one.
        while let Some(&(p, at)) = recent.order.front() {
            if recent.closed.get(&p) == Some(&at) {
                break;
            }
            recent.order.pop_front();
        }
        let (src, _) = key;
        let pick = recent.order.iter().position(|(p, at)| {
            recent.closed.get(p) == Some(at)
                && !self.reserved.contains(p)
                && !self.in_use.contains(&(src, *p))
        })?;
        let (port, at) = recent.order[pick];
        recent.closed.remove(&port);
        if pick == 0 {
            recent.order.pop_front();
        }
        self.tracked -= 1;
        self.in_use.insert((src, port));
        Some(TcpPort {
            port,
            reused_after: Some(Duration::from_millis(
                (now.total_millis() - at).max(0) as u64
            )),
        })
    }

    /// Keeps an ingress rule's port out of the egress range.
    pub fn reserve(&mut self, port: u16) {
        self.reserved.insert(port);
    }

    /// Undoes [`PortAllocator::reserve`].
    pub fn unreserve(&mut self, port: u16) {
        self.reserved.remove(&port);
    }

    /// Releases a port that carried no TCP connection (UDP, or a connect that never sent).
    pub fn release(&mut self, addr: IpAddr, port: u16) {
        self.in_use.remove(&(addr, port));
    }

    /// Releases the port of a TCP connection to `dst` that closed at `now`, and keeps the
    /// 4-tuple out of use for [`QUARANTINE`].
    pub fn release_tcp(&mut self, src: IpAddr, port: u16, dst: SocketAddr, now: Instant) {
        self.in_use.remove(&(src, port));
        let key = (src, dst);
        self.expire_one(key, now);
        if self.tracked >= MAX_TRACKED {
            // Full: make room with this destination's oldest, or leave this one out.
            if self.recent.get_mut(&key).is_some_and(Recent::evict_oldest) {
                self.tracked -= 1;
            } else {
                return;
            }
        }
        let at = now.total_millis();
        let recent = self.recent.entry(key).or_default();
        if recent.closed.insert(port, at).is_none() {
            self.tracked += 1;
        }
        recent.order.push_back((port, at));
        recent.compact();
    }

    /// Forgets every 4-tuple whose quarantine is over (call about once a second).
    pub fn sweep(&mut self, now: Instant) {
        let cutoff = (now - QUARANTINE).total_millis();
        let mut forgotten = 0;
        self.recent.retain(|_, r| {
            forgotten += r.expire(cutoff);
            !r.closed.is_empty()
        });
        self.tracked -= forgotten;
    }

    fn expire_one(&mut self, key: (IpAddr, SocketAddr), now: Instant) {
        let cutoff = (now - QUARANTINE).total_millis();
        if let Some(r) = self.recent.get_mut(&key) {
            self.tracked -= r.expire(cutoff);
            if r.closed.is_empty() {
                self.recent.remove(&key);
            }
        }
    }

    /// Closed 4-tuples currently remembered (for tests and status).
    pub fn tracked(&self) -> usize {
        self.tracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 0, 1));

    fn dst(port: u16) -> SocketAddr {
        SocketAddr::from(([100, 100, 0, 2], port))
    }

    fn at(secs: f64) -> Instant {
        Instant::from_micros((secs * 1e6) as i64)
    }

    /// Four ports, starting at the first.
    fn four() -> PortAllocator {
        PortAllocator::new((40000, 40003), 0)
    }

    fn fresh(p: Option<TcpPort>) -> u16 {
        let p = p.expect("a port");
        assert_eq!(p.reused_after, None, "port {} should be fresh", p.port);
        p.port
    }

    #[test]
    fn a_closed_tuple_is_not_reused_within_the_quarantine() {
        let mut a = four();
        let d = dst(7);
        let p = fresh(a.allocate_tcp(SRC, d, at(0.0)));
        a.release_tcp(SRC, p, d, at(1.0));
        // Four more connections in a row go round the other three ports, never to `p`.
        let mut seen = Vec::new();
        for i in 0..3 {
            let q = fresh(a.allocate_tcp(SRC, d, at(2.0 + f64::from(i))));
            assert_ne!(q, p);
            a.release_tcp(SRC, q, d, at(2.5 + f64::from(i)));
            seen.push(q);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 3);
        // All four quarantined now: the oldest close (p, at 1 s) is reused and says so.
        let r = a.allocate_tcp(SRC, d, at(10.0)).expect("fallback");
        assert_eq!(r.port, p);
        assert_eq!(r.reused_after, Some(Duration::from_secs(9)));
        // Once the quarantine is over the port is fresh again.
        a.release_tcp(SRC, p, d, at(10.0));
        assert_eq!(
            a.allocate_tcp(SRC, d, at(70.0)).map(|t| t.reused_after),
            Some(None)
        );
    }

    #[test]
    fn quarantine_is_per_destination() {
        let mut a = four();
        let (d1, d2) = (dst(7), dst(8));
        for p in 40000..=40003 {
            assert_eq!(fresh(a.allocate_tcp(SRC, d1, at(0.0))), p);
            a.release_tcp(SRC, p, d1, at(0.1));
        }
        // Every port is quarantined towards d1, none towards d2.
        for _ in 0..4 {
            let p = fresh(a.allocate_tcp(SRC, d2, at(1.0)));
            a.release(SRC, p);
        }
        assert!(a
            .allocate_tcp(SRC, d1, at(1.0))
            .unwrap()
            .reused_after
            .is_some());
    }

    #[test]
    fn ports_in_use_and_reserved_are_never_handed_out() {
        let mut a = four();
        let d = dst(7);
        a.reserve(40001);
        let p1 = fresh(a.allocate_tcp(SRC, d, at(0.0)));
        let p2 = fresh(a.allocate_tcp(SRC, d, at(0.0)));
        let p3 = fresh(a.allocate_tcp(SRC, d, at(0.0)));
        let mut got = [p1, p2, p3];
        got.sort_unstable();
        assert_eq!(got, [40000, 40002, 40003]);
        assert_eq!(
            a.allocate_tcp(SRC, d, at(0.0)),
            None,
            "all in use or reserved"
        );
        assert_eq!(a.allocate_udp(SRC), None);
        // Closed but quarantined and in use elsewhere: still not handed out twice.
        a.release_tcp(SRC, p1, d, at(1.0));
        let u = a.allocate_udp(SRC).expect("udp ignores tcp quarantine");
        assert_eq!(u, p1);
        assert_eq!(a.allocate_tcp(SRC, d, at(2.0)), None);
        a.release(SRC, u);
        assert_eq!(a.allocate_tcp(SRC, d, at(2.0)).map(|t| t.port), Some(p1));
    }

    #[test]
    fn the_other_source_address_is_independent() {
        let mut a = four();
        let d = dst(7);
        let v6: IpAddr = "fd00::1".parse().unwrap();
        for _ in 0..4 {
            let p = fresh(a.allocate_tcp(SRC, d, at(0.0)));
            a.release_tcp(SRC, p, d, at(0.0));
        }
        assert_eq!(
            a.allocate_tcp(v6, d, at(0.0)).map(|t| t.reused_after),
            Some(None)
        );
    }

    #[test]
    fn memory_stays_bounded_and_sweeps_clear_it() {
        let mut a = PortAllocator::new(DEFAULT_RANGE, 7);
        let d = dst(7);
        // Many more closes than ports, within one quarantine: one entry per port at most.
        for i in 0..100_000u32 {
            let t = at(f64::from(i) * 0.0001);
            let p = a.allocate_tcp(SRC, d, t).unwrap();
            a.release_tcp(SRC, p.port, d, t);
        }
        assert_eq!(a.tracked(), a.span());
        let r = &a.recent[&(SRC, d)];
        assert!(
            r.order.len() <= 2 * r.closed.len() + 64,
            "{}",
            r.order.len()
        );
        // Many destinations: the global cap holds.
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            let d = SocketAddr::from(([100, 100, (i >> 8) as u8, i as u8], 7));
            let p = a.allocate_tcp(SRC, d, at(20.0)).unwrap();
            a.release_tcp(SRC, p.port, d, at(20.0));
        }
        assert!(a.tracked() <= MAX_TRACKED);
        a.sweep(at(200.0));
        assert_eq!(a.tracked(), 0);
        assert!(a.recent.is_empty());
    }

    #[test]
    fn a_range_of_one_port_works() {
        let mut a = PortAllocator::new((50000, 50000), 12345);
        let d = dst(7);
        let p = fresh(a.allocate_tcp(SRC, d, at(0.0)));
        assert_eq!(p, 50000);
        assert_eq!(a.allocate_tcp(SRC, d, at(0.0)), None);
        a.release_tcp(SRC, p, d, at(0.0));
        let r = a.allocate_tcp(SRC, d, at(0.5)).unwrap();
        assert_eq!(
            (r.port, r.reused_after),
            (50000, Some(Duration::from_millis(500)))
        );
    }
}
