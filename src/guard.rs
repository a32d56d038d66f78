//! The borrow guards: [`PooledConnection`] borrows the pool, [`OwnedConnection`] holds
//! it. Both give the connection back when dropped.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::engine::{Checkout, Shared};
use crate::manager::ManageConnection;

/// A borrowed connection. Derefs to the connection; dropping it gives the connection
/// back to the pool (reset first if the pool is set to). A panic while it is held
/// closes the connection instead, since it may be mid-transaction.
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

// SAFETY: a guard is the only owner of its connection (it holds the slot's ticket), so
// moving it to another thread moves the connection: `Connection: Send` (required by
// `ManageConnection`) is what that needs. The pool it points to is `Sync`.
unsafe impl<M: ManageConnection> Send for PooledConnection<'_, M> {}
// SAFETY: `&guard` gives only `&Connection`, so sharing it needs `Connection: Sync`.
unsafe impl<M: ManageConnection> Sync for PooledConnection<'_, M> where M::Connection: Sync {}
// SAFETY: as for `PooledConnection`.
unsafe impl<M: ManageConnection> Send for OwnedConnection<M> {}
// SAFETY: as for `PooledConnection`.
unsafe impl<M: ManageConnection> Sync for OwnedConnection<M> where M::Connection: Sync {}

macro_rules! guard_impl {
    ($guard:ident $(<$lt:lifetime>)?) => {
        impl<$($lt,)? M: ManageConnection> $guard<$($lt,)? M> {
            fn checkout(&self) -> &Checkout<M::Connection> {
                // Always `Some` until `drop`, `detach` or `discard` take it.
                self.checkout.as_ref().expect("guard already released")
            }

            /// Takes the connection out of the pool for good. Its slot is freed, and the
            /// pool may open another connection in its place.
            pub fn detach(mut self) -> M::Connection {
                let checkout = self.checkout.take().expect("guard already released");
                self.pool.detach(checkout)
            }

            /// Closes the connection instead of giving it back, for a connection the
            /// caller knows to be unusable.
            pub fn discard(mut self) {
                let checkout = self.checkout.take().expect("guard already released");
                self.pool.checkin(checkout, true);
            }

            /// The id the pool gave this connection (as in events and logs).
            pub fn id(&self) -> u64 {
                // SAFETY: the guard owns the slot, so the entry is valid and not
                // touched by any other thread.
                unsafe { self.checkout().entry.as_ref().id }
            }
        }

        impl<$($lt,)? M: ManageConnection> Deref for $guard<$($lt,)? M> {
            type Target = M::Connection;

            #[inline]
            fn deref(&self) -> &M::Connection {
                // SAFETY: the guard owns the slot (it holds its ticket), so the entry
                // stays in place and no other thread touches it until the guard drops.
                unsafe { &self.checkout().entry.as_ref().conn }
            }
        }

        impl<$($lt,)? M: ManageConnection> DerefMut for $guard<$($lt,)? M> {
            #[inline]
            fn deref_mut(&mut self) -> &mut M::Connection {
                let entry = self.checkout().entry;
                // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
                unsafe { &mut (*entry.as_ptr()).conn }
            }
        }

        impl<$($lt,)? M: ManageConnection> Drop for $guard<$($lt,)? M> {
            #[inline]
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
                    .field("pool", &self.pool.config.name)
                    .field("id", &self.id())
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
