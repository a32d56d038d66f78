//! Thread-local hints: which slot of which pool this thread used last.
//!
//! A thread that gives a connection back and borrows again tries that slot first, with
//! one CAS. The hints live in a small direct-mapped table indexed by pool id, so a
//! thread that uses a few pools keeps a hint for each. Both thread-locals are
//! const-initialized and have no destructor, so reading them is a plain TLS load.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

const WAYS: usize = 4;

thread_local! {
    /// `pool id << 32 | slot index`; pool ids start at 1, so 0 matches nothing.
    static HINTS: [Cell<u64>; WAYS] = const { [const { Cell::new(0) }; WAYS] };
    /// Where this thread starts scanning when its hint misses; spreads threads out.
    static SCAN_START: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(1);
static NEXT_SCAN_START: AtomicUsize = AtomicUsize::new(0);

/// A new pool id (never 0).
pub(crate) fn new_pool_id() -> u32 {
    loop {
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// The slot this thread last used in pool `pool`, or `usize::MAX`.
#[inline]
pub(crate) fn hint(pool: u32) -> usize {
    HINTS.with(|hints| {
        let entry = hints[pool as usize % WAYS].get();
        if (entry >> 32) as u32 == pool {
            entry as u32 as usize
        } else {
            usize::MAX
        }
    })
}

/// Remembers that this thread used `slot` of pool `pool`.
#[inline]
pub(crate) fn remember(pool: u32, slot: usize) {
    HINTS.with(|hints| {
        let entry = &hints[pool as usize % WAYS];
        let value = u64::from(pool) << 32 | slot as u64;
        if entry.get() != value {
            entry.set(value);
        }
    });
}

/// This thread's scan start (assigned on first use).
#[inline]
pub(crate) fn scan_start() -> usize {
    SCAN_START.with(|start| {
        let value = start.get();
        if value != usize::MAX {
            return value;
        }
        let value = NEXT_SCAN_START.fetch_add(1, Ordering::Relaxed) % (usize::MAX / 2);
        start.set(value);
        value
    })
}
