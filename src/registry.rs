//! Named pools: a service's pools under their aliases, built from a configuration file
//! (feature `toml` or `serde`) or registered in code, and looked up by alias and type.
//!
//! ```
//! # use stickypool::{ManageConnection, Pool, Pools};
//! # #[derive(Debug)] struct Manager;
//! # impl ManageConnection for Manager {
//! #     type Connection = ();
//! #     type Error = std::io::Error;
//! #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn has_broken(&self, _: &mut ()) -> bool { false }
//! # }
//! let mut pools = Pools::new();
//! pools.register("jobs", Pool::builder().max_size(2).build(Manager)?)?;
//!
//! let jobs: &Pool<Manager> = pools.get("jobs")?;
//! drop(jobs.get()?);
//! assert!(pools.get::<Manager>("orders").is_err()); // "no pool `orders`; pools: jobs"
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pools are stored type-erased (`Box<dyn Any>` behind a small trait that also
//! reads each pool's name, state and stats, for metrics), and [`Pools::get`] downcasts
//! to `Pool<M>`. A lookup with the wrong manager type is an error naming the pool's
//! actual backend, and an unknown alias is an error listing the aliases there are, so
//! a typo in a service shows the fix. The typed shortcuts [`Pools::mysql`],
//! [`Pools::redis`], [`Pools::redis_cluster`], [`Pools::redis_sentinel`],
//! [`Pools::sqlite`] and [`Pools::postgres`] exist with their backend's feature.
//!
//! `Pools` itself needs no cargo feature; reading TOML needs `config`.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;

use crate::engine::State;
use crate::manager::ManageConnection;
use crate::pool::Pool;
use crate::stats::Stats;

/// A pool with its type erased.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) trait AnyPool: Send + Sync + 'static {
    fn as_any(&self) -> &dyn Any;
    fn is_closed(&self) -> bool;
    fn name(&self) -> &str;
    fn id(&self) -> u64;
    fn state(&self) -> State;
    fn stats(&self) -> Stats;
    fn close(&self);
}

impl<M: ManageConnection> AnyPool for Pool<M> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        Pool::name(self)
    }
    fn id(&self) -> u64 {
        Pool::id(self)
    }
    fn state(&self) -> State {
        Pool::state(self)
    }
    fn stats(&self) -> Stats {
        Pool::stats(self)
    }
    fn close(&self) {
        Pool::close(self)
    }
    fn is_closed(&self) -> bool {
        Pool::is_closed(self)
    }
}

/// A registered pool and what kind it is, for messages.
pub(crate) struct Entry {
    pub(crate) pool: Box<dyn AnyPool>,
    kind: &'static str,
}

impl Entry {
    pub(crate) fn new<M: ManageConnection>(pool: Pool<M>, kind: &'static str) -> Entry {
        Entry {
            pool: Box::new(pool),
            kind,
        }
    }
}

/// A lookup in [`Pools`] failed, or an alias was registered twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No pool has this alias.
    #[error("no pool `{alias}`; {}", Known(known))]
    UnknownAlias {
        /// The alias asked for.
        alias: String,
        /// The aliases there are, with their kinds.
        known: Vec<String>,
    },
    /// The pool has another manager type than the one asked for.
    #[error("pool `{alias}` is a {actual} pool, not {expected}; {}", Known(known))]
    WrongType {
        /// The alias.
        alias: String,
        /// The manager type asked for.
        expected: &'static str,
        /// What the pool is.
        actual: &'static str,
        /// The aliases there are, with their kinds.
        known: Vec<String>,
    },
    /// [`Pools::register`] with an alias already taken.
    #[error("a pool `{alias}` is already registered")]
    Duplicate {
        /// The alias.
        alias: String,
    },
}

struct Known<'a>(&'a [String]);

impl fmt::Display for Known<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("no pools are configured")
        } else {
            write!(f, "pools: {}", self.0.join(", "))
        }
    }
}

/// A service's pools by alias; see the [module docs](self).
#[derive(Default)]
pub struct Pools {
    pools: BTreeMap<String, Entry>,
}

impl Pools {
    /// No pools.
    pub fn new() -> Pools {
        Pools::default()
    }

    /// Adds `pool` under `alias`. An alias already taken is an error (the pool passed
    /// in is dropped).
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use stickypool::{Pools, registry::LookupError};
    ///
    /// let mut pools = Pools::new();
    /// pools.register("main", Pool::new(Manager)?)?;
    /// let again = pools.register("main", Pool::new(Manager)?);
    /// assert!(matches!(again, Err(LookupError::Duplicate { .. })));
    /// assert_eq!(pools.aliases().collect::<Vec<_>>(), ["main"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register<M: ManageConnection>(
        &mut self,
        alias: &str,
        pool: Pool<M>,
    ) -> Result<(), LookupError> {
        self.insert(alias, Entry::new(pool, short_type_name::<M>()))
    }

    pub(crate) fn insert(&mut self, alias: &str, entry: Entry) -> Result<(), LookupError> {
        if self.pools.contains_key(alias) {
            return Err(LookupError::Duplicate {
                alias: alias.to_owned(),
            });
        }
        self.pools.insert(alias.to_owned(), entry);
        Ok(())
    }

    /// Adds a pool whose alias is known to be new (the key of a map being built from).
    #[cfg(feature = "serde")]
    pub(crate) fn insert_unique(&mut self, alias: String, entry: Entry) {
        self.pools.insert(alias, entry);
    }

    /// The pool `alias`, whose manager must be `M`.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use stickypool::{Pools, registry::LookupError};
    ///
    /// let mut pools = Pools::new();
    /// pools.register("main", Pool::new(Manager)?)?;
    /// let main: &Pool<Manager> = pools.get("main")?;
    /// drop(main.get()?);
    /// let err = pools.get::<Manager>("mian").unwrap_err();
    /// assert!(matches!(err, LookupError::UnknownAlias { .. }));
    /// assert!(err.to_string().contains("main"), "it lists the pools there are: {err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get<M: ManageConnection>(&self, alias: &str) -> Result<&Pool<M>, LookupError> {
        let entry = self
            .pools
            .get(alias)
            .ok_or_else(|| LookupError::UnknownAlias {
                alias: alias.to_owned(),
                known: self.known(),
            })?;
        entry
            .pool
            .as_any()
            .downcast_ref::<Pool<M>>()
            .ok_or_else(|| LookupError::WrongType {
                alias: alias.to_owned(),
                expected: short_type_name::<M>(),
                actual: entry.kind,
                known: self.known(),
            })
    }

    /// Removes the pool `alias` and returns it, if it is there with manager `M`.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let mut pools = stickypool::Pools::new();
    /// pools.register("old", Pool::new(Manager)?)?;
    /// let old: Pool<Manager> = pools.remove("old")?;
    /// old.close();
    /// assert!(pools.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove<M: ManageConnection>(&mut self, alias: &str) -> Result<Pool<M>, LookupError> {
        let pool = self.get::<M>(alias)?.clone();
        self.pools.remove(alias);
        Ok(pool)
    }

    /// The aliases, in order.
    pub fn aliases(&self) -> impl Iterator<Item = &str> + '_ {
        self.pools.keys().map(String::as_str)
    }

    /// How many pools there are.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The state of every pool, by alias.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let mut pools = stickypool::Pools::new();
    /// pools.register("a", Pool::builder().max_size(2).build(Manager)?)?;
    /// pools.register("b", Pool::builder().max_size(3).build(Manager)?)?;
    /// for (alias, state) in pools.states() {
    ///     println!("{alias}: {} of {} open", state.connections, state.max_size);
    /// }
    /// let total: u64 = pools.stats().map(|(_, s)| s.connections_created).sum();
    /// assert_eq!(total, 5);
    /// pools.close_all();
    /// assert!(pools.states().all(|(_, s)| s.connections == 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn states(&self) -> impl Iterator<Item = (&str, State)> + '_ {
        self.pools.iter().map(|(a, e)| (a.as_str(), e.pool.state()))
    }

    /// The stats of every pool, by alias.
    pub fn stats(&self) -> impl Iterator<Item = (&str, Stats)> + '_ {
        self.pools.iter().map(|(a, e)| (a.as_str(), e.pool.stats()))
    }

    /// Closes every pool (see [`Pool::close`]).
    pub fn close_all(&self) {
        for entry in self.pools.values() {
            entry.pool.close();
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.pools.values()
    }

    fn known(&self) -> Vec<String> {
        self.pools
            .iter()
            .map(|(alias, e)| format!("{alias} ({})", e.kind))
            .collect()
    }
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.pools
                    .iter()
                    .map(|(alias, e)| (alias, (e.kind, e.pool.state()))),
            )
            .finish()
    }
}

/// `stickypool::backends::mysql::MysqlManager` as `MysqlManager`, generics kept.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    match base.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

macro_rules! typed_getter {
    ($feature:literal, $method:ident, $manager:path, $doc:literal) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl Pools {
            #[doc = $doc]
            pub fn $method(&self, alias: &str) -> Result<&Pool<$manager>, LookupError> {
                self.get::<$manager>(alias)
            }
        }
    };
}

typed_getter!(
    "mysql",
    mysql,
    crate::backends::mysql::MysqlManager,
    "The MySQL pool `alias` (feature `mysql`)."
);
typed_getter!(
    "redis",
    redis,
    crate::backends::redis::RedisManager,
    "The Redis pool `alias` (feature `redis`)."
);
typed_getter!(
    "redis",
    redis_cluster,
    crate::backends::redis::RedisClusterManager,
    "The Redis Cluster pool `alias` (feature `redis`)."
);
typed_getter!(
    "sqlite",
    sqlite,
    crate::backends::sqlite::SqliteManager,
    "The SQLite pool `alias` (feature `sqlite`)."
);
typed_getter!(
    "postgres",
    postgres,
    crate::backends::postgres::PostgresManager,
    "The PostgreSQL pool `alias` (feature `postgres`)."
);
typed_getter!(
    "redis",
    redis_sentinel,
    crate::backends::redis_sentinel::RedisSentinelManager,
    "The Redis Sentinel pool `alias` (feature `redis`)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Pools>();
        shareable::<LookupError>();
    }

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<u32>(), "u32");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec<u8>");
    }
}
