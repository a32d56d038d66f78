//! Metrics through the `metrics` facade (feature `metrics`).
#![cfg(feature = "metrics")]

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::{FakeManager, SOON, wait_until};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use stickypool::{Pool, PooledConnection, Pools};

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
    PooledConnection::discard(held);
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
        counter(&m, "stickypool_unavailable_total", &[]),
        stats.unavailable
    );
    assert_eq!(
        counter(&m, "stickypool_hook_panics_total", &[]),
        stats.hook_panics
    );
    assert_eq!(
        counter(&m, "stickypool_recovered_after_panic_total", &[]),
        stats.recovered_after_panic
    );
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
    // The histograms got one sample per wait, connect and returned borrow.
    let samples = |name: &str| match value(&m, name, &[]) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
        other => panic!("{name}: expected a histogram, got {other:?}"),
    };
    assert_eq!(samples("stickypool_wait_seconds").len() as u64, stats.waits);
    assert_eq!(
        samples("stickypool_connect_seconds").len() as u64,
        stats.connections_created
    );
    assert_eq!(
        samples("stickypool_hold_seconds").len() as u64,
        stats.hold_time.count()
    );
    assert_eq!(
        stats.hold_time.count(),
        stats.borrows - 3,
        "3 are still held"
    );
}

#[test]
fn a_publish_hands_over_only_the_samples_since_the_last() {
    let pool = pool("metrics-window");
    let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    // A borrow that waits about 40 ms for a connection.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            pool.get_timeout(Duration::from_secs(5))
                .map(|c| PooledConnection::id(&c))
        });
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        std::thread::sleep(Duration::from_millis(40));
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let publish =
        || metrics::with_local_recorder(&recorder, || stickypool::metrics::publish(&pool));
    let waits = |m: &Metrics| match value(m, "stickypool_wait_seconds", &[]) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        None => Vec::new(),
        other => panic!("{other:?}"),
    };
    publish();
    let first: Vec<f64> = waits(&metrics_of(&snapshotter, "metrics-window"));
    // The borrows that waited for a new connection, and the slow one.
    assert_eq!(first.len() as u64, pool.stats().waits, "{first:?}");
    let slowest = first.iter().copied().fold(0.0, f64::max);
    assert!((0.035..0.5).contains(&slowest), "the slow wait: {first:?}");

    // The next interval has only immediate borrows: no wait is handed over again.
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    publish();
    assert!(waits(&metrics_of(&snapshotter, "metrics-window")).is_empty());
}

/// The exposition as Prometheus scrapes it, through `metrics-exporter-prometheus`, is
/// valid: `promtool check metrics` (Debian's `prometheus` package; `scripts/servers.sh`
/// installs it) finds no problem, and the histograms are one family each.
#[test]
fn the_prometheus_exposition_passes_promtool() {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    let pool = pool("metrics-prometheus");
    let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.get_timeout(Duration::from_secs(5)).map(drop));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    held_for(&pool, Duration::from_millis(3));
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Prefix("stickypool_".into()),
            stickypool::metrics::BUCKETS,
        )
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || stickypool::metrics::publish(&pool));
    let text = handle.render();
    for family in [
        "stickypool_wait_seconds",
        "stickypool_connect_seconds",
        "stickypool_hold_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} histogram")),
            "{family} is not a histogram:\n{text}"
        );
        assert!(text.contains(&format!("{family}_bucket{{")), "{text}");
    }
    assert!(
        text.contains("# TYPE stickypool_borrows_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE stickypool_connections gauge"),
        "{text}"
    );

    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// Borrows once and holds the connection for `d`.
fn held_for(pool: &Pool<FakeManager>, d: Duration) {
    let conn = pool.get().unwrap();
    std::thread::sleep(d);
    drop(conn);
}

/// `promtool`, or `None` (skipping) when it is not installed, unless the test servers
/// are required (`STICKYPOOL_REQUIRE_SERVERS`): then its absence fails.
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool");
    }
    let required =
        std::env::var("STICKYPOOL_REQUIRE_SERVERS").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "promtool is not installed (apt-get install prometheus)"
    );
    eprintln!("skipping promtool: not installed");
    None
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

/// An outage shows in the metrics: borrows that failed at once because the backend
/// refused every connect, which `stickypool_timeouts_total` never counts.
#[test]
fn an_outage_is_published() {
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let pool = Pool::builder()
        .name("metrics-outage")
        .max_size(1)
        .min_idle(Some(1))
        .build_unchecked(manager.clone());
    // Three failed connects open the breaker.
    assert!(wait_until(SOON, || {
        manager.script.connect_attempts.load(Ordering::SeqCst) >= 3
    }));
    assert!(wait_until(SOON, || matches!(
        pool.get(),
        Err(stickypool::Error::Unavailable { .. })
    )));
    let m = recorded("metrics-outage", || stickypool::metrics::publish(&pool));
    assert!(counter(&m, "stickypool_unavailable_total", &[]) >= 1);
    assert_eq!(
        counter(&m, "stickypool_unavailable_total", &[]),
        pool.stats().unavailable
    );
    assert_eq!(counter(&m, "stickypool_timeouts_total", &[]), 0);
}
