//! Ready managers for common backends, each behind its cargo feature.
//!
//! | Module | Feature | Manager | Driver |
//! |---|---|---|---|
//! | `mysql` | `mysql` | `MysqlManager` | [`mysql`](https://docs.rs/mysql) 28 (pure Rust, no TLS by default) |
//! | `redis` | `redis` | `RedisManager`, `RedisClusterManager` | [`redis`](https://docs.rs/redis) 1.x |
//! | `redis_sentinel` | `redis` | `RedisSentinelManager` | [`redis`](https://docs.rs/redis) 1.x, through Redis Sentinel |
//! | `sqlite` | `sqlite` (`sqlite-bundled` compiles SQLite in) | `SqliteManager` | [`rusqlite`](https://docs.rs/rusqlite) |
//! | `postgres` | `postgres` | `PostgresManager` | [`postgres`](https://docs.rs/postgres) 0.19 |
//! | `diesel` | `diesel` | `DieselManager<C>` | [`diesel`](https://docs.rs/diesel) 2.3, any connection type |
//! | `r2d2` | `r2d2` | any r2d2 manager, as it is ([`WithReset`](r2d2::WithReset) adds a reset) | any [`r2d2`](https://docs.rs/r2d2) manager |
//!
//! Every manager uses its driver's own error type as
//! [`ManageConnection::Error`](crate::ManageConnection::Error) and its driver's own
//! option types (`mysql::Opts`, `redis::ConnectionInfo`, `rusqlite::OpenFlags`,
//! `postgres::Config` and its TLS connector), so TLS,
//! authentication and timeouts are configured exactly as the driver documents them.
//! None of the managers prints a password in its `Debug` output.
//!
//! Without the `tls` feature, the features pull the drivers in without any TLS
//! implementation and without C code beyond SQLite itself (`mysql` with
//! `default-features = false, features = ["default-rust"]`, `redis` with
//! `default-features = false, features = ["cluster"]`, `postgres` with `NoTls`;
//! `diesel` turns on none of diesel's backends, whose PostgreSQL and MySQL ones link
//! libpq and libmysqlclient).
//!
//! TLS, two ways:
//!
//! * **From files, the same for every backend** (feature `tls`): a [`tls::Tls`] names
//!   the CA, an optional client certificate and how much to verify, and
//!   `PostgresManager::tls`, `MysqlManager::tls` and `RedisManager::tls` apply it. This
//!   is what a config file's `tls` table does.
//! * **The driver's own TLS options**, for what `Tls` does not cover: enable the
//!   driver's TLS feature in your `Cargo.toml` (`mysql`: `rustls-tls` or `native-tls`;
//!   `redis`: `tls-rustls` or `tls-native-tls`) and set its `Opts`/`ConnectionInfo`;
//!   `PostgresManager::new` takes any TLS connector (`postgres-native-tls`,
//!   `postgres-openssl`), as `postgres::Config::connect` does.
//!
//! What each manager does in the three hooks the pool calls:
//!
//! | | `is_valid` | `has_broken` (no I/O) | `reset` |
//! |---|---|---|---|
//! | MySQL | `COM_PING` | always `false` (the driver exposes no state) | `COMMIT`, `ROLLBACK` or `COM_RESET_CONNECTION` |
//! | Redis | `PING` | `!is_open()` | `MULTI` + `DISCARD`, one round trip (`EXEC` first to commit) |
//! | Redis Sentinel | `ROLE` must be `master` | `!is_open()` | as Redis |
//! | SQLite | `SELECT 1` | `false` | `ROLLBACK`/`COMMIT` only if `!is_autocommit()` |
//! | PostgreSQL | empty query, bounded | `is_closed()` | `ROLLBACK`, `COMMIT`, or `DISCARD ALL`'s work but `DEALLOCATE ALL` |
//! | diesel | diesel's ping | diesel's `is_broken()` | `ROLLBACK`/`COMMIT` (and the PostgreSQL session reset) |
//! | r2d2 | forwarded | forwarded | nothing |
//!
//! The MySQL and Redis managers implement
//! [`is_valid_within`](crate::ManageConnection::is_valid_within): for the check, the
//! socket's read and write timeouts are lowered to the pool's
//! [`validation_timeout`](crate::Builder::validation_timeout) when it is shorter than
//! the manager's own, and restored afterwards. PostgreSQL's check is the driver's
//! `Client::is_valid` with that timeout. SQLite's check does no I/O that can hang; diesel's ping and an
//! r2d2 manager's check are bounded only by the driver's own timeouts.

use std::time::Duration;

#[cfg(feature = "diesel")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel")))]
pub mod diesel;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub mod mysql;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "r2d2")]
#[cfg_attr(docsrs, doc(cfg(feature = "r2d2")))]
pub mod r2d2;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis_sentinel;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
pub mod tls;

/// `ResetAction::Session` on PostgreSQL, one round trip: `ROLLBACK`, then what
/// `DISCARD ALL` does except `DEALLOCATE ALL`. Drivers cache prepared statements of their
/// own on the connection (the `postgres` crate its type lookups, diesel its statement
/// cache) and would fail with "prepared statement does not exist" once they are gone.
/// `DISCARD ALL` itself also refuses to run in the implicit transaction of a
/// multi-statement query; these statements do not.
#[cfg(any(feature = "postgres", feature = "diesel"))]
const POSTGRES_SESSION_RESET: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; \
     RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; \
     DISCARD SEQUENCES";

/// The socket timeout a check within `validation` needs, if it is shorter than the
/// `io` timeout the connection already has; `None` when the connection's own is as
/// short (or `validation` is, in effect, for ever).
#[cfg_attr(not(any(feature = "mysql", feature = "redis")), allow(dead_code))]
fn shorter_for_check(validation: Duration, io: Option<Duration>) -> Option<Duration> {
    let forever = validation >= crate::engine::config::LONGEST_PERIOD;
    match io {
        _ if forever => None,
        Some(io) if io <= validation => None,
        _ => Some(validation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_lowers_only_a_longer_timeout() {
        let s = Duration::from_secs;
        assert_eq!(shorter_for_check(s(5), Some(s(60))), Some(s(5)));
        assert_eq!(shorter_for_check(s(5), None), Some(s(5)));
        assert_eq!(shorter_for_check(s(5), Some(s(1))), None);
        assert_eq!(shorter_for_check(s(5), Some(s(5))), None);
        assert_eq!(shorter_for_check(Duration::MAX, None), None);
    }
}
