//! Sender-side record of every segment in flight: SACK scoreboard (RFC 2018, RFC 6675)
//! and RACK loss detection (RFC 8985).
//!
//! Each data segment sent and not yet cumulatively acknowledged has an entry with the time
//! it was (last) sent. Incoming SACK blocks mark entries delivered; RACK then deems an entry
//! lost when a segment sent sufficiently later has been delivered. Lost entries are
//! retransmitted one by one instead of rewinding the whole window, and `pipe` (the bytes
//! really in the network) replaces the flight size for congestion-window checks.
//!
//! Each entry also carries the connection's delivery counters at its send time, so that its
//! acknowledgement gives a delivery-rate sample (draft-cheng-iccrg-delivery-rate-estimation),
//! which a model-based congestion controller (BBR) needs.

use alloc::collections::VecDeque;

use crate::time::{Duration, Instant};
use crate::wire::TcpSeqNumber;

const SACKED: u8 = 1;
const LOST: u8 = 2;
const RETRANSMITTED: u8 = 4;

/// One segment in flight. `end` includes the FIN if the segment carried one.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Segment {
    start: TcpSeqNumber,
    end: TcpSeqNumber,
    sent_at: Instant,
    flags: u8,
    fin: bool,
    /// The connection's delivery counters when this segment was (last) sent.
    rate: SendState,
}

/// Delivery counters copied into each segment at its send time.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct SendState {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

/// A delivery-rate sample: what one ACK says about the path's bandwidth.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSample {
    /// Bytes delivered (cumulatively ACKed or SACKed) over the connection's life.
    pub delivered_total: u64,
    /// `delivered_total` when the newest segment this ACK delivered was sent (round counting).
    pub prior_delivered: u64,
    /// Bytes this ACK newly delivered.
    pub newly_delivered: usize,
    /// Delivery rate in bytes per second, when the interval was long enough to trust.
    pub bandwidth: Option<u64>,
    /// The sample was taken while the sender had nothing to send: it may understate the path.
    pub app_limited: bool,
    /// Bytes ever marked lost over the connection's life (a retransmission lost again
    /// counts again), for controllers that bound their window by the loss rate.
    pub lost_total: u64,
}

impl Segment {
    fn len(&self) -> usize {
        self.end - self.start
    }
    fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A segment to retransmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retransmission {
    /// First sequence number.
    pub start: TcpSeqNumber,
    /// Sequence space covered, including the FIN if any.
    pub len: usize,
    /// Whether the segment carried the FIN.
    pub fin: bool,
}

/// What an ACK told the scoreboard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AckOutcome {
    /// An RTT sample from a segment that was never retransmitted (Karn's rule).
    pub rtt_sample: Option<Duration>,
    /// Bytes newly marked SACKed.
    pub newly_sacked: usize,
    /// Delivery-rate sample, when the ACK delivered anything.
    pub rate: Option<RateSample>,
}

/// The scoreboard and the RACK state of one connection.
#[derive(Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Scoreboard {
    segments: VecDeque<Segment>,
    sacked_bytes: usize,
    /// Bytes deemed lost and not yet retransmitted.
    lost_bytes: usize,
    /// RACK: send time and end of the most recently sent segment known delivered.
    rack_xmit: Option<Instant>,
    rack_end: Option<TcpSeqNumber>,
    /// RACK: the RTT measured on that segment.
    rack_rtt: Duration,
    /// Highest SACKed sequence number seen, to detect reordering.
    high_sacked: Option<TcpSeqNumber>,
    /// Whether the path was seen reordering (a hole filled by an original transmission).
    reordering_seen: bool,
    /// Minimum RTT observed.
    min_rtt: Option<Duration>,
    /// Smoothed RTT in microseconds (1/8 EWMA), finer than the RTO estimator's milliseconds.
    srtt_us: Option<u64>,
    /// Delivery-rate estimation: bytes delivered so far, when the last was, and the send
    /// time of the newest segment delivered.
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    /// Nonzero while the sender is application-limited: `delivered` beyond which that ends.
    app_limited_until: u64,
    /// Bytes ever marked lost.
    lost_total: u64,
}

impl Scoreboard {
    /// Forgets everything (connection reset).
    pub fn clear(&mut self) {
        *self = Scoreboard::default();
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes SACKed above the cumulative ACK.
    pub fn sacked_bytes(&self) -> usize {
        self.sacked_bytes
    }

    /// Bytes deemed lost and awaiting retransmission.
    pub fn lost_bytes(&self) -> usize {
        self.lost_bytes
    }

    /// Smoothed RTT with microsecond resolution, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt_us.map(Duration::from_micros)
    }

    /// Minimum RTT observed.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Records a segment of new data (or a FIN) sent at `now`.
    pub fn on_send(&mut self, start: TcpSeqNumber, end: TcpSeqNumber, fin: bool, now: Instant) {
        if end <= start {
            return;
        }
        if let Some(last) = self.segments.back() {
            if start < last.end {
                // Not new data (a rewind after RTO in a state we do not track): ignore.
                return;
            }
        }
        let rate = self.send_state(now);
        self.segments.push_back(Segment {
            start,
            end,
            sent_at: now,
            flags: 0,
            fin,
            rate,
        });
    }

    /// The delivery counters to store in a segment sent at `now`.
    fn send_state(&mut self, now: Instant) -> SendState {
        if self.segments.is_empty() {
            // Nothing in flight: the sending interval starts now, not at the last delivery.
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        SendState {
            delivered: self.delivered,
            delivered_time: self.delivered_time.unwrap_or(now),
            first_sent_time: self.first_sent_time.unwrap_or(now),
            app_limited: self.app_limited_until != 0,
        }
    }

    /// The sender has room in its window but no data: the rate samples of what is in flight
    /// now may understate the path (the draft's C.app_limited).
    pub fn on_app_limited(&mut self) {
        let in_flight = match (self.segments.front(), self.segments.back()) {
            (Some(first), Some(last)) => last.end - first.start,
            _ => 0,
        };
        self.app_limited_until = (self.delivered + in_flight as u64).max(1);
    }

    /// The lowest segment deemed lost, to retransmit next.
    pub fn next_lost(&self) -> Option<Retransmission> {
        if self.lost_bytes == 0 {
            return None;
        }
        self.segments
            .iter()
            .find(|s| s.is(LOST))
            .map(|s| Retransmission {
                start: s.start,
                len: s.len(),
                fin: s.fin,
            })
    }

    /// The highest segment in flight (tail loss probe).
    pub fn last(&self) -> Option<Retransmission> {
        self.segments.back().map(|s| Retransmission {
            start: s.start,
            len: s.len(),
            fin: s.fin,
        })
    }

    fn index_of(&self, start: TcpSeqNumber) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.start < start);
        (i < self.segments.len() && self.segments[i].start == start).then_some(i)
    }

    /// Records that the segment starting at `start` was sent again at `now`, `data_len`
    /// octets of it (less than the whole when the send buffer wrapped: the rest stays lost).
    pub fn on_retransmit(&mut self, start: TcpSeqNumber, data_len: usize, now: Instant) {
        let Some(i) = self.index_of(start) else {
            return;
        };
        let s = self.segments[i];
        let data_in_segment = s.len() - s.fin as usize;
        if data_len > 0 && data_len < data_in_segment {
            // Split: the part not sent keeps its flags.
            let cut = s.start + data_len;
            let mut rest = s;
            rest.start = cut;
            self.segments[i].end = cut;
            self.segments[i].fin = false;
            self.segments.insert(i + 1, rest);
        }
        let rate = self.send_state(now);
        let s = &mut self.segments[i];
        if s.is(LOST) {
            self.lost_bytes -= s.len();
        }
        s.flags = (s.flags & !LOST) | RETRANSMITTED;
        s.sent_at = now;
        s.rate = rate;
    }

    /// Marks the first unSACKed segment lost (three duplicate ACKs or a NewReno partial ACK,
    /// for peers that send no SACK). Returns whether one was newly marked.
    pub fn mark_first_lost(&mut self) -> bool {
        if let Some(s) = self.segments.iter_mut().find(|s| !s.is(SACKED)) {
            if !s.is(LOST) {
                s.flags |= LOST;
                self.lost_bytes += s.len();
                self.lost_total += s.len() as u64;
                return true;
            }
        }
        false
    }

    /// Retransmission timeout: every segment not SACKed is lost.
    pub fn on_rto(&mut self) {
        for s in self.segments.iter_mut() {
            if !s.is(SACKED) && !s.is(LOST) {
                s.flags |= LOST;
                self.lost_bytes += s.len();
                self.lost_total += s.len() as u64;
            }
        }
    }

    fn on_delivered(&mut self, s: Segment, now: Instant) {
        let rtt = now - s.sent_at;
        if s.is(RETRANSMITTED) && self.min_rtt.is_some_and(|m| rtt < m) {
            // Acknowledged sooner than any round trip: the original arrived, late. The path
            // reorders, and that retransmission was spurious (RFC 8985 §6.2 step 2).
            self.reordering_seen = true;
            return;
        }
        let newer = match (self.rack_xmit, self.rack_end) {
            (Some(t), Some(e)) => s.sent_at > t || (s.sent_at == t && s.end > e),
            _ => true,
        };
        if newer {
            self.rack_xmit = Some(s.sent_at);
            self.rack_end = Some(s.end);
            self.rack_rtt = rtt;
        }
    }

    /// Counts a segment as delivered and keeps the newest-sent one delivered by this ACK.
    fn rate_delivered(&mut self, s: Segment, now: Instant, newest: &mut Option<Segment>) {
        self.delivered += s.len() as u64;
        self.delivered_time = Some(now);
        let newer = newest.is_none_or(|n| {
            s.rate.delivered > n.rate.delivered
                || (s.rate.delivered == n.rate.delivered && s.sent_at > n.sent_at)
        });
        if newer {
            *newest = Some(s);
            self.first_sent_time = Some(s.sent_at);
        }
    }

    /// The rate sample of an ACK whose newest delivered segment is `p`.
    fn rate_sample(&mut self, p: Segment, delivered_before: u64, now: Instant) -> RateSample {
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let send_elapsed = p.sent_at - p.rate.first_sent_time;
        let ack_elapsed = now - p.rate.delivered_time;
        // The longer of the two: ACK compression shortens the ACK interval, and a burst
        // sent at once shortens the send interval.
        let interval = send_elapsed.max(ack_elapsed);
        let delivered = self.delivered - p.rate.delivered;
        // Shorter than a round trip, the interval holds too few ACKs to trust (the draft
        // discards such samples).
        let trusted = self.min_rtt.is_some_and(|m| interval >= m) && interval.total_micros() > 0;
        RateSample {
            delivered_total: self.delivered,
            prior_delivered: p.rate.delivered,
            newly_delivered: (self.delivered - delivered_before) as usize,
            bandwidth: trusted
                .then(|| delivered.saturating_mul(1_000_000) / interval.total_micros()),
            app_limited: p.rate.app_limited,
            lost_total: self.lost_total,
        }
    }

    /// An RTT measured by timestamps (millisecond resolution), used only while no segment
    /// has given a finer sample: it enables the tail loss probe and RACK's timers.
    pub fn seed_rtt(&mut self, rtt: Duration) {
        if self.srtt_us.is_none() {
            self.sample_rtt(rtt);
        }
    }

    fn sample_rtt(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        let us = rtt.total_micros().max(1);
        self.srtt_us = Some(match self.srtt_us {
            Some(s) => (s * 7 + us) / 8,
            None => us,
        });
    }

    /// Processes a cumulative ACK and its SACK blocks.
    pub fn on_ack(
        &mut self,
        ack: TcpSeqNumber,
        sack: &[Option<(u32, u32)>; 3],
        snd_nxt: TcpSeqNumber,
        now: Instant,
    ) -> AckOutcome {
        let mut out = AckOutcome::default();
        let mut newest_clean: Option<Instant> = None;
        let mut newest: Option<Segment> = None;
        let delivered_before = self.delivered;
        // Cumulatively acknowledged segments.
        while let Some(front) = self.segments.front().copied() {
            if front.end > ack {
                if front.start < ack {
                    // Partly acknowledged (the peer took part of a segment): trim it.
                    let cut = ack - front.start;
                    let s = &mut self.segments[0];
                    if s.is(SACKED) {
                        self.sacked_bytes -= cut;
                    }
                    if s.is(LOST) {
                        self.lost_bytes -= cut;
                    }
                    s.start = ack;
                }
                break;
            }
            self.segments.pop_front();
            if front.is(SACKED) {
                self.sacked_bytes -= front.len();
                continue;
            }
            self.rate_delivered(front, now, &mut newest);
            if front.is(LOST) {
                self.lost_bytes -= front.len();
            }
            if !front.is(RETRANSMITTED) {
                newest_clean = Some(newest_clean.map_or(front.sent_at, |t| t.max(front.sent_at)));
                if self.high_sacked.is_some_and(|h| front.end < h) {
                    self.reordering_seen = true;
                }
            }
            self.on_delivered(front, now);
        }
        // Selective acknowledgements.
        for &(left, right) in sack.iter().flatten() {
            let (left, right) = (TcpSeqNumber(left as i32), TcpSeqNumber(right as i32));
            if right <= left || right > snd_nxt {
                continue;
            }
            if left < ack {
                // A D-SACK (RFC 2883): a segment arrived twice, so a retransmission was
                // spurious; the path reorders (RFC 8985 §6.2 step 4).
                self.reordering_seen = true;
                continue;
            }
            if self.high_sacked.is_none_or(|h| right > h) {
                self.high_sacked = Some(right);
            }
            let mut i = self.segments.partition_point(|s| s.end <= left);
            while i < self.segments.len() && self.segments[i].end <= right {
                let s = self.segments[i];
                if s.start >= left && !s.is(SACKED) {
                    self.segments[i].flags |= SACKED;
                    self.sacked_bytes += s.len();
                    out.newly_sacked += s.len();
                    if s.is(LOST) {
                        self.segments[i].flags &= !LOST;
                        self.lost_bytes -= s.len();
                    }
                    if !s.is(RETRANSMITTED) {
                        newest_clean = Some(newest_clean.map_or(s.sent_at, |t| t.max(s.sent_at)));
                    }
                    self.rate_delivered(s, now, &mut newest);
                    self.on_delivered(s, now);
                }
                i += 1;
            }
        }
        if let Some(t) = newest_clean {
            let rtt = now - t;
            self.sample_rtt(rtt);
            out.rtt_sample = Some(rtt);
        }
        if let Some(p) = newest {
            out.rate = Some(self.rate_sample(p, delivered_before, now));
        }
        if self.segments.is_empty() && self.segments.capacity() > 64 {
            // An idle connection should not keep a large ring.
            self.segments = VecDeque::new();
        }
        out
    }

    /// RACK (RFC 8985 §6.2): marks lost every segment sent before the most recently
    /// delivered one by more than the reordering window. Returns the bytes newly marked and
    /// when to check again for segments not yet old enough.
    pub fn detect_losses(&mut self, now: Instant, in_recovery: bool) -> (usize, Option<Instant>) {
        let (Some(rack_xmit), Some(rack_end)) = (self.rack_xmit, self.rack_end) else {
            return (0, None);
        };
        let min_rtt = self.min_rtt.unwrap_or(self.rack_rtt);
        // RFC 8985 §6.2 step 4: no reordering seen, and already in recovery or with
        // DupThresh segments SACKed: no extra wait.
        // Counting walks the segments: only when something is SACKed (not per ACK of a
        // loss-free flow).
        let sacked_segments = if self.sacked_bytes == 0 {
            0
        } else {
            self.segments
                .iter()
                .filter(|s| s.is(SACKED))
                .take(3)
                .count()
        };
        let reo_wnd = if !self.reordering_seen && (in_recovery || sacked_segments >= 3) {
            Duration::ZERO
        } else {
            let srtt = self.srtt().unwrap_or(self.rack_rtt);
            (min_rtt / 4).min(srtt)
        };
        let mut newly = 0;
        let mut timer: Option<Instant> = None;
        for s in self.segments.iter_mut() {
            if !s.is(RETRANSMITTED) && s.start >= rack_end {
                // Sent after the newest delivered segment: nothing more to judge.
                break;
            }
            if s.is(SACKED) || s.is(LOST) {
                continue;
            }
            let sent_before =
                s.sent_at < rack_xmit || (s.sent_at == rack_xmit && s.end <= rack_end);
            if !sent_before {
                continue;
            }
            let deadline = s.sent_at + self.rack_rtt + reo_wnd;
            if deadline <= now {
                s.flags |= LOST;
                self.lost_bytes += s.len();
                newly += s.len();
                self.lost_total += s.len() as u64;
            } else {
                timer = Some(timer.map_or(deadline, |t| t.min(deadline)));
            }
        }
        (newly, timer)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn seq(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }

    fn board(n: i32, mss: i32, now: Instant) -> Scoreboard {
        let mut b = Scoreboard::default();
        for i in 0..n {
            b.on_send(
                seq(i * mss),
                seq((i + 1) * mss),
                false,
                now + Duration::from_micros(i as u64),
            );
        }
        b
    }

    #[test]
    fn sack_above_a_hole_marks_it_lost_and_pipe_excludes_both() {
        let t0 = Instant::from_millis(0);
        let mut b = board(10, 100, t0);
        let now = t0 + Duration::from_millis(40);
        // Segment 0 lost, 1..4 SACKed.
        let sack = [Some((100, 400)), None, None];
        let out = b.on_ack(seq(0), &sack, seq(1000), now);
        assert_eq!(out.newly_sacked, 300);
        let (lost, _) = b.detect_losses(now, false);
        assert_eq!(lost, 100);
        assert_eq!(
            b.next_lost(),
            Some(Retransmission {
                start: seq(0),
                len: 100,
                fin: false
            })
        );
        b.on_retransmit(seq(0), 100, now);
        assert_eq!(b.lost_bytes(), 0);
        assert_eq!(b.sacked_bytes(), 300);
        // The retransmission arrives: cumulative ACK jumps over the SACKed run.
        b.on_ack(
            seq(400),
            &[None; 3],
            seq(1000),
            now + Duration::from_millis(40),
        );
        assert_eq!(b.sacked_bytes(), 0);
        assert_eq!(b.next_lost(), None);
    }

    #[test]
    fn rto_marks_every_unsacked_segment_lost() {
        let t0 = Instant::from_millis(0);
        let mut b = board(4, 100, t0);
        b.on_ack(
            seq(0),
            &[Some((200, 300)), None, None],
            seq(400),
            t0 + Duration::from_millis(1),
        );
        b.on_rto();
        assert_eq!(b.lost_bytes(), 300);
        assert_eq!(b.next_lost().map(|r| r.start), Some(seq(0)));
    }

    #[test]
    fn lost_retransmission_is_detected_again() {
        let t0 = Instant::from_millis(0);
        let mut b = board(10, 100, t0);
        let t1 = t0 + Duration::from_millis(40);
        b.on_ack(seq(0), &[Some((100, 300)), None, None], seq(1000), t1);
        b.detect_losses(t1, false);
        b.on_retransmit(seq(0), 100, t1);
        // The retransmission is lost too; segments sent after it get SACKed later.
        b.on_send(seq(1000), seq(1100), false, t1 + Duration::from_millis(1));
        let t2 = t1 + Duration::from_millis(45);
        b.on_ack(
            seq(0),
            &[Some((1000, 1100)), Some((100, 1000)), None],
            seq(1100),
            t2,
        );
        let (lost, _) = b.detect_losses(t2, true);
        assert_eq!(lost, 100);
        assert_eq!(b.next_lost().map(|r| r.start), Some(seq(0)));
    }

    #[test]
    fn reordering_within_the_window_is_not_loss() {
        let t0 = Instant::from_millis(0);
        let mut b = board(4, 100, t0);
        // Mark reordering as seen: a later segment SACKed, then the earlier arrives.
        b.on_ack(
            seq(0),
            &[Some((100, 200)), None, None],
            seq(400),
            t0 + Duration::from_millis(40),
        );
        b.on_ack(
            seq(200),
            &[None; 3],
            seq(400),
            t0 + Duration::from_millis(40),
        );
        // Now segment 2 is missing while 3 is SACKed: within min_rtt/4 it is not lost yet.
        let t1 = t0 + Duration::from_millis(40);
        let (lost, timer) = b.detect_losses(t1, false);
        assert_eq!(lost, 0);
        assert!(timer.is_none() || timer.unwrap() > t1);
    }
}
