//! 32 threads on an 8-connection pool, thousands of real round trips per backend, while
//! the server is asked how many connections it has: never more than 8 from the pool.
#![cfg(any(feature = "mysql", feature = "redis", feature = "sqlite"))]

mod servers;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stickypool::{ManageConnection, Pool, ResetAction};

const THREADS: usize = 32;
const MAX_SIZE: u32 = 8;
const OPS_PER_THREAD: usize = 150;
/// Far more than the run needs (a few seconds), so only a hang trips it.
const DEADLINE: Duration = Duration::from_secs(90);

fn build<M: ManageConnection>(manager: M) -> Pool<M> {
    Pool::builder()
        .max_size(MAX_SIZE)
        // Every connection is opened before the run, so the server-side count is not
        // blurred by connects in flight.
        .min_idle(Some(MAX_SIZE))
        .connection_timeout(Duration::from_secs(10))
        .reset_on_return(ResetAction::Rollback)
        .build(manager)
        .expect("pool builds")
}

#[derive(Debug, Default)]
struct Report {
    elapsed: Duration,
    ops: usize,
    errors: usize,
    first_errors: Vec<String>,
    samples: usize,
    max_server_connections: u32,
    max_pool_connections: u32,
}

/// Runs `op` `OPS_PER_THREAD` times on each of `THREADS` threads, each time on a
/// borrowed connection, while the calling thread samples `server_connections` (how many
/// connections the server sees from the pool) and the pool's own count.
fn run<M: ManageConnection>(
    name: &str,
    pool: &Pool<M>,
    op: impl Fn(&mut M::Connection, usize, usize) -> Result<(), String> + Sync,
    mut server_connections: impl FnMut() -> u32,
) -> Report {
    let finished = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let first_errors = Mutex::new(Vec::new());
    let mut report = Report::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (op, finished, errors, first_errors) = (&op, &finished, &errors, &first_errors);
            s.spawn(move || {
                for i in 0..OPS_PER_THREAD {
                    let result = pool
                        .get()
                        .map_err(|e| format!("get: {e}"))
                        .and_then(|mut conn| op(&mut *conn, t, i));
                    if let Err(e) = result {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = first_errors.lock().unwrap();
                        if first.len() < 10 {
                            first.push(e);
                        }
                    }
                }
                finished.fetch_add(1, Ordering::Release);
            });
        }
        while finished.load(Ordering::Acquire) < THREADS {
            assert!(started.elapsed() < DEADLINE, "{name}: load run hangs");
            report.max_server_connections = report.max_server_connections.max(server_connections());
            report.max_pool_connections = report.max_pool_connections.max(pool.state().connections);
            report.samples += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    report.elapsed = started.elapsed();
    report.ops = THREADS * OPS_PER_THREAD;
    report.errors = errors.into_inner();
    report.first_errors = first_errors.into_inner().unwrap();
    eprintln!(
        "{name}: {} ops on {THREADS} threads in {:?} ({:.0} ops/s), {} samples, \
         at most {} connections on the server and {} in the pool",
        report.ops,
        report.elapsed,
        report.ops as f64 / report.elapsed.as_secs_f64(),
        report.samples,
        report.max_server_connections,
        report.max_pool_connections
    );
    report
}

fn check(name: &str, report: &Report, pool_state: stickypool::State) {
    assert_eq!(
        report.errors, 0,
        "{name}: errors under load: {:#?}",
        report.first_errors
    );
    assert!(report.samples > 0, "{name}: the server was never sampled");
    assert!(
        report.max_server_connections <= MAX_SIZE,
        "{name}: the server saw {} connections from an {MAX_SIZE}-connection pool",
        report.max_server_connections
    );
    assert!(report.max_pool_connections <= MAX_SIZE);
    assert!(pool_state.connections <= MAX_SIZE);
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_under_load() {
    use mysql::prelude::Queryable;
    use mysql::{Opts, OptsBuilder};
    use stickypool::backends::mysql::MysqlManager;

    let Some(url) = servers::mysql_url("mysql_under_load") else {
        return;
    };
    // TCP only: by default the driver, connecting over TCP to a local server, opens a
    // second connection over the server's Unix socket and closes the first, so a
    // connect briefly counts twice on the server. That is the driver's doing, and it
    // would blur the count this test is about.
    let opts = OptsBuilder::from_opts(Opts::from_url(&url).unwrap()).prefer_socket(false);
    let manager = MysqlManager::new(opts);

    let mut sampler = manager.connect().expect("sampler connection");
    let mut threads_connected = move || -> u32 {
        let row: Option<(String, u32)> = sampler
            .query_first("SHOW STATUS LIKE 'Threads_connected'")
            .expect("SHOW STATUS");
        row.expect("Threads_connected").1
    };
    // Connections the server has besides the pool's: the sampler's own, and any other.
    let others = threads_connected();

    let pool = build(manager);
    let report = run(
        "mysql",
        &pool,
        |conn, t, i| {
            let n = (t * 1_000_000 + i) as u64;
            let echo: Option<u64> = conn
                .exec_first("SELECT ?", (n,))
                .map_err(|e| e.to_string())?;
            if echo == Some(n) {
                Ok(())
            } else {
                Err(format!("SELECT {n} returned {echo:?}"))
            }
        },
        || threads_connected().saturating_sub(others),
    );
    check("mysql", &report, pool.state());
}

#[cfg(feature = "redis")]
#[test]
fn redis_under_load() {
    use stickypool::backends::redis::RedisManager;

    let Some(url) = servers::redis_url("redis_under_load") else {
        return;
    };
    let manager = RedisManager::new(url.as_str())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(10));
    let key = servers::unique("load");

    let mut sampler = manager.connect().expect("sampler connection");
    let mut clients = move || -> u32 {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut sampler)
            .unwrap();
        list.lines().count() as u32
    };
    let others = clients();

    let pool = build(manager);
    let report = run(
        "redis",
        &pool,
        |conn, _, _| {
            let n: i64 = redis::cmd("INCR")
                .arg(&key)
                .query(conn)
                .map_err(|e| e.to_string())?;
            if n > 0 {
                Ok(())
            } else {
                Err(format!("INCR returned {n}"))
            }
        },
        || clients().saturating_sub(others),
    );
    check("redis", &report, pool.state());
    let mut conn = pool.get().unwrap();
    let total: usize = redis::cmd("GET").arg(&key).query(&mut *conn).unwrap();
    assert_eq!(total, THREADS * OPS_PER_THREAD, "every INCR counted once");
    let _: () = redis::cmd("DEL").arg(&key).query(&mut *conn).unwrap();
}

#[cfg(feature = "redis")]
#[test]
fn redis_cluster_under_load() {
    use stickypool::backends::redis::RedisClusterManager;

    let Some(urls) = servers::redis_cluster_urls("redis_cluster_under_load") else {
        return;
    };
    let manager = RedisClusterManager::new(urls.iter().map(String::as_str)).unwrap();
    let keys: Vec<String> = (0..64)
        .map(|i| servers::unique(&format!("cl{i}")))
        .collect();

    let mut nodes: Vec<redis::Connection> = urls
        .iter()
        .map(|u| {
            redis::Client::open(u.as_str())
                .unwrap()
                .get_connection()
                .unwrap()
        })
        .collect();
    // Each pooled cluster connection holds one socket per node: count per node.
    let mut busiest_node = move || -> u32 {
        nodes
            .iter_mut()
            .map(|node| {
                let list: String = redis::cmd("CLIENT").arg("LIST").query(node).unwrap();
                list.lines().count() as u32
            })
            .max()
            .unwrap_or(0)
    };
    let others = busiest_node();

    let pool = build(manager);
    let report = run(
        "redis cluster",
        &pool,
        |conn, t, i| {
            let key = &keys[(t * 7 + i) % keys.len()];
            redis::cmd("INCR")
                .arg(key)
                .query::<i64>(conn)
                .map(drop)
                .map_err(|e| e.to_string())
        },
        || busiest_node().saturating_sub(others),
    );
    check("redis cluster", &report, pool.state());
    let mut conn = pool.get().unwrap();
    let mut total = 0;
    for key in &keys {
        total += redis::cmd("GET")
            .arg(key)
            .query::<Option<usize>>(&mut *conn)
            .unwrap()
            .unwrap_or(0);
        let _: () = redis::cmd("DEL").arg(key).query(&mut *conn).unwrap();
    }
    assert_eq!(total, THREADS * OPS_PER_THREAD, "every INCR counted once");
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_under_load() {
    use stickypool::backends::sqlite::SqliteManager;

    let dir = servers::TempDir::new("sqlite-load");
    let manager = SqliteManager::file(dir.path().join("load.db")).with_init(|conn| {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(Duration::from_secs(10))
    });
    let pool = build(manager);
    pool.get()
        .unwrap()
        .execute_batch("CREATE TABLE hits (t INTEGER, i INTEGER)")
        .unwrap();

    let report = run(
        "sqlite",
        &pool,
        |conn, t, i| {
            let run = || -> rusqlite::Result<()> {
                if i % 4 == 0 {
                    conn.execute("INSERT INTO hits VALUES (?1, ?2)", [t as i64, i as i64])?;
                } else {
                    let _: i64 = conn.query_row("SELECT COUNT(*) FROM hits", [], |r| r.get(0))?;
                }
                Ok(())
            };
            run().map_err(|e| e.to_string())
        },
        // No server: the open connections are the pool's own count.
        || pool.state().connections,
    );
    check("sqlite", &report, pool.state());
    let rows: i64 = pool
        .get()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM hits", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as usize, THREADS * OPS_PER_THREAD.div_ceil(4));
}
