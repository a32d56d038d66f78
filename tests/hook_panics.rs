//! User code is hostile: a panic in any manager method, customizer hook or event
//! handler, on the caller's thread or in a background job, costs at most the call it
//! happened in. After each one, every slot is usable again, `stats().hook_panics`
//! counts it, and every connection opened is closed exactly once by the end.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use common::{FakeConn, FakeError, FakeManager, SOON, Script, wait_until};
use stickypool::{
    AcquireEvent, CheckinEvent, CheckoutEvent, CloseReason, CustomizeConnection, Error,
    HandleEvent, HookPanic, Pool, PooledConnection, ReleaseEvent, ResetAction, TimeoutEvent,
};

/// Panics in the hooks the script names.
#[derive(Debug)]
struct Hooks(Arc<Script>);

impl CustomizeConnection<FakeConn, FakeError> for Hooks {
    fn on_acquire(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        self.0.maybe_panic("on_acquire");
        Ok(())
    }
    fn on_check_in(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        self.0.maybe_panic("on_check_in");
        Ok(())
    }
    fn on_release(&self, conn: FakeConn) {
        self.0.maybe_panic("on_release");
        drop(conn);
    }
}

impl HandleEvent for Hooks {
    fn handle_acquire(&self, _: AcquireEvent) {
        self.0.maybe_panic("handle_acquire");
    }
    fn handle_release(&self, _: ReleaseEvent) {
        self.0.maybe_panic("handle_release");
    }
    fn handle_checkout(&self, _: CheckoutEvent) {
        self.0.maybe_panic("handle_checkout");
    }
    fn handle_checkin(&self, _: CheckinEvent) {
        self.0.maybe_panic("handle_checkin");
    }
    fn handle_timeout(&self, _: TimeoutEvent) {
        self.0.maybe_panic("handle_timeout");
    }
}

/// A pool of one connection with every hook in place, checking every borrow and
/// resetting every return, so each hook runs on each borrow or return.
fn pool_of_one(manager: &FakeManager) -> Pool<FakeManager> {
    Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .connection_timeout(SOON)
        .check_on_borrow(Some(Duration::ZERO))
        .reset_on_return(ResetAction::Rollback)
        .connection_customizer(Box::new(Hooks(manager.script.clone())))
        .event_handler(Box::new(Hooks(manager.script.clone())))
        .build(manager.clone())
        .expect("build")
}

/// The pool still serves, counted the panic, and closes everything exactly once.
fn assert_recovered(pool: Pool<FakeManager>, manager: &FakeManager, panics: u64) {
    for _ in 0..3 {
        let conn = pool.get().expect("the slot is usable after the panic");
        drop(conn);
    }
    assert!(
        wait_until(SOON, || pool.stats().hook_panics >= panics),
        "hook panics counted: {}",
        pool.stats().hook_panics
    );
    assert_eq!(pool.state().connections, 1);
    drop(pool);
    let script = &manager.script;
    assert!(
        wait_until(SOON, || script.live() == 0),
        "live {}",
        script.live()
    );
    script.assert_all_closed_once();
}

/// Each hook that runs on a borrow or a return, on the borrowing thread.
#[test]
fn a_panic_in_any_borrow_or_return_hook_frees_the_slot() {
    for hook in [
        "is_valid",
        "has_broken",
        "reset",
        "on_check_in",
        "on_release",
        "drop",
        "handle_checkout",
        "handle_checkin",
        "handle_release",
        "handle_acquire",
    ] {
        let manager = FakeManager::new();
        let pool = pool_of_one(&manager);
        // Warm: one connection, so every hook has run once without panicking.
        drop(pool.get().unwrap());
        manager.script.panic_in(hook, 1);
        // The borrow and return that hit the panic; the borrow itself may still
        // succeed (a failed check is retried with a new connection).
        if let Ok(conn) = pool.get() {
            drop(conn);
        }
        // Hooks on the close path run when the broken connection is closed; make sure
        // one is closed for the close-path hooks.
        if matches!(hook, "on_release" | "drop" | "handle_release") {
            PooledConnection::discard(pool.get().unwrap());
        }
        if hook == "handle_acquire" {
            PooledConnection::discard(pool.get().unwrap());
        }
        // A hook that had the connection in hand may have left it half-changed: the
        // pool closed it rather than hand it out again.
        if matches!(hook, "is_valid" | "has_broken" | "reset" | "on_check_in") {
            let closed = pool.stats().closed;
            let expected = if hook == "reset" || hook == "on_check_in" {
                CloseReason::ResetFailed
            } else {
                CloseReason::Broken
            };
            assert_eq!(closed.get(expected), 1, "{hook}: {closed:?}");
        }
        assert_recovered(pool, &manager, 1);
        assert_eq!(
            manager.script.panics.lock().unwrap()[hook],
            0,
            "{hook} was scripted to panic but never ran"
        );
    }
}

#[test]
fn a_panicking_connect_is_retried_and_then_serves() {
    let manager = FakeManager::new();
    manager.script.panic_in("connect", 2);
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .connection_timeout(SOON)
        .build(manager.clone())
        .unwrap();
    // A lone borrower gets a connection: the panicking attempts did not leave
    // `pending` counted.
    drop(pool.get().expect("served after two panicking connects"));
    assert_eq!(pool.stats().connect_failures, 2);
    assert_recovered(pool, &manager, 2);
}

#[test]
fn a_panicking_on_acquire_discards_the_new_connection_and_retries() {
    let manager = FakeManager::new();
    let pool = pool_of_one(&manager);
    manager.script.panic_in("on_acquire", 1);
    drop(pool.get().expect("served after on_acquire panicked once"));
    // The connection on_acquire panicked on was closed, not handed out.
    assert_eq!(manager.script.opened.load(Ordering::SeqCst), 2);
    assert_recovered(pool, &manager, 1);
}

#[test]
fn build_reports_a_panicking_connect_as_such() {
    let manager = FakeManager::new();
    manager.script.panic_in("connect", u32::MAX);
    let err = Pool::builder()
        .max_size(2)
        .connection_timeout(SOON)
        .build(manager.clone())
        .unwrap_err();
    let Error::Connect(cause) = &err else {
        panic!("expected a connect error, got {err:?}");
    };
    let panic = cause.downcast_ref::<HookPanic>().expect("a HookPanic");
    assert_eq!(panic.hook(), "ManageConnection::connect");
    assert!(err.to_string().contains("panicked"), "{err}");
}

#[test]
fn a_panicking_timeout_handler_still_times_out() {
    let manager = FakeManager::new();
    let pool = pool_of_one(&manager);
    let held = pool.get().unwrap();
    manager.script.panic_in("handle_timeout", 1);
    let err = pool.get_timeout(Duration::from_millis(5)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    drop(held);
    assert_recovered(pool, &manager, 1);
}

#[test]
fn a_panic_in_a_background_job_does_not_stop_it() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(1))
        .keepalive_interval(Some(Duration::from_millis(10)))
        .build(manager.clone())
        .unwrap();
    manager.script.panic_in("is_valid", 3);
    // The keepalive pings, panics three times (each closes the connection, which is
    // replaced), then pings successfully: it kept running.
    let script = &manager.script;
    assert!(wait_until(SOON, || {
        script.panics.lock().unwrap()["is_valid"] == 0
            && script.valid_calls.load(Ordering::SeqCst) >= 5
    }));
    assert!(pool.stats().closed.get(CloseReason::KeepaliveFailed) >= 3);
    assert_recovered(pool, &manager, 3);
}

#[test]
fn hooks_that_panic_while_the_thread_unwinds_do_not_abort_the_process() {
    // The hooks of the return, of the recovery after a panic (`can_reset`, `has_broken`,
    // the check, the rollback, `on_check_in`: a panic in one fails the recovery) and of closing
    // (reached through a failed rollback).
    let hooks = [
        "handle_checkin",
        "can_reset",
        "has_broken",
        "is_valid",
        "reset",
        "on_check_in",
        "handle_release",
        "on_release",
        "drop",
    ];
    for hook in hooks {
        let manager = FakeManager::new();
        let pool = pool_of_one(&manager);
        let closing = ["handle_release", "on_release", "drop"].contains(&hook);
        let result = thread::scope(|s| {
            s.spawn(|| {
                let _conn = pool.get().unwrap();
                manager.script.panic_in(hook, 1);
                if closing {
                    manager.script.fail_reset.store(true, Ordering::SeqCst);
                }
                panic!("the borrower panics while holding a connection");
            })
            .join()
        });
        assert!(result.is_err(), "the borrower's own panic reaches join");
        manager.script.fail_reset.store(false, Ordering::SeqCst);
        let kept = hook == "handle_checkin";
        assert_eq!(
            pool.stats().closed.get(CloseReason::Discarded),
            u64::from(!kept),
            "{hook}"
        );
        assert_eq!(
            pool.stats().recovered_after_panic,
            u64::from(kept),
            "{hook}"
        );
        assert_recovered(pool, &manager, 1);
    }
}

/// A value in a connection's extensions whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("extension value dropped");
    }
}

/// A value the caller stored in a connection's extensions is user code too: when the
/// pool closes that connection (discarded, retired on return, evicted while idle,
/// closed with the pool), a panic in the value's `Drop` is caught and the slot is
/// freed. Before, the panic reached the caller and the slot stayed taken for good, so a
/// pool of one was dead.
#[test]
fn a_panicking_drop_of_an_extension_value_loses_no_slot() {
    type Close = fn(&Pool<FakeManager>, stickypool::PooledConnection<'_, FakeManager>);
    let closes: [(&str, Close); 3] = [
        ("discard", |_, conn| PooledConnection::discard(conn)),
        ("a return after retire_all", |pool, conn| {
            pool.retire_all();
            drop(conn);
        }),
        ("retain", |pool, conn| {
            drop(conn);
            pool.retain(|_| false);
        }),
    ];
    for (how, close) in closes {
        let manager = FakeManager::new();
        let pool = Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .connection_timeout(SOON)
            .build(manager.clone())
            .expect("build");
        let mut conn = pool.get().expect("a connection");
        stickypool::PooledConnection::extensions_mut(&mut conn).insert(PanicsOnDrop);
        let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| close(&pool, conn)));
        assert!(closed.is_ok(), "{how}: the panic reached the caller");
        let again = pool.get_timeout(SOON);
        assert!(
            again.is_ok(),
            "{how}: the slot was lost: {:?}",
            pool.state()
        );
        drop(again);
        assert_eq!(pool.stats().hook_panics, 1, "{how}");
    }
    // And when the pool itself closes the connection.
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .build(manager.clone())
        .expect("build");
    let mut conn = pool.get().expect("a connection");
    stickypool::PooledConnection::extensions_mut(&mut conn).insert(PanicsOnDrop);
    drop(conn);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(pool)));
    assert!(
        dropped.is_ok(),
        "closing the pool: the panic reached the caller"
    );
    assert!(wait_until(SOON, || manager.script.live() == 0));
    manager.script.assert_all_closed_once();
}
