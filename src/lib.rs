//! stickypool: a lock-free, thread-affine connection pool for blocking, thread-based services.

#![warn(missing_docs)]

pub mod backends;
mod error;
mod manager;

pub use error::{Error, SharedError};
pub use manager::{
    AcquireEvent, CheckinEvent, CheckoutEvent, CloseReason, CustomizeConnection, HandleEvent,
    ManageConnection, NopConnectionCustomizer, NopEventHandler, ReleaseEvent, ResetAction,
    TimeoutEvent,
};
