//! One direction of an impaired path as a pure model: given a datagram's arrival time and
//! size, decide whether it is lost, dropped at the bottleneck queue, or when it comes out.
//! No clock and no sockets, so it is tested with made-up instants.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// IPv4 + UDP header bytes a datagram also occupies on the bottleneck link.
pub const WIRE_OVERHEAD: usize = 28;

/// The impairments of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    /// Fixed one-way delay after the bottleneck.
    pub delay: Duration,
    /// Each datagram's delay varies uniformly within ±jitter (never below zero); order is
    /// kept (a datagram never overtakes an earlier one) unless it is picked for reordering.
    pub jitter: Duration,
    /// Random loss, percent of datagrams.
    pub loss: f64,
    /// Bottleneck rate in bits per second (IP + UDP headers included); None = unlimited.
    pub rate: Option<u64>,
    /// Drop-tail queue in front of the bottleneck, bytes.
    pub queue: usize,
    /// Percent of datagrams that get `reorder_delay` on top, so later ones overtake them.
    pub reorder: f64,
    /// The extra delay of a reordered datagram.
    pub reorder_delay: Duration,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate: None,
            queue: 1 << 20,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
        }
    }
}

/// What happens to one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Lost at random.
    Lost,
    /// Did not fit the bottleneck queue.
    QueueDrop,
    /// Leaves the relay at `at`; `reordered` when it was picked for extra delay.
    Deliver {
        /// Release time.
        at: Instant,
        /// Picked for reordering.
        reordered: bool,
    },
}

/// One direction's state: the bottleneck's busy-until time, the last in-order release.
pub struct Link {
    imp: Impairment,
    rng: StdRng,
    /// When the bottleneck has finished serialising everything admitted so far.
    busy_until: Option<Instant>,
    /// Release time of the last in-order datagram (jitter never reorders).
    last_release: Option<Instant>,
}

impl Link {
    /// A link with its own random stream (the same seed gives the same decisions).
    pub fn new(imp: Impairment, seed: u64) -> Link {
        Link {
            imp,
            rng: StdRng::seed_from_u64(seed),
            busy_until: None,
            last_release: None,
        }
    }

    /// Whether datagrams can go straight through (nothing to model).
    pub fn is_transparent(&self) -> bool {
        let i = &self.imp;
        i.delay.is_zero()
            && i.jitter.is_zero()
            && i.loss <= 0.0
            && i.rate.is_none()
            && i.reorder <= 0.0
    }

    /// Bytes waiting for the bottleneck at `now`.
    pub fn backlog(&self, now: Instant) -> usize {
        match (self.imp.rate, self.busy_until) {
            (Some(rate), Some(busy)) if busy > now => {
                ((busy - now).as_secs_f64() * rate as f64 / 8.0) as usize
            }
            _ => 0,
        }
    }

    /// Decides the fate of a datagram of `len` payload bytes arriving at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Verdict {
        // Always draw the same number of random values per datagram, so a change in one
        // setting does not shift the loss pattern of another.
        let lose = self.rng.random::<f64>() * 100.0 < self.imp.loss;
        let reorder = self.rng.random::<f64>() * 100.0 < self.imp.reorder;
        let jitter = self.rng.random::<f64>() * 2.0 - 1.0;
        if lose {
            return Verdict::Lost;
        }
        let mut out = now;
        if let Some(rate) = self.imp.rate {
            let backlog = self.backlog(now);
            // An idle link always takes a datagram, even one larger than the queue.
            if backlog > 0 && backlog + len + WIRE_OVERHEAD > self.imp.queue {
                return Verdict::QueueDrop;
            }
            let start = self.busy_until.map_or(now, |b| b.max(now));
            let wire = Duration::from_secs_f64((len + WIRE_OVERHEAD) as f64 * 8.0 / rate as f64);
            out = start + wire;
            self.busy_until = Some(out);
        }
        let j = self.imp.jitter.as_secs_f64() * jitter;
        let delay = Duration::from_secs_f64((self.imp.delay.as_secs_f64() + j).max(0.0));
        let mut at = out + delay;
        if reorder {
            return Verdict::Deliver {
                at: at + self.imp.reorder_delay,
                reordered: true,
            };
        }
        if let Some(last) = self.last_release {
            at = at.max(last);
        }
        self.last_release = Some(at);
        Verdict::Deliver {
            at,
            reordered: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn at(v: Verdict) -> Instant {
        match v {
            Verdict::Deliver { at, .. } => at,
            other => panic!("not delivered: {other:?}"),
        }
    }

    #[test]
    fn fixed_delay_only() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Impairment {
                delay: ms(20),
                ..Default::default()
            },
            1,
        );
        assert!(!l.is_transparent());
        for i in 0..100 {
            let now = t0 + ms(i);
            assert_eq!(at(l.admit(now, 1400)), now + ms(20));
        }
    }

    #[test]
    fn loss_is_near_the_percentage_and_reproducible() {
        let t0 = Instant::now();
        let imp = Impairment {
            loss: 1.0,
            ..Default::default()
        };
        let run = |seed| {
            let mut l = Link::new(imp.clone(), seed);
            (0..100_000)
                .map(|_| l.admit(t0, 100))
                .filter(|v| *v == Verdict::Lost)
                .count()
        };
        let lost = run(7);
        // 1 % of 100,000: binomial sd ~31; the seed makes it exact run to run.
        assert!((800..1200).contains(&lost), "lost {lost}");
        assert_eq!(run(7), lost);
        assert_ne!(run(8), lost);
    }

    #[test]
    fn rate_serialises_and_the_queue_drops_tail() {
        let t0 = Instant::now();
        // 8 Mbit/s: 1000 wire bytes take 1 ms. Queue of 10 such datagrams.
        let mut l = Link::new(
            Impairment {
                rate: Some(8_000_000),
                queue: 10_000,
                delay: ms(5),
                ..Default::default()
            },
            1,
        );
        let len = 1000 - WIRE_OVERHEAD;
        let verdicts: Vec<_> = (0..20).map(|_| l.admit(t0, len)).collect();
        // The queue's 10,000 bytes count the datagram on the wire too: ten in all.
        let delivered: Vec<_> = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver { .. }))
            .collect();
        assert_eq!(delivered.len(), 10, "{verdicts:?}");
        for (i, v) in delivered.iter().enumerate() {
            let want = t0 + ms(i as u64 + 1) + ms(5);
            let got = at(**v);
            let diff = got.max(want) - got.min(want);
            assert!(diff < Duration::from_micros(5), "datagram {i}: {diff:?}");
        }
        assert_eq!(verdicts[19], Verdict::QueueDrop);
        // Once the queue has drained, the link takes datagrams again.
        assert!(matches!(l.admit(t0 + ms(11), len), Verdict::Deliver { .. }));
    }

    #[test]
    fn jitter_keeps_order_and_stays_in_bounds() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Impairment {
                delay: ms(10),
                jitter: ms(5),
                ..Default::default()
            },
            3,
        );
        let mut last = t0;
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            let a = at(l.admit(now, 1400));
            assert!(a >= last, "datagram {i} overtook an earlier one");
            assert!(a >= now + ms(5) && a <= now + ms(15) + ms(5));
            spread = (spread.0.min(a - now), spread.1.max(a - now));
            last = a;
        }
        // Keeping order lifts the low end: a datagram waits for an earlier, slower one.
        assert!(spread.0 < ms(8) && spread.1 > ms(14), "{spread:?}");
    }

    #[test]
    fn reordered_datagrams_are_overtaken() {
        let t0 = Instant::now();
        let mut l = Link::new(
            Impairment {
                delay: ms(10),
                reorder: 10.0,
                reorder_delay: ms(3),
                ..Default::default()
            },
            4,
        );
        let mut reordered = 0;
        for i in 0..1000u64 {
            let now = t0 + ms(i);
            match l.admit(now, 1400) {
                Verdict::Deliver {
                    at,
                    reordered: true,
                } => {
                    reordered += 1;
                    assert_eq!(at, now + ms(13));
                    // The next in-order datagram leaves before it.
                    assert!(at > now + ms(1) + ms(10));
                }
                Verdict::Deliver { at, .. } => assert_eq!(at, now + ms(10)),
                other => panic!("{other:?}"),
            }
        }
        assert!((50..150).contains(&reordered), "{reordered}");
    }
}
