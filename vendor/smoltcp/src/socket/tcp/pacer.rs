//! Pacing: spreads a connection's data segments over the RTT instead of sending a whole
//! window at line rate.
//!
//! As Linux does (`sk_pacing_rate`), the rate is cwnd / SRTT, doubled in slow start and
//! 1.2x in congestion avoidance, so pacing never limits the window itself; it only removes
//! the bursts that overflow a bottleneck queue or a peer's UDP receive buffer. A token
//! bucket holds up to a couple of milliseconds of sending so that a host whose timers fire
//! with millisecond granularity still reaches the rate.

use crate::time::{Duration, Instant};

/// Largest burst, whatever the rate. Measured against wireguard-go at 40 ms: 1 ms / 64 KiB
/// bursts did no better than 2 ms ones (its socket still dropped datagrams, because its
/// single-datagram reads cannot keep up at all) and cost throughput.
const MAX_BURST: usize = 1024 * 1024;
/// Smallest burst, in segments.
const MIN_BURST_SEGMENTS: usize = 4;
/// Bucket depth in time at the current rate.
const BURST_TIME_US: u64 = 2_000;
/// Below this smoothed RTT the path is a LAN or a host: ACKs clock the sender finely and
/// pacing would only cost throughput, so none is applied.
pub(crate) const MIN_PACED_RTT: Duration = Duration::from_millis(2);

/// A token bucket in bytes.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Pacer {
    tokens: usize,
    last: Option<Instant>,
}

/// Pacing rate in bytes per second for a window over an RTT.
pub(crate) fn rate(cwnd: usize, srtt: Duration, slow_start: bool) -> u64 {
    let us = srtt.total_micros().max(1);
    let base = (cwnd as u64).saturating_mul(1_000_000) / us;
    if slow_start {
        base.saturating_mul(2)
    } else {
        base.saturating_mul(6) / 5
    }
}

fn capacity(rate: u64, mss: usize) -> usize {
    let by_time = (rate.saturating_mul(BURST_TIME_US) / 1_000_000) as usize;
    by_time.clamp(
        MIN_BURST_SEGMENTS * mss,
        MAX_BURST.max(MIN_BURST_SEGMENTS * mss),
    )
}

impl Pacer {
    /// Tokens in the bucket at `now`.
    fn tokens_at(&self, now: Instant, rate: u64, mss: usize) -> usize {
        let cap = capacity(rate, mss);
        match self.last {
            None => cap,
            Some(last) if now > last => {
                let us = (now - last).total_micros();
                let add = (rate.saturating_mul(us) / 1_000_000) as usize;
                self.tokens.saturating_add(add).min(cap)
            }
            _ => self.tokens.min(cap),
        }
    }

    /// When a segment of `len` bytes may leave: `now` if it may now.
    pub fn release_at(&self, now: Instant, len: usize, rate: u64, mss: usize) -> Instant {
        let tokens = self.tokens_at(now, rate, mss);
        let need = len.min(capacity(rate, mss));
        if tokens >= need {
            return now;
        }
        let missing = (need - tokens) as u64;
        let us = missing.saturating_mul(1_000_000).div_ceil(rate.max(1));
        now + Duration::from_micros(us)
    }

    /// Takes the tokens of a segment sent at `now`.
    pub fn on_send(&mut self, now: Instant, len: usize, rate: u64, mss: usize) {
        self.tokens = self.tokens_at(now, rate, mss).saturating_sub(len);
        self.last = Some(now);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn spreads_a_window_over_the_rtt() {
        // 1 MB window over 40 ms in congestion avoidance: 30 MB/s, 60 KB bursts.
        let r = rate(1_000_000, Duration::from_millis(40), false);
        assert_eq!(r, 30_000_000);
        let mut p = Pacer::default();
        let t0 = Instant::from_millis(0);
        let mut now = t0;
        let mut sent = 0;
        for _ in 0..10_000 {
            let at = p.release_at(now, 1400, r, 1400);
            if at > now {
                now = at;
                continue;
            }
            p.on_send(now, 1400, r, 1400);
            sent += 1400;
            if sent >= 1_000_000 {
                break;
            }
        }
        let elapsed = (now - t0).total_millis();
        // Minus the initial burst, a window takes about RTT / 1.2.
        assert!((30..=36).contains(&elapsed), "took {elapsed} ms");
    }

    #[test]
    fn bursts_stay_within_what_a_peer_buffer_takes() {
        // 8 MB over 20 ms: 480 MB/s, yet at most 2 ms of it (960 kB) leaves at one instant.
        let r = rate(8_000_000, Duration::from_millis(20), false);
        let mut p = Pacer::default();
        let now = Instant::from_millis(5);
        let mut burst = 0;
        while p.release_at(now, 1400, r, 1400) == now && burst < 1_000_000 {
            p.on_send(now, 1400, r, 1400);
            burst += 1400;
        }
        assert!((950_000..=961_400).contains(&burst), "{burst}");
    }
}
