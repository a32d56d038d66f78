//! A slot's contents: the connection with what the pool knows about it, the per-slot
//! counters readable while it is borrowed, and a borrow's handle on both.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::bag::Ticket;
use crate::extensions::Extensions;

/// A connection in its slot, with what the pool knows about it.
///
/// `repr(C)`, the fields a return writes first: with the slot's state and `SlotMeta`
/// before it, `last_used_ms` and `last_checked_ms` sit on the cache line of the CAS
/// that borrows the slot (`slot_layout` test).
#[repr(C)]
pub(crate) struct PoolEntry<C> {
    /// When it was last returned or opened (for `idle_timeout`).
    pub(crate) last_used_ms: u64,
    /// When it was last known to work: opened or passed `is_valid` (for
    /// `check_on_borrow` and `keepalive_interval`).
    pub(crate) last_checked_ms: u64,
    /// When it must be retired (`u64::MAX` if never).
    pub(crate) expires_ms: u64,
    /// The pool's epoch when it was opened or last rechecked (`runtime`).
    pub(crate) epoch: super::runtime::Epoch,
    pub(crate) id: u64,
    pub(crate) created_ms: u64,
    /// The user's per-connection state (`PooledConnection::extensions`).
    pub(crate) extensions: Extensions,
    pub(crate) conn: C,
}

/// Per-slot data readable while the slot is borrowed (by the leak scan and `stats`).
/// Written only by the slot's owner, so plain loads and stores suffice.
///
/// `repr(C)` and small: what every borrow and return writes is here, right after the
/// slot's state, on the line the borrowing CAS owns; what only leak detection, event
/// handlers and holds of a millisecond or more touch is behind `cold`.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SlotMeta {
    /// When the current borrow started; `NOT_BORROWED` between borrows when leak
    /// detection is on, so the scan never reads a stale time.
    pub(crate) borrowed_at_ms: AtomicU64,
    pub(crate) borrows: AtomicU64,
    pub(crate) hold_ms: AtomicU64,
    pub(crate) cold: Box<ColdMeta>,
}

/// The per-slot data off the borrow path.
#[derive(Debug)]
pub(crate) struct ColdMeta {
    /// When the current borrow started, in `clock::precise_ns`, kept only with an
    /// event handler (for `CheckinEvent::duration`).
    pub(crate) borrowed_at_ns: AtomicU64,
    pub(crate) hold_times: HoldTimes,
    pub(crate) leak_reported: AtomicBool,
    /// Where the current borrow happened, captured only with leak detection on and
    /// symbolized only if it is reported.
    pub(crate) borrow_site: Mutex<Option<BorrowSite>>,
}

pub(crate) const NOT_BORROWED: u64 = u64::MAX;

/// Hold-time buckets per slot: `[2^k, 2^(k+1))` ms for `k < HOLD_BUCKETS - 1`, the last
/// one open (from about 2.3 hours).
pub(crate) const HOLD_BUCKETS: usize = 24;

/// One slot's returns after a hold of at least 1 ms, by power of two of milliseconds
/// (`hold_bucket`); shorter holds are its `borrows` minus these. Written by the slot's
/// owner only, and only after a hold of a millisecond or more.
#[derive(Debug)]
pub(crate) struct HoldTimes(pub(crate) [AtomicU64; HOLD_BUCKETS]);

impl Default for HoldTimes {
    fn default() -> Self {
        HoldTimes(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// The hold-time bucket of a hold of `ms >= 1` milliseconds.
#[inline]
pub(crate) fn hold_bucket(ms: u64) -> usize {
    ((u64::BITS - 1 - ms.max(1).leading_zeros()) as usize).min(HOLD_BUCKETS - 1)
}

impl Default for SlotMeta {
    fn default() -> Self {
        SlotMeta {
            borrowed_at_ms: AtomicU64::new(NOT_BORROWED),
            borrows: AtomicU64::new(0),
            hold_ms: AtomicU64::new(0),
            cold: Box::new(ColdMeta {
                borrowed_at_ns: AtomicU64::new(0),
                hold_times: HoldTimes::default(),
                leak_reported: AtomicBool::new(false),
                borrow_site: Mutex::new(None),
            }),
        }
    }
}

/// The thread and call stack of a borrow, for leak reports.
#[derive(Debug)]
pub(crate) struct BorrowSite {
    /// The borrow's `borrowed_at_ms`: the leak scan pairs a borrow time only with the
    /// site of the same borrow.
    pub(crate) borrowed_at_ms: u64,
    pub(crate) thread: String,
    pub(crate) backtrace: std::backtrace::Backtrace,
}

#[inline]
pub(super) fn owner_add(counter: &AtomicU64, by: u64) {
    // Only the slot's owner writes, so a load and a store (no locked RMW) are enough.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A borrowed slot: its ticket and a pointer to the connection inside.
///
/// The one place the pool reaches into a slot without `Bag::with_value`, so that the
/// borrow, the return and the guards' `Deref` cost a pointer load. Why that is sound,
/// once for all its accessors: a `Checkout` is made only from the ticket of an owned
/// slot whose payload holds an entry (`new`'s contract), and it keeps that ticket
/// until it is consumed. While a ticket is held no other thread touches the slot's
/// payload (`bag`), and slots never move (the bag's slot array is never resized), so
/// the pointer stays valid and unaliased. The accessors tie each reference to a borrow
/// of the `Checkout`: `&self` gives `&`, `&mut self` gives the only `&mut`.
pub(crate) struct Checkout<C> {
    ticket: Ticket,
    entry: NonNull<PoolEntry<C>>,
}

// SAFETY: a `Checkout` is the only way to its entry (above), so sending it sends the
// connection (`C: Send`) and sharing it shares `&C` (`C: Sync`).
unsafe impl<C: Send> Send for Checkout<C> {}
// SAFETY: as for `Send`.
unsafe impl<C: Sync> Sync for Checkout<C> {}

impl<C> Checkout<C> {
    /// The borrow of the slot `ticket` owns, whose payload is at `payload`.
    ///
    /// # Safety
    ///
    /// `payload` is the payload of the slot that `ticket` owns (`Bag::value_ptr`), and
    /// it holds an entry: slots are published `IDLE`, or handed over, only with their
    /// entry in place.
    #[inline]
    pub(super) unsafe fn new(ticket: Ticket, payload: *mut Option<PoolEntry<C>>) -> Self {
        // SAFETY: the caller's contract: the payload is owned through `ticket` and
        // holds an entry.
        let entry = unsafe { (*payload).as_mut().unwrap_unchecked() };
        Checkout {
            ticket,
            entry: NonNull::from(entry),
        }
    }

    /// The connection's entry.
    #[inline]
    pub(crate) fn entry(&self) -> &PoolEntry<C> {
        // SAFETY: see the type's docs; shared for as long as `self` is borrowed.
        unsafe { self.entry.as_ref() }
    }

    /// The connection's entry, mutably.
    #[inline]
    pub(crate) fn entry_mut(&mut self) -> &mut PoolEntry<C> {
        // SAFETY: see the type's docs; `&mut self` makes this the only reference.
        unsafe { self.entry.as_mut() }
    }

    /// The ticket of the borrowed slot.
    #[inline]
    pub(crate) fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Ends the borrow, keeping the slot's ownership.
    #[inline]
    pub(crate) fn into_ticket(self) -> Ticket {
        self.ticket
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bag::Bag;

    /// The cache line a slot starts on is the one its borrowing CAS pulls in: every
    /// field a borrow and a return write must be on it, whatever the connection type.
    fn check_layout<C>(conn: C) {
        let bag: Bag<PoolEntry<C>, SlotMeta> = Bag::new(2, Duration::ZERO);
        let ticket = bag.reserve_empty(1).expect("an empty slot");
        bag.with_value(&ticket, |value| {
            *value = Some(PoolEntry {
                last_used_ms: 0,
                last_checked_ms: 0,
                expires_ms: 0,
                epoch: crate::engine::runtime::Epoch::START,
                id: 0,
                created_ms: 0,
                extensions: Extensions::new(),
                conn,
            })
        });
        let (slot, state) = bag.slot_addresses(ticket.index());
        assert_eq!(slot % 64, 0, "a slot starts a cache line");
        let meta = bag.meta(ticket.index());
        let addr = |field: &AtomicU64| std::ptr::from_ref(field).addr();
        let (last_used, last_checked) = bag.with_value(&ticket, |value| {
            let entry = value.as_ref().expect("filled above");
            (
                std::ptr::from_ref(&entry.last_used_ms).addr(),
                std::ptr::from_ref(&entry.last_checked_ms).addr(),
            )
        });
        for (name, at, size) in [
            ("state", state, 4),
            ("borrowed_at_ms", addr(&meta.borrowed_at_ms), 8),
            ("borrows", addr(&meta.borrows), 8),
            ("hold_ms", addr(&meta.hold_ms), 8),
            ("last_used_ms", last_used, 8),
            ("last_checked_ms", last_checked, 8),
        ] {
            assert!(
                at >= slot && at + size <= slot + 64,
                "{name} at offset {} of the slot, {} bytes: beyond its first cache line",
                at.wrapping_sub(slot),
                size
            );
        }
        bag.with_value(&ticket, |value| *value = None);
        bag.free(ticket);
    }

    #[test]
    fn slot_layout_puts_every_borrow_and_return_write_on_the_cas_line() {
        check_layout(());
        check_layout(7u8);
        check_layout(7u128);
        check_layout([7u64; 40]);
        check_layout(String::from("a connection"));
    }
}
