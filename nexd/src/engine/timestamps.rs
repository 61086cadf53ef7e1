//! The clock of RFC 7323 TCP timestamps on nexd's connections.
//!
//! A Linux peer holding a 4-tuple in TIME-WAIT accepts a new SYN on it at once when the SYN's
//! timestamp is newer than the last one it saw there (`tcp_timewait_state_process`), whatever
//! its sequence number. So every SYN carries a timestamp from a clock that never goes back:
//! milliseconds since the host booted (from `/proc/uptime`, then the monotonic clock), plus an
//! offset keyed by the boot ID so peers do not learn the uptime. Both stay the same across a
//! restart of nexd, so even a restarted nexd's SYNs are newer than its predecessor's.
//! smoltcp echoes the peer's last timestamp and turns the option off for a connection whose
//! peer did not offer it.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::time::Instant;

/// The current timestamp value (ms; wraps after 49 days, which RFC 7323 allows for).
pub fn tsval() -> u32 {
    static CLOCK: OnceLock<(Instant, u32)> = OnceLock::new();
    let (start, base) = *CLOCK.get_or_init(|| (Instant::now(), base()));
    base.wrapping_add(start.elapsed().as_millis() as u32)
}

/// The value at this process's start: boot-relative, or random if /proc cannot tell.
fn base() -> u32 {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let uptime_ms = read("/proc/uptime").and_then(|s| parse_uptime_ms(&s));
    let boot_id = read("/proc/sys/kernel/random/boot_id");
    match (uptime_ms, boot_id) {
        (Some(ms), Some(id)) => offset(id.trim()).wrapping_add(ms as u32),
        // A random start: monotonic within this process only.
        _ => std::hash::RandomState::new().hash_one(Instant::now()) as u32,
    }
}

/// Milliseconds from `/proc/uptime`'s first field ("12345.67 ...").
fn parse_uptime_ms(s: &str) -> Option<u64> {
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64)
}

/// A 32-bit offset from a per-boot secret (the kernel's random boot ID). `DefaultHasher::new`
/// is deterministic for a given Rust release, so only an upgrade moves it.
fn offset(secret: &str) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "nexd tcp timestamp offset".hash(&mut h);
    secret.hash(&mut h);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_in_milliseconds_and_never_goes_back() {
        let a = tsval();
        let t = Instant::now();
        // Wait on the clock itself (bounded), not a sleep.
        let mut b = tsval();
        while b.wrapping_sub(a) < 20 && t.elapsed().as_secs() < 5 {
            b = tsval();
        }
        let waited = t.elapsed().as_millis() as u32;
        let ticked = b.wrapping_sub(a);
        assert!(
            (20..=waited + 2).contains(&ticked),
            "{ticked} ms in {waited} ms"
        );
        for _ in 0..1000 {
            let c = tsval();
            assert!((c.wrapping_sub(b) as i32) >= 0);
            b = c;
        }
    }

    #[test]
    fn uptime_parsing() {
        assert_eq!(parse_uptime_ms("12345.67 54321.00\n"), Some(12_345_670));
        assert_eq!(parse_uptime_ms("0.01 0.00"), Some(10));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("-1 2"), None);
        assert_eq!(parse_uptime_ms("nan 2"), None);
    }

    #[test]
    fn the_offset_depends_on_the_boot() {
        assert_eq!(offset("a"), offset("a"));
        assert_ne!(offset("a"), offset("b"));
    }
}
