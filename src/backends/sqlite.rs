//! SQLite through [`rusqlite`](https://docs.rs/rusqlite), with SQLite compiled in
//! (feature `sqlite`, linked to the system's libsqlite3;
//! `sqlite-bundled` compiles SQLite in).
//!
//! [`SqliteManager`] opens a [`rusqlite::Connection`] per pool slot, to a database file
//! ([`SqliteManager::file`]) or to an in-memory database that all the pool's connections
//! share ([`SqliteManager::memory`]). Open flags are the driver's
//! [`OpenFlags`]; an init hook runs on every new connection for pragmas and the like.
//!
//! ```no_run
//! use std::time::Duration;
//! use stickypool::backends::sqlite::SqliteManager;
//! use stickypool::{Pool, ResetAction};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The busy timeout is set before the init hook runs: switching to WAL takes a
//! // lock, and the pool opens connections concurrently.
//! let manager = SqliteManager::file("app.db")
//!     .busy_timeout(Duration::from_secs(2))
//!     .with_init(|conn| {
//!         conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
//!     });
//! let pool = Pool::builder()
//!     .max_size(8)
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//!
//! let conn = pool.get()?;
//! conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)", [])?;
//! conn.execute("INSERT OR REPLACE INTO kv VALUES (?1, ?2)", ["greeting", "hello"])?;
//! # Ok(())
//! # }
//! ```
//!
//! # In-memory databases
//!
//! A plain `:memory:` database belongs to the one connection that opened it, which is
//! useless in a pool. [`SqliteManager::memory`] gives each manager its own named
//! database in SQLite's `memdb` VFS (a name starting with `/`, unique in the process),
//! which every connection of the manager opens, so they all see the same tables. The
//! manager keeps one extra connection open for as long as it lives, so the database
//! does not vanish when the pool happens to close all its connections (idle reaping,
//! lifetime retirement).
//!
//! `memdb` is used rather than the older `file:name?mode=memory&cache=shared` URIs:
//! shared-cache mode makes concurrent connections fail at once with
//! `SQLITE_LOCKED` (table locks), which no busy timeout waits out, and SQLite's
//! documentation discourages it. `memdb` databases use the ordinary database locks, so
//! a writer waits for another one through the busy timeout as it would on a file. (WAL
//! is not available in memory: readers and writers take turns. And as on a file, a
//! transaction that reads first and writes later can fail at once with `SQLITE_BUSY`
//! when another connection is already writing; start such transactions with
//! `BEGIN IMMEDIATE`.)
//!
//! # What the hooks do
//!
//! * [`is_valid`](ManageConnection::is_valid) runs `SELECT 1` (a cached statement).
//! * [`has_broken`](ManageConnection::has_broken) returns `false`: there is no server
//!   and no socket to lose.
//! * [`reset`](ManageConnection::reset) looks at
//!   [`Connection::is_autocommit`] (a flag read, no I/O): when it is `true` no
//!   transaction is open and nothing is done. Otherwise [`ResetAction::Rollback`] and
//!   [`ResetAction::Session`] send `ROLLBACK` and [`ResetAction::Commit`] sends `COMMIT`
//!   (if the commit fails, for example `SQLITE_BUSY` past the busy timeout, the error is
//!   returned and the pool closes the connection, which rolls the transaction back).
//!   SQLite has no session to reset beyond the transaction: temporary tables, attached
//!   databases and pragmas a borrower changed stay.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use crate::manager::{ManageConnection, ResetAction};

type InitFn = dyn Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync + 'static;

enum Source {
    File(PathBuf),
    /// A `memdb` database name, and the connection that keeps it alive once opened.
    Memory {
        name: String,
        keep_alive: Mutex<Option<Connection>>,
    },
}

/// The busy timeout of a [`SqliteManager`] unless set (rusqlite's own default).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`ManageConnection`] for SQLite connections ([`rusqlite::Connection`]).
///
/// See the [module documentation](self) for an example and for what each hook does.
pub struct SqliteManager {
    source: Source,
    flags: OpenFlags,
    init: Option<Arc<InitFn>>,
    busy_timeout: Duration,
    /// Runs the init hook of one connection at a time (see `connect`).
    init_serial: Mutex<()>,
}

impl SqliteManager {
    /// A manager for the database file at `path` (created if missing), opened with
    /// [`OpenFlags::default`] (read-write, create, URI file names allowed, no mutex:
    /// a pooled connection is used by one thread at a time).
    pub fn file(path: impl AsRef<Path>) -> SqliteManager {
        SqliteManager {
            source: Source::File(path.as_ref().to_path_buf()),
            flags: OpenFlags::default(),
            init: None,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            init_serial: Mutex::new(()),
        }
    }

    /// A manager for a new in-memory database shared by all the connections this manager
    /// opens, and by no other manager. It lives as long as the manager. See the
    /// [module documentation](self#in-memory-databases).
    pub fn memory() -> SqliteManager {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "/stickypool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        SqliteManager {
            source: Source::Memory {
                name,
                keep_alive: Mutex::new(None),
            },
            flags: OpenFlags::default(),
            init: None,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            init_serial: Mutex::new(()),
        }
    }

    /// How long a statement waits for a database that another connection has locked
    /// before it fails with `SQLITE_BUSY` (SQLite's busy timeout), set on every new
    /// connection before the init hook runs. Default: 5 s ([`DEFAULT_BUSY_TIMEOUT`]).
    pub fn busy_timeout(mut self, timeout: Duration) -> SqliteManager {
        self.busy_timeout = timeout;
        self
    }

    /// Opens connections with these flags instead of [`OpenFlags::default`] (read-only,
    /// for example). For an in-memory database the flags to read, write and create are
    /// always added.
    pub fn with_flags(mut self, flags: OpenFlags) -> SqliteManager {
        self.flags = flags;
        self
    }

    /// Runs `init` on every new connection before the pool hands it out: pragmas
    /// (`journal_mode = WAL`, `foreign_keys`, `busy_timeout`), functions, attached
    /// databases. Its error fails the connect and is returned as is. The pool opens
    /// connections concurrently, but one manager runs its hook for one connection at a
    /// time: switching to WAL or creating a table takes a lock that a second
    /// connection doing the same at that moment may fail on ("database is locked").
    pub fn with_init<F>(mut self, init: F) -> SqliteManager
    where
        F: Fn(&mut Connection) -> rusqlite::Result<()> + Send + Sync + 'static,
    {
        self.init = Some(Arc::new(init));
        self
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) => Some(path),
            Source::Memory { .. } => None,
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        match &self.source {
            Source::File(path) => Connection::open_with_flags(path, self.flags),
            Source::Memory { name, keep_alive } => {
                let flags =
                    self.flags | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
                let flags = flags - OpenFlags::SQLITE_OPEN_READ_ONLY;
                let open = || Connection::open_with_flags_and_vfs(name, flags, "memdb");
                {
                    let mut keep_alive = keep_alive.lock();
                    if keep_alive.is_none() {
                        *keep_alive = Some(open()?);
                    }
                }
                open()
            }
        }
    }
}

impl fmt::Debug for SqliteManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("SqliteManager");
        match &self.source {
            Source::File(path) => s.field("path", path),
            Source::Memory { name, .. } => s.field("memory", name),
        };
        s.field("flags", &self.flags)
            .field("busy_timeout", &self.busy_timeout)
            .field("init", &self.init.as_ref().map(|_| "Fn(&mut Connection)"))
            .finish()
    }
}

impl ManageConnection for SqliteManager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> rusqlite::Result<Connection> {
        let mut conn = self.open()?;
        conn.busy_timeout(self.busy_timeout)?;
        if let Some(init) = &self.init {
            let _one_at_a_time = self.init_serial.lock();
            init(&mut conn)?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))
    }

    fn has_broken(&self, _conn: &mut Connection) -> bool {
        false
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut Connection, action: ResetAction) -> rusqlite::Result<()> {
        if conn.is_autocommit() {
            return Ok(());
        }
        match action {
            ResetAction::Keep => Ok(()),
            ResetAction::Commit => conn.execute_batch("COMMIT"),
            ResetAction::Rollback | ResetAction::Session => conn.execute_batch("ROLLBACK"),
        }
    }
}
