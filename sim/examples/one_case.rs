//! Prints the full report of one standard case: `cargo run -p nexd-sim --example one_case NAME`.

use nexd::engine::stack::{tuned_tcp_socket, TcpCongestion, TCP_BUFFER};
use nexd::engine::DEFAULT_MAX_TCP_WINDOW;

fn main() {
    // SIM_CC=cubic|bbr picks the controller (default: nexd's).
    let congestion: TcpCongestion = std::env::var("SIM_CC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "clean_40ms".into());
    let Some(case) = nexd_sim::wan::by_name(&name) else {
        eprintln!(
            "no case {name}; cases: {:?}",
            nexd_sim::wan::cases()
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        );
        std::process::exit(64);
    };
    let r = case
        .scenario(move || tuned_tcp_socket(TCP_BUFFER, DEFAULT_MAX_TCP_WINDOW, congestion))
        .run(case.limit);
    println!("{r:#?}");
    println!("{r}");
}
