//! Input at the edges: durations too large for the clock, the largest pool, many
//! pools. Nothing panics, and each means what it says.

mod common;

use std::thread;
use std::time::Duration;

use common::{FakeManager, SOON, wait_until};
use stickypool::{MAX_POOL_SIZE, Pool, PooledConnection};

#[test]
fn huge_durations_mean_for_ever_and_never_panic() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::MAX)
        .idle_timeout(Some(Duration::MAX))
        .max_lifetime(Some(Duration::MAX))
        .reap_interval(Duration::MAX)
        .keepalive_interval(Some(Duration::MAX))
        .leak_detection_threshold(Some(Duration::MAX))
        .check_on_borrow(Some(Duration::MAX))
        .build(manager.clone())
        .expect("build with Duration::MAX everywhere");
    let held = pool.get_timeout(Duration::MAX).unwrap();
    // A waiter with a timeout too long for the clock waits until it is served.
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            pool.get_timeout(Duration::MAX)
                .map(|c| PooledConnection::id(&c))
        });
        assert!(wait_until(SOON, || pool.state().waiters == 1));
        let id = PooledConnection::id(&held);
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), id);
    });
    // `get` with the pool's own `Duration::MAX` timeout.
    drop(pool.get().unwrap());
}

#[cfg(feature = "toml")]
#[test]
fn huge_durations_from_a_config_file_never_panic() {
    let pools = stickypool::Pools::from_toml_str(
        r#"
        [pools.local]
        backend = "sqlite"
        memory = true
        max_size = 1
        connection_timeout = "18446744073709551615s"
        reap_interval = "18446744073709551615s"
        keepalive_interval = "18446744073709551615s"
        leak_detection_threshold = "18446744073709551615s"
        idle_timeout = "18446744073709551615s"
        max_lifetime = "18446744073709551615s"
        "#,
    );
    #[cfg(feature = "sqlite")]
    {
        let pools = pools.expect("huge durations are accepted");
        drop(pools.sqlite("local").unwrap().get().unwrap());
    }
    #[cfg(not(feature = "sqlite"))]
    drop(pools);
}

#[test]
fn the_largest_pool_builds_in_linear_time_within_its_timeout() {
    // Quadratic work in `build` took over a minute here; linear takes well under a
    // second, so a 10 s timeout only fails if the work is not linear.
    let pool = Pool::builder()
        .max_size(MAX_POOL_SIZE)
        .connection_timeout(Duration::from_secs(10))
        .build(FakeManager::new())
        .expect("65,536 connections within the timeout");
    assert_eq!(pool.state().connections, MAX_POOL_SIZE);
    assert_eq!(pool.state().idle_connections, MAX_POOL_SIZE);
}

#[test]
fn many_pools_in_turn_keep_their_connections_apart() {
    // Pools come and go; a thread's hint or bound connection for one never reaches
    // another (ids are 64-bit and never reused).
    let mut ids = std::collections::HashSet::new();
    for _ in 0..200 {
        let manager = FakeManager::new();
        let pool = Pool::builder().max_size(1).build(manager.clone()).unwrap();
        let conn = pool.get().unwrap();
        assert!(ids.insert(format!("{pool:?}")), "a pool name repeated");
        drop(conn);
        let bound = pool.bind().unwrap();
        assert_eq!(bound.borrow().id, 1, "this pool's own connection");
        drop(bound);
    }
}
