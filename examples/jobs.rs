//! A job runner whose jobs die halfway through a transaction, and how the pool keeps
//! their half-done work out of the database. Three workers run twelve jobs, each
//! `BEGIN`, an `INSERT` of three rows, `COMMIT`, with plain statements (as code that
//! spreads a transaction over several functions does). Job 2 panics before `COMMIT`:
//! the pool rolls the connection back and keeps it. Job 3 returns an error before
//! `COMMIT`: `reset_on_return(ResetAction::Rollback)` rolls it back. It checks the rows
//! and exits with 1 if one is off; the panic message on stderr is expected.
//!
//! `cargo run -F sqlite --example jobs`

use std::error::Error;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, mpsc};
use std::thread;

use stickypool::backends::sqlite::SqliteManager;
use stickypool::{Pool, ResetAction};

const PANICS: i64 = 2;
const FAILS: i64 = 3;

fn run_job(pool: &Pool<SqliteManager>, job: i64) -> Result<(), Box<dyn Error>> {
    let conn = pool.get()?;
    conn.execute_batch("BEGIN IMMEDIATE")?; // waits for the write lock, not fails
    conn.execute(
        "INSERT INTO results VALUES (?1, 1), (?1, 2), (?1, 3)",
        [job],
    )?;
    if job == PANICS {
        panic!("job {job}: simulated crash before COMMIT");
    }
    if job == FAILS {
        return Err(format!("job {job}: simulated error before COMMIT").into());
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = Pool::builder()
        .max_size(3)
        .reset_on_return(ResetAction::Rollback) // closed instead if the rollback fails
        .build(SqliteManager::memory())?;
    pool.get()?
        .execute_batch("CREATE TABLE results (job INTEGER, n INTEGER)")?;

    let (tx, rx) = mpsc::channel();
    (1..=12).for_each(|job| tx.send(job).unwrap());
    drop(tx);
    let rx = Mutex::new(rx);
    let next = || rx.lock().unwrap().recv();
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while let Ok(job) = next() {
                    // A job runner survives its jobs; by now the pool has already
                    // rolled the panicking job's connection back.
                    let outcome =
                        match panic::catch_unwind(AssertUnwindSafe(|| run_job(&pool, job))) {
                            Ok(Ok(())) => "committed",
                            Ok(Err(_)) => "returned an error",
                            Err(_) => "panicked",
                        };
                    outcomes.lock().unwrap().push((job, outcome));
                }
            });
        }
    });

    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort();
    let mut ok = outcomes.len() == 12;
    let conn = pool.get()?;
    for (job, outcome) in outcomes {
        let rows: i64 =
            conn.query_row("SELECT count(*) FROM results WHERE job = ?1", [job], |r| {
                r.get(0)
            })?;
        let expected = match job {
            PANICS => ("panicked", 0),
            FAILS => ("returned an error", 0),
            _ => ("committed", 3),
        };
        let passed = (outcome, rows) == expected;
        println!(
            "[{}] job {job:>3} {outcome}: {rows} rows",
            if passed { "ok" } else { "FAILED" }
        );
        ok &= passed;
    }
    drop(conn);
    let stats = pool.stats();
    println!(
        "connections rolled back and kept after a panic: {}",
        stats.recovered_after_panic
    );
    println!("connections closed: {}", stats.closed.total());
    if !ok || stats.recovered_after_panic != 1 || stats.closed.total() != 0 {
        return Err("SOME CHECKS FAILED".into());
    }
    println!("all checks passed: the crashed and the failed job left nothing behind");
    Ok(())
}
