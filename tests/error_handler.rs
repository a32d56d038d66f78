//! The error handler (`HandleError`, r2d2's trait): what reaches it, with which origin,
//! how the pool keeps an error it handed over, and how often while the backend is down.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FakeError, FakeManager, SOON, wait_until};
use stickypool::{Error, ErrorOrigin, HandleError, NopErrorHandler, Pool, ResetAction};

/// Records every error it sees in place, with its pool and origin.
#[derive(Debug, Default)]
struct InPlace(Mutex<Vec<(String, ErrorOrigin, String)>>);

impl HandleError<FakeError> for InPlace {
    fn handle_error(&self, error: FakeError) {
        panic!("handled in place, so never called by value: {error}");
    }

    fn handle_error_in_place(&self, pool: &str, origin: ErrorOrigin, error: &FakeError) -> bool {
        let seen = (pool.to_owned(), origin, error.to_string());
        self.0.lock().unwrap().push(seen);
        true
    }
}

impl InPlace {
    fn origins(&self) -> Vec<ErrorOrigin> {
        self.0.lock().unwrap().iter().map(|(_, o, _)| *o).collect()
    }
}

/// A handler written for r2d2: `handle_error` only.
#[derive(Debug, Default)]
struct ByValue(Mutex<Vec<FakeError>>);

impl HandleError<FakeError> for ByValue {
    fn handle_error(&self, error: FakeError) {
        self.0.lock().unwrap().push(error);
    }
}

#[test]
fn failed_connects_checks_and_resets_reach_the_handler_with_their_origin() {
    let manager = FakeManager::new();
    manager.script.fail_attempts.lock().unwrap().push(2);
    let handler = Arc::new(InPlace::default());
    let pool = Pool::builder()
        .name("orders")
        .max_size(2)
        .check_on_borrow(Some(Duration::ZERO))
        .reset_on_return(ResetAction::Rollback)
        .error_handler(Box::new(handler.clone()))
        .build(manager.clone())
        .expect("the failed attempt is retried");
    assert_eq!(handler.origins(), [ErrorOrigin::Connect]);

    let id = pool.get().unwrap().id;
    manager.script.dead.lock().unwrap().push(id);
    manager.script.fail_reset.store(true, Ordering::SeqCst);
    // Each borrow meets the dead connection's check or serves and fails its reset.
    for _ in 0..2 {
        drop(pool.get().unwrap());
    }
    let seen = handler.0.lock().unwrap().clone();
    assert!(seen.iter().all(|(pool, _, _)| pool == "orders"), "{seen:?}");
    assert!(
        seen.contains(&(
            "orders".into(),
            ErrorOrigin::Check,
            format!("connection {id} is dead")
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, o, e)| *o == ErrorOrigin::Reset && e == "reset failed (scripted)"),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "orders".into(),
            ErrorOrigin::Connect,
            "attempt 2 refused (scripted)".into()
        )),
        "{seen:?}"
    );
}

#[test]
fn an_r2d2_handler_takes_the_error_and_the_pool_keeps_its_message() {
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let handler = Arc::new(ByValue::default());
    let err = Pool::builder()
        .max_size(1)
        .error_handler(Box::new(handler.clone()))
        .build(manager)
        .unwrap_err();
    let got = handler.0.lock().unwrap();
    assert!(!got.is_empty());
    assert_eq!(got[0].0, "connection refused (scripted)");
    // The handler owns the errors, so `build`'s error carries the message only.
    let source = err.driver_error().expect("the connect error");
    assert_eq!(source.to_string(), "connection refused (scripted)");
    assert!(source.downcast_ref::<FakeError>().is_none());
}

#[test]
fn handled_in_place_the_error_stays_the_drivers_for_get() {
    for handler in [
        None,
        Some(Box::new(NopErrorHandler) as Box<dyn HandleError<FakeError>>),
    ] {
        let manager = FakeManager::new();
        manager.script.fail_connect.store(true, Ordering::SeqCst);
        let mut builder = Pool::builder().max_size(1);
        if let Some(handler) = handler {
            builder = builder.error_handler(handler);
        }
        let err = builder.build(manager).unwrap_err();
        let source = err.driver_error().expect("the connect error");
        let driver = source
            .downcast_ref::<FakeError>()
            .expect("the driver's type");
        assert_eq!(driver.0, "connection refused (scripted)");
    }
}

#[test]
fn while_the_breaker_is_open_probes_do_not_reach_the_handler() {
    let manager = FakeManager::new();
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let handler = Arc::new(InPlace::default());
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(1))
        .error_handler(Box::new(handler.clone()))
        .build_unchecked(manager.clone());
    // Three failures open the breaker; the probes after them (backoff 10, 20, 40 ms ...)
    // are summarised once a minute, not reported each.
    assert!(wait_until(SOON, || {
        manager.script.connect_attempts.load(Ordering::SeqCst) >= 7
    }));
    assert!(matches!(pool.get(), Err(Error::Unavailable { .. })));
    assert_eq!(handler.origins(), [ErrorOrigin::Connect; 3]);

    manager.script.fail_connect.store(false, Ordering::SeqCst);
    assert!(wait_until(SOON, || pool.get().is_ok()));
    assert_eq!(handler.origins().len(), 3, "nothing failed since");
}

#[test]
fn a_panicking_error_handler_is_survived() {
    #[derive(Debug)]
    struct Panics;
    impl HandleError<FakeError> for Panics {
        fn handle_error(&self, _: FakeError) {
            panic!("handle_error panicked (scripted)");
        }
        fn handle_error_in_place(&self, _: &str, _: ErrorOrigin, _: &FakeError) -> bool {
            panic!("handle_error_in_place panicked (scripted)");
        }
    }
    let manager = FakeManager::new();
    manager.script.fail_attempts.lock().unwrap().extend([1, 2]);
    let pool = Pool::builder()
        .max_size(1)
        .error_handler(Box::new(Panics))
        .build(manager.clone())
        .expect("the failures are retried");
    assert_eq!(pool.stats().hook_panics, 2);
    drop(pool.get().expect("the pool serves"));
    assert_eq!(pool.state().connections, 1);
}
