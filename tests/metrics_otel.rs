//! The pool's metrics under OpenTelemetry's names (`metrics::set_names`), checked
//! against the conventions' list of connection pool metrics. A binary of its own: the
//! names are chosen process-wide.
#![cfg(feature = "metrics")]

mod common;

use std::time::Duration;

use common::FakeManager;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use stickypool::Pool;
use stickypool::metrics::{Names, publish, set_names};

/// OpenTelemetry's database client connection pool metrics (semantic conventions,
/// "Connection pools"), with their instrument kinds as the `metrics` facade has them.
const CONVENTIONS: &[(&str, MetricKind)] = &[
    ("db.client.connection.count", MetricKind::Gauge),
    ("db.client.connection.idle.max", MetricKind::Gauge),
    ("db.client.connection.idle.min", MetricKind::Gauge),
    ("db.client.connection.max", MetricKind::Gauge),
    ("db.client.connection.pending_requests", MetricKind::Gauge),
    ("db.client.connection.timeouts", MetricKind::Counter),
    ("db.client.connection.create_time", MetricKind::Histogram),
    ("db.client.connection.wait_time", MetricKind::Histogram),
    ("db.client.connection.use_time", MetricKind::Histogram),
];

const POOL: &str = "db.client.connection.pool.name";

#[test]
fn every_connection_pool_metric_of_the_conventions_is_published() {
    set_names(Names::OpenTelemetry);
    let pool = Pool::builder()
        .name("otel")
        .max_size(4)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_millis(20))
        .build(FakeManager::new())
        .unwrap();
    let held = pool.get().unwrap();
    let more: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    assert!(pool.get().is_err(), "a timeout");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || publish(&pool));
    drop((held, more));

    let series: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (kind, key.name().to_owned(), labels, value)
        })
        .collect();
    for (name, kind) in CONVENTIONS {
        let found = series.iter().find(|(k, n, labels, _)| {
            n == name && k == kind && labels.iter().any(|(l, v)| l == POOL && v == "otel")
        });
        assert!(found.is_some(), "{name} ({kind:?}) missing in {series:#?}");
    }
    assert!(
        series
            .iter()
            .all(|(_, n, _, _)| n.starts_with("db.client.connection.")),
        "nothing else under these names: {series:#?}"
    );
    let gauge = |name: &str, state: Option<&str>| {
        series
            .iter()
            .find(|(_, n, labels, _)| {
                n == name
                    && state.is_none_or(|s| {
                        labels
                            .iter()
                            .any(|(l, v)| l == "db.client.connection.state" && v == s)
                    })
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{name}: {other:?}"),
            })
            .unwrap()
    };
    assert_eq!(gauge("db.client.connection.count", Some("used")), 4.0);
    assert_eq!(gauge("db.client.connection.count", Some("idle")), 0.0);
    assert_eq!(gauge("db.client.connection.max", None), 4.0);
    assert_eq!(gauge("db.client.connection.idle.min", None), 2.0);
    let timeouts = series
        .iter()
        .find(|(_, n, _, _)| n == "db.client.connection.timeouts")
        .map(|(_, _, _, v)| v);
    assert_eq!(timeouts, Some(&DebugValue::Counter(1)));
}
