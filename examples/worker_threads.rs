//! Worker threads taking jobs from a channel, sharing one pool: the shape of most
//! blocking services. Each job borrows a connection to an in-memory SQLite database,
//! writes a row, reads it back and gives the connection back before its slow part.
//! It prints the rows, `pool.state()` and `pool.stats()`; exits with 1 if a job failed.
//!
//! `cargo run -F sqlite --example worker_threads` (200 jobs), `... -- 5000` (5000 jobs)

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::Duration;

use stickypool::Pool;
use stickypool::backends::sqlite::SqliteManager;

fn main() -> Result<(), Box<dyn Error>> {
    let jobs: i64 = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    // Fewer connections than workers, as in most services: the pool shares them out.
    let pool = Pool::builder().max_size(2).build(SqliteManager::memory())?;
    let create = "CREATE TABLE squares (n INTEGER PRIMARY KEY, square INTEGER NOT NULL)";
    pool.get()?.execute_batch(create)?;

    let (tx, rx) = mpsc::channel();
    (0..jobs).for_each(|n| tx.send(n).unwrap());
    drop(tx); // once the queue is empty, `recv` fails and the workers stop
    // A `Receiver` has one owner; the mutex lets the workers take turns at it. The lock
    // is held inside `next` only, not while a job runs.
    let rx = Mutex::new(rx);
    let next = || rx.lock().unwrap().recv();
    let failed = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Ok(n) = next() {
                    if let Err(e) = job(&pool, n) {
                        eprintln!("job {n}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }); // returns once every worker has stopped

    let rows: i64 = pool
        .get()?
        .query_row("SELECT count(*) FROM squares", [], |r| r.get(0))?;
    let failed = failed.into_inner();
    println!("{rows} of {jobs} rows written, {failed} jobs failed");
    println!("pool.state(): {:?}", pool.state());
    println!("pool.stats(): {}", pool.stats());
    if rows != jobs || failed > 0 {
        return Err("some jobs failed".into()); // `main` returning an error exits with 1
    }
    Ok(())
}

/// One job: borrow a connection, write, read back, give it back, then the slow part.
fn job(pool: &Pool<SqliteManager>, n: i64) -> Result<(), Box<dyn Error>> {
    // Waits while both connections are busy. After `connection_timeout` (30 s unless
    // set) it gives up with `Error::Timeout`, which says how busy the pool was.
    let conn = pool.get()?;
    conn.execute("INSERT INTO squares (n, square) VALUES (?1, ?1 * ?1)", [n])?;
    let square: i64 =
        conn.query_row("SELECT square FROM squares WHERE n = ?1", [n], |r| r.get(0))?;
    // Give the connection back before the slow part: holding it would keep the other
    // workers waiting for a connection nobody is using.
    drop(conn);
    thread::sleep(Duration::from_millis(1)); // the slow part: a file, an HTTP call, CPU work
    if square != n * n {
        return Err(format!("wrote {}, read back {square}", n * n).into());
    }
    Ok(())
}
