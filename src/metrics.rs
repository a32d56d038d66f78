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
//! Prometheus base units (seconds). Every series has the label `pool`.
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
//! | `stickypool_connections_created_total` | counter | connections opened |
//! | `stickypool_connect_failures_total` | counter | failed attempts to open one |
//! | `stickypool_validation_failures_total` | counter | failed `is_valid` on borrow or return |
//! | `stickypool_connections_closed_total{reason}` | counter | closed, by [`CloseReason`](crate::CloseReason) (`idle`, `lifetime`, `broken`, `reset_failed`, `keepalive_failed`, `detached`, `discarded`, `pool_closed`) |
//! | `stickypool_leaks_total` | counter | connections reported as leaked |
//! | `stickypool_wait_seconds{quantile}` | gauge | wait for a connection, `quantile` = `0.5`, `0.99`, `1` |
//! | `stickypool_wait_seconds_count` | counter | borrows measured (all of them) |
//! | `stickypool_wait_seconds_sum` | gauge | total time waited |
//! | `stickypool_connect_seconds{quantile}` | gauge | time to open a connection |
//! | `stickypool_connect_seconds_count` | counter | connections opened (timed) |
//! | `stickypool_connect_seconds_sum` | gauge | total time spent opening |
//! | `stickypool_hold_seconds_total` | gauge | total time connections were held |
//!
//! Counters are published as absolute values (`Counter::absolute`), since the pool
//! already keeps the totals.
//!
//! # Why wait and connect times are summaries, not histograms
//!
//! The pool records these durations in log-linear buckets, lock-free. The facade's
//! `histogram!` takes individual samples, so publishing the buckets as a histogram
//! would mean replaying every sample since the last publish: one call per borrow,
//! millions per interval on a busy pool, for the exporter to bucket them again. So
//! they are published as a Prometheus *summary*: quantile gauges, plus `_count` and
//! `_sum`. The quantiles cover the samples **since the previous publish** (the bucket
//! counts' difference, see [`Histogram::since`](crate::Histogram::since)), so they
//! describe the last interval rather than the whole uptime; an interval without
//! samples leaves them unchanged. They are bucket upper bounds, at most about 3% above
//! the true value. The wait quantiles cover the borrows that waited only. Averages over any window come from `rate(_sum) / rate(_count)`.
//!
//! `_sum` and `stickypool_hold_seconds_total` are gauges because the facade's counters
//! count in integers and these are fractional seconds; they only grow, so `rate()`
//! works on them as on a counter.

use std::collections::HashMap;
use std::sync::{Arc, Once, Weak};
use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use parking_lot::Mutex;
use scheduled_thread_pool::JobHandle;

use crate::engine::{Shared, State};
use crate::manager::ManageConnection;
use crate::pool::Pool;
use crate::stats::{Histogram, Stats};

/// Quantiles published for wait and connect times.
const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")];

/// The histograms at the previous publish, by pool id, for the per-interval quantiles.
static PREVIOUS: Mutex<Option<HashMap<u64, (Histogram, Histogram)>>> = Mutex::new(None);

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
    for (reason, count) in stats.closed.iter() {
        counter!(
            "stickypool_connections_closed_total",
            "pool" => name.to_owned(),
            "reason" => reason.as_str()
        )
        .absolute(count);
    }
    gauge!("stickypool_hold_seconds_total", &label()).set(stats.hold_time_total.as_secs_f64());

    let (wait_window, connect_window) = {
        let mut previous = PREVIOUS.lock();
        let map = previous.get_or_insert_with(HashMap::new);
        let windows = match map.get(&id) {
            Some((wait, connect)) => (
                stats.wait_time.since(wait),
                stats.connect_time.since(connect),
            ),
            None => (stats.wait_time.clone(), stats.connect_time.clone()),
        };
        if closed {
            map.remove(&id);
        } else {
            map.insert(id, (stats.wait_time.clone(), stats.connect_time.clone()));
        }
        windows
    };
    summary(
        name,
        "stickypool_wait_seconds",
        &stats.wait_time,
        &wait_window,
    );
    summary(
        name,
        "stickypool_connect_seconds",
        &stats.connect_time,
        &connect_window,
    );
}

fn summary(pool: &str, base: &'static str, total: &Histogram, window: &Histogram) {
    let (count, sum) = match base {
        "stickypool_wait_seconds" => (
            "stickypool_wait_seconds_count",
            "stickypool_wait_seconds_sum",
        ),
        _ => (
            "stickypool_connect_seconds_count",
            "stickypool_connect_seconds_sum",
        ),
    };
    counter!(count, "pool" => pool.to_owned()).absolute(total.count());
    gauge!(sum, "pool" => pool.to_owned()).set(total.sum().as_secs_f64());
    if window.count() == 0 {
        return;
    }
    for (q, label) in QUANTILES {
        gauge!(base, "pool" => pool.to_owned(), "quantile" => label)
            .set(window.quantile(q).as_secs_f64());
    }
}

/// Registers descriptions and units with the recorder, once per process.
fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
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
            ("stickypool_wait_seconds_count", "Borrows timed"),
            ("stickypool_connect_seconds_count", "Connection opens timed"),
        ];
        for (name, help) in counters {
            describe_counter!(name, Unit::Count, help);
        }
        let seconds = [
            (
                "stickypool_wait_seconds",
                "Wait for a connection, per publish interval (bucket upper bound)",
            ),
            ("stickypool_wait_seconds_sum", "Total time waited"),
            (
                "stickypool_connect_seconds",
                "Time to open a connection, per publish interval (bucket upper bound)",
            ),
            ("stickypool_connect_seconds_sum", "Total time spent opening"),
            (
                "stickypool_hold_seconds_total",
                "Total time connections were held",
            ),
        ];
        for (name, help) in seconds {
            describe_gauge!(name, Unit::Seconds, help);
        }
    });
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
