//! The traits a backend implements and the hooks a user plugs in.
//!
//! The names follow r2d2 on purpose (`ManageConnection`, `connect`, `is_valid`,
//! `has_broken`, `CustomizeConnection`, `HandleError`; the events are in `event`), so
//! that porting an r2d2 service is an import change (see `compat`). Added beside them:
//!
//! * [`ManageConnection::reset`], the "fake close": when a connection comes back it is
//!   committed, rolled back or reset instead of being closed, and closed if that fails;
//!   [`ManageConnection::can_reset`] says whether a manager can;
//! * [`ManageConnection::is_valid_within`], a check bounded by `validation_timeout`;
//! * [`CustomizeConnection::on_check_in`], a custom reset hook run on every return;
//! * [`HandleError::handle_error_in_place`], which lets the pool keep the driver's error.

use std::fmt;
use std::time::Duration;

use crate::error::Chain;

/// What to do with a connection's session when it comes back to the pool.
///
/// Set with [`Builder::reset_on_return`](crate::Builder::reset_on_return) and passed
/// to [`ManageConnection::reset`]. If the reset fails the connection is closed, never
/// handed out dirty.
/// In a config file it is spelled in lowercase: `"keep"`, `"commit"`, `"rollback"`,
/// `"session"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "lowercase")
)]
#[non_exhaustive]
pub enum ResetAction {
    /// Keep the session as it is (r2d2's behaviour).
    #[default]
    Keep,
    /// Commit any open transaction.
    Commit,
    /// Roll back any open transaction.
    Rollback,
    /// Reset the whole session (transaction, variables, temporary state) where the
    /// backend can, for example MySQL's `COM_RESET_CONNECTION`. The customizer's
    /// [`on_acquire`](CustomizeConnection::on_acquire) then runs again, so the state
    /// it sets up on a new connection is always there.
    Session,
}

impl fmt::Display for ResetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResetAction::Keep => "keep",
            ResetAction::Commit => "commit",
            ResetAction::Rollback => "rollback",
            ResetAction::Session => "session",
        })
    }
}

/// Opens, checks and resets connections of one kind. The r2d2 trait of the same name,
/// plus [`reset`](ManageConnection::reset).
pub trait ManageConnection: Send + Sync + 'static {
    /// The connection type this manager deals with.
    type Connection: Send + 'static;
    /// The error type returned by `Connection`s.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection.
    fn connect(&self) -> Result<Self::Connection, Self::Error>;

    /// Checks that a connection is still usable, usually with a round trip
    /// (`SELECT 1`, `PING`). Called on borrow (see
    /// [`Builder::check_on_borrow`](crate::Builder::check_on_borrow)), on return if
    /// asked, and by the keepalive job.
    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error>;

    /// [`is_valid`](ManageConnection::is_valid) with a bound on how long the check may
    /// block: the pool calls this one, with
    /// [`Builder::validation_timeout`](crate::Builder::validation_timeout), for the
    /// borrow-time, return-time and keepalive checks. The default ignores the bound and
    /// calls `is_valid` (an r2d2 manager keeps its behaviour); the ready managers set a
    /// socket timeout for the check, so a hung server costs a borrower at most
    /// `timeout`. The pool cannot interrupt a check that ignores the bound.
    fn is_valid_within(
        &self,
        conn: &mut Self::Connection,
        timeout: Duration,
    ) -> Result<(), Self::Error> {
        let _ = timeout;
        self.is_valid(conn)
    }

    /// Quickly says whether a connection is known to be broken. Called on every return,
    /// so it must be cheap and must not do I/O.
    fn has_broken(&self, conn: &mut Self::Connection) -> bool;

    /// Resets a returned connection's session as `action` asks. The default does
    /// nothing. An error closes the connection. A manager that implements it must
    /// also say so in [`can_reset`](ManageConnection::can_reset).
    fn reset(&self, conn: &mut Self::Connection, action: ResetAction) -> Result<(), Self::Error> {
        let _ = (conn, action);
        Ok(())
    }

    /// Whether [`reset`](ManageConnection::reset) does what `ResetAction` asks. The
    /// default, `false`, makes `build` refuse
    /// [`reset_on_return`](crate::Builder::reset_on_return) with a
    /// [`Config`](crate::Error::Config) error instead of silently handing the next
    /// borrower a connection left mid-transaction.
    fn can_reset(&self) -> bool {
        false
    }
}

/// Hooks run around a connection's life. All methods have defaults that do nothing.
pub trait CustomizeConnection<C, E>: fmt::Debug + Send + Sync + 'static {
    /// Runs right after a connection is opened, before anyone uses it (set session
    /// variables, pragmas, ...), and again after every [`ResetAction::Session`] reset,
    /// which wipes that state. An error discards the connection.
    fn on_acquire(&self, conn: &mut C) -> Result<(), E> {
        let _ = conn;
        Ok(())
    }

    /// Runs on every return, after the manager's [`reset`](ManageConnection::reset):
    /// a custom "fake close". An error closes the connection instead of reusing it.
    fn on_check_in(&self, conn: &mut C) -> Result<(), E> {
        let _ = conn;
        Ok(())
    }

    /// Runs just before a connection is closed for good.
    fn on_release(&self, conn: C) {
        let _ = conn;
    }
}

/// What [`Builder::connection_customizer`](crate::Builder::connection_customizer)
/// takes: a boxed [`CustomizeConnection`], or with the feature `r2d2` a boxed
/// `r2d2::CustomizeConnection` (see [`backends::r2d2`](crate::backends)). `K` only
/// tells the two apart and is always inferred.
pub trait IntoCustomizer<C, E, K>: sealed::Sealed<K> {
    /// The customizer the pool runs.
    fn into_customizer(self) -> Box<dyn CustomizeConnection<C, E>>;
}

/// [`IntoCustomizer`]'s `K` for a stickypool customizer.
#[derive(Debug)]
pub enum NativeHooks {}

/// [`IntoCustomizer`]'s `K` for an r2d2 customizer.
#[derive(Debug)]
pub enum R2d2Hooks {}

impl<C, E, T> IntoCustomizer<C, E, NativeHooks> for Box<T>
where
    T: CustomizeConnection<C, E> + ?Sized,
{
    fn into_customizer(self) -> Box<dyn CustomizeConnection<C, E>> {
        Box::new(BoxedHooks(self))
    }
}

/// A boxed customizer, possibly unsized, as a `dyn` one.
#[derive(Debug)]
struct BoxedHooks<T: ?Sized>(Box<T>);

impl<C, E, T: CustomizeConnection<C, E> + ?Sized> CustomizeConnection<C, E> for BoxedHooks<T> {
    fn on_acquire(&self, conn: &mut C) -> Result<(), E> {
        self.0.on_acquire(conn)
    }

    fn on_check_in(&self, conn: &mut C) -> Result<(), E> {
        self.0.on_check_in(conn)
    }

    fn on_release(&self, conn: C) {
        self.0.on_release(conn)
    }
}

mod sealed {
    pub trait Sealed<K> {}
    impl<K, T: ?Sized> Sealed<K> for Box<T> {}
}

/// A customizer that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopConnectionCustomizer;

impl<C, E> CustomizeConnection<C, E> for NopConnectionCustomizer {}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`: beyond `min_idle` in stickypool's API, any idle
    /// one in [`compat`](crate::compat) (see
    /// [`idle_timeout`](crate::Builder::idle_timeout)), or closed to shrink a pool whose load spread over more connections than it
    /// needs.
    Idle,
    /// Older than `max_lifetime`.
    Lifetime,
    /// `has_broken` said so, or `is_valid` failed on borrow or return.
    Broken,
    /// The reset on return (`reset` or `on_check_in`) failed.
    ResetFailed,
    /// The keepalive ping failed while the connection was idle.
    KeepaliveFailed,
    /// Taken out of the pool by [`PooledConnection::detach`](crate::PooledConnection::detach).
    /// The pool no longer owns it; nothing was closed by the pool.
    Detached,
    /// Closed by [`PooledConnection::discard`](crate::PooledConnection::discard) or by a
    /// panic while it was held.
    Discarded,
    /// The pool was closed.
    PoolClosed,
    /// Closed by [`Pool::retain`](crate::Pool::retain).
    Evicted,
    /// Closed by [`Pool::retire_all`](crate::Pool::retire_all): idle at once, borrowed
    /// on return.
    Retired,
}

impl CloseReason {
    /// Every reason, in a fixed order (the order of the counters in `Stats`).
    pub const ALL: [CloseReason; 10] = [
        CloseReason::Idle,
        CloseReason::Lifetime,
        CloseReason::Broken,
        CloseReason::ResetFailed,
        CloseReason::KeepaliveFailed,
        CloseReason::Detached,
        CloseReason::Discarded,
        CloseReason::PoolClosed,
        CloseReason::Evicted,
        CloseReason::Retired,
    ];

    /// A short lowercase name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Broken => "broken",
            CloseReason::ResetFailed => "reset_failed",
            CloseReason::KeepaliveFailed => "keepalive_failed",
            CloseReason::Detached => "detached",
            CloseReason::Discarded => "discarded",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::Evicted => "evicted",
            CloseReason::Retired => "retired",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the pool was doing when an error reached the [`HandleError`] handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorOrigin {
    /// Opening a connection: `connect` or the customizer's `on_acquire`.
    Connect,
    /// Checking a connection: `is_valid` on borrow, on return or by the keepalive.
    Check,
    /// Resetting a returned connection: `reset` or the customizer's `on_check_in`.
    Reset,
}

impl fmt::Display for ErrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorOrigin::Connect => "opening a connection failed",
            ErrorOrigin::Check => "checking a connection failed",
            ErrorOrigin::Reset => "resetting a returned connection failed",
        })
    }
}

/// Receives the errors the pool meets on its own: failed connects (in the background
/// too), failed checks and failed resets. r2d2's trait of the same name: a handler
/// written for r2d2 implements [`handle_error`](HandleError::handle_error) and works
/// unchanged. Set with [`Builder::error_handler`](crate::Builder::error_handler); the
/// default is [`LoggingErrorHandler`].
///
/// While the circuit breaker is open (the backend is known to be down), the handler
/// sees the connect error that opened it and then one error per summary period (a
/// minute), not one per probe.
///
/// ```
/// use std::sync::Mutex;
/// use stickypool::HandleError;
///
/// /// Keeps the errors for a health endpoint (a service without a `log` logger).
/// #[derive(Debug, Default)]
/// struct LastErrors(Mutex<Vec<String>>);
///
/// impl HandleError<std::io::Error> for LastErrors {
///     fn handle_error(&self, error: std::io::Error) {
///         self.0.lock().unwrap().push(error.to_string());
///     }
/// }
/// # let handler = LastErrors::default();
/// # handler.handle_error(std::io::Error::other("refused"));
/// # assert_eq!(handler.0.lock().unwrap().len(), 1);
/// ```
pub trait HandleError<E>: fmt::Debug + Send + Sync + 'static {
    /// Handles an error, taking it (r2d2's signature).
    fn handle_error(&self, error: E);

    /// Handles an error where it happened, without taking it, and says whether it did.
    /// The pool calls this first. When it returns `true` the pool keeps the error
    /// itself, so the [`driver_error()`](crate::Error::driver_error) of the errors
    /// `get` returns is the driver's error (`downcast_ref` works); when it returns `false`
    /// (the default) the pool keeps the error's message and passes the error to
    /// [`handle_error`](HandleError::handle_error). [`LoggingErrorHandler`] and
    /// [`NopErrorHandler`] handle in place.
    fn handle_error_in_place(&self, pool: &str, origin: ErrorOrigin, error: &E) -> bool {
        let _ = (pool, origin, error);
        false
    }
}

/// A shared handler, so one can be kept by the caller and given to a pool.
impl<E, T: HandleError<E> + ?Sized> HandleError<E> for std::sync::Arc<T> {
    fn handle_error(&self, error: E) {
        (**self).handle_error(error)
    }

    fn handle_error_in_place(&self, pool: &str, origin: ErrorOrigin, error: &E) -> bool {
        (**self).handle_error_in_place(pool, origin, error)
    }
}

/// The default error handler: logs each error with the `log` crate, at `warn` with the
/// pool's name when the pool reports it, at `error` when called as r2d2's would be.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingErrorHandler;

impl<E: std::error::Error + 'static> HandleError<E> for LoggingErrorHandler {
    fn handle_error(&self, error: E) {
        log::error!("{}", Chain(&error));
    }

    fn handle_error_in_place(&self, pool: &str, origin: ErrorOrigin, error: &E) -> bool {
        log::warn!("pool '{pool}': {origin}: {}", Chain(error));
        true
    }
}

/// An error handler that ignores every error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopErrorHandler;

impl<E> HandleError<E> for NopErrorHandler {
    fn handle_error(&self, error: E) {
        let _ = error;
    }

    fn handle_error_in_place(&self, _: &str, _: ErrorOrigin, _: &E) -> bool {
        true
    }
}
