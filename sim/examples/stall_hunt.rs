//! Runs many random impaired paths with short flows both ways and prints every run where a flow
//! did not finish or stood still too long: `cargo run -p nexd-sim --release --example
//! stall_hunt [RUNS] [FIRST_SEED] [MAX_LOSS_PERMILLE]`. A sender that ends up with nothing to send and no timer
//! armed shows up here as an incomplete flow.

use nexd::engine::stack::{tuned_tcp_socket, TcpCongestion, TCP_BUFFER};
use nexd::engine::DEFAULT_MAX_TCP_WINDOW;
use nexd_sim::rng::Rng;
use nexd_sim::{FlowSpec, LinkConfig, Scenario};
use std::time::Duration;

fn main() {
    // SIM_CC=cubic|bbr picks the controller (default: nexd's).
    let congestion: TcpCongestion = std::env::var("SIM_CC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let mut args = std::env::args().skip(1);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let first: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let max_loss_permille: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let mut bad = 0;
    for seed in first..first + runs {
        let mut rng = Rng::new(seed);
        let delay = Duration::from_micros(50 + rng.up_to(40_000));
        let mut link = LinkConfig::new(delay)
            .loss(rng.up_to(max_loss_permille) as f64 / 1000.0)
            .jitter(Duration::from_micros(rng.up_to(2_000)));
        if rng.up_to(2) == 0 {
            link = link.reorder(
                rng.up_to(100) as f64 / 1000.0,
                Duration::from_micros(100 + rng.up_to(20_000)),
            );
        }
        if rng.up_to(2) == 0 {
            let rate = 1_000_000 + rng.up_to(200_000_000);
            link = link.rate(rate, 3_000 + rng.up_to(300_000) as usize);
        }
        let flows = 1 + rng.up_to(12) as usize;
        let mut scenario = Scenario::symmetric(link.clone(), move || {
            tuned_tcp_socket(TCP_BUFFER, DEFAULT_MAX_TCP_WINDOW, congestion)
        })
        .seed(seed);
        for i in 0..flows {
            let bytes = 1 + rng.up_to(300_000);
            let mut f = FlowSpec::bulk(bytes).start_at(Duration::from_millis(rng.up_to(200)));
            if i % 2 == 1 {
                f = f.reverse();
            }
            scenario = scenario.flow(f);
        }
        let r = scenario.run(Duration::from_secs(600));
        let stuck = !r.complete || r.max_gap > Duration::from_secs(30);
        if stuck {
            bad += 1;
            println!("seed {seed}: {link:?} flows {flows}\n  {r}");
            if std::env::var_os("VERBOSE").is_some() {
                for f in &r.flows {
                    println!("  {f:?}");
                }
            }
        }
    }
    println!("{bad} of {runs} runs stalled or did not finish");
}
