//! Failure isolation: a hung backend in one pool never delays another pool's building,
//! connecting or housekeeping; `min_idle` is refilled at once; `build` gives the same
//! answer for the same inputs; errors lead to the driver's error.

mod common;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{FakeError, FakeManager, SOON, wait_until};
use stickypool::{CloseReason, Error, Pool, PooledConnection};

#[test]
fn a_hung_backend_in_one_pool_never_delays_another() {
    // Pool A: every connect hangs, and eight threads wait for one. With one scheduler
    // for every pool's blocking work, its four threads would all hang here.
    // It has connected once (a pool that never has opens one connection at a time),
    // and that connection is in use.
    let hung = FakeManager::new();
    let a = Pool::builder()
        .max_size(8)
        .min_idle(Some(0))
        .build(hung.clone())
        .unwrap();
    let held = a.get().unwrap();
    assert_eq!(hung.script.connect_attempts.load(Ordering::SeqCst), 1);
    hung.script.block_connects();
    let timeout = Duration::from_millis(300);
    thread::scope(|s| {
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let outcome = a.get_timeout(timeout).map(drop);
                    (outcome, started.elapsed())
                })
            })
            .collect();
        assert!(wait_until(SOON, || {
            hung.script.connect_attempts.load(Ordering::SeqCst) >= 3
        }));

        // Pool B, healthy, is built, connects, pings and reaps on schedule meanwhile.
        let healthy = FakeManager::new();
        let b = Pool::builder()
            .max_size(4)
            .min_idle(Some(4))
            .connection_timeout(SOON)
            .keepalive_interval(Some(Duration::from_millis(10)))
            .max_lifetime(Some(Duration::from_millis(50)))
            .reap_interval(Duration::from_millis(10))
            .build(healthy.clone())
            .expect("a healthy pool builds while another pool's backend hangs");
        assert!(
            wait_until(SOON, || {
                healthy.script.valid_calls.load(Ordering::SeqCst) >= 5
                    && b.stats().closed.get(CloseReason::Lifetime) >= 4
            }),
            "keepalive pings {}, connections retired {}",
            healthy.script.valid_calls.load(Ordering::SeqCst),
            b.stats().closed.get(CloseReason::Lifetime)
        );
        drop(b.get().expect("B serves"));

        // The hung pool's borrowers got their timeout, not more.
        for waiter in waiters {
            let (outcome, waited) = waiter.join().unwrap();
            assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
            assert!(waited < timeout + Duration::from_secs(2), "{waited:?}");
        }
        // And the hung backend holds at most its own pool's connector threads: two
        // connects after the first, successful one.
        assert_eq!(hung.script.connect_attempts.load(Ordering::SeqCst), 3);
    });
    drop(held);
    hung.script.release_connects();
}

#[test]
fn min_idle_is_refilled_at_once_after_a_discard() {
    // The reap runs every 30 s by default: the refill must not wait for it.
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(4)
        .min_idle(Some(4))
        .build(manager.clone())
        .unwrap();
    PooledConnection::discard(pool.get().unwrap());
    let _detached = PooledConnection::detach(pool.get().unwrap());
    assert!(
        wait_until(SOON, || pool.state().connections == 4
            && manager.script.opened.load(Ordering::SeqCst) == 6),
        "{:?}",
        pool.state()
    );
}

#[test]
fn build_tolerates_a_transient_failure_among_successes() {
    for run in 0..100u64 {
        let manager = FakeManager::new();
        manager
            .script
            .fail_attempts
            .lock()
            .unwrap()
            .push(run % 4 + 1);
        let pool = Pool::builder()
            .max_size(4)
            .connection_timeout(SOON)
            .build(manager.clone())
            .unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(pool.state().connections, 4);
        assert_eq!(pool.stats().connect_failures, 1);
    }
}

#[test]
fn a_timeout_after_failed_connects_leads_to_the_drivers_error() {
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .build(manager.clone())
        .unwrap();
    let err = pool.get_timeout(Duration::from_millis(100)).unwrap_err();
    let cause = err.driver_error().expect("the last connect error");
    assert_eq!(
        cause.downcast_ref::<FakeError>().unwrap().0,
        "connection refused (scripted)"
    );
    assert!(Error::Closed.driver_error().is_none());
}

/// What `anyhow`'s `{:#}` and `eyre` print: the error, then each of its sources.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn a_chain_printer_prints_the_drivers_error_once() {
    let driver = "connection refused (scripted)";
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let connect = Pool::builder()
        .max_size(1)
        .build(manager.clone())
        .unwrap_err();
    assert!(matches!(connect, Error::Connect(_)), "{connect:?}");
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .circuit_breaker(None)
        .build(manager.clone())
        .unwrap();
    let timeout = pool.get_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(timeout, Error::Timeout { .. }), "{timeout:?}");
    let (down, _) = hammer_a_dead_backend(true);
    assert!(wait_until(SOON, || matches!(
        down.get_timeout(SOON),
        Err(Error::Unavailable { .. })
    )));
    let unavailable = down.get_timeout(SOON).unwrap_err();
    for err in [connect, timeout, unavailable] {
        let printed = chain(&err);
        assert_eq!(printed.matches(driver).count(), 1, "{printed}");
        assert_eq!(printed, err.to_string(), "nothing more than Display");
        assert!(err.driver_error().is_some(), "{err:?}");
    }
}

/// A pool whose backend refuses every connect, with eight threads borrowing in a loop.
fn hammer_a_dead_backend(breaker: bool) -> (Pool<FakeManager>, FakeManager) {
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let pool = Pool::builder()
        .max_size(8)
        .min_idle(Some(4))
        .circuit_breaker(breaker.then_some(stickypool::DEFAULT_OUTAGE_GRACE))
        .build_unchecked(manager.clone());
    (pool, manager)
}

#[test]
fn while_the_backend_is_down_borrows_fail_at_once_and_connects_are_few() {
    let (pool, manager) = hammer_a_dead_backend(true);
    let script = &manager.script;
    assert!(wait_until(SOON, || matches!(
        pool.get_timeout(SOON),
        Err(Error::Unavailable { .. })
    )));
    // Open: a borrow with a 10 s timeout fails in (well under) a second, and says why.
    let started = Instant::now();
    let err = pool.get_timeout(SOON).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let Error::Unavailable { last_error, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(last_error.is_some());
    assert!(
        err.driver_error()
            .unwrap()
            .downcast_ref::<FakeError>()
            .is_some()
    );
    assert!(err.to_string().contains("unavailable"), "{err}");
    // Eight threads borrowing flat out for 300 ms: only the one probe connects,
    // at most a few times (its backoff starts at 10-20 ms and doubles).
    let before = script.connect_attempts.load(Ordering::SeqCst);
    let window = Duration::from_millis(300);
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let started = Instant::now();
                while started.elapsed() < window {
                    assert!(matches!(
                        pool.get_timeout(SOON),
                        Err(Error::Unavailable { .. })
                    ));
                }
            });
        }
    });
    let attempts = script.connect_attempts.load(Ordering::SeqCst) - before;
    assert!(
        attempts <= 8,
        "{attempts} connects in {window:?} against a dead backend"
    );
    assert!(pool.stats().unavailable > 8);
    // Back up: the probe gets through within its cap (1 s), and borrows succeed.
    script.fail_connect.store(false, Ordering::SeqCst);
    let back = Instant::now();
    assert!(wait_until(SOON, || pool.get_timeout(SOON).is_ok()));
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "{:?}",
        back.elapsed()
    );
    assert!(
        wait_until(SOON, || pool.state().connections >= 4),
        "min_idle refilled after recovery: {:?}",
        pool.state()
    );
}

#[test]
fn without_the_breaker_a_borrow_waits_its_timeout() {
    let (pool, manager) = hammer_a_dead_backend(false);
    assert!(wait_until(SOON, || {
        manager.script.connect_attempts.load(Ordering::SeqCst) >= 10
    }));
    let started = Instant::now();
    let err = pool.get_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn a_pool_with_open_connections_still_waits_while_connects_fail() {
    // The breaker only speaks when waiting cannot help: a borrowed connection will
    // come back.
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(2)
        .min_idle(Some(1))
        .build(manager.clone())
        .unwrap();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let held = pool.get().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| pool.get_timeout(SOON).map(|c| c.id));
        assert!(wait_until(SOON, || {
            manager.script.connect_attempts.load(Ordering::SeqCst) >= 4
        }));
        let id = held.id;
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), id);
    });
}

#[test]
fn a_backend_that_dies_under_load_is_probed_not_hammered() {
    // Connections open and in use when the backend starts refusing: each borrower
    // finds its connection dead, and each close asks for a replacement.
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(8)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_secs(1))
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager.clone())
        .unwrap();
    let script = &manager.script;
    let window = Duration::from_millis(300);
    let before = std::sync::atomic::AtomicU64::new(0);
    let dead_at = std::sync::OnceLock::new();
    thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let started = Instant::now();
                while dead_at
                    .get()
                    .is_none_or(|at: &Instant| at.elapsed() < window)
                {
                    if pool.get().is_err() {
                        thread::yield_now();
                    }
                    assert!(started.elapsed() < SOON);
                }
            });
        }
        assert!(wait_until(SOON, || pool.stats().borrows > 1000));
        before.store(
            script.connect_attempts.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        script.fail_connect.store(true, Ordering::SeqCst);
        script.fail_valid.store(true, Ordering::SeqCst);
        dead_at.set(Instant::now()).unwrap();
    });
    let attempts = script.connect_attempts.load(Ordering::SeqCst) - before.into_inner();
    // Up to two per slot before the breaker opens (16), then the probe's: its backoff
    // starts at 10-20 ms and doubles, but while borrowers wait out the outage's grace
    // it runs at least every 50 ms (about 8 in 300 ms). Looping on failed connects
    // (0.1's `open_for_waiters` could) makes hundreds.
    assert!(
        attempts <= 32,
        "{attempts} connects in {window:?} against a dead backend"
    );
}

#[test]
fn every_check_is_given_the_validation_timeout() {
    let manager = FakeManager::new();
    let bound = Duration::from_millis(250);
    let pool = Pool::builder()
        .max_size(1)
        .check_on_borrow(Some(Duration::ZERO))
        .test_on_check_in(true)
        .keepalive_interval(Some(Duration::from_millis(10)))
        .validation_timeout(Some(bound))
        .build(manager.clone())
        .unwrap();
    drop(pool.get().unwrap()); // a check on borrow and one on return
    let checks = || manager.script.check_timeouts.lock().unwrap().len();
    assert!(checks() >= 2);
    // The keepalive pings the idle connection within a few intervals.
    let before = checks();
    assert!(wait_until(SOON, || checks() > before));
    let timeouts = manager.script.check_timeouts.lock().unwrap().clone();
    assert!(timeouts.iter().all(|&t| t == bound), "{timeouts:?}");

    let default = Pool::builder()
        .max_size(1)
        .check_on_borrow(Some(Duration::ZERO))
        .build(FakeManager::new())
        .unwrap();
    drop(default.get().unwrap());
    let manager = default.manager();
    let timeouts = manager.script.check_timeouts.lock().unwrap().clone();
    assert_eq!(timeouts, [stickypool::DEFAULT_VALIDATION_TIMEOUT]);
}

#[test]
fn a_borrow_check_gets_no_more_than_the_borrow_has_left() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(1)
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager.clone())
        .unwrap();
    let timeouts = || std::mem::take(&mut *manager.script.check_timeouts.lock().unwrap());
    timeouts();
    // Served at once: the check gets the borrow's whole timeout (under the 5 s
    // `validation_timeout`), or what is left before a deadline.
    drop(pool.get_timeout(Duration::from_millis(300)).unwrap());
    assert_eq!(timeouts(), [Duration::from_millis(300)]);
    drop(
        pool.get_deadline(Instant::now() + Duration::from_millis(300))
            .unwrap(),
    );
    let left = timeouts();
    assert!(
        left.len() == 1 && left[0] <= Duration::from_millis(300),
        "{left:?}"
    );

    // Served after a wait: what is left of its timeout.
    let held = pool.get().unwrap();
    timeouts();
    thread::scope(|s| {
        let waiter = s.spawn(|| pool.get_timeout(Duration::from_secs(1)).map(drop));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    let left = timeouts();
    assert!(
        left.len() == 1 && left[0] < Duration::from_secs(1),
        "{left:?}"
    );
}
