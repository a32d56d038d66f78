//! The pool's error type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::State;

/// A connect error kept so that every waiter that times out can report it.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong. Every variant's `Display` says what happened and what to look at.
///
/// A service maps them to its answers, for example HTTP status codes:
///
/// ```
/// use std::time::Duration;
/// use stickypool::{Error, ManageConnection, Pool};
/// # #[derive(Debug)] struct Manager;
/// # impl ManageConnection for Manager {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn has_broken(&self, _: &mut ()) -> bool { false }
/// # }
///
/// fn status(error: &Error) -> u16 {
///     match error {
///         // Busy or down: tell the client to come back later.
///         Error::Timeout { .. } | Error::TooManyWaiters { .. } | Error::Unavailable { .. } => 503,
///         Error::Connect(_) => 502,
///         _ => 500,
///     }
/// }
///
/// let pool = Pool::builder().max_size(1).build(Manager)?;
/// let held = pool.get()?;
/// let busy = pool.get_timeout(Duration::from_millis(5)).unwrap_err();
/// assert_eq!(status(&busy), 503);
/// # drop(held);
/// # Ok::<(), Error>(())
/// ```
///
/// `Display` says everything, the driver's error included, as r2d2's error does, so
/// `println!("{error}")` and a log line tell the whole story. So that chain printers
/// (`anyhow`'s `{:#}`, `eyre`) do not print the driver's error twice, `source()` is
/// `None`; [`driver_error`](Error::driver_error) gives it, to `downcast_ref` to the
/// driver's type:
///
/// ```
/// # use std::sync::Arc;
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let error = stickypool::Error::Connect(Arc::new(refused));
/// assert_eq!(error.to_string(), "could not open a connection: refused");
/// let cause = error.driver_error().unwrap();
/// assert_eq!(
///     cause.downcast_ref::<std::io::Error>().unwrap().kind(),
///     std::io::ErrorKind::ConnectionRefused
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// No connection became free within the borrow timeout.
    #[non_exhaustive]
    Timeout {
        /// The pool's name ([`Builder::name`](crate::Builder::name), or `pool-N`).
        pool: String,
        /// How long the borrower waited.
        waited: Duration,
        /// The pool when the borrow gave up: how many connections were open, in use
        /// and being opened, and how many threads waited.
        state: State,
        /// The last error from opening a connection, if opening one failed meanwhile.
        last_error: Option<SharedError>,
    },
    /// The pool was closed (by [`Pool::close`](crate::Pool::close) or by dropping it).
    Closed,
    /// Opening a connection failed.
    Connect(SharedError),
    /// The backend is known to be down: every recent connect failed and the pool has
    /// no open connection, so the borrow failed at once instead of waiting out its
    /// timeout. See [`Builder::circuit_breaker`](crate::Builder::circuit_breaker).
    #[non_exhaustive]
    Unavailable {
        /// The pool's name.
        pool: String,
        /// How long the backend has been down (since the breaker opened).
        down_for: Duration,
        /// The last connect error (also [`Error::driver_error`]).
        last_error: Option<SharedError>,
    },
    /// `max_waiters` threads were already waiting, so the borrow failed at once.
    #[non_exhaustive]
    TooManyWaiters {
        /// The pool's name.
        pool: String,
        /// The configured limit.
        limit: usize,
    },
    /// The pool is paused ([`Pool::pause`](crate::Pool::pause)) and its borrows fail at
    /// once ([`Pause::failing`](crate::Pause::failing)).
    #[non_exhaustive]
    Paused {
        /// The pool's name.
        pool: String,
    },
    /// The pool was built before this process was forked off its parent, and a pool
    /// does not survive `fork()`: build a new one in the child (see
    /// [`Pool`](crate::Pool#fork)).
    Forked,
    /// A setting is invalid.
    Config {
        /// The setting's name, as the builder method (and the config file key) spells it.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl Error {
    /// The driver's error behind this one: the failed connect of
    /// [`Connect`](Error::Connect), and the last failed connect of
    /// [`Unavailable`](Error::Unavailable) and of a [`Timeout`](Error::Timeout) that
    /// waited on failing connects. `Display` already includes it.
    pub fn driver_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        let cause = match self {
            Error::Connect(e) => e,
            Error::Timeout {
                last_error: Some(e),
                ..
            }
            | Error::Unavailable {
                last_error: Some(e),
                ..
            } => e,
            _ => return None,
        };
        // The driver's error itself, not the `Arc` around it, so `downcast_ref` works.
        Some(&**cause)
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout {
                pool,
                waited,
                state,
                last_error,
            } => {
                write!(f, "pool `{pool}`: no connection within {waited:?} ")?;
                match last_error {
                    // Connecting is what failed: the fix is on the backend's side.
                    Some(e) => write!(
                        f,
                        "({} of {} open, {} being opened); the last connect attempt \
                         failed: {}",
                        state.connections,
                        state.max_size,
                        state.pending,
                        Chain(&**e)
                    ),
                    None => write!(
                        f,
                        "({} of {} in use, {} waiting): raise max_size or \
                         connection_timeout, or look for connections held too long with \
                         leak_detection_threshold",
                        state.in_use, state.max_size, state.waiters
                    ),
                }
            }
            Error::Closed => f.write_str("the pool is closed"),
            Error::Paused { pool } => write!(
                f,
                "pool `{pool}` is paused for maintenance: try again once it is resumed"
            ),
            Error::Forked => f.write_str(
                "the pool was built before this process forked; a pool cannot be used \
                 across fork(): build a new one in the child",
            ),
            Error::Unavailable {
                pool,
                down_for,
                last_error,
            } => {
                write!(
                    f,
                    "pool `{pool}`: the backend is unavailable (every connect failed for \
                     {down_for:?}, and no connection is open)"
                )?;
                match last_error {
                    Some(e) => write!(f, "; the last connect attempt failed: {}", Chain(&**e)),
                    None => Ok(()),
                }
            }
            Error::Connect(e) => write!(f, "could not open a connection: {}", Chain(&**e)),
            Error::TooManyWaiters { pool, limit } => write!(
                f,
                "pool `{pool}`: too many threads waiting for a connection (max_waiters = \
                 {limit}): the pool is saturated; raise max_size or shed load earlier"
            ),
            Error::Config { field, reason } => {
                write!(f, "invalid pool setting `{field}`: {reason}")
            }
        }
    }
}

/// No `source()`: `Display` includes the driver's error (see [`Error`]).
impl std::error::Error for Error {}

/// An error with its sources, `outer: inner: innermost`, skipping a source whose text
/// the message already holds. Some drivers put the server's words only in the
/// source: the `postgres` crate's `Display` is just "db error".
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut message = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&message)
    }
}

/// What the pool keeps of an error that it handed to a
/// [`HandleError::handle_error`](crate::HandleError::handle_error): its message.
#[derive(Debug)]
pub(crate) struct ErrorMessage(pub(crate) String);

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ErrorMessage {}
