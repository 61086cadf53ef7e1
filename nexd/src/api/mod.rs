//! The gRPC control API on a unix socket.

mod service;
mod socket;

pub use service::{ApiService, RuntimeState};
pub use socket::{bind_private, serve, BindError};
