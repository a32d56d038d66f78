//! Waiting for a slot, and giving one back while threads wait: the waiter queue, the
//! hand-off, the baton, the bounded park and the slow side of the barriers (see the
//! crate's `implementation` page).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Bag, IDLE, IN_USE, RESCAN, Signal, Ticket};
use crate::clock;
use crate::sync::{
    Arc, AtomicUsize, Ordering, Thread, current, fence, heavy_barrier, park_timeout,
};

/// A waiter's cell before anything happens to it.
const WAITING: usize = usize::MAX;
/// A waiter's cell when the bag closed under it.
const WOKEN_CLOSED: usize = usize::MAX - 1;
/// A waiter's cell when it was woken to compete for an `IDLE` slot.
const WOKEN_COMPETE: usize = usize::MAX - 2;

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
    pub(super) admitted: bool,
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
///
/// Under loom the deadline is in the models' virtual time (`sync::time`): it expires
/// only once a model advances the clock past it, and parking waits for an unpark (the
/// models use deadlines that have passed or never pass).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(#[cfg(not(loom))] Option<Instant>, #[cfg(loom)] Option<u64>);

impl Deadline {
    /// `timeout` from now; one too large for the clock means for ever.
    pub fn after(timeout: Duration) -> Deadline {
        #[cfg(not(loom))]
        return Deadline(Instant::now().checked_add(timeout));
        #[cfg(loom)]
        Deadline(
            u64::try_from(timeout.as_millis())
                .ok()
                .and_then(|ms| crate::sync::time::now_ms().checked_add(ms)),
        )
    }

    /// How long until the deadline (zero once passed); `None` for ever.
    pub fn left(&self) -> Option<Duration> {
        #[cfg(not(loom))]
        return self
            .0
            .map(|at| at.saturating_duration_since(Instant::now()));
        #[cfg(loom)]
        self.0
            .map(|at| Duration::from_millis(at.saturating_sub(crate::sync::time::now_ms())))
    }
}

impl Timer for Deadline {
    fn expired(&self) -> bool {
        #[cfg(not(loom))]
        return self.0.is_some_and(|at| Instant::now() >= at);
        #[cfg(loom)]
        self.0.is_some_and(|at| crate::sync::time::now_ms() >= at)
    }

    fn park(&self) {
        #[cfg(not(loom))]
        let left = match self.0 {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => RESCAN,
        };
        #[cfg(loom)]
        let left = RESCAN;
        park_timeout(left.min(RESCAN));
    }
}

/// What a waiter's look at the slots (`Bag::recheck`) found.
enum Recheck {
    /// It took an idle slot.
    Got(Ticket),
    /// It left the queue for an idle slot that another thread took: queue up again.
    Requeue,
    /// Nothing idle (a connection was asked for), or it was popped meanwhile: wait.
    Wait,
}

#[derive(Debug)]
pub(super) struct Waiter {
    /// `WAITING`, `WOKEN_CLOSED`, `WOKEN_COMPETE` or the index of the slot handed over.
    /// Set only under the queue lock, when the waiter is popped.
    cell: AtomicUsize,
    thread: Thread,
    /// When the thread started waiting (its place in the queue).
    pub(super) since: Instant,
}

impl Waiter {
    fn wake(&self, cell: usize) {
        self.cell.store(cell, Ordering::Release);
    }
}

/// The waiter queue, behind the bag's mutex.
#[derive(Debug, Default)]
pub(super) struct Queue {
    pub(super) waiters: VecDeque<Arc<Waiter>>,
    /// How fast slots come back while threads wait.
    pub(super) pace: ReturnPace,
    /// Loom only: heavy barriers completed when the current busy period began.
    #[cfg(loom)]
    heavies_at_period_start: usize,
}

/// Under a long queue the fairness bound is this many times the time the queue takes
/// to drain at the current pace of returns (docs/implementation.md, "The bound grows
/// with the queue").
const DRAINS: u32 = 3;
/// ... but at most this many times `fair_after`, so that slow returns (long holds)
/// cannot stretch it without limit.
const MAX_STRETCH: u32 = 8;

/// The longest the bound can grow to from `fair_after`.
fn longest_bound(fair_after: Duration) -> Duration {
    fair_after.saturating_mul(MAX_STRETCH)
}

/// The pace of returns while threads wait (under the queue lock), from which the
/// fairness bound grows with the queue.
#[derive(Debug, Default)]
pub(super) struct ReturnPace {
    /// The last return of this busy period, if there was one.
    last: Option<Instant>,
    /// The mean time between returns, in nanoseconds (each return weighs 1/8).
    mean_ns: u64,
}

impl ReturnPace {
    /// A busy period begins: the time since the last return says nothing of the pace.
    pub(super) fn restart(&mut self) {
        self.last = None;
    }

    /// Notes a return at `now`; a gap longer than `longest` counts as `longest`.
    pub(super) fn note(&mut self, now: Instant, longest: Duration) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).min(longest);
            let gap = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
            self.mean_ns = self.mean_ns - self.mean_ns / 8 + gap / 8;
        }
        self.last = Some(now);
    }

    /// How long the oldest of `waiters` may wait before returns are handed to it:
    /// [`DRAINS`] times the time the queue takes to drain at this pace, at least
    /// `fair_after` and at most [`MAX_STRETCH`] times it (so `ZERO` stays strict FIFO
    /// and `MAX` stays off).
    pub(super) fn bound(&self, fair_after: Duration, waiters: usize) -> Duration {
        let waiters = u32::try_from(waiters).unwrap_or(u32::MAX);
        Duration::from_nanos(self.mean_ns)
            .saturating_mul(waiters)
            .saturating_mul(DRAINS)
            .clamp(fair_after, longest_bound(fair_after))
    }
}

#[cfg(all(test, not(loom)))]
impl Queue {
    /// A queue of `count` waiters (this thread) that all began to wait at `since`.
    pub(super) fn of(count: usize, since: Instant) -> Queue {
        let waiters = (0..count)
            .map(|_| {
                Arc::new(Waiter {
                    cell: AtomicUsize::new(WAITING),
                    thread: current(),
                    since,
                })
            })
            .collect();
        Queue {
            waiters,
            ..Queue::default()
        }
    }
}

impl<T, X> Bag<T, X> {
    /// `give_back` when there are waiters, the bag is closed or the slot is beyond the
    /// limit.
    #[cold]
    #[inline(never)]
    pub(super) fn give_back_slow(&self, mut ticket: Ticket) -> Result<(), Ticket> {
        let slot = self.slots.at(ticket.0);
        loop {
            let signal = self.signal();
            if signal.is_closed() || ticket.0 >= self.slots.limit() {
                return Err(ticket);
            }
            if signal.waiters() != 0 && (!self.competitor_on_its_way() || self.oldest_may_be_due())
            {
                match self.hand_off(ticket) {
                    Ok(()) => return Ok(()),
                    Err(back) => {
                        // Nobody waits any more, or the bag shrank: look again.
                        ticket = back;
                        continue;
                    }
                }
            }
            let after = self.publish(slot, signal);
            if ticket.0 < self.slots.limit()
                && (after.is_quiet() || self.competitor_will_see(after))
            {
                return Ok(());
            }
            // As in `give_back`: take it back for the waiter (or to close it), or leave
            // it to the thread that took it.
            if !slot.try_borrow() {
                return Ok(());
            }
        }
    }

    /// With threads waiting, whether a competitor woken before and not yet looking will
    /// see the slot this thread has just published `IDLE`, so that the return needs no
    /// hand-off (see "One competitor on its way" in docs/implementation.md).
    ///
    /// Looked at before the queue's lock, while the oldest waiter cannot be due a
    /// hand-off yet: under preemption a woken competitor may not run for a scheduler
    /// period, and meanwhile every return would take the lock only to find that it has
    /// nothing to do (with 32 threads looping on 8 connections on two cores, the lock
    /// then cost 4-5x the whole borrow path). Once the oldest waiter may be due, the
    /// returns take the lock again, so that waiter is not left to wait for the
    /// competitor (which doubled the p99 wait in `benches/fairness.rs`).
    fn competitor_will_see(&self, after: Signal) -> bool {
        if after.is_closed() {
            return false;
        }
        // Pairs with the competitor's count-out, scan and fence, as in `hand_off`. The
        // publish's light barrier is not enough: it pairs only with heavy barriers, and
        // a competitor runs none (loom cannot tell: it models that barrier as a fence).
        fence(Ordering::SeqCst);
        self.competitor_on_its_way()
    }

    fn competitor_on_its_way(&self) -> bool {
        self.competing.load(Ordering::SeqCst) != 0
    }

    /// Whether the oldest waiter may have waited `fair_after`: then a return goes
    /// through `hand_off`, which decides under the lock whether it is due.
    fn oldest_may_be_due(&self) -> bool {
        clock::now_ms() >= self.oldest_due_ms.load(Ordering::Relaxed)
    }

    /// Notes when the oldest of `queue` will have waited `fair_after` (under the queue
    /// lock, whenever the front of the queue may have changed). Rounded down to the
    /// coarse clock's millisecond, so `oldest_may_be_due` errs towards the lock.
    fn note_oldest(&self, queue: &Queue) {
        let due = queue.waiters.front().map_or(u64::MAX, |oldest| {
            let left = self.fair_after.saturating_sub(oldest.since.elapsed());
            clock::now_ms().saturating_add(clock::millis(left))
        });
        self.oldest_due_ms.store(due, Ordering::Relaxed);
    }

    /// Gives `ticket` to the oldest waiter: directly if the return is due to it (see
    /// [`return_is_due`](Self::return_is_due)), else by publishing the slot and waking
    /// the waiter to compete for it. Returns the ticket if nobody waits (or the bag
    /// shrank below the slot meanwhile).
    fn hand_off(&self, ticket: Ticket) -> Result<(), Ticket> {
        let mut queue = self.queue.lock();
        if queue.waiters.is_empty() {
            return Err(ticket);
        }
        let slot = self.slots.at(ticket.0);
        if ticket.0 >= self.slots.limit() {
            // Shrunk below the slot since `give_back_slow` looked: a waiter that
            // registered after the shrink (under this lock) must not get it.
            return Err(ticket);
        }
        if self.return_is_due(&mut queue, Instant::now()) {
            let waiter = self.pop(&mut queue).expect("a waiter is queued");
            // Ownership moves with the index in the cell. The slot may come from
            // `CONNECTING` or `RESERVED` (a creator or the housekeeper giving back):
            // it is `IN_USE` from now on, published by the cell's release store.
            slot.state.store(IN_USE, Ordering::Relaxed);
            waiter.wake(ticket.0);
            drop(queue);
            waiter.thread.unpark();
            return Ok(());
        }
        // Published before any cell is set, so a woken waiter sees it idle (or taken
        // since); no re-check is needed for it, and waiters that queue later see it in
        // their own re-check. Under the lock, so a `close` either saw it idle in its
        // sweep or happened before this hand-off looked at the queue.
        slot.state.store(IDLE, Ordering::Release);
        // A competitor woken before and not yet looking will see this slot: it counts
        // itself out, looks, fences and counts the idle slots before it passes the
        // baton (so one of it and us sees the other), and finding none it queues up
        // again and re-checks. It takes this slot or passes the baton; waking another
        // would only wake one to lose.
        fence(Ordering::SeqCst);
        if ticket.0 >= self.slots.limit() {
            // The bag shrank below the slot since `give_back_slow` looked, and its
            // sweep may have passed it: take it back to close it (or leave it to the
            // thread that took it, which gives it back beyond the limit).
            return if slot.try_borrow() {
                Err(ticket)
            } else {
                Ok(())
            };
        }
        if self.competing.load(Ordering::SeqCst) != 0 {
            return Ok(());
        }
        let waiter = self.pop(&mut queue).expect("a waiter is queued");
        self.wake_to_compete(&waiter);
        drop(queue);
        waiter.thread.unpark();
        Ok(())
    }

    /// Notes a return at `now` in the queue's pace and says whether it is due to the
    /// oldest waiter, which has then waited long enough for a direct hand-off: `fair_after`, or longer under a
    /// queue that takes longer to drain ([`ReturnPace::bound`]).
    pub(super) fn return_is_due(&self, queue: &mut Queue, now: Instant) -> bool {
        queue.pace.note(now, longest_bound(self.fair_after));
        let bound = queue.pace.bound(self.fair_after, queue.waiters.len());
        queue
            .waiters
            .front()
            .is_some_and(|oldest| now.saturating_duration_since(oldest.since) >= bound)
    }

    /// Pops the oldest waiter and counts it out (under the queue lock).
    fn pop(&self, queue: &mut Queue) -> Option<Arc<Waiter>> {
        let waiter = queue.waiters.pop_front()?;
        self.leave();
        self.note_oldest(queue);
        Some(waiter)
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
            match self.recheck(&waiter, &mut registered) {
                Recheck::Got(ticket) => return Wait::Got(ticket),
                Recheck::Requeue => continue 'queue,
                Recheck::Wait => {}
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
                // The backstop (docs/implementation.md): after any wake-up without news,
                // look for an idle slot, and ask again for a connection (for an empty
                // slot that nobody is opening).
                if waiter.cell.load(Ordering::Relaxed) == WAITING {
                    fence(Ordering::SeqCst);
                    match self.recheck(&waiter, &mut registered) {
                        Recheck::Got(ticket) => return Wait::Got(ticket),
                        Recheck::Requeue => continue 'queue,
                        Recheck::Wait => {}
                    }
                }
            }
        }
    }

    /// A queued waiter's look at the slots, after registering and after a wake-up
    /// without news: it leaves the queue for an idle slot, or else asks the pool for a
    /// connection (`registered`).
    fn recheck(&self, waiter: &Arc<Waiter>, registered: &mut impl FnMut()) -> Recheck {
        if !self.any_idle() {
            registered();
            return Recheck::Wait;
        }
        if !self.cancel(waiter) {
            return Recheck::Wait; // popped meanwhile: the cell says what for
        }
        match self.take_as_waiter() {
            Some(ticket) => Recheck::Got(ticket),
            None => Recheck::Requeue,
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
            if signal.waiters() == 0 {
                queue.pace.restart();
            }
            #[cfg(loom)]
            self.check_fenced_premise(&mut queue, signal);
            // Behind everyone who has waited longer: at the back for a new waiter,
            // back in its place for one that lost a competition.
            let place = queue.waiters.partition_point(|w| w.since <= turn.since);
            queue.waiters.insert(place, waiter.clone());
            if place == 0 {
                self.note_oldest(&queue);
            }
            // Changed only under the lock, so a plain store will do.
            let registered = signal.with_waiters(signal.waiters() + 1);
            self.signal.store(registered.0, Ordering::Relaxed);
            signal.is_fenced()
        };
        if fenced {
            fence(Ordering::SeqCst);
        } else {
            self.heavy();
            // Only now may later waiters rely on this barrier (docs/implementation.md), and only
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
    /// slot is idle, wakes the next one to compete (the baton, docs/implementation.md).
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
        self.slots.in_use().filter(|slot| slot.is_idle()).count()
    }

    /// Removes `waiter` from the queue; false if it was already popped (its cell is
    /// set).
    fn cancel(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = self.queue.lock();
        match queue.waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(position) => {
                queue.waiters.remove(position);
                self.leave();
                if position == 0 {
                    self.note_oldest(&queue);
                }
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
    /// the premise of the light/plain case in docs/implementation.md: some heavy barrier has
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
            let woken = queue.waiters.drain(..).collect();
            self.note_oldest(&queue);
            woken
        };
        for waiter in woken {
            waiter.thread.unpark();
        }
        // Pairs with `give_back` as the waiter's barrier does: the caller's sweep of
        // idle slots either sees a racing `IDLE` publish, or that giver sees `CLOSED`.
        self.heavy();
    }
}
