//! Loom models of the whole pool, driven through its public API: connecting,
//! abandoning a connect, `retire_all`, resizing, closing, timeouts and hand-offs, with
//! the engine's own code between the bag and the caller (`tests/loom.rs` models the bag
//! alone).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom_pool`
//! (`scripts/test` does). Under loom the pool's time is virtual and stands still unless
//! a model moves it (`stickypool::model_time`), so a borrow's deadline expires exactly
//! where a model says (the models here use deadlines that have passed or never pass:
//! a waiter with a deadline parks until unparked, and loom would let an unpark wake a
//! thread blocked on a mutex); a pool fills `min_idle` at `build` on the building thread; its
//! connector and closer each run one loom thread, which exits when the pool closes;
//! no periodic job runs. Loom allows five threads per execution, the main one and
//! those two among them, which is what bounds the shapes below.
//!
//! Each model names the change to the code that makes it fail; each was made and seen
//! to fail at the model's bound. Each sets its preemption bound: the number of times
//! loom may switch away from a thread that could have gone on; every interleaving
//! within it is explored. The defects these models were written for each needed two
//! preemptions, so every model runs at 2, except the five-thread
//! `three_waiters_and_two_givers_strand_nobody` at 0 (see its comment). On a two-core
//! machine, one model at a time, bound 2 took: 118 s for
//! `a_connect_and_a_retire_strand_no_waiter`, 38 s for
//! `retire_all_racing_a_connect_lends_nothing_retired`, 15 s for
//! `an_abandoned_connect_strands_no_waiter`, 8 s for
//! `retire_all_racing_a_return_lends_nothing_retired`, and under 5 s for the others.
//! `LOOM_MAX_PREEMPTIONS` overrides every bound.

#![cfg(loom)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use loom::thread;
use stickypool::{
    CloseReason, Error, HandleEvent, ManageConnection, OwnedConnection, Pool, PooledConnection,
    ReleaseEvent,
};

// Every pool here sets `fair_after` to one of these two: with any bound in between,
// whether a return is handed off would depend on how long an execution took in real
// time, and loom requires every execution of a schedule to make the same decisions.

/// Returns always go straight to the oldest waiter.
const HAND_OFF: Duration = Duration::ZERO;
/// Returns are always competed for (a waiter is woken, the slot published).
const COMPETE: Duration = Duration::from_secs(3600);
/// A borrow deadline that the models' virtual clock never reaches.
const NEVER: Duration = Duration::from_secs(3600);

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    if std::env::var_os("LOOM_LOG").is_some() {
        return loom::model(f); // with loom's trace; set LOOM_MAX_PREEMPTIONS too
    }
    let mut builder = loom::model::Builder::new();
    // loom's own `LOOM_MAX_PREEMPTIONS`, if set, wins: to explore further by hand.
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}

/// What the fake manager and the connections it made share with a model.
#[derive(Debug, Default)]
struct Record {
    opened: AtomicUsize,
    closed: AtomicUsize,
    /// Stamped into each connection when its connect starts (see the retire models).
    generation: AtomicU32,
}

/// A connection that knows its generation, counts its own close and flags two holders.
#[derive(Debug)]
struct Conn {
    generation: u32,
    held: AtomicBool,
    record: Arc<Record>,
}

impl Conn {
    /// Marks the connection held by the caller until `release`; two holders at once fail.
    fn hold(&self) {
        assert!(
            !self.held.swap(true, Ordering::SeqCst),
            "two borrowers hold one connection"
        );
    }

    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.record.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A manager whose connects always succeed at once.
#[derive(Debug, Clone, Default)]
struct Manager(Arc<Record>);

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = std::io::Error;

    fn connect(&self) -> Result<Conn, std::io::Error> {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            generation: self.0.generation.load(Ordering::SeqCst),
            held: AtomicBool::new(false),
            record: self.0.clone(),
        })
    }

    fn is_valid(&self, _: &mut Conn) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }

    fn can_reset(&self) -> bool {
        true
    }
}

/// Records the connections closed as beyond a smaller `max_size`.
#[derive(Debug, Default)]
struct Evictions(std::sync::Mutex<Vec<u64>>);

impl HandleEvent for Evictions {
    fn handle_release(&self, event: ReleaseEvent) {
        if event.reason == CloseReason::Evicted {
            self.0.lock().unwrap().push(event.id);
        }
    }
}

/// A pool of `max_size` slots, `min_idle` of them connected at `build`, that checks no
/// borrow (the models are about the hand-out, not the checks).
fn pool(
    manager: &Manager,
    max_size: u32,
    min_idle: u32,
    fair_after: Duration,
) -> Arc<Pool<Manager>> {
    let pool = Pool::builder()
        .max_size(max_size)
        .min_idle(Some(min_idle))
        .connection_timeout(NEVER)
        .check_on_borrow(None)
        .fair_after(Some(fair_after))
        .build(manager.clone())
        .expect("connects succeed");
    // Nothing is opened behind the models' backs from here on.
    pool.set_min_idle(Some(0)).unwrap();
    Arc::new(pool)
}

/// The pool's state once nothing is borrowed or being opened: a connection that failed
/// its check on borrow may still be closing on the pool's closer thread (its slot
/// counts as in use until then), and a connect may be on its way to give up. Loom fails
/// a model that spins here for ever.
fn settled(pool: &Pool<Manager>) -> stickypool::State {
    loop {
        let state = pool.state();
        if (state.in_use, state.pending) == (0, 0) {
            return state;
        }
        thread::yield_now();
    }
}

/// Closes `pool` and drops its last handle, then checks that nothing was lost: no slot
/// stays claimed (by a connect that never ran, say) and every connection opened is
/// closed. Both wait for the pool's connector and closer threads to finish, so a model
/// that loses something spins here until loom's branch limit fails it.
fn close(pool: Arc<Pool<Manager>>, manager: &Manager) {
    let pool = Arc::into_inner(pool).expect("the model's threads are done with the pool");
    pool.close();
    loop {
        let state = pool.state();
        if (state.connections, state.pending, state.waiters) == (0, 0, 0) {
            break;
        }
        thread::yield_now();
    }
    drop(pool);
    let record = &manager.0;
    while record.opened.load(Ordering::SeqCst) != record.closed.load(Ordering::SeqCst) {
        thread::yield_now();
    }
}

/// Defect: a connect that finds itself no longer needed freed its slot and only then
/// lowered `pending`; a borrower registering in between saw the connect still counted,
/// asked for none, and waited beside an empty slot for its whole timeout.
///
/// Here a borrower with a zero timeout asks for a connect and leaves at once, so the
/// connect is abandoned, while another borrower registers. It must be served.
///
/// Fails (a deadlock: the second borrower parked for ever) if `abandon_connect` frees
/// the slot before it lowers `pending`, or stops looking at the waiters after freeing
/// it (`free_slot`'s `open_for_waiters`), or if `start_connect`, finding no empty slot,
/// stops looking again after lowering `pending`.
#[test]
fn an_abandoned_connect_strands_no_waiter() {
    model(2, || {
        let manager = Manager::default();
        let pool = pool(&manager, 1, 0, COMPETE);
        let borrower = {
            let pool = pool.clone();
            thread::spawn(move || drop(pool.get().expect("served")))
        };
        match pool.get_timeout(Duration::ZERO) {
            Ok(conn) => drop(conn), // the connect beat the deadline
            Err(Error::Timeout { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        borrower.join().unwrap();
        close(pool, &manager);
    });
}

/// Defect: a return compared epochs before its reset and hooks ran, so a `retire_all`
/// during them did not stop the connection from being put back idle or handed to a
/// waiter, and a borrow that started after `retire_all` returned got it.
///
/// Here the main thread gives back a connection opened before `retire_all` (with a
/// reset on return, so the return takes its long path) while another thread retires
/// everything and then borrows. The borrow must get a connection opened after the
/// retire began. `grown` first resizes the pool (which makes the connection's epoch
/// stale without retiring it), so the return rechecks it against the retire: the shape
/// of the defect in which a recheck read the retire count and the pool's epoch apart
/// and stamped a retired connection as current.
///
/// Fails if `finish_checkout` stops comparing the connection's epoch with the pool's.
#[test]
fn retire_all_racing_a_return_lends_nothing_retired() {
    for grown in [false, true] {
        model(2, move || {
            let manager = Manager::default();
            let pool = Arc::new(
                Pool::builder()
                    .max_size(1)
                    .min_idle(Some(1))
                    .connection_timeout(NEVER)
                    .check_on_borrow(None)
                    .fair_after(Some(COMPETE))
                    .reset_on_return(stickypool::ResetAction::Rollback)
                    .build(manager.clone())
                    .unwrap(),
            );
            pool.set_min_idle(Some(0)).unwrap();
            let old = pool.get().unwrap();
            if grown {
                pool.set_max_size(2).unwrap();
            }
            let retirer = {
                let (pool, record) = (pool.clone(), manager.0.clone());
                thread::spawn(move || {
                    record.generation.store(1, Ordering::SeqCst);
                    pool.retire_all();
                    let conn = pool.get().expect("served");
                    assert_eq!(conn.generation, 1, "a retired connection was lent");
                })
            };
            drop(old);
            retirer.join().unwrap();
            close(pool, &manager);
        });
    }
}

/// A pause racing a return: once `pause` has returned and the connection is back,
/// whether it came back before the pause, during it or after it, no borrow is served
/// until `resume`.
///
/// Here another thread gives back the only connection while the main thread pauses
/// the pool; once both are done the main thread tries to borrow (without waiting, so
/// the model need not run the pause's condition variable), resumes and borrows.
///
/// Fails if `recheck` stops reporting a paused pool (the borrow after `pause` is
/// served), or if a return while paused refreshes the connection's epoch instead of
/// leaving it stale (the connection given back during the pause is then lent).
#[test]
fn a_pause_racing_a_return_lends_nothing_until_resume() {
    model(2, || {
        let manager = Manager::default();
        let pool = pool(&manager, 1, 1, COMPETE);
        let held = pool.get_owned().unwrap();
        let returner = thread::spawn(move || drop(held));
        pool.pause();
        returner.join().unwrap();
        assert!(pool.try_get().is_none(), "a borrow was served while paused");
        pool.resume();
        drop(pool.get().expect("served after resume"));
        close(pool, &manager);
    });
}

/// Defect: a connect read the epoch before it connected and put its connection in
/// its slot without looking again, so a `retire_all` during the connect did not
/// retire it, and a borrow after `retire_all` returned could get it.
///
/// Here a refill's connect is in flight while the main thread retires everything and
/// then borrows: it must get a connection whose connect began after the retire began.
///
/// Fails if `finish_checkout` stops comparing the connection's epoch with the pool's
/// (`connect_job`'s own look after connecting narrows the window but does not close
/// it: the retire can land between that look and the slot's publish).
#[test]
fn retire_all_racing_a_connect_lends_nothing_retired() {
    model(2, || {
        let manager = Manager::default();
        let pool = pool(&manager, 1, 0, COMPETE);
        pool.set_min_idle(Some(1)).unwrap(); // a connect, on the connector's thread
        manager.0.generation.store(1, Ordering::SeqCst);
        pool.retire_all();
        let conn = pool.get().expect("served");
        assert_eq!(conn.generation, 1, "a retired connection was lent");
        // Dropped without `close`'s checks, which double the time to explore this.
    });
}

/// A borrower waits for a connect while another borrower, after a `retire_all`, finds
/// the new connection retired and waits too: both are served (the second by a connect
/// that the first's return or the pool's own look at the waiters starts).
///
/// Fails (a deadlock) if a connect that succeeded stops fencing between lowering
/// `pending` and looking at the waiters: a borrower registering then reads the old
/// `pending`, asks for no connect, and the connector reads no waiter.
#[test]
fn a_connect_and_a_retire_strand_no_waiter() {
    model(2, || {
        let manager = Manager::default();
        let pool = pool(&manager, 1, 0, COMPETE);
        let borrower = {
            let pool = pool.clone();
            thread::spawn(move || drop(pool.get().expect("served")))
        };
        manager.0.generation.store(1, Ordering::SeqCst);
        pool.retire_all();
        let conn = pool.get().expect("served");
        assert_eq!(conn.generation, 1, "a retired connection was lent");
        drop(conn);
        borrower.join().unwrap();
        close(pool, &manager);
    });
}

/// A return handing its slot to a waiter while `set_max_size` shrinks the pool below
/// that slot: a borrow that starts after `set_max_size` returned never gets a
/// connection beyond the new limit (such a connection is closed as evicted when it
/// comes back, which the event handler sees). A borrower that gives up at once (a zero timeout)
/// makes the returning thread see a waiter, and so take the hand-off path, before the
/// shrink.
///
/// Fails if both `hand_off` stops checking the limit before a direct hand-off and
/// `finish_checkout` stops comparing epochs (either one alone keeps the promise).
#[test]
fn shrinking_while_a_return_hands_off_lends_nothing_beyond_the_limit() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(2, move || {
            let manager = Manager::default();
            let evicted = Arc::new(Evictions::default());
            let pool = Arc::new(
                Pool::builder()
                    .max_size(2)
                    .min_idle(Some(2))
                    .connection_timeout(NEVER)
                    .check_on_borrow(None)
                    .fair_after(Some(fair_after))
                    .event_handler(Box::new(evicted.clone()))
                    .build(manager.clone())
                    .unwrap(),
            );
            pool.set_min_idle(Some(0)).unwrap();
            let (a, b) = (pool.get().unwrap(), pool.get().unwrap());
            let passer_by = {
                let pool = pool.clone();
                thread::spawn(move || drop(pool.get_timeout(Duration::ZERO)))
            };
            let shrinker = {
                let (pool, evicted) = (pool.clone(), evicted.clone());
                thread::spawn(move || {
                    pool.set_max_size(1).unwrap();
                    let conn = pool.get().expect("served");
                    let id = PooledConnection::id(&conn);
                    drop(conn);
                    assert!(
                        !evicted.0.lock().unwrap().contains(&id),
                        "a borrow after the shrink got connection {id}, beyond the limit"
                    );
                })
            };
            drop(b);
            drop(a);
            passer_by.join().unwrap();
            shrinker.join().unwrap();
            close(pool, &manager);
        });
    }
}

/// `close` racing a connect for a waiter and a slot being freed (a connection
/// discarded): the waiter wakes (served or told the pool closed), every connection is
/// closed exactly once, and no slot stays claimed by a connect that never ran.
///
/// Fails (a slot stays `CONNECTING`, so the pool never settles and the model spins
/// until loom's branch limit) if the connector drops the jobs queued when it closes, as
/// it once did: the dropped connect owned its slot.
#[test]
fn close_racing_a_connect_and_a_free_loses_nothing() {
    model(2, || {
        let manager = Manager::default();
        let pool = pool(&manager, 2, 1, COMPETE);
        let held = pool.get_owned().unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || match pool.get() {
                Ok(conn) => drop(conn),
                Err(Error::Closed) => {}
                Err(e) => panic!("unexpected {e}"),
            })
        };
        let discarder = thread::spawn(move || OwnedConnection::discard(held));
        pool.close();
        waiter.join().unwrap();
        discarder.join().unwrap();
        close(pool, &manager);
    });
}

/// Three waiters and two givers, returns always competed for: two waiters keep what
/// they get (a model where everyone gives back hides stranded waiters), the third has
/// a deadline that has passed (it takes a connection if one is idle when it looks, and
/// gives it back). Nobody is stranded beside an idle connection, and no connection has
/// two holders.
///
/// Run at preemption bound 0: loom switches threads only where one blocks or ends, so
/// this explores the orders in which the five threads meet at the pool's locks and
/// parks, not preemptions inside them (at bound 1 it runs for many minutes). It
/// deadlocks if a return in compete mode publishes its connection without waking a
/// waiter (`hand_off`). The baton (`take_as_waiter`) is the bag's
/// `two_givers_and_two_keepers_strand_nobody`'s to check.
#[test]
fn three_waiters_and_two_givers_strand_nobody() {
    model(0, || {
        let manager = Manager::default();
        let pool = pool(&manager, 2, 2, COMPETE);
        let (a, b) = (pool.get_owned().unwrap(), pool.get_owned().unwrap());
        let keepers: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let conn = pool.get_owned().expect("served");
                    conn.hold();
                    conn // kept until the model ends
                })
            })
            .collect();
        let passer_by = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Ok(conn) = pool.get_timeout(Duration::ZERO) {
                    conn.hold();
                    conn.release();
                }
            })
        };
        let giver = thread::spawn(move || drop(b));
        drop(a);
        giver.join().unwrap();
        passer_by.join().unwrap();
        let kept: Vec<_> = keepers.into_iter().map(|k| k.join().unwrap()).collect();
        assert_ne!(
            OwnedConnection::id(&kept[0]),
            OwnedConnection::id(&kept[1]),
            "two keepers hold one connection"
        );
        for conn in &kept {
            conn.release();
        }
        drop(kept);
        close(pool, &manager);
    });
}

/// Two borrowers whose deadlines have passed when they queue, while the one
/// connection comes back: each is served or times out, the connection is never lost
/// (it ends idle, and a borrow gets it), and nobody is left queued.
///
/// Fails (the connection is lost, so the pool never settles and the model spins until
/// loom's branch limit) if the bag's wait returns a timeout without first taking
/// itself off the queue, so that a hand-off racing the timeout goes to a borrower that
/// already left.
#[test]
fn two_timeouts_racing_a_hand_off_lose_nothing() {
    for fair_after in [HAND_OFF, COMPETE] {
        model(2, move || {
            let manager = Manager::default();
            let pool = pool(&manager, 1, 1, fair_after);
            let held = pool.get().unwrap();
            let borrowers: Vec<_> = (0..2)
                .map(|_| {
                    let pool = pool.clone();
                    thread::spawn(move || match pool.get_timeout(Duration::ZERO) {
                        Ok(conn) => {
                            conn.hold();
                            conn.release();
                        }
                        Err(Error::Timeout { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    })
                })
                .collect();
            drop(held);
            for borrower in borrowers {
                borrower.join().unwrap();
            }
            let state = settled(&pool);
            assert_eq!((state.idle_connections, state.waiters), (1, 0), "{state:?}");
            assert!(pool.try_get().is_some(), "the connection is lendable");
            close(pool, &manager);
        });
    }
}
