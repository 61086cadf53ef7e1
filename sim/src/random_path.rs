//! Random impaired paths with short flows both ways, for hunting stalls: a sender left with
//! nothing to send and no timer armed, or a timeout that backs off without end, shows up as
//! a flow that never finishes or stands still for long.

use crate::link::LinkConfig;
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::transfer::FlowSpec;
use smoltcp::socket::tcp;
use std::time::Duration;

/// The path and flows drawn from `seed`: one-way delay up to 40 ms, loss up to
/// `max_loss_permille` ‰ each way, jitter, reordering half the time, a bottleneck with a
/// small to medium queue half the time, and 1–13 flows of up to 300 kB alternating direction.
pub fn scenario(
    seed: u64,
    max_loss_permille: u64,
    socket: impl Fn() -> tcp::Socket<'static> + 'static,
) -> (LinkConfig, Scenario) {
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
    let mut scenario = Scenario::symmetric(link.clone(), socket).seed(seed);
    for i in 0..flows {
        let bytes = 1 + rng.up_to(300_000);
        let mut f = FlowSpec::bulk(bytes).start_at(Duration::from_millis(rng.up_to(200)));
        if i % 2 == 1 {
            f = f.reverse();
        }
        scenario = scenario.flow(f);
    }
    (link, scenario)
}
