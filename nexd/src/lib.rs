//! nexd as a library: the engine and the proxy runner, used by the binary and by tests.

pub mod api;
pub mod bounded_read;
pub mod cli;
pub mod config_file;
pub mod drain;
pub mod engine;
pub mod fd_limit;
pub mod gateway;
pub mod keys;
pub mod metrics;
pub mod page_alloc;
pub mod proxy;
pub mod reload;
pub mod safe_dir;
pub mod sd_notify;
pub mod servers;
pub mod state;
pub mod status_dump;
