//! A slot's contents: the connection with what the pool knows about it, the per-slot
//! counters readable while it is borrowed, and a borrow's handle on both.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::bag::Ticket;

/// A connection in its slot, with what the pool knows about it.
pub(crate) struct Entry<C> {
    pub(crate) conn: C,
    pub(crate) id: u64,
    pub(crate) created_ms: u64,
    /// When it must be retired (`u64::MAX` if never).
    pub(crate) expires_ms: u64,
    /// When it was last returned or opened (for `idle_timeout`).
    pub(crate) last_used_ms: u64,
    /// When it was last known to work: opened or passed `is_valid` (for
    /// `validation_bypass` and `keepalive_interval`).
    pub(crate) last_checked_ms: u64,
}

/// Per-slot data readable while the slot is borrowed (by the leak scan and `stats`).
/// Written only by the slot's owner, so plain loads and stores suffice.
#[derive(Debug)]
pub(crate) struct SlotMeta {
    /// When the current borrow started; `NOT_BORROWED` between borrows when leak
    /// detection is on, so the scan never reads a stale time.
    pub(crate) borrowed_at_ms: AtomicU64,
    pub(crate) borrows: AtomicU64,
    pub(crate) hold_ms: AtomicU64,
    pub(crate) leak_reported: AtomicBool,
    /// Where the current borrow happened, captured only with leak detection on and
    /// symbolized only if it is reported.
    pub(crate) borrow_site: Mutex<Option<BorrowSite>>,
}

pub(crate) const NOT_BORROWED: u64 = u64::MAX;

impl Default for SlotMeta {
    fn default() -> Self {
        SlotMeta {
            borrowed_at_ms: AtomicU64::new(NOT_BORROWED),
            borrows: AtomicU64::new(0),
            hold_ms: AtomicU64::new(0),
            leak_reported: AtomicBool::new(false),
            borrow_site: Mutex::new(None),
        }
    }
}

/// The thread and call stack of a borrow, for leak reports.
#[derive(Debug)]
pub(crate) struct BorrowSite {
    pub(crate) thread: String,
    pub(crate) backtrace: std::backtrace::Backtrace,
}

#[inline]
pub(super) fn bump(counter: &AtomicU64, by: u64) {
    // Only the slot's owner writes, so a load and a store (no locked RMW) are enough.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A borrowed slot: its ticket and the connection inside.
pub(crate) struct Checkout<C> {
    pub(crate) ticket: Ticket,
    pub(crate) entry: NonNull<Entry<C>>,
}
