//! MySQL and MariaDB through the [`mysql`](https://docs.rs/mysql) crate (feature `mysql`).
//!
//! [`MysqlManager`] opens a [`mysql::Conn`] per pool slot. Everything about how to
//! connect (host, port or socket, user, password, database, TLS through
//! [`SslOpts`](mysql::SslOpts), timeouts, init statements) is set on the driver's own
//! [`Opts`]/[`OptsBuilder`], so the driver's documentation applies unchanged.
//!
//! ```no_run
//! use std::time::Duration;
//! use mysql::prelude::Queryable;
//! use stickypool::backends::mysql::MysqlManager;
//! use stickypool::{Pool, ResetAction};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = MysqlManager::from_url("mysql://app:secret@127.0.0.1:3306/app")?;
//! let pool = Pool::builder()
//!     .max_size(16)
//!     .connection_timeout(Duration::from_secs(3))
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//!
//! let mut conn = pool.get()?;
//! let one: Option<u32> = conn.query_first("SELECT 1")?;
//! assert_eq!(one, Some(1));
//! # Ok(())
//! # }
//! ```
//!
//! With an [`OptsBuilder`], for TLS or timeouts:
//!
//! ```no_run
//! use std::time::Duration;
//! use mysql::OptsBuilder;
//! use stickypool::backends::mysql::MysqlManager;
//!
//! let opts = OptsBuilder::new()
//!     .ip_or_hostname(Some("db.internal"))
//!     .user(Some("app"))
//!     .pass(Some("secret"))
//!     .db_name(Some("app"))
//!     // Bound how long a connect or a query may block a thread.
//!     .tcp_connect_timeout(Some(Duration::from_secs(2)))
//!     .read_timeout(Some(Duration::from_secs(30)))
//!     .write_timeout(Some(Duration::from_secs(30)));
//! let manager = MysqlManager::new(opts);
//! ```
//!
//! `MysqlManager`'s `Debug` output never shows the password. The driver's own types do:
//! `mysql::Opts` and `mysql::Conn` derive `Debug` and print the options with the
//! password, so do not log a connection (or a pooled guard, whose `Debug` shows its
//! connection) with `{:?}`.
//!
//! The driver's own defaults have no connect, read or write timeout: a server that
//! stops answering without closing its sockets would block the calling thread until
//! the operating system gives up. So `MysqlManager` fills in what the options leave
//! unset: [`DEFAULT_CONNECT_TIMEOUT`] (10 s) to connect and [`DEFAULT_IO_TIMEOUT`]
//! (60 s) for each read and write, which also bounds the borrow-time check and the
//! keepalive ping. Change them with [`MysqlManager::connect_timeout`],
//! [`read_timeout`](MysqlManager::read_timeout) and
//! [`write_timeout`](MysqlManager::write_timeout) (`None` turns one off, for queries
//! that legitimately run longer), or in a config file with the `connect_timeout`,
//! `read_timeout` and `write_timeout` keys.
//!
//! ```
//! use std::time::Duration;
//! use stickypool::backends::mysql::{DEFAULT_IO_TIMEOUT, MysqlManager};
//!
//! let manager = MysqlManager::from_url("mysql://app:secret@127.0.0.1:3306/app")?;
//! assert_eq!(manager.opts().get_read_timeout(), Some(&DEFAULT_IO_TIMEOUT));
//! let reports = MysqlManager::from_url("mysql://app:secret@127.0.0.1:3306/app")?
//!     .read_timeout(Duration::from_secs(600))
//!     .write_timeout(None);
//! assert_eq!(reports.opts().get_write_timeout(), None);
//! # Ok::<(), mysql::Error>(())
//! ```
//!
//! # What the hooks do
//!
//! * [`is_valid`](ManageConnection::is_valid) selects a number that changes with every
//!   check, one round trip, and fails unless that number comes back: after a
//!   borrower gave up on a reply (a read timeout), its late reply would answer the
//!   next statement, a ping included, and the connection would stay one reply behind
//!   for good. With [`check_writable`](MysqlManager::check_writable) the same query
//!   asks whether the server accepts writes, and the check fails on a read-only server
//!   (a writer demoted by a failover: the Aurora case).
//! * [`has_broken`](ManageConnection::has_broken) always answers `false`. The driver
//!   keeps no public "this connection failed" state, and the only ways to learn more
//!   (a ping, or peeking at the socket) are I/O, which `has_broken` must not do. A dead
//!   connection is found instead by `is_valid` (test on check-out, keepalive) or by the
//!   reset on return, whose statement fails and makes the pool close the connection.
//!   See [below](#after-a-server-restart) for what that means for configuration.
//! * [`reset`](ManageConnection::reset): [`ResetAction::Commit`] sends `COMMIT`,
//!   [`ResetAction::Rollback`] sends `ROLLBACK`, [`ResetAction::Session`] calls
//!   [`Conn::reset`] (`COM_RESET_CONNECTION`, falling back to `COM_CHANGE_USER` on old
//!   servers), which rolls back, drops temporary tables and user variables, releases
//!   locks, and then re-runs the `init` statements of the options. Each is sent with
//!   the same numbered `SELECT` as the check, in the same round trip (after it, for
//!   `Session`), so a connection a reply behind fails its reset and is closed.
//!
//! ## Why `COMMIT`/`ROLLBACK` is always sent
//!
//! The server tells the client after every statement whether a transaction is open
//! (the `SERVER_STATUS_IN_TRANS` bit of the status flags in each OK packet), and the
//! `mysql` crate does record those flags, but in a private field of `Conn`: version 28
//! offers no accessor for them (only `no_backslash_escape`, derived from the same
//! field), and `Conn::session_state_changes` reports transaction state only when the
//! server is configured with `session_track_transaction_info`. So the manager cannot
//! tell a clean connection from one with an open transaction without asking the server,
//! and asking costs the same round trip as just sending `ROLLBACK`, which is harmless
//! when no transaction is open. Each return with `Commit` or `Rollback` therefore costs
//! one round trip; use [`ResetAction::Keep`] where the code always closes its
//! transactions itself (the driver's [`mysql::Transaction`] rolls back when dropped).

//!
//! # After a server restart
//!
//! When the server restarts, every pooled connection is dead, and since `has_broken`
//! cannot see it, something else must notice before the pool hands the connection out
//! again. A check on every borrow does (`check_on_borrow(Some(Duration::ZERO))`, and the
//! default in [`compat`](crate::compat)). With the default
//! [`check_on_borrow`](crate::Builder::check_on_borrow) of 500 ms a connection in
//! constant use skips that check inside the window, so add one of:
//!
//! * [`reset_on_return`](crate::Builder::reset_on_return) with
//!   [`ResetAction::Rollback`] (recommended, and what the example above does): the
//!   `ROLLBACK` on return fails on a dead connection, which is then closed. It also
//!   guarantees that no transaction leaks to the next borrower.
//! * [`test_on_check_in`](crate::Builder::test_on_check_in): a ping on every return.
//!
//! A borrower that sees an error for which
//! [`mysql::Error::is_connectivity_error`] is true can also close the connection
//! itself with [`PooledConnection::discard`](crate::PooledConnection::discard).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};
use parking_lot::RwLock;

use crate::manager::{ManageConnection, ResetAction};

/// A [`ManageConnection`] for MySQL and MariaDB connections ([`mysql::Conn`]).
///
/// See the [module documentation](self) for an example and for what each hook does.
pub struct MysqlManager {
    /// Read by every connect; replaced by `set_url` and `set_credentials` while the
    /// pool runs (connects are its only readers, so the lock is off the borrow path).
    opts: RwLock<Opts>,
    /// The read and write timeouts of `opts`, which those changes keep, for the
    /// check (which must not take the lock).
    io_timeouts: (Option<Duration>, Option<Duration>),
    /// The check also confirms the server accepts writes.
    writable: bool,
}

impl Clone for MysqlManager {
    fn clone(&self) -> MysqlManager {
        MysqlManager {
            opts: RwLock::new(self.opts()),
            io_timeouts: self.io_timeouts,
            writable: self.writable,
        }
    }
}

/// The connect timeout a [`MysqlManager`] uses when its options set none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The read and write timeout a [`MysqlManager`] uses when its options set none.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

impl MysqlManager {
    /// A manager connecting with these options: an [`Opts`], or an [`OptsBuilder`]
    /// carrying TLS ([`SslOpts`](mysql::SslOpts)), timeouts and init statements.
    /// Timeouts the options leave unset get the defaults (module docs).
    pub fn new(opts: impl Into<Opts>) -> MysqlManager {
        let opts: Opts = opts.into();
        let mut with_defaults = OptsBuilder::from_opts(opts.clone());
        if opts.get_tcp_connect_timeout().is_none() {
            with_defaults = with_defaults.tcp_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
        }
        if opts.get_read_timeout().is_none() {
            with_defaults = with_defaults.read_timeout(Some(DEFAULT_IO_TIMEOUT));
        }
        if opts.get_write_timeout().is_none() {
            with_defaults = with_defaults.write_timeout(Some(DEFAULT_IO_TIMEOUT));
        }
        MysqlManager::from_opts(with_defaults.into())
    }

    fn from_opts(opts: Opts) -> MysqlManager {
        let io_timeouts = (
            opts.get_read_timeout().copied(),
            opts.get_write_timeout().copied(),
        );
        MysqlManager {
            opts: RwLock::new(opts),
            io_timeouts,
            writable: false,
        }
    }

    /// Whether the check also confirms that the server accepts writes
    /// (`@@global.read_only` and `@@innodb_read_only` off), one more round trip. For a
    /// writer behind a failover address (an Aurora cluster endpoint, a proxy): after a
    /// failover, connections to the old writer, now read-only, fail their next check,
    /// are closed, and their replacements connect to the new writer. Default: false.
    pub fn check_writable(mut self, writable: bool) -> MysqlManager {
        self.writable = writable;
        self
    }

    /// How long opening a TCP connection may take; `None` for the operating system's
    /// limit.
    pub fn connect_timeout(self, timeout: impl Into<Option<Duration>>) -> MysqlManager {
        self.with(|b| b.tcp_connect_timeout(timeout.into()))
    }

    /// How long one read from the server may block (a query's reply, a ping); `None`
    /// for no limit.
    pub fn read_timeout(self, timeout: impl Into<Option<Duration>>) -> MysqlManager {
        self.with(|b| b.read_timeout(timeout.into()))
    }

    /// How long one write to the server may block; `None` for no limit.
    pub fn write_timeout(self, timeout: impl Into<Option<Duration>>) -> MysqlManager {
        self.with(|b| b.write_timeout(timeout.into()))
    }

    /// Connects over TLS as `tls` says (feature `tls`): the same settings as a config
    /// file's `tls` table, checked now (see [`backends::tls`](crate::backends::tls)).
    /// A server that does not offer TLS is refused, and the driver's switch to the
    /// server's unix socket on a loopback address (`prefer_socket`) is turned off, so
    /// the connection stays encrypted. A client certificate (`cert_file`,
    /// `key_file`) is refused: the driver's native-tls support takes one only as a
    /// PKCS#12 archive, through [`SslOpts`](mysql::SslOpts) in code.
    ///
    /// ```no_run
    /// use stickypool::backends::mysql::MysqlManager;
    /// use stickypool::backends::tls::Tls;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = MysqlManager::from_url("mysql://app:secret@db.internal/app")?.tls(&Tls {
    ///     ca_file: Some("/etc/ssl/db-ca.pem".into()),
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
    ) -> Result<MysqlManager, crate::backends::tls::TlsError> {
        use crate::backends::tls::{TlsError, Verify};
        if tls.cert_file.is_some() || tls.key_file.is_some() {
            return Err(TlsError(
                "a client certificate (`cert_file`, `key_file`) is not supported for MySQL: \
                 the driver's native-tls support takes one only as a PKCS#12 archive \
                 (mysql::SslOpts::with_client_identity, in code)"
                    .into(),
            ));
        }
        // Read and parsed now, so that a bad file fails here rather than at connect.
        tls.ca_pem()?;
        let ssl = mysql::SslOpts::default()
            .with_root_cert_path(tls.ca_file.clone())
            .with_danger_skip_domain_validation(tls.verify != Verify::Full)
            .with_danger_accept_invalid_certs(tls.verify == Verify::Off);
        Ok(self.with(|b| b.ssl_opts(ssl).prefer_socket(false)))
    }

    fn with(self, change: impl FnOnce(OptsBuilder) -> OptsBuilder) -> MysqlManager {
        let writable = self.writable;
        let opts = self.opts.into_inner();
        MysqlManager::from_opts(change(OptsBuilder::from_opts(opts)).into())
            .check_writable(writable)
    }

    /// The check: the connection answers, in step, and with `check_writable` the
    /// server accepts writes; one round trip.
    fn check(&self, conn: &mut Conn) -> Result<(), mysql::Error> {
        let read_only = if self.writable {
            ", @@global.read_only OR @@innodb_read_only"
        } else {
            ", 0"
        };
        if in_step(conn, "", read_only)? != 0 {
            return Err(server_error(
                // ER_OPTION_PREVENTS_STATEMENT, what a write would get.
                1290,
                "the server is read-only (@@read_only or @@innodb_read_only), and \
                 check_writable asks for one that accepts writes",
            ));
        }
        Ok(())
    }

    /// A manager connecting to a URL such as
    /// `mysql://user:password@host:3306/database?tcp_connect_timeout_ms=2000`. The
    /// query parameters the driver accepts are listed in [`Opts::from_url`].
    ///
    /// Nothing is opened here; an error means the URL could not be parsed.
    pub fn from_url(url: &str) -> Result<MysqlManager, mysql::Error> {
        Ok(MysqlManager::new(Opts::from_url(url)?))
    }

    /// The options connections are opened with now.
    pub fn opts(&self) -> Opts {
        self.opts.read().clone()
    }

    /// Changes the user and password new connections log in with, while the pool runs
    /// (credential rotation). Open connections keep theirs: follow with
    /// [`Pool::retire_all`](crate::Pool::retire_all) to replace them as they come back.
    pub fn set_credentials(&self, user: &str, password: &str) {
        let mut opts = self.opts.write();
        let changed = OptsBuilder::from_opts(opts.clone())
            .user(Some(user))
            .pass(Some(password));
        *opts = changed.into();
    }

    /// Changes where and as whom new connections connect, from a URL as
    /// [`from_url`](MysqlManager::from_url) takes it; the manager's connect, read and
    /// write timeouts stay as they are, and so does its TLS unless the URL sets its
    /// own (`require_ssl`). Open connections are not
    /// touched: follow with [`Pool::retire_all`](crate::Pool::retire_all). A URL that
    /// does not parse leaves the manager as it was.
    pub fn set_url(&self, url: &str) -> Result<(), mysql::Error> {
        let parsed = Opts::from_url(url)?;
        let mut opts = self.opts.write();
        let mut next = OptsBuilder::from_opts(parsed.clone());
        if parsed.get_ssl_opts().is_none() && opts.get_ssl_opts().is_some() {
            // A rotated URL must not quietly turn TLS off.
            next = next
                .ssl_opts(opts.get_ssl_opts().cloned())
                .prefer_socket(opts.get_prefer_socket());
        }
        let next = next
            .tcp_connect_timeout(opts.get_tcp_connect_timeout())
            .read_timeout(opts.get_read_timeout().copied())
            .write_timeout(opts.get_write_timeout().copied());
        *opts = next.into();
        Ok(())
    }
}

impl From<Opts> for MysqlManager {
    fn from(opts: Opts) -> MysqlManager {
        MysqlManager::new(opts)
    }
}

impl From<OptsBuilder> for MysqlManager {
    fn from(opts: OptsBuilder) -> MysqlManager {
        MysqlManager::new(opts)
    }
}

/// Shows where the manager connects, never the password (the driver's own `Opts`
/// prints it, so it is not used here).
impl fmt::Debug for MysqlManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &*self.opts.read();
        f.debug_struct("MysqlManager")
            .field("host", &o.get_ip_or_hostname())
            .field("port", &o.get_tcp_port())
            .field("socket", &o.get_socket())
            .field("user", &o.get_user())
            .field("password", &o.get_pass().map(|_| "<redacted>"))
            .field("db_name", &o.get_db_name())
            .field("tls", &o.get_ssl_opts().is_some())
            .field("connect_timeout", &o.get_tcp_connect_timeout())
            .field("read_timeout", &o.get_read_timeout())
            .field("write_timeout", &o.get_write_timeout())
            .field("check_writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl ManageConnection for MysqlManager {
    type Connection = Conn;
    type Error = mysql::Error;

    fn connect(&self) -> Result<Conn, mysql::Error> {
        Conn::new(self.opts())
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), mysql::Error> {
        self.check(conn)
    }

    fn is_valid_within(&self, conn: &mut Conn, timeout: Duration) -> Result<(), mysql::Error> {
        let (read, write) = self.io_timeouts;
        let bound = super::shorter_for_check(timeout, read)
            .or_else(|| super::shorter_for_check(timeout, write));
        let Some(bound) = bound else {
            return self.check(conn);
        };
        set_socket_timeouts(conn, Some(bound), Some(bound))?;
        let checked = self.check(conn);
        checked.and(set_socket_timeouts(conn, read, write))
    }

    fn has_broken(&self, _conn: &mut Conn) -> bool {
        // See the module docs: the driver exposes nothing that answers this without I/O.
        false
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut Conn, action: ResetAction) -> Result<(), mysql::Error> {
        match action {
            ResetAction::Keep => Ok(()),
            ResetAction::Commit => in_step(conn, "COMMIT; ", "").map(drop),
            ResetAction::Rollback => in_step(conn, "ROLLBACK; ", "").map(drop),
            ResetAction::Session => {
                conn.reset()?;
                in_step(conn, "", "").map(drop)
            }
        }
    }
}

/// Sent with every check and reset, so that each expects an answer of its own.
static NONCE: AtomicU64 = AtomicU64::new(1);

/// Runs `{before}SELECT <nonce>{also}` (one round trip: the driver allows several
/// statements in one query) and returns the value of `also` (0 if none). Fails unless
/// the answer carries this nonce: a connection whose borrower gave up on a reply (a
/// read timeout) reads that late reply as the answer to its next statement, and the
/// driver cannot tell, so a plain `ROLLBACK` or ping would pass on a connection that
/// stays a reply behind, and hand the next borrower the answers meant for the one
/// before (`a_connection_a_reply_behind_is_closed`).
fn in_step(conn: &mut Conn, before: &str, also: &str) -> Result<u64, mysql::Error> {
    let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
    let mut result = conn.query_iter(format!("{before}SELECT {nonce}{also}"))?;
    let mut answer = None;
    while let Some(set) = result.iter() {
        for row in set {
            let row = row?;
            answer = Some((row.get::<u64, _>(0), row.get::<u64, _>(1)));
        }
    }
    match answer {
        Some((Some(seen), value)) if seen == nonce => Ok(value.unwrap_or(0)),
        _ => Err(server_error(
            // CR_COMMANDS_OUT_OF_SYNC
            2014,
            "the connection is out of step with the server (a reply it gave up on \
             arrived late), so it is closed",
        )),
    }
}

/// An error of the driver's type, for what the manager finds itself.
fn server_error(code: u16, message: &str) -> mysql::Error {
    mysql::Error::MySqlError(mysql::MySqlError {
        state: "HY000".into(),
        code,
        message: message.into(),
    })
}

/// Sets the read and write timeouts of the connection's socket. The driver sets them
/// once, when it connects, and has no setter; the socket is the driver's, so this goes
/// through its file descriptor.
#[cfg(unix)]
fn set_socket_timeouts(
    conn: &Conn,
    read: Option<Duration>,
    write: Option<Duration>,
) -> Result<(), mysql::Error> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor is the open socket of `conn`, which is borrowed for the
    // whole lifetime of `fd` and is neither closed nor replaced meanwhile; `SockRef`
    // only calls `setsockopt` on it and never closes it.
    let fd = unsafe { BorrowedFd::borrow_raw(conn.as_raw_fd()) };
    let socket = socket2::SockRef::from(&fd);
    socket.set_read_timeout(read)?;
    socket.set_write_timeout(write)?;
    Ok(())
}

/// Elsewhere the check keeps the connection's own timeouts.
#[cfg(not(unix))]
fn set_socket_timeouts(
    _: &Conn,
    _: Option<Duration>,
    _: Option<Duration>,
) -> Result<(), mysql::Error> {
    Ok(())
}
