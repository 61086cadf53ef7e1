//! Prints every standard WAN case run with nexd's socket configuration, as a markdown table:
//! `cargo run -p nexd-sim --release --example wan_table [case ...]`.

use nexd::engine::stack::{tuned_tcp_socket, TcpCongestion, TCP_BUFFER};
use nexd::engine::DEFAULT_MAX_TCP_WINDOW;
use nexd_sim::wan;
use std::time::Instant;

fn main() {
    // SIM_CC=cubic|bbr picks the controller (default: nexd's).
    let congestion: TcpCongestion = std::env::var("SIM_CC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let only: Vec<String> = std::env::args().skip(1).collect();
    let chosen: Vec<_> = wan::cases()
        .into_iter()
        .chain(wan::recovery_cases())
        .filter(|c| only.is_empty() || only.iter().any(|n| n == c.name))
        .collect();
    println!(
        "| case | goodput Mbit/s | virtual s | data segs | retransmitted | small segs | stalls | max gap ms | max in flight B | window cap | path | Mathis | wall s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in &chosen {
        let wall = Instant::now();
        let r = case
            .scenario(move || tuned_tcp_socket(TCP_BUFFER, DEFAULT_MAX_TCP_WINDOW, congestion))
            .run(case.limit);
        let wall = wall.elapsed().as_secs_f64();
        // The references are per flow; concurrent flows share the path.
        let flows = case.flows.len() as f64;
        let mathis = case
            .mathis_mbit()
            .map(|m| format!("{:.1}", m * flows))
            .unwrap_or_else(|| "-".into());
        let status = if r.complete {
            String::new()
        } else {
            format!(" INCOMPLETE: {}", r.failure().unwrap_or_default())
        };
        println!(
            "| {} | {:.2}{} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {} | {:.3} |",
            case.name,
            r.goodput_mbit,
            status,
            r.virtual_elapsed.as_secs_f64(),
            r.data_segments_sent,
            r.retransmitted_segments,
            r.segments.small_segments,
            r.rto_like_stalls,
            r.max_gap.as_millis(),
            r.max_in_flight,
            (case.window_mbit(TCP_BUFFER) * flows).min(case.path_mbit()),
            case.path_mbit(),
            mathis,
            wall,
        );
    }
    println!();
    println!(
        "window cap: min(flows × {TCP_BUFFER} B / RTT, path); Mathis: Reno's loss bound per flow × flows."
    );
    for case in &chosen {
        println!("- {}: {}", case.name, case.what);
    }
}
