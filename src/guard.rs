//! The borrow guards: [`PooledConnection`] borrows the pool, [`OwnedConnection`] holds
//! it. Both give the connection back when dropped.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::engine::{Checkout, Shared};
use crate::extensions::Extensions;
use crate::manager::ManageConnection;

/// A borrowed connection. Derefs to the connection; dropping it gives the connection
/// back to the pool (reset first if the pool is set to).
///
/// A panic while it is held leaves the connection anywhere, mid-transaction included.
/// If the manager can reset connections ([`ManageConnection::can_reset`], as every
/// ready manager does), the pool keeps it only after it has passed `has_broken`, the
/// check (bounded by the validation timeout) and a rollback (the session reset where
/// that is the pool's reset; never a commit), and counts it in
/// [`Stats::recovered_after_panic`](crate::Stats::recovered_after_panic); otherwise, or
/// if any of those fails, it closes the connection
/// ([`CloseReason::Discarded`](crate::CloseReason::Discarded)).
pub struct PooledConnection<'a, M: ManageConnection> {
    pool: &'a Shared<M>,
    checkout: Option<Checkout<M::Connection>>,
}

/// A borrowed connection that owns a handle to its pool, so it is `'static` and can be
/// stored in structs. Otherwise the same as [`PooledConnection`].
pub struct OwnedConnection<M: ManageConnection> {
    pool: Arc<Shared<M>>,
    checkout: Option<Checkout<M::Connection>>,
}

macro_rules! guard_impl {
    ($guard:ident $(<$lt:lifetime>)?) => {
        impl<$($lt,)? M: ManageConnection> $guard<$($lt,)? M> {
            fn checkout(&self) -> &Checkout<M::Connection> {
                // Always `Some` until `drop`, `detach` or `discard` take it.
                self.checkout.as_ref().expect("guard already released")
            }

            /// Takes the connection out of the pool for good (an associated function, as
            /// are `discard` and `id`, so it never hides a method of the connection). Its slot is freed, and the
            /// pool may open another connection in its place.
            ///
            /// ```
            /// # use stickypool::{ManageConnection, Pool, PooledConnection};
            /// # #[derive(Debug)] struct Manager;
            /// # impl ManageConnection for Manager {
            /// #     type Connection = Vec<u8>;
            /// #     type Error = std::io::Error;
            /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
            /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
            /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
            /// # }
            /// let pool = Pool::builder().max_size(1).min_idle(Some(0)).build(Manager)?;
            /// let conn: Vec<u8> = PooledConnection::detach(pool.get()?); // yours now; the pool forgets it
            /// assert_eq!(pool.state().connections, 0);
            /// assert!(pool.get().is_ok(), "the freed slot gets a new connection");
            /// # drop(conn);
            /// # Ok::<(), stickypool::Error>(())
            /// ```
            pub fn detach(mut this: Self) -> M::Connection {
                let checkout = this.checkout.take().expect("guard already released");
                this.pool.detach(checkout)
            }

            /// Closes the connection instead of giving it back, for a connection the
            /// caller knows to be unusable.
            ///
            /// ```
            /// # use stickypool::{ManageConnection, Pool, PooledConnection};
            /// # #[derive(Debug)] struct Manager;
            /// # impl ManageConnection for Manager {
            /// #     type Connection = Vec<u8>;
            /// #     type Error = std::io::Error;
            /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
            /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
            /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
            /// # }
            /// let pool = Pool::builder().max_size(1).min_idle(Some(0)).build(Manager)?;
            /// let conn = pool.get()?;
            /// let id = PooledConnection::id(&conn);
            /// PooledConnection::discard(conn); // closed, not reused
            /// assert_ne!(PooledConnection::id(&pool.get()?), id);
            /// assert_eq!(pool.stats().closed.get(stickypool::CloseReason::Discarded), 1);
            /// # Ok::<(), stickypool::Error>(())
            /// ```
            pub fn discard(mut this: Self) {
                let checkout = this.checkout.take().expect("guard already released");
                this.pool.checkin(checkout, true);
            }

            /// The connection's [`Extensions`]: state of the caller's that lives as
            /// long as the connection (r2d2's associated function, so it never hides a
            /// method of the connection).
            ///
            /// ```
            /// # use stickypool::{ManageConnection, Pool, PooledConnection};
            /// # #[derive(Debug)] struct Manager;
            /// # impl ManageConnection for Manager {
            /// #     type Connection = ();
            /// #     type Error = std::io::Error;
            /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
            /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
            /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
            /// # }
            /// struct Uses(u32);
            ///
            /// let pool = Pool::builder().max_size(1).build(Manager)?;
            /// for _ in 0..3 {
            ///     let mut conn = pool.get()?;
            ///     let ext = PooledConnection::extensions_mut(&mut conn);
            ///     match ext.get_mut::<Uses>() {
            ///         Some(uses) => uses.0 += 1,
            ///         None => drop(ext.insert(Uses(1))),
            ///     }
            /// }
            /// let conn = pool.get()?;
            /// assert_eq!(PooledConnection::extensions(&conn).get::<Uses>().unwrap().0, 3);
            /// # Ok::<(), stickypool::Error>(())
            /// ```
            pub fn extensions(this: &Self) -> &Extensions {
                &this.checkout().entry().extensions
            }

            /// The connection's [`Extensions`], mutably.
            pub fn extensions_mut(this: &mut Self) -> &mut Extensions {
                let checkout = this.checkout.as_mut().expect("guard already released");
                &mut checkout.entry_mut().extensions
            }

            /// The id the pool gave this connection (as in events and logs).
            pub fn id(this: &Self) -> u64 {
                this.checkout().entry().id
            }
        }

        impl<$($lt,)? M: ManageConnection> Deref for $guard<$($lt,)? M> {
            type Target = M::Connection;

            #[inline]
            fn deref(&self) -> &M::Connection {
                &self.checkout().entry().conn
            }
        }

        impl<$($lt,)? M: ManageConnection> DerefMut for $guard<$($lt,)? M> {
            #[inline]
            fn deref_mut(&mut self) -> &mut M::Connection {
                let checkout = self.checkout.as_mut().expect("guard already released");
                &mut checkout.entry_mut().conn
            }
        }

        impl<$($lt,)? M: ManageConnection> Drop for $guard<$($lt,)? M> {
            #[inline(always)]
            fn drop(&mut self) {
                if let Some(checkout) = self.checkout.take() {
                    self.pool.checkin(checkout, false);
                }
            }
        }

        // Not the connection itself: drivers' `Debug` may print credentials.
        impl<$($lt,)? M: ManageConnection> fmt::Debug for $guard<$($lt,)? M> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("pool", &self.pool.name())
                    .field("id", &Self::id(self))
                    .finish_non_exhaustive()
            }
        }
    };
}

guard_impl!(PooledConnection<'a>);
guard_impl!(OwnedConnection);

impl<'a, M: ManageConnection> PooledConnection<'a, M> {
    pub(crate) fn new(pool: &'a Shared<M>, checkout: Checkout<M::Connection>) -> Self {
        PooledConnection {
            pool,
            checkout: Some(checkout),
        }
    }
}

impl<M: ManageConnection> OwnedConnection<M> {
    pub(crate) fn new(pool: Arc<Shared<M>>, checkout: Checkout<M::Connection>) -> Self {
        OwnedConnection {
            pool,
            checkout: Some(checkout),
        }
    }
}
