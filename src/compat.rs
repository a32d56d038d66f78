//! r2d2's API, names and shapes, for porting with an import change:
//! `use stickypool::compat as r2d2;` where the service said `use r2d2;` (or
//! `use stickypool::compat::{Pool, PooledConnection};` for `use r2d2::{...};`).
//!
//! The one difference from stickypool's own [`Pool`](crate::Pool) is the guard:
//! r2d2's [`PooledConnection<M>`] has no lifetime (it is stored in structs, returned
//! from functions and sent to threads), so every borrow here clones the pool's `Arc`,
//! as r2d2 does. stickypool's own `get` returns a guard that borrows the pool instead
//! and costs no shared write; the porting guide (`docs/porting.md`) says when to
//! switch and what it gains. Everything else is stickypool's: the same settings, behaviour and
//! error type, and the whole of stickypool's API through `Deref` to its `Pool`.
//!
//! ```
//! use stickypool::compat as r2d2;
//!
//! #[derive(Debug)]
//! struct Manager;
//!
//! impl r2d2::ManageConnection for Manager {
//!     type Connection = Vec<u8>;
//!     type Error = std::io::Error;
//!     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
//!     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
//!     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
//! }
//!
//! type DbPool = r2d2::Pool<Manager>;
//!
//! struct Request {
//!     conn: r2d2::PooledConnection<Manager>, // no lifetime, as in r2d2
//! }
//!
//! let pool: DbPool = r2d2::Pool::builder().max_size(4).build(Manager)?;
//! let mut request = Request { conn: pool.get()? };
//! std::thread::spawn(move || request.conn.push(1)).join().unwrap();
//! assert_eq!(pool.state().connections, 4);
//! # Ok::<(), r2d2::Error>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

pub use crate::event::{self, HandleEvent, NopEventHandler};
pub use crate::{
    CustomizeConnection, Error, Extensions, HandleError, LoggingErrorHandler, ManageConnection,
    NopConnectionCustomizer, NopErrorHandler, State,
};

/// r2d2's `Builder`: stickypool's [`Builder`](crate::Builder), building a [`Pool`].
pub type Builder<M> = crate::Builder<M, Pool<M>>;

/// r2d2's `PooledConnection<M>`: a `'static` guard that holds a handle to its pool.
pub type PooledConnection<M> = crate::OwnedConnection<M>;

/// r2d2's `Pool`: stickypool's [`Pool`](crate::Pool) whose borrows return
/// [`PooledConnection<M>`] (no lifetime). Derefs to stickypool's `Pool` for the rest
/// of its API (`stats`, `close`, `bind`, and its borrowing `get` as `pool.deref().get()`).
pub struct Pool<M: ManageConnection>(crate::Pool<M>);

impl<M: ManageConnection> Pool<M> {
    /// A pool with the default settings (r2d2's `Pool::new`).
    pub fn new(manager: M) -> Result<Pool<M>, Error> {
        Pool::builder().build(manager)
    }

    /// A builder (r2d2's `Pool::builder`).
    pub fn builder() -> Builder<M> {
        Builder::default()
    }

    /// Borrows a connection, waiting up to `connection_timeout`.
    pub fn get(&self) -> Result<PooledConnection<M>, Error> {
        self.0.get_owned()
    }

    /// Borrows a connection, waiting up to `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection<M>, Error> {
        self.0.get_owned_timeout(timeout)
    }

    /// Borrows an idle connection if there is one, without waiting.
    pub fn try_get(&self) -> Option<PooledConnection<M>> {
        self.0.try_get_owned()
    }

    /// Whether every borrow is checked with `is_valid` (r2d2's getter): false when
    /// borrows are checked only after a while or never
    /// ([`check_on_borrow`](crate::Pool::check_on_borrow) says which).
    pub fn test_on_check_out(&self) -> bool {
        self.0.check_on_borrow() == Some(Duration::ZERO)
    }

    /// stickypool's own pool, whose `get` borrows without an `Arc` clone.
    pub fn inner(&self) -> &crate::Pool<M> {
        &self.0
    }

    /// Unwraps stickypool's own pool.
    pub fn into_inner(self) -> crate::Pool<M> {
        self.0
    }
}

impl<M: ManageConnection> From<crate::Pool<M>> for Pool<M> {
    fn from(pool: crate::Pool<M>) -> Pool<M> {
        Pool(pool)
    }
}

impl<M: ManageConnection> Deref for Pool<M> {
    type Target = crate::Pool<M>;

    fn deref(&self) -> &crate::Pool<M> {
        &self.0
    }
}

impl<M: ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool(self.0.clone())
    }
}

impl<M: ManageConnection + fmt::Debug> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
