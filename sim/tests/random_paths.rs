//! Random impaired paths (`random_path`): every flow finishes, and none stands still for
//! long (100 paths per congestion controller, about 2 s).

mod common;
use common::*;
use nexd::engine::stack::TcpCongestion;
use nexd_sim::random_path;
use std::time::Duration;

#[test]
fn no_flow_stalls_on_random_lossy_paths() {
    for cc in [TcpCongestion::Bbr, TcpCongestion::Cubic] {
        for seed in 1..=100 {
            let (link, scenario) = random_path::scenario(seed, 50, move || socket_with(cc));
            let r = scenario.run(Duration::from_secs(600));
            assert!(r.complete, "{cc} seed {seed} {link:?}: {r}");
            // A handshake that loses SYN-ACK after SYN-ACK waits as Linux does (1+2+4+8 s);
            // a data stall of this length would be a bug.
            assert!(
                r.max_gap < Duration::from_secs(20),
                "{cc} seed {seed} {link:?}: {r}"
            );
        }
    }
}
