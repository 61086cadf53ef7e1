//! The status summary nexd logs on SIGUSR1: what `nexctl nexd status` shows, in two log
//! lines, for an operator who has a shell but no API access.

use crate::engine::EngineStatus;
use tracing::info;

/// Logs `st` at INFO: one summary line, one line of the counters that are not zero.
pub fn log_status(st: &EngineStatus, by: &str) {
    let handshaken = st
        .peers
        .iter()
        .filter(|p| p.since_handshake.is_some())
        .count();
    let active_rules = st.rule_stats.iter().filter(|r| r.active > 0).count();
    info!(
        by,
        public_key = %st.public_key,
        listen_addr = %st.listen_addr,
        peers = st.peers.len(),
        peers_with_handshake = handshaken,
        rules = st.rules.len(),
        rules_with_flows = active_rules,
        proxy_servers = st.gateways.len(),
        proxy_servers_with_flows = st.gateways.iter().filter(|g| g.active > 0).count(),
        tcp_flows = st.tcp_flows,
        udp_flows = st.udp_flows,
        "status"
    );
    info!(by, counters = %nonzero_counters(&st.counters), "status counters");
}

/// `name=value` for each counter that is not zero, or `none`.
fn nonzero_counters(counters: &[(&'static str, &'static str, u64)]) -> String {
    let list: Vec<String> = counters
        .iter()
        .filter(|c| c.2 != 0)
        .map(|(_, name, v)| format!("{name}={v}"))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::nonzero_counters;

    #[test]
    fn only_nonzero_counters_are_listed() {
        assert_eq!(nonzero_counters(&[("d", "a", 0)]), "none");
        assert_eq!(
            nonzero_counters(&[("d", "a", 0), ("d", "b", 3), ("r", "c", 1)]),
            "b=3 c=1"
        );
    }
}
