//! What a scenario measured: per flow and in total. Every field is a function of the
//! scenario alone (no wall clock), so two runs give equal reports.

use crate::link::LinkCounters;
use crate::sim::{LoopStats, RunError};
use crate::tap::SegmentStats;
use crate::transfer::Direction;
use std::fmt;
use std::time::Duration;

/// One flow's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowReport {
    /// Flow index in the scenario.
    pub id: usize,
    /// Which way the data went.
    pub direction: Direction,
    /// Bytes the receiving application read (all checked against the pattern).
    pub bytes: u64,
    /// Every byte arrived intact and both sides closed.
    pub complete: bool,
    /// Why the flow failed, if it did.
    pub failure: Option<String>,
    /// From connect to the last byte read.
    pub transfer_time: Duration,
    /// From connect to both sides closed.
    pub elapsed: Option<Duration>,
    /// `bytes` over `transfer_time`, in Mbit/s.
    pub goodput_mbit: f64,
    /// Gaps longer than [`crate::transfer::STALL`] with no new byte for the receiver.
    pub stalls: u32,
    /// Longest gap with no new byte for the receiver.
    pub max_gap: Duration,
    /// Segments of the data direction, counted at the link.
    pub segments: SegmentStats,
}

/// A scenario's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per flow.
    pub flows: Vec<FlowReport>,
    /// Every flow completed byte-exact, within the time limit.
    pub complete: bool,
    /// Why the run stopped early, if it did.
    pub run_error: Option<RunError>,
    /// Bytes received over all flows.
    pub bytes: u64,
    /// Virtual time from the start to the end of the run.
    pub virtual_elapsed: Duration,
    /// All flows' bytes over the time until the last byte was read, in Mbit/s.
    pub goodput_mbit: f64,
    /// Data segments sent (all directions, including retransmissions).
    pub data_segments_sent: u64,
    /// Data segments covering sequence space sent before.
    pub retransmitted_segments: u64,
    /// Stalls summed over flows.
    pub rto_like_stalls: u32,
    /// Longest gap of any flow.
    pub max_gap: Duration,
    /// Largest bytes in flight of any flow.
    pub max_in_flight: u64,
    /// All segments, all directions.
    pub segments: SegmentStats,
    /// Link A → B, then B → A.
    pub links: [LinkCounters; 2],
    /// The simulator's own work.
    pub loop_stats: LoopStats,
}

impl Report {
    /// Sums the flows' results.
    pub fn new(
        flows: Vec<FlowReport>,
        run_error: Option<RunError>,
        virtual_elapsed: Duration,
        segments: SegmentStats,
        links: [LinkCounters; 2],
        loop_stats: LoopStats,
    ) -> Report {
        let bytes = flows.iter().map(|f| f.bytes).sum();
        let busy = flows
            .iter()
            .map(|f| f.transfer_time)
            .max()
            .unwrap_or_default();
        let goodput_mbit = if busy.is_zero() {
            0.0
        } else {
            bytes as f64 * 8.0 / busy.as_secs_f64() / 1e6
        };
        Report {
            complete: run_error.is_none() && flows.iter().all(|f| f.complete),
            run_error,
            bytes,
            virtual_elapsed,
            goodput_mbit,
            data_segments_sent: segments.data_segments,
            retransmitted_segments: segments.retransmitted_segments,
            rto_like_stalls: flows.iter().map(|f| f.stalls).sum(),
            max_gap: flows.iter().map(|f| f.max_gap).max().unwrap_or_default(),
            max_in_flight: flows
                .iter()
                .map(|f| f.segments.max_in_flight)
                .max()
                .unwrap_or(0),
            segments,
            links,
            loop_stats,
            flows,
        }
    }

    /// The first failure of any flow, or the run's, for assertion messages.
    pub fn failure(&self) -> Option<String> {
        if let Some(f) = self.flows.iter().find_map(|f| f.failure.clone()) {
            return Some(f);
        }
        self.run_error.map(|e| format!("{e:?}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [ab, ba] = &self.links;
        write!(
            f,
            "{} flows, {} bytes, {:.2} Mbit/s, {:.3} s virtual, complete {}; data segs {}, \
             retransmitted {}, stalls {} (max gap {} ms), max in flight {} B; \
             A→B lost {} queue-dropped {}, B→A lost {} queue-dropped {}",
            self.flows.len(),
            self.bytes,
            self.goodput_mbit,
            self.virtual_elapsed.as_secs_f64(),
            self.complete,
            self.data_segments_sent,
            self.retransmitted_segments,
            self.rto_like_stalls,
            self.max_gap.as_millis(),
            self.max_in_flight,
            ab.lost,
            ab.queue_drops,
            ba.lost,
            ba.queue_drops,
        )?;
        if let Some(why) = self.failure() {
            write!(f, "; failure: {why}")?;
        }
        Ok(())
    }
}
