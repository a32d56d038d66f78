//! `DieselManager` on SQLite (a file of its own) and on PostgreSQL
//! (`STICKYPOOL_POSTGRES_URL`): what a borrower leaves behind never reaches the next.
#![cfg(feature = "diesel")]

mod servers;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel::sql_types::BigInt;
use stickypool::backends::diesel::DieselManager;
use stickypool::{CloseReason, ManageConnection, Pool, ResetAction};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One backend under test: how to connect, and its way to ask "in a transaction?".
trait Backend: R2D2Connection + Send + 'static {
    fn url(test: &str) -> Option<(String, Option<servers::TempDir>)>;
    /// Whether the session is inside a transaction block.
    fn in_transaction(&mut self) -> bool;
    fn count(&mut self, table: &str) -> i64;
}

impl Backend for SqliteConnection {
    fn url(_: &str) -> Option<(String, Option<servers::TempDir>)> {
        let dir = servers::TempDir::new("diesel");
        let path = dir.path().join("test.db");
        Some((path.to_str().unwrap().to_owned(), Some(dir)))
    }

    fn in_transaction(&mut self) -> bool {
        // `BEGIN` fails inside a transaction ("cannot start a transaction within a
        // transaction").
        match self.batch_execute("BEGIN") {
            Ok(()) => {
                self.batch_execute("ROLLBACK").unwrap();
                false
            }
            Err(_) => true,
        }
    }

    fn count(&mut self, table: &str) -> i64 {
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(self)
            .unwrap()
            .n
    }
}

impl Backend for PgConnection {
    fn url(test: &str) -> Option<(String, Option<servers::TempDir>)> {
        servers::postgres_url(test).map(|url| (url, None))
    }

    fn in_transaction(&mut self) -> bool {
        // `SAVEPOINT` fails outside a transaction block, and inside an aborted one.
        match self.batch_execute("SAVEPOINT probe") {
            Ok(()) => true,
            Err(e) => !e
                .to_string()
                .contains("can only be used in transaction blocks"),
        }
    }

    fn count(&mut self, table: &str) -> i64 {
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(self)
            .unwrap()
            .n
    }
}

/// A pool of one connection (so the next borrower gets the same one) and a table.
struct Setup<C: Backend> {
    pool: Pool<DieselManager<C>>,
    manager: DieselManager<C>,
    table: String,
    _dir: Option<servers::TempDir>,
}

impl<C: Backend> Setup<C> {
    fn new(test: &str, reset: ResetAction) -> Option<Setup<C>> {
        let (url, dir) = C::url(test)?;
        let manager = DieselManager::<C>::new(url);
        let table = servers::unique("d");
        let mut conn = manager.connect().expect("connect");
        conn.batch_execute(&format!("CREATE TABLE {table} (id INT PRIMARY KEY)"))
            .expect("create table");
        let pool = Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(10))
            .reset_on_return(reset)
            .build(manager.clone())
            .expect("pool builds");
        Some(Setup {
            pool,
            manager,
            table,
            _dir: dir,
        })
    }

    /// Committed rows, seen from a connection of its own.
    fn committed_rows(&self) -> i64 {
        self.manager.connect().unwrap().count(&self.table)
    }
}

impl<C: Backend> Drop for Setup<C> {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.manager.connect() {
            let _ = conn.batch_execute(&format!("DROP TABLE IF EXISTS {}", self.table));
        }
    }
}

/// A raw `BEGIN` and an `INSERT` left open: diesel does not know of the transaction,
/// the reset rolls it back, the same connection serves the next borrower.
fn raw_begin_is_rolled_back<C: Backend>(test: &str) {
    let Some(s) = Setup::<C>::new(test, ResetAction::Rollback) else {
        return;
    };
    {
        let mut conn = s.pool.get().unwrap();
        conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (1)", s.table))
            .unwrap();
        assert!(conn.in_transaction());
    }
    let mut conn = s.pool.get().unwrap();
    assert!(
        !conn.in_transaction(),
        "the next borrower is in a transaction"
    );
    assert_eq!(conn.count(&s.table), 0, "the next borrower sees the row");
    drop(conn);
    assert_eq!(s.committed_rows(), 0);
    assert_eq!(s.pool.stats().closed.total(), 0, "kept, not replaced");
}

/// A panic inside `conn.transaction(..)`: whether it unwinds through the guard or is
/// caught while the guard is held, nothing of the transaction survives.
fn panic_in_transaction_leaves_nothing<C: Backend>(test: &str) {
    let Some(s) = Setup::<C>::new(test, ResetAction::Rollback) else {
        return;
    };
    let insert = format!("INSERT INTO {} VALUES (1)", s.table);

    // Unwinding through the guard: the pool discards the connection.
    let pool = s.pool.clone();
    let sql = insert.clone();
    let thread = std::thread::spawn(move || {
        let mut conn = pool.get().unwrap();
        let _ = conn.transaction(|c| -> QueryResult<()> {
            c.batch_execute(&sql)?;
            panic!("a bug inside the transaction");
        });
    });
    assert!(thread.join().is_err());
    assert_eq!(s.pool.stats().closed.get(CloseReason::Discarded), 1);

    // Caught while the guard is held: diesel still counts the transaction as open, so
    // the connection is broken for the pool, and closed.
    {
        let mut conn = s.pool.get().unwrap();
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = conn.transaction(|c| -> QueryResult<()> {
                c.batch_execute(&insert)?;
                panic!("a bug inside the transaction");
            });
        }));
        assert!(caught.is_err());
        assert!(conn.is_broken(), "diesel sees the transaction it opened");
    }
    assert_eq!(s.pool.stats().closed.get(CloseReason::Broken), 1);

    let mut conn = s.pool.get().unwrap();
    assert!(!conn.in_transaction());
    assert_eq!(conn.count(&s.table), 0);
    drop(conn);
    assert_eq!(s.committed_rows(), 0);
}

/// `Commit` commits what a raw `BEGIN` left open.
fn raw_begin_is_committed<C: Backend>(test: &str) {
    let Some(s) = Setup::<C>::new(test, ResetAction::Commit) else {
        return;
    };
    {
        let mut conn = s.pool.get().unwrap();
        conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (1)", s.table))
            .unwrap();
    }
    assert_eq!(s.committed_rows(), 1);
    let mut conn = s.pool.get().unwrap();
    assert!(!conn.in_transaction());
    drop(conn);
    assert_eq!(s.pool.stats().closed.total(), 0, "kept, not replaced");
}

/// A clean connection goes back and forth without errors or replacements, with every
/// reset action, and diesel's ping is the check.
fn clean_returns_keep_the_connection<C: Backend>(test: &str) {
    for reset in [
        ResetAction::Rollback,
        ResetAction::Commit,
        ResetAction::Session,
    ] {
        let Some(s) = Setup::<C>::new(test, reset) else {
            return;
        };
        for _ in 0..5 {
            let mut conn = s.pool.get().unwrap();
            conn.count(&s.table);
        }
        let stats = s.pool.stats();
        assert_eq!(stats.closed.total(), 0, "{reset:?}: {stats:?}");
        let mut conn = s.manager.connect().unwrap();
        s.manager.is_valid(&mut conn).unwrap();
    }
}

mod sqlite {
    use super::*;

    #[test]
    fn raw_begin_is_rolled_back() {
        super::raw_begin_is_rolled_back::<SqliteConnection>("sqlite raw_begin_is_rolled_back");
    }

    #[test]
    fn panic_in_transaction_leaves_nothing() {
        super::panic_in_transaction_leaves_nothing::<SqliteConnection>("sqlite panic");
    }

    #[test]
    fn raw_begin_is_committed() {
        super::raw_begin_is_committed::<SqliteConnection>("sqlite commit");
    }

    #[test]
    fn clean_returns_keep_the_connection() {
        super::clean_returns_keep_the_connection::<SqliteConnection>("sqlite clean");
    }
}

mod postgres {
    use super::*;

    #[test]
    fn raw_begin_is_rolled_back() {
        super::raw_begin_is_rolled_back::<PgConnection>("diesel postgres rollback");
    }

    #[test]
    fn panic_in_transaction_leaves_nothing() {
        super::panic_in_transaction_leaves_nothing::<PgConnection>("diesel postgres panic");
    }

    #[test]
    fn raw_begin_is_committed() {
        super::raw_begin_is_committed::<PgConnection>("diesel postgres commit");
    }

    #[test]
    fn clean_returns_keep_the_connection() {
        super::clean_returns_keep_the_connection::<PgConnection>("diesel postgres clean");
    }

    /// `BEGIN; SELECT 1/0` through diesel: the session is in an aborted transaction
    /// diesel does not know of; the reset ends it.
    #[test]
    fn an_aborted_transaction_is_rolled_back() {
        let Some(s) = Setup::<PgConnection>::new("diesel aborted", ResetAction::Rollback) else {
            return;
        };
        {
            let mut conn = s.pool.get().unwrap();
            conn.batch_execute("BEGIN").unwrap();
            assert!(conn.batch_execute("SELECT 1/0").is_err());
            assert!(conn.batch_execute("SELECT 1").is_err(), "aborted");
        }
        let mut conn = s.pool.get().unwrap();
        assert!(!conn.in_transaction());
        conn.batch_execute("SELECT 1").unwrap();
        assert_eq!(s.pool.stats().closed.total(), 0, "kept, not replaced");
    }

    /// `Session` sends `DISCARD ALL` on PostgreSQL: a temporary table is gone.
    #[test]
    fn session_reset_discards_temporary_tables() {
        let Some(s) = Setup::<PgConnection>::new("diesel session", ResetAction::Session) else {
            return;
        };
        {
            let mut conn = s.pool.get().unwrap();
            conn.batch_execute("CREATE TEMP TABLE scratch (id INT)")
                .unwrap();
        }
        let mut conn = s.pool.get().unwrap();
        let err = conn.batch_execute("SELECT * FROM scratch").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}

#[test]
fn debug_output_hides_the_password() {
    let manager = DieselManager::<PgConnection>::new("postgres://app:hunter2@db:5432/app");
    let shown = format!("{manager:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("PgConnection"), "{shown}");
}

#[test]
fn a_bad_url_is_a_clear_connect_error() {
    let manager = DieselManager::<PgConnection>::new("postgres://app:hunter2@127.0.0.1:1/app");
    let err = manager.connect().map(drop).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.is_empty());
}
