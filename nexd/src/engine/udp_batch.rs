//! Batched WireGuard datagram I/O: UDP generic segmentation offload (GSO) out, and generic
//! receive offload (GRO) in.
//!
//! One `sendto` per datagram was half of nexd's CPU time in a single TCP stream. Here the
//! datagrams produced by one pump are queued; runs of equal-sized datagrams to one endpoint
//! leave as one `sendmsg` carrying `UDP_SEGMENT`, and all runs leave in one `sendmmsg`. A
//! receiver with `UDP_GRO` on (nexd sets it) gets such a run as one buffer with its segment
//! size, so one `recvmsg` brings up to 64 datagrams. Kernels or paths without GSO fall back
//! to one message per datagram, found out on the first failure.
//!
//! GSO is off unless NEXD_GSO=1. It takes nexd <-> nexd from about 1.7 to 2.5-2.8 Gbit/s
//! here, but it also lets nexd outrun a wireguard-go 0.0.2022 peer (one read per datagram,
//! default buffers) so far that the loss stalled smoltcp connections for over a minute in
//! the 1,000-connection load test. Without it, datagrams still leave in batches (one
//! `sendmmsg` per pump), and received GSO batches are still taken whole.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams in one GSO send (the kernel takes up to 64). Bursts of 64 overflowed a
/// wireguard-go peer more; 8 is as fast between two nexd (2.5-2.8 Gbit/s either way).
const MAX_SEGMENTS: usize = 8;
/// Most payload bytes in one GSO send (an IP datagram's limit, less headers).
const MAX_GSO_BYTES: usize = 65_000;
/// Most runs handed to one `sendmmsg`.
const MAX_MESSAGES: usize = 64;

/// One run of datagrams to one endpoint: bytes `start..end` of the batch buffer, in segments
/// of `segment` bytes (the last may be shorter).
#[derive(Clone, Copy)]
struct Run {
    to: SocketAddr,
    start: usize,
    end: usize,
    segment: usize,
}

/// Datagrams waiting to be sent, in order.
#[derive(Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    runs: Vec<Run>,
    /// Runs before this one are sent.
    sent: usize,
    /// Set once the kernel refused a GSO send: every datagram then goes alone.
    no_gso: bool,
    datagrams: usize,
}

impl SendBatch {
    /// An empty batch; `gso` false sends one datagram per message.
    pub fn new(gso: bool) -> Self {
        SendBatch {
            no_gso: !gso,
            ..Default::default()
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.sent == self.runs.len()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    /// Queues one datagram.
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.datagrams += 1;
        let unsent = self.runs.len() > self.sent;
        if !self.no_gso && unsent {
            if let Some(last) = self.runs.last_mut() {
                let len = last.end - last.start;
                // A run grows while every segment so far is full size and this one is no
                // larger: the kernel cuts it back into the same datagrams.
                if last.to == to
                    && len % last.segment == 0
                    && data.len() <= last.segment
                    && len / last.segment < MAX_SEGMENTS
                    && len + data.len() <= MAX_GSO_BYTES
                    && !data.is_empty()
                {
                    last.end += data.len();
                    return;
                }
            }
        }
        self.runs.push(Run {
            to,
            start,
            end: start + data.len(),
            segment: data.len().max(1),
        });
    }

    /// Sends what the socket takes; when it is full the rest stays queued for when it is
    /// writable ([`SendBatch::is_empty`] tells). Other errors drop the run that failed.
    /// Returns the number of datagrams dropped.
    pub fn flush(&mut self, sock: &UdpSocket) -> usize {
        let mut dropped = 0;
        while !self.is_empty() {
            let end = (self.sent + MAX_MESSAGES).min(self.runs.len());
            let runs = &self.runs[self.sent..end];
            let r = sock.try_io(Interest::WRITABLE, || {
                send_runs(sock.as_raw_fd(), &self.buf, runs, !self.no_gso)
            });
            match r {
                Ok(n) => {
                    for run in &self.runs[self.sent..self.sent + n] {
                        self.datagrams -= segments(run);
                    }
                    self.sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return dropped,
                Err(e) => {
                    let run = self.runs[self.sent];
                    if segments(&run) > 1 && !self.no_gso && gso_unsupported(&e) {
                        // Resend this run and everything after it one datagram per message.
                        tracing::debug!("UDP GSO refused ({e}); sending datagrams one by one");
                        self.no_gso = true;
                        self.split_pending();
                        continue;
                    }
                    self.datagrams -= segments(&run);
                    dropped += segments(&run);
                    self.sent += 1;
                }
            }
        }
        self.buf.clear();
        self.runs.clear();
        self.sent = 0;
        dropped
    }

    /// Turns the unsent runs into one run per datagram.
    fn split_pending(&mut self) {
        let pending: Vec<Run> = self.runs.drain(self.sent..).collect();
        for run in pending {
            let mut at = run.start;
            while at < run.end {
                let end = (at + run.segment).min(run.end);
                self.runs.push(Run {
                    to: run.to,
                    start: at,
                    end,
                    segment: end - at,
                });
                at = end;
            }
        }
    }
}

fn segments(run: &Run) -> usize {
    (run.end - run.start).div_ceil(run.segment).max(1)
}

/// Errors that mean "this kernel or device cannot segment", not "this datagram is bad".
fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// `sendmmsg` of `runs`, each with `UDP_SEGMENT` when it holds more than one datagram.
/// Returns how many runs the kernel took.
#[allow(unsafe_code)]
fn send_runs(fd: i32, buf: &[u8], runs: &[Run], gso: bool) -> io::Result<usize> {
    let n = runs.len();
    let addrs: Vec<socket2::SockAddr> = runs.iter().map(|r| (r.to).into()).collect();
    let mut iovs: Vec<libc::iovec> = runs
        .iter()
        .map(|r| libc::iovec {
            iov_base: buf[r.start..].as_ptr() as *mut libc::c_void,
            iov_len: r.end - r.start,
        })
        .collect();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // u64 words keep the control buffers aligned for cmsghdr.
    let mut control = vec![0u64; n * space.div_ceil(8)];
    let words = space.div_ceil(8);
    // SAFETY: an all-zero mmsghdr is a valid empty header; every pointer set below points
    // into `addrs`, `iovs` or `control`, which outlive the sendmmsg call.
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (i, run) in runs.iter().enumerate() {
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        h.msg_namelen = addrs[i].len();
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        if gso && run.end - run.start > run.segment {
            let ctl = control[i * words..].as_mut_ptr() as *mut libc::c_void;
            h.msg_control = ctl;
            h.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` writable, aligned bytes.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, run.segment as u16);
            }
        }
    }
    // SAFETY: msgs holds n initialised headers whose pointers are valid (see above).
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Turns on GRO for the WireGuard socket; best effort (old kernels just say no).
#[allow(unsafe_code)]
pub fn enable_gro(sock: &UdpSocket) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a valid pointer of the given length.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        ) == 0
    }
}

/// Receives one buffer, which may hold several datagrams from one sender coalesced by GRO.
/// Returns its length, the sender and the datagram size (the whole length when not
/// coalesced).
#[allow(unsafe_code)]
pub fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    sock.try_io(Interest::READABLE, || {
        // SAFETY: all-zero sockaddr_storage and msghdr are valid; the pointers set below
        // point at locals that outlive recvmsg.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = &mut addr as *mut _ as *mut libc::c_void;
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
        h.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        h.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: h is a valid msghdr as set up above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut h, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut segment = n;
        // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
        // msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                c = libc::CMSG_NXTHDR(&h, c);
            }
        }
        let from =
            socket_addr(&addr).ok_or_else(|| io::Error::other("datagram from a non-IP address"))?;
        Ok((n, from, segment))
    })
}

/// The IP address and port in a socket address the kernel filled.
#[allow(unsafe_code)]
fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Room for every test datagram: loopback drops what does not fit.
        let _ = socket2::SockRef::from(&b).set_recv_buffer_size(4 << 20);
        (a, b)
    }

    async fn flush_all(batch: &mut SendBatch, a: &UdpSocket) {
        while !batch.is_empty() {
            a.writable().await.unwrap();
            assert_eq!(batch.flush(a), 0, "datagrams dropped");
        }
    }

    /// Receives until `want` datagrams arrived, split by their segment sizes.
    async fn receive(b: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let deadline = std::time::Duration::from_secs(10);
        tokio::time::timeout(deadline, receive_all(b, want))
            .await
            .expect("datagrams missing after 10 s")
    }

    async fn receive_all(b: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            b.readable().await.unwrap();
            match try_recv(b, &mut buf) {
                Ok((n, _, seg)) => got.extend(buf[..n].chunks(seg).map(|c| c.to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn runs_arrive_as_the_same_datagrams_in_order() {
        let (a, b) = pair().await;
        let gro = enable_gro(&b);
        let to = b.local_addr().unwrap();
        let mut batch = SendBatch::default();
        // Full-size runs, a short tail, sizes that change, and more than one run's worth.
        let mut sent = Vec::new();
        for i in 0..200usize {
            let len = match i % 50 {
                49 => 100,
                48 => 1,
                _ => 1400,
            };
            sent.push(vec![i as u8; len]);
        }
        for d in &sent {
            batch.push(to, d);
        }
        assert_eq!(batch.len(), 200);
        assert!(batch.runs.len() < 40, "runs: {}", batch.runs.len());
        flush_all(&mut batch, &a).await;
        assert!(batch.is_empty());
        let got = receive(&b, sent.len()).await;
        assert_eq!(got, sent, "gro={gro}");
    }

    #[tokio::test]
    async fn without_gso_every_datagram_goes_alone() {
        let (a, b) = pair().await;
        let to = b.local_addr().unwrap();
        let mut batch = SendBatch {
            no_gso: true,
            ..Default::default()
        };
        let sent: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 500]).collect();
        for d in &sent {
            batch.push(to, d);
        }
        assert_eq!(batch.runs.len(), 10);
        flush_all(&mut batch, &a).await;
        assert_eq!(receive(&b, 10).await, sent);
    }

    #[test]
    fn split_keeps_datagram_boundaries() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut batch = SendBatch::default();
        for len in [1000, 1000, 1000, 10] {
            batch.push(to, &vec![0; len]);
        }
        assert_eq!(batch.runs.len(), 1);
        batch.split_pending();
        let lens: Vec<usize> = batch.runs.iter().map(|r| r.end - r.start).collect();
        assert_eq!(lens, vec![1000, 1000, 1000, 10]);
    }
}
