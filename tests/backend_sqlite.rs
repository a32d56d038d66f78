//! `SqliteManager`: shared in-memory databases, files with an init hook, resets.
#![cfg(feature = "sqlite")]

mod servers;

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use stickypool::backends::sqlite::SqliteManager;
use stickypool::{CloseReason, Error, ManageConnection, Pool, PooledConnection, ResetAction};

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[test]
fn memory_database_is_shared_by_the_pool_connections() {
    let pool = servers::pool(SqliteManager::memory(), 2, ResetAction::Keep);
    let a = pool.get().expect("first connection");
    let b = pool.get().expect("second connection");
    assert_ne!(
        PooledConnection::id(&a),
        PooledConnection::id(&b),
        "two different pooled connections"
    );

    a.execute_batch("CREATE TABLE shared (x INTEGER); INSERT INTO shared VALUES (1), (2);")
        .unwrap();
    assert_eq!(
        count(&b, "shared"),
        2,
        "the other connection sees the same database"
    );
    b.execute("INSERT INTO shared VALUES (3)", []).unwrap();
    assert_eq!(count(&a, "shared"), 3);
}

#[test]
fn memory_databases_of_two_managers_are_separate() {
    let one = servers::pool(SqliteManager::memory(), 1, ResetAction::Keep);
    let two = servers::pool(SqliteManager::memory(), 1, ResetAction::Keep);
    one.get()
        .unwrap()
        .execute_batch("CREATE TABLE only_in_one (x)")
        .unwrap();
    let err = two
        .get()
        .unwrap()
        .execute_batch("SELECT * FROM only_in_one");
    assert!(err.is_err(), "the table exists only in the first database");
}

#[test]
fn memory_database_outlives_the_pool_connections() {
    // `min_idle` 0, so nothing reopens the connection behind the test's back (the
    // default, `max_size`, refills at once after a discard).
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .build(SqliteManager::memory())
        .unwrap();
    let conn = pool.get().unwrap();
    conn.execute_batch("CREATE TABLE kept (x); INSERT INTO kept VALUES (42);")
        .unwrap();
    let id = PooledConnection::id(&conn);
    PooledConnection::discard(conn); // the pool's only connection is closed
    servers::wait_until(
        "the discarded connection is gone",
        Duration::from_secs(5),
        || pool.state().connections == 0,
    );

    let conn = pool.get().expect("a new connection");
    assert_ne!(PooledConnection::id(&conn), id);
    assert_eq!(count(&conn, "kept"), 1, "the data survived");
}

#[test]
fn concurrent_writers_on_a_memory_database_wait_instead_of_failing() {
    let pool = servers::pool(SqliteManager::memory(), 4, ResetAction::Rollback);
    pool.get()
        .unwrap()
        .execute_batch("CREATE TABLE w (t INTEGER, i INTEGER)")
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..50 {
                    let conn = pool.get().expect("borrow");
                    conn.execute("INSERT INTO w VALUES (?1, ?2)", [t, i])
                        .expect("insert");
                    let _: i64 = conn
                        .query_row("SELECT COUNT(*) FROM w", [], |r| r.get(0))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(count(&pool.get().unwrap(), "w"), 200);
}

#[test]
fn file_database_with_a_wal_init_hook() {
    let dir = servers::TempDir::new("sqlite-wal");
    let path = dir.path().join("app.db");
    let manager = SqliteManager::file(&path).with_init(|conn| {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")
    });
    assert_eq!(manager.path(), Some(path.as_path()));
    let pool = servers::pool(manager, 2, ResetAction::Rollback);

    let writer = pool.get().unwrap();
    let mode: String = writer
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    writer
        .execute_batch("CREATE TABLE f (x); INSERT INTO f VALUES (1);")
        .unwrap();
    assert!(dir.path().join("app.db-wal").exists(), "WAL file in use");

    // WAL: a reader is not blocked by an open write transaction, and sees the last
    // committed state.
    writer
        .execute_batch("BEGIN; INSERT INTO f VALUES (2);")
        .unwrap();
    let reader = pool.get().unwrap();
    let mode: String = reader
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the hook ran on the second connection too");
    assert_eq!(count(&reader, "f"), 1);
    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&reader, "f"), 2);
}

#[test]
fn init_hook_error_is_the_rusqlite_error() {
    let manager = SqliteManager::memory().with_init(|conn| conn.execute_batch("NOT SQL AT ALL"));
    let direct = manager.connect().expect_err("the hook fails");
    assert!(
        matches!(
            direct,
            rusqlite::Error::SqlInputError { .. } | rusqlite::Error::SqliteFailure(..)
        ),
        "{direct:?}"
    );

    let started = std::time::Instant::now();
    let err = Pool::builder()
        .max_size(2)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(2))
        .build(manager)
        .expect_err("build fails");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fails fast: {:?}",
        started.elapsed()
    );
    let source = match &err {
        Error::Connect(e) => e.clone(),
        Error::Timeout {
            last_error: Some(e),
            ..
        } => e.clone(),
        other => panic!("unexpected error {other:?}"),
    };
    assert!(
        source.downcast_ref::<rusqlite::Error>().is_some(),
        "{source:?}"
    );
    assert!(err.to_string().contains("syntax error"), "{err}");
}

#[test]
fn open_flags_are_honoured() {
    let dir = servers::TempDir::new("sqlite-ro");
    let path = dir.path().join("ro.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE r (x); INSERT INTO r VALUES (1);")
        .unwrap();
    let manager = SqliteManager::file(&path).with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY);
    let pool = servers::pool(manager, 1, ResetAction::Keep);
    let conn = pool.get().unwrap();
    assert_eq!(count(&conn, "r"), 1);
    assert!(
        conn.execute("INSERT INTO r VALUES (2)", []).is_err(),
        "read-only"
    );
}

#[test]
fn rollback_on_return_leaves_no_transaction_or_data() {
    let pool = servers::pool(SqliteManager::memory(), 1, ResetAction::Rollback);
    pool.get()
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let id;
    {
        let conn = pool.get().unwrap();
        id = PooledConnection::id(&conn);
        conn.execute_batch("BEGIN; INSERT INTO t VALUES (1);")
            .unwrap();
        assert!(!conn.is_autocommit());
    }
    let conn = pool.get().unwrap();
    assert_eq!(
        PooledConnection::id(&conn),
        id,
        "the same connection came back"
    );
    assert!(conn.is_autocommit(), "no transaction left open");
    assert_eq!(count(&conn, "t"), 0, "the insert was rolled back");
}

#[test]
fn commit_on_return_commits_the_open_transaction() {
    let pool = servers::pool(SqliteManager::memory(), 2, ResetAction::Commit);
    let observer = pool.get().unwrap();
    observer.execute_batch("CREATE TABLE t (x)").unwrap();
    {
        let conn = pool.get().unwrap();
        conn.execute_batch("BEGIN; INSERT INTO t VALUES (1);")
            .unwrap();
    }
    assert_eq!(count(&observer, "t"), 1, "committed on return");
    drop(observer);
    let conn = pool.get().unwrap();
    assert!(conn.is_autocommit());
}

#[test]
fn reset_without_a_transaction_does_nothing() {
    let manager = SqliteManager::memory();
    let mut conn = manager.connect().unwrap();
    // Outside a transaction a ROLLBACK or COMMIT statement would fail ("no transaction
    // is active"); the reset does not send one.
    assert!(conn.execute_batch("ROLLBACK").is_err());
    for action in [
        ResetAction::Rollback,
        ResetAction::Commit,
        ResetAction::Session,
    ] {
        manager.reset(&mut conn, action).expect("nothing to do");
    }
    assert!(conn.is_autocommit());
}

#[test]
fn validity_broken_and_detach() {
    let pool = servers::pool(SqliteManager::memory(), 2, ResetAction::Rollback);
    let mut conn = pool.get().unwrap();
    pool.manager().is_valid(&mut conn).expect("SELECT 1");
    assert!(!pool.manager().has_broken(&mut conn));
    conn.execute_batch("CREATE TABLE d (x); INSERT INTO d VALUES (1);")
        .unwrap();

    let before = pool.state().connections;
    let raw: Connection = PooledConnection::detach(conn);
    // The slot is freed (and refilled at once to min_idle, which is max_size here).
    assert_eq!(pool.stats().closed.get(CloseReason::Detached), 1);
    assert!(pool.state().connections <= before);
    assert_eq!(count(&raw, "d"), 1, "the detached connection still works");
    assert_eq!(count(&pool.get().unwrap(), "d"), 1);
}

#[test]
fn the_busy_timeout_is_set_on_every_connection_before_the_init_hook() {
    let busy_ms = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap()
    };
    let default = SqliteManager::memory().connect().unwrap();
    assert_eq!(busy_ms(&default), 5_000);

    let seen_by_init = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let seen = seen_by_init.clone();
    let manager = SqliteManager::memory()
        .busy_timeout(Duration::from_millis(1_250))
        .with_init(move |conn| {
            let ms: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
            seen.store(ms, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
    let conn = manager.connect().unwrap();
    assert_eq!(busy_ms(&conn), 1_250);
    assert_eq!(
        seen_by_init.load(std::sync::atomic::Ordering::SeqCst),
        1_250
    );
}

/// The driver is re-exported: its types and macros through `stickypool::rusqlite` are
/// the very ones the pool's connections have.
#[test]
fn the_driver_is_reexported() {
    use stickypool::rusqlite::{self, OptionalExtension, params};
    let pool = Pool::builder()
        .max_size(1)
        .build(SqliteManager::memory())
        .unwrap();
    let conn = pool.get().unwrap();
    let conn: &rusqlite::Connection = &conn;
    conn.execute_batch("CREATE TABLE reexported (x)").unwrap();
    conn.execute("INSERT INTO reexported VALUES (?1)", params![7])
        .unwrap();
    let x: Option<i64> = conn
        .query_row("SELECT x FROM reexported", [], |row| row.get(0))
        .optional()
        .unwrap();
    assert_eq!(x, Some(7));
}
