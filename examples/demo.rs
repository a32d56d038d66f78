//! A fixed pool of worker threads hammering a database through a stickypool pool.
//!
//! This is the shape of service stickypool is built for: many OS threads (64 by
//! default) sharing a few connections (8 by default). Each worker loops for a fixed
//! time, borrowing a connection for every operation: 80% reads, 20% writes on a small
//! table of 1,000 keys. Every borrow is timed, and at the end the demo prints the
//! throughput, the wait-time quantiles (how long `get()` took), the errors and the
//! pool's own counters (`pool.stats()`).
//!
//! Without any server it runs on SQLite: a database file in WAL mode in a temporary
//! directory, removed at exit; that needs only `-F sqlite`. `--compare r2d2` runs the
//! same workload again through r2d2 and prints both side by side, with stickypool's
//! time per operation and p99 wait as ratios of r2d2's, and draws both pools' wait-time
//! distributions (cumulative, log time axis) into an SVG file: `target/demo-waits.svg`
//! when run from a directory with a `target/` (as `cargo run` is), else in the system's
//! temporary directory, or wherever `--svg PATH` says (which also draws stickypool's
//! curve alone without `--compare`).
//!
//! With `--backend redis` (GET/SET) or `--backend mysql` (SELECT and an upsert on a
//! table it creates, `stickypool_demo`, and drops at the end) it uses a real server;
//! those need the crate's `redis` or `mysql` feature. With `--compare r2d2` there, r2d2
//! runs stickypool's own manager, so the two pools are compared alone.
//!
//! ```text
//! cargo run --release -F sqlite --example demo
//! cargo run --release -F sqlite --example demo -- --threads 32 --seconds 10
//! cargo run --release -F sqlite --example demo -- --compare r2d2
//! cargo run --release -F sqlite --example demo -- --compare r2d2 --svg /tmp/waits.svg
//! cargo run --release --features sqlite,redis --example demo -- --backend redis --url redis://127.0.0.1:6379/
//! cargo run --release --features sqlite,mysql --example demo -- --backend mysql --compare r2d2
//! cargo run --release -F sqlite --example demo -- --help
//! ```
//!
//! A progress bar is drawn on stderr while it runs, only when stderr is a terminal
//! (indicatif's `ProgressDrawTarget::stderr` checks), so piping the output gives the
//! plain report; `--quiet` turns the bar off everywhere. The exit status is 0 when every
//! operation succeeded (and the SVG, if any, was written), 1 on errors, 2 on bad flags.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stickypool::backends::sqlite::SqliteManager;
use stickypool::{ManageConnection, Pool};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "\
A fixed pool of worker threads running reads and writes through a stickypool pool.

Usage: demo [OPTIONS]

Options:
  --threads N          worker threads [default: 64]
  --connections N      pool size (max_size and min_idle) [default: 8]
  --seconds S          how long to run, fractions allowed [default: 5]
  --writes PCT         percentage of operations that write [default: 20]
  --backend NAME       sqlite, redis or mysql [default: sqlite]; redis and mysql
                       need the crate feature of that name
  --url URL            server URL for redis or mysql [default: $STICKYPOOL_REDIS_URL
                       or $STICKYPOOL_MYSQL_URL]
  --compare r2d2       run the same workload through r2d2 too and compare
  --svg PATH           write the wait-time CDF of each pool to PATH as SVG [default
                       with --compare: target/demo-waits.svg if ./target exists, else
                       demo-waits.svg in the temp dir; without --compare: none]
  --quiet              no progress bar
  -h, --help           print this help

Exit status: 0 if every operation succeeded and the SVG was written, 1 on errors,
2 on bad flags.
";

/// How many distinct keys the workload reads and writes.
const KEYS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Redis,
    Mysql,
}

#[derive(Debug)]
struct Options {
    threads: usize,
    connections: u32,
    run_for: Duration,
    write_percent: u64,
    backend: Backend,
    url: Option<String>,
    compare: bool,
    svg: Option<PathBuf>,
    quiet: bool,
}

/// Parses the flags by hand: `--flag value` or `--flag=value`. `Ok(None)` means help
/// was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        threads: 64,
        connections: 8,
        run_for: Duration::from_secs(5),
        write_percent: 20,
        backend: Backend::Sqlite,
        url: None,
        compare: false,
        svg: None,
        quiet: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value ({what})"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quiet" | "-q" => opts.quiet = true,
            "--threads" => opts.threads = positive(&flag, &value("a number of threads")?)?,
            "--connections" => {
                opts.connections = positive(&flag, &value("a number of connections")?)?
            }
            "--seconds" => {
                let v = value("a number of seconds")?;
                opts.run_for = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{flag}: expected a positive number, got `{v}`"))?;
            }
            "--writes" => {
                let v = value("a percentage")?;
                opts.write_percent = v
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("{flag}: expected 0 to 100, got `{v}`"))?;
            }
            "--backend" => {
                opts.backend = match value("sqlite, redis or mysql")?.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "redis" => Backend::Redis,
                    "mysql" => Backend::Mysql,
                    other => {
                        return Err(format!(
                            "{flag}: unknown backend `{other}` (expected sqlite, redis or mysql)"
                        ));
                    }
                }
            }
            "--url" => opts.url = Some(value("a server URL")?),
            "--svg" => {
                let v = value("a file path")?;
                if v.is_empty() {
                    return Err(format!("{flag}: expected a file path, got an empty one"));
                }
                opts.svg = Some(PathBuf::from(v));
            }
            "--compare" => match value("r2d2")?.as_str() {
                "r2d2" => opts.compare = true,
                other => {
                    return Err(format!(
                        "{flag}: can only compare with `r2d2`, got `{other}`"
                    ));
                }
            },
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    if opts.backend == Backend::Sqlite && opts.url.is_some() {
        return Err("--url is for --backend redis or mysql; sqlite uses a temporary file".into());
    }
    if let Some(msg) = missing_feature(&opts) {
        return Err(msg);
    }
    Ok(Some(opts))
}

/// The crate feature that this build lacks for `opts`, as a message saying how to build
/// with it; `None` when everything asked for is compiled in. SQLite and its r2d2
/// comparison are always there.
fn missing_feature(opts: &Options) -> Option<String> {
    let (name, has_backend) = match opts.backend {
        Backend::Sqlite => return None,
        Backend::Redis => ("redis", cfg!(feature = "redis")),
        Backend::Mysql => ("mysql", cfg!(feature = "mysql")),
    };
    if !has_backend {
        Some(format!(
            "--backend {name} needs the `{name}` feature: \
             cargo run --release --features {name} --example demo -- --backend {name} ..."
        ))
    } else {
        None
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(flag: &str, v: &str) -> Result<T, String> {
    v.parse::<T>()
        .ok()
        .filter(|n| *n > T::default())
        .ok_or_else(|| format!("{flag}: expected a positive whole number, got `{v}`"))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("demo: {msg}\nRun `demo --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the backend, runs the workload once per pool, writes the SVG, prints the
/// report. `Ok(true)` when every operation succeeded and the SVG (if any) was written.
fn run(opts: &Options) -> Result<bool, BoxError> {
    let runs = match opts.backend {
        Backend::Sqlite => sqlite::run(opts)?,
        #[cfg(feature = "redis")]
        Backend::Redis => redis_backend::run(opts, &server_url(opts, "STICKYPOOL_REDIS_URL")?)?,
        #[cfg(feature = "mysql")]
        Backend::Mysql => mysql_backend::run(opts, &server_url(opts, "STICKYPOOL_MYSQL_URL")?)?,
        // `parse_args` refuses a backend that is not compiled in.
        #[allow(unreachable_patterns)]
        _ => return Err(missing_feature(opts).unwrap_or_default().into()),
    };
    let mut out = report(opts, &runs);
    let mut ok = runs.iter().all(|r| r.errors == 0);
    if let Some(path) = svg_path(opts) {
        match plot::write_wait_cdf(opts, &runs, &path) {
            Ok(()) => {
                let _ = writeln!(out, "\nwait-time CDF: {}", path.display());
            }
            Err(e) => {
                eprintln!(
                    "demo: cannot write the wait-time CDF to {}: {e}",
                    path.display()
                );
                ok = false;
            }
        }
    }
    print!("{out}");
    Ok(ok)
}

/// Where the SVG goes: `--svg`, else with `--compare` `target/demo-waits.svg` when
/// the current directory has a `target/` (as under `cargo run`), else the temp dir.
fn svg_path(opts: &Options) -> Option<PathBuf> {
    if let Some(path) = &opts.svg {
        return Some(path.clone());
    }
    if !opts.compare {
        return None;
    }
    let target = Path::new("target");
    Some(if target.is_dir() {
        target.join("demo-waits.svg")
    } else {
        std::env::temp_dir().join("demo-waits.svg")
    })
}

#[cfg(any(feature = "redis", feature = "mysql"))]
fn server_url(opts: &Options, var: &str) -> Result<String, BoxError> {
    match (&opts.url, std::env::var(var)) {
        (Some(url), _) => Ok(url.clone()),
        (None, Ok(url)) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        _ => Err(format!("this backend needs a server: pass --url or set {var}").into()),
    }
}

/// One read or one write of a key.
#[derive(Debug, Clone, Copy)]
enum Op {
    Read(i64),
    Write(i64),
}

/// A tiny per-thread random generator (xorshift64*): good enough to pick keys, and it
/// keeps the example free of a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn op(&mut self, write_percent: u64) -> Op {
        // Keys run from 1 to KEYS; i64 because SQLite integers are signed.
        let key = (self.next() % KEYS) as i64 + 1;
        if self.next() % 100 < write_percent {
            Op::Write(key)
        } else {
            Op::Read(key)
        }
    }
}

/// Borrows with `get` and returns the connection with how long the borrow took.
fn timed<T, E>(get: impl FnOnce() -> Result<T, E>) -> Result<(T, Duration), E> {
    let started = Instant::now();
    let conn = get()?;
    Ok((conn, started.elapsed()))
}

/// What one pool achieved.
struct RunResult {
    pool: &'static str,
    threads: usize,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Time spent in the pool's `get()`, in nanoseconds.
    wait: Histogram<u64>,
    /// stickypool's own counters; r2d2 has none.
    stats: Option<stickypool::Stats>,
}

impl RunResult {
    fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Seconds one worker thread spent per operation (borrow, query, give back), on
    /// average; infinite if no operation completed.
    fn time_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * self.threads as f64 / self.ops as f64
    }

    fn wait(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.wait.value_at_quantile(quantile))
    }
}

/// Nanoseconds from 1 ns to 60 s, three significant digits. Fixed bounds: an
/// auto-resizing histogram would clamp `saturating_record` to its initial range.
fn wait_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Runs `op` on `opts.threads` threads for `opts.run_for`. `op` does one operation
/// (borrow, query, give back) and returns how long the borrow waited.
fn run_workload<F>(pool: &'static str, opts: &Options, op: F) -> RunResult
where
    F: Fn(&mut Rng) -> Result<Duration, BoxError> + Sync,
{
    let stop = AtomicBool::new(false);
    // Read by the progress bar. One shared counter costs a contended atomic add per
    // operation, which is small next to a database round trip.
    let done = AtomicU64::new(0);
    let first_error = Mutex::new(None);
    let start = Barrier::new(opts.threads + 1);

    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(
            Some(opts.run_for.as_millis() as u64),
            ProgressDrawTarget::stderr(),
        )
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {elapsed} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(pool);

    let (per_thread, elapsed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..opts.threads)
            .map(|i| {
                let (stop, done, first_error, start, op) =
                    (&stop, &done, &first_error, &start, &op);
                s.spawn(move || {
                    let mut rng = Rng::new(i as u64 + 1);
                    let mut wait = wait_histogram();
                    let (mut ops, mut errors) = (0u64, 0u64);
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        match op(&mut rng) {
                            Ok(waited) => {
                                ops += 1;
                                wait.saturating_record(waited.as_nanos() as u64);
                            }
                            Err(e) => {
                                errors += 1;
                                let mut first =
                                    first_error.lock().unwrap_or_else(|p| p.into_inner());
                                first.get_or_insert_with(|| e.to_string());
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    (ops, errors, wait)
                })
            })
            .collect();

        start.wait();
        let started = Instant::now();
        let deadline = started + opts.run_for;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let ops = done.load(Ordering::Relaxed);
            bar.set_position((now - started).as_millis() as u64);
            bar.set_message(format!(
                "{ops} ops, {:.0} ops/s",
                ops as f64 / (now - started).as_secs_f64().max(1e-3)
            ));
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
        stop.store(true, Ordering::Relaxed);
        let per_thread: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("a worker thread panicked"))
            .collect();
        (per_thread, started.elapsed())
    });
    bar.finish_and_clear();

    let mut result = RunResult {
        pool,
        threads: opts.threads,
        ops: 0,
        errors: 0,
        first_error: first_error.into_inner().unwrap_or_else(|p| p.into_inner()),
        elapsed,
        wait: wait_histogram(),
        stats: None,
    };
    for (ops, errors, wait) in per_thread {
        result.ops += ops;
        result.errors += errors;
        result
            .wait
            .add(&wait)
            .expect("auto-resizing histograms merge");
    }
    result
}

/// A stickypool pool with `connections` connections, all opened before the run starts.
fn stickypool_pool<M: ManageConnection>(opts: &Options, manager: M) -> Result<Pool<M>, BoxError> {
    Ok(Pool::builder()
        .name("demo")
        .max_size(opts.connections)
        .min_idle(Some(opts.connections))
        .connection_timeout(Duration::from_secs(10))
        .build(manager)?)
}

/// An r2d2 pool of the same size. r2d2 pings every connection on checkout by default
/// (`test_on_check_out`), a round trip per borrow; stickypool skips the check for a
/// connection checked in the last 500 ms. Turning r2d2's check off keeps the comparison
/// about the pools rather than the extra round trip (and favours r2d2).
/// A stickypool manager as an r2d2 one, so that `--compare r2d2` runs both pools on
/// the same manager and compares the pools alone.
#[cfg(any(feature = "redis", feature = "mysql"))]
#[derive(Debug)]
struct ForR2d2<M>(M);

#[cfg(any(feature = "redis", feature = "mysql"))]
impl<M: stickypool::ManageConnection> r2d2::ManageConnection for ForR2d2<M> {
    type Connection = M::Connection;
    type Error = M::Error;

    fn connect(&self) -> Result<M::Connection, M::Error> {
        stickypool::ManageConnection::connect(&self.0)
    }

    fn is_valid(&self, conn: &mut M::Connection) -> Result<(), M::Error> {
        stickypool::ManageConnection::is_valid(&self.0, conn)
    }

    fn has_broken(&self, conn: &mut M::Connection) -> bool {
        stickypool::ManageConnection::has_broken(&self.0, conn)
    }
}

fn r2d2_pool<M: r2d2::ManageConnection>(
    opts: &Options,
    manager: M,
) -> Result<r2d2::Pool<M>, BoxError> {
    Ok(r2d2::Pool::builder()
        .max_size(opts.connections)
        .min_idle(Some(opts.connections))
        .connection_timeout(Duration::from_secs(10))
        .test_on_check_out(false)
        .build(manager)?)
}

mod sqlite {
    use super::*;
    use rusqlite::Connection;

    /// Per-connection setup. WAL lets readers run while one connection writes; the busy
    /// timeout makes a writer wait for the write lock instead of failing at once with
    /// SQLITE_BUSY.
    /// The busy timeout is set first so that it also covers the `journal_mode` switch,
    /// which needs a lock when connections open concurrently.
    fn init(conn: &mut Connection) -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
    }

    fn create(path: &Path) -> rusqlite::Result<()> {
        let mut conn = Connection::open(path)?;
        init(&mut conn)?;
        conn.execute_batch(
            "CREATE TABLE kv (id INTEGER PRIMARY KEY, val INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO kv (id, val) SELECT i, 0 FROM n;",
        )
    }

    pub(super) fn op(conn: &Connection, op: Op) -> rusqlite::Result<()> {
        match op {
            Op::Read(key) => {
                let _val: i64 = conn
                    .prepare_cached("SELECT val FROM kv WHERE id = ?1")?
                    .query_row([key], |row| row.get(0))?;
            }
            Op::Write(key) => {
                conn.prepare_cached(
                    "INSERT INTO kv (id, val) VALUES (?1, 1)
                     ON CONFLICT (id) DO UPDATE SET val = val + 1",
                )?
                .execute([key])?;
            }
        }
        Ok(())
    }

    pub(super) fn run(opts: &Options) -> Result<Vec<RunResult>, BoxError> {
        let dir = tempfile::tempdir()?;
        let mut runs = Vec::new();

        // Each pool gets a fresh database, so the second run does not start with the
        // first run's WAL file to checkpoint.
        let path = dir.path().join("stickypool.db");
        create(&path)?;
        let pool = stickypool_pool(opts, SqliteManager::file(&path).with_init(init))?;
        let mut result = run_workload("stickypool", opts, |rng| {
            let (conn, waited) = timed(|| pool.get())?;
            op(&conn, rng.op(opts.write_percent))?;
            Ok(waited)
        });
        result.stats = Some(pool.stats());
        runs.push(result);
        drop(pool);

        if opts.compare {
            let path = dir.path().join("r2d2.db");
            create(&path)?;
            let manager = r2d2_sqlite::SqliteConnectionManager::file(&path).with_init(init);
            let pool = r2d2_pool(opts, manager)?;
            runs.push(run_workload("r2d2", opts, |rng| {
                let (conn, waited) = timed(|| pool.get())?;
                op(&conn, rng.op(opts.write_percent))?;
                Ok(waited)
            }));
        }
        Ok(runs)
    }
}

#[cfg(feature = "redis")]
mod redis_backend {
    use super::*;
    use redis::Connection;
    use stickypool::backends::redis::RedisManager;

    fn key(k: i64) -> String {
        format!("stickypool:demo:{k}")
    }

    fn op(conn: &mut Connection, op: Op) -> redis::RedisResult<()> {
        match op {
            Op::Read(k) => {
                let _val: Option<String> = redis::cmd("GET").arg(key(k)).query(conn)?;
            }
            Op::Write(k) => redis::cmd("SET").arg(key(k)).arg(k).exec(conn)?,
        }
        Ok(())
    }

    pub(super) fn run(opts: &Options, url: &str) -> Result<Vec<RunResult>, BoxError> {
        let manager = RedisManager::new(url)?
            .connect_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5));
        let pool = stickypool_pool(opts, manager)?;
        {
            // Seed every key in one round trip.
            let mut conn = pool.get()?;
            let mut mset = redis::cmd("MSET");
            for k in 1..=KEYS as i64 {
                mset.arg(key(k)).arg(0);
            }
            mset.exec(&mut *conn)?;
        }
        let mut runs = Vec::new();
        let mut result = run_workload("stickypool", opts, |rng| {
            let (mut conn, waited) = timed(|| pool.get())?;
            op(&mut conn, rng.op(opts.write_percent))?;
            Ok(waited)
        });
        result.stats = Some(pool.stats());
        runs.push(result);
        drop(pool);

        if opts.compare {
            let pool = r2d2_pool(opts, ForR2d2(RedisManager::new(url)?))?;
            runs.push(run_workload("r2d2", opts, |rng| {
                let (mut conn, waited) = timed(|| pool.get())?;
                op(&mut conn, rng.op(opts.write_percent))?;
                Ok(waited)
            }));
        }
        Ok(runs)
    }
}

#[cfg(feature = "mysql")]
mod mysql_backend {
    use super::*;
    use mysql::Conn;
    use mysql::prelude::Queryable;
    use stickypool::backends::mysql::MysqlManager;

    fn op(conn: &mut Conn, op: Op) -> mysql::Result<()> {
        match op {
            Op::Read(key) => {
                let _val: Option<i64> =
                    conn.exec_first("SELECT val FROM stickypool_demo WHERE id = ?", (key,))?;
            }
            Op::Write(key) => conn.exec_drop(
                "INSERT INTO stickypool_demo (id, val) VALUES (?, 1) \
                 ON DUPLICATE KEY UPDATE val = val + 1",
                (key,),
            )?,
        }
        Ok(())
    }

    pub(super) fn run(opts: &Options, url: &str) -> Result<Vec<RunResult>, BoxError> {
        let mysql_opts = mysql::Opts::from_url(url)?;
        let pool = stickypool_pool(opts, MysqlManager::new(mysql_opts.clone()))?;
        {
            let mut conn = pool.get()?;
            conn.query_drop(
                "CREATE TABLE IF NOT EXISTS stickypool_demo \
                 (id BIGINT PRIMARY KEY, val BIGINT NOT NULL)",
            )?;
            let mut seed = String::from("INSERT IGNORE INTO stickypool_demo (id, val) VALUES ");
            for k in 1..=KEYS {
                let sep = if k == 1 { "" } else { "," };
                let _ = write!(seed, "{sep}({k}, 0)");
            }
            conn.query_drop(seed)?;
        }
        let mut runs = Vec::new();
        let mut result = run_workload("stickypool", opts, |rng| {
            let (mut conn, waited) = timed(|| pool.get())?;
            op(&mut conn, rng.op(opts.write_percent))?;
            Ok(waited)
        });
        result.stats = Some(pool.stats());
        runs.push(result);

        if opts.compare {
            let r2d2 = r2d2_pool(opts, ForR2d2(MysqlManager::new(mysql_opts)))?;
            runs.push(run_workload("r2d2", opts, |rng| {
                let (mut conn, waited) = timed(|| r2d2.get())?;
                op(&mut conn, rng.op(opts.write_percent))?;
                Ok(waited)
            }));
        }
        // The table was made for this run; leave the database as we found it.
        pool.get()?
            .query_drop("DROP TABLE IF EXISTS stickypool_demo")?;
        Ok(runs)
    }
}

/// The backend as the report and the plot name it, short.
fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Redis => "redis",
        Backend::Mysql => "mysql",
    }
}

/// A duration given in seconds, in the unit that suits it; `-` when there is none
/// (no operation completed).
fn human(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    match (secs * 1e9).round() {
        nanos if nanos < 1e3 => format!("{nanos} ns"),
        nanos if nanos < 1e6 => format!("{:.1} µs", nanos / 1e3),
        nanos if nanos < 1e9 => format!("{:.1} ms", nanos / 1e6),
        nanos => format!("{:.2} s", nanos / 1e9),
    }
}

/// `a / b` as `1.23x`, or `-` when it has no meaning.
fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".to_owned()
    }
}

/// How a report row's values are printed.
#[derive(Clone, Copy)]
enum Cell {
    Count,
    Rate,
    /// Seconds, printed as ns, µs, ms or s.
    Time,
}

/// The report: one column per pool, and a ratio column when comparing.
fn report(opts: &Options, runs: &[RunResult]) -> String {
    let backend = match opts.backend {
        Backend::Sqlite => "sqlite (WAL file in a temporary directory)",
        Backend::Redis => "redis (GET/SET)",
        Backend::Mysql => "mysql (SELECT/upsert)",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backend {backend}: {} threads, {} connections, {:.1} s per pool, {}% reads / {}% writes\n",
        opts.threads,
        opts.connections,
        opts.run_for.as_secs_f64(),
        100 - opts.write_percent,
        opts.write_percent,
    );

    type Row = (&'static str, fn(&RunResult) -> f64, Cell);
    let rows: [Row; 7] = [
        ("ops", |r| r.ops as f64, Cell::Count),
        ("throughput (ops/s)", RunResult::throughput, Cell::Rate),
        ("time/op per thread", RunResult::time_per_op, Cell::Time),
        ("errors", |r| r.errors as f64, Cell::Count),
        ("wait p50", |r| r.wait(0.5).as_secs_f64(), Cell::Time),
        ("wait p99", |r| r.wait(0.99).as_secs_f64(), Cell::Time),
        (
            "wait max",
            |r| Duration::from_nanos(r.wait.max()).as_secs_f64(),
            Cell::Time,
        ),
    ];
    let _ = write!(out, "{:<20}", "");
    for run in runs {
        let _ = write!(out, "{:>16}", run.pool);
    }
    if runs.len() == 2 {
        let _ = write!(out, "{:>18}", "stickypool/r2d2");
    }
    out.push('\n');
    for (label, value, cell) in rows {
        let _ = write!(out, "{label:<20}");
        for run in runs {
            let v = value(run);
            let text = match cell {
                Cell::Count => format!("{v}"),
                Cell::Rate => format!("{v:.0}"),
                Cell::Time => human(v),
            };
            let _ = write!(out, "{text:>16}");
        }
        if let [ours, theirs] = runs {
            let _ = write!(out, "{:>18}", ratio(value(ours), value(theirs)));
        }
        out.push('\n');
    }
    if let [ours, theirs] = runs {
        let _ = writeln!(
            out,
            "\nstickypool against r2d2, this workload ({}, {} threads, {} connections; \
             below 1x is better):",
            backend_name(opts.backend),
            opts.threads,
            opts.connections,
        );
        let (a, b) = (ours.time_per_op(), theirs.time_per_op());
        let _ = writeln!(
            out,
            "  time per operation    {:>7} of r2d2's ({} against {}, per thread)",
            ratio(a, b),
            human(a),
            human(b),
        );
        let (a, b) = (
            ours.wait(0.99).as_secs_f64(),
            theirs.wait(0.99).as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "  p99 wait in get()     {:>7} of r2d2's ({} against {})",
            ratio(a, b),
            human(a),
            human(b),
        );
        let _ = writeln!(
            out,
            "stickypool did {:.2}x the operations per second of r2d2 \
             (r2d2 ran with test_on_check_out off)",
            ours.throughput() / theirs.throughput().max(f64::MIN_POSITIVE),
        );
    }
    for run in runs {
        if let Some(e) = &run.first_error {
            let _ = writeln!(out, "\n{}: {} errors, the first: {e}", run.pool, run.errors);
        }
        if let Some(stats) = &run.stats {
            let _ = writeln!(out, "\n{} pool.stats(): {stats}", run.pool);
        }
    }
    out
}

/// The SVG plot: the cumulative distribution of each pool's waits in `get()`.
mod plot {
    use super::*;
    use plotters::prelude::*;

    /// One colour per pool: stickypool blue, r2d2 red.
    const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

    /// Draws the plot and writes it to `path`, creating its parent directories.
    pub(super) fn write_wait_cdf(
        opts: &Options,
        runs: &[RunResult],
        path: &Path,
    ) -> Result<(), BoxError> {
        let svg = render(opts, runs)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, svg)?;
        Ok(())
    }

    /// The points of one pool's curve: (wait in µs, fraction of borrows that waited at
    /// most that long), thinned to a few hundred points. Empty if nothing was recorded.
    fn cdf(wait: &Histogram<u64>) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        let mut recorded = wait.iter_recorded().peekable();
        while let Some(v) = recorded.next() {
            let point = (v.value_iterated_to() as f64 / 1e3, v.quantile_iterated_to());
            match points.last() {
                // The curve starts from 0 at the shortest wait.
                None => points.extend([(point.0, 0.0), point]),
                Some(&(x, y))
                    if point.0 >= x * 1.02 || point.1 - y >= 0.002 || recorded.peek().is_none() =>
                {
                    points.push(point)
                }
                Some(_) => {}
            }
        }
        points
    }

    /// A tick label for a wait of `us` microseconds: `500 ns`, `20 µs`, `1 ms`, `2 s`.
    fn tick(us: f64) -> String {
        let (v, unit) = match us {
            us if us < 1.0 => (us * 1e3, "ns"),
            us if us < 1e3 => (us, "µs"),
            us if us < 1e6 => (us / 1e3, "ms"),
            us => (us / 1e6, "s"),
        };
        if (v - v.round()).abs() < 1e-6 {
            format!("{v:.0} {unit}")
        } else {
            format!("{v:.1} {unit}")
        }
    }

    fn render(opts: &Options, runs: &[RunResult]) -> Result<String, BoxError> {
        let curves: Vec<_> = runs.iter().map(|r| (r, cdf(&r.wait))).collect();
        // The x axis spans whole decades around every recorded wait.
        let (lo, hi) = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.0))
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
        let (lo, hi) = if lo.is_finite() {
            let lo = 10f64.powf(lo.max(1e-3).log10().floor());
            let hi = 10f64.powf(hi.log10().ceil());
            (lo, if hi > lo { hi } else { lo * 10.0 })
        } else {
            (1.0, 1e3)
        };
        let title = format!(
            "Wait in pool.get(), cumulative: {}, {} threads, {} connections, {}% writes",
            backend_name(opts.backend),
            opts.threads,
            opts.connections,
            opts.write_percent,
        );

        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 22))
                .margin(20)
                .x_label_area_size(50)
                .y_label_area_size(60)
                .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
            chart
                .configure_mesh()
                .x_desc("wait in pool.get() (log scale)")
                .y_desc("fraction of borrows")
                .x_label_formatter(&|us| tick(*us))
                .y_label_formatter(&|f| format!("{f:.1}"))
                .label_style(("sans-serif", 14))
                .draw()?;
            for ((run, points), color) in curves.into_iter().zip(COLORS) {
                let label = format!(
                    "{}: p50 {}, p99 {}, {} borrows",
                    run.pool,
                    human(run.wait(0.5).as_secs_f64()),
                    human(run.wait(0.99).as_secs_f64()),
                    run.wait.len(),
                );
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        Ok(svg)
    }
}
