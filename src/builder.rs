//! The pool builder: every setting with its default, validated at `build`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use scheduled_thread_pool::ScheduledThreadPool;

use crate::engine::config::{
    Config, DEFAULT_CHECK_ON_BORROW, DEFAULT_FAIR_AFTER, DEFAULT_OUTAGE_GRACE,
    DEFAULT_VALIDATION_TIMEOUT, LONGEST_PERIOD, MAX_POOL_SIZE, MIN_INTERVAL,
};
use crate::error::Error;
use crate::event::HandleEvent;
use crate::manager::{
    CustomizeConnection, HandleError, IntoCustomizer, LoggingErrorHandler, ManageConnection,
    ResetAction,
};
use crate::pool::Pool;

/// Builds a [`Pool`]. Names and defaults follow r2d2's `Builder`, with the additions
/// of the lifecycle settings.
///
/// ```
/// use std::time::Duration;
/// # use stickypool::{ManageConnection, Pool};
/// # #[derive(Debug)] struct Manager;
/// # impl ManageConnection for Manager {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn has_broken(&self, _: &mut ()) -> bool { false }
/// # }
/// let pool = Pool::builder()
///     .max_size(16)
///     .min_idle(Some(4))
///     .connection_timeout(Duration::from_secs(3))
///     .build(Manager)?;
/// assert_eq!(pool.max_size(), 16);
/// # Ok::<(), stickypool::Error>(())
/// ```
///
/// `P` is the pool type `build` makes: [`Pool`], or [`compat::Pool`](crate::compat::Pool)
/// for the r2d2-shaped API.
pub struct Builder<M: ManageConnection, P = Pool<M>> {
    name: Option<String>,
    max_size: u32,
    min_idle: Option<u32>,
    connection_timeout: Duration,
    check_on_borrow: Option<Duration>,
    test_on_check_in: bool,
    idle_timeout: Option<Duration>,
    idle_timeout_spares_min_idle: bool,
    max_lifetime: Option<Duration>,
    reap_interval: Duration,
    keepalive_interval: Option<Duration>,
    reset_on_return: ResetAction,
    leak_detection_threshold: Option<Duration>,
    max_waiters: Option<usize>,
    fair_after: Option<Duration>,
    circuit_breaker: Option<Duration>,
    customizer: Option<Box<dyn CustomizeConnection<M::Connection, M::Error>>>,
    event_handler: Option<Box<dyn HandleEvent>>,
    error_handler: Option<Box<dyn HandleError<M::Error>>>,
    validation_timeout: Option<Duration>,
    thread_pool: Option<Arc<ScheduledThreadPool>>,
    pool: PhantomData<fn() -> P>,
}

impl<M: ManageConnection, P> fmt::Debug for Builder<M, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("max_size", &self.max_size)
            .field("min_idle", &self.min_idle)
            .field("connection_timeout", &self.connection_timeout)
            .field("check_on_borrow", &self.check_on_borrow)
            .field("test_on_check_in", &self.test_on_check_in)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("reap_interval", &self.reap_interval)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("reset_on_return", &self.reset_on_return)
            .field("leak_detection_threshold", &self.leak_detection_threshold)
            .field("max_waiters", &self.max_waiters)
            .field("fair_after", &self.fair_after)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("customizer", &self.customizer)
            .field("event_handler", &self.event_handler)
            .field("error_handler", &self.error_handler)
            .field("validation_timeout", &self.validation_timeout)
            .finish_non_exhaustive()
    }
}

/// Where stickypool's own API and r2d2's meanings (in `compat`) differ.
struct Meanings {
    /// The default of `check_on_borrow`.
    check_on_borrow: Option<Duration>,
    /// `idle_timeout` closes only idle connections beyond `min_idle`.
    idle_timeout_spares_min_idle: bool,
}

/// stickypool's: a borrow checks a connection only if its last check is at least
/// [`DEFAULT_CHECK_ON_BORROW`] old, and `idle_timeout` keeps `min_idle` connections
/// (HikariCP's choices, for the reasons in [`Builder::check_on_borrow`] and
/// [`Builder::idle_timeout`]).
const NATIVE: Meanings = Meanings {
    check_on_borrow: Some(DEFAULT_CHECK_ON_BORROW),
    idle_timeout_spares_min_idle: true,
};

/// r2d2's: every borrow is checked, and `idle_timeout` closes any idle connection.
#[cfg(not(loom))]
const R2D2: Meanings = Meanings {
    check_on_borrow: Some(Duration::ZERO),
    idle_timeout_spares_min_idle: false,
};

impl<M: ManageConnection> Default for Builder<M, Pool<M>> {
    fn default() -> Self {
        Builder::with_defaults(NATIVE)
    }
}

#[cfg(not(loom))]
impl<M: ManageConnection> Default for Builder<M, crate::compat::Pool<M>> {
    fn default() -> Self {
        Builder::with_defaults(R2D2)
    }
}

impl<M: ManageConnection, P> Builder<M, P> {
    fn with_defaults(meanings: Meanings) -> Self {
        Builder {
            name: None,
            max_size: 10,
            min_idle: None,
            connection_timeout: Duration::from_secs(30),
            check_on_borrow: meanings.check_on_borrow,
            test_on_check_in: false,
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            idle_timeout_spares_min_idle: meanings.idle_timeout_spares_min_idle,
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            reap_interval: Duration::from_secs(30),
            keepalive_interval: None,
            reset_on_return: ResetAction::Keep,
            leak_detection_threshold: None,
            max_waiters: None,
            fair_after: Some(DEFAULT_FAIR_AFTER),
            circuit_breaker: Some(DEFAULT_OUTAGE_GRACE),
            customizer: None,
            event_handler: None,
            error_handler: None,
            validation_timeout: Some(DEFAULT_VALIDATION_TIMEOUT),
            thread_pool: None,
            pool: PhantomData,
        }
    }
}

impl<M: ManageConnection> Builder<M> {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(not(loom))]
impl<M: ManageConnection> Builder<M, crate::compat::Pool<M>> {
    /// r2d2's setting: `true` checks every borrow (the default), `false` none. The
    /// same as [`check_on_borrow`](Builder::check_on_borrow) with
    /// `Some(Duration::ZERO)` or `None`.
    pub fn test_on_check_out(self, test: bool) -> Self {
        self.check_on_borrow(test.then_some(Duration::ZERO))
    }
}

impl<M: ManageConnection, P> Builder<M, P> {
    /// The pool's name, used in logs, leak reports and metrics. Default: `pool-N`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The most connections the pool will hold, idle and in use. Default: 10.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.max_size = max_size;
        self
    }

    /// How many *idle* connections the pool keeps, r2d2's meaning: when borrows leave
    /// fewer idle, it opens more (up to `max_size`) in the background. `None` (the
    /// default) means `max_size`. `build` waits until this many are open.
    pub fn min_idle(mut self, min_idle: Option<u32>) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// How long `get` waits for a connection before failing with
    /// [`Error::Timeout`]. Default: 30 s. A duration too long for the clock (such as
    /// `Duration::MAX`) waits for ever.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Whether and when `get` checks a connection with `is_valid` before handing it out:
    /// `Some(age)` checks one whose last check (or connect) is at least `age` old,
    /// `Some(Duration::ZERO)` checks every borrow (r2d2's behaviour, the default in
    /// [`compat`](crate::compat)), `None` never checks on borrow. Default:
    /// `Some(`[`DEFAULT_CHECK_ON_BORROW`]`)`, 500 ms, HikariCP's bypass window.
    ///
    /// The check costs a server round trip per borrow: in a thread-pool HTTP service on
    /// PostgreSQL and Redis, whose requests are one query each, checking every borrow
    /// served 0.71 of the requests the default served (median; 0.56-0.90 by shape,
    /// `docs/benchmarks.md`, "A service under load"). The window saves that round trip
    /// for connections in constant use.
    ///
    /// What it gives up: a connection that died less than the window after its last
    /// check (a server restart, a killed session) is handed out, and the borrower's
    /// first query fails, where a check would have replaced it. It is closed when it
    /// comes back if `has_broken` then sees it, or if a
    /// [`reset_on_return`](Builder::reset_on_return) fails on it, and otherwise at its
    /// next check, at most this long later. Choose `Some(Duration::ZERO)` where a
    /// failed first query is worse than a round trip per borrow.
    ///
    /// The window runs from the last *check*, not the last return as in HikariCP: a
    /// connection in constant use is still checked once per window (a round trip per
    /// connection every 500 ms, nothing next to a service's load), so one that died
    /// under load is found within the window even when the driver cannot tell without
    /// a round trip.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// // r2d2's behaviour in the native API: a check on every borrow.
    /// let pool = Pool::builder()
    ///     .check_on_borrow(Some(Duration::ZERO))
    ///     .build(Manager)?;
    /// assert_eq!(pool.check_on_borrow(), Some(Duration::ZERO));
    /// assert_eq!(
    ///     Pool::builder().build(Manager)?.check_on_borrow(),
    ///     Some(stickypool::DEFAULT_CHECK_ON_BORROW),
    /// );
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn check_on_borrow(mut self, after: Option<Duration>) -> Self {
        self.check_on_borrow = after;
        self
    }

    /// Whether a returned connection is checked with `is_valid` (beside `has_broken`,
    /// which always runs). Default: false.
    pub fn test_on_check_in(mut self, test: bool) -> Self {
        self.test_on_check_in = test;
        self
    }

    /// Idle connections are closed after this long unused. Checked at each
    /// `reap_interval`. Default: 10 minutes.
    ///
    /// In stickypool's API only idle connections beyond `min_idle` are closed
    /// (HikariCP's meaning), so a quiet pool keeps its connections and their warm
    /// caches; `max_lifetime` still retires them. In [`compat`](crate::compat) any idle
    /// connection is closed and the pool opens fresh ones to keep `min_idle` (r2d2's
    /// meaning): a quiet pool of 10 with the default 10-minute timeout then closes and
    /// reopens all 10 every 10 minutes, 60 reconnects an hour that serve nothing, each
    /// a TLS handshake and a server process on PostgreSQL (`tests/r2d2_parity.rs` and
    /// `tests/lifecycle.rs` check both meanings).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Connections are retired after this age, less up to 2.5% of random jitter so
    /// connections opened together are not all replaced together. An in-use connection
    /// past its lifetime is closed when it comes back. Default: 30 minutes.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// How often the housekeeper closes idle and expired connections and refills
    /// `min_idle`. Default: 30 s. At least 10 ms; beyond 100 years it means never.
    pub fn reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }

    /// Idle connections are pinged (`is_valid`) at this interval; those that fail are
    /// closed and replaced. Default: off. At least 10 ms.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// The "fake close": what is done to a connection's session when it comes back
    /// (commit, roll back, reset). If it fails the connection is closed. Default:
    /// [`ResetAction::Keep`].
    pub fn reset_on_return(mut self, action: ResetAction) -> Self {
        self.reset_on_return = action;
        self
    }

    /// A connection held longer than this is reported once at `warn`, with the
    /// borrowing thread and a backtrace of where it was borrowed, and again at `info`
    /// when it comes back. Capturing the backtrace costs microseconds per borrow, so
    /// this is for finding leaks, not for the hot path. Default: off.
    pub fn leak_detection_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.leak_detection_threshold = threshold;
        self
    }

    /// When this many threads already wait, `get` fails at once with
    /// [`Error::TooManyWaiters`] (load shedding). A borrow that was admitted keeps its
    /// place until it is served or times out. Default: unbounded. `Some(0)` is an
    /// error: connections are opened for waiting threads, so a pool that admits no
    /// waiter could never open one.
    pub fn max_waiters(mut self, max: Option<usize>) -> Self {
        self.max_waiters = max;
        self
    }

    /// How long a thread may wait for a connection before fairness takes over: from
    /// then on, a returned connection is handed to the thread that has waited longest,
    /// instead of going to whichever thread takes it first. Default:
    /// `Some(`[`DEFAULT_FAIR_AFTER`]`)` (2 ms).
    ///
    /// Before that point a returning thread that borrows again at once keeps its
    /// connection, which costs no context switch; a hand-off costs one (the giver now
    /// waits, and the waiter has to be scheduled). So this trades the tail against the
    /// throughput under contention: the p99 wait sits just above the bound.
    /// `Some(Duration::ZERO)` is strict first-come, first-served: every return while
    /// threads wait is a hand-off. A longer bound hands off less often and waits longer
    /// in the tail; the contended benchmarks in `docs/benchmarks.md` compare the
    /// default with 50 ms against r2d2 and against a plain mutex per connection. `None`
    /// turns fairness off: returned connections are always competed for, and waits are
    /// bounded only by `connection_timeout`.
    ///
    /// The bound grows with the queue: when the waiters in line would take longer
    /// than this to be served in order at the current pace of returns, the oldest may
    /// wait three times that drain time (at most eight times this setting) before
    /// returns go to it. Otherwise a long queue on a busy machine, where a waiter's
    /// turn comes after about this long anyway, would make every return a hand-off.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// // A batch tool: throughput first, but no worker starves for long.
    /// let pool = Pool::builder()
    ///     .max_size(8)
    ///     .fair_after(Some(Duration::from_millis(50)))
    ///     .build(Manager)?;
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn fair_after(mut self, bound: Option<Duration>) -> Self {
        self.fair_after = bound;
        self
    }

    /// The circuit breaker, with its grace period: once the backend is known to be
    /// down (three connects in a row failed and the pool has no open connection) and
    /// the outage has lasted `grace`, `get` fails at once with [`Error::Unavailable`].
    /// A pool that has never connected fails at once, without the grace: a wrong
    /// address or password is reported in milliseconds. While the backend is down the
    /// pool probes it with one connect at a time (backoff with jitter, at most a second
    /// apart; every 50 ms while borrowers wait out the grace) instead of retrying every
    /// connection; the first success closes the breaker and refills `min_idle`.
    /// Default: `Some(`[`DEFAULT_OUTAGE_GRACE`]`)`, 1 s. `None` turns it off: `get`
    /// waits its timeout, as r2d2's does, and every connection retries on its own.
    ///
    /// Thread-based services want it: without it, every request thread blocks for the
    /// whole `connection_timeout` on a database that refuses in microseconds, and the
    /// server's worker threads are all stuck at once. The grace is for the outages that
    /// end by themselves: a database restart (half a second in the restart tests),
    /// a failover, a blip; borrowers wait through them, bounded by their own timeout,
    /// and are served when the backend is back.
    pub fn circuit_breaker(mut self, grace: Option<Duration>) -> Self {
        self.circuit_breaker = grace;
        self
    }

    /// Hooks run when connections are opened, returned and closed.
    ///
    /// It takes a boxed [`CustomizeConnection`] (or, with the feature `r2d2`, a boxed
    /// `r2d2::CustomizeConnection`, as r2d2's builder does): `K` is inferred.
    pub fn connection_customizer<K>(
        mut self,
        customizer: impl IntoCustomizer<M::Connection, M::Error, K>,
    ) -> Self {
        self.customizer = Some(customizer.into_customizer());
        self
    }

    /// Receives acquire, release, checkout, checkin and timeout events.
    pub fn event_handler(mut self, handler: Box<dyn HandleEvent>) -> Self {
        self.event_handler = Some(handler);
        self
    }

    /// Receives the errors the pool meets on its own (failed connects, checks and
    /// resets), r2d2's setting. Default: [`LoggingErrorHandler`].
    pub fn error_handler(mut self, handler: Box<dyn HandleError<M::Error>>) -> Self {
        self.error_handler = Some(handler);
        self
    }

    /// How long one check (`is_valid` on borrow, on return, or by the keepalive) may
    /// block, HikariCP's setting: passed to
    /// [`ManageConnection::is_valid_within`], which the ready managers honour with a
    /// socket timeout. A borrow's check gets at most what the borrow has left of its
    /// timeout, so `get` on a hung server returns within `connection_timeout`
    /// (`a_borrow_check_gets_no_more_than_the_borrow_has_left`); an r2d2 manager, whose
    /// `is_valid` cannot be bounded, blocks as long as its driver lets it (bound it with
    /// the driver's own socket timeouts, or use a ready manager). A connection whose
    /// check fails or times out is closed. Default:
    /// `Some(`[`DEFAULT_VALIDATION_TIMEOUT`]`)`, 5 s. `None` leaves the driver's own
    /// timeouts in charge.
    pub fn validation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.validation_timeout = timeout;
        self
    }

    /// The scheduler the background jobs run on. Default: one scheduler shared by
    /// every pool in the process.
    pub fn thread_pool(mut self, thread_pool: Arc<ScheduledThreadPool>) -> Self {
        self.thread_pool = Some(thread_pool);
        self
    }

    /// Builds the pool and waits until `min_idle` connections are open. The same
    /// inputs give the same outcome: a connect that fails among successes is retried
    /// (with backoff) and never fails the build; a backend that consistently refuses
    /// (no connect has succeeded and one connection's first three attempts failed,
    /// about 60 ms) fails it at once with [`Error::Connect`] and the driver's error,
    /// so a service fails at start rather than on its first request; otherwise it
    /// fails with [`Error::Timeout`] (and the last connect error) if `min_idle` are
    /// not open within `connection_timeout`.
    pub fn build(self, manager: M) -> Result<P, Error>
    where
        P: From<Pool<M>>,
    {
        let config = self.validate()?;
        check_reset(&config, &manager)?;
        let pool = Pool::from_config(config, manager);
        pool.wait_for_min_idle()?;
        Ok(P::from(pool))
    }

    /// Builds the pool without waiting for any connection; they are opened in the
    /// background.
    ///
    /// # Panics
    ///
    /// If a setting is invalid; [`build`](Builder::build) returns that as an error.
    pub fn build_unchecked(self, manager: M) -> P
    where
        P: From<Pool<M>>,
    {
        let config = self.validate().and_then(|config| {
            check_reset(&config, &manager)?;
            Ok(config)
        });
        match config {
            Ok(config) => P::from(Pool::from_config(config, manager)),
            Err(e) => panic!("{e}"),
        }
    }

    pub(crate) fn validate(self) -> Result<Config<M>, Error> {
        self.check_settings()?;
        let min_idle = self.min_idle.unwrap_or(self.max_size);
        let id_name = self.name.filter(|n| !n.is_empty());
        let observed = self.leak_detection_threshold.is_some() || self.event_handler.is_some();
        let resets = self.reset_on_return != ResetAction::Keep
            || self.customizer.is_some()
            || self.test_on_check_in;
        let (test_on_check_out, validation_bypass) = match self.check_on_borrow {
            Some(after) => (true, after),
            None => (false, Duration::ZERO),
        };
        Ok(Config {
            observed,
            resets,
            name: id_name.unwrap_or_default(),
            max_size: self.max_size,
            min_idle: AtomicU32::new(min_idle),
            min_idle_setting: crate::sync::Mutex::new(self.min_idle),
            idle_timeout_spares_min_idle: self.idle_timeout_spares_min_idle,
            connection_timeout: self.connection_timeout,
            test_on_check_out,
            validation_bypass_ms: crate::clock::millis(validation_bypass),
            test_on_check_in: self.test_on_check_in,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            reap_interval: self.reap_interval.min(LONGEST_PERIOD),
            keepalive_interval: self.keepalive_interval.map(|i| i.min(LONGEST_PERIOD)),
            reset_on_return: self.reset_on_return,
            leak_detection_threshold: self.leak_detection_threshold,
            max_waiters: self.max_waiters,
            fair_after: self.fair_after.unwrap_or(Duration::MAX),
            circuit_breaker: self.circuit_breaker,
            customizer: self.customizer,
            event_handler: self.event_handler,
            error_handler: self
                .error_handler
                .unwrap_or_else(|| Box::new(LoggingErrorHandler)),
            validation_timeout: self.validation_timeout.unwrap_or(Duration::MAX),
            thread_pool: self
                .thread_pool
                .unwrap_or_else(crate::engine::housekeeper::shared_scheduler),
        })
    }

    /// The range checks of `build`, without building (the config file runs them when
    /// it is parsed).
    pub(crate) fn check_settings(&self) -> Result<(), Error> {
        if self.max_size == 0 {
            return Err(Error::config("max_size", "must be at least 1"));
        }
        if self.max_size > MAX_POOL_SIZE {
            return Err(Error::config(
                "max_size",
                format!("must be at most {MAX_POOL_SIZE}, got {}", self.max_size),
            ));
        }
        let min_idle = self.min_idle.unwrap_or(self.max_size);
        if min_idle > self.max_size {
            return Err(Error::config(
                "min_idle",
                format!(
                    "must not exceed max_size ({}), got {min_idle}",
                    self.max_size
                ),
            ));
        }
        positive("connection_timeout", Some(self.connection_timeout))?;
        positive("validation_timeout", self.validation_timeout)?;
        positive("reap_interval", Some(self.reap_interval))?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("max_lifetime", self.max_lifetime)?;
        positive("keepalive_interval", self.keepalive_interval)?;
        positive("leak_detection_threshold", self.leak_detection_threshold)?;
        at_least_min_interval("reap_interval", Some(self.reap_interval))?;
        at_least_min_interval("keepalive_interval", self.keepalive_interval)?;
        if self.max_waiters == Some(0) {
            return Err(Error::config(
                "max_waiters",
                "must be at least 1 (None means unbounded): a pool that admits no waiter \
                 never opens a connection",
            ));
        }
        Ok(())
    }
}

/// `reset_on_return` needs a manager whose `reset` does something.
fn check_reset<M: ManageConnection>(config: &Config<M>, manager: &M) -> Result<(), Error> {
    if config.reset_on_return == ResetAction::Keep || manager.can_reset() {
        return Ok(());
    }
    Err(Error::config(
        "reset_on_return",
        format!(
            "is `{}`, but this manager cannot reset a connection (its `can_reset` is \
             false), so connections would come back as the borrower left them; use a \
             manager that resets, `backends::r2d2::WithReset` for an r2d2 manager, or \
             `ResetAction::Keep` with a customizer's `on_check_in`",
            config.reset_on_return
        ),
    ))
}

fn at_least_min_interval(field: &'static str, value: Option<Duration>) -> Result<(), Error> {
    match value {
        Some(d) if d < MIN_INTERVAL => Err(Error::config(
            field,
            format!("must be at least {MIN_INTERVAL:?}, got {d:?}"),
        )),
        _ => Ok(()),
    }
}

fn positive(field: &'static str, value: Option<Duration>) -> Result<(), Error> {
    match value {
        Some(d) if d.is_zero() => Err(Error::config(
            field,
            "must be greater than zero (use None to turn it off where that is allowed)",
        )),
        _ => Ok(()),
    }
}
