//! PostgreSQL through the [`postgres`](https://docs.rs/postgres) crate (feature
//! `postgres`).
//!
//! [`PostgresManager`] opens a [`postgres::Client`] per pool slot, from the driver's own
//! [`postgres::Config`] (a URL such as `postgres://user:password@host:5432/db` or a
//! `key=value` string parses into one) and a TLS connector: [`NoTls`] by default, or any
//! [`MakeTlsConnect`] such as `postgres-native-tls` or `postgres-openssl`'s, exactly as
//! `postgres::Config::connect` takes it. With the `tls` feature,
//! `PostgresManager::tls` takes TLS from files instead (a CA, a client certificate, how
//! much to verify; see [`backends::tls`](crate::backends::tls)), as the config file's
//! `tls` table does.
//!
//! ```no_run
//! use std::time::Duration;
//! use stickypool::backends::postgres::PostgresManager;
//! use stickypool::{Pool, ResetAction};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = PostgresManager::from_url("postgres://app:secret@127.0.0.1:5432/app")?
//!     .statement_timeout(Duration::from_secs(30));
//! let pool = Pool::builder()
//!     .max_size(16)
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//!
//! let mut conn = pool.get()?;
//! let row = conn.query_one("SELECT 1 + 1", &[])?;
//! assert_eq!(row.get::<_, i32>(0), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Timeouts
//!
//! * **Connect**: [`connect_timeout`](PostgresManager::connect_timeout), default
//!   [`DEFAULT_CONNECT_TIMEOUT`] (10 s) when the config sets none.
//! * **Statements**: [`statement_timeout`](PostgresManager::statement_timeout) sets the
//!   server's `statement_timeout` for every session this manager opens (as a startup
//!   option, so the `Session` reset keeps it; PgBouncer refuses or drops it, see
//!   below). The server cancels a statement that runs longer.
//! * **Reads from a dead peer**: [`tcp_user_timeout`](PostgresManager::tcp_user_timeout),
//!   default [`DEFAULT_TCP_USER_TIMEOUT`] (60 s): a connection whose sent data stays
//!   unacknowledged that long (host gone, network cut) fails instead of waiting for the
//!   kernel's retransmission limit of about 15 minutes. The driver has no socket read
//!   timeout, so a server process that is alive but stopped (the kernel still
//!   acknowledges) is bounded only where the pool asks: the borrow-time check and the
//!   keepalive use [`Client::is_valid`] with the pool's
//!   [`validation_timeout`](crate::Builder::validation_timeout). The reset on return
//!   and the borrower's own queries wait as long as such a server does.
//!
//! # What the hooks do
//!
//! * [`is_valid`](ManageConnection::is_valid): an empty query (one round trip), bounded
//!   by the pool's validation timeout. A connection whose check timed out is closed:
//!   its reply may still arrive, so it cannot be reused. With
//!   `target_session_attrs=read-write` in the config (a multi-host URL such as
//!   `postgres://app@db-1,db-2/app?target_session_attrs=read-write` connects to the
//!   primary), the check also confirms that the session can still write, one more
//!   round trip: after a failover, connections to the demoted primary fail their next
//!   check, are closed, and their replacements connect to the new primary. See
//!   "Failover" below.
//! * [`has_broken`](ManageConnection::has_broken): [`Client::is_closed`], a field read.
//! * [`reset`](ManageConnection::reset): [`ResetAction::Rollback`] sends `ROLLBACK`,
//!   which ends whatever the borrower left: an open transaction, a *failed* one
//!   (`BEGIN; SELECT 1/0`, in which every later statement would fail with "current
//!   transaction is aborted"), or nothing (the server then only warns).
//!   [`ResetAction::Commit`] sends `COMMIT` (on a failed transaction the server rolls
//!   back instead; either way none is left open). [`ResetAction::Session`] sends
//!   `ROLLBACK` and what `DISCARD ALL` does (temporary tables, cursors, `LISTEN`s,
//!   advisory locks, `SET`s and `SET ROLE`, cached plans and sequence state all go)
//!   except `DEALLOCATE ALL`: the driver caches prepared statements of its own (the
//!   lookups of user-defined types) that would then fail. Statements prepared through
//!   [`Client::prepare`] or SQL `PREPARE` therefore survive the reset.
//!   Each costs one round trip: the driver does not expose the transaction status the
//!   server reports after every statement, so the reset cannot skip a clean
//!   connection.
//!
//! # Failover
//!
//! Give every host and ask for the primary, as libpq does:
//! `postgres://app@db-1:5432,db-2:5432/app?target_session_attrs=read-write`. The
//! driver connects to the first host that accepts writes, and with read-write asked for
//! the check confirms it on every check, so after a failover the connections to the
//! demoted primary are closed at their next check and replaced by connections to the
//! new one (`asked_for_a_primary_the_check_closes_a_read_only_session`). A borrow
//! checks a connection whose last check is older than the pool's
//! [`check_on_borrow`](crate::Builder::check_on_borrow) (500 ms by default), so a
//! writer may meet the old primary for up to that long plus a connect; a
//! [`keepalive_interval`](crate::Builder::keepalive_interval) checks idle connections
//! too. Without `target_session_attrs=read-write` the check only pings.
//!
//! Measured with a streaming standby promoted under four writers
//! (`tests/backend_failover.rs`): the first write was acknowledged 0-23 ms after the
//! promotion (52 and 157 ms on a loaded machine), no write failed after it, and every
//! acknowledged row was on the new primary exactly once. The outage (0.3-0.5 s) was
//! inside the circuit breaker's grace, so borrowers waited instead of failing; the only
//! failed writes were those in flight when the old primary stopped.
//!
//! # Behind PgBouncer
//!
//! What works through PgBouncer 1.18 (`tests/backend_pgbouncer.rs`):
//!
//! | | session pool mode | transaction pool mode |
//! |---|---|---|
//! | `ResetAction::Rollback` | works | works: use it |
//! | `ResetAction::Session` | works | do not use: the server connection is shared, so it resets the session state other clients see |
//! | [`Client::prepare`], then `query` with it | works | fails (`prepared statement "s0" does not exist`) once another client holds that server connection |
//! | [`statement_timeout`](PostgresManager::statement_timeout) (a startup option) | refused at connect (`unsupported startup parameter: options`); with PgBouncer's `ignore_startup_parameters = options`, silently dropped | the same |
//! | the borrow-time check | works | works, but a dead server connection is invisible to it: PgBouncer keeps the client and moves it to another server connection |
//!
//! So in transaction mode: reset with `Rollback`, keep statements unnamed or prepare
//! them inside the transaction that uses them, and bound statements on the server
//! (`ALTER ROLE app SET statement_timeout = '30s'`) or per transaction (`SET LOCAL
//! statement_timeout`) rather than with `statement_timeout`. In session mode everything
//! above works except `statement_timeout`: use `ALTER ROLE`, or a `SET
//! statement_timeout` in a customizer's `on_acquire` (it runs again after a `Session`
//! reset).
//!
//! The warning PostgreSQL sends for a `ROLLBACK` or `COMMIT` outside a transaction
//! (SQLSTATE `25P01`) would otherwise be logged on every clean return, so the manager's
//! notice callback drops it; other notices are logged at `info` level as the driver's
//! default does, or go to [`PostgresManager::notice_callback`].
//!
//! The manager's `Debug` output never shows the password, and the driver's errors
//! (wrong password, refused connection, bad URL) do not contain it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use postgres::config::TargetSessionAttrs;
use postgres::error::{DbError, SqlState};
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::{Client, Config, Error, NoTls, Socket};

use crate::manager::{ManageConnection, ResetAction};

/// The connect timeout of a [`PostgresManager`] when its config sets none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP user timeout of a [`PostgresManager`] when its config sets none.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`ManageConnection::is_valid`] waits when called without the pool's
/// validation timeout (from r2d2-style code).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails, naming the reason, on a session that cannot write: a standby, or a primary
/// demoted by a failover. `transaction_read_only` is on in both (and under
/// `default_transaction_read_only`). A `DO` block, because a plain query cannot raise.
const READ_WRITE_CHECK: &str = "DO $$ BEGIN IF current_setting('transaction_read_only') = 'on' \
     THEN RAISE EXCEPTION 'the server is read-only, and target_session_attrs=read-write \
     asks for a primary'; END IF; END $$";

type NoticeCallback = Arc<dyn Fn(DbError) + Send + Sync>;

/// A [`ManageConnection`] for PostgreSQL connections ([`postgres::Client`]).
///
/// `T` is the TLS connector, [`NoTls`] unless given. See the [module
/// documentation](self) for an example and for what each hook does.
pub struct PostgresManager<T = NoTls> {
    /// Where to connect, as given; the manager's own settings are applied on top at
    /// each connect (`effective`). Replaced by `set_url` and `set_credentials` while
    /// the pool runs: connects are its only readers, so the lock is off the borrow
    /// path.
    base: RwLock<Config>,
    connect_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    tcp_user_timeout: Option<Duration>,
    notices: NoticeCallback,
    tls: T,
    /// Set by [`tls`](PostgresManager::tls); used instead of `tls` when set.
    #[cfg(feature = "tls")]
    files_tls: Option<postgres_native_tls::MakeTlsConnector>,
}

impl PostgresManager<NoTls> {
    /// A manager for the server at `url`, without TLS: a URL
    /// (`postgres://user:password@host:port/db?connect_timeout=2`) or a `key=value`
    /// connection string, as [`postgres::Config`] parses them.
    ///
    /// Nothing is opened here; an error means the URL could not be parsed.
    pub fn from_url(url: &str) -> Result<PostgresManager<NoTls>, Error> {
        Ok(PostgresManager::new(url.parse()?, NoTls))
    }
}

impl<T> PostgresManager<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// A manager connecting with this config and TLS connector. Timeouts the config
    /// leaves unset get the defaults (module docs); its notice callback is replaced
    /// (see [`notice_callback`](Self::notice_callback)).
    pub fn new(config: Config, tls: T) -> PostgresManager<T> {
        PostgresManager {
            base: RwLock::new(config),
            connect_timeout: None,
            statement_timeout: None,
            tcp_user_timeout: None,
            notices: Arc::new(|notice| log::info!("{}: {}", notice.severity(), notice.message())),
            tls,
            #[cfg(feature = "tls")]
            files_tls: None,
        }
    }

    /// Connects over TLS as `tls` says (feature `tls`), in place of the connector
    /// `T`: the same settings as a config file's `tls` table, read now (see
    /// [`backends::tls`](crate::backends::tls)). The connection is then always
    /// encrypted: the config's `sslmode` becomes `require`, and a config with
    /// `sslmode=disable` is refused.
    ///
    /// ```no_run
    /// use stickypool::backends::postgres::PostgresManager;
    /// use stickypool::backends::tls::Tls;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = PostgresManager::from_url("postgres://app:secret@db.internal/app")?.tls(&Tls {
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
        mut self,
        tls: &crate::backends::tls::Tls,
    ) -> Result<PostgresManager<T>, crate::backends::tls::TlsError> {
        if self.base.read().get_ssl_mode() == postgres::config::SslMode::Disable {
            return Err(crate::backends::tls::TlsError(
                "the URL's `sslmode=disable` turns TLS off: remove it, or the TLS settings".into(),
            ));
        }
        self.files_tls = Some(postgres_native_tls::MakeTlsConnector::new(tls.connector()?));
        Ok(self)
    }

    /// How long opening a connection may take, authentication included.
    pub fn connect_timeout(mut self, timeout: Duration) -> PostgresManager<T> {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The server-side `statement_timeout` of every session; `None` (the default)
    /// keeps the server's setting.
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> PostgresManager<T> {
        self.statement_timeout = timeout.into();
        self
    }

    /// How long sent data may stay unacknowledged before the connection fails
    /// (`TCP_USER_TIMEOUT`, Linux).
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> PostgresManager<T> {
        self.tcp_user_timeout = Some(timeout);
        self
    }

    /// Where the server's notices (`RAISE NOTICE`, warnings) go, except the warning
    /// for a `ROLLBACK` or `COMMIT` outside a transaction, which the reset on return
    /// causes on every clean connection.
    pub fn notice_callback(
        mut self,
        callback: impl Fn(DbError) + Send + Sync + 'static,
    ) -> PostgresManager<T> {
        self.notices = Arc::new(callback);
        self
    }

    /// The config connections are opened with now: the one given, with the manager's
    /// timeouts, `statement_timeout` and notice callback.
    pub fn config(&self) -> Config {
        self.effective()
    }

    /// Changes the user and password new connections log in with, while the pool runs
    /// (credential rotation). Open connections keep theirs: follow with
    /// [`Pool::retire_all`](crate::Pool::retire_all) to replace them as they come back.
    pub fn set_credentials(&self, user: &str, password: impl AsRef<[u8]>) {
        let mut base = self.base.write();
        base.user(user);
        base.password(password);
    }

    /// Changes where and as whom new connections connect (a new primary, new
    /// credentials), from a URL or `key=value` string as
    /// [`from_url`](PostgresManager::from_url) takes it; the manager's own settings
    /// stay. Open connections are not touched: follow with
    /// [`Pool::retire_all`](crate::Pool::retire_all). A URL that does not parse leaves
    /// the manager as it was.
    pub fn set_url(&self, url: &str) -> Result<(), Error> {
        *self.base.write() = url.parse()?;
        Ok(())
    }

    /// The base config with the manager's settings on top.
    fn effective(&self) -> Config {
        let mut config = self.base.read().clone();
        match self.connect_timeout {
            Some(t) => config.connect_timeout(t),
            None if config.get_connect_timeout().is_none() => {
                config.connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            }
            None => &mut config,
        };
        match self.tcp_user_timeout {
            Some(t) => config.tcp_user_timeout(t),
            None if config.get_tcp_user_timeout().is_none() => {
                config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT)
            }
            None => &mut config,
        };
        if let Some(t) = self.statement_timeout {
            let own = config.get_options().unwrap_or_default();
            // Whole milliseconds, at least 1: 0 would mean no limit to the server.
            let options = format!("{own} -c statement_timeout={}", t.as_millis().max(1));
            config.options(options.trim_start());
        }
        #[cfg(feature = "tls")]
        if self.files_tls.is_some() && config.get_ssl_mode() == postgres::config::SslMode::Prefer {
            // Asked for TLS: never fall back to plain text.
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        let notices = self.notices.clone();
        config.notice_callback(move |notice| {
            if notice.code() != &SqlState::NO_ACTIVE_SQL_TRANSACTION {
                notices(notice);
            }
        });
        config
    }
}

impl<T: Clone> Clone for PostgresManager<T> {
    fn clone(&self) -> PostgresManager<T> {
        PostgresManager {
            base: RwLock::new(self.base.read().clone()),
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            tcp_user_timeout: self.tcp_user_timeout,
            notices: self.notices.clone(),
            tls: self.tls.clone(),
            #[cfg(feature = "tls")]
            files_tls: self.files_tls.clone(),
        }
    }
}

impl<T> PostgresManager<T> {
    fn uses_files_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.files_tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// Shows where the manager connects, never the password.
impl<T> fmt::Debug for PostgresManager<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.base.read();
        f.debug_struct("PostgresManager")
            .field("hosts", &c.get_hosts())
            .field("ports", &c.get_ports())
            .field("user", &c.get_user())
            .field("password", &c.get_password().map(|_| "<redacted>"))
            .field("dbname", &c.get_dbname())
            .field("ssl_mode", &c.get_ssl_mode())
            .field("tls_from_files", &self.uses_files_tls())
            .field(
                "connect_timeout",
                &self.connect_timeout.or(c.get_connect_timeout().copied()),
            )
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "tcp_user_timeout",
                &self.tcp_user_timeout.or(c.get_tcp_user_timeout().copied()),
            )
            .finish_non_exhaustive()
    }
}

impl<T> ManageConnection for PostgresManager<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    type Connection = Client;
    type Error = Error;

    fn connect(&self) -> Result<Client, Error> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.files_tls {
            return self.effective().connect(tls.clone());
        }
        self.effective().connect(self.tls.clone())
    }

    fn is_valid(&self, conn: &mut Client) -> Result<(), Error> {
        self.is_valid_within(conn, CHECK_TIMEOUT)
    }

    fn is_valid_within(&self, conn: &mut Client, timeout: Duration) -> Result<(), Error> {
        conn.is_valid(timeout)?;
        if self.base.read().get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
            // The server answered within the bound just now; this one more round trip
            // fails on a server that has become read-only (a demoted primary).
            conn.batch_execute(READ_WRITE_CHECK)?;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut Client, action: ResetAction) -> Result<(), Error> {
        match action {
            ResetAction::Keep => Ok(()),
            ResetAction::Commit => conn.batch_execute("COMMIT"),
            ResetAction::Rollback => conn.batch_execute("ROLLBACK"),
            ResetAction::Session => conn.batch_execute(super::POSTGRES_SESSION_RESET),
        }
    }
}
