//! A bank through the pool, in the style of Jepsen's bank test, on PostgreSQL and on
//! MariaDB: the check that the pool's "fake close" (a returned connection is rolled
//! back, and closed if that fails) loses nothing and leaks nothing.
//!
//! 32 threads share a pool of 8 connections and move money between ten accounts, one
//! transaction per transfer: lock both accounts, move the amount (never below zero),
//! insert the transfer's row with a unique id, commit. Every borrower first checks that
//! the connection it got is not inside a transaction someone else left open. Meanwhile
//! some transfers are abandoned mid-transaction (the guard dropped with the transaction
//! open), some panic mid-transaction, sessions are killed from a separate admin
//! connection, and the server is killed and started again twice.
//!
//! Afterwards: the money is all there; every acknowledged transfer is in the table, no
//! abandoned, panicked or uncommitted one is (a transfer whose `COMMIT` failed may be
//! either); the balances are the starting balances with the table's transfers applied;
//! no borrower ever got a connection inside a transaction; and all 8 connections can be
//! borrowed and used. One summary line per backend says what happened, with each
//! restart's duration, the borrows it failed and how soon commits resumed.
//!
//! This is a test binary of its own because it kills servers; each test holds its
//! server's lock (`servers::lock`).
#![cfg(any(feature = "postgres", feature = "mysql"))]

mod servers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::{Duration, Instant};

use servers::{Server, ServerCtl};
use stickypool::{DEFAULT_OUTAGE_GRACE, Error, ManageConnection, Pool, ResetAction};

const WORKERS: usize = 32;
const MAX_SIZE: u32 = 8;
const ACCOUNTS: i64 = 10;
/// The largest amount of one transfer: large enough that some are declined.
const MAX_AMOUNT: i64 = 300;
/// The pool's borrow timeout.
const BORROW_TIMEOUT: Duration = Duration::from_secs(3);
/// The drivers' connect and read timeouts (PostgreSQL: connect, statement and TCP user
/// timeouts; MariaDB: connect, read and write timeouts).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server may take to come back and the load to resume.
const RECOVERY: Duration = Duration::from_secs(60);
const RESTARTS: usize = 2;
/// Before the first restart, between the restarts and after the last one, the load runs
/// for at least this long and this many acknowledged transfers, with session kills.
const STRETCH: Duration = Duration::from_millis(1500);
const STRETCH_ACKS: usize = 150;
/// The pace of the session kills.
const KILL_EVERY: Duration = Duration::from_millis(100);
/// Out of 100 transfers: abandoned mid-transaction, and panicking mid-transaction.
const ABANDON_PERCENT: u64 = 4;
const PANIC_PERCENT: u64 = 2;

fn starting_balance(account: i64) -> i64 {
    1000 + 100 * account
}

type Conn<B> = <<B as Backend>::M as ManageConnection>::Connection;

/// What the bank needs from a backend. Every statement goes through the text protocol
/// (`BEGIN`, `COMMIT` included), so a dropped guard really leaves a transaction open:
/// no driver-side transaction object rolls it back first.
trait Backend: Send + Sync + 'static {
    type M: ManageConnection;
    const NAME: &'static str;
    const SERVER: Server;

    /// The pool's manager.
    fn pool_manager(&self) -> Self::M;
    /// A connection of its own, outside the pool, for setup, session kills and checks.
    fn admin(&self) -> Result<Conn<Self>, String>;
    fn exec(conn: &mut Conn<Self>, sql: &str) -> Result<(), String>;
    /// The rows of a query whose columns are all integers.
    fn query_ints(conn: &mut Conn<Self>, sql: &str) -> Result<Vec<Vec<i64>>, String>;
    /// What a borrower's first check finds: whether the session is inside a
    /// transaction (an open or a failed one), asked of the server.
    fn session(conn: &mut Conn<Self>) -> Session;
    /// Kills one session of the pool's, other than `admin`'s; whether one was killed.
    fn kill_one_session(&self, admin: &mut Conn<Self>) -> Result<bool, String>;
}

/// What a borrower's first check found.
#[derive(Debug, PartialEq, Eq)]
enum Session {
    /// Not inside a transaction.
    Clean,
    /// Inside an open or a failed transaction: a leftover.
    InTransaction,
    /// The check failed: a dead connection (a killed session, a restarted server).
    Failed(String),
    /// The check ran, but the answer was not the one asked for: the connection is out
    /// of step with its server.
    Garbled(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `COMMIT` returned Ok.
    Acked,
    /// `COMMIT` itself failed: it may or may not have been applied.
    InDoubt,
    /// The guard was dropped with the transaction open, on purpose.
    Abandoned,
    /// The borrower panicked with the transaction open, on purpose.
    Panicked,
    /// Not enough money: rolled back.
    Declined,
    /// A statement before `COMMIT` failed (a killed session, the server down).
    Failed,
}

/// Where a planned fault strikes: 0 after `BEGIN`, 1 after the accounts are locked,
/// 2 after they are updated, 3 after the transfer's row is inserted.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Abandon(u8),
    Panic(u8),
}

/// The payload of the planned panics.
struct DeliberatePanic;

#[derive(Debug, Clone, Copy)]
struct Plan {
    src: i64,
    dst: i64,
    amount: i64,
    fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    id: i64,
    plan: Plan,
    outcome: Outcome,
    /// When the outcome was known, in nanoseconds since the run began.
    at_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BorrowFailure {
    Unavailable,
    Timeout,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct FailedBorrow {
    started_ns: u64,
    ended_ns: u64,
    kind: BorrowFailure,
}

/// What one step of a worker came to.
enum Step {
    /// The borrow failed.
    Borrow(Error),
    /// The connection was not used for a transfer: its first check failed (a dead
    /// connection) or found a leftover transaction.
    Skipped,
    Done(Outcome),
}

/// The state the threads share.
struct Run {
    base: Instant,
    stop: AtomicBool,
    /// Session kills run while this is set (not during restarts, so that each restart
    /// is measured on its own).
    killing: AtomicBool,
    next_id: AtomicU64,
    acked: AtomicUsize,
    last_ack_ns: AtomicU64,
    kills: AtomicUsize,
    /// Borrowed connections already inside a transaction.
    leftovers: AtomicUsize,
    /// Borrowed connections whose first check failed (dead ones).
    check_failures: AtomicUsize,
    attempts: Mutex<Vec<Attempt>>,
    failed_borrows: Mutex<Vec<FailedBorrow>>,
    /// Things that must never happen, with what was seen.
    anomalies: Mutex<Vec<String>>,
    /// A sample of the errors seen, for the failure message.
    errors: Mutex<BTreeSet<String>>,
}

impl Run {
    fn new() -> Run {
        Run {
            base: Instant::now(),
            stop: AtomicBool::new(false),
            killing: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            acked: AtomicUsize::new(0),
            last_ack_ns: AtomicU64::new(0),
            kills: AtomicUsize::new(0),
            leftovers: AtomicUsize::new(0),
            check_failures: AtomicUsize::new(0),
            attempts: Mutex::new(Vec::new()),
            failed_borrows: Mutex::new(Vec::new()),
            anomalies: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeSet::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn note(&self, what: &str, error: impl std::fmt::Display) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 16 {
            let message: String = format!("{what}: {error}").chars().take(200).collect();
            errors.insert(message);
        }
    }

    fn anomaly(&self, what: String) {
        self.anomalies.lock().unwrap().push(what);
    }
}

/// Silences the planned panics (there are hundreds); any other panic is reported as usual.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<DeliberatePanic>() {
                previous(info);
            }
        }));
    });
}

/// A small xorshift generator, one per worker.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn plan(&mut self) -> Plan {
        let src = self.below(ACCOUNTS as u64) as i64;
        let mut dst = self.below(ACCOUNTS as u64 - 1) as i64;
        if dst >= src {
            dst += 1;
        }
        let amount = 1 + self.below(MAX_AMOUNT as u64) as i64;
        let roll = self.below(100);
        let point = self.below(4) as u8;
        let fault = if roll < ABANDON_PERCENT {
            Some(Fault::Abandon(point))
        } else if roll < ABANDON_PERCENT + PANIC_PERCENT {
            Some(Fault::Panic(point))
        } else {
            None
        };
        Plan {
            src,
            dst,
            amount,
            fault,
        }
    }
}

/// The two tables of one run.
struct Tables {
    accounts: String,
    transfers: String,
}

impl Tables {
    fn new() -> Tables {
        let name = servers::unique("bank");
        Tables {
            accounts: format!("{name}_accounts"),
            transfers: format!("{name}_transfers"),
        }
    }

    fn create<B: Backend>(&self, admin: &mut Conn<B>) {
        let (accounts, transfers) = (&self.accounts, &self.transfers);
        B::exec(
            admin,
            &format!(
                "CREATE TABLE {accounts} (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, \
                 CHECK (balance >= 0))"
            ),
        )
        .expect("create the accounts table");
        B::exec(
            admin,
            &format!(
                "CREATE TABLE {transfers} (id BIGINT PRIMARY KEY, src BIGINT NOT NULL, \
                 dst BIGINT NOT NULL, amount BIGINT NOT NULL)"
            ),
        )
        .expect("create the transfers table");
        let values = (0..ACCOUNTS)
            .map(|a| format!("({a}, {})", starting_balance(a)))
            .collect::<Vec<_>>()
            .join(", ");
        B::exec(
            admin,
            &format!("INSERT INTO {accounts} (id, balance) VALUES {values}"),
        )
        .expect("open the accounts");
    }

    fn drop_all<B: Backend>(&self, admin: &mut Conn<B>) {
        for table in [&self.accounts, &self.transfers] {
            let _ = B::exec(admin, &format!("DROP TABLE IF EXISTS {table}"));
        }
    }
}

/// One transfer on a borrowed connection. `begun` gets the transfer's id once one is
/// taken, so that a panic can be recorded against it.
fn transfer<B: Backend>(
    pool: &Pool<B::M>,
    run: &Run,
    tables: &Tables,
    plan: Plan,
    begun: &mut Option<i64>,
) -> Step {
    let mut guard = match pool.get() {
        Ok(guard) => guard,
        Err(e) => return Step::Borrow(e),
    };
    let conn = &mut *guard;
    // First of all: did the previous borrower's transaction come back with it?
    match B::session(conn) {
        Session::Clean => {}
        Session::InTransaction => {
            run.leftovers.fetch_add(1, Ordering::SeqCst);
            run.anomaly(format!(
                "at {:?}: a borrowed connection was inside a transaction",
                run.base.elapsed()
            ));
            return Step::Skipped;
        }
        Session::Failed(e) => {
            run.check_failures.fetch_add(1, Ordering::SeqCst);
            run.note("first check", e);
            return Step::Skipped;
        }
        Session::Garbled(e) => {
            run.anomaly(format!("at {:?}: first check: {e}", run.base.elapsed()));
            return Step::Skipped;
        }
    }
    let id = run.next_id.fetch_add(1, Ordering::SeqCst) as i64;
    *begun = Some(id);
    let strikes = |point: u8| match plan.fault {
        Some(Fault::Abandon(p)) if p == point => true,
        Some(Fault::Panic(p)) if p == point => std::panic::panic_any(DeliberatePanic),
        _ => false,
    };
    let failed = |what: &str, e: String| {
        run.note(what, e);
        Step::Done(Outcome::Failed)
    };
    let Plan {
        src, dst, amount, ..
    } = plan;
    let (accounts, transfers) = (&tables.accounts, &tables.transfers);

    if let Err(e) = B::exec(conn, "BEGIN") {
        return failed("BEGIN", e);
    }
    if strikes(0) {
        return Step::Done(Outcome::Abandoned);
    }
    // Both accounts locked at once, in id order, so transfers never deadlock.
    let locked = B::query_ints(
        conn,
        &format!(
            "SELECT id, balance FROM {accounts} WHERE id IN ({}, {}) ORDER BY id FOR UPDATE",
            src.min(dst),
            src.max(dst)
        ),
    );
    let rows = match locked {
        Ok(rows) => rows,
        Err(e) => return failed("lock", e),
    };
    if strikes(1) {
        return Step::Done(Outcome::Abandoned);
    }
    let balance = rows.iter().find(|row| row[0] == src).map(|row| row[1]);
    match balance {
        Some(balance) if rows.len() == 2 => {
            if balance < amount {
                if let Err(e) = B::exec(conn, "ROLLBACK") {
                    run.note("ROLLBACK", e);
                }
                return Step::Done(Outcome::Declined);
            }
        }
        _ => {
            run.anomaly(format!(
                "transfer {id}: locking {src} and {dst} found {rows:?}"
            ));
            return Step::Done(Outcome::Failed);
        }
    }
    for (account, delta) in [(src, -amount), (dst, amount)] {
        let sql = format!("UPDATE {accounts} SET balance = balance + {delta} WHERE id = {account}");
        if let Err(e) = B::exec(conn, &sql) {
            return failed("update", e);
        }
    }
    if strikes(2) {
        return Step::Done(Outcome::Abandoned);
    }
    let insert = format!(
        "INSERT INTO {transfers} (id, src, dst, amount) VALUES ({id}, {src}, {dst}, {amount})"
    );
    if let Err(e) = B::exec(conn, &insert) {
        return failed("insert", e);
    }
    if strikes(3) {
        return Step::Done(Outcome::Abandoned);
    }
    match B::exec(conn, "COMMIT") {
        Ok(()) => Step::Done(Outcome::Acked),
        Err(e) => {
            run.note("COMMIT", e);
            Step::Done(Outcome::InDoubt)
        }
    }
}

fn worker<B: Backend>(index: usize, pool: &Pool<B::M>, run: &Run, tables: &Tables) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut rng = Rng::new(seed ^ ((index as u64 + 1) << 32));
    let mut attempts = Vec::new();
    let mut failed_borrows = Vec::new();
    while !run.stop.load(Ordering::SeqCst) {
        let plan = rng.plan();
        let started_ns = run.now_ns();
        let mut begun = None;
        let step = catch_unwind(AssertUnwindSafe(|| {
            transfer::<B>(pool, run, tables, plan, &mut begun)
        }));
        let outcome = match step {
            Ok(Step::Done(outcome)) => outcome,
            Ok(Step::Skipped) => continue,
            Ok(Step::Borrow(e)) => {
                let kind = match e {
                    Error::Unavailable { .. } => BorrowFailure::Unavailable,
                    Error::Timeout { .. } => BorrowFailure::Timeout,
                    _ => BorrowFailure::Other,
                };
                if kind == BorrowFailure::Other {
                    run.anomaly(format!("unexpected borrow error: {e}"));
                }
                failed_borrows.push(FailedBorrow {
                    started_ns,
                    ended_ns: run.now_ns(),
                    kind,
                });
                // An unavailable backend fails borrows at once: do not spin on two cores.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(payload) if payload.is::<DeliberatePanic>() => Outcome::Panicked,
            Err(payload) => resume_unwind(payload),
        };
        let at_ns = run.now_ns();
        if outcome == Outcome::Acked {
            run.acked.fetch_add(1, Ordering::SeqCst);
            run.last_ack_ns.fetch_max(at_ns, Ordering::SeqCst);
        }
        let id = begun.expect("a transfer with an outcome has an id");
        attempts.push(Attempt {
            id,
            plan,
            outcome,
            at_ns,
        });
    }
    run.attempts.lock().unwrap().extend(attempts);
    run.failed_borrows.lock().unwrap().extend(failed_borrows);
}

/// Kills one of the pool's sessions every `KILL_EVERY` while `run.killing` is set,
/// through an admin connection of its own, reconnecting when that fails.
fn killer<B: Backend>(backend: &B, run: &Run) {
    let mut admin = None;
    while !run.stop.load(Ordering::SeqCst) {
        std::thread::sleep(KILL_EVERY);
        if !run.killing.load(Ordering::SeqCst) {
            continue;
        }
        let Some(conn) = admin.as_mut() else {
            admin = backend.admin().ok();
            continue;
        };
        match backend.kill_one_session(conn) {
            Ok(true) => {
                run.kills.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => {}
            Err(e) => {
                run.note("session kill", e);
                admin = None;
            }
        }
    }
}

/// One restart of the server: when it was killed and when it accepted connections
/// again, in nanoseconds since the run began.
#[derive(Debug, Clone, Copy)]
struct Restart {
    kill_ns: u64,
    accepted_ns: u64,
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The whole bank run on one backend; see the module documentation.
fn bank<B: Backend>(backend: B, ctl: &ServerCtl) {
    let name = B::NAME;
    let _server = servers::lock(B::SERVER);
    quiet_deliberate_panics();
    let test_started = Instant::now();
    let backend = Arc::new(backend);
    let tables = Arc::new(Tables::new());
    {
        let mut admin = backend.admin().expect("admin connection");
        tables.create::<B>(&mut admin);
    }

    let pool = Pool::builder()
        .max_size(MAX_SIZE)
        .reset_on_return(ResetAction::Rollback)
        .connection_timeout(BORROW_TIMEOUT)
        .build(backend.pool_manager())
        .expect("the pool builds");

    // The leftover check itself tells a clean session from one inside a transaction.
    {
        let mut conn = pool.get().expect("borrow");
        assert_eq!(
            B::session(&mut conn),
            Session::Clean,
            "{name}: a clean session"
        );
        B::exec(&mut conn, "BEGIN").expect("BEGIN");
        assert_eq!(
            B::session(&mut conn),
            Session::InTransaction,
            "{name}: after BEGIN"
        );
        B::exec(&mut conn, "ROLLBACK").expect("ROLLBACK");
        assert_eq!(
            B::session(&mut conn),
            Session::Clean,
            "{name}: after ROLLBACK"
        );
    }

    let run = Arc::new(Run::new());
    let (done_tx, done) = mpsc::channel();
    let mut handles = (0..WORKERS)
        .map(|index| {
            let (pool, run, tables, done_tx) =
                (pool.clone(), run.clone(), tables.clone(), done_tx.clone());
            std::thread::spawn(move || {
                worker::<B>(index, &pool, &run, &tables);
                let _ = done_tx.send(());
            })
        })
        .collect::<Vec<_>>();
    handles.push({
        let (backend, run, done_tx) = (backend.clone(), run.clone(), done_tx.clone());
        std::thread::spawn(move || {
            killer(&*backend, &run);
            let _ = done_tx.send(());
        })
    });

    let sample = || {
        let state = pool.state();
        assert!(state.connections <= MAX_SIZE, "{name}: {state:?}");
        assert!(state.in_use <= MAX_SIZE, "{name}: {state:?}");
    };
    let stretch = |what: &str| {
        let (since, acked) = (Instant::now(), run.acked.load(Ordering::SeqCst));
        servers::wait_until(&format!("{name}: {what}"), RECOVERY, || {
            sample();
            since.elapsed() >= STRETCH && run.acked.load(Ordering::SeqCst) >= acked + STRETCH_ACKS
        });
    };

    let mut restarts = Vec::new();
    stretch("load before the first restart");
    for i in 1..=RESTARTS {
        run.killing.store(false, Ordering::SeqCst);
        let kill_ns = run.now_ns();
        ctl.kill(B::SERVER).restart();
        let accepted_ns = run.now_ns();
        restarts.push(Restart {
            kill_ns,
            accepted_ns,
        });
        servers::wait_until(
            &format!("{name}: a commit after restart {i}"),
            RECOVERY,
            || {
                sample();
                run.last_ack_ns.load(Ordering::SeqCst) > accepted_ns
            },
        );
        run.killing.store(true, Ordering::SeqCst);
        stretch(&format!("load after restart {i}"));
    }
    run.stop.store(true, Ordering::SeqCst);
    drop(done_tx);
    servers::join_all(
        &format!("{name}: workers and the session killer"),
        handles,
        &done,
        BORROW_TIMEOUT + IO_TIMEOUT * 4 + Duration::from_secs(10),
    );

    // The pool recovers: all its connections can be borrowed at once, and they work. A
    // connection whose session was killed while it sat idle may be handed out once
    // (within `check_on_borrow`'s window) and fail; it is closed on return, so retry.
    let mut rounds = 0;
    servers::wait_until(
        &format!("{name}: all {MAX_SIZE} connections borrowed and used"),
        RECOVERY,
        || {
            rounds += 1;
            let mut held = Vec::new();
            for _ in 0..MAX_SIZE {
                match pool.get_timeout(BORROW_TIMEOUT) {
                    Ok(conn) => held.push(conn),
                    Err(e) => {
                        run.note("final borrow", e);
                        return false;
                    }
                }
            }
            assert_eq!(pool.state().in_use, MAX_SIZE, "{name}");
            for conn in &mut held {
                match B::session(conn) {
                    Session::Clean => {}
                    Session::InTransaction => {
                        run.leftovers.fetch_add(1, Ordering::SeqCst);
                        run.anomaly(
                            "at the end: a borrowed connection was inside a transaction".into(),
                        );
                    }
                    Session::Failed(_) => return false,
                    // Reported with the other violations below.
                    Session::Garbled(e) => {
                        run.anomaly(format!("at the end: {e}"));
                        return true;
                    }
                }
                let count = format!("SELECT count(*) FROM {}", tables.accounts);
                if B::query_ints(conn, &count).ok() != Some(vec![vec![ACCOUNTS]]) {
                    return false;
                }
            }
            true
        },
    );

    // What the database holds.
    let mut admin = servers::wait_for(RECOVERY, || backend.admin().ok())
        .unwrap_or_else(|| panic!("{name}: no admin connection after the run"));
    let balances = B::query_ints(
        &mut admin,
        &format!("SELECT id, balance FROM {} ORDER BY id", tables.accounts),
    )
    .expect("read the balances");
    let rows = B::query_ints(
        &mut admin,
        &format!(
            "SELECT id, src, dst, amount FROM {} ORDER BY id",
            tables.transfers
        ),
    )
    .expect("read the transfers");

    let attempts = std::mem::take(&mut *run.attempts.lock().unwrap());
    let failed_borrows = std::mem::take(&mut *run.failed_borrows.lock().unwrap());
    let mut violations = std::mem::take(&mut *run.anomalies.lock().unwrap());
    let by_id: HashMap<i64, Attempt> = attempts.iter().map(|a| (a.id, *a)).collect();
    assert_eq!(
        by_id.len(),
        attempts.len(),
        "{name}: transfer ids are unique"
    );
    let count = |outcome| attempts.iter().filter(|a| a.outcome == outcome).count();

    // The money is all there, and no account went below zero.
    let total = |b: &[Vec<i64>]| b.iter().map(|row| row[1]).sum::<i64>();
    let expected_total: i64 = (0..ACCOUNTS).map(starting_balance).sum();
    if balances.len() != ACCOUNTS as usize || total(&balances) != expected_total {
        violations.push(format!(
            "the balances sum to {} over {} accounts, not {expected_total}: {balances:?}",
            total(&balances),
            balances.len()
        ));
    }
    if let Some(row) = balances.iter().find(|row| row[1] < 0) {
        violations.push(format!("account {} is at {}", row[0], row[1]));
    }
    // Every transfer in the table was attempted as recorded and may have committed.
    let mut applied = HashSet::new();
    for row in &rows {
        let (id, src, dst, amount) = (row[0], row[1], row[2], row[3]);
        applied.insert(id);
        match by_id.get(&id) {
            None => violations.push(format!("transfer {id} is in the table but was never made")),
            Some(a) if (a.plan.src, a.plan.dst, a.plan.amount) != (src, dst, amount) => violations
                .push(format!(
                    "transfer {id} is in the table as {row:?}, but was {a:?}"
                )),
            Some(a) if !matches!(a.outcome, Outcome::Acked | Outcome::InDoubt) => {
                violations.push(format!(
                    "transfer {id} is in the table but was {:?}: {a:?}",
                    a.outcome
                ))
            }
            Some(_) => {}
        }
    }
    // Every acknowledged transfer is in the table.
    let lost: Vec<_> = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Acked && !applied.contains(&a.id))
        .collect();
    if !lost.is_empty() {
        violations.push(format!(
            "{} acknowledged transfers are not in the table, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    // The balances are the starting balances with the table's transfers applied.
    let mut replayed: Vec<i64> = (0..ACCOUNTS).map(starting_balance).collect();
    for row in &rows {
        replayed[row[1] as usize] -= row[3];
        replayed[row[2] as usize] += row[3];
    }
    let actual: Vec<i64> = balances.iter().map(|row| row[1]).collect();
    if actual != replayed {
        violations.push(format!(
            "the balances are {actual:?}, the transfers in the table make {replayed:?}"
        ));
    }
    let leftovers = run.leftovers.load(Ordering::SeqCst);

    // Each restart, as the borrowers saw it: from the kill to the first acknowledged
    // commit after the server accepted connections again. A failed borrow counts for it
    // if the two overlap.
    let grace = DEFAULT_OUTAGE_GRACE;
    let windows: Vec<(u64, u64)> = restarts
        .iter()
        .map(|r| {
            let first_commit_ns = attempts
                .iter()
                .filter(|a| a.outcome == Outcome::Acked && a.at_ns > r.accepted_ns)
                .map(|a| a.at_ns)
                .min()
                .expect("a commit after each restart was waited for");
            (r.kill_ns, first_commit_ns)
        })
        .collect();
    let overlaps =
        |f: &FailedBorrow, (from, to): (u64, u64)| f.ended_ns >= from && f.started_ns <= to;
    let mut restart_notes = Vec::new();
    for (i, (r, &window)) in restarts.iter().zip(&windows).enumerate() {
        let during = |kind| {
            failed_borrows
                .iter()
                .filter(|f| f.kind == kind && overlaps(f, window))
                .count()
        };
        let unavailable = during(BorrowFailure::Unavailable);
        let timeouts = during(BorrowFailure::Timeout);
        let took = Duration::from_nanos(r.accepted_ns - r.kill_ns);
        let asserted = if took < grace {
            if unavailable > 0 {
                violations.push(format!(
                    "restart {}: {unavailable} borrows failed as unavailable though the server \
                     was back after {took:.2?}, within the breaker's grace of {grace:?}",
                    i + 1
                ));
            }
            ""
        } else {
            " (longer than the grace: Unavailable not asserted)"
        };
        restart_notes.push(format!(
            "restart {}: {took:.2?}{asserted}, {unavailable} Unavailable / {timeouts} Timeout, \
             first commit {} ms after it accepted connections",
            i + 1,
            ms(window.1 - r.accepted_ns)
        ));
    }
    let in_doubt_applied = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::InDoubt && applied.contains(&a.id))
        .count();
    let failed_elsewhere = failed_borrows
        .iter()
        .filter(|f| !windows.iter().any(|&w| overlaps(f, w)))
        .count();
    eprintln!(
        "bank on {name}: {:.1?}; transfers {} acknowledged, {} abandoned, {} panicked, {} in \
         doubt ({in_doubt_applied} applied), {} declined, {} failed; {} rows; {} session kills; \
         {} dead connections found by their first check; leftover transactions seen: \
         {leftovers}; {}; {} other failed borrows; pool: {}",
        test_started.elapsed(),
        count(Outcome::Acked),
        count(Outcome::Abandoned),
        count(Outcome::Panicked),
        count(Outcome::InDoubt),
        count(Outcome::Declined),
        count(Outcome::Failed),
        rows.len(),
        run.kills.load(Ordering::SeqCst),
        run.check_failures.load(Ordering::SeqCst),
        restart_notes.join("; "),
        failed_elsewhere,
        pool.stats(),
    );
    if rounds > 1 {
        eprintln!("bank on {name}: all connections borrowed and used after {rounds} rounds");
    }

    let errors = run.errors.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "{name}: invariants broken (tables {} and {} kept): {violations:#?}\nerrors seen: {errors:#?}",
        tables.accounts,
        tables.transfers
    );
    assert_eq!(
        leftovers, 0,
        "{name}: borrowers found leftover transactions"
    );
    // The run did what it meant to: faults of every kind, and transfers through them.
    assert!(
        count(Outcome::Acked) >= STRETCH_ACKS * (RESTARTS + 1),
        "{name}"
    );
    assert!(
        count(Outcome::Abandoned) > 0 && count(Outcome::Panicked) > 0,
        "{name}"
    );
    assert!(
        run.kills.load(Ordering::SeqCst) > 0,
        "{name}: no session was killed"
    );
    assert_eq!(restarts.len(), RESTARTS);
    tables.drop_all::<B>(&mut admin);
}

#[cfg(feature = "postgres")]
mod postgres_bank {
    use super::*;
    use postgres::error::SqlState;
    use postgres::{Client, Config, NoTls, SimpleQueryMessage};
    use stickypool::backends::postgres::PostgresManager;

    struct Postgres {
        config: Config,
        /// The `application_name` of the pool's sessions, which the killer picks from.
        app: String,
    }

    impl Postgres {
        fn manager(&self, app: &str) -> PostgresManager {
            let mut config = self.config.clone();
            config.application_name(app);
            // The test server runs with `synchronous_commit = off`, where a commit is
            // acknowledged before its WAL record is written and a killed server loses
            // it; a bank needs what it acknowledged to stay.
            config.options("-c synchronous_commit=on");
            PostgresManager::new(config, NoTls)
                .connect_timeout(IO_TIMEOUT)
                .statement_timeout(IO_TIMEOUT)
                .tcp_user_timeout(IO_TIMEOUT)
        }
    }

    fn ints(sql: &str, messages: &[SimpleQueryMessage]) -> Result<Vec<Vec<i64>>, String> {
        let mut rows = Vec::new();
        for message in messages {
            if let SimpleQueryMessage::Row(row) = message {
                let values = (0..row.len())
                    .map(|i| {
                        let text = row.get(i).ok_or_else(|| format!("{sql}: NULL"))?;
                        text.parse::<i64>()
                            .map_err(|e| format!("{sql}: {text:?}: {e}"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                rows.push(values);
            }
        }
        Ok(rows)
    }

    impl Backend for Postgres {
        type M = PostgresManager;
        const NAME: &'static str = "postgres";
        const SERVER: Server = Server::Postgres;

        fn pool_manager(&self) -> PostgresManager {
            self.manager(&self.app)
        }

        fn admin(&self) -> Result<Client, String> {
            let manager = self.manager(&format!("{}_admin", self.app));
            manager.connect().map_err(|e| e.to_string())
        }

        fn exec(conn: &mut Client, sql: &str) -> Result<(), String> {
            conn.batch_execute(sql).map_err(|e| e.to_string())
        }

        fn query_ints(conn: &mut Client, sql: &str) -> Result<Vec<Vec<i64>>, String> {
            let messages = conn.simple_query(sql).map_err(|e| e.to_string())?;
            ints(sql, &messages)
        }

        /// Inside a transaction block `now()` is the transaction's start and differs
        /// from the statement's; outside one the statement is its own transaction. In a
        /// failed transaction every statement fails with `25P02`.
        fn session(conn: &mut Client) -> Session {
            let sql = "SELECT (now() <> statement_timestamp())::int";
            match conn.simple_query(sql).map(|messages| ints(sql, &messages)) {
                Ok(Ok(rows)) if rows == [[0]] => Session::Clean,
                Ok(Ok(rows)) if rows == [[1]] => Session::InTransaction,
                Ok(Ok(rows)) => Session::Garbled(format!("{sql} answered {rows:?}")),
                Ok(Err(e)) => Session::Garbled(e),
                Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
                    Session::InTransaction
                }
                Err(e) => Session::Failed(e.to_string()),
            }
        }

        fn kill_one_session(&self, admin: &mut Client) -> Result<bool, String> {
            let rows = Self::query_ints(
                admin,
                &format!(
                    "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity \
                     WHERE application_name = '{}' AND datname = current_database() \
                     AND pid <> pg_backend_pid() ORDER BY random() LIMIT 1",
                    self.app
                ),
            )?;
            Ok(rows == [[1]])
        }
    }

    #[test]
    fn bank_on_postgres_keeps_every_invariant_through_restarts() {
        let test = "bank_on_postgres_keeps_every_invariant_through_restarts";
        let Some(url) = servers::postgres_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        let backend = Postgres {
            config: url.parse().expect("STICKYPOOL_POSTGRES_URL parses"),
            app: servers::unique("bank"),
        };
        bank(backend, &ctl);
    }
}

#[cfg(feature = "mysql")]
mod mariadb_bank {
    use super::*;
    use mysql::prelude::Queryable;
    use mysql::{Conn, Row};
    use stickypool::backends::mysql::MysqlManager;

    struct Mariadb {
        url: String,
    }

    fn ints(sql: &str, rows: &[Row]) -> Result<Vec<Vec<i64>>, String> {
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.get_opt::<i64, usize>(i) {
                        Some(Ok(value)) => Ok(value),
                        other => Err(format!("{sql}: column {i}: {other:?}")),
                    })
                    .collect()
            })
            .collect()
    }

    impl Backend for Mariadb {
        type M = MysqlManager;
        const NAME: &'static str = "mariadb";
        const SERVER: Server = Server::Mysql;

        fn pool_manager(&self) -> MysqlManager {
            MysqlManager::from_url(&self.url)
                .expect("STICKYPOOL_MYSQL_URL parses")
                .connect_timeout(IO_TIMEOUT)
                .read_timeout(IO_TIMEOUT)
                .write_timeout(IO_TIMEOUT)
        }

        fn admin(&self) -> Result<Conn, String> {
            self.pool_manager().connect().map_err(|e| e.to_string())
        }

        fn exec(conn: &mut Conn, sql: &str) -> Result<(), String> {
            conn.query_drop(sql).map_err(|e| e.to_string())
        }

        fn query_ints(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<i64>>, String> {
            let rows: Vec<Row> = conn.query(sql).map_err(|e| e.to_string())?;
            ints(sql, &rows)
        }

        fn session(conn: &mut Conn) -> Session {
            let sql = "SELECT @@in_transaction";
            match conn.query::<Row, _>(sql).map(|rows| ints(sql, &rows)) {
                Ok(Ok(rows)) if rows == [[0]] => Session::Clean,
                Ok(Ok(rows)) if rows == [[1]] => Session::InTransaction,
                Ok(Ok(rows)) => Session::Garbled(format!("{sql} answered {rows:?}")),
                Ok(Err(e)) => Session::Garbled(e),
                Err(e) => Session::Failed(e.to_string()),
            }
        }

        /// The pool's sessions are the test user's in the test database, other than
        /// the admin connection (nothing else connects as that user while the bank runs).
        fn kill_one_session(&self, admin: &mut Conn) -> Result<bool, String> {
            let picked = Self::query_ints(
                admin,
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND DB = DATABASE() \
                 AND ID <> CONNECTION_ID() ORDER BY RAND() LIMIT 1",
            )?;
            let Some(id) = picked.first().map(|row| row[0]) else {
                return Ok(false);
            };
            match admin.query_drop(format!("KILL CONNECTION {id}")) {
                Ok(()) => Ok(true),
                // ER_NO_SUCH_THREAD: it ended by itself meanwhile. ER_KILL_DENIED_ERROR:
                // seen now and then under load for a picked session; nothing was killed.
                Err(mysql::Error::MySqlError(e)) if matches!(e.code, 1094 | 1095) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        }
    }

    #[test]
    fn bank_on_mariadb_keeps_every_invariant_through_restarts() {
        let test = "bank_on_mariadb_keeps_every_invariant_through_restarts";
        let Some(url) = servers::mysql_url(test) else {
            return;
        };
        let Some(ctl) = ServerCtl::from_env(test) else {
            return;
        };
        bank(Mariadb { url }, &ctl);
    }
}
