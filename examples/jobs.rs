//! A job runner on a plain thread pool, doing transactional work on SQLite, and what
//! the pool does when a job dies or fails in the middle of a transaction.
//!
//! A few worker threads pull jobs from a channel. Each job borrows a connection,
//! `BEGIN`s, inserts its rows and `COMMIT`s. Two jobs go wrong on purpose:
//!
//! * one **panics** after its INSERT, before COMMIT. The worker catches the panic (a
//!   job runner must survive its jobs) and the pool, seeing the guard dropped during a
//!   panic, checks the connection and rolls it back before keeping it (had either
//!   failed, it would have closed it, which also rolls a SQLite transaction back).
//! * one **returns an error** after its INSERT, without committing or rolling back
//!   (an early `?`). The connection goes back to the pool with the transaction still
//!   open, and the pool's reset on return, `reset_on_return(ResetAction::Rollback)`,
//!   rolls it back before anyone else gets the connection. Without it the next job on
//!   that connection would fail at its `BEGIN` ("cannot start a transaction within a
//!   transaction") or, worse, commit the failed job's rows along with its own.
//!
//! At the end the runner checks the database: every good job's rows are there, the two
//! bad jobs left nothing, and `pool.stats()` counts the connection kept after the
//! panic and no connection closed. It
//! prints what it found and exits with status 1 if any of that does not hold.
//!
//! The jobs use plain `BEGIN`/`COMMIT` statements rather than rusqlite's `Transaction`
//! (which rolls back in its own `Drop`) to show the pool's safety net: code that spreads
//! a transaction over several functions, or was ported from another language, often
//! looks like this.
//!
//! ```text
//! cargo run --release --features sqlite --example jobs
//! cargo run --release --features sqlite --example jobs -- --jobs 50 --workers 8
//! ```
//!
//! The panicking job prints the usual panic message on stderr; that is expected.

use std::error::Error;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use stickypool::backends::sqlite::SqliteManager;
use stickypool::{Pool, ResetAction};

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "\
A job runner on a thread pool doing SQLite transactions; one job panics and one fails
mid-transaction, and neither leaves anything behind.

Usage: jobs [OPTIONS]

Options:
  --jobs N        jobs to run, at least 3 [default: 12]
  --workers N     worker threads, 1 to 256 [default: 3]
  -h, --help      print this help

Exit status: 0 if the database and the pool's counters are as expected, 1 if not,
2 on bad flags.
";

/// How many rows each job inserts.
const ROWS_PER_JOB: i64 = 3;

/// What a job is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Commit,
    /// Panic after the INSERTs, before COMMIT.
    Panic,
    /// Return an error after the INSERTs, leaving the transaction open.
    Fail,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    id: i64,
    behaviour: Behaviour,
}

type SqlitePool = Pool<SqliteManager>;

/// The job itself: one transaction, written the way that goes wrong without a pool
/// that resets connections.
fn run_job(pool: &SqlitePool, job: Job) -> Result<(), BoxError> {
    let conn = pool.get()?;
    // IMMEDIATE takes the write lock now, so a busy database makes this wait (up to
    // the busy timeout) instead of failing later when the first INSERT upgrades a
    // read transaction.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for n in 0..ROWS_PER_JOB {
        conn.execute("INSERT INTO results (job, n) VALUES (?1, ?2)", (job.id, n))?;
    }
    match job.behaviour {
        Behaviour::Panic => panic!("job {}: simulated crash before COMMIT", job.id),
        Behaviour::Fail => {
            // An early return: the `?` of some validation after the writes. The
            // guard drops with the transaction open; the pool rolls it back.
            return Err(format!("job {}: simulated validation error before COMMIT", job.id).into());
        }
        Behaviour::Commit => {}
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// How a job ended, as the runner saw it.
#[derive(Debug)]
enum Outcome {
    Done,
    Failed(String),
    Panicked,
}

/// Runs `jobs` on `workers` threads sharing one channel, and returns each job's outcome.
fn run_all(pool: &SqlitePool, jobs: Vec<Job>, workers: usize) -> Vec<(Job, Outcome)> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    // `mpsc::Receiver` has one consumer; a mutex lets the workers take turns at it.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel();

    std::thread::scope(|s| {
        for w in 0..workers {
            let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn_scoped(s, move || {
                    loop {
                        // The lock is held only to take a job, not while running it.
                        let next = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = next else { break }; // channel closed: no more jobs
                        // Catch the panic so the worker survives it, as a real job
                        // runner must. The pool has already rolled the connection back
                        // (or closed it) by the time the panic reaches here.
                        let outcome =
                            match panic::catch_unwind(AssertUnwindSafe(|| run_job(pool, job))) {
                                Ok(Ok(())) => Outcome::Done,
                                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                                Err(_) => Outcome::Panicked,
                            };
                        if done_tx.send((job, outcome)).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawn a worker thread");
        }
        drop(done_tx);
        for job in jobs {
            job_tx.send(job).expect("workers are running");
        }
        drop(job_tx); // lets the workers' `recv` fail once the queue is empty
        done_rx.iter().collect()
    })
}

fn main() -> ExitCode {
    let (jobs, workers) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("jobs: {msg}\nRun `jobs --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match run(jobs, workers) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("jobs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every check passed.
fn run(job_count: i64, workers: usize) -> Result<bool, BoxError> {
    let dir = tempfile::tempdir()?;
    let manager = SqliteManager::file(dir.path().join("jobs.db")).with_init(|conn| {
        // The busy timeout first: the pool opens connections concurrently, and
        // switching the new file to WAL needs a lock the others may hold for a moment.
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
    });
    let pool = Pool::builder()
        .name("jobs")
        .max_size(workers as u32)
        // The "fake close": a connection that comes back inside a transaction is
        // rolled back; if the rollback fails, the connection is closed instead.
        .reset_on_return(ResetAction::Rollback)
        .build(manager)?;
    pool.get()?.execute_batch(
        "CREATE TABLE results (job INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (job, n))",
    )?;

    // Put the bad jobs early, so plenty of good jobs run on the connections after them.
    let (panics, fails) = (2, 3);
    let jobs: Vec<Job> = (1..=job_count)
        .map(|id| Job {
            id,
            behaviour: match id {
                _ if id == panics => Behaviour::Panic,
                _ if id == fails => Behaviour::Fail,
                _ => Behaviour::Commit,
            },
        })
        .collect();
    println!("running {job_count} jobs on {workers} worker threads, {workers} pooled connections");

    let mut outcomes = run_all(&pool, jobs, workers);
    outcomes.sort_by_key(|(job, _)| job.id);

    let mut ok = true;
    let mut check = |passed: bool, what: String| {
        println!("  [{}] {what}", if passed { "ok" } else { "FAILED" });
        ok &= passed;
    };

    println!("\noutcomes:");
    let conn = pool.get()?;
    for (job, outcome) in &outcomes {
        let rows = rows_of(&conn, job.id)?;
        let expected = if job.behaviour == Behaviour::Commit {
            ROWS_PER_JOB
        } else {
            0
        };
        let how = match outcome {
            Outcome::Done => "committed".to_owned(),
            Outcome::Failed(e) => format!("returned an error ({e})"),
            Outcome::Panicked => "panicked".to_owned(),
        };
        let expected_outcome = matches!(
            (job.behaviour, outcome),
            (Behaviour::Commit, Outcome::Done)
                | (Behaviour::Fail, Outcome::Failed(_))
                | (Behaviour::Panic, Outcome::Panicked)
        );
        check(
            rows == expected && expected_outcome,
            format!(
                "job {:>3} {how}: {rows} rows in the table (expected {expected})",
                job.id
            ),
        );
    }
    check(
        outcomes.len() as i64 == job_count,
        format!("{} of {job_count} jobs reported back", outcomes.len()),
    );
    drop(conn);

    let stats = pool.stats();
    println!("\npool:");
    check(
        stats.recovered_after_panic == 1,
        format!(
            "connections rolled back and kept after a panic: {} (the panicking job's)",
            stats.recovered_after_panic
        ),
    );
    // Had either bad job's transaction not been rolled back, the next job on its
    // connection would have failed at BEGIN, and jobs on the other connections would
    // have timed out waiting for the write lock it kept.
    check(
        stats.closed.total() == 0,
        format!(
            "connections closed: {} (both bad jobs' connections were rolled back and kept)",
            stats.closed.total()
        ),
    );
    println!("  pool.stats(): {stats}");

    println!(
        "\n{}",
        if ok {
            "all checks passed: the crashed and the failed job left nothing behind"
        } else {
            "SOME CHECKS FAILED"
        }
    );
    Ok(ok)
}

fn rows_of(conn: &Connection, job: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM results WHERE job = ?1",
        [job],
        |row| row.get(0),
    )
}

/// `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<(i64, usize)>, String> {
    let (mut jobs, mut workers) = (12, 3);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut number = |min: i64, max: i64| -> Result<i64, String> {
            let v = inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a number"))?;
            v.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    format!("{flag}: expected a whole number from {min} to {max}, got `{v}`")
                })
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--jobs" => jobs = number(3, 100_000)?,
            "--workers" => workers = number(1, 256)? as usize,
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    Ok(Some((jobs, workers)))
}
