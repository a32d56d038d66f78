//! Redis behind Redis Sentinel (feature `redis`): connections always to the
//! current master of a named service, across failovers, without a restart.
//!
//! [`RedisSentinelManager`] asks the sentinels where the master of the service is each
//! time it opens a connection, connects there and confirms with `ROLE` that the server
//! really is the master (a sentinel that has not yet seen a failover may name the old
//! one). Its connections are plain [`redis::Connection`]s, so borrowers use them as
//! they would with [`RedisManager`](super::redis::RedisManager).
//!
//! ```no_run
//! use std::time::Duration;
//! use redis::Commands;
//! use stickypool::backends::redis_sentinel::RedisSentinelManager;
//! use stickypool::Pool;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = RedisSentinelManager::new(
//!     ["redis://10.0.0.1:26379/", "redis://10.0.0.2:26379/", "redis://10.0.0.3:26379/"],
//!     "cache",
//! )?
//! .master_password("secret");
//! let pool = Pool::builder()
//!     .max_size(16)
//!     .connection_timeout(Duration::from_secs(10))
//!     .build(manager)?;
//! let mut conn = pool.get()?;
//! let _: () = conn.set("greeting", "hello")?;
//! # Ok(())
//! # }
//! ```
//!
//! # After a failover
//!
//! When the master dies, its connections fail on their next command; the pool closes
//! them (the borrow-time check, `has_broken` after a failed read, or the reset on
//! return) and opens new ones, which the sentinels point at the new master as soon as
//! they have promoted it. Until then connects fail and the pool's circuit breaker
//! paces them. When the old master comes back it is a replica: a connection that
//! still reaches it (a network partition healed, say) fails the borrow-time check,
//! which expects `ROLE` to answer `master`, and is replaced. Writes through a
//! connection borrowed before the failover can still fail (`READONLY`, or a closed
//! socket): a borrower that sees such an error should
//! [`discard`](crate::PooledConnection::discard) the connection and borrow again.
//!
//! # Why the driver's `SentinelClient` is not used
//!
//! The `redis` crate's sentinel client talks to the sentinels without any timeout and
//! needs `&mut self`, so one hung sentinel would block every connect of the pool behind
//! a lock. This manager follows the same protocol (the Redis "Sentinel client spec":
//! `SENTINEL get-master-addr-by-name`, then `ROLE` on the master) with every socket
//! bounded by [`connect_timeout`](RedisSentinelManager::connect_timeout) and
//! [`response_timeout`](RedisSentinelManager::response_timeout), tries the sentinels
//! in turn starting from the one that answered last, and keeps no lock.
//!
//! The reset on return and the bounded check are [`RedisManager`](super::redis::RedisManager)'s.
//! Connections to the master are plain TCP (TLS to the sentinels works with a
//! `rediss://` URL and the driver's TLS feature).

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::{
    Client, Connection, ConnectionInfo, ConnectionLike, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, Role,
};

use super::redis::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, check_within, reset_server, set_io_timeouts,
};
use crate::manager::{ManageConnection, ResetAction};

/// A [`ManageConnection`] for the master of a Redis Sentinel service
/// ([`redis::Connection`]).
///
/// See the [module documentation](self) for an example and for what happens at a
/// failover.
pub struct RedisSentinelManager {
    sentinels: Vec<ConnectionInfo>,
    service: String,
    /// Database, user and password for the master; replaced by
    /// `set_master_credentials` while the pool runs (read by connects only).
    master: RwLock<RedisConnectionInfo>,
    /// The master's database, for the `Session` reset on return (no lock there).
    db: AtomicI64,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    /// The sentinel that answered last; asked first next time.
    preferred: AtomicUsize,
}

impl RedisSentinelManager {
    /// A manager for the master of `service` (the name in the sentinels'
    /// `sentinel monitor` line), found through these sentinels (URLs or
    /// [`ConnectionInfo`]s; a password in a URL is the sentinels' own).
    ///
    /// Nothing is opened here; an error means an address could not be parsed or the
    /// list is empty.
    pub fn new<T: IntoConnectionInfo>(
        sentinels: impl IntoIterator<Item = T>,
        service: impl Into<String>,
    ) -> RedisResult<RedisSentinelManager> {
        let sentinels = sentinels
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<RedisResult<Vec<_>>>()?;
        if sentinels.is_empty() {
            return Err(RedisError::from((
                ErrorKind::EmptySentinelList,
                "at least one sentinel is required",
            )));
        }
        Ok(RedisSentinelManager {
            sentinels,
            service: service.into(),
            master: RwLock::new(RedisConnectionInfo::default()),
            db: AtomicI64::new(0),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            preferred: AtomicUsize::new(0),
        })
    }

    /// Database, user, password and protocol for the connections to the master.
    pub fn master_settings(self, settings: RedisConnectionInfo) -> RedisSentinelManager {
        self.db.store(settings.db(), Ordering::Relaxed);
        *self.master.write() = settings;
        self
    }

    /// The master's password (its `requirepass`); the sentinels' own goes in their URLs.
    pub fn master_password(self, password: impl AsRef<str>) -> RedisSentinelManager {
        let settings = self.master.read().clone().set_password(password);
        self.master_settings(settings)
    }

    /// The database connections to the master select.
    pub fn master_db(self, db: i64) -> RedisSentinelManager {
        let settings = self.master.read().clone().set_db(db);
        self.master_settings(settings)
    }

    /// Changes the user (ACL) and password new connections to the master authenticate
    /// with, while the pool runs (credential rotation). Open connections keep theirs:
    /// follow with [`Pool::retire_all`](crate::Pool::retire_all).
    pub fn set_master_credentials(&self, user: Option<&str>, password: &str) {
        let mut master = self.master.write();
        let mut settings = master.clone().set_password(password);
        if let Some(user) = user {
            settings = settings.set_username(user);
        }
        *master = settings;
    }

    /// Bounds opening a connection to a sentinel or to the master, and each sentinel's
    /// answer. Default: [`DEFAULT_CONNECT_TIMEOUT`] (10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisSentinelManager {
        self.connect_timeout = timeout;
        self
    }

    /// Read and write timeout of the connections to the master, as for
    /// [`RedisManager::response_timeout`](super::redis::RedisManager::response_timeout).
    /// Default: [`DEFAULT_RESPONSE_TIMEOUT`] (60 s).
    pub fn response_timeout(
        mut self,
        timeout: impl Into<Option<Duration>>,
    ) -> RedisSentinelManager {
        self.response_timeout = timeout.into();
        self
    }

    /// The service whose master this manager connects to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Asks the sentinels, starting with the one that answered last, where the master
    /// is, and connects there; a server that is not (or no longer) the master is
    /// skipped. The error is the last sentinel's or master's.
    fn connect_to_master(&self) -> RedisResult<Connection> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..self.sentinels.len() {
            let index = (start + i) % self.sentinels.len();
            let found = self
                .master_address(&self.sentinels[index])
                .and_then(|addr| self.open_master(addr));
            match found {
                Ok(conn) => {
                    if index != start {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(conn);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one sentinel"))
    }

    /// A connection with every step bounded by `connect_timeout`.
    fn open(&self, info: ConnectionInfo) -> RedisResult<Connection> {
        let conn = Client::open(info)?.get_connection_with_timeout(self.connect_timeout)?;
        set_io_timeouts(&conn, Some(self.connect_timeout))?;
        Ok(conn)
    }

    fn master_address(&self, sentinel: &ConnectionInfo) -> RedisResult<(String, u16)> {
        let mut conn = self.open(sentinel.clone())?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.service)
            .query(&mut conn)?;
        addr.ok_or_else(|| {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "the sentinel does not monitor this service",
                self.service.clone(),
            ))
        })
    }

    fn open_master(&self, (host, port): (String, u16)) -> RedisResult<Connection> {
        let info = (host.as_str(), port)
            .into_connection_info()?
            .set_redis_settings(self.master.read().clone());
        let mut conn = self.open(info)?;
        check_master(&mut conn)?;
        set_io_timeouts(&conn, self.response_timeout)?;
        Ok(conn)
    }
}

/// `ROLE` must answer `master`.
fn check_master(conn: &mut Connection) -> RedisResult<()> {
    match redis::cmd("ROLE").query(conn)? {
        Role::Primary { .. } => Ok(()),
        _ => Err(RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "the server is not the master (a failover moved it)",
        ))),
    }
}

/// Shows the sentinels and the service, never a password.
impl fmt::Debug for RedisSentinelManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| s.addr().to_string())
            .collect();
        let master = self.master.read();
        f.debug_struct("RedisSentinelManager")
            .field("sentinels", &sentinels)
            .field("service", &self.service)
            .field("db", &master.db())
            .field("username", &master.username())
            .field("password", &master.password().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl ManageConnection for RedisSentinelManager {
    type Connection = Connection;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Connection> {
        self.connect_to_master()
    }

    /// `ROLE`, one round trip like `PING`, which also sees a demoted master.
    fn is_valid(&self, conn: &mut Connection) -> RedisResult<()> {
        check_master(conn)
    }

    fn is_valid_within(&self, conn: &mut Connection, timeout: Duration) -> RedisResult<()> {
        check_within(
            conn,
            timeout,
            self.response_timeout,
            set_io_timeouts,
            check_master,
        )
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        !conn.is_open()
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut Connection, action: ResetAction) -> RedisResult<()> {
        reset_server(conn, action, self.db.load(Ordering::Relaxed))
    }
}
