//! The file-descriptor limit and what it allows: every flow holds a host socket, so the
//! flow limit must fit under RLIMIT_NOFILE, or accept() fails with EMFILE before the flow
//! limit ever applies.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors kept back from flows for the API, listeners, the state file and logs; at
/// most half the limit, so a tiny limit still leaves room for flows.
const RESERVE: u64 = 512;

/// Raises the soft limit to the hard one, as Go programs do (the usual soft limit of 1024
/// would cap nexd far below its flow limits). Returns the soft limit now in force.
pub fn raise() -> Option<u64> {
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (lim.current, lim.maximum) {
        if soft < hard {
            lim.current = Some(hard);
            // Best effort: with the old limit nexd still runs, with fewer flows.
            let _ = setrlimit(Resource::Nofile, lim);
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The soft limit in force (`None`: unlimited).
pub fn current() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Descriptors the process holds now.
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// How many flows `limit` descriptors can hold, with the reserve kept back.
pub fn flows_within(limit: u64) -> u64 {
    limit - RESERVE.min(limit / 2)
}

/// The flow limit to use: `requested` (or `default`) lowered to what the descriptor limit
/// allows; the second value says whether a requested value was lowered.
pub fn max_flows(requested: Option<u64>, default: u64, limit: Option<u64>) -> (u64, bool) {
    let fit = limit.map_or(u64::MAX, flows_within).max(1);
    match requested {
        Some(n) if n > fit => (fit, true),
        Some(n) => (n, false),
        None => (default.min(fit), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fits_the_descriptor_limit() {
        assert_eq!(max_flows(None, 32768, Some(20_000)), (19_488, false));
        assert_eq!(max_flows(None, 32768, Some(1_048_576)), (32768, false));
        assert_eq!(max_flows(None, 32768, None), (32768, false));
        // A tiny limit keeps half for flows.
        assert_eq!(max_flows(None, 32768, Some(64)), (32, false));
    }

    #[test]
    fn an_explicit_value_above_the_limit_is_lowered() {
        assert_eq!(max_flows(Some(50_000), 32768, Some(20_000)), (19_488, true));
        assert_eq!(max_flows(Some(100), 32768, Some(20_000)), (100, false));
    }
}
