//! Per-connection user state: a map from type to one value of that type, kept in the
//! connection's entry for as long as the connection lives (r2d2's `Extensions`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// Values of any `'static + Send + Sync` type attached to a pooled connection, one per
/// type: prepared statements, a session id, what a customizer learned at connect. They
/// live as long as the connection and are dropped with it. Reached through
/// [`PooledConnection::extensions`](crate::PooledConnection::extensions) and
/// [`extensions_mut`](crate::PooledConnection::extensions_mut); empty, it allocates
/// nothing.
///
/// ```
/// let mut ext = stickypool::Extensions::new();
/// assert_eq!(ext.insert(7u32), None);
/// assert_eq!(ext.insert(8u32), Some(7));
/// *ext.get_mut::<u32>().unwrap() += 1;
/// assert_eq!(ext.get::<u32>(), Some(&9));
/// assert_eq!(ext.remove::<u32>(), Some(9));
/// assert!(ext.get::<u32>().is_none());
/// ```
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// An empty map.
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Stores `value`, returning the value of that type stored before.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        let old = self.0.insert(TypeId::of::<T>(), Box::new(value))?;
        old.downcast().ok().map(|boxed| *boxed)
    }

    /// The stored value of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The stored value of type `T`, mutably.
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.0.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Takes the stored value of type `T` out.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let old = self.0.remove(&TypeId::of::<T>())?;
        old.downcast().ok().map(|boxed| *boxed)
    }

    /// Drops every value.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// Shows how many values there are (their types are not `Debug`).
impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.0.len())
            .finish()
    }
}
