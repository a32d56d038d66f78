//! The lifecycle settings: housekeeper, health checks, fake close, leak detection,
//! max_waiters, stats and events. Short durations, and every wait has a deadline.

mod common;
mod logs;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{FakeConn, FakeError, FakeManager, SOON, wait_until};
use scheduled_thread_pool::ScheduledThreadPool;
use stickypool::{
    AcquireEvent, CheckinEvent, CheckoutEvent, CloseReason, CustomizeConnection, Error,
    HandleEvent, Pool, PooledConnection, ReleaseEvent, ResetAction, TimeoutEvent,
};

use logs::logged;

fn builder(name: &str) -> stickypool::Builder<FakeManager> {
    logs::capture();
    Pool::builder()
        .name(name)
        .connection_timeout(SOON)
        .check_on_borrow(None)
}

fn closed(pool: &Pool<FakeManager>, reason: CloseReason) -> u64 {
    pool.stats().closed.get(reason)
}

#[test]
fn idle_connections_are_reaped_down_to_min_idle_and_not_below() {
    let pool = builder("reap")
        .max_size(4)
        .min_idle(Some(1))
        .idle_timeout(Some(Duration::from_millis(30)))
        .reap_interval(Duration::from_millis(10))
        .build(FakeManager::new())
        .unwrap();
    let guards: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    assert_eq!(pool.state().connections, 4);
    drop(guards);
    assert!(wait_until(SOON, || pool.state().connections == 1));
    // Several more reaps: the last one stays.
    let reaps_later = pool.stats();
    thread::sleep(Duration::from_millis(80));
    assert_eq!(pool.state().connections, 1);
    assert_eq!(closed(&pool, CloseReason::Idle), 3);
    assert_eq!(pool.stats().closed, reaps_later.closed);
}

#[test]
fn connections_are_retired_after_their_lifetime() {
    let events = Arc::new(Recorder::default());
    let pool = builder("lifetime")
        .max_size(2)
        .min_idle(Some(2))
        .max_lifetime(Some(Duration::from_millis(60)))
        .reap_interval(Duration::from_millis(10))
        .event_handler(Box::new(events.clone()))
        .build(FakeManager::new())
        .unwrap();
    assert!(wait_until(SOON, || closed(&pool, CloseReason::Lifetime) >= 2));
    // min_idle is refilled with new connections.
    assert!(wait_until(SOON, || pool.state().connections == 2));
    for (age, reason) in events.releases() {
        if reason == CloseReason::Lifetime {
            // 60 ms less at most 2.5% jitter (1 ms), at millisecond resolution.
            assert!(age >= Duration::from_millis(58), "retired at {age:?}");
        }
    }
}

/// One connection with a 40 ms lifetime that only a return retires (the housekeeper
/// does not run in a test's time).
fn short_lived(name: &str) -> (Pool<FakeManager>, FakeManager) {
    let manager = FakeManager::new();
    let pool = builder(name)
        .max_size(1)
        .max_lifetime(Some(Duration::from_millis(40)))
        .reap_interval(Duration::from_secs(3600))
        .build(manager.clone())
        .unwrap();
    (pool, manager)
}

#[test]
fn a_connection_in_use_past_its_lifetime_is_closed_on_return() {
    let (pool, manager) = short_lived("lifetime-in-use");
    let conn = pool.get().unwrap();
    let id = conn.id;
    thread::sleep(Duration::from_millis(60));
    drop(conn);
    assert_eq!(manager.script.closes.lock().unwrap().get(&id), Some(&1));
    assert_eq!(closed(&pool, CloseReason::Lifetime), 1);
    assert_ne!(pool.get().unwrap().id, id);
}

/// A borrow of an expired connection returned at once (the short return path, held
/// under a millisecond) closes it too.
#[test]
fn an_expired_connection_returned_at_once_is_closed() {
    let (pool, manager) = short_lived("lifetime-quick");
    let id = pool.get().unwrap().id;
    thread::sleep(Duration::from_millis(60));
    drop(pool.get().unwrap());
    assert_eq!(manager.script.closes.lock().unwrap().get(&id), Some(&1));
    assert_eq!(closed(&pool, CloseReason::Lifetime), 1);
}

#[test]
fn keepalive_replaces_a_dead_idle_connection() {
    let manager = FakeManager::new();
    let pool = builder("keepalive")
        .max_size(1)
        .keepalive_interval(Some(Duration::from_millis(15)))
        .reap_interval(Duration::from_millis(10))
        .build(manager.clone())
        .unwrap();
    let id = pool.get().unwrap().id;
    manager.script.dead.lock().unwrap().push(id);
    assert!(wait_until(SOON, || closed(
        &pool,
        CloseReason::KeepaliveFailed
    ) == 1));
    assert!(logged(
        log::Level::Warn,
        "keepalive",
        &format!("checking a connection failed: connection {id} is dead")
    ));
    assert!(logged(
        log::Level::Info,
        "keepalive",
        &format!("keepalive of connection {id} failed")
    ));
    // The housekeeper opens a replacement without anyone asking.
    assert!(wait_until(SOON, || pool.state().idle_connections == 1));
    assert_ne!(pool.get().unwrap().id, id);
}

#[test]
fn by_default_only_compat_replaces_quiet_min_idle_connections() {
    let (native, compat) = (FakeManager::new(), FakeManager::new());
    let quiet = |b: stickypool::Builder<FakeManager>| {
        b.max_size(2)
            .idle_timeout(Some(Duration::from_millis(30)))
            .reap_interval(Duration::from_millis(10))
    };
    let native_pool = quiet(stickypool::Pool::builder())
        .build(native.clone())
        .unwrap();
    let compat_pool = stickypool::compat::Pool::builder()
        .max_size(2)
        .idle_timeout(Some(Duration::from_millis(30)))
        .reap_interval(Duration::from_millis(10))
        .build(compat.clone())
        .unwrap();
    // r2d2's meaning: both idle connections time out and are replaced.
    assert!(wait_until(SOON, || compat_pool.stats().closed.total() >= 2));
    // stickypool's: the `min_idle` connections (here both) are kept, in the same time.
    assert_eq!(native_pool.stats().closed.total(), 0);
    assert_eq!(native.script.opened.load(Ordering::SeqCst), 2);
}

#[test]
fn by_default_only_compat_checks_every_borrow() {
    // stickypool's own API: checked at the connect, then not again within 500 ms.
    let manager = FakeManager::new();
    let pool = stickypool::Pool::builder()
        .max_size(1)
        .build(manager.clone())
        .unwrap();
    assert_eq!(
        pool.check_on_borrow(),
        Some(stickypool::DEFAULT_CHECK_ON_BORROW)
    );
    assert_eq!(pool.check_on_borrow(), Some(Duration::from_millis(500)));
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    assert!(manager.script.valid_calls.load(Ordering::SeqCst) <= 1);

    // r2d2's meaning in `compat`: every borrow is checked.
    let manager = FakeManager::new();
    let pool = stickypool::compat::Pool::builder()
        .max_size(1)
        .build(manager.clone())
        .unwrap();
    assert_eq!(pool.check_on_borrow(), Some(Duration::ZERO));
    assert!(pool.test_on_check_out(), "r2d2's getter");
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    assert_eq!(manager.script.valid_calls.load(Ordering::SeqCst), 10);
}

#[test]
fn the_borrow_check_is_skipped_within_the_bypass_window() {
    let manager = FakeManager::new();
    let pool = builder("bypass")
        .max_size(1)
        .check_on_borrow(Some(Duration::from_secs(3600)))
        .build(manager.clone())
        .unwrap();
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    assert_eq!(manager.script.valid_calls.load(Ordering::SeqCst), 0);

    let manager = FakeManager::new();
    let pool = builder("no-bypass")
        .max_size(1)
        .check_on_borrow(Some(Duration::from_millis(20)))
        .build(manager.clone())
        .unwrap();
    drop(pool.get().unwrap());
    assert_eq!(manager.script.valid_calls.load(Ordering::SeqCst), 0);
    thread::sleep(Duration::from_millis(40));
    drop(pool.get().unwrap());
    assert_eq!(manager.script.valid_calls.load(Ordering::SeqCst), 1);
    // Just checked: the next borrow skips the check again.
    drop(pool.get().unwrap());
    assert_eq!(manager.script.valid_calls.load(Ordering::SeqCst), 1);
}

#[test]
fn test_on_check_in_closes_a_connection_that_fails() {
    let manager = FakeManager::new();
    let pool = builder("check-in")
        .max_size(1)
        .test_on_check_in(true)
        .build(manager.clone())
        .unwrap();
    let conn = pool.get().unwrap();
    let id = conn.id;
    manager.script.dead.lock().unwrap().push(id);
    drop(conn);
    assert_eq!(closed(&pool, CloseReason::Broken), 1);
    assert_eq!(pool.stats().validation_failures, 1);
}

#[test]
fn reset_on_return_rolls_back_or_commits() {
    for action in [ResetAction::Rollback, ResetAction::Commit] {
        let manager = FakeManager::new();
        let pool = builder("reset")
            .max_size(1)
            .reset_on_return(action)
            .build(manager.clone())
            .unwrap();
        let mut conn = pool.get().unwrap();
        let id = conn.id;
        conn.in_transaction = true;
        conn.data.push(1);
        drop(conn);
        let conn = pool.get().unwrap();
        assert_eq!(conn.id, id, "the connection was reused, not closed");
        assert!(!conn.in_transaction);
        let expected: Vec<u32> = if action == ResetAction::Rollback {
            vec![]
        } else {
            vec![1]
        };
        assert_eq!(conn.data, expected);
        assert_eq!(*manager.script.resets.lock().unwrap(), vec![(id, action)]);
    }
}

#[test]
fn no_reset_by_default() {
    let manager = FakeManager::new();
    let pool = builder("no-reset")
        .max_size(1)
        .build(manager.clone())
        .unwrap();
    drop(pool.get().unwrap());
    assert!(manager.script.resets.lock().unwrap().is_empty());
}

#[test]
fn a_failed_reset_closes_the_connection() {
    let manager = FakeManager::new();
    let pool = builder("reset-fails")
        .max_size(1)
        .reset_on_return(ResetAction::Rollback)
        .build(manager.clone())
        .unwrap();
    manager.script.fail_reset.store(true, Ordering::SeqCst);
    let conn = pool.get().unwrap();
    let id = conn.id;
    drop(conn);
    assert_eq!(closed(&pool, CloseReason::ResetFailed), 1);
    // Closed on the pool's closer thread (a failed connection's drop may block).
    assert!(wait_until(SOON, || {
        manager.script.closes.lock().unwrap().get(&id) == Some(&1)
    }));
    // The default error handler logs it, with the pool and what failed.
    assert!(logged(
        log::Level::Warn,
        "reset-fails",
        "resetting a returned connection failed: reset failed (scripted)"
    ));
    manager.script.fail_reset.store(false, Ordering::SeqCst);
    assert_ne!(pool.get().unwrap().id, id);
}

/// Cloned into the pool, and kept by the test to look at.
#[derive(Debug, Default, Clone)]
struct Customizer {
    acquired: Arc<Mutex<Vec<u64>>>,
    released: Arc<Mutex<Vec<u64>>>,
    fail_acquire_once: Arc<std::sync::atomic::AtomicBool>,
    fail_check_in: Arc<std::sync::atomic::AtomicBool>,
}

impl CustomizeConnection<FakeConn, FakeError> for Customizer {
    fn on_acquire(&self, conn: &mut FakeConn) -> Result<(), FakeError> {
        if self.fail_acquire_once.swap(false, Ordering::SeqCst) {
            return Err(FakeError("set-up failed".into()));
        }
        conn.data.push(42);
        self.acquired.lock().unwrap().push(conn.id);
        Ok(())
    }

    fn on_check_in(&self, conn: &mut FakeConn) -> Result<(), FakeError> {
        if self.fail_check_in.load(Ordering::SeqCst) {
            return Err(FakeError("custom reset failed".into()));
        }
        conn.data.truncate(1);
        Ok(())
    }

    fn on_release(&self, conn: FakeConn) {
        self.released.lock().unwrap().push(conn.id);
    }
}

#[test]
fn a_session_reset_runs_on_acquire_again() {
    // The fake's session reset clears the connection's data, as a real one wipes
    // `SET`s; `on_acquire` puts its 42 back, and `on_check_in` keeps only that.
    for (reset, after) in [
        (ResetAction::Session, vec![42]),
        (ResetAction::Rollback, vec![]),
    ] {
        let customizer = Customizer::default();
        let pool = builder("session")
            .max_size(1)
            .reset_on_return(reset)
            .connection_customizer(Box::new(customizer.clone()))
            .build(FakeManager::new())
            .unwrap();
        let id = {
            let mut conn = pool.get().unwrap();
            assert_eq!(conn.data, vec![42], "set up at connect");
            conn.data.push(7);
            conn.id
        };
        let conn = pool.get().unwrap();
        assert_eq!(conn.id, id, "the same connection");
        assert_eq!(conn.data, after, "after a {reset:?} reset");
        assert_eq!(customizer.acquired.lock().unwrap().len(), 1 + after.len());
    }
}

#[test]
fn the_customizer_runs_on_acquire_check_in_and_release() {
    let customizer = Customizer::default();
    customizer.fail_acquire_once.store(true, Ordering::SeqCst);
    let manager = FakeManager::new();
    let pool = builder("customizer")
        .max_size(1)
        .min_idle(Some(0))
        .connection_customizer(Box::new(customizer.clone()))
        .build(manager.clone())
        .unwrap();
    // The first connection fails its set-up: it is discarded and another is opened.
    let mut conn = pool.get().unwrap();
    assert_eq!(conn.data, vec![42]);
    assert_eq!(manager.script.opened.load(Ordering::SeqCst), 2);
    assert_eq!(manager.script.closed(), 1);
    conn.data.push(7);
    drop(conn);
    assert_eq!(pool.get().unwrap().data, vec![42], "on_check_in reset it");

    customizer.fail_check_in.store(true, Ordering::SeqCst);
    let id = pool.get().unwrap().id;
    assert_eq!(closed(&pool, CloseReason::ResetFailed), 1);
    assert!(wait_until(SOON, || *customizer.released.lock().unwrap() == vec![id]));
}

#[test]
fn a_leak_is_reported_once_with_where_it_was_borrowed_and_again_when_returned() {
    let pool = builder("leaky")
        .max_size(1)
        .leak_detection_threshold(Some(Duration::from_millis(20)))
        .build(FakeManager::new())
        .unwrap();
    let conn = thread::Builder::new()
        .name("leaker".into())
        .spawn({
            let pool = pool.clone();
            move || pool.get_owned().unwrap()
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(wait_until(SOON, || logged(
        log::Level::Warn,
        "leaky",
        "possible leak"
    )));
    assert_eq!(pool.stats().leaks_reported, 1);
    let warned = logs::all()
        .into_iter()
        .filter(|(l, m)| *l == log::Level::Warn && m.contains("'leaky'"))
        .map(|(_, m)| m)
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("thread 'leaker'"), "{}", warned[0]);
    assert!(warned[0].contains("lifecycle"), "backtrace: {}", warned[0]);
    // Reported once, however long it stays out.
    thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.stats().leaks_reported, 1);
    drop(conn);
    assert!(logged(log::Level::Info, "leaky", "was returned after"));
}

#[test]
fn max_waiters_sheds_load() {
    let pool = builder("shed")
        .max_size(1)
        .max_waiters(Some(1))
        .build(FakeManager::new())
        .unwrap();
    let held = pool.get().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| pool.get().map(|c| c.id));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        let started = std::time::Instant::now();
        match pool.get() {
            Err(Error::TooManyWaiters { limit: 1, .. }) => {}
            other => panic!("expected TooManyWaiters, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(held);
        assert!(waiter.join().unwrap().is_ok());
    });
    assert_eq!(pool.stats().rejected, 1);
}

#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    ages: Mutex<Vec<(Duration, CloseReason)>>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn releases(&self) -> Vec<(Duration, CloseReason)> {
        self.ages.lock().unwrap().clone()
    }
}

impl HandleEvent for Recorder {
    fn handle_acquire(&self, e: AcquireEvent) {
        self.events
            .lock()
            .unwrap()
            .push(format!("acquire {}", e.id));
    }
    fn handle_release(&self, e: ReleaseEvent) {
        self.ages.lock().unwrap().push((e.age, e.reason));
        self.events
            .lock()
            .unwrap()
            .push(format!("release {} {}", e.id, e.reason));
    }
    fn handle_checkout(&self, e: CheckoutEvent) {
        self.events
            .lock()
            .unwrap()
            .push(format!("checkout {}", e.id));
    }
    fn handle_checkin(&self, e: CheckinEvent) {
        self.events
            .lock()
            .unwrap()
            .push(format!("checkin {}", e.id));
    }
    fn handle_timeout(&self, e: TimeoutEvent) {
        assert!(e.timeout >= Duration::from_millis(10));
        self.events.lock().unwrap().push("timeout".into());
    }
}

#[test]
fn events_arrive_in_order() {
    let recorder = Arc::new(Recorder::default());
    let pool = builder("events")
        .max_size(1)
        .event_handler(Box::new(recorder.clone()))
        .build(FakeManager::new())
        .unwrap();
    let conn = pool.get().unwrap();
    assert!(pool.get_timeout(Duration::from_millis(10)).is_err());
    drop(conn);
    pool.close();
    assert_eq!(
        recorder.events(),
        vec![
            "acquire 1",
            "checkout 1",
            "timeout",
            "checkin 1",
            "release 1 pool_closed"
        ]
    );
}

/// Returns right after their borrows (the short return path) reach the handler too.
#[test]
fn every_quick_return_reaches_the_event_handler() {
    let recorder = Arc::new(Recorder::default());
    let pool = builder("quick-events")
        .max_size(1)
        .event_handler(Box::new(recorder.clone()))
        .build(FakeManager::new())
        .unwrap();
    for _ in 0..100 {
        drop(pool.get().unwrap());
    }
    let events = recorder.events();
    let count = |kind: &str| events.iter().filter(|e| e.starts_with(kind)).count();
    assert_eq!((count("checkout"), count("checkin")), (100, 100));
}

#[test]
fn stats_count_everything() {
    let manager = FakeManager::new();
    let pool = builder("stats")
        .max_size(2)
        .min_idle(Some(0))
        .build(manager.clone())
        .unwrap();
    // Two borrows that wait for a connect, then two fast ones.
    let a = pool.get().unwrap();
    let b = pool.get().unwrap();
    assert!(pool.get_timeout(Duration::from_millis(5)).is_err());
    drop(a);
    drop(b);
    drop(pool.get().unwrap());
    let mut broken = pool.get().unwrap();
    broken.broken = true;
    drop(broken);
    PooledConnection::discard(pool.get().unwrap());
    drop(PooledConnection::detach(pool.get().unwrap()));
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let _ = pool.get_timeout(Duration::from_millis(30));
    manager.script.fail_connect.store(false, Ordering::SeqCst);

    let stats = pool.stats();
    assert_eq!(stats.borrows, 6);
    assert!(stats.waits >= 2, "{stats:?}");
    assert_eq!(stats.timeouts, 2);
    assert!(stats.connect_failures >= 1);
    assert_eq!(
        stats.connections_created,
        manager.script.opened.load(Ordering::SeqCst)
    );
    assert_eq!(stats.closed.get(CloseReason::Broken), 1);
    assert_eq!(stats.closed.get(CloseReason::Discarded), 1);
    assert_eq!(stats.closed.get(CloseReason::Detached), 1);
    assert_eq!(
        stats.wait_time.count(),
        stats.waits,
        "only the borrows that waited"
    );
    assert!(stats.connect_time.count() >= 2);
    assert!(stats.wait_time.quantile(1.0) > Duration::ZERO);
    let text = stats.to_string();
    assert!(text.contains("borrows 6"), "{text}");
}

#[test]
fn dropping_the_pool_ends_its_jobs_at_once() {
    let manager = FakeManager::new();
    let scheduler = Arc::new(ScheduledThreadPool::new(1));
    let pool = builder("shutdown")
        .max_size(2)
        .reap_interval(Duration::from_secs(3600))
        .keepalive_interval(Some(Duration::from_secs(3600)))
        .leak_detection_threshold(Some(Duration::from_secs(3600)))
        .thread_pool(scheduler)
        .build(manager.clone())
        .unwrap();
    drop(pool);
    // Nothing holds the pool any more: its manager (and the script's count) is gone.
    assert!(wait_until(SOON, || Arc::strong_count(&manager.script) == 1));
    manager.script.assert_all_closed_once();
}

#[test]
fn a_late_housekeeper_says_so() {
    let scheduler = Arc::new(ScheduledThreadPool::new(1));
    let pool = builder("late")
        .max_size(1)
        .reap_interval(Duration::from_millis(10))
        .thread_pool(scheduler.clone())
        .build(FakeManager::new())
        .unwrap();
    // Starve the scheduler's only thread, as a suspended machine would.
    scheduler.execute(|| thread::sleep(Duration::from_millis(700)));
    assert!(wait_until(SOON, || logged(
        log::Level::Warn,
        "late",
        "late"
    )));
    drop(pool);
}

/// Light load spread over many threads: 16 threads take turns, one borrow every 50 ms
/// (20 a second, each held about a millisecond), on a pool of 8 with `min_idle` 1 and a
/// 600 ms idle timeout, beside one busy thread borrowing all the time. Every thread
/// would keep "its" connection warm through the affinity hint, so no connection is ever
/// idle for 600 ms; the reaper shrinks the pool to what the load needs anyway (the busy
/// thread's, one for the light load, one spare at most), and the busy thread still gets
/// its own connection back. Fails (8 connections stay open) without `shrink_to_load`.
#[test]
fn light_load_spread_over_many_threads_shrinks_the_pool() {
    use std::sync::mpsc;
    let idle_timeout = Duration::from_millis(600);
    let pool = builder("spread")
        .max_size(8)
        .min_idle(Some(1))
        .idle_timeout(Some(idle_timeout))
        .reap_interval(Duration::from_millis(50))
        .build(FakeManager::new())
        .unwrap();
    let all: Vec<_> = (0..8).map(|_| pool.get().unwrap()).collect();
    drop(all);
    assert_eq!(pool.state().connections, 8);

    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (turn, turns) = mpsc::channel::<()>();
            let pool = pool.clone();
            let handle = thread::spawn(move || {
                while turns.recv().is_ok() {
                    let conn = pool.get().expect("borrow");
                    thread::sleep(Duration::from_millis(1));
                    drop(conn);
                }
            });
            (turn, handle)
        })
        .collect();
    // And one busy thread, which must keep its own connection throughout.
    let busy_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (pool, stop) = (pool.clone(), busy_stop.clone());
        thread::spawn(move || {
            // (borrows, borrows that got the same connection as the one before)
            let (mut borrows, mut same, mut last) = (0u32, 0u32, 0);
            while !stop.load(Ordering::SeqCst) {
                let conn = pool.get().expect("borrow");
                borrows += 1;
                same += u32::from(conn.id == last);
                last = conn.id;
                drop(conn);
                thread::sleep(Duration::from_micros(200));
            }
            (borrows, same)
        })
    };
    let started = std::time::Instant::now();
    let mut shrunk_at = None;
    let mut most_after = 0;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(10) {
        workers[n % workers.len()].0.send(()).unwrap();
        n += 1;
        thread::sleep(Duration::from_millis(50));
        let connections = pool.state().connections;
        match shrunk_at {
            None if connections <= 3 => shrunk_at = Some(started.elapsed()),
            // Keep the load going for two more windows: it stays small.
            Some(at) if started.elapsed() > at + idle_timeout * 2 => break,
            Some(_) => most_after = most_after.max(connections),
            None => {}
        }
    }
    for (turn, handle) in workers {
        drop(turn);
        handle.join().unwrap();
    }
    busy_stop.store(true, Ordering::SeqCst);
    let (busy_borrows, busy_same) = busy.join().unwrap();
    let stats = pool.stats();
    eprintln!(
        "shrunk to {} connections after {shrunk_at:?} of load; at most {most_after} later; \
         {} borrows, {} waited, {} closed as idle, {} opened; the busy thread got its own \
         connection back {busy_same} times in {busy_borrows}",
        pool.state().connections,
        stats.borrows,
        stats.waits,
        stats.closed.get(CloseReason::Idle),
        stats.connections_created
    );
    let shrunk_at = shrunk_at.expect("the pool never shrank to the load's 3 connections");
    assert!(shrunk_at < idle_timeout * 4, "took {shrunk_at:?}");
    assert!(most_after <= 3, "grew back to {most_after}");
    assert!(
        f64::from(busy_same) >= 0.95 * f64::from(busy_borrows),
        "the busy thread got its own connection back {busy_same} times in {busy_borrows}"
    );
}

#[test]
fn close_within_waits_for_borrowers_and_reports_the_one_that_never_returns() {
    let manager = FakeManager::new();
    let pool = builder("drain").max_size(4).build(manager.clone()).unwrap();
    // Three requests in flight that finish soon after the drain starts, and one that
    // never returns until the end of the test.
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let finished = Arc::new(Mutex::new(finished));
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let conn = pool.get_owned().unwrap();
            let finished = finished.clone();
            thread::spawn(move || {
                let _ = finished.lock().unwrap().recv();
                drop(conn);
            })
        })
        .collect();
    let stuck = pool.get_owned().unwrap();
    let drain = {
        let pool = pool.clone();
        thread::spawn(move || pool.close_within(Duration::from_millis(300)))
    };
    assert!(wait_until(SOON, || pool.is_closed()));
    assert!(matches!(pool.get(), Err(stickypool::Error::Closed)));
    drop(finish); // the three finish
    in_flight.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(drain.join().unwrap(), 1, "the stuck one was still out");
    assert_eq!(closed(&pool, CloseReason::PoolClosed), 3);
    drop(stuck); // returned late: closed too
    assert_eq!(pool.state().connections, 0);
    assert_eq!(manager.script.live(), 0);
}
