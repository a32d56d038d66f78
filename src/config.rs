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
//! * **Environment variables**: `${NAME}` in `url`, `urls`, `path` and `init` is
//!   replaced by the variable's value when the pools are built (not when the file is
//!   parsed, so the substituted text can never change the file's structure); `$$` is a
//!   literal `$`, and a `$` not followed by `{` is kept as is. A variable that is not
//!   set is an error naming it. Values substituted this way are treated as secrets:
//!   every error message is scrubbed of them, so an expanded URL with a password is
//!   never printed. (A TOML syntax error shows the offending line as written in the
//!   file, which is one more reason to keep passwords in variables.)
//! * **Backends and features.** The `config` feature does not turn the backends on:
//!   `backend = "mysql"` needs the `mysql` feature, `"redis"` and `"redis-cluster"` the
//!   `redis` feature, `"sqlite"` the `sqlite` feature. A file naming a backend whose
//!   feature is off parses, and building it fails with an error saying which feature to
//!   enable. This keeps a service that only uses Redis from compiling a MySQL driver.
//!
//! | Backend | Keys |
//! |---|---|
//! | `mysql` | `url` (`mysql://user:password@host:port/db?options`; timeouts as URL options, e.g. `?tcp_connect_timeout_ms=2000`) |
//! | `redis` | `url` (`redis://[user][:password@]host[:port][/db]`, `rediss://`, `redis+unix://`); optional `connect_timeout`, `response_timeout` (durations) |
//! | `redis-cluster` | `urls = ["redis://node1:6379", ...]`; optional `connect_timeout`, `response_timeout` |
//! | `sqlite` | `path = "file.db"` (relative to the working directory) or `memory = true`; optional `init` (SQL run on every new connection) |
//!
//! A service that keeps the pools inside its own configuration file can embed
//! [`PoolsConfig`] in its own `Deserialize` struct and pass it to
//! [`Pools::from_config`](crate::Pools::from_config).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::builder::Builder;
use crate::manager::{ManageConnection, ResetAction};

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
}

impl Backend {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Redis => "redis",
            Backend::RedisCluster => "redis-cluster",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The cargo feature of stickypool the backend needs.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Mysql => "mysql",
            Backend::Redis | Backend::RedisCluster => "redis",
            Backend::Sqlite => "sqlite",
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
    /// Where to connect (`mysql`, `redis`).
    #[serde(default)]
    pub url: Option<String>,
    /// The node URLs (`redis-cluster`).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// The database file (`sqlite`).
    #[serde(default)]
    pub path: Option<String>,
    /// An in-memory database shared by the pool's connections (`sqlite`).
    #[serde(default)]
    pub memory: Option<bool>,
    /// SQL run on every new connection (`sqlite`).
    #[serde(default)]
    pub init: Option<String>,
    /// Bound on opening a connection (`redis`, `redis-cluster`).
    #[serde(default)]
    connect_timeout: Option<DurationSetting>,
    /// Bound on each command's reply (`redis`, `redis-cluster`).
    #[serde(default)]
    response_timeout: Option<DurationSetting>,
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
        b
    }
}

/// A duration written as `"250ms"`, `"3s"`, `"10m"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DurationSetting(Duration);

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = DurationSetting;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"3s\", \"10m\" or \"1h\"")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationSetting, E> {
        parse_duration(s).map(DurationSetting).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<DurationSetting, E> {
        Err(E::custom(format!(
            "a duration needs a unit: write \"{n}s\" or \"{n}ms\""
        )))
    }
}

/// A setting that may be turned off with `"off"` or `false` (the builder's `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Off<T>(Option<T>);

impl Off<DurationSetting> {
    fn duration(self) -> Option<Duration> {
        self.0.map(|d| d.0)
    }
}

impl<'de> Deserialize<'de> for Off<DurationSetting> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Off<DurationSetting>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10m\", or \"off\" or false")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                if s.trim().eq_ignore_ascii_case("off") {
                    return Ok(Off(None));
                }
                DurationVisitor.visit_str(s).map(|d| Off(Some(d)))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                off_bool(b)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                DurationVisitor.visit_i64(n).map(|d| Off(Some(d)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Off<usize> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Off<usize>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or \"off\" or false")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                if s.trim().eq_ignore_ascii_case("off") {
                    return Ok(Off(None));
                }
                Err(E::invalid_value(de::Unexpected::Str(s), &self))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                off_bool(b)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                usize::try_from(n)
                    .map(|n| Off(Some(n)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

fn off_bool<T, E: de::Error>(b: bool) -> Result<Off<T>, E> {
    if b {
        Err(E::custom(
            "`true` is not a value here: give one, or \"off\"/false to turn it off",
        ))
    } else {
        Ok(Off(None))
    }
}

/// Parses a human-readable duration: one or more `<integer><unit>` parts with units
/// `ms`, `s`, `m`, `h`, `d`, for example `"250ms"`, `"3s"`, `"10m"`, `"1h30m"`. Spaces
/// between parts are allowed. A bare number, an unknown unit, a fraction or an overflow
/// is an error saying so.
///
/// ```
/// use std::time::Duration;
/// use stickypool::config::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: write e.g. \"3s\" or \"250ms\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{text}\": expected a number at \"{rest}\" \
                 (e.g. \"250ms\", \"3s\", \"10m\", \"1h\")"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit after {number} \
                     (use ms, s, m, h or d)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit \"{other}\" \
                     (use ms, s, m, h or d)"
                ));
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("invalid duration \"{text}\": too large"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
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

/// Expands `${VAR}` (and `$$`) in `value`, remembering substituted values as secrets.
pub(crate) fn expand(
    value: &str,
    alias: &str,
    key: &'static str,
    secrets: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(ConfigError::Invalid {
                    alias: alias.to_owned(),
                    key,
                    reason: "has a `${` without its closing `}` (write `$$` for a literal `$`)"
                        .into(),
                });
            };
            let var = &tail[..end];
            let valid = var.bytes().enumerate().all(|(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            });
            if var.is_empty() || !valid {
                return Err(ConfigError::Invalid {
                    alias: alias.to_owned(),
                    key,
                    reason: format!("has an invalid variable name `${{{var}}}`"),
                });
            }
            let Some(val) = std::env::var_os(var) else {
                return Err(ConfigError::MissingVariable {
                    alias: alias.to_owned(),
                    key,
                    var: var.to_owned(),
                });
            };
            let val = val.into_string().map_err(|_| ConfigError::Invalid {
                alias: alias.to_owned(),
                key,
                reason: format!("uses ${{{var}}}, whose value is not valid UTF-8"),
            })?;
            if !val.is_empty() {
                secrets.push(val.clone());
            }
            out.push_str(&val);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` with every secret (and its URL-encoded form) replaced by `***`.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        for form in [secret.clone(), percent_encode(secret)] {
            if !form.is_empty() && out.contains(&form) {
                out = out.replace(&form, "***");
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl PoolConfig {
    fn invalid(alias: &str, key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            alias: alias.to_owned(),
            key,
            reason: reason.into(),
        }
    }

    /// Checks that the backend's keys are there and no other backend's are.
    fn check_keys(&self, alias: &str) -> Result<(), ConfigError> {
        let given: [(&'static str, bool); 7] = [
            ("url", self.url.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("response_timeout", self.response_timeout.is_some()),
            ("urls", self.urls.is_some()),
            ("path", self.path.is_some()),
            ("memory", self.memory.is_some()),
            ("init", self.init.is_some()),
        ];
        let allowed: &[&str] = match self.backend {
            Backend::Mysql => &["url"],
            Backend::Redis => &["url", "connect_timeout", "response_timeout"],
            Backend::RedisCluster => &["urls", "connect_timeout", "response_timeout"],
            Backend::Sqlite => &["path", "memory", "init"],
        };
        for (key, present) in given {
            if present && !allowed.contains(&key) {
                return Err(Self::invalid(
                    alias,
                    key,
                    format!(
                        "is not a setting of backend \"{}\" (its keys: {})",
                        self.backend,
                        allowed.join(", ")
                    ),
                ));
            }
        }
        match self.backend {
            Backend::Mysql | Backend::Redis if self.url.is_none() => Err(Self::invalid(
                alias,
                "url",
                format!("is required for backend \"{}\"", self.backend),
            )),
            Backend::RedisCluster if self.urls.as_ref().is_none_or(Vec::is_empty) => {
                Err(Self::invalid(
                    alias,
                    "urls",
                    "is required for backend \"redis-cluster\" and must list at least one node",
                ))
            }
            Backend::Sqlite => match (&self.path, self.memory) {
                (Some(_), Some(true)) => Err(Self::invalid(
                    alias,
                    "memory",
                    "cannot be combined with `path`: give one of them",
                )),
                (None, None | Some(false)) => Err(Self::invalid(
                    alias,
                    "path",
                    "is required for backend \"sqlite\" (or `memory = true`)",
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Builds the pool: expands variables, makes the manager, builds with the
    /// settings (connecting `min_idle`).
    pub(crate) fn build(&self, alias: &str) -> Result<crate::registry::Entry, ConfigError> {
        self.check_keys(alias)?;
        let mut secrets = Vec::new();
        let result = self.build_backend(alias, &mut secrets);
        result.map_err(|e| match e {
            ConfigError::Build {
                alias,
                backend,
                reason,
            } => ConfigError::Build {
                alias,
                backend,
                reason: redact(&reason, &secrets),
            },
            other => other,
        })
    }

    // Without the backend features most of this is compiled out.
    #[allow(unused_variables, unreachable_code, clippy::ptr_arg)]
    fn build_backend(
        &self,
        alias: &str,
        secrets: &mut Vec<String>,
    ) -> Result<crate::registry::Entry, ConfigError> {
        let backend = self.backend;
        let failed = |reason: String| ConfigError::Build {
            alias: alias.to_owned(),
            backend,
            reason,
        };
        let missing = || ConfigError::FeatureMissing {
            alias: alias.to_owned(),
            backend,
        };
        let url = |secrets: &mut Vec<String>| -> Result<String, ConfigError> {
            expand(
                self.url.as_deref().unwrap_or_default(),
                alias,
                "url",
                secrets,
            )
        };
        match backend {
            Backend::Mysql => {
                #[cfg(feature = "mysql")]
                {
                    use crate::backends::mysql::MysqlManager;
                    let manager = MysqlManager::from_url(&url(secrets)?)
                        .map_err(|e| failed(format!("invalid `url`: {e}")))?;
                    let pool = self
                        .builder(alias)
                        .build(manager)
                        .map_err(|e| failed(e.to_string()))?;
                    return Ok(crate::registry::Entry::new(pool, "mysql"));
                }
                Err(missing())
            }
            Backend::Redis => {
                #[cfg(feature = "redis")]
                {
                    use crate::backends::redis::RedisManager;
                    let mut manager = RedisManager::new(url(secrets)?.as_str())
                        .map_err(|e| failed(format!("invalid `url`: {e}")))?;
                    if let Some(t) = self.connect_timeout {
                        manager = manager.connect_timeout(t.0);
                    }
                    if let Some(t) = self.response_timeout {
                        manager = manager.response_timeout(t.0);
                    }
                    let pool = self
                        .builder(alias)
                        .build(manager)
                        .map_err(|e| failed(e.to_string()))?;
                    return Ok(crate::registry::Entry::new(pool, "redis"));
                }
                Err(missing())
            }
            Backend::RedisCluster => {
                #[cfg(feature = "redis")]
                {
                    use crate::backends::redis::RedisClusterManager;
                    let urls = self
                        .urls
                        .iter()
                        .flatten()
                        .map(|u| expand(u, alias, "urls", secrets))
                        .collect::<Result<Vec<_>, _>>()?;
                    let manager =
                        if self.connect_timeout.is_none() && self.response_timeout.is_none() {
                            RedisClusterManager::new(urls.iter().map(String::as_str))
                        } else {
                            let mut client = ::redis::cluster::ClusterClient::builder(
                                urls.iter().map(String::as_str),
                            );
                            if let Some(t) = self.connect_timeout {
                                client = client.connection_timeout(t.0);
                            }
                            if let Some(t) = self.response_timeout {
                                client = client.response_timeout(t.0);
                            }
                            client.build().map(RedisClusterManager::from_client)
                        }
                        .map_err(|e| failed(format!("invalid `urls`: {e}")))?;
                    let pool = self
                        .builder(alias)
                        .build(manager)
                        .map_err(|e| failed(e.to_string()))?;
                    return Ok(crate::registry::Entry::new(pool, "redis-cluster"));
                }
                Err(missing())
            }
            Backend::Sqlite => {
                #[cfg(feature = "sqlite")]
                {
                    use crate::backends::sqlite::SqliteManager;
                    let mut manager = match &self.path {
                        Some(path) => SqliteManager::file(expand(path, alias, "path", secrets)?),
                        None => SqliteManager::memory(),
                    };
                    if let Some(init) = &self.init {
                        let sql = expand(init, alias, "init", secrets)?;
                        manager = manager.with_init(move |conn| conn.execute_batch(&sql));
                    }
                    let pool = self
                        .builder(alias)
                        .build(manager)
                        .map_err(|e| failed(e.to_string()))?;
                    return Ok(crate::registry::Entry::new(pool, "sqlite"));
                }
                Err(missing())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok(" 1m 30s "), Duration::from_secs(90));
        assert_eq!(ok("0s"), Duration::ZERO);
        for bad in [
            "",
            " ",
            "10",
            "s",
            "3 s",
            "1.5s",
            "-1s",
            "3sec",
            "3S",
            "abc",
            "1h30",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("3sec")
                .unwrap_err()
                .contains("unknown unit \"sec\"")
        );
    }

    #[test]
    fn expansion() {
        // SAFETY: only this test reads or writes these variables.
        unsafe { std::env::set_var("STICKYPOOL_CONFIG_TEST_PW", "p@ss word") };
        let mut secrets = Vec::new();
        let out = expand(
            "mysql://u:${STICKYPOOL_CONFIG_TEST_PW}@h/$$x$y",
            "main",
            "url",
            &mut secrets,
        )
        .unwrap();
        assert_eq!(out, "mysql://u:p@ss word@h/$x$y");
        assert_eq!(secrets, vec!["p@ss word".to_owned()]);
        assert_eq!(
            redact("bad url mysql://u:p%40ss%20word@h and p@ss word", &secrets),
            "bad url mysql://u:***@h and ***"
        );
        let err = expand(
            "${STICKYPOOL_CONFIG_TEST_UNSET}",
            "main",
            "url",
            &mut secrets,
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::MissingVariable { ref var, .. } if var == "STICKYPOOL_CONFIG_TEST_UNSET")
        );
        assert!(expand("${oops", "a", "url", &mut secrets).is_err());
        assert!(expand("${1X}", "a", "url", &mut secrets).is_err());
        assert!(expand("${}", "a", "url", &mut secrets).is_err());
    }
}
