//! Metrics through the `metrics` facade (feature `metrics`).
#![cfg(feature = "metrics")]

mod common;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::{FakeManager, SOON, wait_until};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use stickypool::{Pool, Pools};

/// The global recorder, for the publishers that run on the scheduler's threads. Its
/// snapshots reset the values they read, so the tests using it take turns.
fn global() -> (&'static Snapshotter, MutexGuard<'static, ()>) {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("install the recorder");
        snapshotter
    });
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    (snapshotter, turn)
}

type Metrics = Vec<(MetricKind, String, Vec<(String, String)>, DebugValue)>;

/// What `snapshotter` saw for the series labelled `pool`.
fn metrics_of(snapshotter: &Snapshotter, pool: &str) -> Metrics {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value): (CompositeKey, _, _, _)| {
            let (kind, key) = key.into_parts();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect::<Vec<_>>();
            (kind, key.name().to_owned(), labels, value)
        })
        .filter(|(_, _, labels, _)| labels.iter().any(|(k, v)| k == "pool" && v == pool))
        .collect()
}

/// Runs `f` with a recorder of its own (this thread only) and returns what it recorded
/// for `pool`.
fn recorded(pool: &str, f: impl FnOnce()) -> Metrics {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    metrics_of(&snapshotter, pool)
}

fn value<'m>(metrics: &'m Metrics, name: &str, extra: &[(&str, &str)]) -> Option<&'m DebugValue> {
    metrics
        .iter()
        .find(|(_, n, labels, _)| {
            n == name
                && extra
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, _, v)| v)
}

fn gauge(metrics: &Metrics, name: &str) -> f64 {
    match value(metrics, name, &[]) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name}: expected a gauge, got {other:?}"),
    }
}

fn counter(metrics: &Metrics, name: &str, extra: &[(&str, &str)]) -> u64 {
    match value(metrics, name, extra) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{name} {extra:?}: expected a counter, got {other:?}"),
    }
}

fn pool(name: &str) -> Pool<FakeManager> {
    Pool::builder()
        .name(name)
        .max_size(4)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_millis(50))
        .build(FakeManager::new())
        .unwrap()
}

#[test]
fn state_and_counters_are_published_with_the_pool_label() {
    let pool = pool("metrics-state");
    let held = pool.get().unwrap();
    for _ in 0..5 {
        drop(pool.get().unwrap());
    }
    held.discard();
    let a = pool.get().unwrap();
    let _b = pool.get().unwrap();
    let _c = pool.get().unwrap();
    let _d = pool.get().unwrap();
    assert!(pool.get().is_err(), "times out: the pool is exhausted");
    // One borrow that certainly waits: queued before `a` comes back.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.get_timeout(Duration::from_secs(10)).map(drop));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool.state().waiters == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the waiter never queued"
            );
            std::thread::yield_now();
        }
        drop(a);
        waiter
            .join()
            .unwrap()
            .expect("handed the returned connection");
    });

    let m = recorded("metrics-state", || stickypool::metrics::publish(&pool));
    let state = pool.state();
    assert_eq!(gauge(&m, "stickypool_max_connections"), 4.0);
    assert_eq!(
        gauge(&m, "stickypool_connections"),
        f64::from(state.connections)
    );
    assert_eq!(gauge(&m, "stickypool_in_use_connections"), 3.0);
    assert_eq!(
        gauge(&m, "stickypool_idle_connections"),
        f64::from(state.idle_connections)
    );
    assert_eq!(
        gauge(&m, "stickypool_pending_connections"),
        f64::from(state.pending)
    );
    assert_eq!(gauge(&m, "stickypool_waiters"), 0.0);

    let stats = pool.stats();
    assert_eq!(counter(&m, "stickypool_borrows_total", &[]), stats.borrows);
    assert!(stats.borrows >= 10);
    assert_eq!(counter(&m, "stickypool_timeouts_total", &[]), 1);
    assert_eq!(counter(&m, "stickypool_waits_total", &[]), stats.waits);
    assert_eq!(
        counter(&m, "stickypool_connections_created_total", &[]),
        stats.connections_created
    );
    assert_eq!(counter(&m, "stickypool_connect_failures_total", &[]), 0);
    assert_eq!(counter(&m, "stickypool_leaks_total", &[]), 0);
    assert_eq!(
        counter(
            &m,
            "stickypool_connections_closed_total",
            &[("reason", "discarded")]
        ),
        1
    );
    assert_eq!(
        counter(
            &m,
            "stickypool_connections_closed_total",
            &[("reason", "idle")]
        ),
        0
    );
    assert_eq!(
        counter(&m, "stickypool_wait_seconds_count", &[]),
        stats.wait_time.count()
    );
    assert!(gauge(&m, "stickypool_wait_seconds_sum") >= 0.0);
    assert_eq!(
        counter(&m, "stickypool_connect_seconds_count", &[]),
        stats.connections_created
    );
    assert!(gauge(&m, "stickypool_hold_seconds_total") >= 0.0);
    for q in ["0.5", "0.99", "1"] {
        assert!(
            matches!(
                value(&m, "stickypool_wait_seconds", &[("quantile", q)]),
                Some(DebugValue::Gauge(_))
            ),
            "wait quantile {q}"
        );
        assert!(
            value(&m, "stickypool_connect_seconds", &[("quantile", q)]).is_some(),
            "connect quantile {q}"
        );
    }
}

#[test]
fn quantiles_cover_the_interval_since_the_last_publish() {
    let pool = pool("metrics-window");
    let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    // A borrow that waits about 40 ms for a connection.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.get_timeout(Duration::from_secs(5)).map(|c| c.id()));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        std::thread::sleep(Duration::from_millis(40));
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let publish =
        || metrics::with_local_recorder(&recorder, || stickypool::metrics::publish(&pool));
    publish();
    let m = metrics_of(&snapshotter, "metrics-window");
    let slow = match value(&m, "stickypool_wait_seconds", &[("quantile", "1")]) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{other:?}"),
    };
    assert!(slow >= 0.03, "the slow borrow is in the window: {slow}");

    // The next interval has only immediate borrows.
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    publish();
    let m = metrics_of(&snapshotter, "metrics-window");
    match value(&m, "stickypool_wait_seconds", &[("quantile", "1")]) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn publish_every_runs_until_the_handle_is_dropped() {
    let (snapshotter, _turn) = global();
    let pool = pool("metrics-every");
    let publisher = stickypool::metrics::publish_every(pool.clone(), Duration::from_millis(20));
    assert!(publisher.is_running());
    let before = pool.stats().borrows;
    for _ in 0..3 {
        drop(pool.get().unwrap());
    }
    assert!(
        wait_until(SOON, || {
            let m = metrics_of(snapshotter, "metrics-every");
            value(&m, "stickypool_borrows_total", &[]) == Some(&DebugValue::Counter(before + 3))
        }),
        "the scheduled job published the new borrows"
    );
    drop(publisher);
    std::thread::sleep(Duration::from_millis(50));
    let _ = snapshotter.snapshot(); // clears what was published before the drop
    std::thread::sleep(Duration::from_millis(100));
    let m = metrics_of(snapshotter, "metrics-every");
    assert_eq!(
        counter(&m, "stickypool_borrows_total", &[]),
        0,
        "nothing published after the handle was dropped (snapshots reset values)"
    );
}

#[test]
fn publish_every_stops_when_the_pool_closes() {
    let (snapshotter, _turn) = global();
    let pool = pool("metrics-close");
    let publisher = stickypool::metrics::publish_every(pool.clone(), Duration::from_millis(10));
    drop(pool.get().unwrap());
    pool.close();
    assert!(wait_until(SOON, || !publisher.is_running()));
    let m = metrics_of(snapshotter, "metrics-close");
    assert_eq!(gauge(&m, "stickypool_connections"), 0.0);
    assert!(
        counter(
            &m,
            "stickypool_connections_closed_total",
            &[("reason", "pool_closed")]
        ) >= 2,
        "the final publish shows the closed pool"
    );
}

#[test]
fn pools_publish_every_pool() {
    let mut pools = Pools::new();
    pools.register("a", pool("metrics-pools-a")).unwrap();
    pools.register("b", pool("metrics-pools-b")).unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || pools.publish_metrics());
    let all = snapshotter.snapshot().into_vec();
    for name in ["metrics-pools-a", "metrics-pools-b"] {
        let found = all.iter().any(|(key, _, _, value)| {
            key.key().name() == "stickypool_max_connections"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "pool" && l.value() == name)
                && *value == DebugValue::Gauge(4.0.into())
        });
        assert!(found, "{name}");
    }
}
