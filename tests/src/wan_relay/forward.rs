//! The relay's sockets and threads. Each direction has a receiving thread (reads the inbound
//! socket, asks its [`Link`] what becomes of each datagram, queues the survivors by release
//! time) and a releasing thread (sleeps until the earliest release time with a
//! high-resolution timed wait, then sends every datagram that is due). A transparent
//! direction (no impairment) sends straight from the receiving thread.

use super::counters::{Counters, Snapshot};
use super::link::{Link, Verdict};
use super::Config;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Socket buffers: datagrams that arrive while a busy machine has not scheduled the
/// receiving thread must not overflow them (that would be loss the path did not ask for).
/// 32 MiB holds ~100 ms of 1 Gbit/s; as root the relay exceeds net.core.rmem_max to get it.
const SOCKET_BUFFER: usize = 32 << 20;
/// Datagrams due within this much are sent now rather than after another sleep.
const EARLY: Duration = Duration::from_micros(20);
/// Most datagrams taken from the queue per wakeup (the lock is not held while sending).
const BATCH: usize = 256;

/// Where a direction sends.
#[derive(Clone)]
enum Dest {
    Fixed(SocketAddr),
    /// Peer A as last seen on socket A.
    Learned(Arc<Mutex<Option<SocketAddr>>>),
}

impl Dest {
    fn get(&self) -> Option<SocketAddr> {
        match self {
            Dest::Fixed(a) => Some(*a),
            Dest::Learned(m) => *lock(m),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the releasing thread is doing, so the receiving thread wakes it only when needed.
#[derive(Clone, Copy, PartialEq)]
enum Waiting {
    /// Sending, or about to look at the queue again.
    Busy,
    /// Nothing queued.
    Empty,
    /// Asleep until this release time.
    Until(Instant),
}

/// A datagram waiting for its release time; the arrival number breaks ties in order.
type Pending = (Reverse<(Instant, u64)>, Vec<u8>);

struct Queue {
    /// Min-heap on (release time, arrival number).
    heap: BinaryHeap<Pending>,
    waiting: Waiting,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// One direction: inbound socket → link → outbound socket.
struct Direction {
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    dest: Dest,
    /// Direction A→B records peer A here when it is not fixed.
    learn: Option<Arc<Mutex<Option<SocketAddr>>>>,
    counters: Arc<Counters>,
}

/// A running relay. Its threads live as long as the process.
pub struct Running {
    /// Side A's bound address.
    pub a: SocketAddr,
    /// Side B's bound address.
    pub b: SocketAddr,
    ab: Arc<Counters>,
    ba: Arc<Counters>,
}

impl Running {
    /// Counters of A→B and B→A.
    pub fn counters(&self) -> (Snapshot, Snapshot) {
        (self.ab.snapshot(), self.ba.snapshot())
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    if !force_buffer(&s, libc::SO_RCVBUFFORCE) {
        // Not root: capped by net.core.rmem_max.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if !force_buffer(&s, libc::SO_SNDBUFFORCE) {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Sets a socket buffer past the system maximum (needs CAP_NET_ADMIN); false if refused.
#[allow(unsafe_code)]
fn force_buffer(s: &socket2::Socket, opt: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let v = SOCKET_BUFFER as libc::c_int;
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its exact size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Binds both sides and starts the four threads.
pub fn start(cfg: &Config) -> io::Result<Running> {
    let sa = Arc::new(bind(cfg.listen_a)?);
    let sb = Arc::new(bind(cfg.listen_b)?);
    let (a, b) = (sa.local_addr()?, sb.local_addr()?);
    let learned = Arc::new(Mutex::new(None));
    let (ab, ba) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
    let to_b = Direction {
        inbound: sa.clone(),
        outbound: sb.clone(),
        dest: Dest::Fixed(cfg.peer_b),
        learn: cfg.peer_a.is_none().then(|| learned.clone()),
        counters: ab.clone(),
    };
    let to_a = Direction {
        inbound: sb,
        outbound: sa,
        dest: match cfg.peer_a {
            Some(p) => Dest::Fixed(p),
            None => Dest::Learned(learned),
        },
        learn: None,
        counters: ba.clone(),
    };
    let seed_b = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
    spawn(to_b, Link::new(cfg.impairment.clone(), cfg.seed), "a->b")?;
    spawn(to_a, Link::new(cfg.impairment.clone(), seed_b), "b->a")?;
    Ok(Running { a, b, ab, ba })
}

fn spawn(dir: Direction, link: Link, name: &str) -> io::Result<()> {
    let dir = Arc::new(dir);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            heap: BinaryHeap::new(),
            waiting: Waiting::Busy,
        }),
        wake: Condvar::new(),
    });
    if !link.is_transparent() {
        let (d, s) = (dir.clone(), shared.clone());
        std::thread::Builder::new()
            .name(format!("release {name}"))
            .spawn(move || release(&d, &s))?;
    }
    std::thread::Builder::new()
        .name(format!("receive {name}"))
        .spawn(move || receive(&dir, link, &shared))?;
    Ok(())
}

fn send(dir: &Direction, dest: Option<SocketAddr>, data: &[u8]) {
    let c = &dir.counters;
    match dest {
        None => Counters::bump(&c.no_peer),
        Some(to) => match dir.outbound.send_to(data, to) {
            Ok(_) => Counters::bump(&c.forwarded),
            Err(_) => Counters::bump(&c.send_errors),
        },
    }
}

fn receive(dir: &Direction, mut link: Link, shared: &Shared) {
    let transparent = link.is_transparent();
    let c = &dir.counters;
    let mut buf = vec![0u8; 65_536];
    let mut seq = 0u64;
    loop {
        // Errors here are ICMP reports about earlier sends from this socket (it sends the
        // other direction's datagrams): not fatal.
        let Ok((n, from)) = dir.inbound.recv_from(&mut buf) else {
            continue;
        };
        Counters::bump(&c.received);
        if let Some(slot) = &dir.learn {
            let mut peer = lock(slot);
            if *peer != Some(from) {
                *peer = Some(from);
            }
        }
        if transparent {
            send(dir, dir.dest.get(), &buf[..n]);
            continue;
        }
        let now = Instant::now();
        match link.admit(now, n) {
            Verdict::Lost => Counters::bump(&c.lost),
            Verdict::QueueDrop => Counters::bump(&c.queue_dropped),
            Verdict::Deliver { at, reordered } => {
                if reordered {
                    Counters::bump(&c.reordered);
                }
                c.peak_queue_bytes
                    .fetch_max(link.backlog(now) as u64, Ordering::Relaxed);
                seq += 1;
                let mut q = lock(&shared.queue);
                q.heap.push((Reverse((at, seq)), buf[..n].to_vec()));
                let wake = match q.waiting {
                    Waiting::Empty => true,
                    Waiting::Until(t) => at < t,
                    Waiting::Busy => false,
                };
                drop(q);
                if wake {
                    shared.wake.notify_one();
                }
            }
        }
    }
}

fn release(dir: &Direction, shared: &Shared) {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    loop {
        let mut q = lock(&shared.queue);
        loop {
            let now = Instant::now();
            let head = q.heap.peek().map(|(Reverse((at, _)), _)| *at);
            match head {
                None => {
                    q.waiting = Waiting::Empty;
                    q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                Some(at) if at <= now + EARLY => break,
                // Condvar timed waits are futex waits on a high-resolution timer: no 1 ms
                // (or jiffy) granularity.
                Some(at) => {
                    q.waiting = Waiting::Until(at);
                    q = shared
                        .wake
                        .wait_timeout(q, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        q.waiting = Waiting::Busy;
        let due = Instant::now() + EARLY;
        while batch.len() < BATCH {
            match q.heap.peek() {
                Some((Reverse((at, _)), _)) if *at <= due => {}
                _ => break,
            }
            if let Some((_, data)) = q.heap.pop() {
                batch.push(data);
            }
        }
        drop(q);
        let dest = dir.dest.get();
        for data in batch.drain(..) {
            send(dir, dest, &data);
        }
    }
}
