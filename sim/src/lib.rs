//! Deterministic simulation of TCP between two smoltcp stacks over impaired WAN links.
//!
//! No sockets, no threads, no wall clock: a virtual clock jumps from event to event (a packet
//! arriving, a smoltcp timer, an application wake-up), and every random draw comes from a
//! seeded splitmix64. The same scenario gives the same numbers on every run and machine,
//! so TCP recovery fixes get regression tests that cannot flake.
//!
//! ```no_run
//! use nexd_sim::{FlowSpec, LinkConfig, Scenario};
//! use std::time::Duration;
//! # fn socket() -> smoltcp::socket::tcp::Socket<'static> { unimplemented!() }
//! let path = LinkConfig::new(Duration::from_millis(50)).loss(0.01);
//! let report = Scenario::symmetric(path, socket)
//!     .flow(FlowSpec::bulk(8 << 20))
//!     .run(Duration::from_secs(120));
//! assert!(report.complete, "{report}");
//! ```

pub mod device;
pub mod filters;
pub mod host;
pub mod link;
pub mod pattern;
pub mod random_path;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod tap;
pub mod transfer;
pub mod wan;
pub mod wire;

pub use host::{Host, TUNNEL_MTU};
pub use link::{Link, LinkConfig, LinkCounters};
pub use report::{FlowReport, Report};
pub use scenario::Scenario;
pub use sim::{App, RunError, Sim, A, ADDR_A, ADDR_B, B};
pub use tap::SegmentStats;
pub use transfer::{Direction, FlowSpec, SocketFactory, Transfer};
pub use wire::TcpInfo;
