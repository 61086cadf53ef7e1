//! A node's live figures as `nexctl --output json nexd status` reports them.

use crate::pair::Node;

/// Open flows reported by a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flows {
    /// `tcp_flows`.
    pub tcp: u64,
    /// `udp_flows`.
    pub udp: u64,
}

/// The whole status document.
pub fn status_json(node: &Node) -> Result<serde_json::Value, String> {
    let (code, out, err) = node.nexctl(&["--output", "json", "nexd", "status"]);
    if code != 0 {
        return Err(format!("nexctl status exited {code}: {}", err.trim()));
    }
    serde_json::from_str(&out).map_err(|e| format!("status is not JSON ({e}): {out}"))
}

/// Open TCP and UDP flows.
pub fn flows(node: &Node) -> Result<Flows, String> {
    let v = status_json(node)?;
    let field = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("status has no numeric {k}: {v}"))
    };
    Ok(Flows {
        tcp: field("tcp_flows")?,
        udp: field("udp_flows")?,
    })
}

/// One drop counter from the status document (0 if absent).
pub fn counter(status: &serde_json::Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// One counter of a node, read now (panics if nexctl fails: for tests that expect a running
/// daemon).
pub fn count(node: &Node, name: &str) -> u64 {
    counter(&status_json(node).unwrap_or_else(|e| panic!("{e}")), name)
}
