//! Runs many random impaired paths with short flows both ways and prints every run where a flow
//! did not finish or stood still too long: `cargo run -p nexd-sim --release --example
//! stall_hunt [RUNS] [FIRST_SEED] [MAX_LOSS_PERMILLE]`. A sender that ends up with nothing to send and no timer
//! armed shows up here as an incomplete flow.

use nexd::engine::stack::{tuned_tcp_socket, TcpCongestion, TCP_BUFFER};
use nexd::engine::DEFAULT_MAX_TCP_WINDOW;
use nexd_sim::random_path;
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
        let (link, scenario) = random_path::scenario(seed, max_loss_permille, move || {
            tuned_tcp_socket(TCP_BUFFER, DEFAULT_MAX_TCP_WINDOW, congestion)
        });
        let r = scenario.run(Duration::from_secs(600));
        let stuck = !r.complete || r.max_gap > Duration::from_secs(30);
        if stuck {
            bad += 1;
            println!("seed {seed}: {link:?}\n  {r}");
            if std::env::var_os("VERBOSE").is_some() {
                for f in &r.flows {
                    println!("  {f:?}");
                }
            }
        }
    }
    println!("{bad} of {runs} runs stalled or did not finish");
}
