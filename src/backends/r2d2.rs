//! Any [`r2d2`](https://docs.rs/r2d2) manager as a stickypool manager (feature `r2d2`).
//!
//! [`R2d2Adapter`] wraps a value implementing [`r2d2::ManageConnection`] (from
//! `r2d2_postgres`, `r2d2_sqlite`, `r2d2_mysql`, `diesel`'s `ConnectionManager`, the
//! `redis` crate's `r2d2` support, your own) so that every existing r2d2 manager works
//! with stickypool unchanged. [`R2d2Customizer`] does the same for an
//! [`r2d2::CustomizeConnection`].
//!
//! ```
//! use std::time::Duration;
//! use stickypool::backends::r2d2::R2d2Adapter;
//! use stickypool::Pool;
//!
//! // Any r2d2 manager: `r2d2_sqlite::SqliteConnectionManager`, the `redis` crate's
//! // `Client` (with its `r2d2` feature), or one written against r2d2's trait:
//! #[derive(Debug)]
//! struct Counter;
//!
//! impl r2d2::ManageConnection for Counter {
//!     type Connection = u64;
//!     type Error = std::io::Error;
//!     fn connect(&self) -> Result<u64, std::io::Error> { Ok(0) }
//!     fn is_valid(&self, _: &mut u64) -> Result<(), std::io::Error> { Ok(()) }
//!     fn has_broken(&self, _: &mut u64) -> bool { false }
//! }
//!
//! let pool = Pool::builder()
//!     .max_size(8)
//!     .connection_timeout(Duration::from_secs(3))
//!     .build(R2d2Adapter::new(Counter))?;
//! let mut conn = pool.get()?;
//! *conn += 1;
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! `connect`, `is_valid` and `has_broken` are forwarded as they are. r2d2 has no reset
//! hook, so a plain adapter cannot reset, and `build` refuses
//! [`reset_on_return`](crate::Builder::reset_on_return) with a config error rather
//! than hand the next borrower a connection left mid-transaction. Give it the reset
//! with [`R2d2Adapter::with_reset`]:
//!
//! ```
//! # use stickypool::backends::r2d2::R2d2Adapter;
//! # use stickypool::{Pool, ResetAction};
//! # #[derive(Debug)]
//! # struct Sessions;
//! # impl r2d2::ManageConnection for Sessions {
//! #     type Connection = Vec<&'static str>;
//! #     type Error = std::io::Error;
//! #     fn connect(&self) -> Result<Self::Connection, std::io::Error> { Ok(Vec::new()) }
//! #     fn is_valid(&self, _: &mut Self::Connection) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn has_broken(&self, _: &mut Self::Connection) -> bool { false }
//! # }
//! let plain = Pool::builder()
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(R2d2Adapter::new(Sessions));
//! assert!(matches!(plain, Err(stickypool::Error::Config { field: "reset_on_return", .. })));
//!
//! // With a reset: here a "connection" is a list of statements of the open
//! // transaction; a real one would run `ROLLBACK`.
//! let manager = R2d2Adapter::new(Sessions).with_reset(|conn, action| {
//!     if action != ResetAction::None {
//!         conn.clear();
//!     }
//!     Ok(())
//! });
//! let pool = Pool::builder()
//!     .max_size(1)
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//! pool.get()?.push("INSERT ...");
//! assert!(pool.get()?.is_empty(), "rolled back on return");
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! Note that some r2d2 managers do I/O in `has_broken` (`r2d2_mysql` pings there), which
//! the pool calls on every return; the adapter cannot change that.
//!
//! r2d2 does not require its managers' errors to be `Send + Sync`; stickypool does
//! (errors are shared with the threads waiting for a connection), so the adapter
//! accepts managers whose error type is. That is the case for every manager above.

use std::fmt;
use std::sync::Arc;

use crate::manager::{CustomizeConnection, ManageConnection, ResetAction};

/// Turns an [`r2d2::ManageConnection`] into a stickypool [`ManageConnection`].
///
/// See the [module documentation](self).
pub struct R2d2Adapter<M: r2d2::ManageConnection> {
    manager: M,
    reset: Option<Arc<ResetFn<M>>>,
}

/// A reset given to [`R2d2Adapter::with_reset`].
type ResetFn<M> = dyn Fn(
        &mut <M as r2d2::ManageConnection>::Connection,
        ResetAction,
    ) -> Result<(), <M as r2d2::ManageConnection>::Error>
    + Send
    + Sync;

impl<M: r2d2::ManageConnection> R2d2Adapter<M> {
    /// Wraps an r2d2 manager. It cannot reset connections; see
    /// [`with_reset`](R2d2Adapter::with_reset).
    pub fn new(manager: M) -> R2d2Adapter<M> {
        R2d2Adapter {
            manager,
            reset: None,
        }
    }

    /// Resets returned connections with `reset` (run as
    /// [`ManageConnection::reset`]: an error closes the connection), so that
    /// [`reset_on_return`](crate::Builder::reset_on_return) can be used.
    pub fn with_reset<F>(mut self, reset: F) -> R2d2Adapter<M>
    where
        F: Fn(&mut M::Connection, ResetAction) -> Result<(), M::Error> + Send + Sync + 'static,
    {
        self.reset = Some(Arc::new(reset));
        self
    }

    /// The wrapped r2d2 manager.
    pub fn get_ref(&self) -> &M {
        &self.manager
    }

    /// Unwraps the r2d2 manager.
    pub fn into_inner(self) -> M {
        self.manager
    }
}

impl<M: r2d2::ManageConnection + Clone> Clone for R2d2Adapter<M> {
    fn clone(&self) -> Self {
        R2d2Adapter {
            manager: self.manager.clone(),
            reset: self.reset.clone(),
        }
    }
}

impl<M: r2d2::ManageConnection + fmt::Debug> fmt::Debug for R2d2Adapter<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("R2d2Adapter")
            .field("manager", &self.manager)
            .field("reset", &self.reset.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl<M: r2d2::ManageConnection> From<M> for R2d2Adapter<M> {
    fn from(manager: M) -> R2d2Adapter<M> {
        R2d2Adapter::new(manager)
    }
}

impl<M> ManageConnection for R2d2Adapter<M>
where
    M: r2d2::ManageConnection,
    M::Error: Send + Sync,
{
    type Connection = M::Connection;
    type Error = M::Error;

    fn connect(&self) -> Result<M::Connection, M::Error> {
        self.manager.connect()
    }

    fn is_valid(&self, conn: &mut M::Connection) -> Result<(), M::Error> {
        self.manager.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut M::Connection) -> bool {
        self.manager.has_broken(conn)
    }

    fn can_reset(&self) -> bool {
        self.reset.is_some()
    }

    fn reset(&self, conn: &mut M::Connection, action: ResetAction) -> Result<(), M::Error> {
        match &self.reset {
            Some(reset) => reset(conn, action),
            None => Ok(()),
        }
    }
}

/// Turns an [`r2d2::CustomizeConnection`] into a stickypool [`CustomizeConnection`]:
/// `on_acquire` and `on_release` are forwarded, `on_check_in` does nothing (r2d2 has no
/// such hook).
#[derive(Clone, Copy, Default)]
pub struct R2d2Customizer<T>(T);

impl<T> R2d2Customizer<T> {
    /// Wraps an r2d2 customizer.
    pub fn new(customizer: T) -> R2d2Customizer<T> {
        R2d2Customizer(customizer)
    }

    /// Unwraps the r2d2 customizer.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for R2d2Customizer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("R2d2Customizer").field(&self.0).finish()
    }
}

impl<C, E, T> CustomizeConnection<C, E> for R2d2Customizer<T>
where
    T: r2d2::CustomizeConnection<C, E>,
{
    fn on_acquire(&self, conn: &mut C) -> Result<(), E> {
        self.0.on_acquire(conn)
    }

    fn on_release(&self, conn: C) {
        self.0.on_release(conn)
    }
}
