//! `tracing` spans (feature `tracing`): waiting, connecting, checking and resetting
//! each get a span with the pool's name and the connection's id; a close is an event
//! with its reason. A test binary of its own: it installs a global subscriber (the
//! connects run on the pool's own threads).
#![cfg(feature = "tracing")]

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{FakeManager, SOON, wait_until};
use stickypool::{Pool, PooledConnection, ResetAction};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span or event as recorded: its name and its fields as text.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
}

static SPANS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
static EVENTS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Keeps every span of target `stickypool` (with fields recorded later) and every event.
struct Capture {
    next: AtomicU64,
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("stickypool")
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut spans = SPANS.lock().unwrap();
        spans.push(Seen {
            name: span.metadata().name().to_owned(),
            fields,
        });
        self.next.fetch_add(1, Ordering::SeqCst);
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = SPANS.lock().unwrap();
        let seen = &mut spans[span.into_u64() as usize - 1];
        values.record(&mut Fields(&mut seen.fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        EVENTS.lock().unwrap().push(Seen {
            name: event.metadata().name().to_owned(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn spans(name: &str, pool: &str) -> Vec<Seen> {
    SPANS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == name && s.fields.get("pool").is_some_and(|p| p == pool))
        .cloned()
        .collect()
}

#[test]
fn waits_connects_checks_resets_and_closes_are_traced() {
    tracing::subscriber::set_global_default(Capture {
        next: AtomicU64::new(1),
    })
    .expect("the only subscriber");

    let pool = Pool::builder()
        .name("traced")
        .max_size(1)
        .min_idle(Some(0))
        .connection_timeout(SOON)
        .check_on_borrow(Some(Duration::ZERO))
        .reset_on_return(ResetAction::Rollback)
        .build(FakeManager::new())
        .unwrap();
    // The first borrow waits for the first connect.
    let conn = pool.get().unwrap();
    let id = conn.id;
    // A second borrow waits about 30 ms for the first to come back.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.get().map(drop));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        std::thread::sleep(Duration::from_millis(30));
        drop(conn);
        waiter.join().unwrap().unwrap();
    });
    PooledConnection::discard(pool.get().unwrap());

    let connects = spans("connect", "traced");
    assert!(!connects.is_empty(), "{:?}", SPANS.lock().unwrap());
    assert_eq!(
        connects[0].fields.get("attempt").map(String::as_str),
        Some("0")
    );
    assert!(
        connects
            .iter()
            .any(|c| c.fields.get("conn_id") == Some(&id.to_string()))
    );

    let waits = spans("wait", "traced");
    assert!(waits.len() >= 2, "{waits:?}");
    let longest = waits
        .iter()
        .filter_map(|w| w.fields.get("waited_ms")?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(
        (25..10_000).contains(&longest),
        "waited {longest} ms: {waits:?}"
    );

    let checks = spans("validate", "traced");
    assert!(
        checks
            .iter()
            .any(|c| c.fields.get("conn_id") == Some(&id.to_string()))
    );
    let resets = spans("reset", "traced");
    assert!(
        resets
            .iter()
            .any(|r| r.fields.get("action").map(String::as_str) == Some("Rollback")),
        "{resets:?}"
    );

    let closed = EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.fields.get("pool").is_some_and(|p| p == "traced"))
        .filter_map(|e| e.fields.get("reason").cloned())
        .collect::<Vec<_>>();
    assert_eq!(closed, ["\"discarded\""], "close events");
}
