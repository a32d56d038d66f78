//! Proptest state machines over the public `Pool` API, on one thread:
//!
//! * `the_pool_behaves_like_the_model`: get / try_get / drop / detach / discard /
//!   close, checked step by step against a simple model of what the pool must hold;
//! * `the_pool_survives_injected_faults`: the same and the runtime controls
//!   (`retire_all`, `set_max_size`, `set_min_idle`, `retain`), while connects fail
//!   or are slow and every hook, the connection's `Drop` and the `Drop` of values in
//!   the connection's extensions may panic. Checked for invariants rather than exact
//!   counts: no panic of theirs reaches the caller, the pool stays within its size,
//!   nothing is closed twice or leaked, nothing retired is lent again, and once the
//!   faults stop the pool can still lend `max_size` connections.

mod common;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use common::{FakeConn, FakeError, FakeManager, SOON, Script, wait_until};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use stickypool::{
    AcquireEvent, CheckinEvent, CheckoutEvent, CustomizeConnection, Error, ErrorOrigin,
    HandleError, HandleEvent, Pool, PooledConnection, ReleaseEvent, ResetAction, TimeoutEvent,
};

const MAX: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Get,
    TryGet,
    Drop(usize),
    Detach(usize),
    Discard(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Get),
        2 => Just(Op::TryGet),
        4 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Detach),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => Just(Op::Close),
    ]
}

#[derive(Debug, Default)]
struct Model {
    idle: u32,
    held: u32,
    closed_by_pool: u64,
    closed: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let manager = FakeManager::new();
        let pool = Pool::builder()
            .max_size(MAX)
            .min_idle(Some(0))
            .connection_timeout(SOON)
            .check_on_borrow(None)
            .build(manager.clone())
            .unwrap();
        let mut model = Model::default();
        let mut guards: Vec<PooledConnection<'_, FakeManager>> = Vec::new();
        let mut detached: Vec<FakeConn> = Vec::new();

        for op in ops {
            match op {
                Op::Get if model.closed => {
                    prop_assert!(matches!(pool.get(), Err(Error::Closed)));
                }
                Op::Get if model.held == MAX => {
                    let result = pool.get_timeout(Duration::from_millis(1));
                    let timed_out = matches!(result, Err(Error::Timeout { .. }));
                    prop_assert!(timed_out, "expected a timeout");
                }
                Op::Get => {
                    guards.push(pool.get().expect("a connection is free or can be opened"));
                    model.idle = model.idle.saturating_sub(1);
                    model.held += 1;
                }
                Op::TryGet => match pool.try_get() {
                    Some(conn) => {
                        prop_assert!(!model.closed && model.idle > 0);
                        guards.push(conn);
                        model.idle -= 1;
                        model.held += 1;
                    }
                    None => prop_assert!(model.closed || model.idle == 0),
                },
                Op::Drop(i) | Op::Detach(i) | Op::Discard(i) if !guards.is_empty() => {
                    let guard = guards.swap_remove(i % guards.len());
                    model.held -= 1;
                    match op {
                        Op::Drop(_) if model.closed => {
                            drop(guard);
                            model.closed_by_pool += 1;
                        }
                        Op::Drop(_) => {
                            drop(guard);
                            model.idle += 1;
                        }
                        Op::Detach(_) => detached.push(PooledConnection::detach(guard)),
                        _ => {
                            PooledConnection::discard(guard);
                            model.closed_by_pool += 1;
                        }
                    }
                }
                Op::Drop(_) | Op::Detach(_) | Op::Discard(_) => {}
                Op::Close => {
                    pool.close();
                    if !model.closed {
                        model.closed_by_pool += u64::from(model.idle);
                        model.idle = 0;
                        model.closed = true;
                    }
                }
            }
            let state = pool.state();
            prop_assert_eq!(state.idle_connections, model.idle);
            prop_assert_eq!(state.in_use, model.held);
            prop_assert_eq!(state.connections, model.idle + model.held);
            prop_assert!(state.connections <= MAX);
            prop_assert_eq!(manager.script.closed(), model.closed_by_pool);
        }
        drop(guards);
        drop(pool);
        drop(detached);
        manager.script.assert_all_closed_once();
    }
}

// The fault-injection machine.

/// Every hook the script can make panic: the manager's methods, the connection's
/// `Drop`, and the methods of the customizer, event handler and error handler.
static HOOKS: [&str; 14] = [
    "connect",
    "is_valid",
    "has_broken",
    "reset",
    "drop",
    "on_acquire",
    "on_check_in",
    "on_release",
    "handle_acquire",
    "handle_release",
    "handle_checkout",
    "handle_checkin",
    "handle_timeout",
    "handle_error",
];

/// The connect delays a case may set, in microseconds: none, or a few hundred
/// microseconds to a couple of milliseconds.
static CONNECT_DELAYS_US: [u64; 3] = [0, 500, 2_000];

/// How long a borrow in the sequence waits: longer than the slowest connect the
/// sequence sets (2 ms), and short, since a full pool makes every borrow wait it out.
const BORROW_TIMEOUT: Duration = Duration::from_millis(5);

/// How long the pool gets to settle (closes and connects finishing on its threads) and
/// each borrow of the final phase gets to be served. Far more than the pool ever needs
/// legitimately: its longest wait is a connect retry's backoff, at most a second.
const SETTLE: Duration = Duration::from_secs(5);

/// A customizer, event handler and error handler whose every method panics when the
/// script says so.
#[derive(Debug)]
struct Hooks(Arc<Script>);

impl CustomizeConnection<FakeConn, FakeError> for Hooks {
    fn on_acquire(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        self.0.maybe_panic("on_acquire");
        Ok(())
    }
    fn on_check_in(&self, _: &mut FakeConn) -> Result<(), FakeError> {
        self.0.maybe_panic("on_check_in");
        Ok(())
    }
    fn on_release(&self, conn: FakeConn) {
        // Closed before this hook panics: the connection's own `Drop` may panic too,
        // and a second panic while the first unwinds would abort the process.
        drop(conn);
        self.0.maybe_panic("on_release");
    }
}

impl HandleEvent for Hooks {
    fn handle_acquire(&self, _: AcquireEvent) {
        self.0.maybe_panic("handle_acquire");
    }
    fn handle_release(&self, _: ReleaseEvent) {
        self.0.maybe_panic("handle_release");
    }
    fn handle_checkout(&self, _: CheckoutEvent) {
        self.0.maybe_panic("handle_checkout");
    }
    fn handle_checkin(&self, _: CheckinEvent) {
        self.0.maybe_panic("handle_checkin");
    }
    fn handle_timeout(&self, _: TimeoutEvent) {
        self.0.maybe_panic("handle_timeout");
    }
}

impl HandleError<FakeError> for Hooks {
    fn handle_error(&self, _: FakeError) {
        self.0.maybe_panic("handle_error");
    }
    fn handle_error_in_place(&self, _: &str, _: ErrorOrigin, _: &FakeError) -> bool {
        self.0.maybe_panic("handle_error");
        true
    }
}

const BOMB_PANIC: &str = "extension value dropped (scripted)";

/// A value the test keeps in a connection's extensions, dropped by the pool when it
/// closes the connection. Its `Drop` panics if it is armed and faults are still on
/// (but never while a panic unwinds: that would abort the process).
struct Bomb {
    armed: bool,
    faults_on: Arc<AtomicBool>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && self.faults_on.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("{BOMB_PANIC}");
        }
    }
}

#[derive(Debug, Clone)]
enum FaultOp {
    /// `get_timeout(BORROW_TIMEOUT)`.
    Borrow,
    TryGet,
    /// Drops a held guard (the index is taken modulo the number held).
    Return(usize),
    Discard(usize),
    Detach(usize),
    /// Stores a `Bomb`, armed or not, in a held connection's extensions.
    Tag(usize, bool),
    RetireAll,
    SetMaxSize(u32),
    SetMinIdle(Option<u32>),
    EvictIdle,
    Close,
    /// The hook panics the next time it runs.
    Panic(&'static str),
    /// The next this many connect attempts fail.
    FailConnects(u64),
    /// Every connect takes this many microseconds from now on.
    SlowConnects(u64),
}

fn fault_op() -> impl Strategy<Value = FaultOp> {
    prop_oneof![
        8 => Just(FaultOp::Borrow),
        3 => Just(FaultOp::TryGet),
        8 => (0usize..4).prop_map(FaultOp::Return),
        2 => (0usize..4).prop_map(FaultOp::Discard),
        2 => (0usize..4).prop_map(FaultOp::Detach),
        3 => (0usize..4, any::<bool>()).prop_map(|(i, armed)| FaultOp::Tag(i, armed)),
        2 => Just(FaultOp::RetireAll),
        2 => (1u32..=4).prop_map(FaultOp::SetMaxSize),
        2 => proptest::option::of(0u32..=4).prop_map(FaultOp::SetMinIdle),
        2 => Just(FaultOp::EvictIdle),
        // Rare: a closed pool has little left to test.
        1 => Just(FaultOp::Close),
        4 => proptest::sample::select(&HOOKS[..]).prop_map(FaultOp::Panic),
        2 => (1u64..=3).prop_map(FaultOp::FailConnects),
        1 => proptest::sample::select(&CONNECT_DELAYS_US[..]).prop_map(FaultOp::SlowConnects),
    ]
}

/// The pool's settings for one case. Every hook that can run does: borrows are
/// always checked, returns reset or checked when asked.
#[derive(Debug, Clone)]
struct Setup {
    max_size: u32,
    min_idle: u32,
    /// A customizer, event handler and error handler (`Hooks`), or none.
    hooks: bool,
    /// `reset_on_return(Rollback)`, so `reset` runs on every return.
    reset: bool,
    test_on_check_in: bool,
    /// How long each connect takes at first, in microseconds: a connect still under
    /// way is what races a `retire_all` or a shrink.
    connect_delay_us: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    // Mostly with the hooks and the reset: without them fewer hooks can panic.
    (
        1u32..=4,
        0u32..=4,
        proptest::bool::weighted(0.75),
        proptest::bool::weighted(0.75),
        any::<bool>(),
        proptest::sample::select(&CONNECT_DELAYS_US[..]),
    )
        .prop_map(
            |(max_size, min_idle, hooks, reset, test_on_check_in, connect_delay_us)| Setup {
                max_size,
                min_idle: min_idle.min(max_size),
                hooks,
                reset,
                test_on_check_in,
                connect_delay_us,
            },
        )
}

/// A guard the test holds.
struct Held<'p> {
    guard: PooledConnection<'p, FakeManager>,
    /// `max_size` when it was borrowed: its slot is below that.
    limit: u32,
}

/// One case's pool and what the test knows of it.
struct Run<'p> {
    pool: &'p Pool<FakeManager>,
    script: Arc<Script>,
    /// Whether armed `Bomb`s panic.
    faults_on: Arc<AtomicBool>,
    held: Vec<Held<'p>>,
    detached: Vec<FakeConn>,
    max_size: u32,
    /// The `min_idle` setting as given (`None`: `max_size`).
    min_idle: Option<u32>,
    closed: bool,
    /// A connection whose connect attempt is at most this was retired by a
    /// `retire_all` that has returned.
    retired_through: u64,
}

impl<'p> Run<'p> {
    fn step(&mut self, op: &FaultOp) -> Result<(), TestCaseError> {
        let pool = self.pool;
        match *op {
            FaultOp::Borrow => match caught("get_timeout", || pool.get_timeout(BORROW_TIMEOUT))? {
                Ok(guard) => {
                    prop_assert!(!self.closed, "a closed pool lent a connection");
                    self.lend(guard)?;
                }
                Err(Error::Closed) => prop_assert!(self.closed, "an open pool said Closed"),
                // With faults on any borrow may time out (the breaker is off, so that is
                // the only other error); the final phase checks that the pool serves
                // again once they stop.
                Err(e) => prop_assert!(
                    !self.closed && matches!(e, Error::Timeout { .. }),
                    "get_timeout answered {e:?} (closed: {})",
                    self.closed
                ),
            },
            FaultOp::TryGet => {
                if let Some(guard) = caught("try_get", || pool.try_get())? {
                    prop_assert!(!self.closed, "a closed pool lent a connection");
                    self.lend(guard)?;
                }
            }
            FaultOp::Return(i) | FaultOp::Discard(i) | FaultOp::Detach(i)
                if !self.held.is_empty() =>
            {
                let Held { guard, .. } = self.held.swap_remove(i % self.held.len());
                match op {
                    FaultOp::Return(_) => caught("dropping a guard", || drop(guard))?,
                    FaultOp::Discard(_) => caught("discard", || PooledConnection::discard(guard))?,
                    _ => self
                        .detached
                        .push(caught("detach", || PooledConnection::detach(guard))?),
                }
            }
            FaultOp::Return(_) | FaultOp::Discard(_) | FaultOp::Detach(_) => {}
            FaultOp::Tag(i, armed) if !self.held.is_empty() => {
                let n = self.held.len();
                let ext = PooledConnection::extensions_mut(&mut self.held[i % n].guard);
                // A value already there is re-armed rather than replaced: a replaced
                // value would be dropped here, by the test, not by the pool.
                match ext.get_mut::<Bomb>() {
                    Some(bomb) => bomb.armed = armed,
                    None => {
                        let faults_on = self.faults_on.clone();
                        assert!(ext.insert(Bomb { armed, faults_on }).is_none());
                    }
                }
            }
            FaultOp::Tag(..) => {}
            FaultOp::RetireAll => {
                // Connects that started before the call are retired too, whenever they
                // finish: the pool reads its epoch before it connects, since a
                // connection opened with the credentials being rotated out must not be
                // lent.
                let started = self.script.connect_attempts.load(Ordering::SeqCst);
                caught("retire_all", || pool.retire_all())?;
                self.retired_through = started;
            }
            FaultOp::SetMaxSize(size) => {
                let result = caught("set_max_size", || pool.set_max_size(size))?;
                // Refused only below the `min_idle` setting.
                let refused = self.min_idle.is_some_and(|min| min > size);
                prop_assert_eq!(
                    result.is_err(),
                    refused,
                    "set_max_size({}): {:?}",
                    size,
                    result
                );
                if result.is_ok() {
                    self.max_size = size;
                }
            }
            FaultOp::SetMinIdle(min_idle) => {
                let result = caught("set_min_idle", || pool.set_min_idle(min_idle))?;
                let refused = min_idle.is_some_and(|min| min > self.max_size);
                prop_assert_eq!(
                    result.is_err(),
                    refused,
                    "set_min_idle({:?}): {:?}",
                    min_idle,
                    result
                );
                if result.is_ok() {
                    self.min_idle = min_idle;
                }
            }
            FaultOp::EvictIdle => {
                caught("retain", || pool.retain(|_| false))?;
            }
            FaultOp::Close => {
                caught("close", || pool.close())?;
                self.closed = true;
            }
            FaultOp::Panic(hook) => self.script.panic_in(hook, 1),
            FaultOp::FailConnects(n) => {
                let next = self.script.connect_attempts.load(Ordering::SeqCst) + 1;
                self.script
                    .fail_attempts
                    .lock()
                    .unwrap()
                    .extend(next..next + n);
            }
            FaultOp::SlowConnects(us) => self.script.connect_delay_us.store(us, Ordering::SeqCst),
        }
        self.check()
    }

    /// Takes a guard the pool lent, checking what it lent.
    fn lend(&mut self, guard: PooledConnection<'p, FakeManager>) -> Result<(), TestCaseError> {
        let conn: &FakeConn = &guard;
        prop_assert!(
            conn.attempt > self.retired_through,
            "invariant `nothing retired is lent`: connection {} (connect attempt {}) was lent \
             after a retire_all that retired every connect up to attempt {}",
            conn.id,
            conn.attempt,
            self.retired_through
        );
        // `guard.id` is the connection's field (the manager's id), not the guard's `id()`.
        let lent_twice = self.held.iter().any(|held| held.guard.id == conn.id);
        prop_assert!(!lent_twice, "connection {} lent twice", conn.id);
        self.held.push(Held {
            guard,
            limit: self.max_size,
        });
        Ok(())
    }

    /// The invariants that hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        {
            let closes = self.script.closes.lock().unwrap();
            let twice = closes.iter().find(|&(_, &times)| times > 1);
            prop_assert!(
                twice.is_none(),
                "invariant `closed at most once`: (connection, times) {:?}",
                twice
            );
        }
        prop_assert_eq!(self.pool.max_size(), self.max_size);
        prop_assert_eq!(self.pool.min_idle(), self.min_idle);
        prop_assert_eq!(self.pool.is_closed(), self.closed);
        // Once the pool's own threads are done (a failed connection is closed on one,
        // its slot taken until then), it lends exactly what the test holds and has no
        // more than `max_size` connections, but for borrowed ones a shrink left beyond
        // it, which close when they come back.
        let held = self.held.len() as u32;
        let beyond = self.held.iter().filter(|h| h.limit > self.max_size).count() as u32;
        let settled = wait_until(SETTLE, || {
            let state = self.pool.state();
            state.in_use == held && state.connections <= self.max_size + beyond
        });
        prop_assert!(
            settled,
            "invariant `within max_size` (or a slot lost): {:?} with {} held, {} of them \
             borrowed before a shrink",
            self.pool.state(),
            held,
            beyond
        );
        Ok(())
    }

    fn faults_off(&self) {
        self.faults_on.store(false, Ordering::SeqCst);
        self.script.panics.lock().unwrap().clear();
        self.script.fail_attempts.lock().unwrap().clear();
        self.script.connect_delay_us.store(0, Ordering::SeqCst);
    }

    /// With the faults off and everything returned, an open pool lends `max_size`
    /// connections at once: no slot was lost, and a borrower waiting while a slot is
    /// free is served (within `SETTLE`, far more than a connect takes).
    fn final_phase(&mut self) -> Result<(), TestCaseError> {
        self.faults_off();
        self.return_all()?;
        if self.closed {
            return Ok(());
        }
        for n in 1..=self.max_size {
            match caught("get_timeout", || self.pool.get_timeout(SETTLE))? {
                Ok(guard) => self.lend(guard)?,
                Err(e) => prop_assert!(
                    false,
                    "invariant `no slot lost`: borrow {} of {} at once failed: {:?}; {:?}",
                    n,
                    self.max_size,
                    e,
                    self.pool.state()
                ),
            }
        }
        self.check()?;
        self.return_all()
    }

    fn return_all(&mut self) -> Result<(), TestCaseError> {
        for Held { guard, .. } in self.held.drain(..) {
            caught("dropping a guard", || drop(guard))?;
        }
        self.check()
    }
}

/// Runs one call into the pool. Every panic of the manager, the hooks and the `Drop`s
/// the pool runs must stop inside the pool: one that escapes fails the case.
fn caught<R>(call: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        TestCaseError::fail(format!(
            "invariant `no panic reaches the caller`: a panic escaped {call}: {}",
            panic_text(&*payload)
        ))
    })
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a non-string payload)"
    }
}

/// The pool catches the scripted panics by design; without this each would print a
/// message and a backtrace hint. Other panics (a failing case's report, which may
/// quote a scripted panic) print as usual.
fn quiet_scripted_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = panic_text(info.payload());
            let scripted = text == BOMB_PANIC
                || text
                    .strip_suffix(" panicked (scripted)")
                    .is_some_and(|hook| HOOKS.contains(&hook));
            if !scripted {
                default(info);
            }
        }));
    });
}

fn faulty_case(setup: &Setup, ops: &[FaultOp]) -> Result<(), TestCaseError> {
    quiet_scripted_panics();
    let manager = FakeManager::new();
    let script = manager.script.clone();
    let mut builder = Pool::builder()
        .max_size(setup.max_size)
        .min_idle(Some(setup.min_idle))
        .connection_timeout(SOON)
        .check_on_borrow(Some(Duration::ZERO))
        .test_on_check_in(setup.test_on_check_in)
        // Off, a borrow on a pool whose connects keep failing waits instead of failing
        // at once: what the final phase checks is that slots are not lost, not when
        // the breaker's next probe is due.
        .circuit_breaker(None);
    if setup.reset {
        builder = builder.reset_on_return(ResetAction::Rollback);
    }
    if setup.hooks {
        builder = builder
            .connection_customizer(Box::new(Hooks(script.clone())))
            .event_handler(Box::new(Hooks(script.clone())))
            .error_handler(Box::new(Hooks(script.clone())));
    }
    // Built before any fault is armed.
    let pool = builder
        .build(manager)
        .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;
    script
        .connect_delay_us
        .store(setup.connect_delay_us, Ordering::SeqCst);
    let mut run = Run {
        pool: &pool,
        script: script.clone(),
        faults_on: Arc::new(AtomicBool::new(true)),
        held: Vec::new(),
        detached: Vec::new(),
        max_size: setup.max_size,
        min_idle: Some(setup.min_idle),
        closed: false,
        retired_through: 0,
    };
    let outcome = ops
        .iter()
        .try_for_each(|op| run.step(op))
        .and_then(|()| run.final_phase());
    // Torn down the same way whether the case passed or not, with the faults off.
    run.faults_off();
    let (held, detached) = (
        std::mem::take(&mut run.held),
        std::mem::take(&mut run.detached),
    );
    drop(run);
    let returned = caught("dropping a guard", || drop(held));
    let dropped = caught("dropping the pool", || drop(pool));
    // The detached connections are the test's own to close; they count among those
    // closed exactly once below.
    drop(detached);
    outcome?;
    returned?;
    dropped?;
    // Once the pool is gone (its threads may still hold it for a moment) and every
    // connection with it, only this handle on the script is left.
    let gone = wait_until(SETTLE, || Arc::strong_count(&script) == 1);
    prop_assert!(
        gone,
        "the pool or a connection outlived the pool's last handle"
    );
    let opened = script.opened.load(Ordering::SeqCst);
    let closes = script.closes.lock().unwrap();
    let not_once: Vec<_> = (1..=opened)
        .filter_map(|id| match closes.get(&id) {
            Some(1) => None,
            times => Some((id, times.copied().unwrap_or(0))),
        })
        .collect();
    prop_assert!(
        not_once.is_empty(),
        "invariant `every connection closed exactly once`: (connection, times closed) {:?}",
        not_once
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Shrunk failures are saved in tests/model.proptest-regressions, with the other
        // test's, and replayed first on the next run.
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_pool_survives_injected_faults(
        setup in setup(),
        ops in proptest::collection::vec(fault_op(), 1..40),
    ) {
        faulty_case(&setup, &ops)?;
    }
}
