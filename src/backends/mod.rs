//! Ready managers for common backends, each behind its cargo feature.
//!
//! | Module | Feature | Manager | Driver |
//! |---|---|---|---|
//! | `mysql` | `mysql` | `MysqlManager` | [`mysql`](https://docs.rs/mysql) 28 (pure Rust, no TLS by default) |
//! | `redis` | `redis` | `RedisManager`, `RedisClusterManager` | [`redis`](https://docs.rs/redis) 1.x |
//! | `sqlite` | `sqlite` | `SqliteManager` | [`rusqlite`](https://docs.rs/rusqlite) (bundled SQLite) |
//! | `r2d2` | `r2d2` | `R2d2Adapter` | any [`r2d2`](https://docs.rs/r2d2) manager |
//!
//! Every manager uses its driver's own error type as
//! [`ManageConnection::Error`](crate::ManageConnection::Error) and its driver's own
//! option types (`mysql::Opts`, `redis::ConnectionInfo`, `rusqlite::OpenFlags`), so TLS,
//! authentication and timeouts are configured exactly as the driver documents them.
//! None of the managers prints a password in its `Debug` output.
//!
//! The features pull the drivers in without any TLS implementation and without C code
//! beyond SQLite itself (`mysql` with `default-features = false, features =
//! ["default-rust"]`, `redis` with `default-features = false, features = ["cluster"]`).
//! To connect over TLS, enable the driver's own TLS feature in your `Cargo.toml`
//! (`mysql`: `rustls-tls` or `native-tls`; `redis`: `tls-rustls` or `tls-native-tls`);
//! Cargo unifies it with stickypool's dependency, and the TLS options of the driver's
//! `Opts`/`ConnectionInfo` (or a `rediss://` URL) then apply to the managers as they are.
//!
//! What each manager does in the three hooks the pool calls:
//!
//! | | `is_valid` | `has_broken` (no I/O) | `reset` |
//! |---|---|---|---|
//! | MySQL | `COM_PING` | always `false` (the driver exposes no state) | `COMMIT`, `ROLLBACK` or `COM_RESET_CONNECTION` |
//! | Redis | `PING` | `!is_open()` | `MULTI` + `DISCARD`, one round trip (`EXEC` first to commit) |
//! | SQLite | `SELECT 1` | `false` | `ROLLBACK`/`COMMIT` only if `!is_autocommit()` |
//! | r2d2 | forwarded | forwarded | nothing |

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "r2d2")]
pub mod r2d2;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
