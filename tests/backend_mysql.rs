//! `MysqlManager` against a real MySQL/MariaDB server (`STICKYPOOL_MYSQL_URL`).
#![cfg(feature = "mysql")]

mod servers;

use std::time::Duration;

use mysql::prelude::Queryable;
use stickypool::backends::mysql::MysqlManager;
use stickypool::{CloseReason, ManageConnection, Pool, PooledConnection, ResetAction};

fn manager(test: &str) -> Option<MysqlManager> {
    let url = servers::mysql_url(test)?;
    Some(MysqlManager::from_url(&url).expect("STICKYPOOL_MYSQL_URL parses"))
}

/// Rows of `table`, counted on a connection of its own (sees only committed data).
fn committed_rows(manager: &MysqlManager, table: &str) -> u64 {
    let mut conn = manager.connect().expect("connect");
    conn.query_first(format!("SELECT COUNT(*) FROM {table}"))
        .expect("count")
        .unwrap()
}

/// Whether this session is inside a transaction: MariaDB's `@@in_transaction` where the
/// server has it, and in any case by behaviour: a row inserted now (under autocommit)
/// must be visible to another connection at once.
fn in_transaction(conn: &mut mysql::Conn, manager: &MysqlManager, table: &str, id: i32) -> bool {
    if let Ok(Some(flag)) = conn.query_first::<i64, _>("SELECT @@in_transaction")
        && flag != 0
    {
        return true;
    }
    let before = committed_rows(manager, table);
    conn.exec_drop(format!("INSERT INTO {table} VALUES (?, ?)"), (id, "probe"))
        .expect("probe insert");
    committed_rows(manager, table) == before
}

struct Table<'a> {
    manager: &'a MysqlManager,
    name: String,
}

impl<'a> Table<'a> {
    fn create(manager: &'a MysqlManager) -> Table<'a> {
        let name = servers::unique("t");
        let mut conn = manager.connect().expect("connect");
        conn.query_drop(format!(
            "CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(32)) ENGINE=InnoDB"
        ))
        .expect("create table");
        Table { manager, name }
    }
}

impl Drop for Table<'_> {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.manager.connect() {
            let _ = conn.query_drop(format!("DROP TABLE IF EXISTS {}", self.name));
        }
    }
}

#[test]
fn connect_query_and_validity() {
    let Some(manager) = manager("connect_query_and_validity") else {
        return;
    };
    let pool = servers::pool(manager, 4, ResetAction::Keep);
    assert!(
        pool.state().connections >= 1,
        "min_idle connection opened by build"
    );

    let mut conn = pool.get().expect("borrow");
    let one: Option<u32> = conn.query_first("SELECT 1").expect("SELECT 1");
    assert_eq!(one, Some(1));
    let version: Option<String> = conn.query_first("SELECT VERSION()").expect("version");
    assert!(!version.unwrap().is_empty());

    pool.manager()
        .is_valid(&mut conn)
        .expect("a fresh connection is valid");
    assert!(!pool.manager().has_broken(&mut conn));
}

#[test]
fn killed_connection_is_detected_and_replaced() {
    let Some(manager) = manager("killed_connection_is_detected_and_replaced") else {
        return;
    };
    let pool = Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::from_secs(5))
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager.clone())
        .expect("pool builds");

    let first_id;
    {
        let mut conn = pool.get().expect("borrow");
        first_id = conn.connection_id();
        // Kill this connection from another one, as a server restart or an admin would.
        let mut admin = manager.connect().expect("connect");
        admin.query_drop(format!("KILL {first_id}")).expect("KILL");
        servers::wait_until(
            "the killed connection fails its ping",
            Duration::from_secs(5),
            || pool.manager().is_valid(&mut conn).is_err(),
        );
        // `has_broken` does no I/O, so it cannot know yet.
        assert!(!pool.manager().has_broken(&mut conn));
    }

    // The check on borrow finds the dead connection, closes it and opens another.
    let mut conn = pool.get().expect("borrow after the kill");
    assert_ne!(conn.connection_id(), first_id, "a new connection");
    let one: Option<u32> = conn.query_first("SELECT 1").expect("SELECT 1");
    assert_eq!(one, Some(1));
    assert!(pool.state().connections <= 1);
}

#[test]
fn rollback_on_return_leaves_no_transaction_or_data() {
    let Some(manager) = manager("rollback_on_return_leaves_no_transaction_or_data") else {
        return;
    };
    let table = Table::create(&manager);
    // One connection, so the next borrower gets the very same session.
    let pool = servers::pool(manager.clone(), 1, ResetAction::Rollback);

    let id;
    {
        let mut conn = pool.get().expect("borrow");
        id = conn.connection_id();
        conn.query_drop("START TRANSACTION").unwrap();
        conn.exec_drop(
            format!("INSERT INTO {} VALUES (?, ?)", table.name),
            (1, "left behind"),
        )
        .unwrap();
        assert!(in_transaction(&mut conn, &manager, &table.name, 2));
        // Dropped with the transaction open.
    }

    let mut conn = pool.get().expect("borrow again");
    assert_eq!(conn.connection_id(), id, "the same connection came back");
    let rows: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {}", table.name))
        .unwrap();
    assert_eq!(rows, Some(0), "the insert was rolled back");
    assert!(
        !in_transaction(&mut conn, &manager, &table.name, 3),
        "no transaction left open"
    );
}

#[test]
fn commit_on_return_commits_the_open_transaction() {
    let Some(manager) = manager("commit_on_return_commits_the_open_transaction") else {
        return;
    };
    let table = Table::create(&manager);
    let pool = servers::pool(manager.clone(), 1, ResetAction::Commit);

    {
        let mut conn = pool.get().expect("borrow");
        conn.query_drop("START TRANSACTION").unwrap();
        conn.exec_drop(
            format!("INSERT INTO {} VALUES (?, ?)", table.name),
            (1, "committed on return"),
        )
        .unwrap();
        assert_eq!(
            committed_rows(&manager, &table.name),
            0,
            "not yet committed"
        );
    }

    assert_eq!(committed_rows(&manager, &table.name), 1);
    let mut conn = pool.get().expect("borrow again");
    assert!(!in_transaction(&mut conn, &manager, &table.name, 2));
}

#[test]
fn session_reset_on_return_clears_session_state() {
    let Some(manager) = manager("session_reset_on_return_clears_session_state") else {
        return;
    };
    let table = Table::create(&manager);
    let pool = servers::pool(manager.clone(), 1, ResetAction::Session);

    let id;
    {
        let mut conn = pool.get().expect("borrow");
        id = conn.connection_id();
        conn.query_drop("SET @leftover = 42").unwrap();
        conn.query_drop("CREATE TEMPORARY TABLE sp_tmp (x INT)")
            .unwrap();
        conn.query_drop("START TRANSACTION").unwrap();
        conn.exec_drop(
            format!("INSERT INTO {} VALUES (?, ?)", table.name),
            (1, "left behind"),
        )
        .unwrap();
    }

    let mut conn = pool.get().expect("borrow again");
    assert_eq!(conn.connection_id(), id, "the same connection came back");
    let leftover: Option<Option<i64>> = conn.query_first("SELECT @leftover").unwrap();
    assert_eq!(leftover, Some(None), "user variables are cleared");
    assert!(
        conn.query_drop("SELECT * FROM sp_tmp").is_err(),
        "temporary tables are dropped"
    );
    let rows: Option<u64> = conn
        .query_first(format!("SELECT COUNT(*) FROM {}", table.name))
        .unwrap();
    assert_eq!(rows, Some(0), "the insert was rolled back");
    assert!(!in_transaction(&mut conn, &manager, &table.name, 2));
}

#[test]
fn detach_takes_the_connection_out_of_the_pool() {
    let Some(manager) = manager("detach_takes_the_connection_out_of_the_pool") else {
        return;
    };
    let pool = servers::pool(manager, 2, ResetAction::Rollback);
    let conn = pool.get().expect("borrow");
    let id = conn.connection_id();
    let before = pool.state().connections;

    let mut raw: mysql::Conn = PooledConnection::detach(conn);
    // The slot is freed (and refilled at once: min_idle is max_size here).
    assert_eq!(pool.stats().closed.get(CloseReason::Detached), 1);
    assert!(pool.state().connections <= before);
    let one: Option<u32> = raw
        .query_first("SELECT 1")
        .expect("the detached connection works");
    assert_eq!(one, Some(1));

    // The pool still serves borrowers, with another connection.
    let mut again = pool.get().expect("borrow after detach");
    assert_ne!(again.connection_id(), id);
    let one: Option<u32> = again.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
}

#[test]
fn every_connection_has_connect_read_and_write_timeouts_by_default() {
    use stickypool::backends::mysql::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT};
    // No server needed: the options are checked, not used.
    let manager = MysqlManager::from_url("mysql://app:secret@127.0.0.1:3306/app").unwrap();
    let opts = manager.opts();
    assert_eq!(
        opts.get_tcp_connect_timeout(),
        Some(DEFAULT_CONNECT_TIMEOUT)
    );
    assert_eq!(opts.get_read_timeout(), Some(&DEFAULT_IO_TIMEOUT));
    assert_eq!(opts.get_write_timeout(), Some(&DEFAULT_IO_TIMEOUT));
    // What the URL sets is kept; the builder methods change or remove each.
    let manager =
        MysqlManager::from_url("mysql://app:secret@127.0.0.1:3306/app?tcp_connect_timeout_ms=2000")
            .unwrap()
            .read_timeout(Duration::from_secs(5))
            .write_timeout(None);
    let opts = manager.opts();
    assert_eq!(opts.get_tcp_connect_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(opts.get_read_timeout(), Some(&Duration::from_secs(5)));
    assert_eq!(opts.get_write_timeout(), None);
    let debug = format!("{manager:?}");
    assert!(debug.contains("read_timeout: Some(5s)"), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
}

#[cfg(feature = "toml")]
#[test]
fn timeouts_from_a_config_file_reach_the_manager() {
    let Some(url) = servers::mysql_url("timeouts_from_a_config_file_reach_the_manager") else {
        return;
    };
    let toml = format!(
        "[pools.db]\nbackend = \"mysql\"\nurl = \"{url}\"\nmax_size = 1\n\
         connect_timeout = \"3s\"\nread_timeout = \"7s\"\nwrite_timeout = \"off\"\n"
    );
    let pools = stickypool::Pools::from_toml_str(&toml).expect("pools build");
    let pool = pools.mysql("db").unwrap();
    let opts = pool.manager().opts();
    assert_eq!(opts.get_tcp_connect_timeout(), Some(Duration::from_secs(3)));
    assert_eq!(opts.get_read_timeout(), Some(&Duration::from_secs(7)));
    assert_eq!(opts.get_write_timeout(), None);
    let one: Option<u32> = pool.get().unwrap().query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
}

/// Credential rotation while the pool runs: `set_credentials` changes what new
/// connections use, `retire_all` replaces the open ones.
#[test]
fn credentials_change_at_runtime() {
    let Some(url) = servers::mysql_url("credentials_change_at_runtime") else {
        return;
    };
    let manager = MysqlManager::from_url(&url).unwrap();
    let user = manager.opts().get_user().unwrap().to_owned();
    let password = servers::url_password(&url).unwrap();
    let pool = Pool::builder()
        .max_size(2)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(2))
        .build(manager)
        .unwrap();
    let id = |conn: &mut mysql::Conn| conn.connection_id();
    let first = id(&mut pool.get().unwrap());
    pool.manager().set_credentials(&user, "wrong-password");
    assert_eq!(pool.retire_all(), 1);
    let err = pool.get().map(drop).unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");
    pool.manager().set_credentials(&user, &password);
    servers::wait_until(
        "a connect with the restored password",
        Duration::from_secs(10),
        || pool.get().is_ok(),
    );
    assert_ne!(id(&mut pool.get().unwrap()), first);
    assert!(!format!("{:?}", pool.manager()).contains(&password));
}

/// A borrower that panics mid-transaction, or halfway through reading a result, costs no
/// reconnect: the pool checks the connection, rolls it back and keeps it, and nothing of
/// the transaction is committed or seen by the next borrower.
#[test]
fn a_panicking_borrower_costs_no_reconnect_and_leaks_no_transaction() {
    let test = "a_panicking_borrower_costs_no_reconnect_and_leaks_no_transaction";
    let Some(manager) = manager(test) else { return };
    let table = Table::create(&manager);
    let pool = Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .build(self::manager(test).unwrap())
        .unwrap();
    let panics = 20;
    for i in 0..panics {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut conn = pool.get().unwrap();
            conn.query_drop("BEGIN").unwrap();
            conn.exec_drop(
                format!("INSERT INTO {} VALUES (?, ?)", table.name),
                (i, "x"),
            )
            .unwrap();
            if i % 2 == 1 {
                // Halfway through a result of many rows.
                let mut rows = conn.query_iter("SELECT seq FROM seq_1_to_100000").unwrap();
                let _first = rows.next();
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
    assert!(!in_transaction(&mut conn, &manager, &table.name, 1_000));
    assert_eq!(
        committed_rows(&manager, &table.name),
        1,
        "only the probe's row"
    );
}

/// A borrower gives up on a reply (its read timeout) with a transaction open: the late
/// reply would answer the pool's `ROLLBACK` and leave the connection a reply behind,
/// handing every later borrower the answer to the statement before theirs. The
/// numbered `SELECT` of the reset and of the check closes it instead. Found by the bank
/// test (`tests/bank.rs`) with a slow statement among the transfers.
#[test]
fn a_connection_a_reply_behind_is_closed() {
    let Some(manager) = manager("a_connection_a_reply_behind_is_closed") else {
        return;
    };
    for (reset, checks) in [(ResetAction::Rollback, false), (ResetAction::Keep, true)] {
        let pool = Pool::builder()
            .max_size(1)
            .reset_on_return(reset)
            .check_on_borrow(Some(if checks {
                Duration::ZERO
            } else {
                Duration::from_secs(60)
            }))
            .build(manager.clone().read_timeout(Duration::from_millis(300)))
            .unwrap();
        {
            let mut conn = pool.get().unwrap();
            conn.query_drop("BEGIN").unwrap();
            // The reply comes 0.2 s after the read gave up: within the next statement's
            // read timeout, so that statement (the reset, or the check on the next
            // borrow) reads it as its own answer.
            assert!(
                conn.query_drop("DO SLEEP(0.5)").is_err(),
                "the read times out"
            );
        }
        for i in 1..=4 {
            let mut conn = pool.get().unwrap();
            let answer: Vec<i64> = conn.query(format!("SELECT {i}")).unwrap();
            assert_eq!(answer, [i], "{reset:?}, borrow {i}: someone else's answer");
        }
        assert!(
            pool.stats().closed.total() >= 1,
            "{reset:?}: {}",
            pool.stats()
        );
    }
}
