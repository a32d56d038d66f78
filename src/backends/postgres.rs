//! PostgreSQL through the [`postgres`](https://docs.rs/postgres) crate (feature
//! `postgres`).
//!
//! [`PostgresManager`] opens a [`postgres::Client`] per pool slot, from the driver's own
//! [`postgres::Config`] (a URL such as `postgres://user:password@host:5432/db` or a
//! `key=value` string parses into one) and a TLS connector: [`NoTls`] by default, or any
//! [`MakeTlsConnect`] such as `postgres-native-tls` or `postgres-openssl`'s, exactly as
//! `postgres::Config::connect` takes it.
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
//!   option, so the `Session` reset keeps it). The server cancels a statement that runs longer.
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
//!   its reply may still arrive, so it cannot be reused.
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

type NoticeCallback = Arc<dyn Fn(DbError) + Send + Sync>;

/// A [`ManageConnection`] for PostgreSQL connections ([`postgres::Client`]).
///
/// `T` is the TLS connector, [`NoTls`] unless given. See the [module
/// documentation](self) for an example and for what each hook does.
#[derive(Clone)]
pub struct PostgresManager<T = NoTls> {
    config: Config,
    /// The config's own startup options, before `statement_timeout` was added.
    options: Option<String>,
    statement_timeout: Option<Duration>,
    tls: T,
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
    pub fn new(mut config: Config, tls: T) -> PostgresManager<T> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
        }
        let options = config.get_options().map(str::to_owned);
        let manager = PostgresManager {
            config,
            options,
            statement_timeout: None,
            tls,
        };
        manager.notice_callback(|notice| log::info!("{}: {}", notice.severity(), notice.message()))
    }

    /// How long opening a connection may take, authentication included.
    pub fn connect_timeout(mut self, timeout: Duration) -> PostgresManager<T> {
        self.config.connect_timeout(timeout);
        self
    }

    /// The server-side `statement_timeout` of every session; `None` (the default)
    /// keeps the server's setting.
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> PostgresManager<T> {
        self.statement_timeout = timeout.into();
        let own = self.options.as_deref().unwrap_or_default();
        let options = match self.statement_timeout {
            // Whole milliseconds, at least 1: 0 would mean no limit to the server.
            Some(t) => format!("{own} -c statement_timeout={}", t.as_millis().max(1)),
            None => own.to_owned(),
        };
        self.config.options(options.trim_start());
        self
    }

    /// How long sent data may stay unacknowledged before the connection fails
    /// (`TCP_USER_TIMEOUT`, Linux).
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> PostgresManager<T> {
        self.config.tcp_user_timeout(timeout);
        self
    }

    /// Where the server's notices (`RAISE NOTICE`, warnings) go, except the warning
    /// for a `ROLLBACK` or `COMMIT` outside a transaction, which the reset on return
    /// causes on every clean connection.
    pub fn notice_callback(
        mut self,
        callback: impl Fn(DbError) + Send + Sync + 'static,
    ) -> PostgresManager<T> {
        let callback: NoticeCallback = Arc::new(callback);
        self.config.notice_callback(move |notice| {
            if notice.code() != &SqlState::NO_ACTIVE_SQL_TRANSACTION {
                callback(notice);
            }
        });
        self
    }

    /// The config every connection is opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Shows where the manager connects, never the password.
impl<T> fmt::Debug for PostgresManager<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("PostgresManager")
            .field("hosts", &c.get_hosts())
            .field("ports", &c.get_ports())
            .field("user", &c.get_user())
            .field("password", &c.get_password().map(|_| "<redacted>"))
            .field("dbname", &c.get_dbname())
            .field("ssl_mode", &c.get_ssl_mode())
            .field("connect_timeout", &c.get_connect_timeout())
            .field("statement_timeout", &self.statement_timeout)
            .field("tcp_user_timeout", &c.get_tcp_user_timeout())
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
        self.config.connect(self.tls.clone())
    }

    fn is_valid(&self, conn: &mut Client) -> Result<(), Error> {
        conn.is_valid(CHECK_TIMEOUT)
    }

    fn is_valid_within(&self, conn: &mut Client, timeout: Duration) -> Result<(), Error> {
        conn.is_valid(timeout)
    }

    fn has_broken(&self, conn: &mut Client) -> bool {
        conn.is_closed()
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut Client, action: ResetAction) -> Result<(), Error> {
        match action {
            ResetAction::None => Ok(()),
            ResetAction::Commit => conn.batch_execute("COMMIT"),
            ResetAction::Rollback => conn.batch_execute("ROLLBACK"),
            ResetAction::Session => conn.batch_execute(super::POSTGRES_SESSION_RESET),
        }
    }
}
