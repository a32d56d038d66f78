//! Pools declared in a TOML file (feature `config`): one `[pools.<alias>]` table per
//! pool, with its backend, where to connect and every [`Builder`] setting under the
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
//!   unit?). Settings whose builder method takes an `Option` (`idle_timeout`,
//!   `max_lifetime`, `keepalive_interval`, `leak_detection_threshold`, `max_waiters`)
//!   also accept `"off"` or `false` for `None`. A missing key keeps the builder's
//!   default.
//! * **Environment variables**: `${NAME}` in `url`, `urls`, `path`, `init` and
//!   `master_password` is
//!   replaced by the variable's value when the pools are built (not when the file is
//!   parsed, so the substituted text can never change the file's structure); `$$` is a
//!   literal `$`, and a `$` not followed by `{` is kept as is. A variable that is not
//!   set is an error naming it. Values substituted this way are treated as secrets:
//!   every error message is scrubbed of them, so an expanded URL with a password is
//!   never printed. (A TOML syntax error shows the offending line as written in the
//!   file, which is one more reason to keep passwords in variables.)
//! * **Backends and features.** The `config` feature does not turn the backends on:
//!   `backend = "mysql"` needs the `mysql` feature, `"redis"` and `"redis-cluster"` the
//!   `redis` feature, `"sqlite"` the `sqlite` feature, `"postgres"` the `postgres` feature,
//!   `"redis-sentinel"` the `redis-sentinel` feature. A file naming a backend whose
//!   feature is off parses, and building it fails with an error saying which feature to
//!   enable. This keeps a service that only uses Redis from compiling a MySQL driver.
//!
//! | Backend | Keys |
//! |---|---|
//! | `mysql` | `url` (`mysql://user:password@host:port/db?options`); optional `connect_timeout` (duration, default 10 s), `read_timeout` and `write_timeout` (duration or `"off"`, default 60 s) |
//! | `redis` | `url` (`redis://[user][:password@]host[:port][/db]`, `rediss://`, `redis+unix://`); optional `connect_timeout`, `response_timeout` (durations) |
//! | `redis-cluster` | `urls = ["redis://node1:6379", ...]`; optional `connect_timeout`, `response_timeout` |
//! | `sqlite` | `path = "file.db"` (relative to the working directory) or `memory = true`; optional `init` (SQL run on every new connection), `busy_timeout` |
//! | `postgres` | `url` (`postgres://user:password@host:port/db?options` or `host=... user=...`); optional `connect_timeout` (default 10 s), `statement_timeout` (duration or `"off"`, default the server's), `tcp_user_timeout` (default 60 s) |
//! | `redis-sentinel` | `urls = ["redis://sentinel1:26379", ...]` (the sentinels), `service` (the monitored master's name); optional `master_password`, `db`, `connect_timeout`, `response_timeout` |
//!
//! A service that keeps the pools inside its own configuration file can embed
//! [`PoolsConfig`] in its own `Deserialize` struct and pass it to
//! [`Pools::from_config`](crate::Pools::from_config).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

mod build;
mod env;
mod values;

pub use values::parse_duration;
use values::{DurationSetting, Off};

use crate::builder::Builder;
use crate::manager::{ManageConnection, ResetAction};
use crate::registry::Pools;

/// Every pool of a file, by alias: the value of the `pools` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct PoolsConfig {
    /// The pools by alias.
    pub pools: BTreeMap<String, PoolConfig>,
}

impl PoolsConfig {
    /// Parses (and checks) a TOML text with a `pools` table without building anything,
    /// for a `--check-config` command or to adjust settings before
    /// [`Pools::from_config`](crate::Pools::from_config).
    pub fn from_toml_str(text: &str) -> Result<PoolsConfig, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: None,
            message: e.to_string(),
        })?;
        Ok(file.pools)
    }
}

/// The whole file: only a `pools` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub(crate) pools: PoolsConfig,
}

/// The backend of a pool (`backend = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
    /// `"redis-sentinel"`: `RedisSentinelManager` (feature `redis-sentinel`).
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
            Backend::Redis | Backend::RedisCluster => "redis",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::RedisSentinel => "redis-sentinel",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How returned connections are reset (`reset_on_return`), as in [`ResetAction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ResetSetting {
    None,
    Commit,
    Rollback,
    Session,
}

impl From<ResetSetting> for ResetAction {
    fn from(r: ResetSetting) -> ResetAction {
        match r {
            ResetSetting::None => ResetAction::None,
            ResetSetting::Commit => ResetAction::Commit,
            ResetSetting::Rollback => ResetAction::Rollback,
            ResetSetting::Session => ResetAction::Session,
        }
    }
}

/// One `[pools.<alias>]` table. Every setting is optional and keeps the [`Builder`]'s
/// default when missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Which backend.
    pub backend: Backend,
    /// Where to connect (`mysql`, `redis`, `postgres`).
    #[serde(default)]
    pub url: Option<String>,
    /// The node URLs (`redis-cluster`), or the sentinels' URLs (`redis-sentinel`).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// The name of the service whose master to connect to (`redis-sentinel`).
    #[serde(default)]
    pub service: Option<String>,
    /// The master's password (`redis-sentinel`).
    #[serde(default)]
    pub master_password: Option<String>,
    /// The database connections select (`redis-sentinel`).
    #[serde(default)]
    pub db: Option<i64>,
    /// The database file (`sqlite`).
    #[serde(default)]
    pub path: Option<String>,
    /// An in-memory database shared by the pool's connections (`sqlite`).
    #[serde(default)]
    pub memory: Option<bool>,
    /// SQL run on every new connection (`sqlite`).
    #[serde(default)]
    pub init: Option<String>,
    /// Bound on opening a connection (`mysql`, `redis`, `redis-cluster`, `postgres`,
    /// `redis-sentinel`).
    #[serde(default)]
    connect_timeout: Option<DurationSetting>,
    /// Bound on each command's reply (`redis`, `redis-cluster`, `redis-sentinel`).
    #[serde(default)]
    response_timeout: Option<DurationSetting>,
    /// Bound on each read from the server, or `"off"` (`mysql`).
    #[serde(default)]
    read_timeout: Option<Off<DurationSetting>>,
    /// Bound on each write to the server, or `"off"` (`mysql`).
    #[serde(default)]
    write_timeout: Option<Off<DurationSetting>>,
    /// How long a statement waits for a locked database (`sqlite`).
    #[serde(default)]
    busy_timeout: Option<DurationSetting>,
    /// The server-side `statement_timeout`, or `"off"` (`postgres`).
    #[serde(default)]
    statement_timeout: Option<Off<DurationSetting>>,
    /// How long sent data may stay unacknowledged (`postgres`).
    #[serde(default)]
    tcp_user_timeout: Option<DurationSetting>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    max_size: Option<u32>,
    #[serde(default)]
    min_idle: Option<u32>,
    #[serde(default)]
    connection_timeout: Option<DurationSetting>,
    #[serde(default)]
    test_on_check_out: Option<bool>,
    #[serde(default)]
    validation_bypass: Option<DurationSetting>,
    #[serde(default)]
    test_on_check_in: Option<bool>,
    #[serde(default)]
    idle_timeout: Option<Off<DurationSetting>>,
    #[serde(default)]
    max_lifetime: Option<Off<DurationSetting>>,
    #[serde(default)]
    reap_interval: Option<DurationSetting>,
    #[serde(default)]
    keepalive_interval: Option<Off<DurationSetting>>,
    #[serde(default)]
    reset_on_return: Option<ResetSetting>,
    #[serde(default)]
    leak_detection_threshold: Option<Off<DurationSetting>>,
    #[serde(default)]
    max_waiters: Option<Off<usize>>,
    #[serde(default)]
    circuit_breaker: Option<bool>,
    #[serde(default)]
    validation_timeout: Option<DurationSetting>,
    #[serde(default)]
    idle_timeout_spares_min_idle: Option<bool>,
}

impl PoolConfig {
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
        if let Some(v) = self.test_on_check_out {
            b = b.test_on_check_out(v);
        }
        if let Some(v) = self.validation_bypass {
            b = b.validation_bypass(v.0);
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
            b = b.reset_on_return(v.into());
        }
        if let Some(v) = self.leak_detection_threshold {
            b = b.leak_detection_threshold(v.duration());
        }
        if let Some(v) = self.max_waiters {
            b = b.max_waiters(v.0);
        }
        if let Some(v) = self.circuit_breaker {
            b = b.circuit_breaker(v);
        }
        if let Some(v) = self.validation_timeout {
            b = b.validation_timeout(v.0);
        }
        if let Some(v) = self.idle_timeout_spares_min_idle {
            b = b.idle_timeout_spares_min_idle(v);
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
    #[error("cannot read the pool configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
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

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl Pools {
    /// Reads a TOML file and builds every pool in it; see [`crate::config`].
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Pools, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Pools::parse(&text, Some(path))
    }

    /// Builds every pool of a TOML text; see [`crate::config`].
    pub fn from_toml_str(text: &str) -> Result<Pools, ConfigError> {
        Pools::parse(text, None)
    }

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
