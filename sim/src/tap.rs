//! Counts TCP segments as a capture at the links would: data sent, data sent again, bytes in
//! flight. Independent of smoltcp's internals, so it stays valid while they change.

use crate::wire::{seq_after, FlowKey, TcpInfo};
use std::collections::BTreeMap;

/// Payload below which a data segment counts as small: well under any MSS on these paths.
pub const SMALL_SEGMENT: u32 = 512;

/// Segment counts for one direction of a connection (or summed over several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Segments with payload handed to the link.
    pub data_segments: u64,
    /// Payload bytes handed to the link.
    pub data_bytes: u64,
    /// Data segments starting below the highest sequence sent before: retransmissions.
    pub retransmitted_segments: u64,
    /// Payload bytes of those segments.
    pub retransmitted_bytes: u64,
    /// Data segments under [`SMALL_SEGMENT`] bytes (a sender splitting its stream finely).
    pub small_segments: u64,
    /// Segments with no payload, SYN or FIN.
    pub pure_acks: u64,
    /// Segments carrying SACK blocks.
    pub sack_segments: u64,
    /// Largest `highest sent - highest acknowledgement the sender has received`.
    pub max_in_flight: u64,
}

impl SegmentStats {
    /// Adds counts; keeps the larger in-flight maximum.
    pub fn merge(&mut self, o: &SegmentStats) {
        self.data_segments += o.data_segments;
        self.data_bytes += o.data_bytes;
        self.retransmitted_segments += o.retransmitted_segments;
        self.retransmitted_bytes += o.retransmitted_bytes;
        self.small_segments += o.small_segments;
        self.pure_acks += o.pure_acks;
        self.sack_segments += o.sack_segments;
        self.max_in_flight = self.max_in_flight.max(o.max_in_flight);
    }
}

#[derive(Debug, Default)]
struct Direction {
    snd_max: Option<u32>,
    snd_una: Option<u32>,
    stats: SegmentStats,
}

/// Segment statistics per direction of every connection seen.
#[derive(Debug, Default)]
pub struct Tap {
    flows: BTreeMap<FlowKey, Direction>,
}

impl Tap {
    /// Records a segment a host hands to its outgoing link.
    pub fn on_send(&mut self, seg: &TcpInfo) {
        let d = self.flows.entry(seg.key()).or_default();
        if seg.syn && d.snd_una.is_none() {
            d.snd_una = Some(seg.seq);
        }
        let s = &mut d.stats;
        if seg.len > 0 {
            s.data_segments += 1;
            s.data_bytes += u64::from(seg.len);
            if seg.len < SMALL_SEGMENT {
                s.small_segments += 1;
            }
            if d.snd_max.is_some_and(|m| seq_after(m, seg.seq)) {
                s.retransmitted_segments += 1;
                s.retransmitted_bytes += u64::from(seg.len);
            }
        } else if !seg.syn && !seg.fin && !seg.rst {
            s.pure_acks += 1;
        }
        if seg.sack_blocks > 0 {
            s.sack_segments += 1;
        }
        let end = seg.seq.wrapping_add(seg.seq_len());
        if d.snd_max.is_none_or(|m| seq_after(end, m)) {
            d.snd_max = Some(end);
        }
        if let (Some(max), Some(una)) = (d.snd_max, d.snd_una) {
            let in_flight = max.wrapping_sub(una);
            // A wrapped difference means una is ahead (an ACK we did not see sent): ignore.
            if in_flight < 1 << 31 {
                s.max_in_flight = s.max_in_flight.max(u64::from(in_flight));
            }
        }
    }

    /// Records a segment a link delivers: its ACK is what the other direction's sender knows.
    pub fn on_deliver(&mut self, seg: &TcpInfo) {
        let Some(ack) = seg.ack else { return };
        let d = self.flows.entry(seg.key().reverse()).or_default();
        if d.snd_una.is_none_or(|u| seq_after(ack, u)) {
            d.snd_una = Some(ack);
        }
    }

    /// Statistics of one direction of one connection.
    pub fn stats(&self, key: &FlowKey) -> SegmentStats {
        self.flows.get(key).map(|d| d.stats).unwrap_or_default()
    }

    /// Statistics summed over every direction seen.
    pub fn total(&self) -> SegmentStats {
        let mut t = SegmentStats::default();
        for d in self.flows.values() {
            t.merge(&d.stats);
        }
        t
    }
}
