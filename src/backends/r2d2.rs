//! Every [`r2d2`](https://docs.rs/r2d2) manager and customizer is a stickypool one
//! (feature `r2d2`).
//!
//! With the feature on, a type implementing [`r2d2::ManageConnection`] (from
//! `r2d2_postgres`, `r2d2_sqlite`, `r2d2_mysql`, diesel's `ConnectionManager`, the
//! `redis` crate's `r2d2` support, your own) implements stickypool's
//! [`ManageConnection`] too, and
//! [`Builder::connection_customizer`](crate::Builder::connection_customizer) takes a
//! boxed [`r2d2::CustomizeConnection`] as well as a stickypool one. Both [`Pool`](crate::Pool) and
//! [`compat::Pool`](crate::compat::Pool) take them as they are, so an r2d2 service
//! ports by its dependency line and its `use` line (see `docs/porting.md`):
//!
//! ```
//! use std::time::Duration;
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
//!     .build(Counter)?;
//! let mut conn = pool.get()?;
//! *conn += 1;
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! `connect`, `is_valid` and `has_broken` are r2d2's; a customizer's `on_acquire` and
//! `on_release` are r2d2's, and its `on_check_in` does nothing (r2d2 has no such hook).
//! r2d2 has no reset hook either, so an r2d2 manager cannot reset, and `build` refuses
//! [`reset_on_return`](crate::Builder::reset_on_return) with a config error rather
//! than hand the next borrower a connection left mid-transaction. Give it a reset with
//! [`WithReset`]:
//!
//! ```
//! # use stickypool::backends::r2d2::WithReset;
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
//!     .build(Sessions);
//! assert!(matches!(plain, Err(stickypool::Error::Config { field: "reset_on_return", .. })));
//!
//! // With a reset: here a "connection" is a list of statements of the open
//! // transaction; a real one would run `ROLLBACK`.
//! let manager = WithReset::new(Sessions, |conn, action| {
//!     if action != ResetAction::Keep {
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
//! Some r2d2 managers do I/O in `has_broken` (`r2d2_mysql` pings there), which the pool
//! calls on every return, as r2d2 does. r2d2's `is_valid` takes no time bound, so the
//! pool cannot bound an r2d2 manager's check by `validation_timeout` or by what a
//! borrow has left: on a hung server it blocks as long as the driver lets it. Set the
//! driver's own read timeout, or use the ready manager for that backend, whose check
//! is bounded.
//!
//! r2d2 does not require its managers' errors to be `Send + Sync`; stickypool does
//! (errors are shared with the threads waiting for a connection), so only managers
//! whose error type is are stickypool managers. That is the case for every manager
//! above.
//!
//! A type that implements both r2d2's trait and stickypool's conflicts with these
//! implementations once the feature is on: implement r2d2's alone.

use std::fmt;

use crate::manager::{
    CustomizeConnection, IntoCustomizer, ManageConnection, R2d2Hooks, ResetAction,
};

impl<M> ManageConnection for M
where
    M: r2d2::ManageConnection,
    M::Error: Send + Sync,
{
    type Connection = M::Connection;
    type Error = M::Error;

    fn connect(&self) -> Result<M::Connection, M::Error> {
        r2d2::ManageConnection::connect(self)
    }

    fn is_valid(&self, conn: &mut M::Connection) -> Result<(), M::Error> {
        r2d2::ManageConnection::is_valid(self, conn)
    }

    fn has_broken(&self, conn: &mut M::Connection) -> bool {
        r2d2::ManageConnection::has_broken(self, conn)
    }
}

/// An r2d2 customizer given to
/// [`Builder::connection_customizer`](crate::Builder::connection_customizer).
struct R2d2Customizer<T: ?Sized>(Box<T>);

impl<T: fmt::Debug + ?Sized> fmt::Debug for R2d2Customizer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<C, E, T> CustomizeConnection<C, E> for R2d2Customizer<T>
where
    T: r2d2::CustomizeConnection<C, E> + ?Sized,
{
    fn on_acquire(&self, conn: &mut C) -> Result<(), E> {
        self.0.on_acquire(conn)
    }

    fn on_release(&self, conn: C) {
        self.0.on_release(conn)
    }
}

impl<C, E, T> IntoCustomizer<C, E, R2d2Hooks> for Box<T>
where
    C: 'static,
    E: 'static,
    T: r2d2::CustomizeConnection<C, E> + ?Sized,
{
    fn into_customizer(self) -> Box<dyn CustomizeConnection<C, E>> {
        Box::new(R2d2Customizer(self))
    }
}

/// An r2d2 manager with a reset, so that
/// [`reset_on_return`](crate::Builder::reset_on_return) can be used. `reset` runs as
/// [`ManageConnection::reset`]: an error closes the connection.
///
/// See the [module documentation](self).
pub struct WithReset<M: r2d2::ManageConnection, F> {
    manager: M,
    reset: F,
}

impl<M, F> WithReset<M, F>
where
    M: r2d2::ManageConnection,
    F: Fn(&mut M::Connection, ResetAction) -> Result<(), M::Error> + Send + Sync + 'static,
{
    /// Gives `manager` the reset `reset`.
    pub fn new(manager: M, reset: F) -> WithReset<M, F> {
        WithReset { manager, reset }
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

impl<M: r2d2::ManageConnection + Clone, F: Clone> Clone for WithReset<M, F> {
    fn clone(&self) -> Self {
        WithReset {
            manager: self.manager.clone(),
            reset: self.reset.clone(),
        }
    }
}

impl<M: r2d2::ManageConnection + fmt::Debug, F> fmt::Debug for WithReset<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithReset")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl<M, F> ManageConnection for WithReset<M, F>
where
    M: r2d2::ManageConnection,
    M::Error: Send + Sync,
    F: Fn(&mut M::Connection, ResetAction) -> Result<(), M::Error> + Send + Sync + 'static,
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
        true
    }

    fn reset(&self, conn: &mut M::Connection, action: ResetAction) -> Result<(), M::Error> {
        (self.reset)(conn, action)
    }
}
