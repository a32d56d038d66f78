//! `RedisManager` and `RedisClusterManager` against real servers
//! (`STICKYPOOL_REDIS_URL`, `STICKYPOOL_REDIS_CLUSTER_URLS`).
#![cfg(feature = "redis")]

mod servers;

use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, Value};
use stickypool::backends::redis::{RedisClusterManager, RedisManager};
use stickypool::{CloseReason, ManageConnection, Pool, PooledConnection, ResetAction};

fn manager(test: &str) -> Option<RedisManager> {
    let url = servers::redis_url(test)?;
    Some(
        RedisManager::new(url.as_str())
            .expect("STICKYPOOL_REDIS_URL parses")
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5)),
    )
}

fn client_id(conn: &mut impl redis::ConnectionLike) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query(conn)
        .expect("CLIENT ID")
}

fn get(conn: &mut impl redis::ConnectionLike, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(conn).expect("GET")
}

fn set(conn: &mut impl redis::ConnectionLike, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query::<()>(conn)
        .expect("SET")
}

#[test]
fn connect_query_and_validity() {
    let Some(manager) = manager("connect_query_and_validity") else {
        return;
    };
    let pool = servers::pool(manager, 4, ResetAction::Keep);
    let key = servers::unique("k");

    let mut conn = pool.get().expect("borrow");
    set(&mut *conn, &key, "hello");
    assert_eq!(get(&mut *conn, &key).as_deref(), Some("hello"));
    pool.manager().is_valid(&mut conn).expect("PING");
    assert!(!pool.manager().has_broken(&mut conn));
}

#[test]
fn killed_connection_is_broken_and_replaced() {
    let Some(manager) = manager("killed_connection_is_broken_and_replaced") else {
        return;
    };
    let admin_manager = manager.clone();
    let pool = servers::pool(manager, 1, ResetAction::Keep);

    let first_id;
    {
        let mut conn = pool.get().expect("borrow");
        first_id = client_id(&mut *conn);
        let mut admin = admin_manager.connect().expect("connect");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(first_id)
            .query(&mut admin)
            .expect("CLIENT KILL");
        assert_eq!(killed, 1);
        assert!(
            redis::cmd("PING").query::<String>(&mut *conn).is_err(),
            "the killed connection fails"
        );
        assert!(
            pool.manager().has_broken(&mut conn),
            "and says so without I/O"
        );
    }

    // `has_broken` closed it on return; the next borrower gets a new one.
    let mut conn = pool.get().expect("borrow after the kill");
    assert_ne!(client_id(&mut *conn), first_id);
    assert!(pool.state().connections <= 1);
}

#[test]
fn multi_left_open_is_discarded_on_return() {
    let Some(manager) = manager("multi_left_open_is_discarded_on_return") else {
        return;
    };
    let mut observer = manager.connect().expect("connect");
    let pool = servers::pool(manager, 1, ResetAction::Rollback);
    let key = servers::unique("multi");

    let id;
    {
        let mut conn = pool.get().expect("borrow");
        id = client_id(&mut *conn);
        redis::cmd("MULTI").query::<()>(&mut *conn).unwrap();
        let queued: Value = redis::cmd("SET")
            .arg(&key)
            .arg("queued")
            .query(&mut *conn)
            .unwrap();
        assert_eq!(queued, Value::SimpleString("QUEUED".into()));
        // Dropped inside the transaction.
    }

    let mut conn = pool.get().expect("borrow again");
    assert_eq!(client_id(&mut *conn), id, "the same connection came back");
    // A normal command answers normally instead of `QUEUED`...
    assert_eq!(get(&mut *conn, &key), None, "the queued SET was discarded");
    // ...and there is no transaction to execute.
    let exec = redis::cmd("EXEC").query::<Value>(&mut *conn);
    assert!(exec.is_err(), "EXEC without MULTI: {exec:?}");
    assert_eq!(get(&mut observer, &key), None);
}

#[test]
fn watch_left_behind_is_cleared_on_return() {
    let Some(manager) = manager("watch_left_behind_is_cleared_on_return") else {
        return;
    };
    let mut other = manager.connect().expect("connect");
    let pool = servers::pool(manager, 1, ResetAction::Rollback);
    let key = servers::unique("watched");
    let mine = servers::unique("mine");

    {
        let mut conn = pool.get().expect("borrow");
        redis::cmd("WATCH")
            .arg(&key)
            .query::<()>(&mut *conn)
            .unwrap();
        // Dropped with the key still watched.
    }
    // Someone changes the key the previous borrower watched.
    set(&mut other, &key, "changed");

    // The next borrower's own transaction must not fail because of that key.
    let mut conn = pool.get().expect("borrow again");
    let result: Option<Vec<Value>> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&mine)
        .arg("committed")
        .query(&mut *conn)
        .expect("transaction");
    assert!(result.is_some(), "EXEC was not aborted by a stale WATCH");
    assert_eq!(get(&mut other, &mine).as_deref(), Some("committed"));
}

#[test]
fn commit_on_return_executes_the_open_transaction() {
    let Some(manager) = manager("commit_on_return_executes_the_open_transaction") else {
        return;
    };
    let mut observer = manager.connect().expect("connect");
    let pool = servers::pool(manager, 1, ResetAction::Commit);
    let key = servers::unique("commit");

    {
        let mut conn = pool.get().expect("borrow");
        redis::cmd("MULTI").query::<()>(&mut *conn).unwrap();
        redis::cmd("SET")
            .arg(&key)
            .arg("executed")
            .query::<Value>(&mut *conn)
            .unwrap();
        assert_eq!(get(&mut observer, &key), None, "still queued");
    }
    assert_eq!(get(&mut observer, &key).as_deref(), Some("executed"));

    // A return without a transaction is fine too, and leaves the connection usable.
    let mut conn = pool.get().expect("borrow again");
    assert_eq!(get(&mut *conn, &key).as_deref(), Some("executed"));
}

#[test]
fn session_reset_selects_the_configured_database_again() {
    let Some(manager) = manager("session_reset_selects_the_configured_database_again") else {
        return;
    };
    let db = manager.client().get_connection_info().redis_settings().db();
    let other_db = if db == 3 { 4 } else { 3 };
    let pool = servers::pool(manager, 1, ResetAction::Session);
    let key = servers::unique("db");

    {
        let mut conn = pool.get().expect("borrow");
        redis::cmd("SELECT")
            .arg(other_db)
            .query::<()>(&mut *conn)
            .unwrap();
        set(&mut *conn, &key, "in the other database");
        redis::cmd("MULTI").query::<()>(&mut *conn).unwrap();
    }

    let mut conn = pool.get().expect("borrow again");
    assert_eq!(get(&mut *conn, &key), None, "back in database {db}");
    redis::cmd("SELECT")
        .arg(other_db)
        .query::<()>(&mut *conn)
        .unwrap();
    redis::cmd("DEL").arg(&key).query::<()>(&mut *conn).unwrap();
    redis::cmd("SELECT")
        .arg(db)
        .query::<()>(&mut *conn)
        .unwrap();
}

#[test]
fn reset_works_for_a_user_without_transaction_rights() {
    let test = "reset_works_for_a_user_without_transaction_rights";
    let Some(manager) = manager(test) else { return };
    let mut admin = manager.connect().expect("connect");
    let user = servers::unique("notx");
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">notx-secret")
        .arg("~*")
        .arg("+@all")
        .arg("-@transaction")
        .query::<()>(&mut admin)
        .expect("ACL SETUSER");
    let cleanup = Cleanup(|| {
        let _ = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .query::<i64>(&mut admin);
    });

    let mut info = manager.client().get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_username(&user)
        .set_password("notx-secret");
    info = info.set_redis_settings(settings);
    let pool = servers::pool(RedisManager::new(info).unwrap(), 1, ResetAction::Rollback);

    let id;
    {
        let mut conn = pool.get().expect("borrow");
        id = client_id(&mut *conn);
        assert!(
            redis::cmd("MULTI").query::<()>(&mut *conn).is_err(),
            "NOPERM"
        );
    }
    // NOPERM to the reset's MULTI/DISCARD is not a failure: the connection is kept.
    let mut conn = pool.get().expect("borrow again");
    assert_eq!(client_id(&mut *conn), id, "the connection was not closed");
    drop(conn);
    drop(pool);
    drop(cleanup);
}

struct Cleanup<F: FnMut()>(F);

impl<F: FnMut()> Drop for Cleanup<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[test]
fn detach_takes_the_connection_out_of_the_pool() {
    let Some(manager) = manager("detach_takes_the_connection_out_of_the_pool") else {
        return;
    };
    let pool = servers::pool(manager, 2, ResetAction::Rollback);
    let conn = pool.get().expect("borrow");
    let before = pool.state().connections;

    let mut raw: Connection = PooledConnection::detach(conn);
    // The slot is freed (and refilled at once: min_idle is max_size here).
    assert_eq!(pool.stats().closed.get(CloseReason::Detached), 1);
    assert!(pool.state().connections <= before);
    let pong: String = redis::cmd("PING")
        .query(&mut raw)
        .expect("the detached connection works");
    assert_eq!(pong, "PONG");

    let mut again = pool.get().expect("borrow after detach");
    assert_ne!(client_id(&mut *again), client_id(&mut raw));
}

// ---------------------------------------------------------------------------------
// Cluster

/// The cluster tests look at every client of every node, so they run one at a time.
static CLUSTER: Mutex<()> = Mutex::new(());

fn cluster(test: &str) -> Option<(RedisClusterManager, Vec<String>)> {
    let urls = servers::redis_cluster_urls(test)?;
    let manager = RedisClusterManager::new(urls.iter().map(String::as_str))
        .expect("STICKYPOOL_REDIS_CLUSTER_URLS parse");
    Some((manager, urls))
}

/// `CLIENT LIST` of every node, as one string per client.
fn all_clients(urls: &[String]) -> Vec<String> {
    let mut clients = Vec::new();
    for url in urls {
        let mut node = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to a cluster node");
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut node).unwrap();
        clients.extend(list.lines().map(|l| format!("{url} {l}")));
    }
    clients
}

/// The value of `field=` in a `CLIENT LIST` line.
fn client_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
}

fn keys_on_every_node(n: usize) -> Vec<String> {
    // Enough different keys to hit every node's slots many times over.
    (0..n).map(|i| servers::unique(&format!("c{i}"))).collect()
}

#[test]
fn cluster_connect_query_and_validity() {
    let Some((manager, _)) = cluster("cluster_connect_query_and_validity") else {
        return;
    };
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let pool = servers::pool(manager, 2, ResetAction::Keep);
    let mut conn = pool.get().expect("borrow");
    for key in keys_on_every_node(30) {
        set(&mut *conn, &key, "v");
        assert_eq!(get(&mut *conn, &key).as_deref(), Some("v"));
    }
    pool.manager()
        .is_valid(&mut conn)
        .expect("PING every primary");
    assert!(!pool.manager().has_broken(&mut conn));
}

#[test]
fn cluster_multi_and_watch_left_open_are_cleared_on_return() {
    let test = "cluster_multi_and_watch_left_open_are_cleared_on_return";
    let Some((manager, urls)) = cluster(test) else {
        return;
    };
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut other = manager.connect().expect("connect");
    let pool = servers::pool(manager, 1, ResetAction::Rollback);
    let watched = servers::unique("watched");
    let keys = keys_on_every_node(30);

    {
        let mut conn = pool.get().expect("borrow");
        redis::cmd("WATCH")
            .arg(&watched)
            .query::<()>(&mut *conn)
            .unwrap();
        // The driver sends a keyless MULTI to one node of its choice.
        redis::cmd("MULTI").query::<()>(&mut *conn).unwrap();
        set(&mut other, &watched, "changed");
        // Now one node has a client inside MULTI, and one a dirty WATCH.
        let clients = all_clients(&urls);
        assert!(
            clients
                .iter()
                .any(|c| client_field(c, "flags").unwrap().contains('x')),
            "a client in MULTI: {clients:#?}"
        );
        assert!(
            clients
                .iter()
                .any(|c| client_field(c, "flags").unwrap().contains('d')),
            "a client with a dirty WATCH: {clients:#?}"
        );
    }

    let clients = all_clients(&urls);
    for client in &clients {
        let flags = client_field(client, "flags").unwrap();
        assert!(
            !flags.contains('x') && !flags.contains('d'),
            "no transaction or watch left: {client}"
        );
    }
    // And every node answers normally.
    let mut conn = pool.get().expect("borrow again");
    for key in &keys {
        set(&mut *conn, key, "after");
        assert_eq!(get(&mut *conn, key).as_deref(), Some("after"));
    }
}

#[test]
fn cluster_connection_recovers_after_its_sockets_are_killed() {
    let test = "cluster_connection_recovers_after_its_sockets_are_killed";
    let Some((manager, urls)) = cluster(test) else {
        return;
    };
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let pool = Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_secs(5))
        .check_on_borrow(Some(Duration::ZERO))
        .build(manager)
        .expect("pool builds");
    let key = servers::unique("recover");
    {
        let mut conn = pool.get().expect("borrow");
        set(&mut *conn, &key, "before");
    }
    // Kill every normal client on every node but the one doing the killing.
    for url in &urls {
        let mut node = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query::<i64>(&mut node)
            .unwrap();
    }
    servers::wait_until(
        "a borrower can use the cluster again",
        Duration::from_secs(20),
        || {
            let Ok(mut conn) = pool.get() else {
                return false;
            };
            redis::cmd("GET")
                .arg(&key)
                .query::<Option<String>>(&mut *conn)
                .is_ok_and(|v| v.as_deref() == Some("before"))
        },
    );
    assert!(pool.state().connections <= 2);
}

#[test]
fn cluster_detach() {
    let Some((manager, _)) = cluster("cluster_detach") else {
        return;
    };
    let _serial = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let pool = servers::pool(manager, 2, ResetAction::Rollback);
    let conn = pool.get().expect("borrow");
    let before = pool.state().connections;
    let mut raw: redis::cluster::ClusterConnection = PooledConnection::detach(conn);
    assert_eq!(pool.stats().closed.get(CloseReason::Detached), 1);
    assert!(pool.state().connections <= before);
    let key = servers::unique("detached");
    set(&mut raw, &key, "v");
    assert_eq!(get(&mut raw, &key).as_deref(), Some("v"));
}

#[test]
fn connections_have_connect_and_response_timeouts_by_default() {
    use stickypool::backends::redis::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT};
    // No server needed: only the settings are checked.
    let manager = RedisManager::new("redis://:secret@127.0.0.1:6379/0").unwrap();
    let debug = format!("{manager:?}");
    assert!(
        debug.contains(&format!(
            "connect_timeout: Some({DEFAULT_CONNECT_TIMEOUT:?})"
        )) && debug.contains(&format!(
            "response_timeout: Some({DEFAULT_RESPONSE_TIMEOUT:?})"
        )),
        "{debug}"
    );
    let blocking = RedisManager::new("redis://127.0.0.1:6379/0")
        .unwrap()
        .response_timeout(None);
    assert!(format!("{blocking:?}").contains("response_timeout: None"));
    assert!(!debug.contains("secret"), "{debug}");
}

/// A new address while the pool runs: `set_url` changes where new connections go (here
/// another database), `retire_all` replaces the open ones.
#[test]
fn the_url_changes_at_runtime() {
    let Some(url) = servers::redis_url("the_url_changes_at_runtime") else {
        return;
    };
    let pool = stickypool::Pool::builder()
        .max_size(2)
        .min_idle(Some(0))
        .build(stickypool::backends::redis::RedisManager::new(url.as_str()).unwrap())
        .unwrap();
    let db = |pool: &stickypool::Pool<stickypool::backends::redis::RedisManager>| {
        let info: String = redis::cmd("CLIENT")
            .arg("INFO")
            .query(&mut *pool.get().unwrap())
            .unwrap();
        info.split_whitespace()
            .find_map(|kv| kv.strip_prefix("db="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(db(&pool), "0");
    let base = url.trim_end_matches('/');
    pool.manager()
        .set_url(format!("{base}/3").as_str())
        .unwrap();
    assert_eq!(db(&pool), "0", "open connections are not touched");
    pool.retire_all();
    assert_eq!(db(&pool), "3");
    assert!(pool.manager().set_url("not a url").is_err());
    assert_eq!(db(&pool), "3");
}
