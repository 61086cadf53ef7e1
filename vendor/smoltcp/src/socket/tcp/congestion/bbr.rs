//! BBR (version 1, as in Linux's `tcp_bbr.c`): a model-based congestion controller.
//!
//! Instead of reading loss as congestion, BBR measures the path: the bottleneck bandwidth
//! (the highest delivery rate over the last ten round trips) and the round-trip propagation
//! time (the lowest RTT over ten seconds). It paces at a gain times that bandwidth and keeps
//! about two bandwidth-delay products in flight. Random loss, which makes loss-based
//! controllers (Reno, CUBIC) collapse on long paths, barely moves it.
//!
//! Simplifications against Linux: no long-term (policer) bandwidth mode, no ACK aggregation
//! allowance beyond the cwnd gain, and a minimum RTT of [`MIN_MODEL_RTT`] for the window, so
//! that a host-local path keeps enough in flight for the event loop's batching.
//!
//! One addition from BBR v2 (Linux's `tcp_bbr2.c`, RFC draft-cardwell-iccrg-bbr): a round
//! that loses more than 2 % of its data shows the path holds less than the model put in
//! flight (a drop-tail queue shorter than a BDP, or a peer's UDP socket that overflows), so
//! in-flight data gets an upper bound (`inflight_hi`, 0.7 of the level that lost), which is
//! probed upwards again after a wait. v1 alone keeps two BDPs in flight whatever the loss,
//! and resends a large share of what it sends on such paths.

use crate::socket::tcp::scoreboard::RateSample;
use crate::time::{Duration, Instant};

use super::Controller;

/// 2/ln(2): the smallest gain that doubles the delivery rate every round in startup.
const HIGH_GAIN: f64 = 2.885;
/// Pacing gains of the eight phases of a bandwidth probing cycle.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Window of the bandwidth max filter, in round trips.
const BW_ROUNDS: u64 = 10;
/// How long a minimum RTT stays valid before PROBE_RTT measures it again.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long PROBE_RTT holds the window at its minimum.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// The window is at least this many segments.
const MIN_CWND_SEGMENTS: usize = 4;
/// Initial window in segments (RFC 6928).
const INITIAL_WINDOW_SEGMENTS: usize = 10;
/// The RTT the window model uses at the least: below it the path is a LAN or a host, where
/// ACKs come in batches and a window of two measured BDPs (a few segments) would starve it.
pub(crate) const MIN_MODEL_RTT: Duration = Duration::from_millis(2);
/// Startup ends once the bandwidth grew less than 25 % in this many rounds.
const FULL_BW_ROUNDS: u8 = 3;
/// A round losing more than this share of the bytes it delivered and lost sent more than
/// the path holds (BBR v2's loss threshold).
const LOSS_THRESH: f64 = 0.02;
/// ...and at least this many segments: one random loss in a small window is no full queue.
const LOSS_MIN_SEGMENTS: usize = 8;
/// The in-flight bound after such a round, as a share of the level that lost (v2's beta).
const LOSS_BETA: f64 = 0.7;
/// Rounds to wait after a cut before probing for more in flight, at most (v2 waits as long
/// as Reno would take to grow back, capped at 63 rounds).
const PROBE_WAIT_MAX_ROUNDS: u64 = 63;

const DEFAULT_MSS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Mode {
    /// Doubling the rate every round until the bandwidth stops growing.
    Startup,
    /// Draining the queue startup built.
    Drain,
    /// Cycling the pacing gain around the measured bandwidth.
    ProbeBw,
    /// Holding the window small to measure the propagation delay again.
    ProbeRtt,
}

/// Running maximum of the per-round bandwidth over the last [`BW_ROUNDS`] rounds.
#[derive(Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct MaxBandwidth {
    /// (round, max bandwidth seen in that round), oldest first.
    rounds: [(u64, u64); BW_ROUNDS as usize],
}

impl MaxBandwidth {
    fn update(&mut self, round: u64, bw: u64) {
        let slot = &mut self.rounds[(round % BW_ROUNDS) as usize];
        if slot.0 != round {
            *slot = (round, 0);
        }
        slot.1 = slot.1.max(bw);
    }

    fn get(&self, round: u64) -> u64 {
        self.rounds
            .iter()
            .filter(|(r, _)| round.saturating_sub(*r) < BW_ROUNDS)
            .map(|&(_, bw)| bw)
            .max()
            .unwrap_or(0)
    }
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    mode: Mode,
    mss: usize,
    cwnd: usize,
    rwnd: usize,
    bandwidth: MaxBandwidth,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,
    /// Round trips counted by delivered bytes: a round ends when a segment sent after the
    /// previous round's end is delivered.
    round: u64,
    next_round_delivered: u64,
    full_bw: u64,
    full_bw_rounds: u8,
    filled_pipe: bool,
    cycle_index: usize,
    cycle_stamp: Option<Instant>,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    /// The window before loss recovery or PROBE_RTT cut it, restored after.
    prior_cwnd: usize,
    /// Packet conservation for the first round of a loss episode (as Linux BBR).
    conservation_round: Option<u64>,
    /// Smoothed RTT, for the pacing rate before the first bandwidth sample.
    srtt: Option<Duration>,
    /// Upper bound on data in flight, learned from a round that lost too much (none before).
    inflight_hi: Option<usize>,
    /// `delivered_total` and `lost_total` when the current round began.
    round_delivered_start: u64,
    round_lost_start: u64,
    /// Highest data in flight seen in this round and in the previous one.
    round_max_in_flight: usize,
    prev_round_max_in_flight: usize,
    /// The round in which `inflight_hi` was last cut.
    cut_round: Option<u64>,
    /// Bytes by which `inflight_hi` grows at the next round while probing (doubles each round).
    probe_up_step: usize,
}

impl Bbr {
    pub fn new() -> Bbr {
        Bbr {
            mode: Mode::Startup,
            mss: DEFAULT_MSS,
            cwnd: INITIAL_WINDOW_SEGMENTS * DEFAULT_MSS,
            rwnd: 64 * DEFAULT_MSS,
            bandwidth: MaxBandwidth::default(),
            min_rtt: None,
            min_rtt_stamp: None,
            round: 0,
            next_round_delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            filled_pipe: false,
            cycle_index: 0,
            cycle_stamp: None,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: 0,
            conservation_round: None,
            srtt: None,
            inflight_hi: None,
            round_delivered_start: 0,
            round_lost_start: 0,
            round_max_in_flight: 0,
            prev_round_max_in_flight: 0,
            cut_round: None,
            probe_up_step: DEFAULT_MSS,
        }
    }

    fn btl_bw(&self) -> u64 {
        self.bandwidth.get(self.round)
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => HIGH_GAIN,
            Mode::Drain => 1.0 / HIGH_GAIN,
            Mode::ProbeBw => CYCLE[self.cycle_index],
            Mode::ProbeRtt => 1.0,
        }
    }

    fn cwnd_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup | Mode::Drain => HIGH_GAIN,
            _ => 2.0,
        }
    }

    /// `gain` bandwidth-delay products, in bytes, once both are measured.
    fn bdp(&self, gain: f64) -> Option<usize> {
        let bw = self.btl_bw();
        let rtt = self.min_rtt?.max(MIN_MODEL_RTT);
        (bw > 0).then(|| (bw as f64 * rtt.total_micros() as f64 / 1e6 * gain) as usize)
    }

    /// One bandwidth-delay product with the measured minimum RTT (0 before samples).
    fn measured_bdp(&self) -> usize {
        let rtt = self.min_rtt.unwrap_or(Duration::ZERO);
        (self.btl_bw() as f64 * rtt.total_micros() as f64 / 1e6) as usize
    }

    fn min_cwnd(&self) -> usize {
        MIN_CWND_SEGMENTS * self.mss
    }

    fn update_round(&mut self, rs: &RateSample) -> bool {
        if rs.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = rs.delivered_total;
            self.round += 1;
            true
        } else {
            false
        }
    }

    fn check_full_pipe(&mut self, round_start: bool, rs: &RateSample) {
        if self.filled_pipe || !round_start || rs.app_limited {
            return;
        }
        let bw = self.btl_bw();
        if bw >= self.full_bw.saturating_mul(5) / 4 {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        self.filled_pipe = self.full_bw_rounds >= FULL_BW_ROUNDS;
    }

    fn advance_cycle(&mut self, now: Instant, in_flight: usize) {
        let Some(stamp) = self.cycle_stamp else {
            self.cycle_stamp = Some(now);
            return;
        };
        let elapsed = now - stamp > self.min_rtt.unwrap_or(MIN_MODEL_RTT);
        let gain = CYCLE[self.cycle_index];
        let bdp = self.bdp(1.0).unwrap_or(self.cwnd);
        let next = if gain > 1.0 {
            // Probing: stay until a round passed and the extra data is in flight.
            elapsed && in_flight >= self.bdp(gain).unwrap_or(self.cwnd)
        } else if gain < 1.0 {
            // Draining the probe's queue: leave as soon as it is gone.
            elapsed || in_flight <= bdp
        } else {
            elapsed
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
            self.cycle_stamp = Some(now);
        }
    }

    fn update_min_rtt(
        &mut self,
        now: Instant,
        rtt: Option<Duration>,
        in_flight: usize,
        delivered: u64,
    ) {
        let expired = self.min_rtt_stamp.is_some_and(|t| now - t > MIN_RTT_WINDOW);
        if let Some(rtt) = rtt
            && (self.min_rtt.is_none_or(|m| rtt <= m) || expired)
        {
            self.min_rtt = Some(rtt);
            self.min_rtt_stamp = Some(now);
        }
        if expired && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
            self.probe_rtt_done = None;
        }
        if self.mode == Mode::ProbeRtt {
            match self.probe_rtt_done {
                None if in_flight <= self.min_cwnd() => {
                    self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                    self.probe_rtt_round_done = false;
                    // Hold the small window for a whole round as well.
                    self.next_round_delivered = delivered;
                }
                Some(done) if self.probe_rtt_round_done && now >= done => {
                    self.min_rtt_stamp = Some(now);
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    self.prior_cwnd = 0;
                    self.mode = if self.filled_pipe {
                        self.cycle_stamp = Some(now);
                        Mode::ProbeBw
                    } else {
                        Mode::Startup
                    };
                }
                _ => {}
            }
        }
    }

    /// Per-round loss accounting: at a round's start, probes the in-flight bound upwards if
    /// it held the last round back without loss; within a round, cuts it once the round has
    /// lost too much.
    fn update_loss_bound(&mut self, round_start: bool, rs: &RateSample, in_flight: usize) {
        if round_start {
            self.round_delivered_start = rs.delivered_total;
            self.round_lost_start = rs.lost_total;
            self.prev_round_max_in_flight = self.round_max_in_flight;
            self.round_max_in_flight = 0;
            self.probe_loss_bound();
        }
        self.round_max_in_flight = self.round_max_in_flight.max(in_flight);
        // The bound follows the bandwidth up: it only ever removes what v1 would put in flight
        // beyond two BDPs of the real path (see `loss_floor`).
        let floor = self.loss_floor();
        if let Some(hi) = self.inflight_hi {
            self.inflight_hi = Some(hi.max(floor));
        }
        let lost = rs.lost_total.saturating_sub(self.round_lost_start);
        let delivered = rs
            .delivered_total
            .saturating_sub(self.round_delivered_start);
        let too_high = lost >= (LOSS_MIN_SEGMENTS * self.mss) as u64
            && lost as f64 > LOSS_THRESH * (lost + delivered) as f64;
        if !too_high || self.cut_round == Some(self.round) {
            return;
        }
        // The loss comes from data sent about a round ago: bound by that level.
        let level = self.prev_round_max_in_flight.max(self.round_max_in_flight);
        let hi = ((level as f64 * LOSS_BETA) as usize).max(floor);
        self.inflight_hi = Some(self.inflight_hi.map_or(hi, |h| h.min(hi)));
        self.cut_round = Some(self.round);
        self.probe_up_step = self.mss;
    }

    /// The lowest in-flight bound: two BDPs measured with the real minimum RTT (not the
    /// model's floor), plus a few segments. What v1 keeps in flight on the real path stays,
    /// so on a WAN only startup's and probing's excess is ever bounded; a bound of one BDP,
    /// or one fixed until the next loss, measured 0.64-0.87x against wireguard-go over 20 and
    /// 40 ms, where v1 reached 1.4-1.5x.
    fn loss_floor(&self) -> usize {
        (2 * self.measured_bdp() + LOSS_MIN_SEGMENTS * self.mss).max(self.min_cwnd())
    }

    /// Grows the in-flight bound, once the wait after a cut is over and only while the bound
    /// is what limits the sender: by one segment, then twice as much each round.
    fn probe_loss_bound(&mut self) {
        let (Some(hi), Some(cut)) = (self.inflight_hi, self.cut_round) else {
            return;
        };
        let wait = ((hi / self.mss) as u64).min(PROBE_WAIT_MAX_ROUNDS);
        let limited = self.prev_round_max_in_flight + self.mss >= hi;
        if self.round.saturating_sub(cut) > wait && limited {
            self.inflight_hi = Some(hi.saturating_add(self.probe_up_step));
            self.probe_up_step = self.probe_up_step.saturating_mul(2).min(hi.max(self.mss));
        }
    }

    fn update_cwnd(&mut self, acked: usize, in_flight: usize) {
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
            return;
        }
        let conserving = match self.conservation_round {
            Some(r) if self.round > r => {
                // The loss episode's first round is over: back to the model's window.
                self.conservation_round = None;
                self.cwnd = self.cwnd.max(self.prior_cwnd);
                self.prior_cwnd = 0;
                false
            }
            Some(_) => true,
            None => false,
        };
        if conserving {
            // Send one segment per segment delivered while the loss is repaired.
            self.cwnd = self.cwnd.max(in_flight + acked);
        } else {
            let target = self
                .bdp(self.cwnd_gain())
                .map(|b| b + 3 * self.mss)
                .unwrap_or(self.cwnd);
            if self.filled_pipe {
                self.cwnd = (self.cwnd + acked).min(target);
            } else if self.cwnd < target || self.bdp(1.0).is_none() {
                self.cwnd += acked;
            }
        }
        // Above the bound, descend to it one ACK at a time, always leaving a segment of room:
        // cutting below what is in flight at once stops the ACK clock, and a tail dropped
        // whole then waits for the retransmission timeout (no ACK comes to mark it lost).
        let hi = match (self.inflight_hi, conserving) {
            (Some(hi), false) => hi.max(in_flight + self.mss),
            _ => usize::MAX,
        };
        self.cwnd = self
            .cwnd
            .min(hi)
            .max(self.min_cwnd())
            .min(self.rwnd.max(self.min_cwnd()));
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn set_remote_window(&mut self, remote_window: usize) {
        if self.rwnd < remote_window {
            self.rwnd = remote_window;
        }
    }

    fn on_rate_sample(
        &mut self,
        now: Instant,
        rs: &RateSample,
        rtt: Option<Duration>,
        srtt: Option<Duration>,
        in_flight: usize,
    ) {
        self.srtt = srtt.or(self.srtt);
        let round_start = self.update_round(rs);
        if round_start && self.mode == Mode::ProbeRtt && self.probe_rtt_done.is_some() {
            self.probe_rtt_round_done = true;
        }
        if let Some(bw) = rs.bandwidth {
            // An application-limited sample only counts when it shows more than known.
            if !rs.app_limited || bw >= self.btl_bw() {
                self.bandwidth.update(self.round, bw);
            }
        }
        self.check_full_pipe(round_start, rs);
        self.update_loss_bound(round_start, rs, in_flight);
        match self.mode {
            Mode::Startup if self.filled_pipe => self.mode = Mode::Drain,
            Mode::Drain if self.bdp(1.0).is_some_and(|b| in_flight <= b) => {
                self.mode = Mode::ProbeBw;
                // Start past the probing phases, as Linux picks a random phase but those.
                self.cycle_index = 2 + (self.round as usize % 6);
                self.cycle_stamp = Some(now);
            }
            Mode::ProbeBw => self.advance_cycle(now, in_flight),
            _ => {}
        }
        self.update_min_rtt(now, rtt, in_flight, rs.delivered_total);
        self.update_cwnd(rs.newly_delivered, in_flight);
    }

    fn pacing_rate(&self) -> Option<u64> {
        let bw = self.btl_bw();
        if bw > 0 {
            return Some((bw as f64 * self.pacing_gain()) as u64);
        }
        // No sample yet: the initial window over the smoothed RTT, at the startup gain.
        let srtt = self.srtt?.max(Duration::from_micros(1));
        Some((self.cwnd as f64 * HIGH_GAIN * 1e6 / srtt.total_micros() as f64) as u64)
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        // Everything in flight is presumed lost: restart from a few segments (not one: the
        // MSS may still grow after a lost SYN, and a window below one segment sends nothing),
        // and restore the model's window once data is delivered again (Linux's CA_Loss).
        self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        self.cwnd = self.min_cwnd();
        self.conservation_round = Some(self.round);
    }

    fn on_loss(&mut self, _now: Instant, in_flight: usize) {
        if self.conservation_round.is_none() {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
            self.cwnd = in_flight.max(self.min_cwnd());
            self.conservation_round = Some(self.round);
        }
    }

    fn set_mss(&mut self, mss: usize) {
        if self.cwnd == INITIAL_WINDOW_SEGMENTS * self.mss {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        }
        self.mss = mss;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn sample(delivered_total: u64, prior: u64, newly: usize, bw: u64) -> RateSample {
        RateSample {
            delivered_total,
            prior_delivered: prior,
            newly_delivered: newly,
            bandwidth: Some(bw),
            app_limited: false,
            lost_total: 0,
        }
    }

    /// Feeds one round of `bw` bytes/s at `rtt`, delivering a window.
    fn round(b: &mut Bbr, now: &mut Instant, delivered: &mut u64, bw: u64, rtt: Duration) {
        let bytes = (bw as f64 * rtt.total_micros() as f64 / 1e6) as usize;
        let in_flight = b.window().min(bytes);
        lossy_round(b, now, delivered, &mut 0, 0, bw, rtt, in_flight);
    }

    /// One round of `bw` bytes/s at `rtt` with `in_flight` bytes out, in two ACKs; the
    /// second marks `new_loss` more bytes lost (`lost` counts them all).
    #[allow(clippy::too_many_arguments)]
    fn lossy_round(
        b: &mut Bbr,
        now: &mut Instant,
        delivered: &mut u64,
        lost: &mut u64,
        new_loss: u64,
        bw: u64,
        rtt: Duration,
        in_flight: usize,
    ) {
        let bytes = (bw as f64 * rtt.total_micros() as f64 / 1e6) as usize;
        let prior = *delivered;
        *now += rtt / 2;
        let before = *lost;
        *lost += new_loss;
        for (half, lost) in [(bytes / 2, before), (bytes - bytes / 2, *lost)] {
            *delivered += half as u64;
            let mut rs = sample(*delivered, prior, half, bw);
            rs.lost_total = lost;
            b.on_rate_sample(*now, &rs, Some(rtt), Some(rtt), in_flight);
        }
        *now += rtt / 2;
    }

    #[test]
    fn a_lossy_round_bounds_in_flight_random_loss_does_not_and_probing_regrows_it() {
        let mut b = Bbr::new();
        b.set_mss(1400);
        b.set_remote_window(16 << 20);
        // A LAN: 1 ms RTT at 1 Gbit/s, two real BDPs 250 kB; the model's 2 ms floor asks 500.
        let rtt = Duration::from_millis(1);
        let bw = 125_000_000;
        let mut now = Instant::from_millis(0);
        let mut delivered = 0;
        for _ in 0..10 {
            round(&mut b, &mut now, &mut delivered, bw, rtt);
        }
        let model = b.window();
        assert!((500_000..=510_000).contains(&model), "{model}");
        let (mut lost, d, n) = (0, &mut delivered, &mut now);
        let l = &mut lost;
        // 7 segments lost in a round (a cluster of random loss): no bound.
        lossy_round(&mut b, n, d, l, 7 * 1400, bw, rtt, model);
        assert_eq!(b.inflight_hi, None);
        assert_eq!(b.window(), model);
        // 8 segments, 8 % of the round: bounded by 0.7 of the level that lost.
        lossy_round(&mut b, n, d, l, 8 * 1400, bw, rtt, model);
        let hi = b.inflight_hi.expect("bounded");
        assert!((350_000..=360_000).contains(&hi), "{hi}");
        // The window descends to it while the excess leaves the network, one segment of room
        // at a time.
        lossy_round(&mut b, n, d, l, 0, bw, rtt, 400_000);
        assert_eq!(b.window(), 401_400);
        lossy_round(&mut b, n, d, l, 0, bw, rtt, hi - 1400);
        assert_eq!(b.window(), hi);
        // Repeated cuts stop at two measured BDPs (plus 8 segments).
        for _ in 0..3 {
            lossy_round(&mut b, n, d, l, 20 * 1400, bw, rtt, hi);
        }
        let floor = b.inflight_hi.expect("bounded");
        assert_eq!(floor, 250_000 + 8 * 1400);
        // Without loss, and while the bound is what holds the sender back, it grows again
        // after the wait (63 rounds here), back to the model's window.
        for _ in 0..62 {
            let w = b.window();
            lossy_round(&mut b, n, d, l, 0, bw, rtt, w);
        }
        assert_eq!(b.inflight_hi, Some(floor));
        for _ in 0..12 {
            let w = b.window();
            lossy_round(&mut b, n, d, l, 0, bw, rtt, w);
        }
        assert_eq!(b.window(), model);
        // And it follows the bandwidth up at once: twice the rate, twice the floor.
        lossy_round(&mut b, n, d, l, 0, 2 * bw, rtt, model);
        assert!(
            b.inflight_hi >= Some(500_000 + 8 * 1400),
            "{:?}",
            b.inflight_hi
        );
    }

    #[test]
    fn startup_ends_when_bandwidth_stops_growing_and_window_follows_bdp() {
        let mut b = Bbr::new();
        b.set_mss(1400);
        b.set_remote_window(16 << 20);
        let rtt = Duration::from_millis(40);
        let mut now = Instant::from_millis(0);
        let mut delivered = 0;
        // 12.5 MB/s (100 Mbit/s): a BDP of 500 kB.
        for _ in 0..10 {
            round(&mut b, &mut now, &mut delivered, 12_500_000, rtt);
        }
        assert_ne!(b.mode, Mode::Startup);
        assert_eq!(b.btl_bw(), 12_500_000);
        let w = b.window();
        assert!((1_000_000..=1_010_000).contains(&w), "cwnd {w}");
        let rate = b.pacing_rate().unwrap();
        assert!((9_000_000..=16_000_000).contains(&rate), "rate {rate}");
    }

    #[test]
    fn random_loss_keeps_the_window() {
        let mut b = Bbr::new();
        b.set_mss(1400);
        b.set_remote_window(16 << 20);
        let rtt = Duration::from_millis(20);
        let mut now = Instant::from_millis(0);
        let mut delivered = 0;
        for _ in 0..10 {
            round(&mut b, &mut now, &mut delivered, 12_500_000, rtt);
        }
        let before = b.window();
        b.on_loss(now, before);
        for _ in 0..3 {
            round(&mut b, &mut now, &mut delivered, 12_500_000, rtt);
        }
        assert!(b.window() >= before * 9 / 10, "{} < {before}", b.window());
    }

    #[test]
    fn probe_rtt_after_ten_seconds_then_restores() {
        let mut b = Bbr::new();
        b.set_mss(1400);
        b.set_remote_window(16 << 20);
        let rtt = Duration::from_millis(50);
        let mut now = Instant::from_millis(0);
        let mut delivered = 0;
        // RTT samples above the minimum for over 10 s.
        round(&mut b, &mut now, &mut delivered, 5_000_000, rtt);
        let slow = Duration::from_millis(60);
        let mut saw_probe = false;
        for _ in 0..300 {
            round(&mut b, &mut now, &mut delivered, 5_000_000, slow);
            saw_probe |= b.mode == Mode::ProbeRtt;
        }
        assert!(saw_probe);
        assert_ne!(b.mode, Mode::ProbeRtt);
        assert!(b.window() > 100_000, "{}", b.window());
    }
}
