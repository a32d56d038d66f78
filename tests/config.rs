//! Named pools from a TOML configuration (`Pools`, feature `toml`).
#![cfg(feature = "toml")]

mod common;
mod servers;

use common::FakeManager;
use stickypool::config::{Backend, ConfigError, PoolsConfig};
use stickypool::registry::LookupError;
use stickypool::{Pool, Pools};

const EVERY_SETTING: &str = r#"
[pools.main]
backend = "mysql"
url = "mysql://app:secret@127.0.0.1:3306/app"
name = "orders-db"
max_size = 16
min_idle = 4
connection_timeout = "3s"
check_on_borrow = "250ms"
test_on_check_in = true
idle_timeout = "10m"
max_lifetime = "1h30m"
reap_interval = "15s"
keepalive_interval = "2m"
reset_on_return = "rollback"
leak_detection_threshold = "1m"
max_waiters = 100
fair_after = "20ms"
circuit_breaker = "250ms"
validation_timeout = "750ms"
"#;

fn builder_debug(config: &PoolsConfig, alias: &str) -> String {
    format!("{:?}", config.pools[alias].builder::<FakeManager>(alias))
}

#[test]
fn a_pools_table_embeds_in_json_too() {
    // An application's own config file, in JSON, with the pools inside: integers
    // arrive as unsigned, durations and "off" as strings.
    let json = r#"{
        "main": {
            "backend": "sqlite",
            "memory": true,
            "max_size": 4,
            "max_waiters": 64,
            "connection_timeout": "1.5s",
            "idle_timeout": "off"
        }
    }"#;
    let config: PoolsConfig = serde_json::from_str(json).unwrap();
    let debug = builder_debug(&config, "main");
    for expected in [
        "max_size: 4",
        "max_waiters: Some(64)",
        "connection_timeout: 1.5s",
        "idle_timeout: None",
    ] {
        assert!(debug.contains(expected), "{expected} missing in {debug}");
    }
    let err = serde_json::from_str::<PoolsConfig>(
        r#"{"main": {"backend": "sqlite", "connection_timeout": 3}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs a unit"), "{err}");
}

#[test]
fn every_setting_is_read() {
    let config = PoolsConfig::from_toml_str(EVERY_SETTING).unwrap();
    let main = &config.pools["main"];
    assert_eq!(main.backend, Backend::Mysql);
    assert_eq!(
        main.url.as_deref(),
        Some("mysql://app:secret@127.0.0.1:3306/app")
    );
    let debug = builder_debug(&config, "main");
    for expected in [
        "name: Some(\"orders-db\")",
        "max_size: 16",
        "min_idle: Some(4)",
        "connection_timeout: 3s",
        "check_on_borrow: Some(250ms)",
        "test_on_check_in: true",
        "idle_timeout: Some(600s)",
        "max_lifetime: Some(5400s)",
        "reap_interval: 15s",
        "keepalive_interval: Some(120s)",
        "reset_on_return: Rollback",
        "leak_detection_threshold: Some(60s)",
        "max_waiters: Some(100)",
        "fair_after: Some(20ms)",
        "circuit_breaker: Some(250ms)",
        "validation_timeout: Some(750ms)",
    ] {
        assert!(debug.contains(expected), "{expected} missing in {debug}");
    }

    // The settings really reach the pool.
    let pool = config.pools["main"]
        .builder::<FakeManager>("main")
        .min_idle(Some(0))
        .build(FakeManager::new())
        .unwrap();
    assert_eq!(pool.name(), "orders-db");
    assert_eq!(pool.max_size(), 16);
}

#[test]
fn name_defaults_to_the_alias_and_missing_keys_keep_the_defaults() {
    let config = PoolsConfig::from_toml_str(
        "[pools.cache]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1/\"\n",
    )
    .unwrap();
    let debug = builder_debug(&config, "cache");
    let defaults = format!("{:?}", Pool::<FakeManager>::builder().name("cache"));
    assert_eq!(debug, defaults);
    assert!(debug.contains("check_on_borrow: Some(500ms)"), "{debug}");
}

#[test]
fn optional_settings_turn_off() {
    let config = PoolsConfig::from_toml_str(
        r#"
[pools.a]
backend = "sqlite"
memory = true
idle_timeout = "off"
max_lifetime = false
keepalive_interval = "OFF"
leak_detection_threshold = false
max_waiters = "off"
check_on_borrow = "off"
fair_after = false
validation_timeout = "off"
circuit_breaker = "off"
"#,
    )
    .unwrap();
    let debug = builder_debug(&config, "a");
    for expected in [
        "check_on_borrow: None",
        "fair_after: None",
        "circuit_breaker: None",
        "validation_timeout: None",
        "idle_timeout: None",
        "max_lifetime: None",
        "keepalive_interval: None",
        "leak_detection_threshold: None",
        "max_waiters: None",
    ] {
        assert!(debug.contains(expected), "{expected} missing in {debug}");
    }
}

fn parse_error(toml: &str) -> String {
    match PoolsConfig::from_toml_str(toml) {
        Ok(config) => panic!("should be rejected: {config:?}"),
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        Err(e) => panic!("expected a parse error, got {e}"),
    }
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let message = parse_error(
        r#"[pools.main]
backend = "mysql"
url = "mysql://127.0.0.1/app"
max_sise = 16
"#,
    );
    assert!(message.contains("line 4"), "{message}");
    assert!(message.contains("unknown field `max_sise`"), "{message}");
    assert!(
        message.contains("max_size"),
        "lists the valid keys: {message}"
    );

    let message = parse_error("[database]\nurl = \"x\"\n");
    assert!(message.contains("unknown field `database`"), "{message}");
}

#[test]
fn bad_values_are_errors_with_their_line() {
    let cases = [
        ("reset_on_return = \"rolback\"", "unknown variant `rolback`"),
        ("backend = \"mongodb\"", "unknown variant `mongodb`"),
        ("max_size = \"many\"", "invalid type"),
        ("max_size = -1", "max_size"),
        (
            "connection_timeout = \"3parsecs\"",
            "unknown unit \"parsecs\"",
        ),
        ("connection_timeout = \"3 s\"", "missing unit after 3"),
        ("connection_timeout = 3", "needs a unit"),
        ("connection_timeout = \"off\"", "expected a number"),
        ("idle_timeout = true", "`true` is not a value"),
        ("max_waiters = \"lots\"", "or \"off\""),
        ("test_on_check_in = \"yes\"", "invalid type"),
    ];
    for (line, expected) in cases {
        let toml = if line.starts_with("backend") {
            format!("[pools.p]\nurl = \"redis://h/\"\n{line}\n")
        } else {
            format!("[pools.p]\nbackend = \"redis\"\n{line}\n")
        };
        let message = parse_error(&toml);
        assert!(message.contains("line 3"), "{line}: {message}");
        assert!(message.contains(expected), "{line}: {message}");
    }
}

#[test]
fn keys_of_another_backend_are_errors() {
    let err = Pools::from_toml_str(
        "[pools.cache]\nbackend = \"redis\"\nurl = \"redis://h/\"\npath = \"x.db\"\n",
    )
    .unwrap_err();
    assert_eq!(err.alias(), Some("cache"));
    let message = err.to_string();
    assert!(
        message.contains("`path` is not a setting of backend \"redis\""),
        "{message}"
    );

    let err = Pools::from_toml_str(
        "[pools.main]\nbackend = \"mysql\"\nurl = \"mysql://h/db\"\nresponse_timeout = \"1s\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "`response_timeout` is not a setting of backend \"mysql\" (its keys: url, \
                 connect_timeout, read_timeout, write_timeout, tls)"
        ),
        "{err}"
    );

    let err = Pools::from_toml_str(
        "[pools.main]\nbackend = \"redis\"\nurl = \"redis://h/\"\nread_timeout = \"1s\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`read_timeout` is not a setting of backend \"redis\""),
        "{err}"
    );

    let err = Pools::from_toml_str("[pools.main]\nbackend = \"mysql\"\n").unwrap_err();
    assert!(err.to_string().contains("`url` is required"), "{err}");

    let err = Pools::from_toml_str("[pools.l]\nbackend = \"sqlite\"\n").unwrap_err();
    assert!(err.to_string().contains("`path` is required"), "{err}");

    let err =
        Pools::from_toml_str("[pools.c]\nbackend = \"redis-cluster\"\nurls = []\n").unwrap_err();
    assert!(err.to_string().contains("at least one node"), "{err}");

    let err = Pools::from_toml_str("[pools.pg]\nbackend = \"postgres\"\n").unwrap_err();
    assert!(err.to_string().contains("`url` is required"), "{err}");
    let err = Pools::from_toml_str(
        "[pools.pg]\nbackend = \"postgres\"\nurl = \"postgres://h/db\"\nread_timeout = \"1s\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "`read_timeout` is not a setting of backend \"postgres\" (its keys: url, \
             connect_timeout, statement_timeout, tcp_user_timeout, tls)"
        ),
        "{err}"
    );

    let err = Pools::from_toml_str(
        "[pools.s]\nbackend = \"redis-sentinel\"\nurls = [\"redis://h:26379/\"]\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`service` is required for backend \"redis-sentinel\""),
        "{err}"
    );
    let err = Pools::from_toml_str(
        "[pools.s]\nbackend = \"redis-sentinel\"\nservice = \"cache\"\nurls = []\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least one sentinel"), "{err}");
    let err = Pools::from_toml_str(
        "[pools.s]\nbackend = \"redis-sentinel\"\nservice = \"cache\"\n\
         urls = [\"redis://h:26379/\"]\nurl = \"redis://h/\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`url` is not a setting of backend \"redis-sentinel\""),
        "{err}"
    );
}

#[test]
fn an_empty_file_has_no_pools() {
    let pools = Pools::from_toml_str("").unwrap();
    assert!(pools.is_empty());
    let err = pools.get::<FakeManager>("main").unwrap_err();
    assert!(err.to_string().contains("no pools are configured"), "{err}");
}

fn fake_pool(name: &str) -> Pool<FakeManager> {
    Pool::builder()
        .name(name)
        .max_size(2)
        .min_idle(Some(0))
        .build(FakeManager::new())
        .unwrap()
}

#[derive(Debug)]
struct OtherManager;

impl stickypool::ManageConnection for OtherManager {
    type Connection = ();
    type Error = std::io::Error;
    fn connect(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut ()) -> bool {
        false
    }
}

#[test]
fn registered_pools_by_alias_and_type() {
    let mut pools = Pools::new();
    pools.register("jobs", fake_pool("jobs")).unwrap();
    pools.register("audit", fake_pool("audit")).unwrap();
    assert_eq!(pools.aliases().collect::<Vec<_>>(), ["audit", "jobs"]);

    let jobs = pools.get::<FakeManager>("jobs").unwrap();
    assert_eq!(jobs.name(), "jobs");
    drop(jobs.get().unwrap());

    let err = pools.get::<FakeManager>("job").unwrap_err();
    assert!(matches!(err, LookupError::UnknownAlias { .. }));
    assert_eq!(
        err.to_string(),
        "no pool `job`; pools: audit (FakeManager), jobs (FakeManager)"
    );

    let err = pools.get::<OtherManager>("jobs").unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool `jobs` is a FakeManager pool, not OtherManager; \
         pools: audit (FakeManager), jobs (FakeManager)"
    );

    let err = pools.register("jobs", fake_pool("again")).unwrap_err();
    assert!(matches!(err, LookupError::Duplicate { .. }), "{err}");

    let removed = pools.remove::<FakeManager>("audit").unwrap();
    assert_eq!(removed.name(), "audit");
    assert_eq!(pools.len(), 1);
    pools.close_all();
    assert!(pools.get::<FakeManager>("jobs").unwrap().is_closed());
}

#[cfg(not(feature = "mysql"))]
#[test]
fn a_backend_without_its_feature_says_which_feature() {
    let err = Pools::from_toml_str("[pools.main]\nbackend = \"mysql\"\nurl = \"mysql://h/db\"\n")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool `main`: backend \"mysql\" needs stickypool's `mysql` cargo feature"
    );
}

#[cfg(feature = "sqlite")]
mod with_sqlite {
    use super::*;
    use stickypool::backends::sqlite::SqliteManager;

    #[test]
    fn pools_are_built_from_a_file() {
        let dir = servers::TempDir::new("config");
        let db = dir.path().join("app.db");
        let file = dir.path().join("pools.toml");
        servers::set_env("STICKYPOOL_TEST_DATA_DIR", dir.path());
        std::fs::write(
            &file,
            r#"
[pools.local]
backend = "sqlite"
path = "${STICKYPOOL_TEST_DATA_DIR}/app.db"
init = "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);"
max_size = 3
min_idle = 2
reset_on_return = "rollback"
busy_timeout = "1500ms"

[pools.scratch]
backend = "sqlite"
memory = true
min_idle = 0
"#,
        )
        .unwrap();
        let pools = Pools::from_toml_file(&file).unwrap();
        let local = pools.sqlite("local").unwrap();
        assert_eq!(local.name(), "local");
        assert_eq!(local.state().connections, 2, "min_idle opened at build");
        assert_eq!(local.manager().path(), Some(db.as_path()));
        let conn = local.get().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "init ran");
        let busy: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 1_500, "busy_timeout reached the connection");
        conn.execute("INSERT INTO kv VALUES ('a', 'b')", [])
            .unwrap();
        drop(conn);

        let scratch: &Pool<SqliteManager> = pools.get("scratch").unwrap();
        assert_eq!(scratch.manager().path(), None);
        assert_eq!(scratch.state().connections, 0);

        let err = pools.get::<FakeManager>("local").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("pool `local` is a sqlite pool, not FakeManager; pools: local (sqlite), scratch (sqlite)"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = Pools::from_toml_str(
            "[pools.local]\nbackend = \"sqlite\"\npath = \"${STICKYPOOL_TEST_SURELY_UNSET}/x.db\"\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool `local`: `path` uses ${STICKYPOOL_TEST_SURELY_UNSET}, but the environment \
             variable STICKYPOOL_TEST_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn a_failing_init_fails_the_start_with_the_alias() {
        let err = Pools::from_toml_str(
            "[pools.local]\nbackend = \"sqlite\"\nmemory = true\nmin_idle = 1\n\
             connection_timeout = \"2s\"\ninit = \"PRAGMA nonsense syntax error\"\n",
        )
        .unwrap_err();
        assert_eq!(err.alias(), Some("local"));
        let message = err.to_string();
        assert!(
            message.starts_with("pool `local` (sqlite) could not be started:"),
            "{message}"
        );
        assert!(message.contains("syntax error"), "{message}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Pools::from_toml_file("/nonexistent/stickypool/pools.toml").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "cannot read the pool configuration /nonexistent/stickypool/pools.toml"
            ),
            "{err}"
        );
    }
}

#[cfg(feature = "mysql")]
mod with_mysql {
    use super::*;
    use std::time::Duration;
    use std::time::Instant;

    #[test]
    fn an_unreachable_server_fails_the_start_fast_with_the_alias_and_no_password() {
        let port = servers::closed_port();
        servers::set_env("STICKYPOOL_TEST_DB_PASSWORD", "hunter2-very-secret");
        let toml = format!(
            "[pools.main]\nbackend = \"mysql\"\n\
             url = \"mysql://app:${{STICKYPOOL_TEST_DB_PASSWORD}}@127.0.0.1:{port}/app\"\n\
             min_idle = 1\nconnection_timeout = \"5s\"\n"
        );
        let started = Instant::now();
        let err = Pools::from_toml_str(&toml).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(err.alias(), Some("main"));
        let message = err.to_string();
        assert!(
            message.starts_with("pool `main` (mysql) could not be started:"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn a_bad_url_is_reported_without_the_password() {
        servers::set_env("STICKYPOOL_TEST_DB_PASSWORD2", "hunter3-very-secret");
        let err = Pools::from_toml_str(
            "[pools.main]\nbackend = \"mysql\"\n\
             url = \"postgres://app:${STICKYPOOL_TEST_DB_PASSWORD2}@127.0.0.1/app\"\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("invalid `url`"), "{message}");
        assert!(!message.contains("hunter3"), "{message}");
    }

    #[test]
    fn a_real_server() {
        let Some(url) = servers::mysql_url("config::with_mysql::a_real_server") else {
            return;
        };
        let _lock = servers::lock(servers::Server::Mysql);
        servers::set_env("STICKYPOOL_TEST_MYSQL_URL_FROM_ENV", &url);
        let pools = Pools::from_toml_str(
            "[pools.main]\nbackend = \"mysql\"\nurl = \"${STICKYPOOL_TEST_MYSQL_URL_FROM_ENV}\"\n\
             max_size = 4\nmin_idle = 2\nconnection_timeout = \"5s\"\nreset_on_return = \"rollback\"\n",
        )
        .unwrap();
        let main = pools.mysql("main").unwrap();
        assert_eq!(main.state().connections, 2);
        use mysql::prelude::Queryable;
        let one: Option<u32> = main.get().unwrap().query_first("SELECT 1").unwrap();
        assert_eq!(one, Some(1));

        // A wrong password fails the start, naming the alias and not the password.
        let password = servers::url_password(&url).expect("the test URL has a password");
        let wrong = url.replacen(&format!(":{password}@"), ":${STICKYPOOL_TEST_WRONG_PW}@", 1);
        servers::set_env("STICKYPOOL_TEST_WRONG_PW", "wrong-pw-4711");
        let err = Pools::from_toml_str(&format!(
            "[pools.reporting]\nbackend = \"mysql\"\nurl = \"{wrong}\"\nmin_idle = 1\n\
             connection_timeout = \"5s\"\n"
        ))
        .unwrap_err();
        let message = err.to_string();
        eprintln!("{message}");
        assert!(
            message.starts_with("pool `reporting` (mysql) could not be started:"),
            "{message}"
        );
        assert!(message.contains("Access denied"), "{message}");
        assert!(!message.contains("wrong-pw-4711"), "{message}");
    }
}

#[cfg(feature = "redis")]
mod with_redis {
    use super::*;

    #[test]
    fn a_real_server() {
        let Some(url) = servers::redis_url("config::with_redis::a_real_server") else {
            return;
        };
        let _lock = servers::lock(servers::Server::Redis);
        let pools = Pools::from_toml_str(&format!(
            "[pools.cache]\nbackend = \"redis\"\nurl = \"{url}\"\nmax_size = 3\nmin_idle = 1\n\
             connect_timeout = \"2s\"\nresponse_timeout = \"5s\"\n\
             connection_timeout = \"5s\"\n"
        ))
        .unwrap();
        let cache = pools.redis("cache").unwrap();
        assert_eq!(cache.state().connections, 1);
        let pong: String = redis::cmd("PING")
            .query(&mut *cache.get().unwrap())
            .unwrap();
        assert_eq!(pong, "PONG");
    }

    #[test]
    fn a_real_cluster() {
        let Some(urls) = servers::redis_cluster_urls("config::with_redis::a_real_cluster") else {
            return;
        };
        let list = urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let pools = Pools::from_toml_str(&format!(
            "[pools.sessions]\nbackend = \"redis-cluster\"\nurls = [{list}]\nmax_size = 2\n\
             connect_timeout = \"2s\"\nresponse_timeout = \"5s\"\n\
             min_idle = 1\nconnection_timeout = \"5s\"\n"
        ))
        .unwrap();
        let sessions = pools.redis_cluster("sessions").unwrap();
        let mut conn = sessions.get().unwrap();
        let _: () = redis::cmd("SET")
            .arg("stickypool-config-test")
            .arg(1)
            .query(&mut *conn)
            .unwrap();
        assert!(pools.redis("sessions").is_err(), "not a single-server pool");
    }
}

#[cfg(feature = "postgres")]
mod with_postgres {
    use super::*;

    #[test]
    fn a_real_server() {
        let Some(url) = servers::postgres_url("config::with_postgres::a_real_server") else {
            return;
        };
        servers::set_env("STICKYPOOL_TEST_PG_URL_FROM_ENV", &url);
        let pools = Pools::from_toml_str(
            "[pools.main]\nbackend = \"postgres\"\nurl = \"${STICKYPOOL_TEST_PG_URL_FROM_ENV}\"\n\
             max_size = 4\nmin_idle = 1\nconnection_timeout = \"5s\"\nreset_on_return = \"rollback\"\n\
             connect_timeout = \"2s\"\nstatement_timeout = \"2.5s\"\ntcp_user_timeout = \"30s\"\n",
        )
        .unwrap();
        let main = pools.postgres("main").unwrap();
        let mut conn = main.get().unwrap();
        let timeout: String = conn
            .query_one("SHOW statement_timeout", &[])
            .unwrap()
            .get(0);
        assert_eq!(timeout, "2500ms");
        drop(conn);

        // A wrong password fails the start, naming the alias and not the password.
        let password = servers::url_password(&url).expect("the test URL has a password");
        let wrong = url.replacen(
            &format!(":{password}@"),
            ":${STICKYPOOL_TEST_PG_WRONG_PW}@",
            1,
        );
        servers::set_env("STICKYPOOL_TEST_PG_WRONG_PW", "wrong-pw-0815");
        let err = Pools::from_toml_str(&format!(
            "[pools.reporting]\nbackend = \"postgres\"\nurl = \"{wrong}\"\nmin_idle = 1\n\
             connection_timeout = \"5s\"\n"
        ))
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("pool `reporting` (postgres) could not be started:"),
            "{message}"
        );
        assert!(
            message.contains("password authentication failed"),
            "{message}"
        );
        assert!(!message.contains("wrong-pw-0815"), "{message}");
    }
}

#[cfg(feature = "redis")]
mod with_redis_sentinel {
    use super::*;

    #[test]
    fn a_real_sentinel_setup() {
        let Some((urls, service)) = servers::sentinel("config::with_redis_sentinel") else {
            return;
        };
        let list = urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let pools = Pools::from_toml_str(&format!(
            "[pools.cache]\nbackend = \"redis-sentinel\"\nurls = [{list}]\nservice = \"{service}\"\n\
             db = 1\nconnect_timeout = \"1s\"\nresponse_timeout = \"5s\"\nmax_size = 2\n\
             min_idle = 1\nconnection_timeout = \"10s\"\n"
        ))
        .unwrap();
        let cache = pools.redis_sentinel("cache").unwrap();
        let mut conn = cache.get().unwrap();
        let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut *conn).unwrap();
        assert!(info.contains(" db=1 "), "{info}");
        assert!(pools.redis("cache").is_err(), "not a single-server pool");
    }
}

/// Range errors (what `build` would refuse) come from the parser, with the position,
/// before any pool is built.
#[test]
fn ranges_are_checked_when_the_text_is_parsed() {
    for (table, expected) in [
        ("max_size = 0", "`max_size`: must be at least 1"),
        (
            "max_size = 2\nmin_idle = 3",
            "`min_idle`: must not exceed max_size (2), got 3",
        ),
        ("connection_timeout = \"0s\"", "`connection_timeout`"),
        ("reap_interval = \"1ms\"", "`reap_interval`"),
        ("max_waiters = 0", "`max_waiters`: must be at least 1"),
    ] {
        let toml = format!(
            "[pools.a]\nbackend = \"sqlite\"\nmemory = true\n\n[pools.b]\nbackend = \"sqlite\"\nmemory = true\n{table}\n"
        );
        let err = PoolsConfig::from_toml_str(&toml).unwrap_err().to_string();
        assert!(err.contains(expected), "{table}: {err}");
        assert!(err.contains("line 5"), "{table}: no position: {err}");
    }
}

/// The table serializes back to what parses into the same settings (TOML in, JSON out
/// and in again), and settings are plain fields to read and change in code.
#[test]
fn settings_round_trip_and_are_fields() {
    let mut config = PoolsConfig::from_toml_str(
        "[pools.main]\nbackend = \"sqlite\"\nmemory = true\nmax_size = 4\n\
         idle_timeout = \"off\"\nconnection_timeout = \"1.5s\"\nmax_waiters = 64\n\
         reset_on_return = \"rollback\"\n",
    )
    .unwrap();
    let main = config.pools.get_mut("main").unwrap();
    assert_eq!(main.max_size, Some(4));
    assert_eq!(
        main.connection_timeout.map(|d| d.0),
        Some(std::time::Duration::from_millis(1500))
    );
    assert_eq!(main.idle_timeout, Some(stickypool::config::Off(None)));
    main.min_idle = Some(1);
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""idle_timeout":"off""#), "{json}");
    assert!(json.contains(r#""connection_timeout":"1500ms""#), "{json}");
    let back: PoolsConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}

/// The key table and the duration units of `docs/guide.md` ("Named pools from a config
/// file"), read from the page itself: every documented key is accepted for the first
/// backend it lists, and every documented unit parses. Fails when the docs name a key
/// or a unit the parser does not take.
#[test]
fn every_documented_key_and_unit_exists() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md"))
        .expect("docs/guide.md");
    let table: Vec<&str> = guide
        .lines()
        .skip_while(|l| !l.starts_with("| key | backends | value | default |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(table.len() > 20, "the key table was not found");
    // What a pool of each backend needs besides the key under test.
    let required = |backend: &str| match backend {
        "mysql" => r#"url = "mysql://u:p@127.0.0.1:3306/db""#,
        "redis" => r#"url = "redis://127.0.0.1/""#,
        "postgres" => r#"url = "postgres://u:p@127.0.0.1/db""#,
        "redis-cluster" => r#"urls = ["redis://127.0.0.1:7000/"]"#,
        "redis-sentinel" => "urls = [\"redis://127.0.0.1:26379/\"]\nservice = \"m\"",
        "sqlite" => "memory = true",
        other => panic!("a backend the test does not know: {other}"),
    };
    let mut checked = 0;
    for row in table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (keys, backends, value) = (cells[1], cells[2], cells[3]);
        let backend = match backends {
            "all" => "sqlite",
            list => list.split(',').next().unwrap().trim(),
        };
        for key in keys.split([',', '/']).map(|k| k.trim().trim_matches('`')) {
            let sample = match key {
                "backend" | "url" | "urls" | "service" | "memory" => continue, // in `required`
                "path" => r#""/tmp/app.db""#.to_owned(),
                "reset_on_return" => r#""rollback""#.to_owned(),
                "tls" => r#"{ verify = "ca" }"#.to_owned(),
                _ if value.starts_with("duration") => r#""1s""#.to_owned(),
                _ if value.starts_with("bool") => "true".to_owned(),
                _ if value.starts_with("integer") || value.starts_with("database") => {
                    "1".to_owned()
                }
                _ => r#""x""#.to_owned(),
            };
            let (backend, required) = if key == "path" {
                ("sqlite", "")
            } else {
                (backend, required(backend))
            };
            let toml = format!(
                "[pools.p]\nbackend = \"{backend}\"\n{required}\n{key} = {sample}\nmin_idle = 1\n"
            );
            let toml = if key == "min_idle" {
                toml.replace("min_idle = 1\n", "")
            } else {
                toml
            };
            PoolsConfig::from_toml_str(&toml)
                .unwrap_or_else(|e| panic!("documented key `{key}` ({backend}): {e}\n{toml}"));
            checked += 1;
        }
    }
    assert!(checked > 25, "{checked} keys checked");

    // "Durations are ... humantime's units: `ns`, `us`/`µs`, ..."
    let units = guide
        .split("humantime's units:")
        .nth(1)
        .and_then(|rest| rest.split(". ").next())
        .expect("the sentence listing the duration units");
    let units: Vec<&str> = units
        .split(['`', ',', '/', ' ', '\n'])
        .map(str::trim)
        .filter(|u| !u.is_empty() && *u != "and" && u.chars().all(|c| c.is_alphabetic()))
        .collect();
    assert!(units.len() >= 10, "{units:?}");
    for unit in units {
        let toml = format!(
            "[pools.p]\nbackend = \"sqlite\"\nmemory = true\nconnection_timeout = \"2{unit}\"\n"
        );
        PoolsConfig::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("documented unit `{unit}`: {e}"));
    }
}

#[test]
fn a_tls_table_is_checked_as_it_is_read() {
    let err = parse_error(
        "[pools.main]\nbackend = \"postgres\"\nurl = \"postgres://h/db\"\n\
         tls = { ca_file = \"ca.pem\", ca = \"x\" }\n",
    );
    assert!(
        err.contains("line 4") && err.contains("unknown field `ca`"),
        "{err}"
    );
    let err = parse_error(
        "[pools.main]\nbackend = \"redis\"\nurl = \"rediss://h/\"\ntls = { verify = \"maybe\" }\n",
    );
    assert!(
        err.contains("unknown variant `maybe`, expected one of `full`, `ca`, `off`"),
        "{err}"
    );
    let err = Pools::from_toml_str(
        "[pools.l]\nbackend = \"sqlite\"\nmemory = true\ntls = { verify = \"off\" }\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`tls` is not a setting of backend \"sqlite\""),
        "{err}"
    );
}

#[test]
fn a_tls_table_serializes_back() {
    use stickypool::backends::tls::{Tls, Verify};
    let config = PoolsConfig::from_toml_str(
        "[pools.main]\nbackend = \"mysql\"\nurl = \"mysql://h/db\"\n\
         tls = { ca_file = \"/etc/ssl/ca.pem\", verify = \"ca\" }\n",
    )
    .unwrap();
    let tls = config.pools["main"].tls.clone().unwrap();
    assert_eq!(
        tls,
        Tls {
            ca_file: Some("/etc/ssl/ca.pem".into()),
            verify: Verify::Ca,
            ..Tls::default()
        }
    );
    let json = serde_json::to_string(&config).unwrap();
    assert!(
        json.contains(r#""tls":{"ca_file":"/etc/ssl/ca.pem","verify":"ca"}"#),
        "{json}"
    );
    let back: PoolsConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
}
