//! Loom models of the hand-out algorithm (`src/bag.rs`): slot ownership, the
//! register/re-check/hand-off protocol that must never lose a wake-up, and closing.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom`
//! (`scripts/test` does). Removing the re-check after the `IDLE` publish in
//! `Bag::give_back` makes `a_return_racing_a_new_waiter_is_never_lost` fail with a
//! deadlock: the lost wake-up these models exist to rule out.

#![cfg(loom)]

use std::time::{Duration, Instant};

use loom::sync::Arc;
use loom::thread;
use stickypool::bag::{Bag, Ticket, Wait};

const FOREVER: Duration = Duration::from_secs(3600);

/// Returns always go straight to the oldest waiter.
const HAND_OFF: Duration = Duration::ZERO;
/// Returns are always competed for (a waiter is woken, the slot published).
const COMPETE: Duration = Duration::from_secs(3600);

/// A bag of `size` idle slots holding `0`.
fn idle_bag(size: usize, fair_after: Duration) -> Arc<Bag<u32>> {
    let bag = Arc::new(Bag::<u32>::new(size, fair_after));
    for _ in 0..size {
        let ticket = bag.reserve_empty().unwrap();
        bag.with_value(&ticket, |v| *v = Some(0));
        bag.give_back(ticket).unwrap();
    }
    bag
}

/// Borrows like the pool does: fast path, then wait; retries after `Retry`.
fn borrow(bag: &Bag<u32>) -> Option<Ticket> {
    let since = Instant::now();
    loop {
        if let Some(ticket) = bag.try_take(usize::MAX, || 0) {
            return Some(ticket);
        }
        match bag.wait(since, FOREVER, None, || {}) {
            Wait::Got(ticket) => return Some(ticket),
            Wait::Retry => continue,
            Wait::Closed => return None,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Increments the payload: loom flags it if two threads ever touch it at once.
fn use_it(bag: &Bag<u32>, ticket: &Ticket) {
    bag.with_value(ticket, |v| *v.as_mut().unwrap() += 1);
}

#[test]
fn two_borrowers_never_share_a_slot_and_nobody_sleeps_forever() {
    for fair_after in [HAND_OFF, COMPETE] {
        loom::model(move || {
            let bag = idle_bag(1, fair_after);
            let handles: Vec<_> = (0..2)
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
            let ticket = bag.try_take(0, || 0).expect("the slot is idle at the end");
            assert_eq!(bag.with_value(&ticket, |v| *v), Some(2));
            bag.give_back(ticket).unwrap();
        });
    }
}

#[test]
fn a_return_racing_a_new_waiter_is_never_lost() {
    for fair_after in [HAND_OFF, COMPETE] {
        loom::model(move || {
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

#[test]
fn two_slots_three_threads() {
    for fair_after in [HAND_OFF, COMPETE] {
        loom::model(move || {
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

#[test]
fn close_wakes_a_waiter() {
    for fair_after in [HAND_OFF, COMPETE] {
        loom::model(move || {
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

#[test]
fn a_return_racing_close_is_closed_exactly_once() {
    for fair_after in [HAND_OFF, COMPETE] {
        loom::model(move || {
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
            // Either the sweep closed it or the giver got it back to close: one, not both,
            // and not neither.
            assert!(
                returned_to_us ^ swept,
                "returned {returned_to_us}, swept {swept}"
            );
        });
    }
}
