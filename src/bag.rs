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
//! The invariant: **no waiter stays parked while a slot is `IDLE`**, beyond the moment
//! it takes to wake one. Three mechanisms keep it.
//!
//! **Register, then re-check (Dekker).** When nothing is idle a thread pushes a waiter
//! onto the queue (under a mutex: this is the slow path), raises the waiter count in
//! `signal`, then re-scans the slots. A giver publishes `IDLE`, then re-reads `signal`.
//! With a barrier between the write and the read on both sides, either the waiter's
//! re-scan sees the `IDLE` slot (it leaves the queue and takes it), or the giver's
//! re-read sees the waiter: it takes the slot back with a CAS and hands it over. If that
//! CAS fails, another thread took the slot: a borrower that will give it back (and see
//! the waiter then), or a waiter, which passes the baton (below).
//!
//! **Hand-off, eventually fair.** A giver that sees waiters pops the oldest. If it has
//! waited at least `fair_after`, the ticket goes to it directly: the slot stays owned,
//! the waiter is unparked and finds the slot index in its cell. Otherwise the slot is
//! published `IDLE` *first*, then the waiter's cell is set to "compete" and it is
//! unparked: whoever gets there first takes the slot, quite likely the returning thread
//! itself, with the connection still in its cache. This is parking_lot's *eventual
//! fairness*: pure barging (r2d2) lets the returning thread win every time, so some
//! waiters wait for ever; pure first-in, first-out hand-off costs a context switch per
//! return. Barging while the oldest waiter is young and handing off once it is old gives
//! the throughput of the first and a bounded tail.
//!
//! **Passing the baton.** A woken competitor takes whichever slot it finds first, which
//! need not be the one published for it: two givers returning at once can each see the
//! other's slot taken and leave the rest to the woken waiter. So a waiter that takes a
//! slot, while others still wait and more slots are idle than woken competitors are
//! still on their way (`competing`, counted down by each as it starts to look), wakes
//! the next waiter to compete. The woken waiter read its cell after the slot was
//! published for it, so it sees that slot idle (or taken since); waiters queued after
//! that publish see it in their own re-check. Each competitor on its way takes a slot
//! and passes the baton in turn, or finds none idle; so counting them keeps the baton
//! from waking a waiter for a slot that is about to be taken. A competitor that finds
//! nothing goes back into the queue in its old place (ordered by when it started to
//! wait), with the same register-then-re-check.
//!
//! **A bounded park, as a backstop.** A waiter never parks for more than [`RESCAN`]: it
//! wakes, looks at the slots (loads only) and parks again. Any wake-up that a future
//! change loses costs milliseconds, never the whole timeout.
//!
//! # The barriers
//!
//! The barriers of the Dekker pairing adapt to contention. While nobody waits they are
//! an asymmetric pair (`sync::light_barrier` / `heavy_barrier`): the giver, on the fast
//! path, pays a compiler fence; a waiter, about to park anyway, pays a `membarrier`
//! system call, which acts as a full fence on every thread of the process that is
//! running, at some point during the call. While threads queue, a waiter that finds
//! `FENCED` in `signal` pays a plain `SeqCst` fence instead, and a giver that sees
//! `FENCED` fences for real and re-reads `signal` before it trusts what it read. Why
//! that is enough:
//!
//! * light giver, heavy waiter: the waiter's `membarrier` M comes after its count store
//!   S. If M's fence on the giver's CPU falls before the giver's re-read, the re-read
//!   sees S; otherwise the giver's `IDLE` store precedes M, and the waiter's re-scan
//!   after M sees it.
//! * `FENCED` giver, plain waiter: two `SeqCst` fences, the textbook case.
//! * light giver, plain waiter: the waiter registered while `FENCED` was set. `FENCED`
//!   is set only by a waiter *after* its `membarrier` returned, and only while that
//!   waiter is still queued, so the count has not been zero since that waiter's S; it
//!   is cleared when the count drops to zero. A light giver whose re-read found no
//!   waiter read `signal` before that S (or else it would have seen a count), so by the
//!   first case its `IDLE` store precedes M, which precedes the `FENCED` store, which
//!   precedes (through the queue lock) this waiter's registration and re-scan.
//!
//! Setting `FENCED` at registration, before the system call returns, would break the
//! third case: a second waiter could rely on a barrier that has not happened yet. The
//! loom models check the protocol with every barrier as a `SeqCst` fence, which is what
//! the first two cases give; loom cannot model `membarrier` itself (a fence injected
//! into other threads), so for the third case the models check its premise instead: a
//! waiter that skips the system call asserts that a heavy barrier has completed since
//! the current busy period began.
//!
//! When nobody waits, none of this runs: the fast path is a CAS to take and a store, a
//! compiler fence and a load to give back.
//!
//! # Closing
//!
//! `close` sets `CLOSED` in `signal` and wakes every waiter with "closed". A giver that
//! sees it gets its ticket back and must close the connection itself; idle slots are
//! swept by the pool with [`Bag::try_reserve`]. The same Dekker pairing makes sure an
//! `IDLE` publish racing with the close is seen by one side.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::sync::{
    Arc, AtomicU32, AtomicUsize, Mutex, Ordering, Thread, UnsafeCell, current, fence,
    heavy_barrier, init_barriers, light_barrier, park_timeout,
};

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

/// The longest a waiter parks before it looks at the slots again (module docs). Waits
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

/// How a wait ended.
#[derive(Debug)]
pub enum Wait {
    /// A slot is this thread's: handed over, or taken after a wake-up.
    Got(Ticket),
    /// The timer expired.
    TimedOut,
    /// The bag was closed.
    Closed,
    /// `max_waiters` threads were already waiting.
    TooManyWaiters,
}

/// A borrower's place in line, kept across the waits of one borrow: when it started to
/// wait (its place in the queue), and whether it was admitted past `max_waiters` (an
/// admitted borrower is never turned away later in the same borrow).
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    since: Instant,
    admitted: bool,
}

impl Turn {
    /// A borrow that started at `since`.
    pub fn new(since: Instant) -> Turn {
        Turn {
            since,
            admitted: false,
        }
    }

    /// Whether this borrow has queued up at least once.
    pub fn has_waited(&self) -> bool {
        self.admitted
    }
}

/// When a wait gives up, and how the waiting thread sleeps meanwhile.
pub trait Timer {
    /// Whether the wait is over.
    fn expired(&self) -> bool;
    /// Parks until unparked, or for a while (the bag re-checks after any return).
    fn park(&self);
}

/// A [`Timer`] with a deadline (`None`: wait for ever) that parks at most [`RESCAN`].
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; one too large for the clock means for ever.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now().checked_add(timeout))
    }
}

impl Timer for Deadline {
    fn expired(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }

    fn park(&self) {
        let left = match self.0 {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => RESCAN,
        };
        park_timeout(left.min(RESCAN));
    }
}

#[derive(Debug)]
struct Waiter {
    /// `WAITING`, `WOKEN_CLOSED`, `WOKEN_COMPETE` or the index of the slot handed over.
    /// Set only under the queue lock, when the waiter is popped.
    cell: AtomicUsize,
    thread: Thread,
    /// When the thread started waiting (its place in the queue).
    since: Instant,
}

impl Waiter {
    fn wake(&self, cell: usize) {
        self.cell.store(cell, Ordering::Release);
    }
}

/// The waiter queue, behind the bag's mutex.
#[derive(Debug, Default)]
struct Queue {
    waiters: VecDeque<Arc<Waiter>>,
    /// Loom only: heavy barriers completed when the current busy period began.
    #[cfg(loom)]
    heavies_at_period_start: usize,
}

/// The slot array and the waiter queue.
#[derive(Debug)]
pub struct Bag<T, X = ()> {
    slots: Box<[CachePadded<Slot<T, X>>]>,
    /// See [`Signal`].
    signal: CachePadded<AtomicUsize>,
    queue: Mutex<Queue>,
    /// Waiters woken to compete that have not looked at the slots yet (see
    /// `take_as_waiter`).
    competing: AtomicUsize,
    /// How long the oldest waiter may wait before returns are handed to it rather
    /// than competed for.
    fair_after: Duration,
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
            queue: Mutex::new(Queue::default()),
            competing: AtomicUsize::new(0),
            fair_after,
            #[cfg(loom)]
            heavies: AtomicUsize::new(0),
        }
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
    /// waiter or publishes it `IDLE`. If the bag is closed the ticket comes back in
    /// `Err`, and the caller must close the payload and [`free`](Bag::free) the slot.
    #[inline]
    pub fn give_back(&self, ticket: Ticket) -> Result<(), Ticket> {
        let slot = &self.slots[ticket.0];
        let before = self.signal();
        if before.is_quiet() {
            if self.publish(slot, before).is_quiet() {
                return Ok(());
            }
            // A waiter registered (or the bag closed) while we published; it may have
            // re-scanned before our store. Take the slot back for it, unless another
            // thread took it first (module docs: then that thread sees to the waiter).
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
        slot.state.store(IDLE, Ordering::Release);
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
        self.slots[index]
            .state
            .compare_exchange(IDLE, RESERVED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Ticket(index))
    }

    fn scan(&self, start: usize, from: u32, to: u32) -> Option<Ticket> {
        let len = self.slots.len();
        if len == 0 {
            return None;
        }
        let start = start % len;
        for index in (start..len).chain(0..start) {
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

    fn any_idle(&self) -> bool {
        self.slots.iter().any(|slot| slot.is_idle())
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

    /// `give_back` when there are waiters or the bag is closed.
    #[cold]
    #[inline(never)]
    fn give_back_slow(&self, mut ticket: Ticket) -> Result<(), Ticket> {
        let slot = &self.slots[ticket.0];
        loop {
            let signal = self.signal();
            if signal.is_closed() {
                return Err(ticket);
            }
            if signal.waiters() != 0 {
                match self.hand_off(ticket) {
                    Ok(()) => return Ok(()),
                    Err(back) => ticket = back,
                }
            }
            if self.publish(slot, signal).is_quiet() {
                return Ok(());
            }
            // As in `give_back`: take it back for the waiter, or leave it to the thread
            // that took it.
            if !slot.try_borrow() {
                return Ok(());
            }
        }
    }

    /// Gives `ticket` to the oldest waiter: directly if it has waited `fair_after`,
    /// else by publishing the slot and waking the waiter to compete for it. Returns
    /// the ticket if nobody waits.
    fn hand_off(&self, ticket: Ticket) -> Result<(), Ticket> {
        let mut queue = self.queue.lock();
        let Some(waiter) = self.pop(&mut queue) else {
            return Err(ticket);
        };
        let slot = &self.slots[ticket.0];
        if waiter.since.elapsed() >= self.fair_after {
            // Ownership moves with the index in the cell. The slot may come from
            // `CONNECTING` or `RESERVED` (a creator or the housekeeper giving back):
            // it is `IN_USE` from now on, published by the cell's release store.
            slot.state.store(IN_USE, Ordering::Relaxed);
            waiter.wake(ticket.0);
        } else {
            // Published before the cell is set, so the woken waiter sees it idle (or
            // taken since); no re-check is needed for it, and waiters that queue later
            // see it in their own re-check. Under the lock, so a `close` either saw it
            // idle in its sweep or happened before this hand-off looked at the queue.
            slot.state.store(IDLE, Ordering::Release);
            self.wake_to_compete(&waiter);
        }
        drop(queue);
        waiter.thread.unpark();
        Ok(())
    }

    /// Pops the oldest waiter and counts it out (under the queue lock).
    fn pop(&self, queue: &mut Queue) -> Option<Arc<Waiter>> {
        let waiter = queue.waiters.pop_front()?;
        self.leave();
        Some(waiter)
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

    /// Waits until this thread owns a slot, the timer expires or the bag closes. `turn`
    /// keeps the borrow's place in the queue across calls. `registered` runs each time
    /// the thread has queued up and re-checked the slots: the pool uses it to ask for a
    /// new connection.
    pub fn wait(
        &self,
        turn: &mut Turn,
        timer: &impl Timer,
        max_waiters: Option<usize>,
        mut registered: impl FnMut(),
    ) -> Wait {
        'queue: loop {
            let waiter = match self.register(turn, max_waiters) {
                Ok(waiter) => waiter,
                Err(outcome) => return outcome,
            };
            if self.any_idle() {
                if self.cancel(&waiter) {
                    match self.take_as_waiter() {
                        Some(ticket) => return Wait::Got(ticket),
                        None => continue 'queue,
                    }
                }
                // Popped meanwhile: the cell says what for.
            } else {
                registered();
            }
            loop {
                match waiter.cell.load(Ordering::Acquire) {
                    WAITING => {}
                    WOKEN_CLOSED => return Wait::Closed,
                    WOKEN_COMPETE => {
                        // Looking now: no longer a competitor on its way.
                        self.competing.fetch_sub(1, Ordering::SeqCst);
                        match self.take_as_waiter() {
                            Some(ticket) => return Wait::Got(ticket),
                            None => continue 'queue,
                        }
                    }
                    index => return Wait::Got(Ticket(index)),
                }
                if timer.expired() {
                    if self.cancel(&waiter) {
                        return Wait::TimedOut;
                    }
                    continue; // popped just before: the cell is set
                }
                timer.park();
                // The backstop (module docs): after any wake-up without news, look.
                if waiter.cell.load(Ordering::Relaxed) == WAITING {
                    fence(Ordering::SeqCst);
                    if self.any_idle() && self.cancel(&waiter) {
                        match self.take_as_waiter() {
                            Some(ticket) => return Wait::Got(ticket),
                            None => continue 'queue,
                        }
                    }
                }
            }
        }
    }

    /// Queues a waiter for `turn` and runs the barrier that pairs with `publish`; the
    /// caller then re-checks the slots.
    fn register(&self, turn: &mut Turn, max_waiters: Option<usize>) -> Result<Arc<Waiter>, Wait> {
        let waiter = Arc::new(Waiter {
            cell: AtomicUsize::new(WAITING),
            thread: current(),
            since: turn.since,
        });
        let fenced = {
            let mut queue = self.queue.lock();
            let signal = self.signal();
            if signal.is_closed() {
                return Err(Wait::Closed);
            }
            if !turn.admitted && max_waiters.is_some_and(|max| signal.waiters() >= max) {
                return Err(Wait::TooManyWaiters);
            }
            turn.admitted = true;
            #[cfg(loom)]
            self.check_fenced_premise(&mut queue, signal);
            // Behind everyone who has waited longer: at the back for a new waiter,
            // back in its place for one that lost a competition.
            let place = queue.waiters.partition_point(|w| w.since <= turn.since);
            queue.waiters.insert(place, waiter.clone());
            // Changed only under the lock, so a plain store will do.
            let registered = signal.with_waiters(signal.waiters() + 1);
            self.signal.store(registered.0, Ordering::Relaxed);
            signal.is_fenced()
        };
        if fenced {
            fence(Ordering::SeqCst);
        } else {
            self.heavy();
            // Only now may later waiters rely on this barrier (module docs), and only
            // while this waiter is still queued: then the busy period it paid for goes
            // on. Its cell is `WAITING` exactly as long as it is queued.
            let _queue = self.queue.lock();
            let signal = self.signal();
            if !signal.is_closed() && waiter.cell.load(Ordering::Relaxed) == WAITING {
                self.signal.store(signal.fenced().0, Ordering::Relaxed);
            }
        }
        Ok(waiter)
    }

    /// Takes a slot for a thread that was queued, and if others still wait while a
    /// slot is idle, wakes the next one to compete (the baton, module docs).
    ///
    /// Only idle slots beyond the competitors already woken and not yet looking
    /// (`competing`) need a new one: each of those takes one, or passes the baton in
    /// turn, or finds none idle. Without that count every taker would wake a waiter
    /// for a slot that a competitor on its way is about to take.
    fn take_as_waiter(&self) -> Option<Ticket> {
        let ticket = self.scan(0, IDLE, IN_USE)?;
        fence(Ordering::SeqCst);
        if self.waiters() != 0 && self.idle_slots() > self.competing.load(Ordering::SeqCst) {
            let mut queue = self.queue.lock();
            if let Some(next) = self.pop(&mut queue) {
                self.wake_to_compete(&next);
                drop(queue);
                next.thread.unpark();
            }
        }
        Some(ticket)
    }

    /// Sets a popped waiter's cell to "compete" and counts it in `competing` until it
    /// looks at the slots (under the queue lock).
    fn wake_to_compete(&self, waiter: &Waiter) {
        self.competing.fetch_add(1, Ordering::SeqCst);
        waiter.wake(WOKEN_COMPETE);
    }

    fn idle_slots(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_idle()).count()
    }

    /// Removes `waiter` from the queue; false if it was already popped (its cell is
    /// set).
    fn cancel(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = self.queue.lock();
        match queue.waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(position) => {
                queue.waiters.remove(position);
                self.leave();
                true
            }
            None => false,
        }
    }

    /// Counts a waiter out (under the queue lock); the last one out clears `FENCED`.
    fn leave(&self) {
        let signal = self.signal();
        let left = signal.with_waiters(signal.waiters() - 1);
        self.signal.store(left.0, Ordering::Relaxed);
    }

    fn heavy(&self) {
        heavy_barrier();
        #[cfg(loom)]
        self.heavies.fetch_add(1, Ordering::Relaxed);
    }

    /// Loom only: a waiter about to skip the heavy barrier (it sees `FENCED`) checks
    /// the premise of the light/plain case in the module docs: some heavy barrier has
    /// completed since this busy period began. Setting `FENCED` before the barrier ran
    /// fails this as soon as two waiters register at once.
    #[cfg(loom)]
    fn check_fenced_premise(&self, queue: &mut Queue, signal: Signal) {
        let heavies = self.heavies.load(Ordering::Relaxed);
        if signal.waiters() == 0 {
            queue.heavies_at_period_start = heavies;
        } else if signal.is_fenced() {
            assert!(
                heavies > queue.heavies_at_period_start,
                "FENCED trusted before any heavy barrier of this busy period completed"
            );
        }
    }

    /// Closes the bag: every waiter wakes with [`Wait::Closed`], later waits fail at
    /// once and [`give_back`](Bag::give_back) returns tickets to their holders.
    pub fn close(&self) {
        let woken: Vec<_> = {
            let mut queue = self.queue.lock();
            self.signal
                .store(Signal(Signal::CLOSED).0, Ordering::Relaxed);
            // Cells are set under the lock, as in `hand_off`.
            for waiter in &queue.waiters {
                waiter.wake(WOKEN_CLOSED);
            }
            queue.waiters.drain(..).collect()
        };
        for waiter in woken {
            waiter.thread.unpark();
        }
        // Pairs with `give_back` as the waiter's barrier does: the caller's sweep of
        // idle slots either sees a racing `IDLE` publish, or that giver sees `CLOSED`.
        self.heavy();
    }
}

/// The bag's contract, deterministically: each test drives the threads through one
/// interleaving with `wait_for` (polling with a deadline, no fixed sleeps).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::thread;

    const SOON: Duration = Duration::from_secs(10);

    fn idle_bag(size: usize, fair_after: Duration) -> Arc<Bag<u32>> {
        let bag = Arc::new(Bag::<u32>::new(size, fair_after));
        for i in 0..size {
            let ticket = bag.reserve_empty(i).unwrap();
            bag.with_value(&ticket, |v| *v = Some(i as u32));
            bag.give_back(ticket).unwrap();
        }
        bag
    }

    fn wait_for(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + SOON;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "condition not met within {SOON:?}"
            );
            thread::yield_now();
        }
    }

    /// A thread that borrows with `since` and sends back what it got.
    fn waiter(bag: &Arc<Bag<u32>>, since: Instant, max: Option<usize>) -> thread::JoinHandle<Wait> {
        let bag = bag.clone();
        thread::spawn(move || {
            let mut turn = Turn::new(since);
            bag.wait(&mut turn, &Deadline::after(SOON), max, || {})
        })
    }

    fn got(outcome: Wait) -> Ticket {
        match outcome {
            Wait::Got(ticket) => ticket,
            other => panic!("expected a slot, got {other:?}"),
        }
    }

    fn queued_since(bag: &Bag<u32>) -> Vec<Instant> {
        bag.queue.lock().waiters.iter().map(|w| w.since).collect()
    }

    #[test]
    fn an_old_waiter_is_handed_the_slot_directly() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        bag.give_back(held).unwrap();
        // Handed over: still owned, so nobody can barge in.
        assert_eq!(bag.state(0), IN_USE);
        assert!(bag.try_take(0, || 0).is_none());
        let ticket = got(w.join().unwrap());
        assert_eq!(ticket.index(), 0);
        bag.give_back(ticket).unwrap();
    }

    #[test]
    fn a_new_slot_handed_to_a_waiter_is_in_use() {
        // A creator gives a `CONNECTING` slot back straight to a waiter.
        let bag = Arc::new(Bag::<u32>::new(1, Duration::ZERO));
        let creating = bag.reserve_empty(0).unwrap();
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        bag.with_value(&creating, |v| *v = Some(7));
        bag.give_back(creating).unwrap();
        assert_eq!(bag.state(0), IN_USE);
        let ticket = got(w.join().unwrap());
        assert_eq!(bag.state(0), IN_USE);
        bag.give_back(ticket).unwrap();
        assert_eq!(bag.state(0), IDLE);
    }

    #[test]
    fn a_young_waiter_competes_and_a_loser_keeps_its_place() {
        let bag = idle_bag(1, Duration::from_secs(3600));
        let held = bag.try_take(0, || 0).unwrap();
        let first = Instant::now();
        let w0 = waiter(&bag, first, None);
        wait_for(|| bag.waiters() == 1);
        let w1 = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 2);
        // Published and competed for: the giver barges straight back in.
        bag.give_back(held).unwrap();
        let barged = bag.try_take(0, || 0);
        if let Some(ticket) = barged {
            // The woken waiter lost; it queues up again ahead of the younger one.
            wait_for(|| bag.waiters() == 2);
            assert_eq!(queued_since(&bag)[0], first, "the loser kept its place");
            bag.give_back(ticket).unwrap();
        }
        // Either way both are served in the end.
        let t0 = got(w0.join().unwrap());
        bag.give_back(t0).unwrap();
        let t1 = got(w1.join().unwrap());
        bag.give_back(t1).unwrap();
        assert_eq!(bag.waiters(), 0);
    }

    #[test]
    fn waiters_beyond_max_waiters_are_refused_at_once() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), Some(1));
        wait_for(|| bag.waiters() == 1);
        let mut turn = Turn::new(Instant::now());
        assert!(matches!(
            bag.wait(&mut turn, &Deadline::after(SOON), Some(1), || {}),
            Wait::TooManyWaiters
        ));
        assert!(!turn.has_waited());
        bag.give_back(held).unwrap();
        bag.give_back(got(w.join().unwrap())).unwrap();
    }

    #[test]
    fn an_admitted_turn_is_not_refused_again() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), Some(1));
        wait_for(|| bag.waiters() == 1);
        // A turn admitted earlier (it lost a competition) re-queues past the limit.
        let mut turn = Turn::new(Instant::now());
        turn.admitted = true;
        let outcome = bag.wait(
            &mut turn,
            &Deadline::after(Duration::from_millis(1)),
            Some(1),
            || {},
        );
        assert!(matches!(outcome, Wait::TimedOut), "{outcome:?}");
        bag.give_back(held).unwrap();
        bag.give_back(got(w.join().unwrap())).unwrap();
    }

    #[test]
    fn a_timed_out_waiter_leaves_the_queue() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let mut turn = Turn::new(Instant::now());
        let outcome = bag.wait(
            &mut turn,
            &Deadline::after(Duration::from_millis(2)),
            None,
            || {},
        );
        assert!(matches!(outcome, Wait::TimedOut));
        assert_eq!(bag.waiters(), 0);
        // The return is not handed to the thread that left.
        bag.give_back(held).unwrap();
        assert_eq!(bag.state(0), IDLE);
    }

    #[test]
    fn a_huge_timeout_waits_for_ever() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(!deadline.expired());
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let bag2 = bag.clone();
        let w = thread::spawn(move || {
            let mut turn = Turn::new(Instant::now());
            bag2.wait(&mut turn, &Deadline::after(Duration::MAX), None, || {})
        });
        wait_for(|| bag.waiters() == 1);
        bag.give_back(held).unwrap();
        bag.give_back(got(w.join().unwrap())).unwrap();
    }

    #[test]
    fn close_wakes_waiters_and_returns_tickets() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        bag.close();
        assert!(matches!(w.join().unwrap(), Wait::Closed));
        assert!(bag.is_closed());
        let ticket = bag
            .give_back(held)
            .expect_err("closed: the ticket comes back");
        bag.with_value(&ticket, |v| *v = None);
        bag.free(ticket);
        let mut turn = Turn::new(Instant::now());
        assert!(matches!(
            bag.wait(&mut turn, &Deadline::after(SOON), None, || {}),
            Wait::Closed
        ));
    }

    #[test]
    fn the_bounded_park_recovers_a_lost_wake_up() {
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        // Publish behind the protocol's back, as a buggy giver would: nobody is woken.
        let _ = held.index(); // the ticket is given up without `give_back`
        bag.slots[0].state.store(IDLE, Ordering::Release);
        let started = Instant::now();
        let ticket = got(w.join().unwrap());
        assert_eq!(ticket.index(), 0);
        // Within a few rescans, not the 10 s timeout.
        assert!(started.elapsed() < SOON / 2, "{:?}", started.elapsed());
        bag.give_back(ticket).unwrap();
    }

    #[test]
    fn a_woken_waiter_passes_the_baton() {
        // Two slots handed out, two waiters, both slots back at once in compete mode:
        // whichever slot the first woken waiter takes, the second waiter is served.
        for _ in 0..200 {
            let bag = idle_bag(2, Duration::from_secs(3600));
            let a = bag.try_take(0, || 0).unwrap();
            let b = bag.try_take(1, || 1).unwrap();
            let w0 = waiter(&bag, Instant::now(), None);
            let w1 = waiter(&bag, Instant::now(), None);
            wait_for(|| bag.waiters() == 2);
            let giver = {
                let bag = bag.clone();
                thread::spawn(move || bag.give_back(b).unwrap())
            };
            bag.give_back(a).unwrap();
            giver.join().unwrap();
            let t0 = got(w0.join().unwrap());
            let t1 = got(w1.join().unwrap());
            assert_ne!(t0.index(), t1.index());
            bag.give_back(t0).unwrap();
            bag.give_back(t1).unwrap();
        }
    }

    #[test]
    fn a_failing_membarrier_falls_back_to_fences_without_panicking() {
        crate::sync::fail_membarrier();
        let bag = idle_bag(1, Duration::ZERO);
        let held = bag.try_take(0, || 0).unwrap();
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        bag.give_back(held).unwrap();
        bag.give_back(got(w.join().unwrap())).unwrap();
        // After the first failed call, every barrier is a real fence.
        assert!(!crate::sync::barriers_are_asymmetric());
    }
}
