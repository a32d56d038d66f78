//! A PostgreSQL failover under writers: a primary and its streaming standby
//! (`STICKYPOOL_PG_FAILOVER_URL`, `ctl failover postgres-pair`), writers inserting
//! numbered rows through a pool with `target_session_attrs=read-write` and the
//! pool's default check settings; the primary is stopped and the standby promoted
//! mid-run.
#![cfg(feature = "postgres")]

mod servers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use stickypool::backends::postgres::PostgresManager;
use stickypool::{DEFAULT_CHECK_ON_BORROW, Pool, ResetAction};

const WRITERS: usize = 4;

/// One insert through the pool.
struct Attempt {
    id: i64,
    ended: Instant,
    /// The port of the server that acknowledged it (`inet_server_port()`), or the
    /// error.
    result: Result<i32, String>,
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn port_of(url: &str) -> i32 {
    let host_port = url.split('@').nth(1).and_then(|r| r.split('/').next());
    let port = host_port.and_then(|hp| hp.rsplit(':').next());
    port.and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Writers insert numbered rows (a fresh number per attempt, never retried) while the
/// primary is stopped and the standby promoted. Every acknowledged row must be on the
/// new primary exactly once (a fast shutdown sends the standby all WAL first, so this
/// holds for the rows acknowledged before the failover too), every row acknowledged
/// after the promotion must have been written by the new primary, and writes may fail
/// after the promotion for no longer than the borrow check interval
/// (`DEFAULT_CHECK_ON_BORROW`, 500 ms) plus one connect plus a margin for a loaded
/// machine. Prints the time from the promotion (the moment the standby leaves
/// recovery, polled every millisecond on a connection of its own) to the first
/// acknowledged write, and how many writes failed meanwhile.
#[test]
fn writes_reach_the_promoted_standby_within_a_check_interval_and_a_connect() {
    const TEST: &str = "writes_reach_the_promoted_standby_within_a_check_interval_and_a_connect";
    let Some((url, nodes)) = servers::pg_failover(TEST) else {
        return;
    };
    let Some(ctl) = servers::ServerCtl::from_env(TEST) else {
        return;
    };
    assert_eq!(
        nodes.len(),
        2,
        "two nodes in {}",
        servers::PG_FAILOVER_NODES
    );
    // A previous run left the old primary stopped: rebuild it as a standby.
    ctl.run_verb("start", "postgres-pair");

    let in_recovery = |client: &mut Client| -> bool {
        client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .expect("pg_is_in_recovery")
            .get(0)
    };
    let mut clients: Vec<(String, Client)> =
        nodes.iter().map(|u| (u.clone(), connect(u))).collect();
    let standby_index = clients
        .iter_mut()
        .position(|(_, c)| in_recovery(c))
        .expect("one node is a standby");
    let (standby_url, mut standby) = clients.remove(standby_index);
    let (primary_url, mut primary) = clients.remove(0);
    assert!(!in_recovery(&mut primary), "{primary_url} is the primary");
    let new_port = port_of(&standby_url);

    let table = servers::unique("failover");
    primary
        .batch_execute(&format!(
            "CREATE TABLE {table} (id BIGINT NOT NULL, port INT NOT NULL)"
        ))
        .expect("create table");
    drop(primary);

    let pool = Pool::builder()
        .max_size(WRITERS as u32)
        .connection_timeout(Duration::from_secs(5))
        .reset_on_return(ResetAction::Rollback)
        .build(PostgresManager::from_url(&url).expect("the failover URL parses"))
        .expect("pool builds");

    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicI64::new(1));
    let acked = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let insert =
        format!("INSERT INTO {table} (id, port) VALUES ($1, inet_server_port()) RETURNING port");
    let mut handles = Vec::new();
    for _ in 0..WRITERS {
        let (pool, stop, next_id, acked, attempts, done, insert) = (
            pool.clone(),
            stop.clone(),
            next_id.clone(),
            acked.clone(),
            attempts.clone(),
            done_tx.clone(),
            insert.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let result = match pool.get() {
                    Ok(mut conn) => conn
                        .query_one(&insert, &[&id])
                        .map(|row| row.get::<_, i32>(0))
                        .map_err(|e| match e.as_db_error() {
                            Some(db) => format!("insert: {}: {}", db.code().code(), db.message()),
                            None => format!("insert: {e}"),
                        }),
                    Err(e) => Err(format!("get: {e}")),
                };
                let ended = Instant::now();
                let failed = result.is_err();
                if !failed {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                mine.push(Attempt { id, ended, result });
                if failed {
                    // Not a busy loop while there is no primary.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            attempts.lock().unwrap().extend(mine);
            done.send(()).unwrap();
        }));
    }

    servers::wait_until("200 writes went through", Duration::from_secs(30), || {
        acked.load(Ordering::Relaxed) >= 200
    });

    // The promotion moment, seen from a connection of its own to the standby.
    let (promoted_tx, promoted_rx) = mpsc::channel();
    let probe = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while in_recovery(&mut standby) {
            assert!(
                Instant::now() < deadline,
                "the standby was not promoted within 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        promoted_tx.send(Instant::now()).unwrap();
    });
    let failover_started = Instant::now();
    let reported = ctl.run_verb("failover", "postgres-pair");
    assert_eq!(
        reported.trim().parse::<i32>().ok(),
        Some(new_port),
        "ctl promoted the standby"
    );
    let promoted = promoted_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the probe saw the promotion");
    probe.join().unwrap();

    // Run on until the writers have 200 more acknowledged writes after the promotion.
    let acked_at_promotion = acked.load(Ordering::Relaxed);
    servers::wait_until(
        "200 writes went through after the promotion",
        Duration::from_secs(30),
        || acked.load(Ordering::Relaxed) >= acked_at_promotion + 200,
    );
    stop.store(true, Ordering::Relaxed);
    servers::join_all("writers", handles, &done_rx, Duration::from_secs(30));
    drop(pool);

    let attempts = std::mem::take(&mut *attempts.lock().unwrap());
    let mut new_primary = connect(&standby_url);
    let connect_started = Instant::now();
    drop(connect(&url));
    let one_connect = connect_started.elapsed();

    // Every acknowledged id exactly once on the new primary; no id twice.
    let mut on_server: HashMap<i64, i64> = HashMap::new();
    for row in new_primary
        .query(
            &format!("SELECT id, count(*) FROM {table} GROUP BY id"),
            &[],
        )
        .expect("read the table")
    {
        on_server.insert(row.get(0), row.get(1));
    }
    let twice: Vec<_> = on_server.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ids written more than once: {twice:?}");
    let mut acknowledged = 0;
    for a in attempts.iter().filter(|a| a.result.is_ok()) {
        acknowledged += 1;
        assert_eq!(
            on_server.get(&a.id),
            Some(&1),
            "acknowledged id {} is on the new primary once",
            a.id
        );
    }
    for a in attempts.iter().filter(|a| a.ended > promoted) {
        if let Ok(port) = a.result {
            assert_eq!(
                port, new_port,
                "id {} acknowledged after the promotion",
                a.id
            );
        }
    }
    let in_doubt = attempts
        .iter()
        .filter(|a| a.result.is_err() && on_server.contains_key(&a.id))
        .count();

    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.result.is_err()).collect();
    // The writes in flight when the primary stops fail; a borrower that finds no
    // primary waits (the pool's outage grace) and may yet succeed.
    let first_failure = failed.iter().map(|a| a.ended).min().unwrap_or(promoted);
    let last_failure = failed.iter().map(|a| a.ended).max().unwrap_or(promoted);
    let first_ack = attempts
        .iter()
        .filter(|a| a.result.is_ok() && a.ended > promoted)
        .map(|a| a.ended)
        .min()
        .expect("a write went through after the promotion");
    let failed_after_promotion = failed
        .iter()
        .filter(|a| a.ended > promoted && a.ended <= first_ack)
        .count();
    let mut errors: Vec<&str> = failed
        .iter()
        .map(|a| a.result.as_ref().unwrap_err().as_str())
        .collect();
    errors.sort_unstable();
    errors.dedup();

    let to_first_ack = first_ack - promoted;
    eprintln!(
        "failover: ctl took {:?}; promotion {:?} after it started; first acknowledged write \
         {to_first_ack:?} after the promotion; {failed_after_promotion} writes failed in between \
         ({} failed in all, from {:?} before the promotion to {:?} after it); {acknowledged} \
         acknowledged, {in_doubt} failed writes landed anyway; one connect {one_connect:?}; \
         distinct errors: {errors:#?}",
        failover_started.elapsed(),
        promoted - failover_started,
        failed.len(),
        promoted.saturating_duration_since(first_failure),
        last_failure.saturating_duration_since(promoted),
    );

    // Writes fail after the promotion for no longer than one check interval, one connect
    // and a margin for a loaded machine.
    let bound = DEFAULT_CHECK_ON_BORROW + one_connect + Duration::from_secs(2);
    assert!(
        to_first_ack <= bound,
        "first write {to_first_ack:?} after the promotion (bound {bound:?})"
    );
    let failing_after = last_failure.saturating_duration_since(promoted);
    assert!(
        failing_after <= bound,
        "writes still failed {failing_after:?} after the promotion (bound {bound:?})"
    );

    new_primary
        .batch_execute(&format!("DROP TABLE {table}"))
        .expect("drop table");
}
