//! The bag's contract, deterministically: each test drives the threads through one
//! interleaving with `wait_for` (polling with a deadline, no fixed sleeps).

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::*;

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
    bag.slots.at(0).state.store(IDLE, Ordering::Release);
    let started = Instant::now();
    let ticket = got(w.join().unwrap());
    assert_eq!(ticket.index(), 0);
    // Within a few rescans, not the 10 s timeout.
    assert!(started.elapsed() < SOON / 2, "{:?}", started.elapsed());
    bag.give_back(ticket).unwrap();
}

/// The backstop also covers an empty slot that nobody opens a connection in: a waiter
/// that wakes after `RESCAN` without news asks again (the pool's `registered` opens a
/// connection if none is under way for it), and so is served although the request it
/// made on registering was lost.
#[test]
fn the_bounded_park_asks_again_for_a_connection() {
    let bag = Arc::new(Bag::<u32>::new(1, Duration::ZERO));
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = {
        let (bag, asked) = (bag.clone(), asked.clone());
        thread::spawn(move || {
            let mut turn = Turn::new(Instant::now());
            bag.wait(&mut turn, &Deadline::after(SOON), None, || {
                // The first request is lost; the second opens the connection.
                if asked.fetch_add(1, Ordering::SeqCst) == 1
                    && let Some(ticket) = bag.reserve_empty(0)
                {
                    bag.with_value(&ticket, |v| *v = Some(7));
                    bag.give_back(ticket).unwrap();
                }
            })
        })
    };
    let ticket = got(w.join().unwrap());
    assert_eq!(ticket.index(), 0);
    assert!(asked.load(Ordering::SeqCst) >= 2);
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

#[test]
fn a_limit_grows_the_slots_in_segments_and_bounds_the_scans() {
    let bag = Bag::<u32>::new(2, Duration::ZERO);
    bag.set_limit(37);
    assert_eq!(bag.limit(), 37);
    assert!(bag.len() >= 37);
    // Every slot below the limit can be filled and taken, each a slot of its own.
    let mut tickets = Vec::new();
    while let Some(ticket) = bag.reserve_empty(0) {
        bag.with_value(&ticket, |v| *v = Some(ticket.index() as u32));
        tickets.push(ticket);
    }
    assert_eq!(tickets.len(), 37);
    for ticket in tickets {
        bag.give_back(ticket).unwrap();
    }
    let taken: Vec<_> = std::iter::from_fn(|| bag.try_take(NO_HINT, || 0)).collect();
    assert_eq!(taken.len(), 37);
    for ticket in &taken {
        assert_eq!(bag.with_value(ticket, |v| *v), Some(ticket.index() as u32));
    }
    for ticket in taken {
        bag.give_back(ticket).unwrap();
    }
    // Shrunk: scans stop at the limit, slots beyond it keep what they hold (the pool
    // closes it) and stay reachable by index.
    bag.set_limit(3);
    let taken: Vec<_> = std::iter::from_fn(|| bag.try_take(NO_HINT, || 0)).collect();
    assert_eq!(taken.len(), 3);
    assert!(bag.reserve_empty(0).is_none());
    assert_eq!(bag.state(36), IDLE);
    let far = bag.try_reserve(36).expect("beyond the limit, still there");
    let far = bag
        .give_back(far)
        .expect_err("beyond the limit: back to close");
    bag.with_value(&far, |value| *value = None);
    bag.free(far);
    for ticket in taken {
        bag.give_back(ticket).unwrap();
    }
}

#[test]
fn a_slot_beyond_a_smaller_limit_is_never_handed_to_a_waiter() {
    for fair_after in [Duration::ZERO, Duration::from_secs(3600)] {
        let bag = idle_bag(4, fair_after);
        let held: Vec<_> = std::iter::from_fn(|| bag.try_take(NO_HINT, || 0)).collect();
        bag.set_limit(2);
        let w = waiter(&bag, Instant::now(), None);
        wait_for(|| bag.waiters() == 1);
        let mut held = held.into_iter();
        let (within, beyond): (Vec<_>, Vec<_>) = held.by_ref().partition(|t| t.index() < 2);
        for ticket in beyond {
            let ticket = bag.give_back(ticket).expect_err("beyond the limit");
            bag.with_value(&ticket, |value| *value = None);
            bag.free(ticket);
        }
        assert_eq!(bag.waiters(), 1, "still waiting: nothing was handed over");
        let mut within = within.into_iter();
        bag.give_back(within.next().unwrap()).unwrap();
        let ticket = got(w.join().unwrap());
        assert!(ticket.index() < 2);
        bag.give_back(ticket).unwrap();
        bag.give_back(within.next().unwrap()).unwrap();
    }
}

/// Feeds `return_is_due` a return every 100 µs while `waiters` threads that all queued
/// at once wait, and gives how long the oldest had waited at the first return due to it
/// (`None`: none within a second).
fn first_due(fair_after: Duration, waiters: usize) -> Option<Duration> {
    let bag = Bag::<u32>::new(1, fair_after);
    let start = Instant::now();
    let mut queue = wait::Queue::of(waiters, start);
    (1..=10_000)
        .map(|k| Duration::from_micros(100) * k)
        .find(|&waited| bag.return_is_due(&mut queue, start + waited))
}

#[test]
fn the_fairness_bound_grows_with_the_time_the_queue_takes_to_drain() {
    let ms = Duration::from_millis;
    // One waiter drains in 100 µs: the bound is `fair_after` itself.
    assert_eq!(first_due(ms(2), 1), Some(ms(2)));
    // 48 waiters take 4.8 ms to drain at this pace: three times that, once the pace
    // is known, instead of turning every return into a hand-off after 2 ms.
    let long_queue = first_due(ms(2), 48).unwrap();
    assert!(
        long_queue > ms(12) && long_queue <= Duration::from_micros(3 * 48 * 100),
        "{long_queue:?}"
    );
    // At most eight times `fair_after`, however long the queue.
    assert_eq!(first_due(ms(2), 1000), Some(ms(16)));
    // Zero stays strict first-come, first-served; `MAX` stays off.
    assert_eq!(
        first_due(Duration::ZERO, 48),
        Some(Duration::from_micros(100))
    );
    assert_eq!(first_due(Duration::MAX, 48), None);
}

#[test]
fn a_pause_between_returns_counts_as_the_longest_bound() {
    let mut pace = wait::ReturnPace::default();
    let start = Instant::now();
    let longest = Duration::from_millis(16);
    pace.note(start, longest);
    // A gap of an hour (an idle pool between two busy moments) weighs as 16 ms.
    pace.note(start + Duration::from_secs(3600), longest);
    let fair_after = Duration::from_millis(2);
    assert_eq!(pace.bound(fair_after, 1), Duration::from_millis(6));
    // A new busy period forgets when the last return was, not the pace.
    pace.restart();
    pace.note(start + Duration::from_secs(7200), longest);
    assert_eq!(pace.bound(fair_after, 1), Duration::from_millis(6));
}

/// Gives a slot back while one waiter (this thread, which never looks) has waited
/// `waited`, after returns 16 ms apart; says whether the slot went to it directly
/// (else it was published for the waiter to compete, and this thread takes it back).
fn handed_directly_after(waited: Duration) -> bool {
    let bag = idle_bag(1, Duration::from_millis(2));
    let ticket = bag.try_take(NO_HINT, || 0).unwrap();
    let now = Instant::now();
    {
        let mut queue = bag.queue.lock();
        *queue = wait::Queue::of(1, now - waited);
        let longest = Duration::from_millis(16);
        for gap in 0..3 {
            queue.pace.note(now + longest * gap, longest);
        }
        bag.signal
            .store(Signal(0).with_waiters(1).0, Ordering::Relaxed);
    }
    bag.give_back(ticket).unwrap();
    match bag.try_take(NO_HINT, || 0) {
        Some(_) => false,
        None => {
            assert_eq!(bag.state(0), IN_USE, "owned by the waiter");
            true
        }
    }
}

#[test]
fn a_return_under_a_slow_pace_is_competed_for_until_the_longer_bound() {
    // The pace (3.3 ms between returns) puts the bound for one waiter near 10 ms: a
    // waiter past `fair_after` but short of that still competes.
    assert!(!handed_directly_after(Duration::from_millis(4)));
    assert!(handed_directly_after(Duration::from_millis(12)));
}

#[test]
fn a_busy_period_does_not_count_the_pause_before_it() {
    let fair_after = Duration::from_millis(2);
    let longest = fair_after * 8;
    let bag = idle_bag(1, fair_after);
    let ticket = bag.try_take(NO_HINT, || 0).unwrap();
    let now = Instant::now();
    // The last return of an earlier busy period.
    bag.queue.lock().pace.note(now, longest);
    let w = waiter(&bag, now, None);
    wait_for(|| bag.waiters() == 1);
    {
        // The first return of this one, an hour later, sets no pace.
        let mut queue = bag.queue.lock();
        queue.pace.note(now + Duration::from_secs(3600), longest);
        assert_eq!(queue.pace.bound(fair_after, 1), fair_after);
    }
    bag.give_back(ticket).unwrap();
    bag.give_back(got(w.join().unwrap())).unwrap();
}
