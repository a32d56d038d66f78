//! `PostgresManager` against a real PostgreSQL server (`STICKYPOOL_POSTGRES_URL`).
#![cfg(feature = "postgres")]

mod servers;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use servers::Server;
use stickypool::backends::postgres::PostgresManager;
use stickypool::{CloseReason, ManageConnection, Pool, ResetAction};

fn config(test: &str) -> Option<Config> {
    let url = servers::postgres_url(test)?;
    Some(url.parse().expect("STICKYPOOL_POSTGRES_URL parses"))
}

fn manager(test: &str) -> Option<PostgresManager> {
    Some(PostgresManager::new(config(test)?, NoTls))
}

fn pool(manager: PostgresManager, reset: ResetAction) -> Pool<PostgresManager> {
    Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .reset_on_return(reset)
        .build(manager)
        .expect("pool builds")
}

/// A table of its own, dropped at the end.
struct Table {
    config: Config,
    name: String,
}

impl Table {
    fn create(config: &Config) -> Table {
        let name = servers::unique("t");
        let mut conn = config.connect(NoTls).expect("connect");
        conn.batch_execute(&format!("CREATE TABLE {name} (id INT PRIMARY KEY)"))
            .expect("create table");
        Table {
            config: config.clone(),
            name,
        }
    }

    /// Committed rows, counted on a connection of its own.
    fn committed_rows(&self) -> i64 {
        let mut conn = self.config.connect(NoTls).expect("connect");
        conn.query_one(&format!("SELECT count(*) FROM {}", self.name), &[])
            .expect("count")
            .get(0)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.config.connect(NoTls) {
            let _ = conn.batch_execute(&format!("DROP TABLE IF EXISTS {}", self.name));
        }
    }
}

/// Whether the session is inside a transaction block: `SAVEPOINT` fails with
/// `25P01` outside one (and with `25P02` inside an aborted one).
fn in_transaction(conn: &mut Client) -> bool {
    match conn.batch_execute("SAVEPOINT probe") {
        Ok(()) => true,
        Err(e) => e.code() != Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION),
    }
}

#[test]
fn thirty_two_threads_share_eight_server_connections() {
    let test = "thirty_two_threads_share_eight_server_connections";
    let Some(mut config) = config(test) else {
        return;
    };
    let _postgres = servers::lock(Server::Postgres);
    let mut watcher = config.connect(NoTls).expect("connect");
    let app = servers::unique("load");
    config.application_name(&app);
    let pool = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(30))
        .reset_on_return(ResetAction::Rollback)
        .build(PostgresManager::new(config.clone(), NoTls))
        .expect("pool builds");

    // The server's own count of this pool's sessions, sampled while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let (most, samples) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, most, samples) = (stop.clone(), most.clone(), samples.clone());
        let app = app.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .expect("sample pg_stat_activity")
                    .get(0);
                most.fetch_max(n, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let ops = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = mpsc::channel();
    let handles = (0..32)
        .map(|i| {
            let (pool, ops, done_tx) = (pool.clone(), ops.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for j in 0..100 {
                    let mut conn = pool.get().expect("borrow");
                    let n: i32 = conn
                        .query_one("SELECT $1::int + 1", &[&(i * 1000 + j)])
                        .expect("query")
                        .get(0);
                    assert_eq!(n, i * 1000 + j + 1);
                    ops.fetch_add(1, Ordering::SeqCst);
                }
                let _ = done_tx.send(());
            })
        })
        .collect();
    servers::join_all("postgres load", handles, &done, Duration::from_secs(120));
    servers::wait_until("a few samples", Duration::from_secs(10), || {
        samples.load(Ordering::SeqCst) >= 3
    });
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    let most = most.load(Ordering::SeqCst);
    eprintln!(
        "{} queries; at most {most} server sessions in {} samples; {:?}",
        ops.load(Ordering::SeqCst),
        samples.load(Ordering::SeqCst),
        pool.state()
    );
    assert_eq!(ops.load(Ordering::SeqCst), 3200);
    assert!((1..=8).contains(&most), "server saw {most} sessions");
    assert!(pool.state().connections <= 8);
}

#[test]
fn an_aborted_transaction_is_rolled_back_on_return() {
    let Some(manager) = manager("an_aborted_transaction_is_rolled_back_on_return") else {
        return;
    };
    let pool = pool(manager, ResetAction::Rollback);
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute("BEGIN").unwrap();
        let err = conn.batch_execute("SELECT 1/0").unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
        // Every later statement of this session would now fail.
        let err = conn.batch_execute("SELECT 1").unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    }
    let mut conn = pool.get().unwrap();
    assert!(
        !in_transaction(&mut conn),
        "the next borrower is in a transaction"
    );
    let one: i32 = conn.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(pool.stats().closed.total(), 0, "the same connection, reset");
}

#[test]
fn an_open_insert_is_rolled_back_on_return() {
    let test = "an_open_insert_is_rolled_back_on_return";
    let (Some(config), Some(manager)) = (config(test), manager(test)) else {
        return;
    };
    let table = Table::create(&config);
    let pool = pool(manager, ResetAction::Rollback);
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (1)", table.name))
            .unwrap();
    }
    let mut conn = pool.get().unwrap();
    assert!(!in_transaction(&mut conn));
    let seen: i64 = conn
        .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "the next borrower sees the row");
    drop(conn);
    assert_eq!(table.committed_rows(), 0);
}

#[test]
fn commit_on_return_commits_and_ends_a_failed_transaction() {
    let test = "commit_on_return_commits_and_ends_a_failed_transaction";
    let (Some(config), Some(manager)) = (config(test), manager(test)) else {
        return;
    };
    let table = Table::create(&config);
    let pool = pool(manager, ResetAction::Commit);
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (1)", table.name))
            .unwrap();
    }
    assert_eq!(table.committed_rows(), 1);
    {
        let mut conn = pool.get().unwrap();
        conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES (2)", table.name))
            .unwrap();
        conn.batch_execute("SELECT 1/0").unwrap_err();
    }
    let mut conn = pool.get().unwrap();
    assert!(!in_transaction(&mut conn));
    drop(conn);
    assert_eq!(
        table.committed_rows(),
        1,
        "a failed transaction is not committed"
    );
    assert_eq!(pool.stats().closed.total(), 0, "kept, not replaced");
}

#[test]
fn session_reset_discards_the_session_but_keeps_the_statement_timeout() {
    let test = "session_reset_discards_the_session_but_keeps_the_statement_timeout";
    let (Some(config), Some(manager)) = (config(test), manager(test)) else {
        return;
    };
    // User-defined types: the driver looks each one up, the first time it meets it, with
    // prepared statements of its own that it keeps. After a `DEALLOCATE ALL` the
    // lookup of the second type, first met after the reset, would fail.
    let (mood, color) = (servers::unique("mood"), servers::unique("color"));
    let mut admin = config.connect(NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE TYPE {mood} AS ENUM ('ok', 'sad'); CREATE TYPE {color} AS ENUM ('red')"
        ))
        .unwrap();
    let manager = manager.statement_timeout(Duration::from_millis(1500));
    let pool = pool(manager, ResetAction::Session);
    let enum_round_trip = |conn: &mut Client, ty: &str, value: &str| {
        let rows = conn
            .query(&format!("SELECT '{value}'::{ty}"), &[])
            .unwrap_or_else(|e| panic!("a query returning {ty}: {e}"));
        assert_eq!(rows[0].columns()[0].type_().name(), ty);
    };
    {
        let mut conn = pool.get().unwrap();
        enum_round_trip(&mut conn, &mood, "ok");
        conn.batch_execute(
            "CREATE TEMP TABLE scratch (id INT); SET search_path TO pg_catalog; \
             SELECT pg_advisory_lock(4711); LISTEN somewhere; BEGIN; SELECT 1",
        )
        .unwrap();
    }
    let mut conn = pool.get().unwrap();
    assert!(!in_transaction(&mut conn));
    let err = conn.batch_execute("SELECT * FROM scratch").unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE));
    let path: String = conn.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert!(path.contains("public"), "search_path not reset: {path}");
    let locks: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "the advisory lock survived");
    let listening: i64 = conn
        .query_one("SELECT count(*) FROM pg_listening_channels()", &[])
        .unwrap()
        .get(0);
    assert_eq!(listening, 0);
    let timeout: String = conn
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(timeout, "1500ms");
    enum_round_trip(&mut conn, &mood, "sad");
    enum_round_trip(&mut conn, &color, "red");
    drop(conn);
    assert_eq!(pool.stats().closed.total(), 0, "kept, not replaced");
    admin
        .batch_execute(&format!("DROP TYPE {mood}; DROP TYPE {color}"))
        .unwrap();
}

#[test]
fn statement_timeout_cancels_a_long_statement() {
    let Some(manager) = manager("statement_timeout_cancels_a_long_statement") else {
        return;
    };
    let pool = pool(
        manager.statement_timeout(Duration::from_millis(200)),
        ResetAction::Rollback,
    );
    let mut conn = pool.get().unwrap();
    let started = std::time::Instant::now();
    let err = conn.batch_execute("SELECT pg_sleep(30)").unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED));
    assert!(started.elapsed() < Duration::from_secs(10));
    conn.batch_execute("SELECT 1").unwrap();
}

/// A session the server ended (an administrator's `pg_terminate_backend`) is seen as
/// broken on return and replaced; nobody else gets it.
#[test]
fn a_terminated_session_is_closed_on_return() {
    let test = "a_terminated_session_is_closed_on_return";
    let (Some(config), Some(manager)) = (config(test), manager(test)) else {
        return;
    };
    let pool = pool(manager, ResetAction::Keep);
    {
        let mut conn = pool.get().unwrap();
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let mut admin = config.connect(NoTls).unwrap();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        servers::wait_until(
            "the query sees the session gone",
            Duration::from_secs(10),
            || conn.batch_execute("SELECT 1").is_err(),
        );
        assert!(conn.is_closed());
    }
    assert_eq!(pool.stats().closed.get(CloseReason::Broken), 1);
    let mut conn = pool.get().unwrap();
    conn.batch_execute("SELECT 1").unwrap();
}

#[test]
fn is_valid_within_bounds_the_check_and_has_broken_reads_a_flag() {
    let Some(manager) = manager("is_valid_within_bounds_the_check_and_has_broken_reads_a_flag")
    else {
        return;
    };
    let mut conn = manager.connect().unwrap();
    manager
        .is_valid_within(&mut conn, Duration::from_secs(1))
        .unwrap();
    manager.is_valid(&mut conn).unwrap();
    assert!(!manager.has_broken(&mut conn));
    assert!(manager.can_reset());
}

#[test]
fn debug_output_hides_the_password() {
    let Some(url) = servers::postgres_url("debug_output_hides_the_password") else {
        return;
    };
    let manager = PostgresManager::from_url(&url).unwrap();
    let shown = format!("{manager:?}");
    let password = servers::url_password(&url).expect("the test URL has a password");
    assert!(!shown.contains(&password), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// Credential rotation and a new address while the pool runs: `set_credentials` and
/// `set_url` change what new connections use, `retire_all` replaces the open ones.
#[test]
fn credentials_and_url_change_at_runtime() {
    let test = "credentials_and_url_change_at_runtime";
    let (Some(url), Some(config)) = (servers::postgres_url(test), config(test)) else {
        return;
    };
    let pool = Pool::builder()
        .max_size(2)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(2))
        .build(PostgresManager::from_url(&url).unwrap())
        .unwrap();
    let pid = |conn: &mut Client| -> i32 {
        conn.query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0)
    };
    let first = pid(&mut pool.get().unwrap());

    let user = config.get_user().unwrap().to_owned();
    pool.manager().set_credentials(&user, "wrong-password");
    assert_eq!(pool.retire_all(), 1);
    let err = pool.get().map(drop).unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    let password = servers::url_password(&url).unwrap();
    pool.manager().set_credentials(&user, &password);
    // The breaker may hold the next connect back briefly after the failures.
    servers::wait_until(
        "a connect with the restored password",
        Duration::from_secs(10),
        || pool.get().is_ok(),
    );
    assert_ne!(pid(&mut pool.get().unwrap()), first, "a new session");

    let tagged = format!("{url}?application_name=rotated");
    assert!(pool.manager().set_url("postgres://h:notaport/db").is_err());
    pool.manager().set_url(&tagged).unwrap();
    pool.retire_all();
    let mut conn = pool.get().unwrap();
    let name: String = conn.query_one("SHOW application_name", &[]).unwrap().get(0);
    assert_eq!(name, "rotated");
    assert!(!format!("{:?}", pool.manager()).contains(&password));
}

/// A borrower that panics mid-transaction, or halfway through reading a result, costs no
/// reconnect: the pool checks the connection, rolls it back and keeps it, and nothing of
/// the transaction is committed or seen by the next borrower.
#[test]
fn a_panicking_borrower_costs_no_reconnect_and_leaks_no_transaction() {
    let test = "a_panicking_borrower_costs_no_reconnect_and_leaks_no_transaction";
    let Some(config) = config(test) else { return };
    let table = Table::create(&config);
    // The default reset (none): the panic's rollback does not depend on it.
    let pool = pool(PostgresManager::new(config, NoTls), ResetAction::Keep);
    let panics = 20;
    for i in 0..panics {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut conn = pool.get().unwrap();
            conn.batch_execute(&format!("BEGIN; INSERT INTO {} VALUES ({i})", table.name))
                .unwrap();
            if i % 2 == 1 {
                // Halfway through a result of many rows.
                let rows = conn
                    .query_raw(
                        "SELECT generate_series(1, 100000)",
                        std::iter::empty::<i32>(),
                    )
                    .unwrap();
                let _first = postgres::fallible_iterator::FallibleIterator::next(&mut { rows });
            }
            panic!("a bug while holding the connection");
        }));
        assert!(caught.is_err());
    }
    let stats = pool.stats();
    assert_eq!(stats.connections_created, 1, "{stats}");
    assert_eq!(stats.recovered_after_panic, panics, "{stats}");
    assert_eq!(stats.closed.total(), 0, "{stats}");
    let mut conn = pool.get().unwrap();
    assert!(!in_transaction(&mut conn), "no transaction left open");
    assert_eq!(table.committed_rows(), 0);
}

/// Asked for a primary (`target_session_attrs=read-write`), the check closes a
/// connection whose session can no longer write, as after a failover; otherwise a
/// read-only session is kept. The session is made read-only here with `SET SESSION
/// CHARACTERISTICS`, which turns on `transaction_read_only` as a standby does.
#[test]
fn asked_for_a_primary_the_check_closes_a_read_only_session() {
    let Some(mut config) = config("asked_for_a_primary_the_check_closes_a_read_only_session")
    else {
        return;
    };
    let pid_and_read_only = |conn: &mut Client| {
        let row = conn
            .query_one(
                "SELECT pg_backend_pid(), current_setting('transaction_read_only')",
                &[],
            )
            .unwrap();
        (row.get::<_, i32>(0), row.get::<_, String>(1))
    };
    for read_write in [false, true] {
        if read_write {
            config.target_session_attrs(postgres::config::TargetSessionAttrs::ReadWrite);
        }
        let pool = Pool::builder()
            .max_size(1)
            .check_on_borrow(Some(Duration::ZERO))
            .build(PostgresManager::new(config.clone(), NoTls))
            .unwrap();
        let first = {
            let mut conn = pool.get().unwrap();
            conn.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                .unwrap();
            pid_and_read_only(&mut conn)
        };
        assert_eq!(first.1, "on");
        let again = pid_and_read_only(&mut pool.get().unwrap());
        if read_write {
            assert_ne!(again.0, first.0, "the read-only session was replaced");
            assert_eq!(again.1, "off");
            assert_eq!(pool.stats().validation_failures, 1);
        } else {
            assert_eq!(
                again, first,
                "without read-write asked, the session is kept"
            );
        }
    }
}

/// A `Session` reset wipes what `on_acquire` set (`RESET ALL`); the pool runs it again.
#[test]
fn a_session_reset_keeps_what_on_acquire_set() {
    #[derive(Debug)]
    struct AppName;
    impl stickypool::CustomizeConnection<Client, postgres::Error> for AppName {
        fn on_acquire(&self, conn: &mut Client) -> Result<(), postgres::Error> {
            conn.batch_execute("SET application_name = 'stickypool-app'")
        }
    }
    let Some(manager) = manager("a_session_reset_keeps_what_on_acquire_set") else {
        return;
    };
    let pool = Pool::builder()
        .max_size(1)
        .reset_on_return(ResetAction::Session)
        .connection_customizer(Box::new(AppName))
        .build(manager)
        .unwrap();
    let setting = |conn: &mut Client, name: &str| -> String {
        conn.query_one(&format!("SHOW {name}"), &[]).unwrap().get(0)
    };
    {
        let mut conn = pool.get().unwrap();
        assert_eq!(setting(&mut conn, "application_name"), "stickypool-app");
        conn.batch_execute("SET application_name = 'changed'; SET work_mem = '7MB'")
            .unwrap();
    }
    let mut conn = pool.get().unwrap();
    assert_eq!(setting(&mut conn, "application_name"), "stickypool-app");
    assert_ne!(setting(&mut conn, "work_mem"), "7MB", "the reset ran");
    assert_eq!(pool.stats().connections_created, 1, "the same connection");
}
