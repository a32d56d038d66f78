//! Fleets: many pools of one process against one server that is down, or that goes
//! down. A binary of its own, because the pace of their connects is process-wide
//! (module `gate`), and would slow the other tests' pools.

mod common;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::{FakeManager, SOON, wait_until};
use stickypool::{Error, Pool};

/// One fleet at a time: they share the gate.
static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Connect attempts of `manager` in 100 ms buckets over `buckets` of them.
fn attempts_by_100ms(manager: &FakeManager, buckets: usize) -> Vec<u64> {
    let attempts = || manager.script.connect_attempts.load(Ordering::SeqCst);
    let mut last = attempts();
    (0..buckets)
        .map(|_| {
            thread::sleep(Duration::from_millis(100));
            let now = attempts();
            now - std::mem::replace(&mut last, now)
        })
        .collect()
}

/// The first second of a fleet's attempts at most the gate's burst and pace (30 at
/// once, then 250 a second), with a little room for the bucket edges.
fn assert_paced(what: &str, buckets: &[u64]) {
    let busiest = *buckets.iter().max().unwrap();
    let first_second: u64 = buckets.iter().take(10).sum();
    eprintln!("{what}: {first_second} connects in the first second, by 100 ms: {buckets:?}");
    assert!(
        busiest <= 60,
        "{what}: {busiest} connects in 100 ms: {buckets:?}"
    );
    assert!(
        first_second <= 300,
        "{what}: {first_second} connects in a second"
    );
}

#[test]
fn a_fleet_that_starts_or_loses_its_server_together_does_not_stampede() {
    let _fleet = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    // 200 pools of one process started while their server is down: one attempt each
    // at first (not `min_idle`), all of them paced by the process-wide gate. Without
    // the gate and the one first attempt: 1,600 attempts within 100 ms.
    const POOLS: usize = 200;
    let manager = FakeManager::new(); // clones share the script: one server
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let (pools, started) = counting_attempts(&manager, || {
        (0..POOLS)
            .map(|_| {
                Pool::builder()
                    .max_size(4)
                    .min_idle(Some(4))
                    .build_unchecked(manager.clone())
            })
            .collect::<Vec<_>>()
    });
    assert_paced("200 pools started on a down server", &started);
    back_at_min_idle(&manager, &pools);

    // A running fleet loses its server: every connection is replaced at once, and
    // every replacement fails.
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let ((), lost) = counting_attempts(&manager, || {
        pools.iter().for_each(|p| {
            p.retire_all();
        })
    });
    assert_paced("200 running pools losing their server", &lost);
    back_at_min_idle(&manager, &pools);
}

/// Runs `f` while counting `manager`'s connect attempts for two seconds from its start.
fn counting_attempts<R: Send>(
    manager: &FakeManager,
    f: impl FnOnce() -> R + Send,
) -> (R, Vec<u64>) {
    thread::scope(|s| {
        let counting = s.spawn(|| attempts_by_100ms(manager, 20));
        let result = f();
        (result, counting.join().unwrap())
    })
}

/// Brings the server back and waits until every pool is at its `min_idle` of 4.
fn back_at_min_idle(manager: &FakeManager, pools: &[Pool<FakeManager>]) {
    manager.script.fail_connect.store(false, Ordering::SeqCst);
    let back = Instant::now();
    assert!(wait_until(SOON, || pools
        .iter()
        .all(|p| p.state().idle_connections == 4)));
    eprintln!(
        "{} pools back at min_idle {:?} after the server's return",
        pools.len(),
        back.elapsed()
    );
}

#[test]
fn two_hundred_pools_on_a_down_backend_connect_at_a_bounded_spread_rate() {
    let _fleet = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    // A fleet's worth of pools (one process here) losing the same server. With
    // `circuit_breaker(None)` each pool retries its `min_idle` connections on their own
    // backoffs, and this fails (about 1,000 a second).
    const POOLS: u64 = 200;
    let manager = FakeManager::new(); // clones share the script: one server
    manager.script.fail_connect.store(true, Ordering::SeqCst);
    let pools: Vec<Pool<FakeManager>> = (0..POOLS)
        .map(|_| {
            Pool::builder()
                .max_size(4)
                .min_idle(Some(4))
                .build_unchecked(manager.clone())
        })
        .collect();
    let attempts = || manager.script.connect_attempts.load(Ordering::SeqCst);
    // Every breaker opens, and stays open long enough for the probes' backoff to
    // reach its cap (10 ms doubling to 1 s: about 1.3 s).
    let open_for = |p: &Pool<FakeManager>| match p.get() {
        Err(Error::Unavailable { down_for, .. }) => down_for,
        _ => Duration::ZERO,
    };
    assert!(wait_until(SOON, || {
        pools
            .iter()
            .all(|p| open_for(p) >= Duration::from_millis(1500))
    }));
    // Then a second, sampled in 100 ms buckets.
    let mut buckets = Vec::new();
    let mut last = attempts();
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(100));
        let now = attempts();
        buckets.push(now - last);
        last = now;
    }
    let total: u64 = buckets.iter().sum();
    let busiest = *buckets.iter().max().unwrap();
    eprintln!("{POOLS} pools, one down backend: {total} connects in 1 s, by 100 ms: {buckets:?}");
    // One probe per pool, each at most every 0.5 s (the 1 s cap less its jitter).
    assert!(total <= 2 * POOLS, "{total} connects in a second");
    // No wave: a synchronised retry would put most pools in one bucket.
    assert!(
        busiest <= POOLS / 2,
        "{busiest} connects in 100 ms: {buckets:?}"
    );
}
