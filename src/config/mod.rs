//! Pools declared in a TOML file (feature `toml`), or in any format serde reads
//! (feature `serde`): one `[pools.<alias>]` table per pool, with its backend, where to connect and every [`Builder`] setting under the
//! builder method's name.
//!
//! ```toml
//! [pools.main]
//! backend = "mysql"
//! url = "mysql://app:${DB_PASSWORD}@127.0.0.1:3306/app"
//! max_size = 16
//! min_idle = 4
//! connection_timeout = "3s"
//! reset_on_return = "rollback"
//!
//! [pools.cache]
//! backend = "redis"
//! url = "redis://127.0.0.1:6379/0"
//!
//! [pools.local]
//! backend = "sqlite"
//! path = "data/app.db"
//! init = "PRAGMA journal_mode = WAL;"
//! ```
//!
//! [`Pools::from_toml_file`](crate::Pools::from_toml_file) reads such a file and builds
//! every pool with [`Builder::build`], which opens `min_idle` connections before it
//! returns; so a service with a wrong password or an unreachable server fails at start,
//! with a [`ConfigError`] naming the alias, rather than on its first request.
//!
//! # Rules
//!
//! * **Strict.** An unknown key, a value of the wrong type, an unknown backend or reset
//!   action, or a duration that does not parse is an error carrying the line and column
//!   (from the TOML parser) and the key. Nothing is silently ignored.
//! * **Durations** are strings of a number and a unit, `ms`, `s`, `m`, `h` or `d`, and
//!   may chain: `"250ms"`, `"3s"`, `"10m"`, `"1h30m"`. A bare number is refused (which
//!   unit?). Settings whose builder method takes an `Option` (`check_on_borrow`,
//!   `idle_timeout`, `max_lifetime`, `keepalive_interval`, `leak_detection_threshold`,
//!   `max_waiters`, `fair_after`, `validation_timeout`) also accept `"off"` or `false`
//!   for `None`. A missing key keeps the builder's
//!   default.
//! * **Environment variables**: `${NAME}` in `url`, `urls`, `path`, `init`,
//!   `master_password` and `tls`'s file names is
//!   replaced by the variable's value when the pools are built (not when the file is
//!   parsed, so the substituted text can never change the file's structure); `$$` is a
//!   literal `$`, and a `$` not followed by `{` is kept as is. A variable that is not
//!   set is an error naming it. Values substituted this way are treated as secrets:
//!   every error message is scrubbed of them, so an expanded URL with a password is
//!   never printed. (A TOML syntax error shows the offending line as written in the
//!   file, which is one more reason to keep passwords in variables.)
//! * **Backends and features.** The `toml` and `serde` features do not turn the backends on:
//!   `backend = "mysql"` needs the `mysql` feature, `"redis"` and `"redis-cluster"` the
//!   `redis` feature, `"sqlite"` the `sqlite` feature, `"postgres"` the `postgres` feature,
//!   `"redis-sentinel"` the `redis` feature. A file naming a backend whose
//!   feature is off parses, and building it fails with an error saying which feature to
//!   enable. This keeps a service that only uses Redis from compiling a MySQL driver.
//!
//! | Backend | Keys |
//! |---|---|
//! | `mysql` | `url` (`mysql://user:password@host:port/db?options`); optional `connect_timeout` (duration, default 10 s), `read_timeout` and `write_timeout` (duration or `"off"`, default 60 s), `tls` |
//! | `redis` | `url` (`redis://[user][:password@]host[:port][/db]`, `rediss://`, `redis+unix://`); optional `connect_timeout`, `response_timeout` (durations), `tls` |
//! | `redis-cluster` | `urls = ["redis://node1:6379", ...]`; optional `connect_timeout`, `response_timeout` |
//! | `sqlite` | `path = "file.db"` (relative to the working directory) or `memory = true`; optional `init` (SQL run on every new connection), `busy_timeout` |
//! | `postgres` | `url` (`postgres://user:password@host:port/db?options` or `host=... user=...`); optional `connect_timeout` (default 10 s), `statement_timeout` (duration or `"off"`, default the server's), `tcp_user_timeout` (default 60 s), `tls` |
//! | `redis-sentinel` | `urls = ["redis://sentinel1:26379", ...]` (the sentinels), `service` (the monitored master's name); optional `master_password`, `db`, `connect_timeout`, `response_timeout` |
//!
//! `tls = { ca_file = "...", cert_file = "...", key_file = "...", verify = "full" }`
//! (feature `tls`; every field optional) encrypts a `postgres`, `mysql` or `redis`
//! pool: see [`backends::tls`](crate::backends::tls). Without it a pool is plain text.
//!
//! A service that keeps the pools inside its own configuration file can embed
//! [`PoolsConfig`] in its own `Deserialize` struct and pass it to
//! [`Pools::from_config`](crate::Pools::from_config).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

mod build;
mod env;
mod values;

pub use values::{DurationSetting, Off, parse_duration};

use crate::builder::Builder;
use crate::manager::{ManageConnection, ResetAction};
use crate::registry::Pools;

/// A manager type for running the builder's checks on a table; never connects.
struct CheckOnly;

impl ManageConnection for CheckOnly {
    type Connection = ();
    type Error = std::io::Error;
    fn connect(&self) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("not a real manager"))
    }
    fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut ()) -> bool {
        false
    }
}

/// Every pool of a file, by alias: the value of the `pools` table.
///
/// Each pool's settings are checked as the builder checks them while the text is
/// parsed (`max_size = 0`, `min_idle` above `max_size`, a zero timeout ...), so the
/// error has the line and column, and no pool is built from a file with a bad one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct PoolsConfig {
    /// The pools by alias.
    #[serde(deserialize_with = "checked_pools")]
    pub pools: BTreeMap<String, PoolConfig>,
}

/// The pools, each checked as it is read (so a range error has its position).
fn checked_pools<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, PoolConfig>, D::Error> {
    let checked = BTreeMap::<String, Checked>::deserialize(d)?;
    Ok(checked.into_iter().map(|(alias, c)| (alias, c.0)).collect())
}

struct Checked(PoolConfig);

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = PoolConfig::deserialize(d)?;
        config.check().map_err(serde::de::Error::custom)?;
        Ok(Checked(config))
    }
}

impl PoolsConfig {
    /// Parses (and checks) a TOML text with a `pools` table without building anything,
    /// for a `--check-config` command or to adjust settings before
    /// [`Pools::from_config`](crate::Pools::from_config).
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_str(text: &str) -> Result<PoolsConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: None,
            message: e.to_string(),
        })?;
        Ok(file.pools)
    }
}

/// The whole file: only a `pools` table.
#[cfg(feature = "toml")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) pools: PoolsConfig,
}

/// The backend of a pool (`backend = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Backend {
    /// `"mysql"`: [`MysqlManager`](crate::backends) (feature `mysql`).
    Mysql,
    /// `"redis"`: `RedisManager` (feature `redis`).
    Redis,
    /// `"redis-cluster"`: `RedisClusterManager` (feature `redis`).
    RedisCluster,
    /// `"sqlite"`: `SqliteManager` (feature `sqlite`).
    Sqlite,
    /// `"postgres"`: `PostgresManager` (feature `postgres`).
    Postgres,
    /// `"redis-sentinel"`: `RedisSentinelManager` (feature `redis`).
    RedisSentinel,
}

impl Backend {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
            Backend::RedisCluster => "redis-cluster",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::RedisSentinel => "redis-sentinel",
        }
    }

    /// The cargo feature of stickypool the backend needs.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Redis | Backend::RedisCluster | Backend::RedisSentinel => "redis",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[pools.<alias>]` table. Every setting is optional and keeps the [`Builder`]'s
/// default when missing (`None` here); settings that can be turned off are
/// [`Off`], where `Off(None)` is `"off"`. Readable and settable in code before
/// [`Pools::from_config`](crate::Pools::from_config), and serializable back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Which backend.
    pub backend: Backend,
    /// Where to connect (`mysql`, `redis`, `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The node URLs (`redis-cluster`), or the sentinels' URLs (`redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// The name of the service whose master to connect to (`redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The master's password (`redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_password: Option<String>,
    /// The database connections select (`redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<i64>,
    /// The database file (`sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An in-memory database shared by the pool's connections (`sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    /// SQL run on every new connection (`sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Bound on opening a connection (`mysql`, `redis`, `redis-cluster`, `postgres`,
    /// `redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<DurationSetting>,
    /// Bound on each command's reply (`redis`, `redis-cluster`, `redis-sentinel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout: Option<DurationSetting>,
    /// Bound on each read from the server, or `"off"` (`mysql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Off<DurationSetting>>,
    /// Bound on each write to the server, or `"off"` (`mysql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_timeout: Option<Off<DurationSetting>>,
    /// How long a statement waits for a locked database (`sqlite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_timeout: Option<DurationSetting>,
    /// The server-side `statement_timeout`, or `"off"` (`postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<Off<DurationSetting>>,
    /// How long sent data may stay unacknowledged (`postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_user_timeout: Option<DurationSetting>,
    /// TLS from files (`postgres`, `mysql`, `redis`; feature `tls`); `None` is plain
    /// text. See [`backends::tls`](crate::backends::tls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::backends::tls::Tls>,
    /// [`Builder::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// [`Builder::max_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// [`Builder::min_idle`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_idle: Option<u32>,
    /// [`Builder::connection_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout: Option<DurationSetting>,
    /// [`Builder::check_on_borrow`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_on_borrow: Option<Off<DurationSetting>>,
    /// [`Builder::test_on_check_in`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_on_check_in: Option<bool>,
    /// [`Builder::idle_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Off<DurationSetting>>,
    /// [`Builder::max_lifetime`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<Off<DurationSetting>>,
    /// [`Builder::reap_interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reap_interval: Option<DurationSetting>,
    /// [`Builder::keepalive_interval`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_interval: Option<Off<DurationSetting>>,
    /// [`Builder::reset_on_return`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_on_return: Option<ResetAction>,
    /// [`Builder::leak_detection_threshold`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_detection_threshold: Option<Off<DurationSetting>>,
    /// [`Builder::max_waiters`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiters: Option<Off<usize>>,
    /// [`Builder::fair_after`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_after: Option<Off<DurationSetting>>,
    /// [`Builder::circuit_breaker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<Off<DurationSetting>>,
    /// [`Builder::validation_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_timeout: Option<Off<DurationSetting>>,
}

impl PoolConfig {
    /// A table for `backend` with every setting left at its default, to fill in code.
    ///
    /// ```
    /// use stickypool::config::{Backend, DurationSetting, PoolConfig, PoolsConfig};
    /// use std::time::Duration;
    ///
    /// let mut main = PoolConfig::new(Backend::Sqlite);
    /// main.memory = Some(true);
    /// main.max_size = Some(4);
    /// main.connection_timeout = Some(DurationSetting(Duration::from_millis(1500)));
    /// let mut pools = PoolsConfig::default();
    /// pools.pools.insert("main".into(), main);
    /// let json = serde_json::to_string(&pools).unwrap();
    /// assert_eq!(
    ///     json,
    ///     r#"{"main":{"backend":"sqlite","memory":true,"max_size":4,"connection_timeout":"1500ms"}}"#
    /// );
    /// ```
    pub fn new(backend: Backend) -> PoolConfig {
        PoolConfig {
            backend,
            url: None,
            urls: None,
            service: None,
            master_password: None,
            db: None,
            path: None,
            memory: None,
            init: None,
            connect_timeout: None,
            response_timeout: None,
            read_timeout: None,
            write_timeout: None,
            busy_timeout: None,
            statement_timeout: None,
            tcp_user_timeout: None,
            tls: None,
            name: None,
            max_size: None,
            min_idle: None,
            connection_timeout: None,
            check_on_borrow: None,
            test_on_check_in: None,
            idle_timeout: None,
            max_lifetime: None,
            reap_interval: None,
            keepalive_interval: None,
            reset_on_return: None,
            leak_detection_threshold: None,
            max_waiters: None,
            fair_after: None,
            circuit_breaker: None,
            validation_timeout: None,
        }
    }

    /// The builder's range checks on this table's settings (`build` runs them again).
    fn check(&self) -> Result<(), String> {
        self.builder::<CheckOnly>("")
            .check_settings()
            .map_err(|e| e.to_string())
    }

    /// A builder with this table's settings, named `name` or else `alias`.
    pub fn builder<M: ManageConnection>(&self, alias: &str) -> Builder<M> {
        let mut b = Builder::new().name(self.name.as_deref().unwrap_or(alias));
        if let Some(v) = self.max_size {
            b = b.max_size(v);
        }
        if let Some(v) = self.min_idle {
            b = b.min_idle(Some(v));
        }
        if let Some(v) = self.connection_timeout {
            b = b.connection_timeout(v.0);
        }
        if let Some(v) = self.check_on_borrow {
            b = b.check_on_borrow(v.duration());
        }
        if let Some(v) = self.test_on_check_in {
            b = b.test_on_check_in(v);
        }
        if let Some(v) = self.idle_timeout {
            b = b.idle_timeout(v.duration());
        }
        if let Some(v) = self.max_lifetime {
            b = b.max_lifetime(v.duration());
        }
        if let Some(v) = self.reap_interval {
            b = b.reap_interval(v.0);
        }
        if let Some(v) = self.keepalive_interval {
            b = b.keepalive_interval(v.duration());
        }
        if let Some(v) = self.reset_on_return {
            b = b.reset_on_return(v);
        }
        if let Some(v) = self.leak_detection_threshold {
            b = b.leak_detection_threshold(v.duration());
        }
        if let Some(v) = self.max_waiters {
            b = b.max_waiters(v.0);
        }
        if let Some(v) = self.fair_after {
            b = b.fair_after(v.duration());
        }
        if let Some(v) = self.circuit_breaker {
            b = b.circuit_breaker(v.duration());
        }
        if let Some(v) = self.validation_timeout {
            b = b.validation_timeout(v.duration());
        }
        b
    }
}

/// An error reading, checking or building the pools of a configuration.
///
/// Every variant that concerns one pool names its alias. Messages never contain the
/// values of substituted environment variables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the pool configuration {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (in the message too, so it is not also the `source()`).
        error: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a bad value. The message
    /// carries the line and column.
    #[error("invalid pool configuration{}: {message}", file.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if read from one.
        file: Option<PathBuf>,
        /// The parser's message, with line, column and the offending key.
        message: String,
    },
    /// A key is missing, misplaced for the backend, or has an invalid value.
    #[error("pool `{alias}`: `{key}` {reason}")]
    Invalid {
        /// The pool's alias.
        alias: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `${VAR}` names an environment variable that is not set.
    #[error(
        "pool `{alias}`: `{key}` uses ${{{var}}}, but the environment variable {var} is not set"
    )]
    MissingVariable {
        /// The pool's alias.
        alias: String,
        /// The key whose value uses it.
        key: &'static str,
        /// The variable.
        var: String,
    },
    /// The backend's cargo feature is not enabled.
    #[error("pool `{alias}`: backend \"{backend}\" needs stickypool's `{}` cargo feature", backend.feature())]
    FeatureMissing {
        /// The pool's alias.
        alias: String,
        /// The backend.
        backend: Backend,
    },
    /// The pool could not be started (bad URL, unreachable server, bad credentials,
    /// invalid setting).
    #[error("pool `{alias}` ({backend}) could not be started: {reason}")]
    Build {
        /// The pool's alias.
        alias: String,
        /// The backend.
        backend: Backend,
        /// What went wrong, with substituted secrets removed.
        reason: String,
    },
}

impl ConfigError {
    /// The alias of the pool the error is about, if it is about one.
    pub fn alias(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { alias, .. }
            | ConfigError::MissingVariable { alias, .. }
            | ConfigError::FeatureMissing { alias, .. }
            | ConfigError::Build { alias, .. } => Some(alias),
            _ => None,
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl Pools {
    /// Reads a TOML file and builds every pool in it; see [`crate::config`].
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Pools, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Pools::parse(&text, Some(path))
    }

    /// Builds every pool of a TOML text; see [`crate::config`].
    #[cfg(feature = "toml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "toml")))]
    pub fn from_toml_str(text: &str) -> Result<Pools, ConfigError> {
        Pools::parse(text, None)
    }

    #[cfg(feature = "toml")]
    fn parse(text: &str, file: Option<&std::path::Path>) -> Result<Pools, ConfigError> {
        let config = PoolsConfig::from_toml_str(text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                file: file.map(ToOwned::to_owned),
                message,
            },
            other => other,
        })?;
        Pools::from_config(&config)
    }

    /// Builds every pool of an already parsed configuration (for a `pools` table
    /// inside a service's own configuration struct). Pools are built in alias order;
    /// at the first failure the ones already built are closed and the error returned.
    pub fn from_config(config: &PoolsConfig) -> Result<Pools, ConfigError> {
        let mut pools = Pools::new();
        for (alias, pool) in &config.pools {
            let entry = pool.build(alias)?;
            // The aliases are the keys of a map, so none is taken twice.
            pools.insert_unique(alias.clone(), entry);
        }
        Ok(pools)
    }
}
