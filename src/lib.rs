//! stickypool: a lock-free, thread-affine connection pool for blocking, thread-based
//! services (fixed worker-thread servers, job runners, batch tools).
//!
//! The API follows r2d2's names (`ManageConnection`, `Pool::builder`, `get`,
//! `try_get`, `state`, ...), so porting an r2d2 service is an import change.
//!
//! ```
//! use std::time::Duration;
//! use stickypool::{ManageConnection, Pool};
//!
//! #[derive(Debug)]
//! struct Counter;
//!
//! impl ManageConnection for Counter {
//!     type Connection = u64;
//!     type Error = std::io::Error;
//!     fn connect(&self) -> Result<u64, std::io::Error> { Ok(0) }
//!     fn is_valid(&self, _: &mut u64) -> Result<(), std::io::Error> { Ok(()) }
//!     fn has_broken(&self, _: &mut u64) -> bool { false }
//! }
//!
//! let pool = Pool::builder()
//!     .max_size(8)
//!     .min_idle(Some(2))
//!     .connection_timeout(Duration::from_secs(3))
//!     .build(Counter)?;
//!
//! let mut conn = pool.get()?;   // a guard that derefs to the connection
//! *conn += 1;
//! drop(conn);                   // back to the pool; this thread gets it again next time
//! assert_eq!(*pool.get()?, 1);
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! How it works: the connections live in a fixed array of cache-padded slots, each with
//! an atomic state. A thread remembers the slot it used last and takes it back with one
//! compare-and-swap; a miss scans the other slots; only when every slot is busy does the
//! thread queue up and park, and then returned connections are handed to waiters in
//! arrival order. Connections are opened, checked and retired in the background: one
//! scheduler shared by all pools decides when, and each pool's own connector threads do
//! the blocking work, so a hung server holds up only its own pool. While a backend
//! refuses every connect, borrows fail at once with [`Error::Unavailable`] instead of
//! waiting out their timeout. A panic in a manager, customizer or event handler is
//! caught where it happens and costs only that call. The [`implementation`] page has the
//! algorithm, the argument for it, the layout of the source and the hot path (loom
//! models in `tests/loom.rs`).
//!
//! For services: [`Pool::bind`] binds a connection to the calling thread so helpers
//! deep in a call stack share it and its transaction ([`bound`]); [`Pools`] keeps a
//! service's pools by alias, built from a TOML file with the `config` feature
//! (`config` module); the `metrics` feature publishes every pool's state and counters
//! through the `metrics` facade (`metrics` module).

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(loom))]
mod affinity;
#[cfg(not(loom))]
pub mod backends;
#[cfg(not(loom))]
#[doc = include_str!("../docs/implementation.md")]
pub mod implementation {}
#[cfg(not(loom))]
pub mod bound;
#[cfg(not(loom))]
mod breaker;
#[cfg(not(loom))]
mod builder;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
pub mod compat;
#[cfg(all(feature = "config", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
#[cfg(not(loom))]
mod connector;
#[cfg(not(loom))]
mod engine;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod event;
#[cfg(not(loom))]
mod extensions;
#[cfg(not(loom))]
mod guard;
#[cfg(not(loom))]
mod hook;
#[cfg(not(loom))]
mod manager;
#[cfg(all(feature = "metrics", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(loom))]
mod pool;
#[cfg(not(loom))]
pub mod registry;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod trace;

#[cfg(not(loom))]
mod bag;
/// The hand-out algorithm, exposed only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod bag;
mod sync;

#[cfg(not(loom))]
pub use bound::BoundConnection;
#[cfg(not(loom))]
pub use builder::Builder;
#[cfg(not(loom))]
pub use engine::config::{DEFAULT_FAIR_AFTER, DEFAULT_VALIDATION_TIMEOUT, MAX_POOL_SIZE};
#[cfg(not(loom))]
pub use engine::{ConnectionInfo, State};
#[cfg(not(loom))]
pub use error::{Error, SharedError};
#[cfg(not(loom))]
pub use event::{
    AcquireEvent, CheckinEvent, CheckoutEvent, HandleEvent, NopEventHandler, ReleaseEvent,
    TimeoutEvent,
};
#[cfg(not(loom))]
pub use extensions::Extensions;
#[cfg(not(loom))]
pub use guard::{OwnedConnection, PooledConnection};
#[cfg(not(loom))]
pub use hook::HookPanic;
#[cfg(not(loom))]
pub use manager::{
    CloseReason, CustomizeConnection, ErrorOrigin, HandleError, LoggingErrorHandler,
    ManageConnection, NopConnectionCustomizer, NopErrorHandler, ResetAction,
};
#[cfg(not(loom))]
pub use pool::Pool;
#[cfg(not(loom))]
pub use registry::Pools;
#[cfg(not(loom))]
pub use stats::{ClosedCounts, Histogram, Stats};

/// The README's examples, compiled (and, unless marked `no_run`, run) as doctests.
#[cfg(all(doctest, feature = "compare", feature = "config", feature = "metrics"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
