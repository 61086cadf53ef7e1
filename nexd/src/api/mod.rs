//! The gRPC control API on a unix socket.

mod conn;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod service;
mod socket;

pub use conn::{ApiCounters, IDLE_TIMEOUT, MAX_CONNECTIONS, PREFACE_TIMEOUT};
pub use service::{ApiService, RuntimeState};
pub use socket::{bind_private, serve, BindError, MAX_REQUEST_BYTES, MAX_STREAMS_PER_CONNECTION};
