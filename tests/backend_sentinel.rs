//! `RedisSentinelManager` against three real sentinels watching a master and a replica
//! (`STICKYPOOL_SENTINEL_URLS`, `STICKYPOOL_SENTINEL_SERVICE`): the pool follows a
//! failover by itself.
//!
//! A test binary of its own, because the failover test kills the master; every test
//! holds `SETUP` so none runs during a failover.
#![cfg(feature = "redis")]

mod servers;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use redis::{Commands, Role};
use servers::ServerCtl;
use stickypool::backends::redis_sentinel::RedisSentinelManager;
use stickypool::{Error, ManageConnection, Pool, PooledConnection, ResetAction};

static SETUP: Mutex<()> = Mutex::new(());

fn manager(test: &str) -> Option<RedisSentinelManager> {
    let (urls, service) = servers::sentinel(test)?;
    Some(
        RedisSentinelManager::new(urls.iter().map(String::as_str), service)
            .expect("sentinel URLs parse")
            .connect_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2)),
    )
}

fn role(conn: &mut redis::Connection) -> Role {
    redis::cmd("ROLE").query(conn).expect("ROLE")
}

/// The replica's address, as the sentinels see it.
fn replica_of(test: &str) -> Option<(String, u16)> {
    let (urls, service) = servers::sentinel(test)?;
    let mut sentinel = redis::Client::open(urls[0].as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let replicas: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(&service)
        .query(&mut sentinel)
        .unwrap();
    let replica = replicas.first()?;
    Some((replica["ip"].clone(), replica["port"].parse().unwrap()))
}

#[test]
fn connections_go_to_the_master() {
    let Some(manager) = manager("connections_go_to_the_master") else {
        return;
    };
    let _setup = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let pool = Pool::builder()
        .max_size(4)
        .reset_on_return(ResetAction::Rollback)
        .build(manager)
        .expect("pool builds");
    let mut conn = pool.get().unwrap();
    assert!(matches!(role(&mut conn), Role::Primary { .. }));
    let key = servers::unique("sentinel");
    let _: () = conn.set(&key, "written").unwrap();
    let value: String = conn.get(&key).unwrap();
    assert_eq!(value, "written");
    let _: () = conn.del(&key).unwrap();
    // A transaction left open is discarded on return.
    redis::cmd("MULTI").query::<()>(&mut *conn).unwrap();
    drop(conn);
    let mut conn = pool.get().unwrap();
    let pong: String = redis::cmd("PING").query(&mut *conn).unwrap();
    assert_eq!(pong, "PONG");
}

/// A connection that reaches a replica (as one to a demoted master does) fails the
/// check, so the pool never hands it out.
#[test]
fn a_connection_to_a_replica_fails_the_check() {
    let test = "a_connection_to_a_replica_fails_the_check";
    let Some(manager) = manager(test) else {
        return;
    };
    let _setup = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let (host, port) = replica_of(test).expect("the setup has a replica");
    let mut replica = redis::Client::open((host.as_str(), port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert!(matches!(role(&mut replica), Role::Replica { .. }));
    let err = manager.is_valid(&mut replica).unwrap_err();
    assert!(err.to_string().contains("not the master"), "{err}");
    let err = manager
        .is_valid_within(&mut replica, Duration::from_secs(1))
        .unwrap_err();
    assert!(err.to_string().contains("not the master"), "{err}");
    let mut master = manager.connect().unwrap();
    manager.is_valid(&mut master).unwrap();
}

#[test]
fn an_unknown_service_fails_clearly() {
    let Some((urls, _)) = servers::sentinel("an_unknown_service_fails_clearly") else {
        return;
    };
    let manager = RedisSentinelManager::new(urls.iter().map(String::as_str), "no-such-service")
        .unwrap()
        .connect_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)
        .expect_err("no such service");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("does not monitor"), "{err}");
}

#[test]
fn no_reachable_sentinel_fails_fast() {
    let urls = [servers::closed_port(), servers::closed_port()]
        .map(|port| format!("redis://127.0.0.1:{port}/"));
    let manager = RedisSentinelManager::new(urls.iter().map(String::as_str), "stickypool")
        .unwrap()
        .master_password("hunter2");
    assert!(!format!("{manager:?}").contains("hunter2"));
    let started = Instant::now();
    let err = Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let message = err.to_string().to_lowercase();
    assert!(message.contains("refused"), "{message}");
    assert!(RedisSentinelManager::new(Vec::<String>::new(), "x").is_err());
}

/// Kill the master under load: after the sentinels promote the replica, the same pool
/// writes to the new master, without any restart. Prints the time from the kill to
/// the first successful write.
#[test]
fn the_pool_follows_a_failover() {
    let test = "the_pool_follows_a_failover";
    let (Some(manager), Some(ctl)) = (manager(test), ServerCtl::from_env(test)) else {
        return;
    };
    let _setup = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    ctl.run_verb("wait", "sentinel-healthy");
    let pool = Pool::builder()
        .max_size(4)
        .min_idle(Some(2))
        .connection_timeout(Duration::from_secs(1))
        .reset_on_return(ResetAction::Rollback)
        .build(manager)
        .expect("pool builds");
    let old_master = {
        let mut conn = pool.get().unwrap();
        let info: String = redis::cmd("INFO").arg("server").query(&mut *conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("tcp_port:"))
            .map(|p| p.trim().to_owned())
            .unwrap()
    };

    let key = servers::unique("failover");
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (writes, first_after_kill_ms) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicU64::new(u64::MAX)),
    );
    let (done_tx, done) = mpsc::channel();
    let handles = (0..8)
        .map(|_| {
            let (pool, key, stop, killed_at, writes, first, done_tx) = (
                pool.clone(),
                key.clone(),
                stop.clone(),
                killed_at.clone(),
                writes.clone(),
                first_after_kill_ms.clone(),
                done_tx.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut conn = match pool.get() {
                        Ok(conn) => conn,
                        Err(Error::Timeout { .. } | Error::Unavailable { .. }) => continue,
                        Err(e) => panic!("unexpected borrow error: {e}"),
                    };
                    let started = Instant::now();
                    match conn.incr::<_, _, i64>(&key, 1) {
                        Ok(_) => {
                            writes.fetch_add(1, Ordering::SeqCst);
                            if let Some(at) = *killed_at.lock().unwrap() {
                                first.fetch_min(
                                    started.saturating_duration_since(at).as_millis() as u64,
                                    Ordering::SeqCst,
                                );
                            }
                        }
                        // The old master is gone (or read-only): do not reuse this one.
                        Err(_) => PooledConnection::discard(conn),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = done_tx.send(());
            })
        })
        .collect();
    servers::wait_until("writes flow", Duration::from_secs(30), || {
        writes.load(Ordering::SeqCst) >= 200
    });

    // Timed from the moment the master is gone: no write started later can reach it.
    let killed = ctl.run_verb("kill", "sentinel-master");
    let kill_time = Instant::now();
    *killed_at.lock().unwrap() = Some(kill_time);
    let before = writes.load(Ordering::SeqCst);
    servers::wait_until(
        "writes succeed on the new master",
        Duration::from_secs(60),
        || first_after_kill_ms.load(Ordering::SeqCst) != u64::MAX,
    );
    let first_ms = first_after_kill_ms.load(Ordering::SeqCst);
    servers::wait_until("the pool keeps writing", Duration::from_secs(30), || {
        writes.load(Ordering::SeqCst) >= before + 200
    });
    stop.store(true, Ordering::SeqCst);
    servers::join_all("writers", handles, &done, Duration::from_secs(30));

    let mut conn = pool.get().unwrap();
    assert!(matches!(role(&mut conn), Role::Primary { .. }));
    let info: String = redis::cmd("INFO").arg("server").query(&mut *conn).unwrap();
    let new_master = info
        .lines()
        .find_map(|l| l.strip_prefix("tcp_port:"))
        .map(|p| p.trim().to_owned())
        .unwrap();
    let _: () = conn.del(&key).unwrap();
    drop(conn);
    eprintln!(
        "killed the master on port {} ({}); first successful write {first_ms} ms after \
         the kill, new master on port {new_master}; {} writes; {:?}; stats: {}",
        old_master,
        killed.trim(),
        writes.load(Ordering::SeqCst),
        kill_time.elapsed(),
        pool.stats()
    );
    assert_ne!(
        new_master, old_master,
        "the pool still writes to the old master"
    );
    assert!(first_ms < 60_000);

    ctl.run_verb("start", "sentinel-nodes");
    ctl.run_verb("wait", "sentinel-healthy");
}
