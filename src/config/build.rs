//! Building a pool from its table: checking the backend's keys, expanding variables,
//! making the manager and building with the settings.

use super::env::{expand, redact};
use super::{Backend, ConfigError, PoolConfig};

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
        let given: [(&'static str, bool); 16] = [
            ("url", self.url.is_some()),
            ("connect_timeout", self.connect_timeout.is_some()),
            ("response_timeout", self.response_timeout.is_some()),
            ("read_timeout", self.read_timeout.is_some()),
            ("write_timeout", self.write_timeout.is_some()),
            ("urls", self.urls.is_some()),
            ("path", self.path.is_some()),
            ("memory", self.memory.is_some()),
            ("init", self.init.is_some()),
            ("busy_timeout", self.busy_timeout.is_some()),
            ("statement_timeout", self.statement_timeout.is_some()),
            ("tcp_user_timeout", self.tcp_user_timeout.is_some()),
            ("service", self.service.is_some()),
            ("master_password", self.master_password.is_some()),
            ("db", self.db.is_some()),
            ("tls", self.tls.is_some()),
        ];
        let allowed: &[&str] = match self.backend {
            Backend::Mysql => &[
                "url",
                "connect_timeout",
                "read_timeout",
                "write_timeout",
                "tls",
            ],
            Backend::Redis => &["url", "connect_timeout", "response_timeout", "tls"],
            Backend::RedisCluster => &["urls", "connect_timeout", "response_timeout"],
            Backend::Sqlite => &["path", "memory", "init", "busy_timeout"],
            Backend::Postgres => &[
                "url",
                "connect_timeout",
                "statement_timeout",
                "tcp_user_timeout",
                "tls",
            ],
            Backend::RedisSentinel => &[
                "urls",
                "service",
                "master_password",
                "db",
                "connect_timeout",
                "response_timeout",
            ],
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
            Backend::Mysql | Backend::Redis | Backend::Postgres if self.url.is_none() => {
                Err(Self::invalid(
                    alias,
                    "url",
                    format!("is required for backend \"{}\"", self.backend),
                ))
            }
            Backend::RedisSentinel if self.urls.as_ref().is_none_or(Vec::is_empty) => {
                Err(Self::invalid(
                    alias,
                    "urls",
                    "is required for backend \"redis-sentinel\" and must list at least one sentinel",
                ))
            }
            Backend::RedisSentinel if self.service.as_deref().is_none_or(str::is_empty) => {
                Err(Self::invalid(
                    alias,
                    "service",
                    "is required for backend \"redis-sentinel\": the name of the monitored master",
                ))
            }
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
        if cfg!(not(feature = "tls")) && self.tls.is_some() {
            return Err(Self::invalid(
                alias,
                "tls",
                "needs stickypool's `tls` cargo feature",
            ));
        }
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

    /// `urls` with variables expanded.
    #[allow(dead_code)] // without the backend features
    fn expanded_urls(
        &self,
        alias: &str,
        secrets: &mut Vec<String>,
    ) -> Result<Vec<String>, ConfigError> {
        self.urls
            .iter()
            .flatten()
            .map(|u| expand(u, alias, "urls", secrets))
            .collect()
    }

    /// The `tls` table, with variables expanded in its file names.
    #[cfg(feature = "tls")]
    fn expanded_tls(
        &self,
        alias: &str,
        secrets: &mut Vec<String>,
    ) -> Result<Option<crate::backends::tls::Tls>, ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let mut path = |p: &Option<std::path::PathBuf>| -> Result<_, ConfigError> {
            p.as_ref()
                .map(|p| match p.to_str() {
                    Some(text) => expand(text, alias, "tls", secrets).map(Into::into),
                    None => Ok(p.clone()),
                })
                .transpose()
        };
        Ok(Some(crate::backends::tls::Tls {
            ca_file: path(&tls.ca_file)?,
            cert_file: path(&tls.cert_file)?,
            key_file: path(&tls.key_file)?,
            verify: tls.verify,
        }))
    }

    /// Applies the `tls` table with the manager's own `tls` method.
    #[cfg(feature = "tls")]
    #[allow(dead_code)] // without the backend features
    fn with_tls<M>(
        &self,
        alias: &str,
        secrets: &mut Vec<String>,
        manager: M,
        apply: impl FnOnce(M, &crate::backends::tls::Tls) -> Result<M, crate::backends::tls::TlsError>,
    ) -> Result<M, ConfigError> {
        match self.expanded_tls(alias, secrets)? {
            Some(tls) => {
                apply(manager, &tls).map_err(|e| Self::invalid(alias, "tls", e.to_string()))
            }
            None => Ok(manager),
        }
    }

    /// Builds the pool with this table's settings (opening `min_idle`).
    #[allow(dead_code)] // without the backend features
    fn start<M: crate::ManageConnection>(
        &self,
        alias: &str,
        manager: M,
        kind: &'static str,
    ) -> Result<crate::registry::Entry, ConfigError> {
        let pool = self
            .builder(alias)
            .build(manager)
            .map_err(|e| ConfigError::Build {
                alias: alias.to_owned(),
                backend: self.backend,
                reason: e.to_string(),
            })?;
        Ok(crate::registry::Entry::new(pool, kind))
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
                    let mut manager = MysqlManager::from_url(&url(secrets)?)
                        .map_err(|e| failed(format!("invalid `url`: {e}")))?;
                    if let Some(t) = self.connect_timeout {
                        manager = manager.connect_timeout(t.0);
                    }
                    if let Some(t) = self.read_timeout {
                        manager = manager.read_timeout(t.duration());
                    }
                    if let Some(t) = self.write_timeout {
                        manager = manager.write_timeout(t.duration());
                    }
                    #[cfg(feature = "tls")]
                    let manager = self.with_tls(alias, secrets, manager, MysqlManager::tls)?;
                    return self.start(alias, manager, "mysql");
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
                    #[cfg(feature = "tls")]
                    let manager = self.with_tls(alias, secrets, manager, RedisManager::tls)?;
                    return self.start(alias, manager, "redis");
                }
                Err(missing())
            }
            Backend::RedisCluster => {
                #[cfg(feature = "redis")]
                {
                    use crate::backends::redis::RedisClusterManager;
                    let urls = self.expanded_urls(alias, secrets)?;
                    let manager = match self.connect_timeout {
                        None => RedisClusterManager::new(urls.iter().map(String::as_str)),
                        Some(t) => ::redis::cluster::ClusterClient::builder(
                            urls.iter().map(String::as_str),
                        )
                        .connection_timeout(t.0)
                        .build()
                        .map(|client| {
                            RedisClusterManager::from_client(client)
                                .response_timeout(crate::backends::redis::DEFAULT_RESPONSE_TIMEOUT)
                        }),
                    }
                    .map_err(|e| failed(format!("invalid `urls`: {e}")))?;
                    let manager = match self.response_timeout {
                        Some(t) => manager.response_timeout(t.0),
                        None => manager,
                    };
                    return self.start(alias, manager, "redis-cluster");
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
                    if let Some(t) = self.busy_timeout {
                        manager = manager.busy_timeout(t.0);
                    }
                    if let Some(init) = &self.init {
                        let sql = expand(init, alias, "init", secrets)?;
                        manager = manager.with_init(move |conn| conn.execute_batch(&sql));
                    }
                    return self.start(alias, manager, "sqlite");
                }
                Err(missing())
            }
            Backend::Postgres => {
                #[cfg(feature = "postgres")]
                {
                    use crate::backends::postgres::PostgresManager;
                    let mut manager = PostgresManager::from_url(&url(secrets)?)
                        .map_err(|e| failed(format!("invalid `url`: {e}")))?;
                    if let Some(t) = self.connect_timeout {
                        manager = manager.connect_timeout(t.0);
                    }
                    if let Some(t) = self.statement_timeout {
                        manager = manager.statement_timeout(t.duration());
                    }
                    if let Some(t) = self.tcp_user_timeout {
                        manager = manager.tcp_user_timeout(t.0);
                    }
                    let require = postgres::config::SslMode::Require;
                    if self.tls.is_none() && manager.config().get_ssl_mode() == require {
                        return Err(Self::invalid(
                            alias,
                            "url",
                            "asks for `sslmode=require`, which needs a `tls` table \
                             (`tls = {}` trusts the system's roots)",
                        ));
                    }
                    #[cfg(feature = "tls")]
                    let manager = self.with_tls(alias, secrets, manager, PostgresManager::tls)?;
                    return self.start(alias, manager, "postgres");
                }
                Err(missing())
            }
            Backend::RedisSentinel => {
                #[cfg(feature = "redis")]
                {
                    use crate::backends::redis_sentinel::RedisSentinelManager;
                    let urls = self.expanded_urls(alias, secrets)?;
                    let service = self.service.clone().unwrap_or_default();
                    let mut manager =
                        RedisSentinelManager::new(urls.iter().map(String::as_str), service)
                            .map_err(|e| failed(format!("invalid `urls`: {e}")))?;
                    if let Some(password) = &self.master_password {
                        let password = expand(password, alias, "master_password", secrets)?;
                        secrets.push(password.clone());
                        manager = manager.master_password(password);
                    }
                    if let Some(db) = self.db {
                        manager = manager.master_db(db);
                    }
                    if let Some(t) = self.connect_timeout {
                        manager = manager.connect_timeout(t.0);
                    }
                    if let Some(t) = self.response_timeout {
                        manager = manager.response_timeout(t.0);
                    }
                    return self.start(alias, manager, "redis-sentinel");
                }
                Err(missing())
            }
        }
    }
}
