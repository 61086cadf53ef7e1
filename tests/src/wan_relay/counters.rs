//! Per-direction counters of the relay, and the one-line form they are printed and parsed in
//! (`received=N forwarded=N ...`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one direction, updated by its threads.
#[derive(Default, Debug)]
pub struct Counters {
    /// Datagrams received on the inbound socket.
    pub received: AtomicU64,
    /// Datagrams sent on.
    pub forwarded: AtomicU64,
    /// Lost at random.
    pub lost: AtomicU64,
    /// Dropped because the bottleneck queue was full.
    pub queue_dropped: AtomicU64,
    /// Picked for reordering.
    pub reordered: AtomicU64,
    /// Sends the kernel refused.
    pub send_errors: AtomicU64,
    /// Dropped because peer A was not known yet (B→A before anything came from A).
    pub no_peer: AtomicU64,
    /// Largest bottleneck backlog seen, bytes.
    pub peak_queue_bytes: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters::received`].
    pub received: u64,
    /// See [`Counters::forwarded`].
    pub forwarded: u64,
    /// See [`Counters::lost`].
    pub lost: u64,
    /// See [`Counters::queue_dropped`].
    pub queue_dropped: u64,
    /// See [`Counters::reordered`].
    pub reordered: u64,
    /// See [`Counters::send_errors`].
    pub send_errors: u64,
    /// See [`Counters::no_peer`].
    pub no_peer: u64,
    /// See [`Counters::peak_queue_bytes`].
    pub peak_queue_bytes: u64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            received: g(&self.received),
            forwarded: g(&self.forwarded),
            lost: g(&self.lost),
            queue_dropped: g(&self.queue_dropped),
            reordered: g(&self.reordered),
            send_errors: g(&self.send_errors),
            no_peer: g(&self.no_peer),
            peak_queue_bytes: g(&self.peak_queue_bytes),
        }
    }
}

impl Snapshot {
    fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("received", self.received),
            ("forwarded", self.forwarded),
            ("lost", self.lost),
            ("queue_dropped", self.queue_dropped),
            ("reordered", self.reordered),
            ("send_errors", self.send_errors),
            ("no_peer", self.no_peer),
            ("peak_queue_bytes", self.peak_queue_bytes),
        ]
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

impl FromStr for Snapshot {
    type Err = String;

    fn from_str(s: &str) -> Result<Snapshot, String> {
        let mut out = Snapshot::default();
        for part in s.split_whitespace() {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("bad counter {part:?}"))?;
            let v: u64 = v.parse().map_err(|_| format!("bad counter {part:?}"))?;
            let slot = match k {
                "received" => &mut out.received,
                "forwarded" => &mut out.forwarded,
                "lost" => &mut out.lost,
                "queue_dropped" => &mut out.queue_dropped,
                "reordered" => &mut out.reordered,
                "send_errors" => &mut out.send_errors,
                "no_peer" => &mut out.no_peer,
                "peak_queue_bytes" => &mut out.peak_queue_bytes,
                _ => return Err(format!("unknown counter {k:?}")),
            };
            *slot = v;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let s = Snapshot {
            received: 10,
            forwarded: 7,
            lost: 1,
            queue_dropped: 2,
            reordered: 3,
            send_errors: 0,
            no_peer: 4,
            peak_queue_bytes: 123_456,
        };
        assert_eq!(s.to_string().parse::<Snapshot>().unwrap(), s);
        assert!("received=x".parse::<Snapshot>().is_err());
        assert!("nonsense=1".parse::<Snapshot>().is_err());
    }
}
