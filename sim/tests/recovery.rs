//! Losses placed by hand, one recovery mechanism each (fast retransmit, SACK recovery of a
//! burst, tail loss probe, lost retransmission, SYN loss). Bounds are what the vendored
//! smoltcp did when written (in comments), loosened; tighten them as fixes land.

mod common;
use common::*;
use nexd_sim::filters::{drop_burst, drop_once, drop_syns, drop_times};
use nexd_sim::wan::{FAST_LINK, MSS};
use nexd_sim::{FlowSpec, LinkConfig, Report, Scenario, A, B};
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// 40 ms RTT at 1 Gbit/s, no random loss; `filter` decides what A → B loses.
fn path_40ms(bytes: u64, filter: nexd_sim::link::DropFilter) -> Scenario {
    let link = LinkConfig::new(Duration::from_millis(20)).rate(FAST_LINK, 5_000_000);
    Scenario::symmetric(link, nexd_socket)
        .flow(FlowSpec::bulk(bytes))
        .with_sim(move |sim| sim.links[A].set_filter(filter))
}

fn gap_ms(r: &Report) -> u128 {
    r.max_gap.as_millis()
}

#[test]
fn single_loss_is_repaired_without_timeout() {
    // Measured: 1 retransmission, max gap 60 ms (fast retransmit after three duplicate ACKs).
    let r = run(
        "single_loss",
        path_40ms(4 * MIB, drop_once(MIB..MIB + 1)),
        Duration::from_secs(30),
    );
    assert_eq!(r.links[A].filtered, 1);
    assert!(r.retransmitted_segments >= 1, "{r}");
    assert!(gap_ms(&r) < 500, "{r}");
}

#[test]
fn burst_loss_of_20_segments() {
    // Measured: 8.9 Mbit/s, 41 retransmissions, max gap 1040 ms (a retransmission timeout).
    // SACK recovery (RFC 6675) repairs the burst in about one RTT, with no timeout.
    let r = run(
        "burst_20",
        path_40ms(4 * MIB, drop_burst(MIB, 20, MSS)),
        Duration::from_secs(60),
    );
    assert!(r.links[A].filtered >= 20, "{r}");
    assert!(gap_ms(&r) < 1500, "{r}");
}

#[test]
fn tail_loss_of_last_3_segments() {
    // Measured: max gap 1040 ms (a retransmission timeout). A tail loss probe (RFC 8985)
    // repairs it in about two RTTs.
    let tail = 3 * MSS;
    let r = run(
        "tail_3",
        path_40ms(MIB, drop_once(MIB - tail..MIB)),
        Duration::from_secs(60),
    );
    assert!(r.links[A].filtered >= 3, "{r}");
    assert!(gap_ms(&r) < 1500, "{r}");
}

#[test]
fn lost_retransmission() {
    // The segment at 1 MiB is lost and so is its first retransmission. Measured: max gap
    // 1040 ms (the timeout resends it); RACK detects the lost retransmission after one RTT.
    let r = run(
        "lost_retx",
        path_40ms(4 * MIB, drop_times(MIB..MIB + 1, 2)),
        Duration::from_secs(60),
    );
    assert_eq!(r.links[A].filtered, 2);
    assert!(gap_ms(&r) < 1500, "{r}");
}

#[test]
fn lost_syn_and_syn_ack() {
    // Measured: 3.66 s in all, a 2.06 s gap (two 1 s SYN timeouts; Linux also waits 1 s each).
    let link = LinkConfig::new(Duration::from_millis(20)).rate(FAST_LINK, 5_000_000);
    let s = Scenario::symmetric(link, nexd_socket)
        .flow(FlowSpec::bulk(MIB))
        .with_sim(|sim| {
            sim.links[A].set_filter(drop_syns(1));
            sim.links[B].set_filter(drop_syns(1));
        });
    let r = run("lost_syns", s, Duration::from_secs(60));
    assert_eq!(r.links[A].filtered + r.links[B].filtered, 2);
    assert!(r.virtual_elapsed < Duration::from_secs(5), "{r}");
}
