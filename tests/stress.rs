//! Many more threads than connections, thousands of operations of every kind, and the
//! invariants checked all along: one holder per connection, never more than
//! `max_size` connections, and at the end every connection opened closed exactly once.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::{FakeManager, SOON};
use stickypool::{Error, Pool, PooledConnection, ResetAction};

const THREADS: usize = 32;
const OPS_PER_THREAD: u64 = 2_000;
const MAX_SIZE: u32 = 4;

#[test]
fn many_threads_few_connections_nothing_lost() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(MAX_SIZE)
        .min_idle(Some(1))
        .connection_timeout(SOON)
        .check_on_borrow(Some(Duration::from_millis(1)))
        .reset_on_return(ResetAction::Rollback)
        .build(manager.clone())
        .unwrap();
    let holders = Mutex::new(HashSet::new());
    let max_live = AtomicU64::new(0);
    let detached = Mutex::new(Vec::new());

    thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, holders, max_live, detached, manager) =
                (&pool, &holders, &max_live, &detached, &manager);
            s.spawn(move || {
                for i in 0..OPS_PER_THREAD {
                    let op = (i * 7 + t as u64) % 100;
                    let conn = if op < 10 {
                        match pool.try_get() {
                            Some(c) => c,
                            None => continue,
                        }
                    } else if op < 15 {
                        match pool.get_timeout(Duration::from_micros(50)) {
                            Ok(c) => c,
                            Err(Error::Timeout { .. }) => continue,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    } else {
                        pool.get().expect("get within the deadline")
                    };
                    let id = conn.id;
                    assert!(holders.lock().unwrap().insert(id), "{id} held twice");
                    max_live.fetch_max(manager.script.live(), Ordering::SeqCst);
                    if op.is_multiple_of(3) {
                        thread::yield_now();
                    }
                    assert!(holders.lock().unwrap().remove(&id));
                    match op {
                        97 => detached
                            .lock()
                            .unwrap()
                            .push(PooledConnection::detach(conn)),
                        98 => PooledConnection::discard(conn),
                        99 => {
                            let mut conn = conn;
                            conn.broken = true;
                        }
                        _ => drop(conn),
                    }
                }
            });
        }
    });

    let live_peak = max_live.load(Ordering::SeqCst);
    assert!(
        live_peak <= u64::from(MAX_SIZE) + detached.lock().unwrap().len() as u64,
        "{live_peak} connections open at once"
    );
    let state = pool.state();
    assert!(state.connections <= MAX_SIZE);
    assert_eq!(state.in_use, 0);
    assert_eq!(state.waiters, 0);
    let stats = pool.stats();
    assert!(stats.borrows > THREADS as u64 * OPS_PER_THREAD / 2);
    drop(pool);
    drop(detached);
    manager.script.assert_all_closed_once();
}

#[test]
fn close_under_load_wakes_everyone_and_closes_everything() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(2)
        .connection_timeout(SOON)
        .build(manager.clone())
        .unwrap();
    let stop_after = AtomicU64::new(0);
    thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    match pool.get() {
                        Ok(conn) => {
                            stop_after.fetch_add(1, Ordering::SeqCst);
                            thread::yield_now();
                            drop(conn);
                        }
                        Err(Error::Closed) => return,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            });
        }
        while stop_after.load(Ordering::SeqCst) < 2_000 {
            thread::yield_now();
        }
        pool.close();
    });
    assert_eq!(pool.state().connections, 0);
    manager.script.assert_all_closed_once();
}
