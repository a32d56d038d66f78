//! Thread-local hints: which slot of which pool this thread used last.
//!
//! A thread that gives a connection back and borrows again tries that slot first, with
//! one CAS. The hints live in a small direct-mapped table indexed by pool id, so a
//! thread that uses a few pools keeps a hint for each. Both thread-locals are
//! const-initialized and have no destructor, so reading them is a plain TLS load.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries in the hint table, indexed by pool id: a thread that uses this many pools
/// or fewer (with consecutive ids) keeps a hint for each.
const HINT_ENTRIES: usize = 4;

/// A hint: the pool it is for (0 matches no pool) and the slot.
#[derive(Clone, Copy)]
struct Hint {
    pool: u64,
    slot: usize,
}

#[cfg(not(loom))]
thread_local! {
    static HINTS: [Cell<Hint>; HINT_ENTRIES] =
        const { [const { Cell::new(Hint { pool: 0, slot: 0 }) }; HINT_ENTRIES] };
    /// Where this thread starts scanning when its hint misses; spreads threads out.
    static SCAN_START: Cell<usize> = const { Cell::new(UNASSIGNED) };
}

/// 64-bit, so ids never repeat within a process: a hint or a bound connection of a
/// dropped pool can never be mistaken for another pool's.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);
#[cfg(not(loom))]
static NEXT_SCAN_START: AtomicUsize = AtomicUsize::new(0);

// Under loom, per loom thread and per execution: `std`'s thread-locals would be shared
// by every loom thread (they all run on one OS thread), and a scan start carried over
// from another model would change what a model explores from one run to the next.
#[cfg(loom)]
loom::thread_local! {
    static HINTS: [Cell<Hint>; HINT_ENTRIES] =
        [const { Cell::new(Hint { pool: 0, slot: 0 }) }; HINT_ENTRIES];
    static SCAN_START: Cell<usize> = Cell::new(UNASSIGNED);
}
#[cfg(loom)]
loom::lazy_static! {
    static ref NEXT_SCAN_START: AtomicUsize = AtomicUsize::new(0);
}

/// A thread's `SCAN_START` before its first scan.
const UNASSIGNED: usize = usize::MAX;

/// A new pool id, unique in the process (never 0).
pub(crate) fn new_pool_id() -> u64 {
    NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed)
}

/// The slot this thread last used in pool `pool`, or `bag::NO_HINT`.
#[inline]
pub(crate) fn hint(pool: u64) -> usize {
    HINTS.with(|hints| {
        let hint = hints[pool as usize % HINT_ENTRIES].get();
        if hint.pool == pool {
            hint.slot
        } else {
            crate::bag::NO_HINT
        }
    })
}

/// Remembers that this thread used `slot` of pool `pool`.
#[inline]
pub(crate) fn remember(pool: u64, slot: usize) {
    HINTS.with(|hints| {
        let entry = &hints[pool as usize % HINT_ENTRIES];
        let hint = entry.get();
        if hint.pool != pool || hint.slot != slot {
            entry.set(Hint { pool, slot });
        }
    });
}

/// This thread's scan start (assigned on first use).
#[inline]
pub(crate) fn scan_start() -> usize {
    SCAN_START.with(|start| {
        let value = start.get();
        if value != UNASSIGNED {
            return value;
        }
        let value = NEXT_SCAN_START.fetch_add(1, Ordering::Relaxed) % (usize::MAX / 2);
        start.set(value);
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_only_for_its_own_pool() {
        let pool = new_pool_id();
        remember(pool, 3);
        assert_eq!(hint(pool), 3);
        // Same table entry, and the same low 32 bits: a 32-bit id would match here.
        assert_eq!(hint(pool + (1 << 32)), crate::bag::NO_HINT);
        assert_eq!(hint(pool + HINT_ENTRIES as u64), crate::bag::NO_HINT);
        assert!(new_pool_id() > pool, "ids only grow");
    }
}
