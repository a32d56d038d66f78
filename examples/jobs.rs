//! A job runner whose jobs die halfway through a transaction, and how the pool keeps
//! their half-done work out of the database.
//!
//! Three worker threads take twelve jobs from a channel; each job runs `BEGIN`, an
//! `INSERT` of three rows and `COMMIT` on a pooled SQLite connection, with plain
//! statements rather than rusqlite's `Transaction` (which rolls back in its own `Drop`),
//! as code that spreads a transaction over several functions does. Two jobs go wrong:
//!
//! * job 2 **panics** before `COMMIT`. The worker catches the panic (a job runner must
//!   survive its jobs); the pool, seeing the guard dropped during a panic, checks the
//!   connection and rolls it back before keeping it (or closes it if either fails).
//! * job 3 **returns an error** before `COMMIT`, giving its connection back inside the
//!   open transaction. `reset_on_return(ResetAction::Rollback)` rolls it back; without
//!   it the next job on that connection would fail at `BEGIN`, or commit job 3's rows.
//!
//! The program checks the rows and `pool.stats()` and exits with 1 if either is off;
//! the panic message on stderr is expected. Run it with `cargo run -F sqlite --example jobs`.

use std::error::Error;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, mpsc};
use std::thread;

use stickypool::backends::sqlite::SqliteManager;
use stickypool::{Pool, ResetAction};

const JOBS: i64 = 12;
const WORKERS: usize = 3;
const PANICS: i64 = 2;
const FAILS: i64 = 3;

/// One job: a transaction written the way that goes wrong without a pool that resets
/// connections.
fn run_job(pool: &Pool<SqliteManager>, job: i64) -> Result<(), Box<dyn Error>> {
    let conn = pool.get()?;
    // IMMEDIATE takes the write lock now, so a busy database makes this wait (the busy
    // timeout) rather than fail at the first INSERT.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    conn.execute(
        "INSERT INTO results (job, n) VALUES (?1, 1), (?1, 2), (?1, 3)",
        [job],
    )?;
    if job == PANICS {
        panic!("job {job}: simulated crash before COMMIT");
    }
    if job == FAILS {
        // An early return (the `?` of a later check, say) with the transaction open.
        return Err(format!("job {job}: simulated error before COMMIT").into());
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = Pool::builder()
        .max_size(WORKERS as u32)
        // A connection given back inside a transaction is rolled back (closed if that fails).
        .reset_on_return(ResetAction::Rollback)
        .build(SqliteManager::memory())?;
    pool.get()?
        .execute_batch("CREATE TABLE results (job INTEGER, n INTEGER)")?;

    let (tx, rx) = mpsc::channel();
    (1..=JOBS).for_each(|job| tx.send(job).unwrap());
    drop(tx); // once the queue is empty, `recv` fails and the workers stop
    let rx = Mutex::new(rx); // the workers take turns at the one receiver
    let next = || rx.lock().unwrap().recv();
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                while let Ok(job) = next() {
                    // By the time a panic gets here, the pool has already rolled the
                    // connection back and kept it (or closed it).
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
    let mut ok = outcomes.len() as i64 == JOBS;
    let conn = pool.get()?;
    for (job, outcome) in outcomes {
        let count = "SELECT count(*) FROM results WHERE job = ?1";
        let rows: i64 = conn.query_row(count, [job], |row| row.get(0))?;
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

    // The panicking job's connection passed the check and the rollback, so it was kept;
    // the failed job's was rolled back on return. Neither was closed.
    let stats = pool.stats();
    let (kept, closed) = (stats.recovered_after_panic, stats.closed.total());
    println!("connections rolled back and kept after a panic: {kept}");
    println!("connections closed: {closed}");
    println!("pool.stats(): {stats}");
    if !ok || kept != 1 || closed != 0 {
        return Err("SOME CHECKS FAILED".into()); // `main` returning an error exits with 1
    }
    println!("all checks passed: the crashed and the failed job left nothing behind");
    Ok(())
}
