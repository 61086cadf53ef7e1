//! Pure, I/O-free types shared by nexd and nexctl: the proxy rule grammar, the
//! wg-quick style network configuration, and WireGuard keys.

pub mod allow;
pub mod api;
pub mod clidoc;
pub mod config;
pub mod file_limits;
pub mod gateway;
pub mod key;
pub mod limits;
pub mod paths;
pub mod rule;
pub mod usage;

pub use allow::{AllowPeer, RuleSpec};
pub use config::{ConfigError, NetworkConfig, PeerConfig};
pub use gateway::{DestAllow, Gateway, GatewayKind, GatewaySpec, ProxyProtocol};
pub use key::{Key, KeyError};
pub use rule::{Direction, Protocol, ProxyRule, Rule, RuleError};
