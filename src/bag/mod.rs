//! The hand-out algorithm: an array of slots (growable, `slots`), each with an atomic state, and a FIFO
//! queue of parked waiters for when every slot is taken.
//!
//! The algorithm, its invariant (no waiter stays parked while a slot is `IDLE`) and the
//! argument for its barriers are on the crate's `implementation` page
//! (`docs/implementation.md`). This module is the uncontended path (taking a slot,
//! giving it back) and the slot states; `wait` is everything about waiting.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::{
    AtomicU32, AtomicUsize, Mutex, Ordering, UnsafeCell, fence, heavy_barrier, init_barriers,
    light_barrier,
};

mod slots;
mod wait;

use slots::Slots;
use wait::Queue;
pub use wait::{Deadline, Timer, Turn, Wait};

/// No connection.
pub const EMPTY: u32 = 0;
/// A creator is opening a connection for this slot.
pub const CONNECTING: u32 = 1;
/// A connection waits to be borrowed.
pub const IDLE: u32 = 2;
/// A connection is borrowed.
pub const IN_USE: u32 = 3;
/// The housekeeper holds an idle connection to check or close it.
pub const RESERVED: u32 = 4;

/// The `hint` for [`Bag::try_take`] that names no slot.
pub const NO_HINT: usize = usize::MAX;

/// The longest a waiter parks before it looks at the slots again (docs/implementation.md). Waits
/// this long mean every connection is busy, and one wake-up per waiter per interval
/// costs a few microseconds of CPU.
pub const RESCAN: Duration = Duration::from_millis(10);

/// The `signal` word, written only under the queue lock, read by every giver.
///
/// | bits | meaning | set by | cleared by |
/// |---|---|---|---|
/// | `COUNT` | queued waiters | a waiter registering | a waiter leaving (popped or cancelled) |
/// | `FENCED` | a waiter of this busy period completed a heavy barrier; later waiters use plain fences | that waiter, while still queued | the last waiter leaving, `close` |
/// | `CLOSED` | the bag is closed (for good) | `close` | never |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signal(usize);

impl Signal {
    const CLOSED: usize = 1 << (usize::BITS - 1);
    const FENCED: usize = 1 << (usize::BITS - 2);
    const COUNT: usize = !(Self::CLOSED | Self::FENCED);

    fn waiters(self) -> usize {
        self.0 & Self::COUNT
    }

    fn is_closed(self) -> bool {
        self.0 & Self::CLOSED != 0
    }

    fn is_fenced(self) -> bool {
        self.0 & Self::FENCED != 0
    }

    /// Nobody waits and the bag is open: a giver may just publish.
    fn is_quiet(self) -> bool {
        self.0 & !Self::FENCED == 0
    }

    fn with_waiters(self, waiters: usize) -> Signal {
        debug_assert!(waiters <= Self::COUNT);
        let fenced = if waiters == 0 {
            0
        } else {
            self.0 & Self::FENCED
        };
        Signal((self.0 & Self::CLOSED) | fenced | waiters)
    }

    fn fenced(self) -> Signal {
        Signal(self.0 | Self::FENCED)
    }
}

/// Proof that the holder owns one slot's payload. Not `Clone`: there is one per owned
/// slot, and it is consumed by giving the slot back, freeing it or handing it off.
#[derive(Debug)]
#[must_use = "a ticket owns a slot; dropping it leaks the slot"]
pub struct Ticket(usize);

impl Ticket {
    /// The slot's index.
    pub fn index(&self) -> usize {
        self.0
    }
}

/// One slot: its state, per-slot data `X` the pool keeps beside it, and the payload.
/// `repr(C)` in this order, so that the state starts the slot's first cache line and
/// what the pool writes on every borrow and return in `X` and `T` can follow it on the
/// same line (the pool's `slot_layout` test checks it).
#[derive(Debug)]
#[repr(C)]
pub struct Slot<T, X> {
    state: AtomicU32,
    meta: X,
    value: UnsafeCell<Option<T>>,
}

impl<T, X> Slot<T, X> {
    /// `IDLE` to `IN_USE`: the one transition that borrows.
    #[inline]
    fn try_borrow(&self) -> bool {
        self.state
            .compare_exchange(IDLE, IN_USE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn is_idle(&self) -> bool {
        self.state.load(Ordering::Relaxed) == IDLE
    }
}

/// The slot array and the waiter queue.
#[derive(Debug)]
pub struct Bag<T, X = ()> {
    slots: Slots<T, X>,
    /// See [`Signal`].
    signal: CachePadded<AtomicUsize>,
    queue: Mutex<Queue>,
    /// Waiters woken to compete that have not looked at the slots yet (see
    /// `take_as_waiter`).
    competing: AtomicUsize,
    /// How long the oldest waiter may wait before returns are handed to it rather
    /// than competed for.
    fair_after: Duration,
    /// The coarse clock's millisecond from which the oldest waiter has waited
    /// `fair_after` (`u64::MAX` while nobody waits): before it no return is due to a
    /// waiter, so a giver may leave its slot to a competitor on its way without taking
    /// the queue's lock (`give_back_slow`). Written under the lock.
    oldest_due_ms: std::sync::atomic::AtomicU64,
    /// Loom only: heavy barriers completed (a ghost, read by the assertion that checks
    /// when `FENCED` may be trusted). A loom atomic, so that loom orders it against the
    /// registrations that read it.
    #[cfg(loom)]
    heavies: AtomicUsize,
}

// SAFETY: the payloads are only reached through a `Ticket`, and a ticket exists for at
// most one thread at a time (it is won by CAS or handed over under the queue lock), so
// sharing the bag lets threads move `T`s between them but never share one: `T: Send`
// is what that needs. `X` is shared as is, so it must be `Sync`.
unsafe impl<T: Send, X: Send + Sync> Sync for Bag<T, X> {}
// SAFETY: as above; moving the bag moves the `T`s it holds.
unsafe impl<T: Send, X: Send> Send for Bag<T, X> {}

impl<T, X: Default> Bag<T, X> {
    /// A bag of `size` empty slots; see docs/implementation.md for `fair_after`.
    pub fn new(size: usize, fair_after: Duration) -> Self {
        init_barriers();
        let slots = Slots::new(size);
        Bag {
            slots,
            signal: CachePadded::new(AtomicUsize::new(0)),
            queue: Mutex::new(Queue::default()),
            competing: AtomicUsize::new(0),
            fair_after,
            oldest_due_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            #[cfg(loom)]
            heavies: AtomicUsize::new(0),
        }
    }
}

impl<T, X: Default> Bag<T, X> {
    /// Makes `limit` the number of slots in use (the pool's `max_size`), allocating
    /// slots when it grows. The caller closes what slots beyond a smaller limit hold:
    /// the idle ones it finds after this returns (the heavy barrier here pairs with
    /// `give_back`'s), the others when `give_back` returns them.
    pub fn set_limit(&self, limit: usize) {
        self.slots.set_limit(limit);
        heavy_barrier();
    }
}

impl<T, X> Bag<T, X> {
    // The hot path, in the order it runs: take, give back, publish.

    /// Takes an idle slot without waiting: first `hint` (or [`NO_HINT`]), then the
    /// others from `start()` (only called on a miss).
    #[inline]
    pub fn try_take(&self, hint: usize, start: impl FnOnce() -> usize) -> Option<Ticket> {
        if let Some(slot) = self.slots.get(hint)
            && slot.try_borrow()
        {
            return Some(Ticket(hint));
        }
        self.scan(start(), IDLE, IN_USE)
    }

    /// Gives an owned slot (with its payload in place) back: hands it to the oldest
    /// waiter or publishes it `IDLE`. If the bag is closed, or the slot is beyond the
    /// limit, the ticket comes back in `Err`, and the caller must close the payload and
    /// [`free`](Bag::free) the slot.
    ///
    /// The limit is read after the publish's barrier, and `set_limit` runs the heavy
    /// barrier before the pool sweeps the slots beyond a smaller limit: so a slot
    /// given back while the bag shrinks is either seen idle by that sweep or comes back
    /// here.
    #[inline]
    pub fn give_back(&self, ticket: Ticket) -> Result<(), Ticket> {
        let slot = &self.slots.at(ticket.0);
        let before = self.signal();
        if before.is_quiet() {
            if self.publish(slot, before).is_quiet() && ticket.0 < self.slots.limit() {
                return Ok(());
            }
            // A waiter registered (or the bag closed or shrank) while we published; it
            // may have re-scanned before our store. Take the slot back for it, unless
            // another thread took it first (docs/implementation.md: then that thread
            // sees to the waiter, or, beyond the limit, gives it back here).
            if !slot.try_borrow() {
                return Ok(());
            }
        }
        self.give_back_slow(ticket)
    }

    /// Publishes an owned slot `IDLE` and returns `signal` as read after the barrier
    /// that pairs with the waiters' re-check; `before` is `signal` as read before.
    #[inline]
    fn publish(&self, slot: &Slot<T, X>, before: Signal) -> Signal {
        self.publish_as(slot, IDLE, before)
    }

    /// `publish` with the slot's new `state`: `IDLE`, or `EMPTY` when it is freed.
    #[inline]
    fn publish_as(&self, slot: &Slot<T, X>, state: u32, before: Signal) -> Signal {
        slot.state.store(state, Ordering::Release);
        if before.is_fenced() {
            fence(Ordering::SeqCst);
            return self.signal();
        }
        light_barrier();
        let after = self.signal();
        if !after.is_fenced() {
            return after;
        }
        // Waiters switched to plain fences while we published: pair with them.
        fence(Ordering::SeqCst);
        self.signal()
    }

    #[inline]
    fn signal(&self) -> Signal {
        Signal(self.signal.load(Ordering::Relaxed))
    }

    // Everything below is off the uncontended path.

    /// The number of slots allocated (those in use and those beyond the limit that a
    /// smaller size left; every index below it is valid).
    pub fn len(&self) -> usize {
        self.slots.capacity()
    }

    /// The number of slots in use: slots at or beyond it are not handed out by scans
    /// or filled by creators.
    #[inline]
    pub fn limit(&self) -> usize {
        self.slots.limit()
    }

    /// The per-slot data of slot `index`.
    pub fn meta(&self, index: usize) -> &X {
        &self.slots.at(index).meta
    }

    /// The current state of slot `index` (a snapshot, for statistics and scans).
    pub fn state(&self, index: usize) -> u32 {
        self.slots.at(index).state.load(Ordering::Relaxed)
    }

    /// The number of threads waiting.
    pub fn waiters(&self) -> usize {
        self.signal().waiters()
    }

    /// Whether [`close`](Bag::close) was called.
    pub fn is_closed(&self) -> bool {
        self.signal().is_closed()
    }

    /// Claims an empty slot for a creator (`EMPTY` to `CONNECTING`), scanning from
    /// `start`.
    pub fn reserve_empty(&self, start: usize) -> Option<Ticket> {
        self.scan(start, EMPTY, CONNECTING)
    }

    /// Claims idle slot `index` for the housekeeper (`IDLE` to `RESERVED`).
    pub fn try_reserve(&self, index: usize) -> Option<Ticket> {
        self.slots
            .at(index)
            .state
            .compare_exchange(IDLE, RESERVED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Ticket(index))
    }

    fn scan(&self, start: usize, from: u32, to: u32) -> Option<Ticket> {
        let len = self.slots.limit();
        if len == 0 {
            return None;
        }
        let start = start % len;
        for index in (start..len).chain(0..start) {
            let state = &self.slots.at(index).state;
            // Load first: a failed CAS would still pull the line in exclusive mode.
            if state.load(Ordering::Relaxed) == from
                && state
                    .compare_exchange(from, to, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(Ticket(index));
            }
        }
        None
    }

    fn any_idle(&self) -> bool {
        self.slots.in_use().any(|slot| slot.is_idle())
    }

    /// Whether a slot in use (below the limit) is `EMPTY`.
    pub fn any_empty(&self) -> bool {
        self.slots
            .in_use()
            .any(|slot| slot.state.load(Ordering::Relaxed) == EMPTY)
    }

    /// Runs `f` on the payload of the slot `ticket` owns.
    pub fn with_value<R>(&self, ticket: &Ticket, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        // SAFETY: the ticket proves this thread owns the slot's payload (docs/implementation.md),
        // and `&Ticket` cannot be used to give the slot away during `f`.
        self.slots
            .at(ticket.0)
            .value
            .with_mut(|value| f(unsafe { &mut *value }))
    }

    /// A pointer to the payload of the slot `ticket` owns; valid while the ticket is
    /// held, since slots never move.
    pub fn value_ptr(&self, ticket: &Ticket) -> *mut Option<T> {
        self.slots.at(ticket.0).value.get()
    }

    /// The addresses of slot `index` and of its state word, for layout tests.
    #[cfg(test)]
    pub(crate) fn slot_addresses(&self, index: usize) -> (usize, usize) {
        let slot: &Slot<T, X> = self.slots.at(index);
        (
            std::ptr::from_ref(slot).addr(),
            std::ptr::from_ref(&slot.state).addr(),
        )
    }

    /// Forgets every payload without dropping it (the pool in a forked child leaves
    /// the parent's connections alone). `&mut self`: nobody else holds a slot.
    pub fn leak_all(&mut self) {
        for index in 0..self.slots.capacity() {
            self.slots
                .at(index)
                .value
                // SAFETY: `&mut self` excludes every other access to the payloads.
                .with_mut(|value| std::mem::forget(unsafe { (*value).take() }));
        }
    }

    /// Frees an owned slot whose payload has been taken out (`EMPTY`).
    pub fn free(&self, ticket: Ticket) {
        let slot = &self.slots.at(ticket.0);
        debug_assert!(slot.value.with_mut(|v| {
            // SAFETY: the ticket owns the payload.
            unsafe { (*v).is_none() }
        }));
        // With the waiters' barrier, like a return: a waiter that found no empty slot
        // to open a connection in is seen by the caller's `waiters()` after this.
        self.publish_as(slot, EMPTY, self.signal());
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
