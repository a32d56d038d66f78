//! Worker threads taking jobs from a channel and sharing one pool: the shape of most
//! blocking services. Each job writes a row on a pooled in-memory SQLite connection,
//! reads it back, and gives the connection back before its slow part.
//!
//! `cargo run -F sqlite --example worker_threads [-- JOBS]` (200 jobs by default)

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
    pool.get()?
        .execute_batch("CREATE TABLE squares (n INTEGER PRIMARY KEY, square INTEGER)")?;

    let (tx, rx) = mpsc::channel();
    (0..jobs).for_each(|n| tx.send(n).unwrap());
    drop(tx); // once the queue is empty, `recv` fails and the workers stop
    let rx = Mutex::new(rx); // the workers take turns at the one receiver,
    let next = || rx.lock().unwrap().recv(); // holding its lock only in `next`
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
    });

    let rows: i64 = pool
        .get()?
        .query_row("SELECT count(*) FROM squares", [], |r| r.get(0))?;
    let failed = failed.into_inner();
    println!("{rows} of {jobs} rows written, {failed} jobs failed");
    println!("pool.state(): {:?}", pool.state());
    println!("pool.stats(): {}", pool.stats());
    if rows != jobs || failed > 0 {
        return Err("some jobs failed".into()); // exits with 1
    }
    Ok(())
}

/// One job. `get` waits while both connections are busy; after `connection_timeout`
/// (30 s unless set) it fails with `Error::Timeout`, which says how busy the pool was.
fn job(pool: &Pool<SqliteManager>, n: i64) -> Result<(), Box<dyn Error>> {
    let conn = pool.get()?;
    conn.execute("INSERT INTO squares VALUES (?1, ?1 * ?1)", [n])?;
    let square: i64 =
        conn.query_row("SELECT square FROM squares WHERE n = ?1", [n], |r| r.get(0))?;
    drop(conn); // back before the slow part, so other workers can use it
    thread::sleep(Duration::from_millis(1)); // the slow part: a file, an HTTP call, CPU
    if square != n * n {
        return Err(format!("wrote {}, read back {square}", n * n).into());
    }
    Ok(())
}
