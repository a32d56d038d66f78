//! The pool's settings after validation, and the limits they are validated against.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::sync::Mutex;

use scheduled_thread_pool::ScheduledThreadPool;

use crate::event::HandleEvent;

use crate::manager::{CustomizeConnection, HandleError, ManageConnection, ResetAction};

/// The largest `max_size` accepted.
pub const MAX_POOL_SIZE: u32 = 1 << 16;

/// The shortest `reap_interval` and `keepalive_interval` accepted: shorter ones would
/// keep a scheduler thread busy doing nothing useful.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Periods longer than this (100 years) are treated as this, so that the scheduler's
/// deadline arithmetic cannot overflow: in effect, never.
pub(crate) const LONGEST_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The default [`Builder::check_on_borrow`](crate::Builder::check_on_borrow) of
/// stickypool's own API (HikariCP's bypass window; [`compat`](crate::compat) keeps
/// r2d2's check on every borrow): a borrow checks a connection only if its last check
/// is at least this old. Measured in
/// a thread-pool HTTP service on PostgreSQL and Redis (`docs/benchmarks.md`, "A service
/// under load"): a check on every borrow costs a round trip per request, and served
/// 0.71 of the requests (median).
pub const DEFAULT_CHECK_ON_BORROW: Duration = Duration::from_millis(500);

/// The default grace of [`Builder::circuit_breaker`](crate::Builder::circuit_breaker):
/// how long a pool that has been healthy lets borrowers wait through an outage before
/// they fail at once. Long enough for a database restart (about half a second for
/// PostgreSQL and MariaDB in the restart tests), short next to a request timeout, so
/// a real outage still frees the worker threads within a second or so.
pub const DEFAULT_OUTAGE_GRACE: Duration = Duration::from_secs(1);

/// The default [`Builder::validation_timeout`](crate::Builder::validation_timeout), HikariCP's.
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The default [`Builder::fair_after`](crate::Builder::fair_after): how long a waiter
/// may wait before returned connections are handed to it directly instead of being
/// competed for (see `bag`). Long enough that short waits cost no context switch,
/// short next to the waits r2d2's barging produces; the p99 wait under contention sits
/// just above it. Measured (`benches/fairness.rs`, `roundtrip.rs` and the contended
/// tables of `backends.rs`, 2 and 3 ms alternating): at 2 ms the p99 wait with 32
/// threads on 8 connections is 2.2-2.9 ms, 0.19-0.42 of r2d2's against Redis and MySQL
/// (where r2d2's own p99 is 5-10 ms), and the throughput is level with 3 ms's within
/// the noise; at 3 ms that p99 was 3.1-3.7 ms, over half of r2d2's in the MySQL rows.
/// At 1 ms more returns are hand-offs, and each leaves its connection unused until the
/// woken thread gets a CPU: 15-40% less throughput against Redis on a saturated
/// two-core machine. Under a queue that takes longer than this to drain, the bound
/// grows to three drain times (see `Builder::fair_after`): with it, on an AMD EPYC host,
/// 64 threads on 16 connections took 0.40-0.96 of r2d2's time in one run of the
/// contended tables, and 0.85-1.09 against PostgreSQL over six runs, where the fixed
/// 2 ms had taken up to 1.23x (`docs/benchmarks.md`, "The bound grows with the queue").
pub const DEFAULT_FAIR_AFTER: Duration = Duration::from_millis(2);

/// The pool's settings, after validation.
pub(crate) struct Config<M: ManageConnection> {
    pub(crate) name: String,
    pub(crate) max_size: u32,
    /// Changed by `Pool::set_min_idle`; read through `Shared::min_idle`.
    pub(crate) min_idle: AtomicU32,
    /// `min_idle` as set (`None`: `max_size`), for `Pool::min_idle`.
    pub(crate) min_idle_setting: Mutex<Option<u32>>,
    /// `idle_timeout` closes only idle connections beyond `min_idle` (HikariCP's way).
    pub(crate) idle_timeout_spares_min_idle: bool,
    pub(crate) connection_timeout: Duration,
    /// `check_on_borrow` is not `None`.
    pub(crate) test_on_check_out: bool,
    /// `check_on_borrow`'s age, in milliseconds.
    pub(crate) validation_bypass_ms: u64,
    pub(crate) test_on_check_in: bool,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) reap_interval: Duration,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) reset_on_return: ResetAction,
    pub(crate) leak_detection_threshold: Option<Duration>,
    pub(crate) max_waiters: Option<usize>,
    /// `Duration::MAX` when fairness is off.
    pub(crate) fair_after: Duration,
    /// `None`: off; `Some(grace)`: borrows of a pool that has been healthy wait out
    /// this much of an outage before failing at once.
    pub(crate) circuit_breaker: Option<Duration>,
    pub(crate) customizer: Option<Box<dyn CustomizeConnection<M::Connection, M::Error>>>,
    pub(crate) event_handler: Option<Box<dyn HandleEvent>>,
    pub(crate) error_handler: Box<dyn HandleError<M::Error>>,
    /// `Duration::MAX` when the driver's own timeouts are in charge.
    pub(crate) validation_timeout: Duration,
    pub(crate) thread_pool: Arc<ScheduledThreadPool>,
    /// Leak detection or an event handler is on: borrows and returns record more.
    pub(crate) observed: bool,
    /// Something runs on return beyond `has_broken`: a reset, a customizer, a check.
    pub(crate) resets: bool,
}
