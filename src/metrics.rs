//! Pool metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): plug in any recorder (`metrics-exporter-prometheus`, StatsD, ...) and
//! every pool's state and counters appear, labelled `pool = <name>`.
//!
//! Publishing never happens on the borrow path. The pool keeps its counters where they
//! cost nothing to update (per slot, summed on read) and this module reads them
//! ([`Pool::state`], [`Pool::stats`]) when asked: call [`publish`] (or
//! [`Pools::publish_metrics`](crate::Pools::publish_metrics)) from the handler that
//! serves the scrape, or let [`publish_every`] do it on the pool's background
//! scheduler.
//!
//! ```
//! # use stickypool::{ManageConnection, Pool};
//! # #[derive(Debug)] struct Manager;
//! # impl ManageConnection for Manager {
//! #     type Connection = ();
//! #     type Error = std::io::Error;
//! #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn has_broken(&self, _: &mut ()) -> bool { false }
//! # }
//! use std::time::Duration;
//!
//! let pool = Pool::builder().name("main").build(Manager)?;
//! // Every 10 s, until the handle is dropped or the pool closes.
//! let _publisher = stickypool::metrics::publish_every(pool.clone(), Duration::from_secs(10));
//! // Or on demand, e.g. right before rendering a scrape:
//! stickypool::metrics::publish(&pool);
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! # Names
//!
//! Modelled on HikariCP's Prometheus names (`hikaricp_connections_active`, ...), in
//! Prometheus base units (seconds). Every series has the label `pool`. OpenTelemetry's
//! `db.client.connection.*` names instead: [`set_names`].
//!
//! | Name | Type | Meaning |
//! |---|---|---|
//! | `stickypool_connections` | gauge | open connections, idle or in use |
//! | `stickypool_idle_connections` | gauge | open and not borrowed |
//! | `stickypool_in_use_connections` | gauge | borrowed |
//! | `stickypool_pending_connections` | gauge | being opened |
//! | `stickypool_waiters` | gauge | threads waiting for a connection |
//! | `stickypool_max_connections` | gauge | `max_size` |
//! | `stickypool_borrows_total` | counter | successful borrows |
//! | `stickypool_waits_total` | counter | borrows that had to wait |
//! | `stickypool_timeouts_total` | counter | borrows that timed out |
//! | `stickypool_rejected_total` | counter | borrows refused by `max_waiters` |
//! | `stickypool_unavailable_total` | counter | borrows failed at once because the backend was down (`Error::Unavailable`) |
//! | `stickypool_connections_created_total` | counter | connections opened |
//! | `stickypool_connect_failures_total` | counter | failed attempts to open one |
//! | `stickypool_validation_failures_total` | counter | failed `is_valid` on borrow or return |
//! | `stickypool_connections_closed_total{reason}` | counter | closed, by [`CloseReason`](crate::CloseReason) (`idle`, `lifetime`, `broken`, `reset_failed`, `keepalive_failed`, `detached`, `discarded`, `pool_closed`, `evicted`, `retired`) |
//! | `stickypool_leaks_total` | counter | connections reported as leaked |
//! | `stickypool_recovered_after_panic_total` | counter | connections rolled back and kept after their borrower panicked |
//! | `stickypool_hook_panics_total` | counter | calls into user code (manager, customizer, event handler) that panicked |
//! | `stickypool_wait_seconds` | histogram | how long the borrows that waited waited |
//! | `stickypool_connect_seconds` | histogram | how long opening a connection took |
//! | `stickypool_hold_seconds` | histogram | how long connections were held (ms resolution, powers of two) |
//!
//! Counters are published as absolute values (`Counter::absolute`), since the pool
//! already keeps the totals.
//!
//! # Histograms
//!
//! The pool records these durations itself, lock-free and off the borrow path (waits
//! and connects are slow paths; hold times are counted per slot, in powers of two of
//! milliseconds, only for holds of a millisecond or more). A publish hands the
//! recorder the samples since the previous publish, bucket by bucket: one
//! `Histogram::record_many` per non-empty bucket at the bucket's middle, so a busy pool
//! costs a few dozen calls per publish, not one per borrow, and two publishers (a
//! `publish_every` and a scrape-time `publish`) never count a sample twice. The
//! exporter then keeps real histograms: give it [`BUCKETS`] (or your own) for the
//! `stickypool_` prefix, and Prometheus gets cumulative `_bucket{le}`, `_sum` and
//! `_count` series in one family, which aggregate across instances:
//!
//! ```promql
//! histogram_quantile(0.99, sum by (le) (rate(stickypool_wait_seconds_bucket{pool="main"}[5m])))
//! ```
//!
//! `tests/metrics.rs` renders the exposition with `metrics-exporter-prometheus` and runs
//! `promtool check metrics` on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use parking_lot::Mutex;
use scheduled_thread_pool::JobHandle;

use crate::engine::{Shared, State};
use crate::manager::ManageConnection;
use crate::pool::Pool;
use crate::stats::{Histogram, Stats};

/// The histograms (wait, connect, hold) at the previous publish, by pool id: each
/// publish hands the recorder only the samples since.
static PREVIOUS: Mutex<Option<HashMap<u64, [Histogram; 3]>>> = Mutex::new(None);

/// Bucket bounds (seconds) that suit the pool's histograms, for the exporter: 10 µs to
/// 60 s. With `metrics-exporter-prometheus`:
/// `PrometheusBuilder::new().set_buckets_for_metric(Matcher::Prefix("stickypool_".into()), BUCKETS)`.
/// Without buckets the exporter renders these histograms as summaries.
pub const BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Publishes `pool`'s current state and counters to the installed recorder.
pub fn publish<M: ManageConnection>(pool: &Pool<M>) {
    publish_parts(
        pool.id(),
        pool.name(),
        pool.state(),
        pool.stats(),
        pool.is_closed(),
    );
}

/// Publishes the same for a pool known by its shared part (the scheduled job).
fn publish_shared<M: ManageConnection>(shared: &Shared<M>) {
    publish_parts(
        shared.id(),
        shared.name(),
        shared.state(),
        shared.stats(),
        shared.is_closed(),
    );
}

pub(crate) fn publish_parts(id: u64, name: &str, state: State, stats: Stats, closed: bool) {
    let windows = {
        let mut previous = PREVIOUS.lock();
        let map = previous.get_or_insert_with(HashMap::new);
        let now = [
            stats.wait_time.clone(),
            stats.connect_time.clone(),
            stats.hold_time.clone(),
        ];
        let windows = match map.get(&id) {
            Some(before) => [0, 1, 2].map(|i| now[i].since(&before[i])),
            None => now.clone(),
        };
        if closed {
            map.remove(&id);
        } else {
            map.insert(id, now);
        }
        windows
    };
    match names() {
        Names::Stickypool => publish_stickypool_names(name, state, &stats, &windows),
        Names::OpenTelemetry => publish_opentelemetry_names(name, state, &stats, &windows),
    }
}

fn publish_stickypool_names(name: &str, state: State, stats: &Stats, windows: &[Histogram; 3]) {
    describe();
    let label = || [("pool", name.to_owned())];
    let g = |key: &'static str, value: u32| gauge!(key, &label()).set(f64::from(value));
    g("stickypool_connections", state.connections);
    g("stickypool_idle_connections", state.idle_connections);
    g("stickypool_in_use_connections", state.in_use);
    g("stickypool_pending_connections", state.pending);
    g("stickypool_waiters", state.waiters);
    g("stickypool_max_connections", state.max_size);

    let c = |key: &'static str, value: u64| counter!(key, &label()).absolute(value);
    c("stickypool_borrows_total", stats.borrows);
    c("stickypool_waits_total", stats.waits);
    c("stickypool_timeouts_total", stats.timeouts);
    c("stickypool_rejected_total", stats.rejected);
    c("stickypool_unavailable_total", stats.unavailable);
    c(
        "stickypool_connections_created_total",
        stats.connections_created,
    );
    c("stickypool_connect_failures_total", stats.connect_failures);
    c(
        "stickypool_validation_failures_total",
        stats.validation_failures,
    );
    c("stickypool_leaks_total", stats.leaks_reported);
    c(
        "stickypool_recovered_after_panic_total",
        stats.recovered_after_panic,
    );
    c("stickypool_hook_panics_total", stats.hook_panics);
    for (reason, count) in stats.closed.iter() {
        counter!(
            "stickypool_connections_closed_total",
            "pool" => name.to_owned(),
            "reason" => reason.as_str()
        )
        .absolute(count);
    }
    let metrics = [
        "stickypool_wait_seconds",
        "stickypool_connect_seconds",
        "stickypool_hold_seconds",
    ];
    for (metric, window) in metrics.into_iter().zip(windows) {
        record_window(metric, ("pool", name.to_owned()), window);
    }
}

/// The attribute naming the pool in OpenTelemetry's conventions.
const OTEL_POOL: &str = "db.client.connection.pool.name";

fn publish_opentelemetry_names(name: &str, state: State, stats: &Stats, windows: &[Histogram; 3]) {
    describe_opentelemetry();
    let label = || [(OTEL_POOL, name.to_owned())];
    for (connection_state, count) in [("idle", state.idle_connections), ("used", state.in_use)] {
        gauge!(
            "db.client.connection.count",
            OTEL_POOL => name.to_owned(),
            "db.client.connection.state" => connection_state
        )
        .set(f64::from(count));
    }
    let g = |key: &'static str, value: u32| gauge!(key, &label()).set(f64::from(value));
    // The pool keeps every connection it may open idle: its idle maximum is max_size.
    g("db.client.connection.idle.max", state.max_size);
    g("db.client.connection.idle.min", state.min_idle);
    g("db.client.connection.max", state.max_size);
    g("db.client.connection.pending_requests", state.waiters);
    counter!("db.client.connection.timeouts", &label()).absolute(stats.timeouts);
    let metrics = [
        "db.client.connection.wait_time",
        "db.client.connection.create_time",
        "db.client.connection.use_time",
    ];
    for (metric, window) in metrics.into_iter().zip(windows) {
        record_window(metric, (OTEL_POOL, name.to_owned()), window);
    }
}

/// Hands the samples of `window` to the recorder's histogram: one `record_many` per
/// bucket that has any (at most a few dozen per publish, however many borrows), at the
/// bucket's middle, so the recorder's own buckets and sum are within the pool's 3%.
fn record_window(name: &'static str, pool: (&'static str, String), window: &Histogram) {
    let histogram = histogram!(name, pool.0 => pool.1);
    let mut lower = Duration::ZERO;
    for (upper, count) in window.buckets() {
        if count > 0 {
            let middle = (lower + upper) / 2;
            histogram.record_many(
                middle.as_secs_f64(),
                usize::try_from(count).unwrap_or(usize::MAX),
            );
        }
        lower = upper;
    }
}

/// Registers descriptions and units with the recorder: on every publish (a few calls),
/// so a recorder installed after the first publish, or a thread's local one, has them
/// too.
fn describe() {
    let gauges = [
        ("stickypool_connections", "Open connections, idle or in use"),
        (
            "stickypool_idle_connections",
            "Open connections not borrowed",
        ),
        ("stickypool_in_use_connections", "Borrowed connections"),
        ("stickypool_pending_connections", "Connections being opened"),
        ("stickypool_waiters", "Threads waiting for a connection"),
        ("stickypool_max_connections", "The pool's max_size"),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, Unit::Count, help);
    }
    let counters = [
        ("stickypool_borrows_total", "Successful borrows"),
        ("stickypool_waits_total", "Borrows that had to wait"),
        ("stickypool_timeouts_total", "Borrows that timed out"),
        (
            "stickypool_rejected_total",
            "Borrows refused by max_waiters",
        ),
        ("stickypool_connections_created_total", "Connections opened"),
        (
            "stickypool_connect_failures_total",
            "Failed attempts to open a connection",
        ),
        (
            "stickypool_validation_failures_total",
            "Connections that failed is_valid on borrow or return",
        ),
        (
            "stickypool_connections_closed_total",
            "Connections closed, by reason",
        ),
        ("stickypool_leaks_total", "Connections reported as leaked"),
        (
            "stickypool_recovered_after_panic_total",
            "Connections rolled back and kept after their borrower panicked",
        ),
        (
            "stickypool_unavailable_total",
            "Borrows failed at once because the backend was down",
        ),
        (
            "stickypool_hook_panics_total",
            "Calls into user code that panicked",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    let seconds = [
        (
            "stickypool_wait_seconds",
            "How long borrows that waited waited for a connection",
        ),
        (
            "stickypool_connect_seconds",
            "How long opening a connection took",
        ),
        (
            "stickypool_hold_seconds",
            "How long connections were held (millisecond resolution)",
        ),
    ];
    for (name, help) in seconds {
        describe_histogram!(name, Unit::Seconds, help);
    }
}

/// The OpenTelemetry names' descriptions and units.
fn describe_opentelemetry() {
    let counts = [
        (
            "db.client.connection.count",
            "The number of connections that are currently in the state described by the state attribute",
        ),
        (
            "db.client.connection.idle.max",
            "The maximum number of idle open connections allowed",
        ),
        (
            "db.client.connection.idle.min",
            "The minimum number of idle open connections allowed",
        ),
        (
            "db.client.connection.max",
            "The maximum number of open connections allowed",
        ),
        (
            "db.client.connection.pending_requests",
            "The number of current pending requests for an open connection",
        ),
    ];
    for (name, help) in counts {
        describe_gauge!(name, Unit::Count, help);
    }
    describe_counter!(
        "db.client.connection.timeouts",
        Unit::Count,
        "The number of connection timeouts that have occurred trying to obtain a connection from the pool"
    );
    let seconds = [
        (
            "db.client.connection.create_time",
            "The time it took to create a new connection",
        ),
        (
            "db.client.connection.wait_time",
            "The time it took to obtain an open connection from the pool, for the borrows that waited",
        ),
        (
            "db.client.connection.use_time",
            "The time between borrowing a connection and returning it to the pool",
        ),
    ];
    for (name, help) in seconds {
        describe_histogram!(name, Unit::Seconds, help);
    }
}

/// The names metrics are published under; see [`set_names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Names {
    /// `stickypool_*`, the table in the [module documentation](self) (the default).
    #[default]
    Stickypool,
    /// OpenTelemetry's semantic conventions for database client connection pools,
    /// `db.client.connection.*`: see [`set_names`].
    OpenTelemetry,
}

/// `Names` as a number, process-wide.
static NAMES: AtomicU8 = AtomicU8::new(0);

/// Chooses the names every later publish in the process uses. With
/// [`Names::OpenTelemetry`], the conventions' connection pool metrics (experimental in
/// the conventions, so their names may still change there), each with the attribute
/// `db.client.connection.pool.name`:
///
/// | Name | Type | From |
/// |---|---|---|
/// | `db.client.connection.count{db.client.connection.state}` | gauge | idle connections (`idle`) and borrowed ones (`used`) |
/// | `db.client.connection.idle.max` | gauge | `max_size` (every connection the pool may open can be idle) |
/// | `db.client.connection.idle.min` | gauge | `min_idle` |
/// | `db.client.connection.max` | gauge | `max_size` |
/// | `db.client.connection.pending_requests` | gauge | threads waiting for a connection |
/// | `db.client.connection.timeouts` | counter | borrows that timed out |
/// | `db.client.connection.create_time` | histogram (s) | opening a connection |
/// | `db.client.connection.wait_time` | histogram (s) | the borrows that had to wait (one served at once waits no time worth recording) |
/// | `db.client.connection.use_time` | histogram (s) | how long connections were held |
///
/// The `metrics` facade cannot carry the conventions' `{connection}` units; the
/// counts are plain counts. The counters and histograms the conventions do not name
/// (borrows, connect failures, closes by reason, ...) are published only under the
/// `stickypool_*` names.
///
/// ```
/// use stickypool::metrics::{Names, set_names};
/// set_names(Names::OpenTelemetry);
/// # set_names(Names::Stickypool);
/// ```
pub fn set_names(names: Names) {
    NAMES.store(names as u8, Ordering::Relaxed);
}

fn names() -> Names {
    match NAMES.load(Ordering::Relaxed) {
        1 => Names::OpenTelemetry,
        _ => Names::Stickypool,
    }
}

/// Publishes a pool's metrics at an interval; see [`publish_every`]. Dropping it stops
/// the publishing.
#[must_use = "publishing stops when the handle is dropped"]
#[derive(Debug)]
pub struct Publisher {
    job: Arc<Mutex<Option<JobHandle>>>,
}

impl Publisher {
    /// Stops publishing (as dropping the handle does).
    pub fn stop(&self) {
        if let Some(job) = self.job.lock().take() {
            job.cancel();
        }
    }

    /// Whether it still publishes: not stopped, and the pool not closed.
    pub fn is_running(&self) -> bool {
        self.job.lock().is_some()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Publishes `pool`'s metrics now and then every `interval` (at least 10 ms), as a job
/// on the pool's background scheduler (no thread of its own). Stops when the returned
/// handle is dropped or the pool closes. The job holds no handle to the pool, so it
/// does not keep the pool open: pass a clone, as in `publish_every(pool.clone(), ..)`.
pub fn publish_every<M: ManageConnection>(pool: Pool<M>, interval: Duration) -> Publisher {
    let interval = interval.max(Duration::from_millis(10));
    publish(&pool);
    let weak: Weak<Shared<M>> = pool.downgrade();
    let scheduler = pool.shared_scheduler();
    drop(pool);
    let slot: Arc<Mutex<Option<JobHandle>>> = Arc::new(Mutex::new(None));
    let job_slot = Arc::downgrade(&slot);
    let job_weak = weak.clone();
    let handle = scheduler.execute_at_fixed_rate(interval, interval, move || {
        match job_weak.upgrade() {
            Some(shared) if !shared.is_closed() => publish_shared(&shared),
            gone => {
                // One last publish shows the closed pool's final numbers.
                if let Some(shared) = gone {
                    publish_shared(&shared);
                }
                if let Some(slot) = job_slot.upgrade()
                    && let Some(job) = slot.lock().take()
                {
                    job.cancel();
                }
            }
        }
    });
    // The job may already have seen the pool closed, before the handle was stored.
    let closed = weak.upgrade().is_none_or(|s| s.is_closed());
    if closed {
        handle.cancel();
    } else {
        *slot.lock() = Some(handle);
    }
    Publisher { job: slot }
}

#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
impl crate::registry::Pools {
    /// Publishes every pool's metrics (see [`publish`]).
    pub fn publish_metrics(&self) {
        for entry in self.entries() {
            let pool = &entry.pool;
            publish_parts(
                pool.id(),
                pool.name(),
                pool.state(),
                pool.stats(),
                pool.is_closed(),
            );
        }
    }
}
