//! What both benchmarks share: a manager whose connections cost nothing, implementing
//! both stickypool's and r2d2's `ManageConnection`, and the two pools built from it with
//! the same settings, so the comparison measures the pools and nothing else.
//!
//! Both pools are fully connected before measuring (`min_idle = max_size`; `build`
//! waits for it) and neither checks connections on borrow (`test_on_check_out(false)`).

use std::fmt;
use std::time::Duration;

/// How long `get` may wait, for every pool in the benchmarks (never reached).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection that is a small struct: opening, checking and returning it is free.
/// Each benchmark bumps `queries` while it holds the connection, as a user would touch
/// the connection.
#[derive(Debug, Default)]
pub struct Conn {
    pub queries: u64,
}

/// Never returned; the trait wants an error type.
#[derive(Debug)]
pub struct NoError;

impl fmt::Display for NoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no error")
    }
}

impl std::error::Error for NoError {}

/// The no-op manager, used by every pool in the benchmarks.
#[derive(Debug, Default)]
pub struct NoopManager;

// With the `r2d2` feature, r2d2's implementation below is stickypool's too.
#[cfg(not(feature = "r2d2"))]
impl stickypool::ManageConnection for NoopManager {
    type Connection = Conn;
    type Error = NoError;

    fn connect(&self) -> Result<Conn, NoError> {
        Ok(Conn::default())
    }

    fn is_valid(&self, _: &mut Conn) -> Result<(), NoError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

impl r2d2::ManageConnection for NoopManager {
    type Connection = Conn;
    type Error = NoError;

    fn connect(&self) -> Result<Conn, NoError> {
        Ok(Conn::default())
    }

    fn is_valid(&self, _: &mut Conn) -> Result<(), NoError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// A stickypool pool of `size` connections, all open, no borrow-time check and no
/// lifecycle jobs beyond the default reaper (idle timeout and max lifetime off).
pub fn stickypool_pool(size: u32) -> stickypool::Pool<NoopManager> {
    stickypool_pool_with(size, stickypool::DEFAULT_FAIR_AFTER)
}

/// [`stickypool_pool`] with another fairness bound (`Builder::fair_after`).
pub fn stickypool_pool_with(size: u32, fair_after: Duration) -> stickypool::Pool<NoopManager> {
    stickypool::Pool::builder()
        .max_size(size)
        .fair_after(Some(fair_after))
        .min_idle(Some(size))
        .check_on_borrow(None)
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(CONNECTION_TIMEOUT)
        .build(NoopManager)
        .expect("stickypool pool")
}

/// An r2d2 pool of `size` connections built with r2d2's defaults, except the same
/// sizing and no borrow-time check. `build` waits until all `size` are open.
pub fn r2d2_pool(size: u32) -> r2d2::Pool<NoopManager> {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .test_on_check_out(false)
        .connection_timeout(CONNECTION_TIMEOUT)
        .build(NoopManager)
        .expect("r2d2 pool")
}
