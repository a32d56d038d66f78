//! Thread-bound connections: one connection per pool and thread for a scope, shared by
//! every call on the thread's stack without passing it down.
//!
//! [`Pool::bind`] borrows a connection and binds it to the calling thread. While any
//! [`BoundConnection`] guard of that pool is alive on the thread, further `bind` calls
//! on the same thread return a guard to the *same* connection (and so to its open
//! transaction). The connection goes back to the pool when the last guard of the thread
//! drops, whatever order the guards drop in. A thread can have bound connections of
//! several pools at once; each pool is independent. A helper that finds the connection
//! broken calls [`BoundConnection::discard_on_release`], and the connection is closed
//! instead of returned when the last guard drops.
//!
//! ```
//! # use stickypool::{ManageConnection, Pool};
//! # #[derive(Debug)] struct Manager;
//! # impl ManageConnection for Manager {
//! #     type Connection = Vec<&'static str>;
//! #     type Error = std::io::Error;
//! #     fn connect(&self) -> Result<Self::Connection, std::io::Error> { Ok(Vec::new()) }
//! #     fn is_valid(&self, _: &mut Self::Connection) -> Result<(), std::io::Error> { Ok(()) }
//! #     fn has_broken(&self, _: &mut Self::Connection) -> bool { false }
//! # }
//! fn audit(pool: &Pool<Manager>) -> Result<(), stickypool::Error> {
//!     // Deep in the call stack: the same connection as the caller's.
//!     let conn = pool.bind()?;
//!     conn.borrow_mut().push("audit row");
//!     Ok(())
//! }
//!
//! let pool = Pool::builder().max_size(2).build(Manager)?;
//! let conn = pool.bind()?;
//! conn.borrow_mut().push("order row");
//! audit(&pool)?;
//! assert_eq!(conn.borrow().len(), 2);
//! assert_eq!(pool.state().in_use, 1);
//! drop(conn); // the last guard of this thread: back to the pool
//! assert_eq!(pool.state().in_use, 0);
//! # Ok::<(), stickypool::Error>(())
//! ```
//!
//! # Why access goes through `borrow` / `borrow_mut`
//!
//! Several live guards alias one connection, so a guard cannot implement `DerefMut`:
//! two guards on the stack would hand out two `&mut` to the same connection. Each
//! thread's bound connection therefore sits in an `Rc<RefCell<..>>`, and a guard gives
//! access through [`BoundConnection::borrow`] and [`BoundConnection::borrow_mut`], which
//! return the standard [`Ref`]/[`RefMut`]. Overlapping borrows are caught at run time:
//! `borrow_mut` while another borrow of the same connection is alive panics with a
//! message naming the pool ([`BoundConnection::try_borrow_mut`] returns an error
//! instead). In practice: borrow for a statement or a block, and drop the borrow before
//! calling a helper that binds the pool itself. The `Rc` also makes the guard `!Send`
//! and `!Sync`, so a bound connection never leaves its thread.
//!
//! # Storage and panics
//!
//! The thread-local map from pool id to bound connection holds the connection as an
//! [`OwnedConnection`] behind `Rc<dyn Any>`: one allocation and a downcast per `bind`,
//! which is fine because binding is a per-request operation, not the hot path of
//! [`Pool::get`]. The map holds one reference and every guard another; the guard whose
//! drop leaves only the map's reference removes the entry and drops the
//! `OwnedConnection`, which gives the connection back. That happens after the map's
//! borrow ends, so event handlers and customizers run by the pool may bind again.
//!
//! A panic while bound unwinds through the guards; the last one to drop returns the
//! connection while the thread is panicking, so the pool rolls it back or closes it
//! exactly as for a plain guard ([`PooledConnection`](crate::PooledConnection)). A `RefMut` alive during the panic is
//! dropped first and leaves nothing borrowed, and the thread's map is left without the
//! entry: nothing stays poisoned or bound.

use std::any::Any;
use std::cell::{Ref, RefCell, RefMut};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::error::Error;
use crate::guard::OwnedConnection;
use crate::manager::ManageConnection;
use crate::pool::Pool;

/// A bound connection: its id and the type-erased `Rc<RefCell<OwnedConnection<M>>>`.
type Bound = (u64, Rc<dyn Any>);

thread_local! {
    /// The thread's bound connections (each an `Rc<RefCell<OwnedConnection<M>>>`).
    /// Pool id to the id of the connection and the connection itself.
    static BOUND: RefCell<HashMap<u64, Bound>> = RefCell::new(HashMap::new());
}

/// What the thread-local map and the guards share.
struct BoundCell<M: ManageConnection> {
    conn: RefCell<OwnedConnection<M>>,
    /// Close the connection instead of returning it, when the last guard drops.
    discard: std::cell::Cell<bool>,
}

/// A guard for the connection bound to this thread; see the [module docs](self).
///
/// Every guard of one pool on one thread refers to the same connection. Access it with
/// [`borrow`](BoundConnection::borrow) and [`borrow_mut`](BoundConnection::borrow_mut).
/// Not `Send`: the connection stays on its thread.
pub struct BoundConnection<M: ManageConnection> {
    pool_id: u64,
    conn_id: u64,
    name: String,
    conn: Option<Rc<BoundCell<M>>>,
}

/// A [`BoundConnection::try_borrow_mut`] or [`BoundConnection::try_borrow`] that would
/// overlap a borrow already alive on this thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyBorrowed {
    pool: String,
}

impl fmt::Display for AlreadyBorrowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the connection of pool '{}' bound to this thread is already borrowed by an \
             enclosing scope; drop that borrow before borrowing it again",
            self.pool
        )
    }
}

impl std::error::Error for AlreadyBorrowed {}

impl<M: ManageConnection> Pool<M> {
    /// Binds a connection to this thread for as long as the returned guard (or any
    /// other guard of this pool on this thread) lives; calls on the same thread get the
    /// same connection. Waits up to `connection_timeout` for the first one. See
    /// [`BoundConnection`].
    pub fn bind(&self) -> Result<BoundConnection<M>, Error> {
        self.bind_timeout(self.connection_timeout())
    }

    /// [`bind`](Pool::bind), waiting up to `timeout` if this thread has no bound
    /// connection of this pool yet. Errors are those of [`get_timeout`](Pool::get_timeout).
    pub fn bind_timeout(&self, timeout: Duration) -> Result<BoundConnection<M>, Error> {
        let id = self.id();
        let existing = BOUND.with(|bound| bound.borrow().get(&id).cloned());
        let (conn_id, conn) = match existing {
            Some((conn_id, conn)) => match Rc::downcast::<BoundCell<M>>(conn) {
                Ok(conn) => (conn_id, conn),
                // Pool ids are unique in the process, so the type always matches.
                Err(_) => unreachable!("pool ids are unique"),
            },
            None => {
                let owned = self.get_owned_timeout(timeout)?;
                let conn_id = crate::OwnedConnection::id(&owned);
                let conn = Rc::new(BoundCell {
                    conn: RefCell::new(owned),
                    discard: std::cell::Cell::new(false),
                });
                let erased: Rc<dyn Any> = conn.clone();
                BOUND.with(|bound| bound.borrow_mut().insert(id, (conn_id, erased)));
                (conn_id, conn)
            }
        };
        Ok(BoundConnection {
            pool_id: id,
            conn_id,
            name: self.name().to_owned(),
            conn: Some(conn),
        })
    }

    /// Whether this thread has a bound connection of this pool.
    pub fn is_bound(&self) -> bool {
        let id = self.id();
        BOUND
            .try_with(|bound| bound.borrow().contains_key(&id))
            .unwrap_or(false)
    }
}

impl<M: ManageConnection> BoundConnection<M> {
    fn cell(&self) -> &BoundCell<M> {
        // `Some` until `drop`.
        self.conn.as_deref().expect("bound guard already dropped")
    }

    /// Shared access to the connection.
    ///
    /// # Panics
    ///
    /// If a [`borrow_mut`](BoundConnection::borrow_mut) of this thread's connection is
    /// alive (through this guard or another one of the same pool).
    #[track_caller]
    pub fn borrow(&self) -> Ref<'_, M::Connection> {
        match self.try_borrow() {
            Ok(conn) => conn,
            Err(e) => panic!("{e}"),
        }
    }

    /// Exclusive access to the connection.
    ///
    /// # Panics
    ///
    /// If any other borrow of this thread's connection is alive (through this guard or
    /// another one of the same pool).
    #[track_caller]
    pub fn borrow_mut(&self) -> RefMut<'_, M::Connection> {
        match self.try_borrow_mut() {
            Ok(conn) => conn,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`borrow`](BoundConnection::borrow), or an error instead of a panic.
    pub fn try_borrow(&self) -> Result<Ref<'_, M::Connection>, AlreadyBorrowed> {
        self.cell()
            .conn
            .try_borrow()
            .map(|guard| Ref::map(guard, |conn| &**conn))
            .map_err(|_| self.already_borrowed())
    }

    /// [`borrow_mut`](BoundConnection::borrow_mut), or an error instead of a panic.
    pub fn try_borrow_mut(&self) -> Result<RefMut<'_, M::Connection>, AlreadyBorrowed> {
        self.cell()
            .conn
            .try_borrow_mut()
            .map(|guard| RefMut::map(guard, |conn| &mut **conn))
            .map_err(|_| self.already_borrowed())
    }

    fn already_borrowed(&self) -> AlreadyBorrowed {
        AlreadyBorrowed {
            pool: self.name.clone(),
        }
    }

    /// The id the pool gave the connection (as in events and logs).
    pub fn id(&self) -> u64 {
        self.conn_id
    }

    /// Closes the connection instead of giving it back when the last guard of this
    /// thread drops, for a connection found unusable (a connectivity error) by a
    /// helper that does not own the outermost guard. See
    /// [`PooledConnection::discard`](crate::PooledConnection::discard).
    pub fn discard_on_release(&self) {
        self.cell().discard.set(true);
    }

    /// How many guards of this connection are alive on this thread, this one included.
    pub fn depth(&self) -> usize {
        // The thread-local map holds one reference, every guard another.
        self.conn
            .as_ref()
            .map_or(0, |conn| Rc::strong_count(conn).saturating_sub(1))
    }
}

impl<M: ManageConnection> Drop for BoundConnection<M> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Two references: ours and the map's. Then we are the last guard.
        if Rc::strong_count(&conn) > 2 {
            return;
        }
        drop(conn);
        let id = self.pool_id;
        // Take the entry out first, drop it after the map's borrow ends: giving the
        // connection back runs pool code (events, customizers) that may bind again.
        // `try_with`: during thread exit the map may already be gone, and with it the
        // connection (returned by the map's destructor).
        let entry = BOUND
            .try_with(|bound| bound.borrow_mut().remove(&id))
            .ok()
            .flatten();
        let Some((_, erased)) = entry else { return };
        // The map's reference was the last one: unwrap it to decide how to release.
        if let Ok(cell) = Rc::downcast::<BoundCell<M>>(erased)
            && let Ok(cell) = Rc::try_unwrap(cell)
        {
            let owned = cell.conn.into_inner();
            if cell.discard.get() {
                crate::OwnedConnection::discard(owned);
            } else {
                drop(owned);
            }
        }
    }
}

impl<M: ManageConnection> fmt::Debug for BoundConnection<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundConnection")
            .field("pool", &self.name)
            .field("id", &self.id())
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}
