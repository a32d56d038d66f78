//! The hand-out algorithm: a fixed array of slots, each with an atomic state, and a FIFO
//! queue of parked waiters for when every slot is taken.
//!
//! # Slots
//!
//! A slot is `EMPTY` (no connection), `CONNECTING` (claimed by a creator), `IDLE`,
//! `IN_USE` or `RESERVED` (claimed by the housekeeper). Every move out of `EMPTY` or
//! `IDLE` is a compare-and-swap; the thread that wins it *owns* the slot's payload and
//! gets a [`Ticket`] for it. Only the ticket holder touches the payload, and it gives up
//! ownership by publishing `IDLE` or `EMPTY` with a release store, or by handing the
//! ticket to a waiter. The array's length bounds the number of connections, so there is
//! no separate counter to keep in sync.
//!
//! # Taking
//!
//! A thread tries the slot it used last (its affinity hint, see `affinity`) with one
//! CAS, then scans the others. Neither step writes anything shared except the slot it
//! wins.
//!
//! # Waiting and giving back, without lost wake-ups
//!
//! When nothing is idle the thread pushes a waiter onto the queue (under a mutex: this
//! is the slow path) and raises `signal`, the waiter count. Giving back reads `signal`:
//!
//! * zero: publish `IDLE` and re-read `signal`. The re-read pairs with the waiter, which
//!   raises `signal` *then* re-scans the slots, with a barrier between the write and
//!   the read on both sides. It is Dekker's pattern: either the waiter's re-scan sees
//!   the `IDLE` slot, or the giver's re-read sees the waiter, takes the slot back with
//!   a CAS and hands it over (if the CAS fails, some thread took the slot and will give
//!   it back later, so the waiter is not stranded).
//!
//!   The barriers adapt to contention. While nobody waits they are an asymmetric pair
//!   (`sync::light_barrier` / `heavy_barrier`): the giver, on the fast path, pays a
//!   compiler fence; the first waiter, about to park anyway, pays a `membarrier`
//!   system call and sets `FENCED` in `signal`. While `FENCED` is set (until the queue
//!   empties) givers use a real `SeqCst` fence and further waiters a plain fence too,
//!   so a contended pool does not make a system call per wait. A giver that published
//!   with a compiler fence and then sees `FENCED` fences and re-reads before it trusts
//!   what it read; a giver that did not see `FENCED` at all read `signal` before the
//!   first waiter's `membarrier` reached its CPU, so its publish is visible to that
//!   waiter's re-scan, which then takes the slot. Loom checks the protocol with every
//!   barrier as a `SeqCst` fence, which is the guarantee each pairing gives.
//! * non-zero: pop the oldest waiter. If it has waited at least `fair_after`, hand the
//!   ticket to it directly: the slot stays owned, the waiter is unparked and finds its
//!   slot index in its own cell. Otherwise publish the slot `IDLE` and unpark the
//!   waiter to compete for it: whoever gets there first takes it, quite likely the
//!   returning thread itself (which still has the connection in cache). A waiter that
//!   loses goes back into the queue in its old place (ordered by when it started to
//!   wait), with the same register-then-re-check as before.
//!
//! This is parking_lot's *eventual fairness*. Pure barging (r2d2) is fast but lets the
//! returning thread win every time, so some waiters wait for ever; pure first-in,
//! first-out hand-off costs a context switch per return. Barging while the oldest
//! waiter is young and handing off once it is old gives the throughput of the first
//! and a bounded tail. When nobody waits, nothing of this runs: the fast path is a CAS
//! to take and a store, a fence and a load to give back.
//!
//! # Closing
//!
//! `close` sets the `CLOSED` bit in `signal` and wakes every waiter with "closed". A
//! giver that sees the bit gets its ticket back and must close the connection itself;
//! idle slots are swept by the pool with [`Bag::try_reserve`]. The same Dekker pairing
//! makes sure an `IDLE` publish racing with the close is seen by one side.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::sync::{
    Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, Ordering, Thread, UnsafeCell, current, fence,
    heavy_barrier, init_barriers, light_barrier, park_timeout,
};

/// No connection.
pub(crate) const EMPTY: u32 = 0;
/// A creator is opening a connection for this slot.
pub(crate) const CONNECTING: u32 = 1;
/// A connection waits to be borrowed.
pub(crate) const IDLE: u32 = 2;
/// A connection is borrowed.
pub(crate) const IN_USE: u32 = 3;
/// The housekeeper holds an idle connection to check or close it.
pub(crate) const RESERVED: u32 = 4;

/// Set in `signal` once the bag is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// Set in `signal` while waiters queue, after the first paid the heavy barrier: givers
/// fence for real and later waiters skip the system call (module docs).
const FENCED: usize = 1 << (usize::BITS - 2);
/// The waiter count in `signal`.
const COUNT: usize = !(CLOSED | FENCED);

/// A waiter's cell before anything happens to it.
const WAITING: usize = usize::MAX;
/// A waiter's cell when the bag closed under it.
const WOKEN_CLOSED: usize = usize::MAX - 1;
/// A waiter's cell when it was woken to compete for an `IDLE` slot.
const WOKEN_COMPETE: usize = usize::MAX - 2;

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
#[derive(Debug)]
pub struct Slot<T, X> {
    state: AtomicU32,
    meta: X,
    value: UnsafeCell<Option<T>>,
}

/// How a wait ended.
#[derive(Debug)]
pub enum Wait {
    /// A slot was handed over.
    Got(Ticket),
    /// A slot turned idle (just as the thread registered, or it was woken to compete
    /// for one): try the fast path, then wait again with the same `since`.
    Retry,
    /// The timeout passed.
    TimedOut,
    /// The bag was closed.
    Closed,
    /// `max_waiters` threads were already waiting.
    TooManyWaiters,
}

#[derive(Debug)]
struct Waiter {
    /// `WAITING`, `WOKEN_CLOSED`, `WOKEN_COMPETE` or the index of the slot handed over.
    cell: AtomicUsize,
    thread: Thread,
    /// When the thread started waiting (its place in the queue).
    since: Instant,
}

/// The slot array and the waiter queue.
#[derive(Debug)]
pub struct Bag<T, X = ()> {
    slots: Box<[CachePadded<Slot<T, X>>]>,
    /// Number of queued waiters, plus `CLOSED`. Changed only under `queue`'s lock.
    signal: CachePadded<AtomicUsize>,
    /// Read by every borrow; written once. Kept apart from `signal`, which changes as
    /// waiters come and go.
    closed: CachePadded<AtomicBool>,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// How long the oldest waiter may wait before returns are handed to it rather
    /// than competed for.
    fair_after: Duration,
}

// SAFETY: the payloads are only reached through a `Ticket`, and a ticket exists for at
// most one thread at a time (it is won by CAS or handed over under the queue lock), so
// sharing the bag lets threads move `T`s between them but never share one: `T: Send`
// is what that needs. `X` is shared as is, so it must be `Sync`.
unsafe impl<T: Send, X: Send + Sync> Sync for Bag<T, X> {}
// SAFETY: as above; moving the bag moves the `T`s it holds.
unsafe impl<T: Send, X: Send> Send for Bag<T, X> {}

impl<T, X: Default> Bag<T, X> {
    /// A bag of `size` empty slots; see the module docs for `fair_after`.
    pub fn new(size: usize, fair_after: Duration) -> Self {
        init_barriers();
        let slots = (0..size)
            .map(|_| {
                CachePadded::new(Slot {
                    state: AtomicU32::new(EMPTY),
                    meta: X::default(),
                    value: UnsafeCell::new(None),
                })
            })
            .collect();
        Bag {
            slots,
            signal: CachePadded::new(AtomicUsize::new(0)),
            closed: CachePadded::new(AtomicBool::new(false)),
            queue: Mutex::new(VecDeque::new()),
            fair_after,
        }
    }
}

impl<T, X> Bag<T, X> {
    /// The number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The per-slot data of slot `index`.
    pub fn meta(&self, index: usize) -> &X {
        &self.slots[index].meta
    }

    /// The current state of slot `index` (a snapshot, for statistics and scans).
    pub fn state(&self, index: usize) -> u32 {
        self.slots[index].state.load(Ordering::Relaxed)
    }

    /// The number of threads waiting.
    pub fn waiters(&self) -> usize {
        self.signal.load(Ordering::Relaxed) & COUNT
    }

    /// Whether [`close`](Bag::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Takes an idle slot without waiting: first `hint`, then the others from
    /// `start()` (only called on a miss).
    #[inline]
    pub fn try_take(&self, hint: usize, start: impl FnOnce() -> usize) -> Option<Ticket> {
        if let Some(slot) = self.slots.get(hint)
            && slot
                .state
                .compare_exchange(IDLE, IN_USE, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Some(Ticket(hint));
        }
        self.scan(start(), IDLE, IN_USE)
    }

    /// Claims an empty slot for a creator (`EMPTY` to `CONNECTING`).
    pub fn reserve_empty(&self) -> Option<Ticket> {
        self.scan(0, EMPTY, CONNECTING)
    }

    /// Claims idle slot `index` for the housekeeper (`IDLE` to `RESERVED`).
    pub fn try_reserve(&self, index: usize) -> Option<Ticket> {
        self.slots[index]
            .state
            .compare_exchange(IDLE, RESERVED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Ticket(index))
    }

    fn scan(&self, start: usize, from: u32, to: u32) -> Option<Ticket> {
        let len = self.slots.len();
        for offset in 0..len {
            let index = (start + offset) % len;
            let state = &self.slots[index].state;
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

    /// Whether any slot looks idle: the waiter's re-check, after the barrier that pairs
    /// with `publish` (module docs): a plain fence if `FENCED` was already set when
    /// this waiter registered, else the heavy one.
    fn any_idle(&self, fenced: bool) -> bool {
        if fenced {
            fence(Ordering::SeqCst);
        } else {
            heavy_barrier();
        }
        self.slots
            .iter()
            .any(|slot| slot.state.load(Ordering::Relaxed) == IDLE)
    }

    /// Runs `f` on the payload of the slot `ticket` owns.
    pub fn with_value<R>(&self, ticket: &Ticket, f: impl FnOnce(&mut Option<T>) -> R) -> R {
        // SAFETY: the ticket proves this thread owns the slot's payload (module docs),
        // and `&Ticket` cannot be used to give the slot away during `f`.
        self.slots[ticket.0]
            .value
            .with_mut(|value| f(unsafe { &mut *value }))
    }

    /// A pointer to the payload of the slot `ticket` owns; valid while the ticket is
    /// held, since slots never move.
    #[cfg(not(loom))]
    pub fn value_ptr(&self, ticket: &Ticket) -> *mut Option<T> {
        self.slots[ticket.0].value.get()
    }

    /// Gives an owned slot (with its payload in place) back: hands it to the oldest
    /// waiter or publishes it `IDLE`. If the bag is closed the ticket comes back in
    /// `Err`, and the caller must close the payload and [`free`](Bag::free) the slot.
    #[inline]
    pub fn give_back(&self, ticket: Ticket) -> Result<(), Ticket> {
        // The common case, inline: nobody waits, so publish and re-check once. If a
        // waiter came while we published, take the slot back for it (slow path),
        // unless another thread took it first: that thread gives it back later.
        let slot = &self.slots[ticket.0];
        let before = self.signal.load(Ordering::Relaxed);
        if before & !FENCED == 0
            && (self.publish(slot, before) & !FENCED == 0
                || slot
                    .state
                    .compare_exchange(IDLE, IN_USE, Ordering::Acquire, Ordering::Relaxed)
                    .is_err())
        {
            return Ok(());
        }
        self.give_back_slow(ticket)
    }

    /// Publishes an owned slot `IDLE` and returns `signal` as read after the barrier
    /// that pairs with the waiters' re-check; `before` is `signal` as read before.
    #[inline]
    fn publish(&self, slot: &Slot<T, X>, before: usize) -> usize {
        slot.state.store(IDLE, Ordering::Release);
        if before & FENCED != 0 {
            fence(Ordering::SeqCst);
            return self.signal.load(Ordering::Relaxed);
        }
        light_barrier();
        let after = self.signal.load(Ordering::Relaxed);
        if after & FENCED == 0 {
            return after;
        }
        // A waiter switched to plain fences while we published: pair with them.
        fence(Ordering::SeqCst);
        self.signal.load(Ordering::Relaxed)
    }

    /// `give_back` when there are waiters or the bag is closed.
    #[cold]
    #[inline(never)]
    fn give_back_slow(&self, mut ticket: Ticket) -> Result<(), Ticket> {
        let slot = &self.slots[ticket.0];
        loop {
            let signal = self.signal.load(Ordering::Relaxed);
            if signal & CLOSED != 0 {
                return Err(ticket);
            }
            if signal & COUNT != 0 {
                match self.hand_off(ticket) {
                    Ok(()) => return Ok(()),
                    Err(back) => ticket = back,
                }
            }
            if self.publish(slot, signal) & !FENCED == 0 {
                return Ok(());
            }
            // A waiter registered (or the bag closed) while we published; it may have
            // re-scanned before our store. Take the slot back and go round, unless
            // another thread took it first: then that thread gives it back later.
            if slot
                .state
                .compare_exchange(IDLE, IN_USE, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return Ok(());
            }
        }
    }

    /// Gives `ticket` to the oldest waiter: directly if it has waited `fair_after`,
    /// else by publishing the slot and waking the waiter to compete for it. Returns
    /// the ticket if nobody waits.
    fn hand_off(&self, ticket: Ticket) -> Result<(), Ticket> {
        let mut queue = self.queue.lock();
        let Some(waiter) = queue.pop_front() else {
            return Err(ticket);
        };
        self.leave();
        let slot = &self.slots[ticket.0];
        // Cells are stored under the lock, so a waiter that fails to cancel itself (it
        // was popped) always finds its cell set.
        if waiter.since.elapsed() >= self.fair_after {
            slot.state.store(IN_USE, Ordering::Relaxed);
            waiter.cell.store(ticket.0, Ordering::Release);
            drop(queue);
        } else {
            waiter.cell.store(WOKEN_COMPETE, Ordering::Release);
            // No re-check after this publish: the woken waiter is awake and takes the
            // slot, or finds it taken and queues up again with its own re-check. Under
            // the lock, so a `close` either saw this slot idle in its sweep or happened
            // before this hand-off looked at the queue.
            slot.state.store(IDLE, Ordering::Release);
            drop(queue);
        }
        waiter.thread.unpark();
        Ok(())
    }

    /// Frees an owned slot whose payload has been taken out (`EMPTY`).
    pub fn free(&self, ticket: Ticket) {
        let slot = &self.slots[ticket.0];
        debug_assert!(slot.value.with_mut(|v| {
            // SAFETY: the ticket owns the payload.
            unsafe { (*v).is_none() }
        }));
        slot.state.store(EMPTY, Ordering::Release);
    }

    /// Waits until a slot is handed over, the timeout passes or the bag closes.
    /// `since` is when the thread started waiting: it keeps its place in the queue
    /// across [`Wait::Retry`]. `registered` runs once the thread is queued and has
    /// re-checked the slots: the pool uses it to ask for a new connection.
    pub fn wait(
        &self,
        since: Instant,
        timeout: Duration,
        max_waiters: Option<usize>,
        registered: impl FnOnce(),
    ) -> Wait {
        let deadline = Instant::now() + timeout;
        let waiter = Arc::new(Waiter {
            cell: AtomicUsize::new(WAITING),
            thread: current(),
            since,
        });
        let fenced = {
            let mut queue = self.queue.lock();
            let signal = self.signal.load(Ordering::Relaxed);
            if signal & CLOSED != 0 {
                return Wait::Closed;
            }
            if max_waiters.is_some_and(|max| signal & COUNT >= max) {
                return Wait::TooManyWaiters;
            }
            // Behind everyone who has waited longer: at the back for a new waiter,
            // back in its place for one that lost a competition.
            let place = queue.partition_point(|w| w.since <= since);
            queue.insert(place, waiter.clone());
            // Changed only under the lock, so a plain store will do.
            self.signal.store((signal + 1) | FENCED, Ordering::Relaxed);
            signal & FENCED != 0
        };
        if self.any_idle(fenced) {
            if self.cancel(&waiter) {
                return Wait::Retry;
            }
        } else {
            registered();
        }
        loop {
            match waiter.cell.load(Ordering::Acquire) {
                WAITING => {}
                WOKEN_CLOSED => return Wait::Closed,
                WOKEN_COMPETE => return Wait::Retry,
                index => return Wait::Got(Ticket(index)),
            }
            let now = Instant::now();
            if now >= deadline {
                if self.cancel(&waiter) {
                    return Wait::TimedOut;
                }
                // Popped under the lock just before: the cell is set, read it again.
                continue;
            }
            park_timeout(deadline - now);
        }
    }

    /// Removes `waiter` from the queue; false if it was already popped (handed a slot
    /// or woken by close).
    fn cancel(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = self.queue.lock();
        match queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(position) => {
                queue.remove(position);
                self.leave();
                true
            }
            None => false,
        }
    }

    /// Counts a waiter out (under the queue lock); the last one out clears `FENCED`.
    fn leave(&self) {
        let mut signal = self.signal.load(Ordering::Relaxed) - 1;
        if signal & COUNT == 0 {
            signal &= !FENCED;
        }
        self.signal.store(signal, Ordering::Relaxed);
    }

    /// Closes the bag: every waiter wakes with [`Wait::Closed`], later waits fail at
    /// once and [`give_back`](Bag::give_back) returns tickets to their holders.
    pub fn close(&self) {
        let woken: Vec<_> = {
            let mut queue = self.queue.lock();
            self.closed.store(true, Ordering::Relaxed);
            self.signal.store(CLOSED, Ordering::Relaxed);
            // Cells are set under the lock, as in `hand_off`.
            for waiter in queue.iter() {
                waiter.cell.store(WOKEN_CLOSED, Ordering::Release);
            }
            queue.drain(..).collect()
        };
        for waiter in woken {
            waiter.thread.unpark();
        }
        // Pairs with `give_back` as the waiter's barrier does: the caller's sweep of
        // idle slots either sees a racing `IDLE` publish, or that giver sees `CLOSED`.
        heavy_barrier();
    }
}
