//! Where the slots live: the ones allocated with the bag, and more, in segments, when
//! the pool grows (`Pool::set_max_size`). A slot never moves and never goes away before
//! the bag does, so references to it and tickets for it stay valid whatever the size.
//! `limit` is the current size: slots at or beyond it are not handed out by scans or
//! filled by creators, and the pool closes what they still hold.
//!
//! The uncontended borrow reads the first block only (one bounds check, as before);
//! slots of later segments cost one more load of the segment's pointer.

use std::sync::OnceLock;
// Not loom's: they change only when the pool is resized, which no model does.
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use super::{EMPTY, Slot};
use crate::sync::{AtomicU32, UnsafeCell};

type Block<T, X> = Box<[CachePadded<Slot<T, X>>]>;

/// Segments beyond the first block: segment `k` holds `base << k` slots, from index
/// `base << k`; 17 of them reach past `MAX_POOL_SIZE` (2^16) from any `base >= 1`.
const SEGMENTS: usize = 17;

#[derive(Debug)]
pub(super) struct Slots<T, X> {
    first: Block<T, X>,
    more: [OnceLock<Block<T, X>>; SEGMENTS],
    /// Slots allocated (every index below it is valid).
    capacity: AtomicUsize,
    /// Slots in use: the pool's current `max_size`.
    limit: AtomicUsize,
    /// Held while segments are added.
    growing: std::sync::Mutex<()>,
}

fn block<T, X: Default>(len: usize) -> Block<T, X> {
    (0..len)
        .map(|_| {
            CachePadded::new(Slot {
                state: AtomicU32::new(EMPTY),
                meta: X::default(),
                value: UnsafeCell::new(None),
            })
        })
        .collect()
}

impl<T, X: Default> Slots<T, X> {
    pub(super) fn new(len: usize) -> Slots<T, X> {
        Slots {
            first: block(len),
            more: std::array::from_fn(|_| OnceLock::new()),
            capacity: AtomicUsize::new(len),
            limit: AtomicUsize::new(len),
            growing: std::sync::Mutex::new(()),
        }
    }

    /// Makes `limit` the number of slots in use, allocating what is missing.
    pub(super) fn set_limit(&self, limit: usize) {
        let _growing = self.growing.lock().unwrap_or_else(|e| e.into_inner());
        let base = self.first.len().max(1);
        let mut capacity = self.capacity.load(Ordering::Relaxed);
        while capacity < limit {
            let k = (capacity / base).ilog2() as usize;
            self.more[k].get_or_init(|| block(base << k));
            capacity = base << (k + 1);
        }
        // Release: a thread that sees the new capacity or limit sees the segments.
        self.capacity.store(capacity, Ordering::Release);
        self.limit.store(limit, Ordering::Release);
    }
}

impl<T, X> Slots<T, X> {
    /// Slot `index`, if it exists.
    #[inline]
    pub(super) fn get(&self, index: usize) -> Option<&CachePadded<Slot<T, X>>> {
        match self.first.get(index) {
            Some(slot) => Some(slot),
            None => self.far(index),
        }
    }

    #[cold]
    #[inline(never)]
    fn far(&self, index: usize) -> Option<&CachePadded<Slot<T, X>>> {
        let base = self.first.len().max(1);
        let k = (index / base).checked_ilog2()? as usize;
        self.more.get(k)?.get()?.get(index - (base << k))
    }

    /// Slot `index`, which must exist (it came from a ticket or a scan).
    #[inline]
    pub(super) fn at(&self, index: usize) -> &CachePadded<Slot<T, X>> {
        match self.first.get(index) {
            Some(slot) => slot,
            None => self.far_at(index),
        }
    }

    #[cold]
    #[inline(never)]
    fn far_at(&self, index: usize) -> &CachePadded<Slot<T, X>> {
        self.far(index).expect("a slot below the capacity")
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }

    #[inline]
    pub(super) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The slots in use (below the limit).
    pub(super) fn in_use(&self) -> impl Iterator<Item = &CachePadded<Slot<T, X>>> {
        (0..self.limit()).map(|i| self.at(i))
    }
}
