//! Borrow and return: the hot path first, everything `#[cold]` after it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::runtime::Recheck;
use super::slot::{BorrowSite, Checkout, NOT_BORROWED, SlotMeta, hold_bucket, owner_add};
use crate::affinity;
use crate::bag::{Deadline, NO_HINT, Ticket, Timer, Turn, Wait};
use crate::clock;
use crate::error::Error;
use crate::event::{CheckinEvent, CheckoutEvent, TimeoutEvent};
use crate::manager::{CloseReason, ManageConnection};
use crate::stats::Counters;
use crate::trace;

impl<M: ManageConnection> Shared<M> {
    /// Borrows: the fast path inline, the rest out of line.
    #[inline]
    pub(crate) fn checkout(&self, timeout: Duration) -> Result<Checkout<M::Connection>, Error> {
        if let Some(checkout) = self.take_idle(Budget::Whole(timeout)) {
            return Ok(checkout);
        }
        self.checkout_slow(timeout)
    }

    /// No check of `closed` here: closing sweeps every idle slot, so on a closed pool
    /// this finds nothing and `get` goes on to the slow path, which reports it.
    #[inline]
    pub(crate) fn try_checkout(&self) -> Option<Checkout<M::Connection>> {
        self.take_idle(Budget::Whole(Duration::MAX))
    }

    /// An idle connection, if there is one, checked within `budget` if it is due one.
    #[inline]
    fn take_idle(&self, budget: Budget<'_>) -> Option<Checkout<M::Connection>> {
        if self.forked() {
            return None; // `checkout_slow` says why
        }
        loop {
            let ticket = self
                .bag
                .try_take(affinity::hint(self.id), affinity::scan_start)?;
            if let Some(checkout) = self.finish_checkout(ticket, None, budget) {
                return Some(checkout);
            }
            if self.is_paused() {
                return None; // `checkout_slow` waits
            }
        }
    }

    /// Finishes a borrow of the slot `ticket` owns: checks the connection if asked,
    /// within what the borrow has left of its `budget`, and records the borrow. `None`
    /// if the check failed (the connection is closed).
    #[inline]
    pub(super) fn finish_checkout(
        &self,
        ticket: Ticket,
        waited: Option<Duration>,
        budget: Budget<'_>,
    ) -> Option<Checkout<M::Connection>> {
        let payload = self.bag.value_ptr(&ticket);
        let index = ticket.index();
        // SAFETY: the ticket owns the slot (taken from `IDLE` or handed over), so its
        // payload holds an entry.
        let mut checkout = unsafe { Checkout::new(ticket, payload) };
        let now = clock::now_ms();
        let entry = checkout.entry_mut();
        // Retired or beyond a smaller limit since it was last looked at: whatever
        // path it came by (a return or a connect that straddled the change, a
        // hand-off), it is not lent (`runtime`).
        if self.stale(entry.epoch) {
            match self.recheck(entry, index) {
                Recheck::Keep => {}
                Recheck::Close(reason) => {
                    self.close_failed(checkout.into_ticket(), reason);
                    return None;
                }
                Recheck::Paused => {
                    self.give_back(checkout.into_ticket());
                    return None;
                }
            }
        }
        if self.config.test_on_check_out
            && now.saturating_sub(entry.last_checked_ms) >= self.config.validation_bypass_ms
        {
            if !self.check_within(&mut entry.conn, entry.id, budget.left()) {
                self.close_failed(checkout.into_ticket(), CloseReason::Broken);
                return None;
            }
            entry.last_checked_ms = now;
        }
        let meta = self.bag.meta(index);
        if self.config.observed || waited.is_some() {
            self.note_checkout(meta, entry.id, waited, now);
        }
        // Stores are what the next CAS waits for (it drains the store buffer), so
        // skip those that would not change anything: the clock moves once a ms.
        if meta.borrowed_at_ms.load(Ordering::Relaxed) != now {
            meta.borrowed_at_ms.store(now, Ordering::Relaxed);
        }
        owner_add(&meta.borrows, 1);
        if self.may_run_short() {
            self.top_up_idle();
        }
        Some(checkout)
    }

    /// Takes a connection back from a guard. `discard` closes it instead.
    ///
    /// The common return (nothing observed, nothing to reset, held under a millisecond,
    /// neither expired nor stale) in a few instructions inline; every other return goes
    /// through [`checkin_in_full`](Self::checkin_in_full), which makes the same decisions
    /// in the same order. Small enough to inline into the guard's drop, so a borrow and
    /// its return keep the slot in registers.
    #[inline(always)]
    pub(crate) fn checkin(&self, mut checkout: Checkout<M::Connection>, discard: bool) {
        let index = checkout.ticket().index();
        let now = clock::now_ms();
        let meta = self.bag.meta(index);
        let entry = checkout.entry_mut();
        if discard
            || self.config.observed
            || self.config.resets
            || meta.borrowed_at_ms.load(Ordering::Relaxed) != now
            || now >= entry.expires_ms
            || self.stale(entry.epoch)
            || std::thread::panicking()
        {
            return self.checkin_in_full(checkout, discard, now);
        }
        if self.has_broken(&mut entry.conn) {
            return self.close_slot(checkout.into_ticket(), CloseReason::Broken);
        }
        self.keep(checkout, now);
    }

    /// `checkin` for every return: hold-time accounting, events, `has_broken`,
    /// lifetime, a stale epoch and the reset, each closing the connection if it says
    /// so.
    #[cold]
    #[inline(never)]
    fn checkin_in_full(&self, mut checkout: Checkout<M::Connection>, discard: bool, now: u64) {
        let index = checkout.ticket().index();
        let entry = checkout.entry_mut();
        let meta = self.bag.meta(index);
        let held_ms = now.saturating_sub(meta.borrowed_at_ms.load(Ordering::Relaxed));
        if held_ms != 0 {
            owner_add(&meta.hold_ms, held_ms);
            owner_add(&meta.cold.hold_times.0[hold_bucket(held_ms)], 1);
        }
        if self.config.observed {
            self.note_checkin(meta, entry.id, held_ms);
        }
        // A panicking borrower's connection was checked and reset by its recovery, and
        // then goes through the lifetime and epoch checks as any other.
        let panicked = std::thread::panicking();
        let close = if discard || (panicked && !self.recover_after_panic(entry)) {
            Some(CloseReason::Discarded)
        } else if !panicked && self.has_broken(&mut entry.conn) {
            Some(CloseReason::Broken)
        } else if now >= entry.expires_ms {
            Some(CloseReason::Lifetime)
        } else if self.stale(entry.epoch)
            && let Recheck::Close(reason) = self.recheck(entry, index)
        {
            Some(reason)
        } else if self.config.resets
            && !panicked
            && let Some(failed) = self.recycle(entry)
        {
            self.close_failed(checkout.into_ticket(), failed);
            return;
        } else {
            None
        };
        if let Some(reason) = close {
            self.close_slot(checkout.into_ticket(), reason);
            return;
        }
        self.keep(checkout, now);
    }

    /// `ManageConnection::has_broken`; a panic in it counts as broken.
    #[inline(always)]
    pub(super) fn has_broken(&self, conn: &mut M::Connection) -> bool {
        self.hook("ManageConnection::has_broken", || {
            self.manager.has_broken(conn)
        })
        .unwrap_or(true)
    }

    /// Ends a return that keeps the connection: notes when it was last used, makes it
    /// this thread's hint and gives it back.
    #[inline(always)]
    fn keep(&self, mut checkout: Checkout<M::Connection>, now: u64) {
        let index = checkout.ticket().index();
        let entry = checkout.entry_mut();
        if entry.last_used_ms != now {
            entry.last_used_ms = now;
        }
        affinity::remember(self.id, index);
        self.give_back(checkout.into_ticket());
    }

    /// Gives an owned slot (with its connection) back to the bag, closing the
    /// connection if the pool closed meanwhile or shrank below the slot.
    #[inline(always)]
    pub(crate) fn give_back(&self, ticket: Ticket) {
        if let Err(ticket) = self.bag.give_back(ticket) {
            let reason = if self.bag.is_closed() {
                CloseReason::PoolClosed
            } else {
                CloseReason::Evicted
            };
            self.close_slot(ticket, reason);
        }
    }

    #[cold]
    #[inline(never)]
    pub(super) fn checkout_slow(
        &self,
        timeout: Duration,
    ) -> Result<Checkout<M::Connection>, Error> {
        if self.forked() {
            return Err(Error::Forked);
        }
        let started = Instant::now();
        let _span = trace::Waiting::start(&self.config.name, started);
        clock::tick();
        let timer = BorrowTimer {
            deadline: Deadline::after(timeout),
            shared: self,
        };
        let mut turn = Turn::new(started);
        loop {
            if self.bag.is_closed() {
                return Err(Error::Closed);
            }
            if self.is_paused() {
                match self.wait_while_paused(&timer.deadline) {
                    Ok(()) => continue,
                    Err(true) => {
                        return Err(Error::Paused {
                            pool: self.name().to_owned(),
                        });
                    }
                    Err(false) => return Err(self.timed_out(started, timeout)),
                }
            }
            let ticket = match self.bag.try_take(NO_HINT, affinity::scan_start) {
                Some(ticket) => ticket,
                None => {
                    if let Some(down) = self.unavailable() {
                        return Err(down);
                    }
                    let outcome = self
                        .bag
                        .wait(&mut turn, &timer, self.config.max_waiters, || {
                            self.open_for_waiters()
                        });
                    clock::tick();
                    match outcome {
                        Wait::Got(ticket) => ticket,
                        Wait::TimedOut => {
                            if let Some(down) = self.unavailable() {
                                return Err(down);
                            }
                            if timer.deadline.expired() {
                                return Err(self.timed_out(started, timeout));
                            }
                            continue; // woken by an outage that just ended
                        }
                        Wait::Closed => return Err(Error::Closed),
                        Wait::TooManyWaiters => {
                            Counters::bump(&self.counters.rejected);
                            return Err(Error::TooManyWaiters {
                                pool: self.name().to_owned(),
                                limit: self.config.max_waiters.unwrap_or(0),
                            });
                        }
                    }
                }
            };
            // Once queued, the borrow counts as a wait however it ends.
            let waited = turn.has_waited().then(|| started.elapsed());
            let budget = Budget::Until(&timer.deadline);
            if let Some(checkout) = self.finish_checkout(ticket, waited, budget) {
                return Ok(checkout);
            }
        }
    }

    /// Whether waiting could not help: the breaker is open (the backend refused every
    /// recent connect) and the pool has no connection that could come back.
    pub(super) fn backend_down(&self) -> bool {
        self.connects.breaker_fails_fast() && self.connections_estimate() == 0
    }

    /// The error for a borrow while the backend is down, if it is. `None` also while a
    /// connect has just succeeded (it clears the last error before the breaker
    /// closes): then the borrow waits for that connection.
    #[cold]
    pub(super) fn unavailable(&self) -> Option<Error> {
        if !self.backend_down() {
            return None;
        }
        let last_error = self.connects.last_error()?;
        Counters::bump(&self.counters.unavailable);
        Some(Error::Unavailable {
            pool: self.name().to_owned(),
            down_for: self.connects.down_for(clock::now_ms()).unwrap_or_default(),
            last_error: Some(last_error),
        })
    }

    #[cold]
    pub(super) fn timed_out(&self, started: Instant, timeout: Duration) -> Error {
        let waited = started.elapsed();
        Counters::bump(&self.counters.timeouts);
        if let Some(handler) = &self.config.event_handler {
            self.hook("HandleEvent::handle_timeout", || {
                handler.handle_timeout(TimeoutEvent { timeout, waited })
            });
        }
        Error::Timeout {
            pool: self.name().to_owned(),
            waited,
            state: self.state(),
            last_error: self.connects.last_error(),
        }
    }

    /// What a borrow records beyond the fast path: the wait, the borrow site for leak
    /// detection, the event. Done before the borrow time is stored, so the leak scan
    /// never pairs a new borrow time with the previous borrow's site.
    #[cold]
    pub(super) fn note_checkout(
        &self,
        meta: &SlotMeta,
        id: u64,
        waited: Option<Duration>,
        now: u64,
    ) {
        if let Some(waited) = waited {
            Counters::bump(&self.counters.waits);
            self.counters.wait_time.record(waited);
        }
        if self.config.leak_detection_threshold.is_some() {
            self.record_borrow_site(meta, now);
        }
        if let Some(handler) = &self.config.event_handler {
            // The precise start of the hold, for `CheckinEvent::duration`.
            meta.cold
                .borrowed_at_ns
                .store(clock::precise_ns(), Ordering::Relaxed);
            self.hook("HandleEvent::handle_checkout", || {
                handler.handle_checkout(CheckoutEvent {
                    id,
                    duration: waited.unwrap_or_default(),
                })
            });
        }
    }

    /// Records where the borrow that starts at `now` happened.
    pub(super) fn record_borrow_site(&self, meta: &SlotMeta, now: u64) {
        let site = BorrowSite {
            borrowed_at_ms: now,
            thread: std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_owned(),
            backtrace: std::backtrace::Backtrace::force_capture(),
        };
        let mut recorded = meta.cold.borrow_site.lock();
        *recorded = Some(site);
        meta.cold.leak_reported.store(false, Ordering::Relaxed);
    }

    /// What a return records beyond the fast path: the leak follow-up, the event.
    #[cold]
    pub(super) fn note_checkin(&self, meta: &SlotMeta, id: u64, held_ms: u64) {
        if self.config.leak_detection_threshold.is_some() {
            meta.borrowed_at_ms.store(NOT_BORROWED, Ordering::Relaxed);
            if meta.cold.leak_reported.swap(false, Ordering::Relaxed) {
                log::info!(
                    "pool '{}': connection {id}, reported as leaked, was returned after {:?}",
                    self.config.name,
                    Duration::from_millis(held_ms)
                );
            }
        }
        if let Some(handler) = &self.config.event_handler {
            let since = meta.cold.borrowed_at_ns.load(Ordering::Relaxed);
            let held = Duration::from_nanos(clock::precise_ns().saturating_sub(since));
            self.hook("HandleEvent::handle_checkin", || {
                handler.handle_checkin(CheckinEvent { id, duration: held })
            });
        }
    }
}

/// How long a borrow-time check may block: what the borrow has left, so that a slow
/// check cannot carry a borrow past its deadline (`validation_timeout` bounds it too).
#[derive(Clone, Copy)]
pub(super) enum Budget<'a> {
    /// The borrow has not waited: its whole timeout is left.
    Whole(Duration),
    /// The borrow waited: until its deadline.
    Until(&'a Deadline),
}

impl Budget<'_> {
    /// What is left; at least a millisecond, so a borrow served at its deadline still
    /// gets a check (bounded by a millisecond) rather than an unchecked connection.
    fn left(self) -> Duration {
        let left = match self {
            Budget::Whole(timeout) => timeout,
            Budget::Until(deadline) => deadline.left().unwrap_or(Duration::MAX),
        };
        left.max(Duration::from_millis(1))
    }
}

/// A borrower's timer: its deadline, or the backend found down while it waits (the
/// bag looks at least every `bag::RESCAN`), so that waiters learn of an outage as fast
/// as new borrowers do.
struct BorrowTimer<'a, M: ManageConnection> {
    deadline: Deadline,
    shared: &'a Shared<M>,
}

impl<M: ManageConnection> Timer for BorrowTimer<'_, M> {
    fn expired(&self) -> bool {
        self.deadline.expired() || self.shared.backend_down()
    }

    fn park(&self) {
        self.deadline.park();
    }
}
