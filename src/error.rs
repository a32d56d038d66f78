//! The pool's error type.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A connect error kept so that every waiter that times out can report it.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong. Every variant's `Display` says what happened and what to look at.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection became free within the borrow timeout.
    #[error(
        "timed out after {waited:?} waiting for a connection{}",
        LastError(last_error)
    )]
    Timeout {
        /// How long the borrower waited.
        waited: Duration,
        /// The last error from opening a connection, if opening one failed meanwhile.
        last_error: Option<SharedError>,
    },
    /// The pool was closed (by [`Pool::close`](crate::Pool::close) or by dropping it).
    #[error("the pool is closed")]
    Closed,
    /// Opening a connection failed.
    #[error("could not open a connection: {0}")]
    Connect(SharedError),
    /// `max_waiters` threads were already waiting, so the borrow failed at once.
    #[error("too many threads waiting for a connection (max_waiters = {limit})")]
    TooManyWaiters {
        /// The configured limit.
        limit: usize,
    },
    /// A setting is invalid.
    #[error("invalid pool setting `{field}`: {reason}")]
    Config {
        /// The setting's name, as the builder method (and the config file key) spells it.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }
}

struct LastError<'a>(&'a Option<SharedError>);

impl fmt::Display for LastError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, "; the last connect attempt failed: {e}"),
            None => Ok(()),
        }
    }
}
