//! `PostgresManager` through PgBouncer (`STICKYPOOL_PGBOUNCER_*_URL`, Debian's
//! pgbouncer, in front of `STICKYPOOL_POSTGRES_URL`'s server): what works in session
//! and in transaction pool mode. Each test asserts what PgBouncer actually does.
//!
//! In session mode a pool connection keeps one server connection from connect to
//! close, and everything works as against the server itself, except the
//! `statement_timeout` startup option (see `statement_timeout_*`). In transaction
//! mode each transaction (each statement, outside one) runs on whichever server
//! connection PgBouncer hands out: session state (`SET`, prepared statements) is
//! shared with other clients and lost between statements. The transaction-mode
//! database has `pool_size=2` and PgBouncer reuses server connections LIFO, which
//! makes which server connection serves a statement predictable; the tests of this
//! file run one at a time so that no other client takes one meanwhile.
#![cfg(feature = "postgres")]

mod servers;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, SimpleQueryMessage};
use stickypool::backends::postgres::PostgresManager;
use stickypool::{ManageConnection, Pool, ResetAction};

/// The tests share PgBouncer's two server connections of the transaction-mode
/// database.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Urls {
    server: String,
    session: String,
    transaction: String,
}

fn urls(test: &str) -> Option<Urls> {
    Some(Urls {
        server: servers::postgres_url(test)?,
        session: servers::env_or_skip(test, servers::PGBOUNCER_SESSION_URL)?,
        transaction: servers::env_or_skip(test, servers::PGBOUNCER_TRANSACTION_URL)?,
    })
}

fn manager(url: &str) -> PostgresManager {
    PostgresManager::from_url(url).expect("URL parses")
}

fn pool(url: &str, max_size: u32, reset: ResetAction) -> Pool<PostgresManager> {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .reset_on_return(reset)
        .build(manager(url))
        .expect("pool builds")
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn show(conn: &mut Client, setting: &str) -> String {
    conn.query_one(&format!("SHOW {setting}"), &[])
        .expect("SHOW")
        .get(0)
}

fn backend_pid(conn: &mut Client) -> i32 {
    conn.query_one("SELECT pg_backend_pid()", &[])
        .expect("pg_backend_pid")
        .get(0)
}

/// The SQLSTATE and message of a server error (PgBouncer's own errors come the same
/// way), or the driver's text.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A table on the server itself, dropped at the end.
struct Table {
    server: String,
    name: String,
}

impl Table {
    fn create(server: &str) -> Table {
        let name = servers::unique("pgb");
        connect(server)
            .batch_execute(&format!("CREATE TABLE {name} (id INT NOT NULL)"))
            .expect("create table");
        Table {
            server: server.to_owned(),
            name,
        }
    }

    fn ids(&self) -> Vec<i32> {
        let sql = format!("SELECT id FROM {} ORDER BY id", self.name);
        let mut conn = connect(&self.server);
        conn.query(&sql, &[])
            .expect("select")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Ok(mut conn) = Client::connect(&self.server, NoTls) {
            let _ = conn.batch_execute(&format!("DROP TABLE IF EXISTS {}", self.name));
        }
    }
}

/// `ResetAction::Rollback` works in both modes: a transaction the borrower left open
/// is rolled back on return, so the next borrower's autocommit insert is not swallowed
/// by it. (In transaction mode the open transaction holds its server connection until
/// the `ROLLBACK` releases it.)
#[test]
fn rollback_reset_ends_an_open_transaction_in_both_modes() {
    const TEST: &str = "rollback_reset_ends_an_open_transaction_in_both_modes";
    let Some(urls) = urls(TEST) else { return };
    let _serial = serial();
    for (mode, url) in [
        ("session", &urls.session),
        ("transaction", &urls.transaction),
    ] {
        let table = Table::create(&urls.server);
        let pool = pool(url, 1, ResetAction::Rollback);
        {
            let mut conn = pool.get().expect("borrow");
            conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (1)", table.name))
                .expect("open a transaction");
        }
        {
            let mut conn = pool.get().expect("borrow again");
            conn.batch_execute(&format!("INSERT INTO {} VALUES (2)", table.name))
                .expect("autocommit insert");
        }
        assert_eq!(table.ids(), vec![2], "{mode} mode: only the committed row");
    }
}

/// `ResetAction::Session` works in session mode: the pool connection keeps its server
/// connection (same backend pid on every borrow), and `SET`, temporary tables,
/// `LISTEN` and advisory locks are gone for the next borrower.
#[test]
fn session_reset_clears_session_state_in_session_mode() {
    const TEST: &str = "session_reset_clears_session_state_in_session_mode";
    let Some(urls) = urls(TEST) else { return };
    let _serial = serial();
    let default_work_mem = show(&mut connect(&urls.server), "work_mem");
    let pool = pool(&urls.session, 1, ResetAction::Session);
    let pid = {
        let mut conn = pool.get().expect("borrow");
        conn.batch_execute(
            "SET work_mem = '1234kB'; CREATE TEMP TABLE sp_pgb_temp (x INT); \
             LISTEN sp_pgb_channel; SELECT pg_advisory_lock(4242)",
        )
        .expect("leave session state");
        backend_pid(&mut conn)
    };
    let mut conn = pool.get().expect("borrow again");
    assert_eq!(backend_pid(&mut conn), pid, "the same server connection");
    assert_eq!(show(&mut conn, "work_mem"), default_work_mem);
    let row = conn
        .query_one(
            "SELECT to_regclass('sp_pgb_temp') IS NULL, \
                    (SELECT count(*) FROM pg_listening_channels()), \
                    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                       AND pid = pg_backend_pid())",
            &[],
        )
        .expect("inspect the session");
    assert!(row.get::<_, bool>(0), "temporary table dropped");
    assert_eq!(row.get::<_, i64>(1), 0, "no LISTEN left");
    assert_eq!(row.get::<_, i64>(2), 0, "no advisory lock left");
}

/// In transaction mode session state belongs to a server connection, not to the pool
/// connection: a `SET` outside a transaction by one client is seen by another client
/// while the first still holds its pool connection (both are served by the server
/// connection released last), and the first one's `ResetAction::Session` on return
/// runs on whichever server connection PgBouncer hands it, here resetting what the
/// other client sees. The reset itself succeeds. `SET LOCAL` inside a transaction
/// stays inside it. So behind PgBouncer in transaction mode: set session state only
/// with `SET LOCAL` in a transaction (or server-side, `ALTER ROLE ... SET`), and the
/// `Session` reset isolates nothing; `Rollback` is the reset to use.
#[test]
fn transaction_mode_shares_session_state_between_clients() {
    const TEST: &str = "transaction_mode_shares_session_state_between_clients";
    let Some(urls) = urls(TEST) else { return };
    let _serial = serial();
    let default_work_mem = show(&mut connect(&urls.server), "work_mem");
    let pool = pool(&urls.transaction, 2, ResetAction::Session);
    let mut a = pool.get().expect("borrow a");
    let mut b = pool.get().expect("borrow b");

    a.batch_execute("SET work_mem = '1234kB'").expect("SET");
    assert_eq!(
        show(&mut b, "work_mem"),
        "1234kB",
        "b sees a's SET while a still holds its pool connection"
    );
    assert_eq!(
        backend_pid(&mut a),
        backend_pid(&mut b),
        "one server connection"
    );

    drop(a); // ResetAction::Session: RESET ALL on the server connection released last
    assert_eq!(
        show(&mut b, "work_mem"),
        default_work_mem,
        "a's reset on return reset b's view"
    );

    b.batch_execute("BEGIN; SET LOCAL work_mem = '2222kB'")
        .expect("SET LOCAL");
    assert_eq!(show(&mut b, "work_mem"), "2222kB", "inside the transaction");
    b.batch_execute("COMMIT").expect("COMMIT");
    let mut c = pool.get().expect("borrow c");
    assert_eq!(
        show(&mut c, "work_mem"),
        default_work_mem,
        "SET LOCAL ended"
    );
}

/// The `postgres` crate's prepared statements (`Client::prepare`, then `query` with
/// the statement): in session mode they work, whatever other clients do. In transaction
/// mode (PgBouncer 1.18 keeps no prepared statements of its own; 1.21 added
/// `max_prepared_statements`) the statement exists only on the server connection that
/// prepared it: once another client holds that one in a transaction, executing the
/// statement fails with SQLSTATE 26000 `prepared statement "s0" does not exist`. Plain
/// `query("... $1", &[..])` prepares and executes in separate round trips too, so under
/// concurrency it can fail the same way; `batch_execute`/`simple_query` (one message)
/// are safe.
#[test]
fn prepared_statements_work_in_session_mode_and_break_in_transaction_mode() {
    const TEST: &str = "prepared_statements_work_in_session_mode_and_break_in_transaction_mode";
    let Some(urls) = urls(TEST) else { return };
    let _serial = serial();
    for (mode, url) in [
        ("session", &urls.session),
        ("transaction", &urls.transaction),
    ] {
        let pool = pool(url, 2, ResetAction::Rollback);
        let mut a = pool.get().expect("borrow a");
        let mut b = pool.get().expect("borrow b");
        let statement = a.prepare("SELECT $1::INT + 1").expect("prepare");
        // b takes the server connection released last: the one a prepared on.
        b.batch_execute("BEGIN; SELECT 1")
            .expect("b opens a transaction");
        let result = a.query_one(&statement, &[&41]);
        match mode {
            "session" => {
                assert_eq!(result.expect("execute").get::<_, i32>(0), 42);
            }
            _ => {
                let e = result.expect_err("the statement is on the other server connection");
                assert_eq!(
                    e.code(),
                    Some(&SqlState::INVALID_SQL_STATEMENT_NAME),
                    "{}",
                    describe(&e)
                );
                assert!(describe(&e).contains("does not exist"), "{}", describe(&e));
            }
        }
        b.batch_execute("ROLLBACK").expect("b ends its transaction");
        drop(statement);
    }
}

/// `PostgresManager::statement_timeout` sends `options=-c statement_timeout=...` in the
/// startup packet. PgBouncer with its defaults refuses the connection in both modes
/// (`08P01: unsupported startup parameter: options`). With
/// `ignore_startup_parameters = options` it connects but drops the option: the session
/// has the server's `statement_timeout` (0 here) and a long statement runs to the end.
/// What does bound statements: in session mode a `SET statement_timeout` on the pool
/// connection (e.g. in `CustomizeConnection::on_acquire`; the `Session` reset's
/// `RESET ALL` removes it, so reset with `Rollback`), in transaction mode `SET LOCAL
/// statement_timeout` inside each transaction (a plain `SET` would leak to other
/// clients), or in either a server-side `ALTER ROLE/DATABASE ... SET statement_timeout`.
#[test]
fn statement_timeout_startup_option_is_refused_or_ignored() {
    const TEST: &str = "statement_timeout_startup_option_is_refused_or_ignored";
    let Some(urls) = urls(TEST) else { return };
    let Some(ignore_session) =
        servers::env_or_skip(TEST, servers::PGBOUNCER_IGNORE_OPTIONS_SESSION_URL)
    else {
        return;
    };
    let Some(ignore_transaction) =
        servers::env_or_skip(TEST, servers::PGBOUNCER_IGNORE_OPTIONS_TRANSACTION_URL)
    else {
        return;
    };
    let _serial = serial();
    let timeout = Duration::from_millis(200);

    // The server itself applies it.
    let mut direct = manager(&urls.server)
        .statement_timeout(timeout)
        .connect()
        .expect("connect to the server");
    assert_eq!(show(&mut direct, "statement_timeout"), "200ms");

    for (mode, url) in [
        ("session", &urls.session),
        ("transaction", &urls.transaction),
    ] {
        let e = manager(url)
            .statement_timeout(timeout)
            .connect()
            .err()
            .unwrap_or_else(|| panic!("{mode} mode: PgBouncer accepted `options`"));
        assert_eq!(
            describe(&e),
            "08P01: unsupported startup parameter: options",
            "{mode} mode"
        );
    }

    let server_default = show(&mut connect(&urls.server), "statement_timeout");
    for (mode, url) in [
        ("session", &ignore_session),
        ("transaction", &ignore_transaction),
    ] {
        let mut conn = manager(url)
            .statement_timeout(timeout)
            .connect()
            .unwrap_or_else(|e| panic!("{mode} mode: {}", describe(&e)));
        assert_eq!(
            show(&mut conn, "statement_timeout"),
            server_default,
            "{mode} mode: the option is dropped"
        );
        conn.batch_execute("SELECT pg_sleep(0.3)")
            .unwrap_or_else(|e| panic!("{mode} mode: not cancelled: {}", describe(&e)));
    }

    // Session mode: a SET on the pool connection holds until a RESET ALL.
    let mut conn = manager(&urls.session).connect().expect("connect");
    conn.batch_execute("SET statement_timeout = '200ms'")
        .expect("SET");
    let e = conn
        .batch_execute("SELECT pg_sleep(5)")
        .expect_err("cancelled");
    assert_eq!(
        e.code(),
        Some(&SqlState::QUERY_CANCELED),
        "{}",
        describe(&e)
    );

    // Transaction mode: SET LOCAL in the transaction.
    let mut conn = manager(&urls.transaction).connect().expect("connect");
    let e = conn
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '200ms'; SELECT pg_sleep(5)")
        .expect_err("cancelled");
    assert_eq!(
        e.code(),
        Some(&SqlState::QUERY_CANCELED),
        "{}",
        describe(&e)
    );
    conn.batch_execute("ROLLBACK").expect("ROLLBACK");
}

/// The server backend behind the client connection `conn`, terminated from the
/// server; returns once PgBouncer has dropped its server connection (admin console
/// `SHOW SERVERS`).
fn terminate_server_connection(urls: &Urls, url: &str, conn: &mut Client) -> i32 {
    let pid = backend_pid(conn);
    let terminated: bool = connect(&urls.server)
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .expect("pg_terminate_backend")
        .get(0);
    assert!(terminated, "backend {pid} terminated");
    let admin_url = format!("{}/pgbouncer", url.rsplit_once('/').unwrap().0);
    let mut admin = connect(&admin_url);
    servers::wait_until(
        "PgBouncer dropped the terminated server connection",
        Duration::from_secs(10),
        || {
            let rows = admin.simple_query("SHOW SERVERS").expect("SHOW SERVERS");
            !rows.iter().any(|m| match m {
                SimpleQueryMessage::Row(row) => {
                    row.get("remote_pid") == Some(pid.to_string().as_str())
                }
                _ => false,
            })
        },
    );
    pid
}

/// The borrow check (an empty query) passes through PgBouncer in both modes. After the
/// server connection behind a client is terminated, they differ: in session mode
/// PgBouncer closes the client connection too, so the check fails and the pool opens a
/// new one (a new backend); in transaction mode the client connection survives and
/// the check passes: the next statement runs on another server connection.
#[test]
fn borrow_check_after_the_server_connection_dies() {
    const TEST: &str = "borrow_check_after_the_server_connection_dies";
    let Some(urls) = urls(TEST) else { return };
    let _serial = serial();
    for (mode, url) in [
        ("session", &urls.session),
        ("transaction", &urls.transaction),
    ] {
        let manager = manager(url);
        let mut conn = manager.connect().expect("connect");
        manager
            .is_valid_within(&mut conn, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{mode} mode: check: {}", describe(&e)));
        let pid = terminate_server_connection(&urls, url, &mut conn);
        let check = manager.is_valid_within(&mut conn, Duration::from_secs(5));
        match mode {
            "session" => {
                assert!(check.is_err(), "session mode: the check fails");
                assert!(manager.has_broken(&mut conn), "and the client is closed");
            }
            _ => {
                check.unwrap_or_else(|e| panic!("transaction mode: {}", describe(&e)));
                assert_ne!(backend_pid(&mut conn), pid, "another server connection");
            }
        }

        // Through a pool checking every borrow: the borrower gets a working connection.
        let pool = Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .check_on_borrow(Some(Duration::ZERO))
            .connection_timeout(Duration::from_secs(5))
            .reset_on_return(ResetAction::Rollback)
            .build(PostgresManager::from_url(url).expect("URL parses"))
            .expect("pool builds");
        let pid = terminate_server_connection(&urls, url, &mut pool.get().expect("borrow"));
        let mut conn = pool.get().expect("borrow after the server connection died");
        assert_ne!(backend_pid(&mut conn), pid, "{mode} mode");
    }
}
