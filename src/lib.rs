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
// Under loom, what only the service layer calls is unused.
#![cfg_attr(loom, allow(dead_code))]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Under `--cfg loom` the core is compiled against loom's primitives (module `sync`)
// for the models in `tests/loom.rs` (the bag) and `tests/loom_pool.rs` (the whole
// pool through its public API); the service layer (backends, bound connections, the
// registry, the config file, metrics) is left out.
mod affinity;
#[cfg(not(loom))]
pub mod backends;
#[cfg(not(loom))]
#[doc = include_str!("../docs/implementation.md")]
pub mod implementation {}
#[cfg(not(loom))]
pub mod bound;
mod breaker;
mod builder;
mod clock;
#[cfg(not(loom))]
pub mod compat;
#[cfg(all(feature = "serde", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod connector;
mod engine;
mod error;
pub mod event;
mod extensions;
mod fork;
mod gate;
mod guard;
mod hook;
mod manager;
#[cfg(all(feature = "metrics", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod pool;
#[cfg(not(loom))]
pub mod registry;
mod stats;
mod trace;

#[cfg(not(loom))]
mod bag;
/// The hand-out algorithm, exposed only to the loom models.
#[cfg(loom)]
#[doc(hidden)]
pub mod bag;
mod sync;

/// Virtual time for the loom models: it stands still until a model moves it.
#[cfg(loom)]
#[doc(hidden)]
pub mod model_time {
    /// Moves the pool's clock forward by `by`; borrow deadlines that it passes expire.
    pub fn advance(by: std::time::Duration) {
        crate::sync::time::advance(by);
    }
}

#[cfg(not(loom))]
pub use bound::BoundConnection;
pub use builder::Builder;
pub use engine::config::{
    DEFAULT_CHECK_ON_BORROW, DEFAULT_FAIR_AFTER, DEFAULT_OUTAGE_GRACE, DEFAULT_VALIDATION_TIMEOUT,
    MAX_POOL_SIZE,
};
pub use engine::{ConnectionInfo, State};
pub use error::{Error, SharedError};
pub use event::{
    AcquireEvent, CheckinEvent, CheckoutEvent, HandleEvent, NopEventHandler, ReleaseEvent,
    TimeoutEvent,
};
pub use extensions::Extensions;
pub use guard::{OwnedConnection, PooledConnection};
pub use hook::HookPanic;
pub use manager::{
    CloseReason, CustomizeConnection, ErrorOrigin, HandleError, IntoCustomizer,
    LoggingErrorHandler, ManageConnection, NativeHooks, NopConnectionCustomizer, NopErrorHandler,
    R2d2Hooks, ResetAction,
};
pub use pool::{Pause, Pool};
#[cfg(not(loom))]
pub use registry::Pools;
pub use stats::{ClosedCounts, Histogram, Stats};

// The drivers of the ready managers, so that a service calls the very versions its
// pool was built with, without matching them by hand in its own Cargo.toml:
// `stickypool::rusqlite::params!`, `stickypool::postgres::Row`, ...
#[cfg(feature = "diesel")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel")))]
pub use diesel;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres;
#[cfg(feature = "r2d2")]
#[cfg_attr(docsrs, doc(cfg(feature = "r2d2")))]
pub use r2d2;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use rusqlite;

/// The Rust examples of the README and of the pages under `docs/`, compiled (and,
/// unless marked `no_run`, run) as doctests. They use every backend and service
/// feature, so they run with all of them on (the test command's `--all-features`).
#[cfg(all(
    doctest,
    feature = "sqlite",
    feature = "mysql",
    feature = "postgres",
    feature = "redis",
    feature = "diesel",
    feature = "r2d2",
    feature = "toml",
    feature = "metrics",
    feature = "tls"
))]
mod documented_examples {
    #[doc = include_str!("../README.md")]
    pub struct ReadmeDoctests;
    #[doc = include_str!("../docs/guide.md")]
    pub struct GuideDoctests;
    #[doc = include_str!("../docs/backends.md")]
    pub struct BackendsDoctests;
    #[doc = include_str!("../docs/operations.md")]
    pub struct OperationsDoctests;
}
