//! Delay-based exit from slow start, after HyStart++ (RFC 9406): leave slow start when
//! the round trip time grows by a clear margin over the minimum, i.e. when a queue starts
//! to build, instead of doubling the window until the bottleneck queue overflows and a
//! large part of a window is lost. Linux CUBIC does the same (HyStart).
//!
//! RFC 9406 compares the minimum of the first samples of each round with the previous
//! round's. A paced sender sends each round's window in half a round trip and the queue
//! drains in the other half, so the first samples of every round see no queue. Instead we
//! wait for a run of consecutive samples above the minimum plus the threshold.

use crate::time::Duration;

/// Consecutive high samples that end slow start (RFC 9406 N_RTT_SAMPLE).
const MIN_SAMPLES: u32 = 8;
/// Bounds of the RTT increase that ends slow start (RFC 9406 MIN/MAX_RTT_THRESH).
const MIN_THRESH: Duration = Duration::from_millis(4);
const MAX_THRESH: Duration = Duration::from_millis(16);

/// Per-connection state.
#[derive(Debug, Default, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct HyStart {
    min_rtt: Option<Duration>,
    high_samples: u32,
}

impl HyStart {
    /// Takes an RTT sample carried by an ACK in slow start; returns whether slow start
    /// should end now.
    pub fn on_rtt_sample(&mut self, rtt: Duration) -> bool {
        let min = *self.min_rtt.get_or_insert(rtt);
        if rtt < min {
            self.min_rtt = Some(rtt);
        }
        let thresh = (min / 8).max(MIN_THRESH).min(MAX_THRESH);
        if rtt >= min + thresh {
            self.high_samples += 1;
        } else {
            self.high_samples = 0;
        }
        self.high_samples >= MIN_SAMPLES
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_growing_queue_ends_slow_start_and_jitter_does_not() {
        let mut h = HyStart::default();
        let ms = Duration::from_millis;
        // 100 ms with up to 3 ms of jitter: never.
        for i in 0..100 {
            assert!(!h.on_rtt_sample(ms(100 + i % 4)));
        }
        // The queue adds 13 ms (over 100 / 8): after 8 samples in a row.
        let exits: Vec<bool> = (0..10).map(|_| h.on_rtt_sample(ms(113))).collect();
        assert_eq!(exits.iter().position(|&e| e), Some(7));
    }
}
