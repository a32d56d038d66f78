//! The same workload through stickypool and through r2d2, per backend: borrow a
//! connection, do one real round trip, give it back.
//!
//! * Redis: `PING` (stickypool's `RedisManager` / the `redis` crate's r2d2 support)
//! * MySQL: `SELECT 1` (stickypool's `MysqlManager` / `r2d2_mysql`, and also
//!   `r2d2_mysql`'s manager in a stickypool pool, which compares the pools alone:
//!   `r2d2_mysql` pings in `has_broken`, on every return)
//! * SQLite: `SELECT 1` on a file database in a temporary directory (`SqliteManager` /
//!   `r2d2_sqlite`)
//! * PostgreSQL: `SELECT 1` as a simple query, one round trip (`PostgresManager` /
//!   `r2d2_postgres`), and stickypool with `ResetAction::Rollback` (the fake close: one
//!   more round trip per return, which r2d2 does not offer)
//! * diesel: `SELECT 1` through `diesel::sql_query` on PostgreSQL and on SQLite
//!   (`DieselManager` / diesel's own `r2d2::ConnectionManager`)
//!
//! Each at 1 thread, and at 32 threads sharing 8 connections, with
//! `test_on_check_out(false)` and no reset on return on both sides; and, for MySQL,
//! with every borrow checked (`mysql checked borrow`: both pools' default, and
//! stickypool's opt-in `check_on_borrow(Some(500 ms))`). The 32-thread
//! figures are wall time per operation for the whole group of threads (lower is more
//! throughput).
//!
//! Then, after criterion's rows, the contended tables for Redis, MySQL and PostgreSQL
//! (`benches/common/contended.rs`): 32 threads on 8 connections and 64 on 16, each
//! pool for `BACKENDS_SECS` (default 2) per row, giving time per operation, the wait
//! in `get()` (p50, p99, max), the worker threads' CPU and context switches per
//! operation, and ratios to r2d2 in the same run. Each table has stickypool twice,
//! with the default fairness bound and with `fair_after(50 ms)`, and a `direct` row: no
//! pool, as many connections opened with the driver as the pool has, thread `t`
//! taking connection `t % n` through its own mutex. `BACKENDS_ROUNDS` (default 1)
//! repeats the tables, alternating the order of the rows; `BACKENDS_CONTENDED_ONLY=1`
//! skips criterion's rows. To run part of a table: `BACKENDS_THREADS=64` keeps the
//! shape with that many threads, and `BACKENDS_ROWS=0,2` the rows at those positions
//! (from 0, in the printed order: 0 is stickypool, 2 is r2d2). `BACKENDS_FAIR_AFTER_MS`
//! sets the second row's bound (default 50; a very large value turns fairness off).
//!
//! Run it (servers from the same variables as the tests; a backend whose variable is
//! unset is skipped with a message, SQLite needs no server):
//!
//! ```text
//! source scripts/servers.sh && cargo bench --features compare --bench backends
//! ```
//!
//! Pass a filter after `--` to run part of it, e.g. `-- redis`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use diesel::RunQueryDsl;
use mysql::prelude::Queryable;
use stickypool::ManageConnection;
use stickypool::backends::diesel::DieselManager;
use stickypool::backends::mysql::MysqlManager;
use stickypool::backends::postgres::PostgresManager;
use stickypool::backends::redis::RedisManager;
use stickypool::backends::sqlite::SqliteManager;

#[path = "../../benches/common/contended.rs"]
mod contended;

use contended::{Direct, Outcome, SHAPES, Shape};

const MAX_SIZE: u32 = 8;
const THREADS: usize = 32;

fn stickypool<M: ManageConnection>(manager: M) -> stickypool::Pool<M> {
    stickypool_of(MAX_SIZE, manager)
}

fn stickypool_of<M: ManageConnection>(size: u32, manager: M) -> stickypool::Pool<M> {
    stickypool_with(size, stickypool::DEFAULT_FAIR_AFTER, manager)
}

fn stickypool_with<M: ManageConnection>(
    size: u32,
    fair_after: Duration,
    manager: M,
) -> stickypool::Pool<M> {
    stickypool::Pool::builder()
        .max_size(size)
        .fair_after(Some(fair_after))
        .min_idle(Some(size))
        .connection_timeout(Duration::from_secs(30))
        .check_on_borrow(None)
        .build(manager)
        .expect("stickypool builds")
}

fn r2d2<M: r2d2::ManageConnection>(manager: M) -> r2d2::Pool<M> {
    r2d2_of(MAX_SIZE, manager)
}

fn r2d2_of<M: r2d2::ManageConnection>(size: u32, manager: M) -> r2d2::Pool<M> {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .connection_timeout(Duration::from_secs(30))
        .test_on_check_out(false)
        .build(manager)
        .expect("r2d2 builds")
}

/// Runs `op` `iters` times spread over `threads` threads, and returns the wall time
/// from the first thread starting to the last one finishing. Each thread reads the
/// clock itself: on two cores the spawning thread may not run again until the workers
/// are done, so its clock readings would miss most of the work.
fn run_threads(iters: u64, threads: usize, op: &(impl Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let share = iters / threads as u64 + u64::from(t < iters % threads as u64);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..share {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("threads > 0");
    let last = spans.iter().map(|s| s.1).max().expect("threads > 0");
    last - first
}

/// Benchmarks `op` at 1 thread and at `THREADS` threads under `group/name`.
fn bench_both(c: &mut Criterion, group: &str, name: &str, op: impl Fn() + Sync) {
    let mut g = c.benchmark_group(group);
    g.bench_function(BenchmarkId::new(name, "1 thread"), |b| b.iter(&op));
    g.bench_function(
        BenchmarkId::new(name, format!("{THREADS} threads, {MAX_SIZE} connections")),
        |b| b.iter_custom(|iters| run_threads(iters, THREADS, &op)),
    );
    g.finish();
}

fn env(var: &str, backend: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            eprintln!("skipping {backend}: {var} not set (source scripts/servers.sh)");
            None
        }
    }
}

fn redis_ping(conn: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(conn).expect("PING");
    black_box(pong);
}

fn bench_redis(c: &mut Criterion) {
    let Some(url) = env("STICKYPOOL_REDIS_URL", "redis") else {
        return;
    };
    let ours = stickypool(RedisManager::new(url.as_str()).expect("redis URL"));
    bench_both(c, "redis PING", "stickypool", || {
        redis_ping(&mut ours.get().expect("borrow"));
    });
    drop(ours);
    let theirs = r2d2(redis::Client::open(url.as_str()).expect("redis URL"));
    bench_both(c, "redis PING", "r2d2", || {
        redis_ping(&mut theirs.get().expect("borrow"));
    });
}

fn mysql_select(conn: &mut mysql::Conn) {
    let one: Option<u32> = conn.query_first("SELECT 1").expect("SELECT 1");
    black_box(one);
}

fn bench_mysql(c: &mut Criterion) {
    let Some(url) = env("STICKYPOOL_MYSQL_URL", "mysql") else {
        return;
    };
    let opts = mysql::Opts::from_url(&url).expect("mysql URL");
    let builder = || mysql::OptsBuilder::from_opts(opts.clone());

    let ours = stickypool(MysqlManager::new(opts.clone()));
    bench_both(c, "mysql SELECT 1", "stickypool", || {
        mysql_select(&mut ours.get().expect("borrow"));
    });
    drop(ours);
    let theirs = r2d2(r2d2_mysql::MySqlConnectionManager::new(builder()));
    bench_both(c, "mysql SELECT 1", "r2d2", || {
        mysql_select(&mut theirs.get().expect("borrow"));
    });
    drop(theirs);
    let adapted = stickypool(r2d2_mysql::MySqlConnectionManager::new(builder()));
    bench_both(
        c,
        "mysql SELECT 1",
        "stickypool + r2d2_mysql manager",
        || {
            mysql_select(&mut adapted.get().expect("borrow"));
        },
    );
    drop(adapted);

    // Every borrow checked (r2d2's `test_on_check_out`, both pools' default) against
    // HikariCP's opt-in bypass window.
    let checked = |bypass| {
        stickypool::Pool::builder()
            .max_size(MAX_SIZE)
            .min_idle(Some(MAX_SIZE))
            .check_on_borrow(Some(bypass))
            .build(MysqlManager::new(opts.clone()))
            .expect("stickypool builds")
    };
    let every = checked(Duration::ZERO);
    bench_both(c, "mysql checked borrow", "stickypool", || {
        mysql_select(&mut every.get().expect("borrow"));
    });
    drop(every);
    let window = checked(Duration::from_millis(500));
    bench_both(c, "mysql checked borrow", "stickypool bypass 500ms", || {
        mysql_select(&mut window.get().expect("borrow"));
    });
    drop(window);
    let theirs = r2d2::Pool::builder()
        .max_size(MAX_SIZE)
        .min_idle(Some(MAX_SIZE))
        .build(r2d2_mysql::MySqlConnectionManager::new(builder()))
        .expect("r2d2 builds");
    bench_both(c, "mysql checked borrow", "r2d2", || {
        mysql_select(&mut theirs.get().expect("borrow"));
    });
}

fn sqlite_select(conn: &rusqlite::Connection) {
    let one: i64 = conn
        .prepare_cached("SELECT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .expect("SELECT 1");
    black_box(one);
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench_sqlite(c: &mut Criterion) {
    let dir =
        TempDir(std::env::temp_dir().join(format!("stickypool-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temporary directory");
    let path = dir.0.join("bench.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE IF NOT EXISTS t (x)"))
        .expect("create the database");

    let ours = stickypool(SqliteManager::file(&path));
    bench_both(c, "sqlite SELECT 1", "stickypool", || {
        sqlite_select(&ours.get().expect("borrow"));
    });
    drop(ours);
    let theirs = r2d2(r2d2_sqlite::SqliteConnectionManager::file(&path));
    bench_both(c, "sqlite SELECT 1", "r2d2", || {
        sqlite_select(&theirs.get().expect("borrow"));
    });
}

fn postgres_select(conn: &mut postgres::Client) {
    black_box(conn.simple_query("SELECT 1").expect("SELECT 1"));
}

fn bench_postgres(c: &mut Criterion) {
    let Some(url) = env("STICKYPOOL_POSTGRES_URL", "postgres") else {
        return;
    };
    let config: postgres::Config = url.parse().expect("postgres URL");
    let ours = stickypool(PostgresManager::new(config.clone(), postgres::NoTls));
    bench_both(c, "postgres SELECT 1", "stickypool", || {
        postgres_select(&mut ours.get().expect("borrow"));
    });
    drop(ours);
    let theirs = r2d2(r2d2_postgres::PostgresConnectionManager::new(
        config.clone(),
        postgres::NoTls,
    ));
    bench_both(c, "postgres SELECT 1", "r2d2", || {
        postgres_select(&mut theirs.get().expect("borrow"));
    });
    drop(theirs);
    let resetting = stickypool::Pool::builder()
        .max_size(MAX_SIZE)
        .min_idle(Some(MAX_SIZE))
        .check_on_borrow(None)
        .reset_on_return(stickypool::ResetAction::Rollback)
        .build(PostgresManager::new(config, postgres::NoTls))
        .expect("stickypool builds");
    bench_both(
        c,
        "postgres SELECT 1",
        "stickypool, rollback on return",
        || {
            postgres_select(&mut resetting.get().expect("borrow"));
        },
    );
}

fn diesel_select<C: diesel::Connection>(conn: &mut C)
where
    diesel::query_builder::SqlQuery: diesel::query_dsl::methods::ExecuteDsl<C>,
{
    black_box(
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .expect("SELECT 1"),
    );
}

fn bench_diesel_on<C>(c: &mut Criterion, group: &str, url: &str)
where
    C: diesel::r2d2::R2D2Connection + Send + 'static,
    diesel::query_builder::SqlQuery: diesel::query_dsl::methods::ExecuteDsl<C>,
{
    let ours = stickypool(DieselManager::<C>::new(url));
    bench_both(c, group, "stickypool", || {
        diesel_select(&mut *ours.get().expect("borrow"));
    });
    drop(ours);
    let theirs = r2d2(diesel::r2d2::ConnectionManager::<C>::new(url));
    bench_both(c, group, "r2d2", || {
        diesel_select(&mut *theirs.get().expect("borrow"));
    });
}

fn bench_diesel(c: &mut Criterion) {
    if let Some(url) = env("STICKYPOOL_POSTGRES_URL", "diesel on postgres") {
        bench_diesel_on::<diesel::PgConnection>(c, "diesel postgres SELECT 1", &url);
    }
    let dir = TempDir(
        std::env::temp_dir().join(format!("stickypool-bench-diesel-{}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).expect("temporary directory");
    let path = dir.0.join("bench.db");
    bench_diesel_on::<diesel::SqliteConnection>(
        c,
        "diesel sqlite SELECT 1",
        path.to_str().expect("a UTF-8 path"),
    );
}

fn backends(c: &mut Criterion) {
    bench_redis(c);
    bench_mysql(c);
    bench_sqlite(c);
    bench_postgres(c);
    bench_diesel(c);
}

/// One contended row through a pool: `get` borrows, `op` runs on the connection.
fn pool_row<G: std::ops::DerefMut>(
    name: &str,
    shape: Shape,
    get: impl Fn() -> G + Sync,
    op: impl Fn(&mut G::Target) + Sync,
) -> Outcome {
    let (warm_up, measure) = contended_times();
    contended::pool_run(name, shape.threads, warm_up, measure, get, op)
}

/// The contended tables' second stickypool row: barging up to a long fairness bound,
/// `BACKENDS_FAIR_AFTER_MS` (default 50).
fn long_fair_after_row<M: ManageConnection>(
    shape: Shape,
    manager: M,
    op: impl Fn(&mut M::Connection) + Sync,
) -> Outcome {
    let millis = contended::env_u64("BACKENDS_FAIR_AFTER_MS", 50);
    let pool = stickypool_with(shape.connections, Duration::from_millis(millis), manager);
    pool_row(
        &format!("stickypool, fair_after {millis}ms"),
        shape,
        || pool.get().expect("borrow"),
        op,
    )
}

/// The row without a pool: `shape.connections` connections from `connect`.
fn direct_row<C: Send>(
    shape: Shape,
    connect: impl Fn() -> C,
    op: impl Fn(&mut C) + Sync,
) -> Outcome {
    let conns = Direct::new((0..shape.connections).map(|_| connect()));
    let (warm_up, measure) = contended_times();
    contended::run(
        "direct (a mutex per connection)",
        shape.threads,
        warm_up,
        measure,
        &|t| conns.with(t, &op),
    )
}

fn contended_times() -> (Duration, Duration) {
    let measure = Duration::from_secs(contended::env_u64("BACKENDS_SECS", 2).max(1));
    (measure / 10, measure)
}

/// A comma-separated list of whole numbers from the environment, if set.
fn env_list(name: &str) -> Option<Vec<usize>> {
    let value = std::env::var(name).ok()?;
    let list = value
        .split(',')
        .map(|item| item.trim().parse())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|_| panic!("{name} must be whole numbers and commas, got {value:?}"));
    Some(list)
}

/// A table's rows, each building its pool (or connections) and running it.
type Rows<'a> = Vec<Box<dyn Fn(Shape) -> Outcome + 'a>>;

/// Runs `rows` for every shape and round (odd rounds in reverse order) and prints
/// each table in the rows' order.
fn contended_tables(title: &str, rows: Rows<'_>) {
    let rounds = contended::env_u64("BACKENDS_ROUNDS", 1).max(1);
    let threads = contended::env_u64("BACKENDS_THREADS", 0);
    let wanted = env_list("BACKENDS_ROWS");
    let shapes = SHAPES
        .into_iter()
        .filter(|shape| threads == 0 || shape.threads as u64 == threads);
    for round in 0..rounds {
        for shape in shapes.clone() {
            let mut order: Vec<usize> = (0..rows.len())
                .filter(|i| wanted.as_ref().is_none_or(|rows| rows.contains(i)))
                .collect();
            if !round.is_multiple_of(2) {
                order.reverse();
            }
            let mut outcomes: Vec<(usize, Outcome)> =
                order.into_iter().map(|i| (i, rows[i](shape))).collect();
            outcomes.sort_by_key(|(i, _)| *i);
            let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
            contended::print_table(
                &format!(
                    "{title}: {} threads, {} connections (round {})",
                    shape.threads,
                    shape.connections,
                    round + 1
                ),
                &outcomes,
            );
        }
    }
}

fn contended_redis(url: &str) {
    let client = || redis::Client::open(url).expect("redis URL");
    contended_tables(
        "redis PING",
        vec![
            Box::new(|shape: Shape| {
                let pool = stickypool_of(shape.connections, RedisManager::new(url).expect("URL"));
                pool_row(
                    "stickypool",
                    shape,
                    || pool.get().expect("borrow"),
                    redis_ping,
                )
            }),
            Box::new(|shape: Shape| {
                long_fair_after_row(shape, RedisManager::new(url).expect("URL"), redis_ping)
            }),
            Box::new(|shape: Shape| {
                let pool = r2d2_of(shape.connections, client());
                pool_row("r2d2", shape, || pool.get().expect("borrow"), redis_ping)
            }),
            Box::new(|shape: Shape| {
                direct_row(
                    shape,
                    || client().get_connection().expect("connect"),
                    redis_ping,
                )
            }),
        ],
    );
}

fn contended_mysql(url: &str) {
    let opts = mysql::Opts::from_url(url).expect("mysql URL");
    let builder = || mysql::OptsBuilder::from_opts(opts.clone());
    contended_tables(
        "mysql SELECT 1",
        vec![
            Box::new(|shape: Shape| {
                let pool = stickypool_of(shape.connections, MysqlManager::new(opts.clone()));
                pool_row(
                    "stickypool",
                    shape,
                    || pool.get().expect("borrow"),
                    mysql_select,
                )
            }),
            Box::new(|shape: Shape| {
                long_fair_after_row(shape, MysqlManager::new(opts.clone()), mysql_select)
            }),
            Box::new(|shape: Shape| {
                let manager = r2d2_mysql::MySqlConnectionManager::new(builder());
                let pool = r2d2_of(shape.connections, manager);
                pool_row("r2d2", shape, || pool.get().expect("borrow"), mysql_select)
            }),
            Box::new(|shape: Shape| {
                let manager = r2d2_mysql::MySqlConnectionManager::new(builder());
                let pool = stickypool_of(shape.connections, manager);
                pool_row(
                    "stickypool + r2d2_mysql manager",
                    shape,
                    || pool.get().expect("borrow"),
                    mysql_select,
                )
            }),
            Box::new(|shape: Shape| {
                direct_row(
                    shape,
                    || mysql::Conn::new(opts.clone()).expect("connect"),
                    mysql_select,
                )
            }),
        ],
    );
}

fn contended_postgres(url: &str) {
    let config: postgres::Config = url.parse().expect("postgres URL");
    contended_tables(
        "postgres SELECT 1",
        vec![
            Box::new(|shape: Shape| {
                let manager = PostgresManager::new(config.clone(), postgres::NoTls);
                let pool = stickypool_of(shape.connections, manager);
                pool_row(
                    "stickypool",
                    shape,
                    || pool.get().expect("borrow"),
                    postgres_select,
                )
            }),
            Box::new(|shape: Shape| {
                long_fair_after_row(
                    shape,
                    PostgresManager::new(config.clone(), postgres::NoTls),
                    postgres_select,
                )
            }),
            Box::new(|shape: Shape| {
                let manager =
                    r2d2_postgres::PostgresConnectionManager::new(config.clone(), postgres::NoTls);
                let pool = r2d2_of(shape.connections, manager);
                pool_row(
                    "r2d2",
                    shape,
                    || pool.get().expect("borrow"),
                    postgres_select,
                )
            }),
            Box::new(|shape: Shape| {
                direct_row(
                    shape,
                    || config.connect(postgres::NoTls).expect("connect"),
                    postgres_select,
                )
            }),
        ],
    );
}

/// The filter given after `--` (criterion's too), if any.
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|arg| !arg.starts_with('-'))
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    if std::env::var_os("BACKENDS_CONTENDED_ONLY").is_none() {
        backends(&mut c);
        c.final_summary();
    }
    let wanted = |group: &str| filter().is_none_or(|f| group.contains(f.as_str()));
    if wanted("redis PING")
        && let Ok(url) = std::env::var("STICKYPOOL_REDIS_URL")
    {
        contended_redis(&url);
    }
    if wanted("mysql SELECT 1")
        && let Ok(url) = std::env::var("STICKYPOOL_MYSQL_URL")
    {
        contended_mysql(&url);
    }
    if wanted("postgres SELECT 1")
        && let Ok(url) = std::env::var("STICKYPOOL_POSTGRES_URL")
    {
        contended_postgres(&url);
    }
}
