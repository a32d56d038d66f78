//! Thread-bound connections (`Pool::bind`).

mod common;

use std::time::Duration;

use common::FakeManager;
use stickypool::{Error, Pool, ResetAction};

fn pool(max_size: u32) -> Pool<FakeManager> {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .reset_on_return(ResetAction::Rollback)
        .build(FakeManager::new())
        .expect("build the pool")
}

#[test]
fn nested_binds_share_one_connection() {
    let pool = pool(4);
    let outer = pool.bind().unwrap();
    assert!(pool.is_bound());
    let inner = pool.bind().unwrap();
    assert_eq!(outer.id(), inner.id());
    assert_eq!(outer.depth(), 2);
    assert_eq!(pool.state().in_use, 1);
    {
        let innermost = pool.bind().unwrap();
        assert_eq!(innermost.id(), outer.id());
        assert_eq!(innermost.depth(), 3);
    }
    drop(inner);
    assert_eq!(pool.state().in_use, 1, "still bound by the outer guard");
    drop(outer);
    assert_eq!(pool.state().in_use, 0, "the last guard gives it back");
    assert!(!pool.is_bound());
}

#[test]
fn outer_dropped_before_nested_keeps_it_until_the_last() {
    let pool = pool(4);
    let outer = pool.bind().unwrap();
    let inner = pool.bind().unwrap();
    let id = inner.id();
    drop(outer);
    assert_eq!(pool.state().in_use, 1);
    assert_eq!(
        pool.bind().unwrap().id(),
        id,
        "still the thread's connection"
    );
    drop(inner);
    assert_eq!(pool.state().in_use, 0);
    assert!(!pool.is_bound());
    // The next bind takes a connection afresh (the same one, by affinity).
    let again = pool.bind().unwrap();
    assert_eq!(again.depth(), 1);
}

#[test]
fn two_pools_bound_at_once() {
    let a = pool(2);
    let b = pool(2);
    let ga = a.bind().unwrap();
    let gb = b.bind().unwrap();
    ga.borrow_mut().data.push(1);
    gb.borrow_mut().data.push(2);
    assert_eq!(a.bind().unwrap().borrow().data, vec![1]);
    assert_eq!(b.bind().unwrap().borrow().data, vec![2]);
    assert_eq!(a.state().in_use, 1);
    assert_eq!(b.state().in_use, 1);
    drop(ga);
    assert_eq!(a.state().in_use, 0);
    assert_eq!(b.state().in_use, 1);
    drop(gb);
    assert_eq!(b.state().in_use, 0);
}

#[test]
fn another_thread_gets_another_connection() {
    let pool = pool(4);
    let bound = pool.bind().unwrap();
    let mine = bound.id();
    let theirs = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(!pool.is_bound());
            let g = pool.bind().unwrap();
            let nested = pool.bind().unwrap();
            assert_eq!(g.id(), nested.id());
            g.id()
        })
        .join()
        .unwrap()
    });
    assert_ne!(mine, theirs);
    assert_eq!(pool.state().in_use, 1);
}

fn helper_inserts(pool: &Pool<FakeManager>, value: u32) {
    let conn = pool.bind().unwrap();
    assert!(conn.borrow().in_transaction, "the caller's transaction");
    conn.borrow_mut().data.push(value);
}

#[test]
fn nested_helper_sees_the_callers_transaction() {
    let pool = pool(2);
    let conn = pool.bind().unwrap();
    conn.borrow_mut().in_transaction = true;
    helper_inserts(&pool, 7);
    helper_inserts(&pool, 8);
    assert_eq!(conn.borrow().data, vec![7, 8]);
    let id = conn.id();
    drop(conn);
    // Returned with a rollback (the fake manager clears `data`).
    let resets = pool.manager().script.resets.lock().unwrap().clone();
    assert_eq!(resets, vec![(id, ResetAction::Rollback)]);
    assert!(pool.get().unwrap().data.is_empty());
}

#[test]
#[should_panic(expected = "already borrowed")]
fn overlapping_mutable_borrows_panic() {
    let pool = pool(2);
    let outer = pool.bind().unwrap();
    let _held = outer.borrow_mut();
    let inner = pool.bind().unwrap();
    let _second = inner.borrow_mut();
}

#[test]
fn try_borrow_reports_the_overlap() {
    let pool = Pool::builder()
        .name("orders")
        .max_size(2)
        .min_idle(Some(0))
        .build(FakeManager::new())
        .unwrap();
    let outer = pool.bind().unwrap();
    let held = outer.borrow_mut();
    let inner = pool.bind().unwrap();
    assert_eq!(inner.id(), outer.id(), "id works while borrowed");
    let err = inner.try_borrow().unwrap_err();
    assert!(err.to_string().contains("'orders'"), "{err}");
    assert!(inner.try_borrow_mut().is_err());
    drop(held);
    // Several shared borrows are fine.
    let (r1, r2) = (outer.borrow(), inner.borrow());
    assert_eq!(r1.id, r2.id);
}

#[test]
fn a_panic_while_bound_rolls_back_and_unbinds() {
    let pool = pool(2);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let outer = pool.bind().unwrap();
        let _inner = pool.bind().unwrap();
        let mut conn = outer.borrow_mut();
        conn.data.push(1);
        panic!("request failed");
    }));
    assert!(result.is_err());
    assert!(!pool.is_bound());
    assert_eq!(pool.state().in_use, 0);
    assert_eq!(
        pool.stats().recovered_after_panic,
        1,
        "the connection held through the panic is rolled back and kept"
    );
    assert_eq!(pool.stats().closed.total(), 0);
    let resets = pool.manager().script.resets.lock().unwrap().clone();
    assert!(
        matches!(resets[..], [(_, ResetAction::Rollback)]),
        "{resets:?}"
    );
    // Binding works again afterwards.
    let conn = pool.bind().unwrap();
    assert!(conn.borrow().data.is_empty());
}

#[test]
fn bind_timeout_fails_like_get() {
    let pool = pool(1);
    let _held = pool.get().unwrap();
    let err = pool.bind_timeout(Duration::from_millis(30)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(!pool.is_bound());
}

#[test]
fn a_nested_helper_can_have_the_connection_closed_on_release() {
    let pool = pool(2);
    let outer = pool.bind().unwrap();
    {
        let inner = pool.bind().unwrap();
        inner.discard_on_release();
    }
    assert_eq!(pool.state().in_use, 1, "still in use by the outer guard");
    drop(outer);
    assert_eq!(pool.state().in_use, 0);
    assert_eq!(
        pool.stats().closed.get(stickypool::CloseReason::Discarded),
        1
    );
    assert!(
        pool.manager().script.resets.lock().unwrap().is_empty(),
        "not reset: closed"
    );
}
