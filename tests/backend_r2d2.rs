//! Any r2d2 manager and customizer in a stickypool pool, as they are.
#![cfg(feature = "r2d2")]

mod servers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use stickypool::backends::r2d2::WithReset;
use stickypool::{CloseReason, Error, ManageConnection, Pool, PooledConnection, ResetAction};

/// A small r2d2 manager, written against r2d2's own trait.
#[derive(Debug, Default)]
struct Counters {
    connects: AtomicUsize,
    validations: AtomicUsize,
    broken_checks: AtomicUsize,
    fail_connect: AtomicBool,
}

#[derive(Debug)]
struct FakeConn {
    id: usize,
    broken: bool,
    invalid: bool,
    in_transaction: bool,
}

#[derive(Debug, Clone, Default)]
struct FakeR2d2Manager(Arc<Counters>);

#[derive(Debug)]
struct FakeError(&'static str);

impl std::fmt::Display for FakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for FakeError {}

impl r2d2::ManageConnection for FakeR2d2Manager {
    type Connection = FakeConn;
    type Error = FakeError;

    fn connect(&self) -> Result<FakeConn, FakeError> {
        if self.0.fail_connect.load(Ordering::SeqCst) {
            return Err(FakeError("refused by the fake server"));
        }
        let id = self.0.connects.fetch_add(1, Ordering::SeqCst);
        Ok(FakeConn {
            id,
            broken: false,
            invalid: false,
            in_transaction: false,
        })
    }

    fn is_valid(&self, conn: &mut FakeConn) -> Result<(), FakeError> {
        self.0.validations.fetch_add(1, Ordering::SeqCst);
        if conn.invalid {
            Err(FakeError("ping failed"))
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut FakeConn) -> bool {
        self.0.broken_checks.fetch_add(1, Ordering::SeqCst);
        conn.broken
    }
}

fn pool(manager: FakeR2d2Manager) -> Pool<FakeR2d2Manager> {
    Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_secs(2))
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager)
        .expect("pool builds")
}

#[test]
fn connect_validity_and_broken_are_forwarded() {
    let manager = FakeR2d2Manager::default();
    let counters = manager.0.clone();
    let pool = pool(manager);

    let mut conn = pool.get().expect("borrow");
    let first = conn.id;
    assert!(counters.connects.load(Ordering::SeqCst) >= 1);
    assert!(
        counters.validations.load(Ordering::SeqCst) >= 1,
        "is_valid on borrow"
    );
    pool.manager().is_valid(&mut conn).expect("forwarded");

    // r2d2's has_broken decides on return.
    conn.broken = true;
    drop(conn);
    assert!(counters.broken_checks.load(Ordering::SeqCst) >= 1);
    let conn = pool.get().expect("borrow again");
    assert_ne!(conn.id, first, "the broken connection was closed");
    drop(conn);

    // r2d2's is_valid decides on borrow.
    let mut conn = pool.get().unwrap();
    let invalid = conn.id;
    conn.invalid = true;
    drop(conn);
    let conn = pool.get().unwrap();
    assert_ne!(
        conn.id, invalid,
        "the invalid connection was closed on borrow"
    );
}

#[test]
fn without_a_reset_reset_on_return_is_refused_at_build() {
    let err = Pool::builder()
        .reset_on_return(ResetAction::Rollback)
        .build(FakeR2d2Manager::default())
        .unwrap_err();
    let Error::Config { field, reason } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*field, "reset_on_return");
    assert!(reason.contains("WithReset"), "{reason}");
    // Without `reset_on_return` the connection comes back as the borrower left it,
    // as in r2d2.
    let pool = pool(FakeR2d2Manager::default());
    let id = {
        let mut conn = pool.get().unwrap();
        conn.in_transaction = true;
        conn.id
    };
    let conn = pool.get().unwrap();
    assert_eq!(conn.id, id);
    assert!(conn.in_transaction);
}

#[test]
fn with_reset_runs_on_every_return_and_a_failure_closes() {
    let resets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = resets.clone();
    let manager = WithReset::new(FakeR2d2Manager::default(), move |conn, action| {
        seen.lock().unwrap().push(action);
        if conn.invalid {
            return Err(FakeError("rollback failed"));
        }
        conn.in_transaction = false;
        Ok(())
    });
    let pool = Pool::builder()
        .max_size(1)
        .reset_on_return(ResetAction::Rollback)
        .build(manager)
        .unwrap();
    let id = {
        let mut conn = pool.get().unwrap();
        conn.in_transaction = true;
        conn.id
    };
    let conn = pool.get().unwrap();
    assert_eq!(conn.id, id);
    assert!(!conn.in_transaction, "rolled back on return");
    drop(conn);
    assert_eq!(*resets.lock().unwrap(), [ResetAction::Rollback; 2]);
    // The reset fails: the connection is closed, not handed out.
    let failing = {
        let mut conn = pool.get().unwrap();
        conn.invalid = true;
        conn.id
    };
    assert_eq!(pool.stats().closed.get(CloseReason::ResetFailed), 1);
    assert_ne!(pool.get().unwrap().id, failing);
}

#[test]
fn connect_errors_reach_the_caller() {
    let manager = FakeR2d2Manager::default();
    manager.0.fail_connect.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let err = Pool::builder()
        .max_size(2)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(2))
        .build(manager)
        .expect_err("connect fails");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        err.to_string().contains("refused by the fake server"),
        "{err}"
    );
}

#[test]
fn detach_returns_the_r2d2_connection() {
    let pool = pool(FakeR2d2Manager::default());
    let conn = pool.get().unwrap();
    let before = pool.state().connections;
    let raw: FakeConn = PooledConnection::detach(conn);
    assert!(!raw.broken);
    assert_eq!(pool.stats().closed.get(CloseReason::Detached), 1);
    // The pool no longer counts it, and replaces it (min_idle is max_size) at once.
    assert!(pool.state().connections <= before);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.state().connections != before {
        assert!(std::time::Instant::now() < deadline, "{:?}", pool.state());
        std::thread::yield_now();
    }
}

#[derive(Debug, Default)]
struct R2d2Hooks {
    acquired: AtomicUsize,
    released: AtomicUsize,
}

#[derive(Debug, Clone, Default)]
struct Customizer(Arc<R2d2Hooks>);

impl r2d2::CustomizeConnection<FakeConn, FakeError> for Customizer {
    fn on_acquire(&self, conn: &mut FakeConn) -> Result<(), FakeError> {
        self.0.acquired.fetch_add(1, Ordering::SeqCst);
        conn.in_transaction = false;
        Ok(())
    }

    fn on_release(&self, _conn: FakeConn) {
        self.0.released.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn r2d2_customizer_hooks_are_forwarded() {
    let customizer = Customizer::default();
    let hooks = customizer.0.clone();
    let pool = Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::from_secs(2))
        .connection_customizer(Box::new(customizer))
        .build(FakeR2d2Manager::default())
        .unwrap();
    let conn = pool.get().unwrap();
    assert_eq!(hooks.acquired.load(Ordering::SeqCst), 1);
    PooledConnection::discard(conn);
    servers::wait_until("on_release ran", Duration::from_secs(5), || {
        hooks.released.load(Ordering::SeqCst) == 1
    });
}

/// A real r2d2 manager from crates.io, unchanged.
#[test]
fn r2d2_sqlite_manager_works_unchanged() {
    let dir = servers::TempDir::new("r2d2-sqlite");
    let manager = r2d2_sqlite::SqliteConnectionManager::file(dir.path().join("r2d2.db"));
    let pool = Pool::builder().max_size(2).build(manager).unwrap();
    let conn = pool.get().unwrap();
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (7);")
        .unwrap();
    let other = pool.get().unwrap();
    let x: i64 = other
        .query_row("SELECT x FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(x, 7);
}

/// The `redis` crate's own r2d2 support, unchanged.
#[cfg(feature = "redis")]
#[test]
fn redis_r2d2_manager_works_unchanged() {
    let Some(url) = servers::redis_url("redis_r2d2_manager_works_unchanged") else {
        return;
    };
    let client = redis::Client::open(url.as_str()).unwrap();
    let pool = Pool::builder().max_size(2).build(client).unwrap();
    let mut conn = pool.get().unwrap();
    let pong: String = redis::cmd("PING").query(&mut *conn).unwrap();
    assert_eq!(pong, "PONG");
}
