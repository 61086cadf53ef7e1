//! Ready-made drop filters for recovery tests: lose exactly the segments a test names.

use crate::link::DropFilter;
use crate::wire::{FlowKey, TcpInfo};
use std::collections::BTreeMap;
use std::ops::Range;

/// Drops every data segment that carries a byte of stream range `range` (offsets from the
/// start of each connection's data; streams under 4 GiB) on that byte's first transmission.
/// Retransmissions pass however smoltcp cuts them, so recovery can succeed.
pub fn drop_once(range: Range<u64>) -> DropFilter {
    drop_times(range, 1)
}

/// Like [`drop_once`], but each byte of `range` is lost on its first `times` transmissions:
/// with 2 the first retransmission is lost too.
pub fn drop_times(range: Range<u64>, times: u8) -> DropFilter {
    let mut isn: BTreeMap<FlowKey, u32> = BTreeMap::new();
    // Per connection direction: how often each byte of `range` has been sent.
    let mut sent: BTreeMap<FlowKey, Vec<u8>> = BTreeMap::new();
    let span = (range.end - range.start) as usize;
    Box::new(move |packet| {
        let Some(seg) = TcpInfo::parse(packet) else {
            return false;
        };
        if seg.syn {
            isn.insert(seg.key(), seg.seq);
            return false;
        }
        let Some(&first) = isn.get(&seg.key()) else {
            return false;
        };
        // The SYN takes one sequence number before the first data byte.
        let start = u64::from(seg.seq.wrapping_sub(first).wrapping_sub(1));
        let end = start + u64::from(seg.len);
        let (lo, hi) = (start.max(range.start), end.min(range.end));
        if lo >= hi {
            return false;
        }
        let counts = sent.entry(seg.key()).or_insert_with(|| vec![0; span]);
        let bytes = &mut counts[(lo - range.start) as usize..(hi - range.start) as usize];
        let drop = bytes.iter().any(|&c| c < times);
        for c in bytes {
            *c = c.saturating_add(1);
        }
        drop
    })
}

/// Drops a packet when any of `filters` does (each sees every packet, to keep its counts).
pub fn any_of(mut filters: Vec<DropFilter>) -> DropFilter {
    Box::new(move |packet| filters.iter_mut().fold(false, |drop, f| f(packet) | drop))
}

/// A burst loss: the segments carrying `n` × `mss` stream bytes from offset `from` are lost
/// on first transmission (n segments when `from` is on a segment boundary).
pub fn drop_burst(from: u64, n: usize, mss: u64) -> DropFilter {
    drop_once(from..from + n as u64 * mss)
}

/// Drops the first `n` SYNs (with or without ACK) in this link's direction.
pub fn drop_syns(n: u32) -> DropFilter {
    let mut seen = 0;
    Box::new(move |packet| {
        let syn = TcpInfo::parse(packet).is_some_and(|s| s.syn);
        if syn {
            seen += 1;
        }
        syn && seen <= n
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };

    fn segment(seq: u32, len: usize, syn: bool) -> Vec<u8> {
        let payload = vec![0; len];
        let tcp = TcpRepr {
            src_port: 1,
            dst_port: 2,
            control: if syn {
                TcpControl::Syn
            } else {
                TcpControl::None
            },
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: None,
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &payload,
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Address::new(1, 1, 1, 1),
            dst_addr: Ipv4Address::new(2, 2, 2, 2),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::ignored();
        let mut p = Ipv4Packet::new_unchecked(&mut buf);
        ip.emit(&mut p, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(p.payload_mut()),
            &ip.src_addr.into(),
            &ip.dst_addr.into(),
            &caps,
        );
        buf
    }

    #[test]
    fn drops_each_byte_on_its_first_transmissions_only() {
        let mut f = drop_times(100..300, 1);
        assert!(!f(&segment(999, 0, true)));
        // Data starts at seq 1000 (offset 0).
        assert!(!f(&segment(1000, 100, false)));
        assert!(f(&segment(1100, 100, false)));
        assert!(f(&segment(1200, 100, false)));
        assert!(!f(&segment(1300, 100, false)));
        // Retransmitted with other boundaries: passes.
        assert!(!f(&segment(1050, 150, false)));
        assert!(!f(&segment(1200, 100, false)));
        let mut twice = drop_times(0..10, 2);
        assert!(!twice(&segment(0, 0, true)));
        assert!(twice(&segment(1, 10, false)));
        assert!(twice(&segment(1, 10, false)));
        assert!(!twice(&segment(1, 10, false)));
    }
}
