//! Redis (and Valkey) through the [`redis`](https://docs.rs/redis) crate (feature `redis`).
//!
//! * [`RedisManager`]: one server, connections are [`redis::Connection`].
//! * [`RedisClusterManager`]: a Redis Cluster, connections are
//!   [`redis::cluster::ClusterConnection`] (each one holds a socket per node and routes
//!   every command by its key).
//!
//! Addresses, database, user, password and TLS (`rediss://` URLs, with the driver's TLS
//! features) are given exactly as the driver takes them: a URL or a
//! [`redis::ConnectionInfo`] for one server, a [`redis::Client`], or a list of node URLs
//! or a [`ClusterClient`] built with [`ClusterClientBuilder`](redis::cluster::ClusterClientBuilder)
//! for a cluster.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis::Commands;
//! use stickypool::backends::redis::RedisManager;
//! use stickypool::{Pool, ResetAction};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = RedisManager::new("redis://:secret@127.0.0.1:6379/0")?
//!     .connect_timeout(Duration::from_secs(1))
//!     .response_timeout(Duration::from_secs(5));
//! let pool = Pool::builder()
//!     .max_size(16)
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//!
//! let mut conn = pool.get()?;
//! let _: () = conn.set("greeting", "hello")?;
//! let greeting: String = conn.get("greeting")?;
//! assert_eq!(greeting, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! A cluster, from the addresses of some of its nodes:
//!
//! ```no_run
//! use redis::Commands;
//! use stickypool::backends::redis::RedisClusterManager;
//! use stickypool::Pool;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = RedisClusterManager::new([
//!     "redis://10.0.0.1:6379/",
//!     "redis://10.0.0.2:6379/",
//!     "redis://10.0.0.3:6379/",
//! ])?;
//! let pool = Pool::builder().max_size(8).build(manager)?;
//! let mut conn = pool.get()?;
//! let _: () = conn.incr("visits", 1)?;
//! # Ok(())
//! # }
//! ```
//!
//! # What the hooks do
//!
//! * [`is_valid`](ManageConnection::is_valid) sends `PING` and expects `PONG` (on a
//!   cluster the driver sends it to every primary).
//! * [`has_broken`](ManageConnection::has_broken) returns `!is_open()`: the driver marks a
//!   connection closed when a read failed or the server answered garbage. It is a field
//!   read, no I/O.
//! * [`reset`](ManageConnection::reset) makes sure the next borrower does not inherit a
//!   transaction (`MULTI` left open: every command it sends would answer `QUEUED`) or
//!   watched keys (`WATCH` left behind: its own next transaction could fail for keys it
//!   never watched).
//!
//! ## How the reset works, and why this way
//!
//! Neither `redis::Connection` nor `ClusterConnection` records whether `MULTI` or `WATCH`
//! was sent, so the reset cannot skip the server when the connection is clean. It uses a
//! sequence that is correct in both states and costs a single round trip on one server:
//! the two commands `MULTI` and `DISCARD`, sent together as one pipeline.
//!
//! * No transaction open: `MULTI` opens one, `DISCARD` closes it and, like every
//!   `DISCARD`, forgets all watched keys.
//! * Transaction open: `MULTI` is refused ("calls can not be nested") and changes
//!   nothing, `DISCARD` drops the queued commands and the watched keys.
//!
//! Either way `DISCARD` answers `OK`, so any other answer is a real problem and is
//! returned as an error (the pool then closes the connection). The obvious alternative,
//! `DISCARD` then `UNWATCH`, is also one round trip but its `DISCARD` fails with
//! "without MULTI" on every clean connection, which makes real failures harder to tell
//! apart. Redis 6.2's `RESET` command is not used: it also logs the connection out,
//! switches it back to RESP2 and selects database 0, undoing what the driver set up at
//! connect.
//!
//! [`ResetAction::Commit`] sends `EXEC` first (it runs the queued commands if a
//! transaction is open and fails harmlessly otherwise; a transaction aborted by a
//! watched key or a queuing error is logged at `warn` level, the connection is clean
//! either way), then the same `MULTI`/`DISCARD`. [`ResetAction::Session`] does what
//! `Rollback` does and also `SELECT`s the database of the connection info again, in
//! case the borrower switched it (single server only: a cluster has only database 0).
//!
//! A user whose ACL forbids transactions gets `NOPERM` for `MULTI` and `DISCARD`; such a
//! connection cannot have a transaction or watched keys, so that answer counts as clean.
//!
//! On a cluster the driver routes `MULTI` and `DISCARD` (no key) to a random node, so a
//! transaction left open sits on any one of the node sockets. The reset therefore sends
//! `MULTI` and then `DISCARD` to every node: `2 × nodes` round trips per return (the
//! cluster connection does not pipeline). Where borrowers never use `MULTI`/`WATCH` on
//! the cluster, [`ResetAction::Keep`] skips that cost.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{
    Client, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike, IntoConnectionInfo,
    RedisError, RedisResult, ServerErrorKind, Value,
};

use crate::manager::{ManageConnection, ResetAction};

/// The connect timeout of a [`RedisManager`] unless set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The response timeout of a [`RedisManager`] unless set.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A [`ManageConnection`] for one Redis server ([`redis::Connection`]).
///
/// See the [module documentation](self) for an example and for what each hook does.
pub struct RedisManager {
    /// Read by every connect; replaced by `set_url` and `set_credentials` while the
    /// pool runs (connects are its only readers, so the lock is off the borrow path).
    client: RwLock<Client>,
    /// The client's database, for the `Session` reset on return (no lock there).
    db: AtomicI64,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
}

impl Clone for RedisManager {
    fn clone(&self) -> RedisManager {
        RedisManager {
            client: RwLock::new(self.client()),
            db: AtomicI64::new(self.db.load(Ordering::Relaxed)),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
        }
    }
}

impl RedisManager {
    /// A manager for the server at `info`: a URL (`redis://[user][:password@]host[:port][/db]`,
    /// `rediss://` for TLS with the driver's TLS features, `redis+unix:///path`) or a
    /// [`ConnectionInfo`].
    ///
    /// Nothing is opened here; an error means the address could not be parsed.
    pub fn new(info: impl IntoConnectionInfo) -> RedisResult<RedisManager> {
        Ok(RedisManager::from_client(Client::open(info)?))
    }

    /// A manager opening its connections from this client (for a client built with
    /// the driver's TLS certificate options, for example).
    pub fn from_client(client: Client) -> RedisManager {
        RedisManager {
            db: AtomicI64::new(client.get_connection_info().redis_settings().db()),
            client: RwLock::new(client),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
        }
    }

    /// Bounds how long opening a connection may take. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`] (10 s). `None` leaves it to the operating system's
    /// TCP connect timeout, which can be minutes for a host that drops packets.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> RedisManager {
        self.connect_timeout = timeout.into();
        self
    }

    /// Bounds how long a command may wait for its reply (and for its request to be
    /// written), on every connection this manager opens; it also bounds the borrow-time
    /// `PING` and the keepalive. Default: [`DEFAULT_RESPONSE_TIMEOUT`] (60 s). `None`
    /// waits for ever, which blocking commands (`BLPOP key 0`) need; then a server that
    /// stops answering without closing the socket blocks the caller for ever too.
    ///
    /// A zero duration is rejected by the driver when connecting.
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> RedisManager {
        self.response_timeout = timeout.into();
        self
    }

    /// Connects over TLS as `tls` says (feature `tls`): the same settings as a config
    /// file's `tls` table, read now (see [`backends::tls`](crate::backends::tls)). The
    /// manager's address must be a `rediss://` one, so that no connection is plain
    /// text. Two things follow the driver: a `ca_file` replaces the system's roots
    /// rather than adding to them, and a client certificate cannot be combined with
    /// [`Verify::Off`](crate::backends::tls::Verify::Off) (the driver would not send
    /// it), which is refused.
    ///
    /// ```no_run
    /// use stickypool::backends::redis::RedisManager;
    /// use stickypool::backends::tls::Tls;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = RedisManager::new("rediss://cache.internal:6380/")?.tls(&Tls {
    ///     ca_file: Some("/etc/ssl/cache-ca.pem".into()),
    ///     cert_file: Some("/etc/ssl/app.pem".into()),
    ///     key_file: Some("/etc/ssl/app.key".into()),
    ///     ..Tls::default()
    /// })?;
    /// let pool = stickypool::Pool::new(manager)?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(
        self,
        tls: &crate::backends::tls::Tls,
    ) -> Result<RedisManager, crate::backends::tls::TlsError> {
        use crate::backends::tls::{TlsError, Verify};
        use redis::{ClientTlsConfig, TlsCertificates};
        let info = self.client().get_connection_info().clone();
        let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() else {
            return Err(TlsError(format!(
                "TLS needs a `rediss://` address, not {}",
                info.addr()
            )));
        };
        let insecure = tls.verify == Verify::Off;
        if insecure && tls.cert_file.is_some() {
            // The driver's unverified mode builds its connector without the identity.
            return Err(TlsError(
                "the redis driver sends no client certificate when `verify` is \"off\": \
                 verify the server (\"ca\" or \"full\"), or leave out the certificate"
                    .into(),
            ));
        }
        let info = info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params: None,
        });
        let certificates = TlsCertificates {
            client_tls: tls.client_identity()?.map(|client| ClientTlsConfig {
                client_cert: client.cert_pem,
                client_key: client.key_pem,
            }),
            root_cert: tls.ca_pem()?,
        };
        let refused = |e: RedisError| TlsError(format!("the TLS settings were refused: {e}"));
        let mut client = Client::build_with_tls(info, certificates).map_err(refused)?;
        if tls.verify == Verify::Ca {
            let info = client.get_connection_info().clone();
            let mut addr = info.addr().clone();
            addr.set_danger_accept_invalid_hostnames(true);
            client = Client::open(info.set_addr(addr)).map_err(refused)?;
        }
        self.replace_client(client);
        Ok(self)
    }

    /// The client connections are opened from now.
    pub fn client(&self) -> Client {
        self.client.read().clone()
    }

    /// Changes where and as whom new connections connect (a URL or a
    /// [`ConnectionInfo`], as [`new`](RedisManager::new) takes it), while the pool
    /// runs. A `rediss://` address keeps the certificates given to
    /// [`tls`](RedisManager::tls). Open connections are not touched: follow with
    /// [`Pool::retire_all`](crate::Pool::retire_all). An address that does not parse
    /// leaves the manager as it was.
    pub fn set_url(&self, info: impl IntoConnectionInfo) -> RedisResult<()> {
        let mut info = info.into_connection_info()?;
        // A rotated address keeps the certificates `tls` gave, so it cannot quietly
        // fall back to the system's roots and no client certificate.
        if let (
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: None,
            },
            ConnectionAddr::TcpTls {
                tls_params: Some(params),
                ..
            },
        ) = (
            info.addr().clone(),
            self.client.read().get_connection_info().addr(),
        ) {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: Some(params.clone()),
            });
        }
        self.replace_client(Client::open(info)?);
        Ok(())
    }

    /// Changes the user (ACL) and password new connections authenticate with
    /// (credential rotation). Open connections keep theirs: follow with
    /// [`Pool::retire_all`](crate::Pool::retire_all).
    pub fn set_credentials(&self, user: Option<&str>, password: &str) -> RedisResult<()> {
        let info = self.client.read().get_connection_info().clone();
        let mut settings = info.redis_settings().clone().set_password(password);
        if let Some(user) = user {
            settings = settings.set_username(user);
        }
        self.replace_client(Client::open(info.set_redis_settings(settings))?);
        Ok(())
    }

    fn replace_client(&self, client: Client) {
        let db = client.get_connection_info().redis_settings().db();
        *self.client.write() = client;
        self.db.store(db, Ordering::Relaxed);
    }
}

impl From<Client> for RedisManager {
    fn from(client: Client) -> RedisManager {
        RedisManager::from_client(client)
    }
}

/// Prints an address, never the password or TLS material.
struct Addr<'a>(&'a ConnectionInfo);

impl fmt::Debug for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.0;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let redis = info.redis_settings();
        let mut s = f.debug_struct("Addr");
        s.field("addr", &format_args!("{}", info.addr()))
            .field("tls", &tls)
            .field("db", &redis.db())
            .field("username", &redis.username())
            .field("password", &redis.password().map(|_| "<redacted>"));
        s.finish()
    }
}

/// Shows where the manager connects, never the password.
impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisManager")
            .field("server", &Addr(self.client.read().get_connection_info()))
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl ManageConnection for RedisManager {
    type Connection = Connection;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Connection> {
        let client = self.client();
        let conn = match self.connect_timeout {
            Some(timeout) => client.get_connection_with_timeout(timeout)?,
            None => client.get_connection()?,
        };
        if self.response_timeout.is_some() {
            set_io_timeouts(&conn, self.response_timeout)?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> RedisResult<()> {
        ping(conn)
    }

    fn is_valid_within(&self, conn: &mut Connection, timeout: Duration) -> RedisResult<()> {
        check_within(conn, timeout, self.response_timeout, set_io_timeouts, ping)
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

/// A [`ManageConnection`] for a Redis Cluster ([`ClusterConnection`]).
///
/// Each pooled connection holds one socket per cluster node and follows the cluster's
/// slot map by itself (it reconnects to a node and refreshes the map on `MOVED`). See the
/// [module documentation](self) for an example and for what each hook does.
#[derive(Clone)]
pub struct RedisClusterManager {
    client: ClusterClient,
    nodes: Vec<ConnectionInfo>,
    /// The read/write timeout set on every connection; `None` inside means none.
    /// `None` outside: the client's own, which this manager cannot know.
    response_timeout: Option<Option<Duration>>,
}

impl RedisClusterManager {
    /// A manager for the cluster that these nodes belong to (some of them are enough;
    /// the rest is discovered). Every node must use the same user and password.
    ///
    /// Nothing is opened here; an error means an address could not be parsed or the
    /// nodes disagree on credentials.
    pub fn new<T: IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> RedisResult<RedisClusterManager> {
        let nodes = nodes
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<RedisResult<Vec<_>>>()?;
        let client = ClusterClient::new(nodes.clone())?;
        Ok(RedisClusterManager {
            client,
            nodes,
            response_timeout: Some(Some(DEFAULT_RESPONSE_TIMEOUT)),
        })
    }

    /// A manager opening its connections from this client, built with
    /// [`ClusterClient::builder`] for timeouts, retries, TLS or reads from replicas.
    /// The client's response timeout is kept (the driver's default is none), and the
    /// pool's checks are bounded only once [`response_timeout`](Self::response_timeout)
    /// is set here too, since the manager cannot read the client's.
    pub fn from_client(client: ClusterClient) -> RedisClusterManager {
        RedisClusterManager {
            client,
            nodes: Vec::new(),
            response_timeout: None,
        }
    }

    /// How long a reply from any node may take (read and write timeout of every node's
    /// socket); `None` for no limit. Default for [`new`](Self::new): 60 s
    /// ([`DEFAULT_RESPONSE_TIMEOUT`]). Connecting to a node is bounded by the driver
    /// (1 s per node unless the client sets `connection_timeout`).
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> RedisClusterManager {
        self.response_timeout = Some(timeout.into());
        self
    }

    /// The client connections are opened from.
    pub fn client(&self) -> &ClusterClient {
        &self.client
    }
}

impl From<ClusterClient> for RedisClusterManager {
    fn from(client: ClusterClient) -> RedisClusterManager {
        RedisClusterManager::from_client(client)
    }
}

/// Shows the initial nodes when the manager was made from them, never a password. (The
/// driver's `ClusterClient` keeps its nodes private, so a manager made from a client only
/// says so.)
impl fmt::Debug for RedisClusterManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RedisClusterManager");
        if self.nodes.is_empty() {
            s.field("nodes", &"<from ClusterClient>");
        } else {
            s.field("nodes", &self.nodes.iter().map(Addr).collect::<Vec<_>>());
        }
        match self.response_timeout {
            Some(timeout) => s.field("response_timeout", &timeout),
            None => s.field("response_timeout", &"<the client's>"),
        };
        s.finish()
    }
}

impl ManageConnection for RedisClusterManager {
    type Connection = ClusterConnection;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<ClusterConnection> {
        let conn = self.client.get_connection()?;
        if let Some(timeout) = self.response_timeout {
            conn.set_read_timeout(timeout)?;
            conn.set_write_timeout(timeout)?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut ClusterConnection) -> RedisResult<()> {
        ping(conn)
    }

    fn is_valid_within(&self, conn: &mut ClusterConnection, timeout: Duration) -> RedisResult<()> {
        // With the client's own timeout, which cannot be read, it could not be restored.
        let Some(response_timeout) = self.response_timeout else {
            return ping(conn);
        };
        let set = |c: &ClusterConnection, t| c.set_read_timeout(t).and(c.set_write_timeout(t));
        check_within(conn, timeout, response_timeout, set, ping)
    }

    fn has_broken(&self, conn: &mut ClusterConnection) -> bool {
        !conn.is_open()
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut ClusterConnection, action: ResetAction) -> RedisResult<()> {
        let all_nodes =
            |policy| RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, policy));
        match action {
            ResetAction::Keep => return Ok(()),
            ResetAction::Commit => {
                // Fails with "EXEC without MULTI" on every node without a transaction;
                // each node still gets the command, and a real connection problem shows
                // up again in the `DISCARD` below.
                if let Err(e) = conn.route_command(&redis::cmd("EXEC"), all_nodes(None)) {
                    log::trace!("EXEC on return: {e}");
                }
            }
            ResetAction::Rollback | ResetAction::Session => {}
        }
        // "Nested" on a node with an open transaction; ignored for the same reason.
        let _ = conn.route_command(&redis::cmd("MULTI"), all_nodes(None));
        match conn.route_command(
            &redis::cmd("DISCARD"),
            all_nodes(Some(ResponsePolicy::AllSucceeded)),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoPerm) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Sets the read and write timeout of a connection to one server.
pub(super) fn set_io_timeouts(conn: &Connection, timeout: Option<Duration>) -> RedisResult<()> {
    conn.set_read_timeout(timeout)?;
    conn.set_write_timeout(timeout)
}

/// The reset of a connection to one server (module docs); `Session` selects `db`.
pub(super) fn reset_server(conn: &mut Connection, action: ResetAction, db: i64) -> RedisResult<()> {
    let mut pipe = redis::pipe();
    match action {
        ResetAction::Keep => return Ok(()),
        ResetAction::Commit => {
            pipe.cmd("EXEC");
        }
        ResetAction::Rollback | ResetAction::Session => {}
    }
    pipe.cmd("MULTI").cmd("DISCARD");
    let select = action == ResetAction::Session;
    if select {
        pipe.cmd("SELECT").arg(db);
    }
    // Server errors come back as `Value::ServerError` items, I/O errors as `Err`.
    let replies: Vec<Value> = pipe.ignore_errors().query(conn)?;
    let mut replies = replies.into_iter();
    if action == ResetAction::Commit {
        log_exec_reply(replies.next());
    }
    let _multi = replies.next(); // `OK`, or "nested" when a transaction was open.
    check_discard(replies.next())?;
    if select {
        match replies.next() {
            Some(Value::ServerError(e)) if e.kind() != Some(ServerErrorKind::NoPerm) => {
                return Err(e.into());
            }
            Some(_) => {}
            None => return Err(missing_reply("SELECT")),
        }
    }
    Ok(())
}

/// `check` (a `PING`, say) with the socket timeouts lowered to `timeout` when the
/// connection's own (`own`) are longer, and restored afterwards; `set` sets read and
/// write timeouts.
pub(super) fn check_within<C: ConnectionLike>(
    conn: &mut C,
    timeout: Duration,
    own: Option<Duration>,
    set: impl Fn(&C, Option<Duration>) -> RedisResult<()>,
    check: impl Fn(&mut C) -> RedisResult<()>,
) -> RedisResult<()> {
    let Some(bound) = super::shorter_for_check(timeout, own) else {
        return check(conn);
    };
    set(conn, Some(bound))?;
    let checked = check(conn);
    checked.and(set(conn, own))
}

fn ping(conn: &mut impl ConnectionLike) -> RedisResult<()> {
    let pong: String = redis::cmd("PING").query(conn)?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "PING did not answer PONG",
            pong,
        )))
    }
}

fn missing_reply(command: &'static str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "no reply to a reset command",
        command.to_string(),
    ))
}

fn check_discard(reply: Option<Value>) -> RedisResult<()> {
    match reply {
        Some(Value::Okay) => Ok(()),
        Some(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoPerm) => Ok(()),
        Some(Value::ServerError(e)) => Err(e.into()),
        Some(other) => Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "DISCARD did not answer OK",
            format!("{other:?}"),
        ))),
        None => Err(missing_reply("DISCARD")),
    }
}

fn log_exec_reply(reply: Option<Value>) {
    match reply {
        // A transaction ran; its results belonged to nobody.
        Some(Value::Array(_)) => {}
        // No transaction was open.
        Some(Value::ServerError(e)) if e.details().is_some_and(|d| d.contains("without MULTI")) => {
        }
        Some(Value::Nil) => {
            log::warn!("commit on return: the open transaction was aborted by a watched key")
        }
        Some(Value::ServerError(e)) => log::warn!("commit on return failed: {e}"),
        other => log::warn!("commit on return: unexpected reply to EXEC: {other:?}"),
    }
}
