//! Shared helpers for the backend tests: where the servers are, skipping or failing
//! when they are not there, deadlines, and the server control script.
//!
//! The servers are described by environment variables (see `scripts/servers.sh`):
//!
//! * `STICKYPOOL_REDIS_URL`: `redis://127.0.0.1:<port>/`
//! * `STICKYPOOL_REDIS_TLS_URL`: `rediss://localhost:<port>/`, the same server over TLS
//! * `STICKYPOOL_TLS_CA_FILE`, `STICKYPOOL_TLS_CERT_FILE`, `STICKYPOOL_TLS_KEY_FILE`:
//!   the test CA (which signed the servers' certificate, for `localhost` only) and a
//!   client certificate and key
//! * `STICKYPOOL_REDIS_CLUSTER_URLS`: comma-separated node URLs of a 3-master cluster
//! * `STICKYPOOL_MYSQL_URL`: `mysql://user:password@127.0.0.1:<port>/db`
//! * `STICKYPOOL_POSTGRES_URL`: `postgres://user:password@127.0.0.1:<port>/db`
//! * `STICKYPOOL_SENTINEL_URLS`, `STICKYPOOL_SENTINEL_SERVICE`: three sentinels watching
//!   a master with one replica
//! * `STICKYPOOL_SERVER_CTL`: a script taking `kill|start redis|mysql|postgres` and the
//!   sentinel verbs
//! * `STICKYPOOL_REQUIRE_SERVERS=1`: a missing variable fails the test instead of
//!   skipping it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const REDIS_URL: &str = "STICKYPOOL_REDIS_URL";
pub const REDIS_CLUSTER_URLS: &str = "STICKYPOOL_REDIS_CLUSTER_URLS";
pub const MYSQL_URL: &str = "STICKYPOOL_MYSQL_URL";
pub const POSTGRES_URL: &str = "STICKYPOOL_POSTGRES_URL";
pub const SENTINEL_URLS: &str = "STICKYPOOL_SENTINEL_URLS";
pub const SENTINEL_SERVICE: &str = "STICKYPOOL_SENTINEL_SERVICE";
pub const SERVER_CTL: &str = "STICKYPOOL_SERVER_CTL";
pub const REQUIRE_SERVERS: &str = "STICKYPOOL_REQUIRE_SERVERS";

/// The value of `var`, or `None` after printing why the test is skipped. Panics
/// instead when `STICKYPOOL_REQUIRE_SERVERS` is set, so a CI job that promised
/// servers cannot pass by skipping.
pub fn env_or_skip(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value.trim().to_owned()),
        _ => {
            if require_servers() {
                panic!("{test}: {var} is not set but {REQUIRE_SERVERS} is");
            }
            eprintln!("skipping {test}: {var} not set");
            None
        }
    }
}

fn require_servers() -> bool {
    std::env::var(REQUIRE_SERVERS).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `STICKYPOOL_REDIS_URL`, or skip.
pub fn redis_url(test: &str) -> Option<String> {
    env_or_skip(test, REDIS_URL)
}

/// The node URLs from `STICKYPOOL_REDIS_CLUSTER_URLS`, or skip.
pub fn redis_cluster_urls(test: &str) -> Option<Vec<String>> {
    let urls = env_or_skip(test, REDIS_CLUSTER_URLS)?;
    Some(
        urls.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// `STICKYPOOL_MYSQL_URL`, or skip.
pub fn mysql_url(test: &str) -> Option<String> {
    env_or_skip(test, MYSQL_URL)
}

/// `STICKYPOOL_POSTGRES_URL`, or skip.
pub fn postgres_url(test: &str) -> Option<String> {
    env_or_skip(test, POSTGRES_URL)
}

/// The sentinel URLs and the service name, or skip.
pub fn sentinel(test: &str) -> Option<(Vec<String>, String)> {
    let urls = env_or_skip(test, SENTINEL_URLS)?;
    let service = env_or_skip(test, SENTINEL_SERVICE)?;
    let urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
    Some((urls.map(str::to_owned).collect(), service))
}

/// The password inside a URL like `scheme://user:password@host/...`, if any.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

/// Polls `f` every 2 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls `f` until it is true, panicking with `what` if `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    if wait_for(timeout, || f().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting until {what}");
    }
}

/// Joins threads that each send a unit on `done` as their last act, failing if they
/// are not all done within `timeout` (a thread stuck in the pool or the driver).
pub fn join_all(
    what: &str,
    handles: Vec<std::thread::JoinHandle<()>>,
    done: &std::sync::mpsc::Receiver<()>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    for i in 0..handles.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if done.recv_timeout(left).is_err() {
            panic!(
                "{what}: only {i} of {} threads finished within {timeout:?}",
                handles.len()
            );
        }
    }
    for handle in handles {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Which server the control script acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Redis,
    Mysql,
    Postgres,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Redis => "redis",
            Server::Mysql => "mysql",
            Server::Postgres => "postgres",
        }
    }
}

/// The server control script (`STICKYPOOL_SERVER_CTL`).
#[derive(Debug, Clone)]
pub struct ServerCtl {
    script: String,
}

impl ServerCtl {
    /// The control script, or skip.
    pub fn from_env(test: &str) -> Option<ServerCtl> {
        env_or_skip(test, SERVER_CTL).map(|script| ServerCtl { script })
    }

    fn run(&self, action: &str, server: Server) {
        self.run_verb(action, server.name());
    }

    /// Runs `ctl <action> <target>`, panicking if it fails; returns what it printed.
    pub fn run_verb(&self, action: &str, target: &str) -> String {
        let started = Instant::now();
        let output = Command::new(&self.script)
            .args([action, target])
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.script));
        assert!(
            output.status.success(),
            "`{} {action} {target}` failed: {}",
            self.script,
            output.status
        );
        eprintln!("{action} {target} took {:?}", started.elapsed());
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the server (SIGKILL) and returns once it is gone. The returned guard
    /// starts it again when dropped, so a failing test leaves it running.
    pub fn kill(&self, server: Server) -> Outage<'_> {
        self.run("kill", server);
        Outage {
            ctl: self,
            server,
            restarted: false,
        }
    }
}

impl ServerCtl {
    /// Stops the server with SIGSTOP: it keeps accepting TCP connections and answers
    /// nothing. The returned guard resumes it when dropped.
    pub fn pause(&self, server: Server) -> Paused<'_> {
        self.run("pause", server);
        Paused { ctl: self, server }
    }
}

/// A server that is hung (SIGSTOP) until this is dropped.
pub struct Paused<'a> {
    ctl: &'a ServerCtl,
    server: Server,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.ctl.run("resume", self.server);
    }
}

/// A server that is down until [`Outage::restart`] or drop.
pub struct Outage<'a> {
    ctl: &'a ServerCtl,
    server: Server,
    restarted: bool,
}

impl Outage<'_> {
    /// Starts the server again and returns once it accepts connections.
    pub fn restart(mut self) {
        self.restarted = true;
        self.ctl.run("start", self.server);
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if !self.restarted {
            self.ctl.run("start", self.server);
        }
    }
}

/// Serializes the tests of one test binary that use the same server, so a test that
/// kills a server never runs while another one expects it up.
pub fn lock(server: Server) -> MutexGuard<'static, ()> {
    static REDIS: Mutex<()> = Mutex::new(());
    static MYSQL: Mutex<()> = Mutex::new(());
    static POSTGRES: Mutex<()> = Mutex::new(());
    let mutex = match server {
        Server::Redis => &REDIS,
        Server::Mysql => &MYSQL,
        Server::Postgres => &POSTGRES,
    };
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stickypool-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique name for a table or key, so tests sharing a server do not collide.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "sp_{tag}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pool for backend tests: `max_size`, one idle connection, a 5 s borrow timeout and
/// the given reset on return.
pub fn pool<M: stickypool::ManageConnection>(
    manager: M,
    max_size: u32,
    reset: stickypool::ResetAction,
) -> stickypool::Pool<M> {
    stickypool::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        .reset_on_return(reset)
        .build(manager)
        .expect("pool builds")
}

/// Sets an environment variable for a test. Every variable the tests set goes through
/// here, with a name of the test's own, so no test sees another's value.
pub fn set_env(name: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: `set_var` is unsound while another thread reads the environment without
    // std's lock: libc's own `getenv` (in `getaddrinfo`, in time-zone code) or C code
    // of a dependency, on another test thread. Std's `var` and `set_var` are
    // serialized with each other. The tests connect to IP addresses (parsed, never
    // resolved) and read no time zones, so nothing reads the environment behind std.
    unsafe { std::env::set_var(name, value) };
}

/// `postgres://user:password@127.0.0.1:<p1>,127.0.0.1:<p2>/db?target_session_attrs=read-write`:
/// a primary and its streaming standby, apart from `STICKYPOOL_POSTGRES_URL`'s server,
/// failed over by `ctl failover postgres-pair` (the failover test is their only user).
pub const PG_FAILOVER_URL: &str = "STICKYPOOL_PG_FAILOVER_URL";
/// The pair's two nodes, one single-host URL each, comma-separated.
pub const PG_FAILOVER_NODES: &str = "STICKYPOOL_PG_FAILOVER_NODES";

/// The PostgreSQL pair's multi-host URL and its nodes' own URLs, or skip.
pub fn pg_failover(test: &str) -> Option<(String, Vec<String>)> {
    let url = env_or_skip(test, PG_FAILOVER_URL)?;
    let nodes = env_or_skip(test, PG_FAILOVER_NODES)?;
    let nodes = nodes.split(',').map(str::trim).filter(|u| !u.is_empty());
    Some((url, nodes.map(str::to_owned).collect()))
}

/// PgBouncer in front of `STICKYPOOL_POSTGRES_URL`'s server, database
/// `stickypool_session` (pool_mode=session), PgBouncer's default settings.
pub const PGBOUNCER_SESSION_URL: &str = "STICKYPOOL_PGBOUNCER_SESSION_URL";
/// The same PgBouncer, database `stickypool_transaction` (pool_mode=transaction,
/// pool_size=2, LIFO reuse of server connections).
pub const PGBOUNCER_TRANSACTION_URL: &str = "STICKYPOOL_PGBOUNCER_TRANSACTION_URL";
/// A second PgBouncer like the first but with `ignore_startup_parameters = options`.
pub const PGBOUNCER_IGNORE_OPTIONS_SESSION_URL: &str =
    "STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_SESSION_URL";
/// The second PgBouncer's transaction-mode database.
pub const PGBOUNCER_IGNORE_OPTIONS_TRANSACTION_URL: &str =
    "STICKYPOOL_PGBOUNCER_IGNORE_OPTIONS_TRANSACTION_URL";
