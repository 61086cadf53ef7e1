//! A node's status as nexctl reports it in JSON: flow counts and counters.

use crate::pair::Node;
use serde_json::Value;

/// `nexctl --output json nexd status`, parsed.
pub fn status(node: &Node) -> Value {
    let (code, out, err) = node.nexctl(&["--output", "json", "nexd", "status"]);
    assert_eq!(code, 0, "nexctl status failed: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
}

/// One counter by name (0 when absent).
pub fn counter(node: &Node, name: &str) -> u64 {
    status(node)["counters"][name].as_u64().unwrap_or(0)
}

/// Open TCP and UDP flows.
pub fn flows(node: &Node) -> (u64, u64) {
    let s = status(node);
    (
        s["tcp_flows"].as_u64().unwrap_or(u64::MAX),
        s["udp_flows"].as_u64().unwrap_or(u64::MAX),
    )
}
