//! Loom models of the hand-out algorithm (`src/bag.rs`): slot ownership, the
//! register/re-check/hand-off protocol that must never lose a wake-up, timeouts,
//! `max_waiters` and closing, in the adversarial shapes: several waiters and several
//! returners at once, borrowers that keep what they get, a timeout racing a hand-off,
//! a close racing a hand-off with waiters queued.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom` (`scripts/test`
//! does; under a minute). Each model sets its own preemption bound: 3, or 2 for the
//! two four-thread models with the most interleavings (at 3 the two-givers model ran
//! for over ten minutes without finishing; the failures their docs name are all found
//! within 2). Loom reports a lost wake-up as a deadlock: every thread parked, none
//! runnable. The bag's bounded park (`RESCAN`) would hide one, so the models' timers
//! park without a timeout.
//!
//! Every barrier is a `SeqCst` fence under loom; see `src/bag.rs` for what that covers
//! and how the case loom cannot model (a waiter relying on another's `membarrier`) is
//! checked instead. Each model names a change to `src/bag.rs` that makes it fail; each
//! was made and seen to fail.

#![cfg(loom)]

use std::time::{Duration, Instant};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use stickypool::bag::{Bag, IN_USE, Ticket, Timer, Turn, Wait};

/// Returns always go straight to the oldest waiter.
const HAND_OFF: Duration = Duration::ZERO;
/// Returns are always competed for (a waiter is woken, the slot published).
const COMPETE: Duration = Duration::from_secs(3600);

/// Explores `f` with at most `preemptions` preemptions per execution.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// A timer that never expires and parks until unparked: a lost wake-up is a deadlock.
struct Forever;

impl Timer for Forever {
    fn expired(&self) -> bool {
        false
    }
    fn park(&self) {
        thread::park();
    }
}

/// A timer that expires when another thread (the "clock") rings it: the timeout is a
/// thread of its own, so loom explores it firing at every point of the wait.
#[derive(Clone)]
struct Alarm(Arc<AtomicBool>);

impl Alarm {
    fn new() -> Alarm {
        Alarm(Arc::new(AtomicBool::new(false)))
    }

    fn ring(&self, waiter: &thread::Thread) {
        self.0.store(true, Ordering::SeqCst);
        waiter.unpark();
    }
}

impl Timer for Alarm {
    fn expired(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn park(&self) {
        thread::park();
    }
}

/// A bag of `size` idle slots holding `0`.
fn idle_bag(size: usize, fair_after: Duration) -> Arc<Bag<u32>> {
    let bag = Arc::new(Bag::<u32>::new(size, fair_after));
    for i in 0..size {
        let ticket = bag.reserve_empty(i).unwrap();
        bag.with_value(&ticket, |v| *v = Some(0));
        bag.give_back(ticket).unwrap();
    }
    bag
}

/// Borrows like the pool does: the fast path, then wait, until served or closed.
fn borrow_with(bag: &Bag<u32>, timer: &impl Timer, max_waiters: Option<usize>) -> Wait {
    let mut turn = Turn::new(Instant::now());
    loop {
        if let Some(ticket) = bag.try_take(0, || 0) {
            return Wait::Got(ticket);
        }
        match bag.wait(&mut turn, timer, max_waiters, || {}) {
            Wait::TooManyWaiters => {
                // Admitted once, a borrower keeps its place (max_waiters re-queueing).
                assert!(!turn.has_waited(), "an admitted waiter was turned away");
                return Wait::TooManyWaiters;
            }
            outcome => return outcome,
        }
    }
}

fn borrow(bag: &Bag<u32>) -> Option<Ticket> {
    match borrow_with(bag, &Forever, None) {
        Wait::Got(ticket) => Some(ticket),
        Wait::Closed => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Increments the payload: loom flags it if two threads ever touch it at once.
fn use_it(bag: &Bag<u32>, ticket: &Ticket) {
    bag.with_value(ticket, |v| *v.as_mut().unwrap() += 1);
}

/// Fails if `take_as_waiter` does not pass the baton (wake the next waiter while a slot
/// is idle): a woken keeper takes the slot a giver published, that giver's take-back
/// fails, and the second waiter parks for ever beside the slot published for the
/// first. Passing the baton was missing in 0.1; this model finds that as a deadlock.
/// It also deadlocks if a woken competitor leaves `competing` only after its look at
/// the slots (or never): then a taker counts it as still on its way and passes no
/// baton. It deadlocks too if a giver that finds a competitor on its way (and so
/// wakes nobody) reads `competing` without the `SeqCst` fence after publishing its
/// slot in `hand_off`, or trusts the look it took before publishing in
/// `give_back_slow` (the look before the queue's lock) instead of looking again after
/// the publish: the competitor's look can then miss that slot while the giver misses
/// the competitor's leaving. And it trips the `FENCED` premise assertion if `register`
/// sets `FENCED` before its heavy barrier has returned (0.1 did).
#[test]
fn two_givers_and_two_keepers_strand_nobody() {
    for fair_after in [COMPETE, HAND_OFF] {
        model(2, move || {
            let bag = idle_bag(2, fair_after);
            let a = bag.try_take(0, || 0).unwrap();
            let b = bag.try_take(1, || 1).unwrap();
            let keepers: Vec<_> = (0..2)
                .map(|_| {
                    let bag = bag.clone();
                    thread::spawn(move || {
                        let ticket = borrow(&bag).expect("not closed");
                        use_it(&bag, &ticket);
                        ticket // kept: never given back in the model
                    })
                })
                .collect();
            let giver = {
                let bag = bag.clone();
                thread::spawn(move || bag.give_back(b).unwrap())
            };
            bag.give_back(a).unwrap();
            giver.join().unwrap();
            let kept: Vec<usize> = keepers
                .into_iter()
                .map(|k| k.join().unwrap().index())
                .collect();
            assert_ne!(kept[0], kept[1], "two keepers own one slot");
            assert_eq!(bag.waiters(), 0);
        });
    }
}

/// A creator gives a new connection (a `CONNECTING` slot) back to a queued borrower:
/// whichever way the borrower gets it, the slot is `IN_USE` while it is held, so
/// nobody else can take it. Fails if `hand_off` hands a slot over directly without
/// marking it `IN_USE` (0.1's fix for this was lost once; the pool's tests caught it).
#[test]
fn a_new_connection_handed_to_a_waiter_is_owned() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = Arc::new(Bag::<u32>::new(1, fair_after));
            let creating = bag.reserve_empty(0).unwrap();
            let waiter = {
                let bag = bag.clone();
                thread::spawn(move || borrow(&bag).expect("not closed"))
            };
            bag.with_value(&creating, |v| *v = Some(0));
            while bag.waiters() == 0 {
                thread::yield_now();
            }
            bag.give_back(creating).unwrap();
            let held = waiter.join().unwrap();
            assert_eq!(bag.state(held.index()), IN_USE);
            assert!(bag.try_take(0, || 0).is_none());
            use_it(&bag, &held);
        });
    }
}

/// Fails without the re-read of `signal` after the `IDLE` publish in `give_back` (a
/// deadlock: the waiter re-scanned before the store and the giver never saw it).
#[test]
fn a_return_racing_a_new_waiter_is_never_lost() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = idle_bag(1, fair_after);
            let held = bag.try_take(0, || 0).unwrap();
            let waiter = {
                let bag = bag.clone();
                thread::spawn(move || {
                    let ticket = borrow(&bag).expect("not closed");
                    use_it(&bag, &ticket);
                    bag.give_back(ticket).unwrap();
                })
            };
            use_it(&bag, &held);
            bag.give_back(held).unwrap();
            waiter.join().unwrap();
            assert_eq!(bag.waiters(), 0);
        });
    }
}

/// Opens a connection for a waiter if one waits and a slot is empty, as the pool's
/// `open_for_waiters` does (here the "connect" is instant).
fn open_for_waiters(bag: &Bag<u32>) {
    if bag.waiters() > 0
        && let Some(ticket) = bag.reserve_empty(0)
    {
        bag.with_value(&ticket, |v| *v = Some(0));
        bag.give_back(ticket).unwrap();
    }
}

/// A slot freed (a failed connection closed on the pool's closer thread) while a
/// borrower registers: either the borrower's own call after registering finds the empty
/// slot, or the freeing thread's call sees the waiter; a connection is opened for it
/// either way. Fails (a deadlock) if `Bag::free` stores `EMPTY` without the barrier
/// that pairs with the waiters' re-check.
#[test]
fn a_slot_freed_while_a_borrower_registers_serves_it() {
    model(3, || {
        let bag = Arc::new(Bag::<u32>::new(1, HAND_OFF));
        let closing = bag.reserve_empty(0).unwrap();
        let closer = {
            let bag = bag.clone();
            thread::spawn(move || {
                bag.free(closing);
                open_for_waiters(&bag);
            })
        };
        let mut turn = Turn::new(Instant::now());
        match bag.wait(&mut turn, &Forever, None, || open_for_waiters(&bag)) {
            Wait::Got(ticket) => {
                use_it(&bag, &ticket);
                bag.give_back(ticket).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
        closer.join().unwrap();
    });
}

/// Fails (a lost increment: the total is not 3) if a waiter whose re-check finds a
/// slot takes it without leaving the queue: a giver then hands the same slot to that
/// ghost waiter.
#[test]
fn two_slots_three_borrowers_share_nothing() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = idle_bag(2, fair_after);
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let bag = bag.clone();
                    thread::spawn(move || {
                        let ticket = borrow(&bag).expect("not closed");
                        use_it(&bag, &ticket);
                        bag.give_back(ticket).unwrap();
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            let total: u32 = (0..2)
                .map(|i| {
                    let t = bag.try_take(i, || i).unwrap();
                    let v = bag.with_value(&t, |v| v.unwrap());
                    bag.give_back(t).unwrap();
                    v
                })
                .sum();
            assert_eq!(total, 3);
        });
    }
}

/// A timeout racing a hand-off: the waiter either owns the slot or timed out, and then
/// the slot is idle, never handed to a waiter that already left. Fails if `wait`
/// returns `TimedOut` without `cancel` succeeding (the ticket of a racing direct
/// hand-off is lost: the final `try_take` finds the slot `IN_USE` for nobody).
#[test]
fn a_timeout_racing_a_hand_off_loses_nothing() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = idle_bag(1, fair_after);
            let held = bag.try_take(0, || 0).unwrap();
            let alarm = Alarm::new();
            let waiter = {
                let (bag, alarm) = (bag.clone(), alarm.clone());
                thread::spawn(move || match borrow_with(&bag, &alarm, None) {
                    Wait::Got(ticket) => Some(ticket),
                    Wait::TimedOut => None,
                    other => panic!("unexpected {other:?}"),
                })
            };
            let clock = {
                let (alarm, waiter) = (alarm.clone(), waiter.thread().clone());
                thread::spawn(move || alarm.ring(&waiter))
            };
            bag.give_back(held).unwrap();
            clock.join().unwrap();
            match waiter.join().unwrap() {
                Some(ticket) => use_it(&bag, &ticket),
                None => {
                    let ticket = bag.try_take(0, || 0).expect("the slot came back idle");
                    use_it(&bag, &ticket);
                }
            }
            assert_eq!(bag.waiters(), 0);
        });
    }
}

/// `max_waiters` re-queueing: a waiter woken to compete that loses to a barging
/// returner goes back into the queue, and must not be refused by the limit that a
/// younger waiter now fills. Fails (the assertion in `borrow_with`) if `register`
/// checks the limit for admitted turns too.
#[test]
fn an_admitted_waiter_is_never_turned_away() {
    model(3, || {
        let bag = idle_bag(1, COMPETE);
        let held = bag.try_take(0, || 0).unwrap();
        let spawn_waiter = |bag: &Arc<Bag<u32>>| {
            let bag = bag.clone();
            thread::spawn(move || match borrow_with(&bag, &Forever, Some(1)) {
                Wait::Got(ticket) => {
                    use_it(&bag, &ticket);
                    bag.give_back(ticket).unwrap();
                }
                Wait::TooManyWaiters => {}
                other => panic!("unexpected {other:?}"),
            })
        };
        let older = spawn_waiter(&bag);
        while bag.waiters() == 0 {
            thread::yield_now();
        }
        // Wake the older waiter to compete, and barge: it may lose and re-queue while
        // a younger waiter holds the one place `max_waiters` allows.
        bag.give_back(held).unwrap();
        let barged = bag.try_take(0, || 0);
        let younger = spawn_waiter(&bag);
        if let Some(ticket) = barged {
            bag.give_back(ticket).unwrap();
        }
        older.join().unwrap();
        younger.join().unwrap();
        assert_eq!(bag.waiters(), 0);
    });
}

/// Close racing a hand-off while two waiters queue: every waiter wakes (served or
/// closed), and the one connection is closed exactly once (by a waiter that got it and
/// learns of the close on giving back, by the giver, or by the closer's sweep). Fails
/// if `close` stops waking the queued waiters (a deadlock), or if `give_back_slow`
/// stops checking `CLOSED` (the giver spins for ever: loom's branch limit).
#[test]
fn close_racing_a_hand_off_closes_once_and_wakes_everyone() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(2, move || {
            let bag = idle_bag(1, fair_after);
            let held = bag.try_take(0, || 0).unwrap();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let bag = bag.clone();
                    thread::spawn(move || match borrow(&bag) {
                        Some(ticket) => {
                            use_it(&bag, &ticket);
                            bag.give_back(ticket).is_err()
                        }
                        None => false,
                    })
                })
                .collect();
            let closer = {
                let bag = bag.clone();
                thread::spawn(move || {
                    bag.close();
                    bag.try_reserve(0).is_some()
                })
            };
            let giver_closes = bag.give_back(held).is_err();
            let waiters_close = waiters
                .into_iter()
                .map(|w| w.join().unwrap())
                .filter(|&closes| closes)
                .count();
            let swept = closer.join().unwrap();
            let closes = usize::from(giver_closes) + waiters_close + usize::from(swept);
            assert_eq!(closes, 1, "the connection must be closed exactly once");
        });
    }
}

/// Fails if `close` stops waking the queued waiters.
#[test]
fn close_wakes_a_waiter() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = idle_bag(1, fair_after);
            let held = bag.try_take(0, || 0).unwrap();
            let waiter = {
                let bag = bag.clone();
                thread::spawn(move || borrow(&bag).map(|t| t.index()))
            };
            bag.close();
            assert_eq!(waiter.join().unwrap(), None);
            // The holder learns of the close when it gives back.
            assert!(bag.give_back(held).is_err());
        });
    }
}

/// Fails if `close` drops its barrier: the sweep and the giver both miss the slot.
#[test]
fn a_return_racing_close_is_closed_exactly_once() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(3, move || {
            let bag = idle_bag(1, fair_after);
            let held = bag.try_take(0, || 0).unwrap();
            let closer = {
                let bag = bag.clone();
                thread::spawn(move || {
                    bag.close();
                    // The pool sweeps idle slots after closing.
                    bag.try_reserve(0).map(|t| {
                        use_it(&bag, &t);
                        t.index()
                    })
                })
            };
            let returned_to_us = match bag.give_back(held) {
                Ok(()) => false,
                Err(ticket) => {
                    use_it(&bag, &ticket);
                    true
                }
            };
            let swept = closer.join().unwrap().is_some();
            // Either the sweep closed it or the giver got it back to close: one, not
            // both, and not neither.
            assert!(
                returned_to_us ^ swept,
                "returned {returned_to_us}, swept {swept}"
            );
        });
    }
}
