//! The standard cases with nexd's socket configuration but bigger buffers:
//! `cargo run -p nexd-sim --release --example big_buffers [MiB]` (default 8).

use nexd::engine::stack::tuned_tcp_socket;
use nexd_sim::wan;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let bytes = mib << 20;
    println!("| case | goodput Mbit/s ({mib} MiB buffers) | virtual s | retransmitted | stalls | max gap ms | max in flight B |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for case in wan::cases().into_iter().chain(wan::recovery_cases()) {
        let r = case
            .scenario(move || tuned_tcp_socket(bytes, bytes, Default::default()))
            .run(case.limit);
        let status = if r.complete {
            String::new()
        } else {
            format!(" INCOMPLETE: {}", r.failure().unwrap_or_default())
        };
        println!(
            "| {} | {:.2}{} | {:.2} | {} | {} | {} | {} |",
            case.name,
            r.goodput_mbit,
            status,
            r.virtual_elapsed.as_secs_f64(),
            r.retransmitted_segments,
            r.rto_like_stalls,
            r.max_gap.as_millis(),
            r.max_in_flight
        );
    }
}
