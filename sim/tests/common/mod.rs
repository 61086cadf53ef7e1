//! What every scenario test shares: nexd's socket configuration and a timed runner.
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use nexd_sim::{wan, Report, Scenario};
use std::time::{Duration, Instant};

/// A TCP socket exactly as nexd builds one for a flow (nexd's default congestion control).
pub fn nexd_socket() -> smoltcp::socket::tcp::Socket<'static> {
    socket_with(Default::default())
}

/// nexd's socket with the given congestion control.
pub fn socket_with(
    cc: nexd::engine::stack::TcpCongestion,
) -> smoltcp::socket::tcp::Socket<'static> {
    let b = nexd::engine::stack::TCP_BUFFER;
    nexd::engine::stack::tuned_tcp_socket(b, nexd::engine::DEFAULT_MAX_TCP_WINDOW, cc)
}

/// Runs the scenario, prints its report and the wall time it took, and checks that every
/// byte arrived intact and both sides closed within the virtual time `limit`.
pub fn run(name: &str, scenario: Scenario, limit: Duration) -> Report {
    let t = Instant::now();
    let report = scenario.run(limit);
    let wall = t.elapsed();
    println!("{name}: {report}");
    println!("{name}: wall time {:.3} s", wall.as_secs_f64());
    assert!(report.complete, "{name}: {report}");
    report
}

/// Runs the standard WAN case `name` with nexd's sockets.
pub fn run_case(name: &str) -> Report {
    run_case_with(name, Default::default())
}

/// Runs the standard WAN case `name` with nexd's sockets and this congestion control.
pub fn run_case_with(name: &str, cc: nexd::engine::stack::TcpCongestion) -> Report {
    let case = wan::by_name(name).unwrap_or_else(|| panic!("no WAN case {name}"));
    run(name, case.scenario(move || socket_with(cc)), case.limit)
}

/// Asserts a goodput floor and a completion bound (virtual seconds).
pub fn assert_at_least(r: &Report, min_mbit: f64, max_virtual_s: f64) {
    assert!(
        r.goodput_mbit >= min_mbit,
        "goodput {:.2} Mbit/s < floor {min_mbit}: {r}",
        r.goodput_mbit
    );
    assert!(
        r.virtual_elapsed.as_secs_f64() <= max_virtual_s,
        "took {:.2} s of virtual time > {max_virtual_s}: {r}",
        r.virtual_elapsed.as_secs_f64()
    );
}
