//! Changes while the pool runs: `set_min_idle`, `retire_all`, `retain`, `pause`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use common::{FakeManager, SOON, wait_until};
use stickypool::{CloseReason, Error, Pool};

fn pool(manager: &FakeManager, max_size: u32, min_idle: u32) -> Pool<FakeManager> {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(min_idle))
        .connection_timeout(SOON)
        .check_on_borrow(None)
        .build(manager.clone())
        .expect("build")
}

#[test]
fn set_min_idle_grows_at_once_and_is_validated() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 4, 0);
    assert_eq!(pool.state().connections, 0);
    pool.set_min_idle(Some(3)).unwrap();
    assert_eq!(pool.min_idle(), Some(3));
    assert!(wait_until(SOON, || pool.state().idle_connections == 3));
    // Borrowed ones do not count (r2d2's meaning): a borrow asks for one more.
    let held = pool.get().unwrap();
    assert!(wait_until(SOON, || pool.state().idle_connections == 3));
    drop(held);

    let err = pool.set_min_idle(Some(5)).unwrap_err();
    assert!(
        err.to_string().contains("must not exceed max_size (4)"),
        "{err}"
    );
    assert_eq!(pool.min_idle(), Some(3), "unchanged by the refused value");
    pool.set_min_idle(None).unwrap();
    assert_eq!(pool.min_idle(), None);
    assert!(wait_until(SOON, || pool.state().idle_connections == 4));
}

#[test]
fn retain_nothing_closes_the_idle_ones_only() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 3, 0);
    let held = pool.get().unwrap();
    let held_id = held.id;
    drop(pool.get().unwrap());
    drop(pool.get().unwrap()); // (affinity: the same idle one again)
    let idle = pool.state().idle_connections as usize;
    assert!(idle >= 1);
    assert_eq!(pool.retain(|_| false), idle);
    assert_eq!(pool.state().idle_connections, 0);
    assert_eq!(pool.stats().closed.get(CloseReason::Evicted), idle as u64);
    drop(held);
    // The borrowed one went back to the pool as usual.
    assert_eq!(pool.get().unwrap().id, held_id);
}

#[test]
fn retire_all_closes_idle_now_and_borrowed_on_return() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 4, 2);
    assert!(wait_until(SOON, || pool.state().idle_connections == 2));
    let old: BTreeSet<u64> = (0..2).map(|_| pool.get().unwrap().id).collect();
    let held = pool.get().unwrap();
    let held_id = held.id;

    let closed_now = pool.retire_all();
    assert!(closed_now >= 1, "the idle ones");
    assert_eq!(
        pool.stats().closed.get(CloseReason::Retired),
        closed_now as u64
    );
    drop(held);
    assert_eq!(
        pool.stats().closed.get(CloseReason::Retired),
        closed_now as u64 + 1,
        "the borrowed one closes on return"
    );

    // Every connection from now on is new, and stays (it is not retired).
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let conn = pool.get().unwrap();
        assert!(conn.id != held_id && !old.contains(&conn.id), "{}", conn.id);
        seen.insert(conn.id);
    }
    let retired = pool.stats().closed.get(CloseReason::Retired);
    drop(pool.get().unwrap());
    assert_eq!(pool.stats().closed.get(CloseReason::Retired), retired);
}

/// A connect that started before `retire_all` (with the credentials it was meant to
/// replace) is retired too: the connection it opened is closed unused, and the borrower
/// waiting for it gets one from a connect made after the call.
#[test]
fn a_connect_under_way_during_retire_all_is_retired() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 1, 0);
    manager.script.block_connects();
    thread::scope(|s| {
        let borrower = s.spawn(|| {
            let conn = pool
                .get()
                .expect("served by a connect made after retire_all");
            conn.attempt
        });
        // Inside `connect` (blocked there), not merely queued.
        assert!(wait_until(SOON, || {
            manager.script.connect_attempts.load(Ordering::SeqCst) == 1
        }));
        pool.retire_all();
        manager.script.release_connects();
        assert!(
            borrower.join().unwrap() > 1,
            "the retired connection was lent"
        );
    });
    assert_eq!(manager.script.opened.load(Ordering::SeqCst), 2);
    assert!(wait_until(SOON, || manager.script.closed() == 1));
}

#[test]
fn retain_closes_what_the_predicate_rejects_and_survives_a_hostile_one() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 3, 3);
    assert!(wait_until(SOON, || pool.state().idle_connections == 3));
    let first = (0..3)
        .map(|_| pool.get().unwrap())
        .map(|c| c.id)
        .min()
        .unwrap();
    // Keep all but the first connection.
    assert_eq!(pool.retain(|c| c.id != first), 1);
    assert_eq!(pool.stats().closed.get(CloseReason::Evicted), 1);
    // Ages and idle times are there to judge by.
    let mut infos = Vec::new();
    pool.retain(|c| {
        infos.push(*c);
        true
    });
    assert!(
        infos.iter().all(|c| c.age >= c.idle && c.age < SOON),
        "{infos:?}"
    );

    // A predicate that panics keeps the connection; one that borrows from the pool
    // itself finds it usable (no slot is claimed while it runs).
    // (Once the refill of `min_idle` after the close above is done.)
    assert!(wait_until(SOON, || pool.state().idle_connections == 3));
    assert_eq!(pool.retain(|_| panic!("a bug in the predicate")), 0);
    assert_eq!(pool.state().connections, 3);
    assert!(pool.stats().hook_panics >= 1);
    let reentrant = pool.retain(|_| {
        let conn = pool
            .get_timeout(Duration::from_secs(1))
            .expect("a free slot");
        drop(conn);
        true
    });
    assert_eq!(reentrant, 0);
}

#[test]
fn set_max_size_grows_for_waiting_borrowers_and_shrinks_on_return() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 2, 0);
    let held: Vec<_> = (0..2).map(|_| pool.get().unwrap()).collect();
    thread::scope(|s| {
        // Each waiter keeps what it gets (owned, so it can leave the thread).
        let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| pool.get_owned())).collect();
        assert!(wait_until(SOON, || pool.state().waiters == 3));
        pool.set_max_size(5).unwrap();
        assert_eq!(pool.max_size(), 5);
        let served: Vec<_> = waiters
            .into_iter()
            .map(|w| w.join().unwrap().unwrap())
            .collect();
        let ids: BTreeSet<u64> = served.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 3, "three new connections for the three waiters");
    });
    assert_eq!(pool.state().connections, 5);

    // Shrink while two are borrowed: the idle ones beyond the new size close now, the
    // borrowed ones beyond it when they come back.
    pool.set_max_size(1).unwrap();
    assert!(pool.state().connections <= 3, "{:?}", pool.state());
    drop(held);
    assert!(wait_until(SOON, || pool.state().connections <= 1));
    assert_eq!(pool.state().max_size, 1);
    let conn = pool.get().unwrap();
    assert!(pool.try_get().is_none(), "one slot now");
    drop(conn);
    assert!(pool.stats().closed.get(CloseReason::Evicted) >= 4);
}

#[test]
fn set_max_size_grows_far_and_is_validated() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 1, 0);
    for size in [3, 10, 100] {
        pool.set_max_size(size).unwrap();
        let held: Vec<_> = (0..size).map(|_| pool.get().unwrap()).collect();
        let ids: BTreeSet<u64> = held.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), size as usize);
        assert!(pool.try_get().is_none());
    }
    assert_eq!(pool.stats().borrows, 3 + 10 + 100);
    assert!(pool.set_max_size(0).is_err());
    assert!(pool.set_max_size(stickypool::MAX_POOL_SIZE + 1).is_err());
    pool.set_min_idle(Some(5)).unwrap();
    let err = pool.set_max_size(4).unwrap_err();
    assert!(err.to_string().contains("below min_idle (5)"), "{err}");
    assert_eq!(pool.max_size(), 100);
}

/// Borrowers at full speed while another thread resizes the pool between 1 and 16:
/// every borrow succeeds, a connection is never held twice, and after the last resize
/// the pool settles within its size; every connection opened is closed exactly once.
#[test]
fn resizing_under_load_loses_nothing() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(4)
        .min_idle(Some(0))
        .connection_timeout(SOON)
        .build(manager.clone())
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let in_hand = std::sync::Mutex::new(BTreeSet::new());
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let conn = pool.get().expect("a borrow during resizing");
                    assert!(in_hand.lock().unwrap().insert(conn.id), "held twice");
                    thread::yield_now();
                    in_hand.lock().unwrap().remove(&conn.id);
                    drop(conn);
                }
            });
        }
        for size in [1, 16, 2, 9, 1, 12, 3, 16, 1, 5]
            .into_iter()
            .cycle()
            .take(60)
        {
            pool.set_max_size(size).unwrap();
            thread::sleep(Duration::from_millis(2));
        }
        pool.set_max_size(3).unwrap();
        stop.store(true, Ordering::SeqCst);
    });
    assert!(
        wait_until(SOON, || pool.state().connections <= 3),
        "{:?}",
        pool.state()
    );
    drop(pool);
    assert!(wait_until(SOON, || manager.script.live() == 0));
    manager.script.assert_all_closed_once();
}

#[test]
fn a_pause_holds_new_borrows_until_resume_and_lets_borrowed_ones_come_back() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 2, 2);
    let in_flight = pool.get().unwrap();
    pool.pause();
    assert!(pool.is_paused());
    // An idle connection is there, but nobody gets it.
    assert_eq!(pool.state().idle_connections, 1);
    let err = pool.get_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(pool.try_get().is_none());
    // The borrowed one comes back and is kept.
    drop(in_flight);
    assert_eq!(pool.state().idle_connections, 2);
    thread::scope(|s| {
        let waiting = s.spawn(|| pool.get_timeout(SOON).map(drop));
        // It waits through the pause, however long, and is served once it ends.
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        pool.resume();
        waiting.join().unwrap().expect("served after resume");
    });
    assert!(!pool.is_paused());
    assert_eq!(
        manager.script.opened.load(Ordering::SeqCst),
        2,
        "nothing reopened"
    );
    drop(pool.get().unwrap());
}

#[test]
fn a_pause_that_closes_opens_nothing_until_resume_even_with_a_borrower_that_never_returns() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 3, 3);
    let returning = pool.get().unwrap();
    let never = pool.get().unwrap(); // held to the end of the test
    assert_eq!(pool.pause().and_close(), 1, "the idle one, at once");
    drop(returning); // closed as it comes back
    assert_eq!(pool.state().connections, 1, "only the one still out");
    assert_eq!(pool.stats().closed.get(CloseReason::Evicted), 2);
    assert!(pool.get_timeout(Duration::from_millis(20)).is_err());
    assert_eq!(
        manager.script.opened.load(Ordering::SeqCst),
        3,
        "no connect while paused"
    );
    pool.resume();
    // `min_idle` is refilled with fresh connections beside the one still out.
    assert!(wait_until(SOON, || pool.state().idle_connections == 2));
    drop(pool.get().unwrap());
    drop(never); // comes back after the pause: kept
    assert_eq!(pool.state().connections, 3);
}

#[test]
fn a_failing_pause_fails_waiting_and_new_borrows_at_once() {
    let manager = FakeManager::new();
    let pool = pool(&manager, 1, 1);
    pool.pause();
    thread::scope(|s| {
        let waiting = s.spawn(|| pool.get_timeout(SOON).map(drop));
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        pool.pause().failing();
        let err = waiting.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Paused { .. }), "{err:?}");
    });
    let err = pool.get().unwrap_err();
    assert!(err.to_string().contains("paused"), "{err}");
    pool.resume();
    drop(pool.get().unwrap());
}
