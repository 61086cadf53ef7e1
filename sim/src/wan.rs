//! The standard WAN cases (issue 11's paths), shared by the tests and the `wan_table` example
//! so both always measure the same thing.

use crate::filters::{any_of, drop_burst, drop_once, drop_syns, drop_times};
use crate::link::{DropFilter, LinkConfig};
use crate::scenario::Scenario;
use crate::sim::{A, B};
use crate::transfer::FlowSpec;
use smoltcp::socket::tcp;
use std::time::Duration;

/// IPv4 MSS over the 1420-byte tunnel MTU.
pub const MSS: u64 = 1380;
/// Rate of the "fast" links: any real path has one, and without it a whole window arrives
/// at one instant and is acknowledged by a single ACK, which no real receiver does.
pub const FAST_LINK: u64 = 1_000_000_000;

/// One named path with its flows.
#[derive(Debug, Clone)]
pub struct WanCase {
    /// Short name (test and table key).
    pub name: &'static str,
    /// The path in words.
    pub what: &'static str,
    /// Round-trip propagation delay.
    pub rtt: Duration,
    /// Link A → B.
    pub a_to_b: LinkConfig,
    /// Link B → A.
    pub b_to_a: LinkConfig,
    /// The flows.
    pub flows: Vec<FlowSpec>,
    /// Virtual time limit.
    pub limit: Duration,
    /// Hand-placed losses on link A → B and B → A.
    pub filters: [Option<fn() -> DropFilter>; 2],
}

impl WanCase {
    /// The case as a runnable scenario with both hosts using `socket`.
    pub fn scenario(&self, socket: impl Fn() -> tcp::Socket<'static> + 'static) -> Scenario {
        let filters = self.filters;
        self.flows
            .iter()
            .fold(
                Scenario::new(self.a_to_b.clone(), self.b_to_a.clone(), socket),
                |s, f| s.flow(f.clone()),
            )
            .with_sim(move |sim| {
                for (link, filter) in [A, B].into_iter().zip(filters) {
                    if let Some(make) = filter {
                        sim.links[link].set_filter(make());
                    }
                }
            })
    }

    /// The bottleneck rate of the data direction, in Mbit/s.
    pub fn path_mbit(&self) -> f64 {
        self.a_to_b.rate_bps.unwrap_or(u64::MAX) as f64 / 1e6
    }

    /// What a fixed receive window allows per flow: window / RTT, in Mbit/s.
    pub fn window_mbit(&self, window: usize) -> f64 {
        window as f64 * 8.0 / self.rtt.as_secs_f64() / 1e6
    }

    /// The Mathis et al. bound for Reno with this loss, per flow: MSS / RTT × 1.22 / √p.
    pub fn mathis_mbit(&self) -> Option<f64> {
        // Loss on the data path; lost ACKs barely matter with cumulative ACKs.
        let p = self.a_to_b.loss;
        (p > 0.0).then(|| MSS as f64 * 8.0 / self.rtt.as_secs_f64() * 1.22 / p.sqrt() / 1e6)
    }
}

fn link(rtt_ms: u64) -> LinkConfig {
    let bdp = (FAST_LINK / 8 * rtt_ms / 1000) as usize;
    LinkConfig::new(Duration::from_micros(rtt_ms * 500)).rate(FAST_LINK, bdp)
}

fn case(name: &'static str, what: &'static str, rtt_ms: u64, l: LinkConfig) -> WanCase {
    WanCase {
        name,
        what,
        rtt: Duration::from_millis(rtt_ms),
        a_to_b: l.clone().seed(1),
        b_to_a: l.seed(2),
        flows: Vec::new(),
        limit: Duration::from_secs(300),
        filters: [None, None],
    }
}

impl WanCase {
    fn flow(mut self, f: FlowSpec) -> Self {
        self.flows.push(f);
        self
    }

    fn drop_a_to_b(mut self, f: fn() -> DropFilter) -> Self {
        self.filters[A] = Some(f);
        self
    }

    fn drop_b_to_a(mut self, f: fn() -> DropFilter) -> Self {
        self.filters[B] = Some(f);
        self
    }

    fn flow_n(mut self, n: usize, f: FlowSpec) -> Self {
        self.flows.extend(std::iter::repeat_n(f, n));
        self
    }
}

/// Every standard case, in table order.
pub fn cases() -> Vec<WanCase> {
    let mb = |n: u64| n << 20;
    vec![
        case("clean_40ms", "40 ms RTT, 1 Gbit/s, no loss", 40, link(40))
            .flow(FlowSpec::bulk(mb(32))),
        case(
            "wg_peer_40ms",
            "40 ms RTT, peer drains 300 Mbit/s into a 96 KiB buffer (wireguard-go-like)",
            40,
            link(40).rate(300_000_000, 96 << 10),
        )
        .flow(FlowSpec::bulk(mb(16))),
        case(
            "wg_peer_lan",
            "1 ms RTT, peer drains 600 Mbit/s into a 96 KiB buffer (wireguard-go on a LAN)",
            1,
            link(1).rate(600_000_000, 96 << 10),
        )
        .flow(FlowSpec::bulk(mb(64))),
        case(
            "loss_20ms",
            "20 ms RTT, 0.3 % loss each way",
            20,
            link(20).loss(0.003),
        )
        .flow(FlowSpec::bulk(mb(16))),
        case(
            "loss_20ms_rev",
            "as loss_20ms, B sends",
            20,
            link(20).loss(0.003),
        )
        .flow(FlowSpec::bulk(mb(16)).reverse()),
        case(
            "bottleneck_100ms",
            "100 ms RTT, 100 Mbit/s, 1-BDP drop-tail queue (1.25 MB)",
            100,
            link(100).rate(100_000_000, 1_250_000),
        )
        .flow(FlowSpec::bulk(mb(64))),
        case(
            "bottleneck_100ms_both",
            "as bottleneck_100ms, one flow each way at once",
            100,
            link(100).rate(100_000_000, 1_250_000),
        )
        .flow(FlowSpec::bulk(mb(32)))
        .flow(FlowSpec::bulk(mb(32)).reverse()),
        case(
            "loss_100ms_minute",
            "100 ms RTT, 1 % loss each way, 60 s of sending",
            100,
            link(100).loss(0.01),
        )
        .flow(FlowSpec::timed(Duration::from_secs(60))),
        case(
            "reorder_40ms",
            "40 ms RTT, 1 % of packets held back 5 ms (overtaken by ~400)",
            40,
            link(40).reorder(0.01, Duration::from_millis(5)),
        )
        .flow(FlowSpec::bulk(mb(16))),
        case(
            "flows20_loss_40ms",
            "40 ms RTT, 1 % loss each way, 20 flows × 2 MiB at once",
            40,
            link(40).loss(0.01),
        )
        .flow_n(20, FlowSpec::bulk(mb(2))),
    ]
}

/// Hand-placed losses on a clean 40 ms path, one recovery mechanism each.
pub fn recovery_cases() -> Vec<WanCase> {
    const MIB: u64 = 1 << 20;
    vec![
        case(
            "single_loss",
            "40 ms RTT; the segment at 1 MiB is lost once",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(4 * MIB))
        .drop_a_to_b(|| drop_once(MIB..MIB + 1)),
        case(
            "burst_20",
            "40 ms RTT; 20 segments in a row from 1 MiB are lost once",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(4 * MIB))
        .drop_a_to_b(|| drop_burst(MIB, 20, MSS)),
        case(
            "tail_3",
            "40 ms RTT; the last 3 segments of 1 MiB are lost once",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(MIB))
        .drop_a_to_b(|| drop_once(MIB - 3 * MSS..MIB)),
        case(
            "lost_retx",
            "40 ms RTT; the segment at 1 MiB and its first retransmission are lost",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(4 * MIB))
        .drop_a_to_b(|| drop_times(MIB..MIB + 1, 2)),
        case(
            "lost_syns",
            "40 ms RTT; the first SYN and the first SYN-ACK are lost",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(MIB))
        .drop_a_to_b(|| drop_syns(1))
        .drop_b_to_a(|| drop_syns(1)),
        case(
            "lossy_start",
            "40 ms RTT; the first 48 segments are lost twice, then every 25th once",
            40,
            link(40),
        )
        .flow(FlowSpec::bulk(MIB))
        .drop_a_to_b(|| {
            let mut filters = vec![drop_times(0..48 * MSS, 2)];
            filters.extend((2..30).map(|i| drop_once(i * 25 * MSS..i * 25 * MSS + 1)));
            any_of(filters)
        }),
    ]
}

/// The standard or recovery case called `name`.
pub fn by_name(name: &str) -> Option<WanCase> {
    cases()
        .into_iter()
        .chain(recovery_cases())
        .find(|c| c.name == name)
}
