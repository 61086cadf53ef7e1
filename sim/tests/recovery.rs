//! Losses placed by hand (wan::recovery_cases), one recovery mechanism each: fast retransmit,
//! SACK recovery of a burst, tail loss probe, lost retransmission, SYN loss. Bounds are what
//! the patched smoltcp does (docs/patches/smoltcp-0.14-wan-sender.patch), with some slack; stock
//! smoltcp 0.14's figures in comments.

mod common;
use common::*;
use nexd::engine::stack::TcpCongestion;
use nexd_sim::{Report, A, B};
use std::time::Duration;

fn gap_ms(r: &Report) -> u128 {
    r.max_gap.as_millis()
}

#[test]
fn single_loss_is_repaired_without_timeout() {
    // 1 retransmission, max gap 60 ms (RACK; stock smoltcp: three duplicate ACKs).
    let r = run_case("single_loss");
    assert_eq!(r.links[A].filtered, 1);
    assert!(r.retransmitted_segments >= 1, "{r}");
    assert!(gap_ms(&r) < 500, "{r}");
}

#[test]
fn burst_loss_of_20_segments() {
    // Stock: 8.9 Mbit/s, 41 retransmissions, max gap 1040 ms (a retransmission timeout).
    // SACK recovery repairs the burst in about one RTT: 59.5 Mbit/s, 21 retransmissions
    // (exactly the lost segments), max gap 60 ms.
    let r = run_case("burst_20");
    assert!(r.links[A].filtered >= 20, "{r}");
    assert!(gap_ms(&r) < 150, "{r}");
    assert!(r.retransmitted_segments <= 25, "{r}");
}

#[test]
fn tail_loss_of_last_3_segments() {
    // Stock: max gap 1040 ms (a retransmission timeout). The tail loss probe (RFC 8985)
    // and RACK repair it: max gap 240 ms.
    let r = run_case("tail_3");
    assert!(r.links[A].filtered >= 3, "{r}");
    assert!(gap_ms(&r) < 400, "{r}");
}

#[test]
fn lost_retransmission() {
    // Stock: max gap 1040 ms (the timeout resends it). RACK detects the lost retransmission
    // after about one RTT: max gap 91 ms.
    let r = run_case("lost_retx");
    assert_eq!(r.links[A].filtered, 2);
    assert!(gap_ms(&r) < 200, "{r}");
}

#[test]
fn lost_syn_and_syn_ack() {
    // Measured: 3.66 s in all, a 2.06 s gap (two 1 s SYN timeouts; Linux also waits 1 s each).
    let r = run_case("lost_syns");
    assert_eq!(r.links[A].filtered + r.links[B].filtered, 2);
    assert!(r.virtual_elapsed < Duration::from_secs(5), "{r}");
}

#[test]
fn first_flight_lost_twice_then_steady_loss() {
    // The first 48 segments are lost twice (the retransmission timeout fires, and every
    // segment ACKed afterwards was retransmitted, so Karn's rule allows no RTT sample), then
    // every 25th segment once. Without RTT samples from timestamps (RFC 7323 §4.1) the RTO
    // kept doubling at every loss: gaps of 120 s, 25 KB in 300 s with CUBIC. With them:
    // CUBIC done in 15 s (max gap 660 ms), BBR in 2.1 s.
    for cc in [TcpCongestion::Cubic, TcpCongestion::Bbr] {
        let r = run_case_with("lossy_start", cc);
        assert!(r.complete, "{cc}: {r}");
        assert!(gap_ms(&r) < 1_000, "{cc}: {r}");
        assert!(r.virtual_elapsed < Duration::from_secs(30), "{cc}: {r}");
    }
}
