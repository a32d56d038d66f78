//! Faults with real servers: Redis, MariaDB/MySQL and PostgreSQL killed (SIGKILL) in the middle of
//! a load run and started again; wrong passwords, closed ports and bad URLs at `build`.
//!
//! This is a test binary of its own because it kills servers. Inside it, every test
//! that touches a server holds that server's lock (`servers::lock`), so nothing else
//! in the binary uses a server while it is down.
#![cfg(any(feature = "mysql", feature = "redis", feature = "postgres"))]

mod servers;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use servers::{Server, ServerCtl};
use stickypool::{Error, ManageConnection, Pool, ResetAction};

const WORKERS: usize = 16;
const MAX_SIZE: u32 = 8;
/// The pool's borrow timeout in the fault runs.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The driver's read/write timeout in the fault runs: the longest a query may block.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack for a loaded two-core machine on top of the timeouts above.
const MARGIN: Duration = Duration::from_secs(2);
/// How long the server may take to come back and the pool to notice.
const RECOVERY: Duration = Duration::from_secs(60);

type Op<C> = Arc<dyn Fn(&mut C) -> Result<(), String> + Send + Sync>;

/// What the worker threads saw, by phase: 0 before the kill, 1 while the server is
/// down, 2 after it was started again.
#[derive(Default)]
struct Observed {
    phase: AtomicUsize,
    stop: AtomicBool,
    ok: [AtomicUsize; 3],
    errors: [AtomicUsize; 3],
    max_get_ms: AtomicU64,
    max_op_ms: AtomicU64,
    /// A borrow failed with something other than a timeout or a connect error.
    unexpected: Mutex<Vec<String>>,
    /// Borrows that failed saying why no connection could be opened.
    get_errors_with_cause: AtomicUsize,
    /// Borrows that failed at once with `Unavailable` (the breaker open), and the
    /// slowest of them.
    unavailable: AtomicUsize,
    max_unavailable_us: AtomicU64,
    messages: Mutex<BTreeSet<String>>,
}

impl Observed {
    fn ok(&self, phase: usize) -> usize {
        self.ok[phase].load(Ordering::SeqCst)
    }
    fn errors(&self, phase: usize) -> usize {
        self.errors[phase].load(Ordering::SeqCst)
    }
    fn error(&self, message: String) {
        let phase = self.phase.load(Ordering::SeqCst);
        self.errors[phase].fetch_add(1, Ordering::SeqCst);
        let mut messages = self.messages.lock().unwrap();
        if messages.len() < 12 {
            messages.insert(format!("[phase {phase}] {message}"));
        }
    }
}

fn worker<M: ManageConnection>(pool: Pool<M>, op: Op<M::Connection>, seen: Arc<Observed>) {
    while !seen.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let got = pool.get();
        seen.max_get_ms
            .fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        match got {
            Ok(mut conn) => {
                let started = Instant::now();
                let result = op(&mut *conn);
                seen.max_op_ms
                    .fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                match result {
                    Ok(()) => {
                        seen.ok[seen.phase.load(Ordering::SeqCst)].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => seen.error(format!("query: {e}")),
                }
            }
            Err(e) => {
                if matches!(e, Error::Unavailable { .. }) {
                    seen.unavailable.fetch_add(1, Ordering::SeqCst);
                    seen.max_unavailable_us
                        .fetch_max(started.elapsed().as_micros() as u64, Ordering::SeqCst);
                }
                match &e {
                    Error::Timeout {
                        last_error: Some(_),
                        ..
                    }
                    | Error::Unavailable {
                        last_error: Some(_),
                        ..
                    }
                    | Error::Connect(_) => {
                        seen.get_errors_with_cause.fetch_add(1, Ordering::SeqCst);
                    }
                    Error::Timeout {
                        last_error: None, ..
                    } => {}
                    other => seen.unexpected.lock().unwrap().push(format!("{other:?}")),
                }
                seen.error(format!("get: {e}"));
                // A failed borrow may return at once; do not spin on two cores.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn fault_pool<M: ManageConnection>(manager: M) -> Pool<M> {
    fault_pool_with(manager, ResetAction::Rollback, Duration::from_millis(500))
}

fn fault_pool_with<M: ManageConnection>(
    manager: M,
    reset: ResetAction,
    validation_bypass: Duration,
) -> Pool<M> {
    Pool::builder()
        .max_size(MAX_SIZE)
        .min_idle(Some(2))
        .connection_timeout(CONNECTION_TIMEOUT)
        .check_on_borrow(Some(validation_bypass))
        .reset_on_return(reset)
        .build(manager)
        .expect("pool builds while the server is up")
}

/// Runs `op` on `WORKERS` threads, kills `server` in the middle, starts it again, and
/// checks that errors were clear and bounded in time, that the pool recovered by
/// itself, that no slot was lost and that no thread stayed blocked.
fn kill_under_load<M: ManageConnection>(
    name: &str,
    ctl: &ServerCtl,
    server: Server,
    pool: Pool<M>,
    op: Op<M::Connection>,
) {
    let seen = Arc::new(Observed::default());
    let (done_tx, done) = mpsc::channel();
    let handles = (0..WORKERS)
        .map(|_| {
            let (pool, op, seen, done_tx) =
                (pool.clone(), op.clone(), seen.clone(), done_tx.clone());
            std::thread::spawn(move || {
                worker(pool, op, seen);
                let _ = done_tx.send(());
            })
        })
        .collect::<Vec<_>>();

    let max_connections = AtomicU64::new(0);
    let sample = || {
        let state = pool.state();
        max_connections.fetch_max(state.connections as u64, Ordering::SeqCst);
        assert!(state.connections <= MAX_SIZE, "{name}: {state:?}");
        assert!(state.in_use <= MAX_SIZE, "{name}: {state:?}");
    };

    servers::wait_until(&format!("{name}: load is running"), RECOVERY, || {
        sample();
        seen.ok(0) >= 200
    });

    // The server may be gone before `kill` returns (it waits until the process is).
    seen.phase.store(1, Ordering::SeqCst);
    let failures_before = pool.stats().connect_failures;
    let killed_at = Instant::now();
    let outage = ctl.kill(server);
    servers::wait_until(
        &format!("{name}: borrowers see the outage"),
        RECOVERY,
        || {
            sample();
            seen.errors(1) >= 50
        },
    );
    // Stay down long enough that borrowers run into the borrow timeout.
    servers::wait_until(&format!("{name}: outage lasts"), RECOVERY, || {
        sample();
        killed_at.elapsed() >= CONNECTION_TIMEOUT + Duration::from_millis(500)
    });
    let during_outage = (seen.ok(1), seen.errors(1));
    let down_for = killed_at.elapsed();
    let connects_while_down = pool.stats().connect_failures - failures_before;

    outage.restart();
    let restarted_at = Instant::now();
    seen.phase.store(2, Ordering::SeqCst);
    servers::wait_until(
        &format!("{name}: a first borrow after the restart"),
        RECOVERY,
        || seen.ok(2) >= 1,
    );
    let first_ok = restarted_at.elapsed();
    servers::wait_until(
        &format!("{name}: the pool recovers by itself"),
        RECOVERY,
        || {
            sample();
            seen.ok(2) >= 200
        },
    );
    let recovery = restarted_at.elapsed();

    seen.stop.store(true, Ordering::SeqCst);
    servers::join_all(
        &format!("{name}: workers"),
        handles,
        &done,
        CONNECTION_TIMEOUT + IO_TIMEOUT + MARGIN * 2,
    );

    let messages = seen.messages.lock().unwrap().clone();
    eprintln!(
        "{name}: before the kill {} ok; while down {} ok / {} errors; after the restart \
         {} ok / {} errors, recovered in {recovery:?}; slowest borrow {} ms, slowest query \
         {} ms; at most {} connections; down {down_for:?}: {connects_while_down} failed \
         connects, {} borrows failed at once as unavailable (slowest {} µs); first \
         borrow {first_ok:?} after the restart; errors seen: {messages:#?}",
        seen.ok(0),
        during_outage.0,
        during_outage.1,
        seen.ok(2),
        seen.errors(2),
        seen.max_get_ms.load(Ordering::SeqCst),
        seen.max_op_ms.load(Ordering::SeqCst),
        max_connections.load(Ordering::SeqCst),
        seen.unavailable.load(Ordering::SeqCst),
        seen.max_unavailable_us.load(Ordering::SeqCst),
    );
    // The circuit breaker: against a refusing server the pool probes with one connect
    // at a time (at most about one a second once the backoff reaches its cap).
    assert!(
        connects_while_down <= 40,
        "{name}: {connects_while_down} connect attempts in {down_for:?} while down"
    );
    // The first borrow after the restart within the probe's backoff cap (1 s) plus
    // the server's start-up and the machine's slack.
    assert!(
        first_ok <= Duration::from_secs(1) + MARGIN * 2,
        "{name}: first borrow {first_ok:?} after the restart"
    );

    let unexpected = seen.unexpected.lock().unwrap();
    assert!(
        unexpected.is_empty(),
        "{name}: unexpected borrow errors: {unexpected:#?}"
    );
    assert!(
        messages.iter().all(|m| m.len() > "[phase 1] get: ".len()),
        "{name}: every error says what happened: {messages:#?}"
    );
    assert!(
        seen.get_errors_with_cause.load(Ordering::SeqCst) > 0,
        "{name}: failed borrows say why connecting failed: {messages:#?}"
    );
    let slowest_get = Duration::from_millis(seen.max_get_ms.load(Ordering::SeqCst));
    assert!(
        slowest_get <= CONNECTION_TIMEOUT + MARGIN,
        "{name}: a borrow took {slowest_get:?} with a {CONNECTION_TIMEOUT:?} timeout"
    );
    let slowest_op = Duration::from_millis(seen.max_op_ms.load(Ordering::SeqCst));
    assert!(
        slowest_op <= IO_TIMEOUT + MARGIN,
        "{name}: a query took {slowest_op:?} with a {IO_TIMEOUT:?} I/O timeout"
    );

    // No slot was lost: all of them can be borrowed at once, and they all work.
    let state = pool.state();
    assert!(state.connections <= MAX_SIZE, "{name}: {state:?}");
    let mut all = Vec::new();
    for i in 0..MAX_SIZE {
        let mut conn = pool
            .get_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{name}: borrow {i} of {MAX_SIZE} after recovery: {e}"));
        op(&mut *conn).unwrap_or_else(|e| panic!("{name}: query {i} after recovery: {e}"));
        all.push(conn);
    }
    assert_eq!(pool.state().in_use, MAX_SIZE);
    assert!(pool.state().connections <= MAX_SIZE);
    drop(all);
}

/// Asserts that building a pool fails, with a message containing `expect`, well
/// before the 5 s borrow timeout.
fn build_fails_fast<M: ManageConnection>(what: &str, manager: M, expect: &[&str]) {
    let timeout = Duration::from_secs(5);
    let started = Instant::now();
    let result = Pool::builder()
        .max_size(4)
        .min_idle(Some(1))
        .connection_timeout(timeout)
        .build(manager);
    let elapsed = started.elapsed();
    let err = match result {
        Ok(_) => panic!("{what}: build succeeded"),
        Err(e) => e,
    };
    let message = err.to_string();
    eprintln!("{what}: failed in {elapsed:?}: {message}");
    assert!(
        elapsed < Duration::from_secs(2),
        "{what}: took {elapsed:?} to fail (timeout {timeout:?})"
    );
    assert!(
        expect
            .iter()
            .any(|e| message.to_lowercase().contains(&e.to_lowercase())),
        "{what}: the error does not say why ({expect:?}): {message}"
    );
}

#[cfg(feature = "redis")]
mod redis_faults {
    use super::*;
    use stickypool::backends::redis::{RedisClusterManager, RedisManager};

    fn manager(url: &str) -> RedisManager {
        RedisManager::new(url)
            .unwrap()
            .connect_timeout(CONNECTION_TIMEOUT)
            .response_timeout(IO_TIMEOUT)
    }

    #[test]
    fn redis_killed_under_load() {
        let test = "redis_killed_under_load";
        let Some(url) = servers::redis_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        let _redis = servers::lock(Server::Redis);
        let key = servers::unique("fault");
        let op: Op<redis::Connection> = Arc::new(move |conn| {
            redis::cmd("INCR")
                .arg(&key)
                .query::<i64>(conn)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        kill_under_load("redis", &ctl, Server::Redis, fault_pool(manager(&url)), op);
    }

    #[test]
    fn redis_wrong_password() {
        let Some(url) = servers::redis_url("redis_wrong_password") else {
            return;
        };
        let _redis = servers::lock(Server::Redis);
        let rest = url.split_once("://").unwrap().1;
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let wrong = format!("redis://stickypool-nobody:wrong-password@{host}");
        build_fails_fast(
            "redis, wrong password",
            manager(&wrong),
            &["WRONGPASS", "invalid username-password", "auth"],
        );
    }

    #[test]
    fn redis_closed_port() {
        let url = format!("redis://127.0.0.1:{}/", servers::closed_port());
        build_fails_fast("redis, closed port", manager(&url), &["refused"]);
        let nodes = [
            format!("redis://127.0.0.1:{}/", servers::closed_port()),
            format!("redis://127.0.0.1:{}/", servers::closed_port()),
        ];
        build_fails_fast(
            "redis cluster, closed ports",
            RedisClusterManager::new(nodes.iter().map(String::as_str)).unwrap(),
            &["refused", "failed to", "connect"],
        );
    }

    #[test]
    fn redis_bad_urls() {
        for bad in [
            "http://127.0.0.1:6379/",
            "redis://127.0.0.1:notaport/",
            "not a url",
        ] {
            let started = Instant::now();
            let err = RedisManager::new(bad).expect_err(bad);
            assert!(started.elapsed() < Duration::from_secs(1));
            eprintln!("{bad:?}: {err}");
            assert!(!err.to_string().is_empty());
            let err = RedisClusterManager::new([bad]).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql_faults {
    use super::*;
    use mysql::prelude::Queryable;
    use mysql::{Opts, OptsBuilder};
    use stickypool::backends::mysql::MysqlManager;

    fn manager(url: &str) -> MysqlManager {
        MysqlManager::new(
            OptsBuilder::from_opts(Opts::from_url(url).unwrap())
                .tcp_connect_timeout(Some(CONNECTION_TIMEOUT))
                .read_timeout(Some(IO_TIMEOUT))
                .write_timeout(Some(IO_TIMEOUT)),
        )
    }

    #[test]
    fn mysql_killed_under_load() {
        let test = "mysql_killed_under_load";
        let Some(url) = servers::mysql_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        let _mysql = servers::lock(Server::Mysql);
        let op: Op<mysql::Conn> = Arc::new(|conn| {
            let one: Option<u32> = conn.query_first("SELECT 1").map_err(|e| e.to_string())?;
            if one == Some(1) {
                Ok(())
            } else {
                Err(format!("SELECT 1 returned {one:?}"))
            }
        });
        kill_under_load("mysql", &ctl, Server::Mysql, fault_pool(manager(&url)), op);
    }

    /// Without a reset on return nothing notices a dead MySQL connection on return
    /// (`has_broken` cannot), so the check on borrow must not be skipped.
    #[test]
    fn mysql_killed_under_load_without_reset() {
        let test = "mysql_killed_under_load_without_reset";
        let Some(url) = servers::mysql_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        let _mysql = servers::lock(Server::Mysql);
        let op: Op<mysql::Conn> =
            Arc::new(|conn| conn.query_drop("DO 1").map_err(|e| e.to_string()));
        let pool = fault_pool_with(manager(&url), ResetAction::Keep, Duration::ZERO);
        kill_under_load("mysql without reset", &ctl, Server::Mysql, pool, op);
    }

    /// Makes the server read-only, as a failover does to the old writer, until dropped.
    struct ReadOnly(mysql::Conn);

    impl ReadOnly {
        fn set(url: &str) -> ReadOnly {
            let mut admin = mysql::Conn::new(Opts::from_url(url).unwrap()).unwrap();
            admin.query_drop("SET GLOBAL read_only = 1").unwrap();
            ReadOnly(admin)
        }
    }

    impl Drop for ReadOnly {
        fn drop(&mut self) {
            self.0.query_drop("SET GLOBAL read_only = 0").unwrap();
        }
    }

    /// With `check_writable`, connections to a server that became read-only fail their
    /// check and are closed; without it they are handed out.
    #[test]
    fn mysql_check_writable_leaves_a_read_only_server() {
        let test = "mysql_check_writable_leaves_a_read_only_server";
        let Some(url) = servers::mysql_url(test) else {
            return;
        };
        let _mysql = servers::lock(Server::Mysql);
        let pool = |writable: bool| {
            Pool::builder()
                .max_size(1)
                .check_on_borrow(Some(Duration::ZERO))
                .build(manager(&url).check_writable(writable))
                .unwrap()
        };
        let (checked, unchecked) = (pool(true), pool(false));
        {
            let _read_only = ReadOnly::set(&url);
            let err = checked.get_timeout(Duration::from_millis(300)).unwrap_err();
            assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
            assert!(checked.stats().validation_failures >= 1);
            // Without the option the check only pings: the connection is handed out.
            // (A write would fail for an application user; this test's user may make
            // the server read-only, and so may also write to it.)
            let conn = unchecked.get().expect("handed out: nothing asks");
            assert_eq!(unchecked.stats().validation_failures, 0);
            drop(conn);
        }
        // Writable again: the next borrow connects and is served.
        let mut conn = checked.get_timeout(Duration::from_secs(5)).unwrap();
        conn.query_drop("DO 1").unwrap();
    }

    #[test]
    fn mysql_wrong_password() {
        let Some(url) = servers::mysql_url("mysql_wrong_password") else {
            return;
        };
        let _mysql = servers::lock(Server::Mysql);
        let opts = OptsBuilder::from_opts(Opts::from_url(&url).unwrap())
            .pass(Some("wrong-password"))
            .tcp_connect_timeout(Some(CONNECTION_TIMEOUT));
        build_fails_fast(
            "mysql, wrong password",
            MysqlManager::new(opts),
            &["access denied"],
        );
    }

    #[test]
    fn mysql_closed_port() {
        let url = format!(
            "mysql://stickypool:secret@127.0.0.1:{}/stickypool",
            servers::closed_port()
        );
        build_fails_fast("mysql, closed port", manager(&url), &["refused"]);
    }

    /// A listener that never accepts: TCP connects complete in the kernel's backlog and
    /// the server's greeting never comes, so every connect ends at the read timeout.
    #[test]
    fn mysql_silent_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let io = Duration::from_secs(1);
        let manager = MysqlManager::from_url(&format!("mysql://u:p@127.0.0.1:{port}/db"))
            .unwrap()
            .connect_timeout(io)
            .read_timeout(io)
            .write_timeout(io);
        // `build` gives up once a connection's first three attempts failed (each one
        // read timeout), well before its own 30 s timeout, with the driver's error.
        let started = Instant::now();
        let err = Pool::builder()
            .max_size(2)
            .connection_timeout(Duration::from_secs(30))
            .build(manager.clone())
            .expect_err("nothing answers");
        let took = started.elapsed();
        eprintln!("mysql, silent listener: build failed in {took:?}: {err}");
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
        assert!(took < io * 3 + MARGIN * 2, "build took {took:?}");
        // A borrow on such a pool returns within its timeout plus one read timeout.
        let pool = Pool::builder()
            .max_size(2)
            .min_idle(Some(0))
            .connection_timeout(CONNECTION_TIMEOUT)
            .build(manager)
            .unwrap();
        let started = Instant::now();
        let err = pool.get().map(drop).expect_err("nothing answers");
        let took = started.elapsed();
        eprintln!("mysql, silent listener: get failed in {took:?}: {err}");
        assert!(took < CONNECTION_TIMEOUT + io + MARGIN, "get took {took:?}");
        drop(listener);
    }

    #[test]
    fn mysql_bad_urls() {
        for bad in [
            "postgres://u:p@127.0.0.1/db",
            "mysql://u:p@127.0.0.1:notaport/db",
            "mysql://127.0.0.1/db?no_such_option=1",
            "not a url",
        ] {
            let started = Instant::now();
            let err = MysqlManager::from_url(bad).expect_err(bad);
            assert!(started.elapsed() < Duration::from_secs(1));
            eprintln!("{bad:?}: {err}");
            assert!(!err.to_string().is_empty());
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres_faults {
    use super::*;
    use stickypool::backends::postgres::PostgresManager;

    fn manager(url: &str) -> PostgresManager {
        PostgresManager::from_url(url)
            .unwrap()
            .connect_timeout(CONNECTION_TIMEOUT)
            .statement_timeout(IO_TIMEOUT)
            .tcp_user_timeout(IO_TIMEOUT)
    }

    /// The postmaster SIGKILLed in the middle of the load (its backends exit when they
    /// notice) and started again: every thread succeeds again, same process, same pool.
    #[test]
    fn postgres_killed_under_load() {
        let test = "postgres_killed_under_load";
        let Some(url) = servers::postgres_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        let _postgres = servers::lock(Server::Postgres);
        let op: Op<postgres::Client> = Arc::new(|conn| {
            let row = conn.query_one("SELECT 1", &[]).map_err(|e| e.to_string())?;
            match row.get::<_, i32>(0) {
                1 => Ok(()),
                other => Err(format!("SELECT 1 returned {other}")),
            }
        });
        let pool = fault_pool(manager(&url));
        kill_under_load("postgres", &ctl, Server::Postgres, pool, op);
    }

    #[test]
    fn postgres_wrong_password() {
        let Some(url) = servers::postgres_url("postgres_wrong_password") else {
            return;
        };
        let _postgres = servers::lock(Server::Postgres);
        let password = servers::url_password(&url).expect("the test URL has a password");
        let wrong = url.replace(&format!(":{password}@"), ":wrong-password@");
        build_fails_fast(
            "postgres, wrong password",
            manager(&wrong),
            &["password authentication failed"],
        );
        let err = Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(2))
            .build(manager(&wrong))
            .expect_err("wrong password");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("wrong-password"), "{shown}");
    }

    #[test]
    fn postgres_closed_port() {
        let url = format!(
            "postgres://stickypool:hunter2@127.0.0.1:{}/stickypool",
            servers::closed_port()
        );
        build_fails_fast("postgres, closed port", manager(&url), &["refused"]);
        let err = Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(2))
            .build(manager(&url))
            .expect_err("closed port");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn postgres_bad_urls() {
        for bad in [
            "mysql://u:hunter2@127.0.0.1/db",
            "postgres://u:hunter2@127.0.0.1:notaport/db",
            "postgres://u:hunter2@127.0.0.1/db?no_such_option=1",
            "host=127.0.0.1 password=hunter2 port=",
        ] {
            let started = Instant::now();
            let err = PostgresManager::from_url(bad).expect_err(bad);
            assert!(started.elapsed() < Duration::from_secs(1));
            let shown = format!("{err} {err:?}");
            eprintln!("{bad:?}: {err}");
            assert!(!err.to_string().is_empty());
            assert!(!shown.contains("hunter2"), "{bad}: {shown}");
        }
    }
}

/// A hung server (SIGSTOP: it accepts TCP connections and answers nothing) stalls only
/// its own pool: borrowers of `hung` (whose driver timeouts are `io`) get an answer
/// within their timeout plus a few I/O timeouts, and `healthy` (a pool on the other
/// server, built by `build_healthy` while `server` hangs) builds, serves and keeps its
/// reap schedule meanwhile. Both servers' locks are held by the caller.
#[cfg(all(feature = "mysql", feature = "redis"))]
fn a_hung_server_stalls_only_its_own_pool<H: ManageConnection, G: ManageConnection>(
    name: &str,
    ctl: &ServerCtl,
    server: Server,
    (hung, io): (Pool<H>, Duration),
    op: Op<H::Connection>,
    build_healthy: impl FnOnce() -> Pool<G>,
) {
    use stickypool::CloseReason;

    let paused = ctl.pause(server);
    let stop = AtomicBool::new(false);
    let slowest_ms = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    if let Ok(mut conn) = hung.get() {
                        let _ = op(&mut *conn);
                    }
                    slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                }
            });
        }
        let started = Instant::now();
        let healthy = build_healthy();
        let built = started.elapsed();
        servers::wait_until(
            &format!("{name}: the healthy pool's reap runs"),
            RECOVERY,
            || healthy.stats().closed.get(CloseReason::Lifetime) >= 4,
        );
        drop(healthy.get().expect("the healthy pool serves"));
        eprintln!("{name}: the healthy pool built in {built:?} while the other server hung");
        assert!(built < Duration::from_secs(2), "{name}: built in {built:?}");
        // Let the hung pool's borrowers run into the hang for a while.
        servers::wait_until(
            &format!("{name}: borrowers ran into the hang"),
            RECOVERY,
            || started.elapsed() > CONNECTION_TIMEOUT + io * 2,
        );
        stop.store(true, Ordering::SeqCst);
    });
    let slowest = Duration::from_millis(slowest_ms.load(Ordering::SeqCst));
    eprintln!("{name}: slowest borrow and query on the hung pool {slowest:?}");
    // The borrow timeout, a borrow-time check and a query, each bounded by the read
    // timeout, and the close of a dead connection (write timeout).
    assert!(
        slowest <= CONNECTION_TIMEOUT + io * 3 + MARGIN,
        "{name}: a borrow and query took {slowest:?} on the hung pool"
    );
    drop(paused);
    servers::wait_until(&format!("{name}: the hung pool recovers"), RECOVERY, || {
        hung.get_timeout(Duration::from_secs(5))
            .ok()
            .is_some_and(|mut c| op(&mut *c).is_ok())
    });
}

/// A pool with a short lifetime and reap interval, so its housekeeping shows.
#[cfg(all(feature = "mysql", feature = "redis"))]
fn busy_housekeeping<M: ManageConnection>(manager: M) -> Pool<M> {
    Pool::builder()
        .max_size(2)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_secs(5))
        .max_lifetime(Some(Duration::from_millis(50)))
        .reap_interval(Duration::from_millis(10))
        .build(manager)
        .expect("a healthy pool builds while another server hangs")
}

/// A pool that checks every borrow, for the hung-server runs.
#[cfg(all(feature = "mysql", feature = "redis"))]
fn checking_pool<M: ManageConnection>(manager: M) -> Pool<M> {
    Pool::builder()
        .max_size(4)
        .min_idle(Some(4))
        .connection_timeout(CONNECTION_TIMEOUT)
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager)
        .expect("builds while the server answers")
}

#[cfg(all(feature = "mysql", feature = "redis"))]
mod hung_servers {
    use super::*;
    use mysql::prelude::Queryable;
    use stickypool::backends::mysql::MysqlManager;
    use stickypool::backends::redis::RedisManager;

    const IO: Duration = Duration::from_secs(1);

    /// The servers' addresses and control, holding both servers' locks.
    fn servers(test: &str) -> Option<(String, String, ServerCtl, [MutexGuard<'static, ()>; 2])> {
        let mysql_url = servers::mysql_url(test)?;
        let redis_url = servers::redis_url(test)?;
        let ctl = ServerCtl::from_env(test)?;
        let locks = [servers::lock(Server::Mysql), servers::lock(Server::Redis)];
        Some((mysql_url, redis_url, ctl, locks))
    }

    #[test]
    fn a_hung_mysql_server_stalls_only_its_own_pool() {
        let test = "a_hung_mysql_server_stalls_only_its_own_pool";
        let Some((mysql_url, redis_url, ctl, _locks)) = servers(test) else {
            return;
        };
        let manager = MysqlManager::from_url(&mysql_url)
            .unwrap()
            .connect_timeout(IO)
            .read_timeout(IO)
            .write_timeout(IO);
        let op: Op<mysql::Conn> =
            Arc::new(|conn| conn.query_drop("SELECT 1").map_err(|e| e.to_string()));
        a_hung_server_stalls_only_its_own_pool(
            test,
            &ctl,
            Server::Mysql,
            (checking_pool(manager), IO),
            op,
            || busy_housekeeping(RedisManager::new(redis_url.as_str()).unwrap()),
        );
    }

    #[test]
    fn a_hung_redis_server_stalls_only_its_own_pool() {
        let test = "a_hung_redis_server_stalls_only_its_own_pool";
        let Some((mysql_url, redis_url, ctl, _locks)) = servers(test) else {
            return;
        };
        let manager = RedisManager::new(redis_url.as_str())
            .unwrap()
            .connect_timeout(IO)
            .response_timeout(IO);
        let op: Op<redis::Connection> = Arc::new(|conn| {
            redis::cmd("PING")
                .query::<String>(conn)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        a_hung_server_stalls_only_its_own_pool(
            test,
            &ctl,
            Server::Redis,
            (checking_pool(manager), IO),
            op,
            || busy_housekeeping(MysqlManager::from_url(&mysql_url).unwrap()),
        );
    }

    /// The bound of one check on a hung server.
    const VALIDATION: Duration = Duration::from_millis(200);

    /// Borrows from a pool whose server hangs, with the driver's own (60 s) read
    /// timeouts and a short `validation_timeout`: every `get` returns within its
    /// timeout plus one bounded check.
    fn validation_bounds_every_borrow<M: ManageConnection>(
        name: &str,
        ctl: &ServerCtl,
        server: Server,
        manager: M,
    ) {
        let pool = Pool::builder()
            .max_size(4)
            .min_idle(Some(4))
            .connection_timeout(CONNECTION_TIMEOUT)
            .check_on_borrow(Some(Duration::ZERO))
            .validation_timeout(Some(VALIDATION))
            .build(manager)
            .expect("builds while the server answers");
        let paused = ctl.pause(server);
        let started = Instant::now();
        let slowest_ms = AtomicU64::new(0);
        let (borrows, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    while started.elapsed() < CONNECTION_TIMEOUT * 3 {
                        let begun = Instant::now();
                        if pool.get().is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        borrows.fetch_add(1, Ordering::SeqCst);
                        slowest_ms.fetch_max(begun.elapsed().as_millis() as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        let slowest = Duration::from_millis(slowest_ms.load(Ordering::SeqCst));
        let (borrows, failed) = (borrows.into_inner(), failed.into_inner());
        eprintln!(
            "{name}: {borrows} borrows ({failed} failed) on the hung server, slowest {slowest:?} \
             (connection_timeout {CONNECTION_TIMEOUT:?}, validation_timeout {VALIDATION:?})"
        );
        assert!(
            failed > 0,
            "{name}: the server hung, yet every borrow passed its check"
        );
        assert!(
            pool.stats().validation_failures >= 4,
            "{name}: the checks that timed out count as failed: {:?}",
            pool.stats()
        );
        // `MARGIN` is slack for a loaded machine; without the bound, a check waits out
        // the driver's 60 s read timeout.
        assert!(
            slowest <= CONNECTION_TIMEOUT + VALIDATION + MARGIN,
            "{name}: a borrow took {slowest:?} on the hung server"
        );
        drop(paused);
        servers::wait_until(&format!("{name}: the pool recovers"), RECOVERY, || {
            pool.get_timeout(Duration::from_secs(5)).is_ok()
        });
    }

    #[test]
    fn validation_timeout_bounds_a_borrow_from_a_hung_mysql_server() {
        let test = "validation_timeout_bounds_a_borrow_from_a_hung_mysql_server";
        let Some((mysql_url, _, ctl, _locks)) = servers(test) else {
            return;
        };
        let manager = MysqlManager::from_url(&mysql_url).unwrap();
        assert_eq!(
            manager.opts().get_read_timeout(),
            Some(&stickypool::backends::mysql::DEFAULT_IO_TIMEOUT)
        );
        validation_bounds_every_borrow(test, &ctl, Server::Mysql, manager);
    }

    #[test]
    fn validation_timeout_bounds_a_borrow_from_a_hung_redis_server() {
        let test = "validation_timeout_bounds_a_borrow_from_a_hung_redis_server";
        let Some((_, redis_url, ctl, _locks)) = servers(test) else {
            return;
        };
        let manager = RedisManager::new(redis_url.as_str()).unwrap();
        validation_bounds_every_borrow(test, &ctl, Server::Redis, manager);
    }

    /// The driver has no read timeout at all; `Client::is_valid` bounds the check.
    #[cfg(feature = "postgres")]
    #[test]
    fn validation_timeout_bounds_a_borrow_from_a_hung_postgres_server() {
        let test = "validation_timeout_bounds_a_borrow_from_a_hung_postgres_server";
        let (Some(url), Some(ctl)) = (servers::postgres_url(test), ServerCtl::from_env(test))
        else {
            return;
        };
        let _postgres = servers::lock(Server::Postgres);
        let manager = stickypool::backends::postgres::PostgresManager::from_url(&url).unwrap();
        validation_bounds_every_borrow(test, &ctl, Server::Postgres, manager);
    }
}
