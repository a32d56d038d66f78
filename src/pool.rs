//! The public pool handle and what happens on borrow, return and connect.
//!
//! The hand-out itself (slots, waiting, hand-off) is in `bag`; this module adds what a
//! connection pool does around it: checking connections on borrow and return, the
//! "fake close" reset, retiring old connections, opening new ones in the background
//! when threads wait, and the per-slot bookkeeping behind `stats()`.
//!
//! The fast path of `get` is: read the thread's hint, one CAS on that slot, read the
//! coarse clock, write the borrow time and count into the slot (a line the CAS already
//! owns). Giving back is the reverse plus the `has_broken` check and one store and one
//! load in `bag`. No `Instant::now()`, no allocation, no lock, no shared write.
//!
//! Every call into user code goes through [`Shared::hook`] (see `hook`): a panic is
//! caught where it happens and the call counts as failed, so no unwinding ever passes
//! through code that owns a slot, and the slot is freed the ordinary way.
//!
//! Connects run on the pool's own connector threads (`connector`), scheduled on
//! demand (more waiters than connects under way), to refill `min_idle` as soon as a
//! connection is closed, and as retries with jittered backoff. While the circuit
//! breaker (`breaker`) is open, none of those start: one probe connect at a time runs,
//! and a borrow that finds no open connection fails at once.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use scheduled_thread_pool::JobHandle;

use crate::affinity;
use crate::bag::{self, Bag, Deadline, NO_HINT, Ticket, Turn, Wait};
use crate::breaker::Breaker;
use crate::builder::{Builder, Config};
use crate::clock;
use crate::connector::Connector;
use crate::error::{Error, ErrorMessage, SharedError};
use crate::guard::{OwnedConnection, PooledConnection};
use crate::hook::{self, HookPanic};
use crate::manager::{
    AcquireEvent, CheckinEvent, CheckoutEvent, CloseReason, ErrorOrigin, ManageConnection,
    ReleaseEvent, ResetAction, TimeoutEvent,
};
use crate::stats::{Counters, Stats};

/// A connection in its slot, with what the pool knows about it.
pub(crate) struct Entry<C> {
    pub(crate) conn: C,
    pub(crate) id: u64,
    pub(crate) created_ms: u64,
    /// When it must be retired (`u64::MAX` if never).
    pub(crate) expires_ms: u64,
    /// When it was last returned or opened (for `idle_timeout`).
    pub(crate) last_used_ms: u64,
    /// When it was last known to work: opened or passed `is_valid` (for
    /// `validation_bypass` and `keepalive_interval`).
    pub(crate) last_checked_ms: u64,
}

/// Per-slot data readable while the slot is borrowed (by the leak scan and `stats`).
/// Written only by the slot's owner, so plain loads and stores suffice.
#[derive(Debug)]
pub(crate) struct SlotMeta {
    /// When the current borrow started; `NOT_BORROWED` between borrows when leak
    /// detection is on, so the scan never reads a stale time.
    pub(crate) borrowed_at_ms: AtomicU64,
    pub(crate) borrows: AtomicU64,
    pub(crate) hold_ms: AtomicU64,
    pub(crate) leak_reported: AtomicBool,
    /// Where the current borrow happened, captured only with leak detection on and
    /// symbolized only if it is reported.
    pub(crate) borrow_site: Mutex<Option<BorrowSite>>,
}

pub(crate) const NOT_BORROWED: u64 = u64::MAX;

impl Default for SlotMeta {
    fn default() -> Self {
        SlotMeta {
            borrowed_at_ms: AtomicU64::new(NOT_BORROWED),
            borrows: AtomicU64::new(0),
            hold_ms: AtomicU64::new(0),
            leak_reported: AtomicBool::new(false),
            borrow_site: Mutex::new(None),
        }
    }
}

/// The thread and call stack of a borrow, for leak reports.
#[derive(Debug)]
pub(crate) struct BorrowSite {
    pub(crate) thread: String,
    pub(crate) backtrace: std::backtrace::Backtrace,
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    // Only the slot's owner writes, so a load and a store (no locked RMW) are enough.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A borrowed slot: its ticket and the connection inside.
pub(crate) struct Checkout<C> {
    pub(crate) ticket: Ticket,
    pub(crate) entry: NonNull<Entry<C>>,
}

/// Why opening a connection failed: the driver's (or customizer's) error, still
/// typed for the error handler, or a panic in one of them.
enum OpenFailure<E> {
    Error(E),
    Panicked(SharedError),
}

/// What every handle, guard and background job shares.
pub(crate) struct Shared<M: ManageConnection> {
    pub(crate) id: u64,
    pub(crate) bag: Bag<Entry<M::Connection>, SlotMeta>,
    pub(crate) manager: M,
    pub(crate) config: Config<M>,
    pub(crate) counters: Counters,
    /// Live `Pool` handles; the pool closes when the last one goes.
    handles: AtomicUsize,
    /// Connections being opened (slots in `CONNECTING`).
    pending: AtomicUsize,
    /// Held while `fill_min_idle` counts and claims slots, so two fills do not both
    /// open the same shortfall.
    filling: Mutex<()>,
    last_error: Mutex<Option<SharedError>>,
    /// The highest attempt number (0-based) of any connect that failed, for `build`.
    last_failed_attempt: AtomicU32,
    /// Fails borrows fast while the backend is down (module `breaker`).
    breaker: Breaker,
    /// Bumped after every connect attempt; `build` waits on it.
    progress: Mutex<u64>,
    progress_cond: Condvar,
    pub(crate) jobs: Mutex<Vec<JobHandle>>,
    /// Runs this pool's blocking background work (module `connector`).
    pub(crate) connector: Arc<Connector>,
    /// A refill of `min_idle` is queued on the connector (one at a time).
    refill_queued: AtomicBool,
    next_conn_id: AtomicU64,
    pub(crate) weak: Weak<Shared<M>>,
    _clock: clock::Running,
}

/// A pool of connections. Cheap to clone; every clone is a handle to the same pool,
/// and the pool closes when the last handle is dropped.
///
/// ```
/// # use stickypool::{ManageConnection, Pool};
/// # #[derive(Debug)] struct Manager;
/// # impl ManageConnection for Manager {
/// #     type Connection = Vec<u8>;
/// #     type Error = std::io::Error;
/// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
/// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
/// # }
/// let pool = Pool::builder().max_size(4).build(Manager)?;
/// std::thread::scope(|s| {
///     for _ in 0..8 {
///         s.spawn(|| {
///             let mut conn = pool.get().unwrap();
///             conn.push(1);
///         });
///     }
/// });
/// assert_eq!(pool.state().connections, 4);
/// # Ok::<(), stickypool::Error>(())
/// ```
pub struct Pool<M: ManageConnection> {
    pub(crate) shared: Arc<Shared<M>>,
}

/// A snapshot of the pool's connections, as in r2d2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// Open connections, idle or in use.
    pub connections: u32,
    /// Open connections not borrowed.
    pub idle_connections: u32,
    /// Borrowed connections.
    pub in_use: u32,
    /// Connections being opened.
    pub pending: u32,
    /// Threads waiting for a connection.
    pub waiters: u32,
    /// The pool's `max_size`.
    pub max_size: u32,
}

impl<M: ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl<M: ManageConnection> Drop for Pool<M> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<M: ManageConnection + fmt::Debug> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.config.name)
            .field("state", &self.state())
            .field("manager", &self.shared.manager)
            .finish_non_exhaustive()
    }
}

impl<M: ManageConnection> Pool<M> {
    /// A pool with the default settings; see [`Builder::build`].
    pub fn new(manager: M) -> Result<Pool<M>, Error> {
        Builder::new().build(manager)
    }

    /// A builder for a pool.
    pub fn builder() -> Builder<M> {
        Builder::new()
    }

    pub(crate) fn from_config(mut config: Config<M>, manager: M) -> Pool<M> {
        let id = affinity::new_pool_id();
        if config.name.is_empty() {
            config.name = format!("pool-{id}");
        }
        let size = config.max_size as usize;
        let connector = Connector::new(&config.name);
        let breaker = Breaker::new(config.circuit_breaker);
        let shared = Arc::new_cyclic(|weak| Shared {
            id,
            bag: Bag::new(size, FAIR_AFTER),
            manager,
            config,
            counters: Counters::default(),
            handles: AtomicUsize::new(1),
            pending: AtomicUsize::new(0),
            filling: Mutex::new(()),
            last_error: Mutex::new(None),
            last_failed_attempt: AtomicU32::new(0),
            breaker,
            progress: Mutex::new(0),
            progress_cond: Condvar::new(),
            jobs: Mutex::new(Vec::new()),
            connector,
            refill_queued: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
            weak: weak.clone(),
            _clock: clock::Running::start(),
        });
        crate::housekeeper::start(&shared);
        shared.fill_min_idle();
        Pool { shared }
    }

    /// Blocks until `min_idle` connections are open; see [`Builder::build`].
    pub(crate) fn wait_for_min_idle(&self) -> Result<(), Error> {
        let shared = &self.shared;
        let want = shared.config.min_idle;
        let started = Instant::now();
        // A timeout too large for the clock waits for ever.
        let deadline = started.checked_add(shared.config.connection_timeout);
        let mut progress = shared.progress.lock();
        loop {
            // The counters first (constant time), the slots only to confirm, so
            // waiting for a large pool stays linear in its size.
            if shared.connections_estimate() >= want && shared.state().connections >= want {
                return Ok(());
            }
            if shared.consistently_refused()
                && let Some(e) = shared.last_error.lock().clone()
            {
                return Err(Error::Connect(e));
            }
            if shared.bag.is_closed() {
                return Err(Error::Closed);
            }
            let timed_out = match deadline {
                Some(deadline) => shared
                    .progress_cond
                    .wait_until(&mut progress, deadline)
                    .timed_out(),
                None => {
                    shared.progress_cond.wait(&mut progress);
                    false
                }
            };
            if timed_out && shared.state().connections < want {
                return Err(Error::Timeout {
                    waited: started.elapsed(),
                    last_error: shared.last_error.lock().clone(),
                });
            }
        }
    }

    /// Borrows a connection, waiting up to `connection_timeout`.
    #[inline]
    pub fn get(&self) -> Result<PooledConnection<'_, M>, Error> {
        self.get_timeout(self.shared.config.connection_timeout)
    }

    /// Borrows a connection, waiting up to `timeout`.
    #[inline]
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection<'_, M>, Error> {
        let checkout = self.shared.checkout(timeout)?;
        Ok(PooledConnection::new(&self.shared, checkout))
    }

    /// Borrows an idle connection if there is one; never waits and never opens one.
    #[inline]
    pub fn try_get(&self) -> Option<PooledConnection<'_, M>> {
        let checkout = self.shared.try_checkout()?;
        Some(PooledConnection::new(&self.shared, checkout))
    }

    /// Borrows a connection with a `'static` guard that can be stored in structs and
    /// sent to other threads. Costs an `Arc` clone more than [`get`](Pool::get).
    pub fn get_owned(&self) -> Result<OwnedConnection<M>, Error> {
        let checkout = self
            .shared
            .checkout(self.shared.config.connection_timeout)?;
        Ok(OwnedConnection::new(self.shared.clone(), checkout))
    }

    /// A snapshot of the pool's connections.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Counters since the pool started.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The pool's `max_size`.
    pub fn max_size(&self) -> u32 {
        self.shared.config.max_size
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The pool's manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// Closes the pool: waiting threads and later borrows get [`Error::Closed`], idle
    /// connections are closed now and borrowed ones when they come back, and the
    /// background jobs stop. Dropping the last handle does the same.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether the pool is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.bag.is_closed()
    }
}

impl<M: ManageConnection> Shared<M> {
    /// Borrows: the fast path inline, the rest out of line.
    #[inline]
    pub(crate) fn checkout(&self, timeout: Duration) -> Result<Checkout<M::Connection>, Error> {
        if let Some(checkout) = self.try_checkout() {
            return Ok(checkout);
        }
        self.checkout_slow(timeout)
    }

    /// No check of `closed` here: closing sweeps every idle slot, so on a closed pool
    /// this finds nothing and `get` goes on to the slow path, which reports it.
    #[inline]
    pub(crate) fn try_checkout(&self) -> Option<Checkout<M::Connection>> {
        loop {
            let ticket = self
                .bag
                .try_take(affinity::hint(self.id), affinity::scan_start)?;
            if let Some(checkout) = self.accept(ticket, None) {
                return Some(checkout);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn checkout_slow(&self, timeout: Duration) -> Result<Checkout<M::Connection>, Error> {
        let started = Instant::now();
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
            let ticket = match self.bag.try_take(NO_HINT, affinity::scan_start) {
                Some(ticket) => ticket,
                None if self.backend_down() => return Err(self.unavailable()),
                None => {
                    let outcome = self
                        .bag
                        .wait(&mut turn, &timer, self.config.max_waiters, || {
                            self.spawn_creators()
                        });
                    clock::tick();
                    match outcome {
                        Wait::Got(ticket) => ticket,
                        Wait::TimedOut if self.backend_down() => {
                            return Err(self.unavailable());
                        }
                        Wait::TimedOut => return Err(self.timed_out(started)),
                        Wait::Closed => return Err(Error::Closed),
                        Wait::TooManyWaiters => {
                            Counters::bump(&self.counters.rejected);
                            return Err(Error::TooManyWaiters {
                                limit: self.config.max_waiters.unwrap_or(0),
                            });
                        }
                    }
                }
            };
            // Once queued, the borrow counts as a wait however it ends.
            let waited = turn.has_waited().then(|| started.elapsed());
            if let Some(checkout) = self.accept(ticket, waited) {
                return Ok(checkout);
            }
        }
    }

    /// Whether waiting could not help: the breaker is open (the backend refused every
    /// recent connect) and the pool has no connection that could come back.
    fn backend_down(&self) -> bool {
        self.breaker.is_open() && self.connections_estimate() == 0
    }

    #[cold]
    fn unavailable(&self) -> Error {
        Counters::bump(&self.counters.unavailable);
        Error::Unavailable {
            down_for: self.breaker.open_for(clock::now_ms()).unwrap_or_default(),
            last_error: self.last_error.lock().clone(),
        }
    }

    #[cold]
    fn timed_out(&self, started: Instant) -> Error {
        let waited = started.elapsed();
        Counters::bump(&self.counters.timeouts);
        if let Some(handler) = &self.config.event_handler {
            self.hook("HandleEvent::handle_timeout", || {
                handler.handle_timeout(TimeoutEvent { timeout: waited })
            });
        }
        Error::Timeout {
            waited,
            last_error: self.last_error.lock().clone(),
        }
    }

    /// Finishes a borrow of the slot `ticket` owns: checks the connection if asked and
    /// records the borrow. `None` if the check failed (the connection is closed).
    #[inline]
    fn accept(&self, ticket: Ticket, waited: Option<Duration>) -> Option<Checkout<M::Connection>> {
        let ptr = self.bag.value_ptr(&ticket);
        // SAFETY: the ticket owns the slot, and an owned slot taken from `IDLE` (or
        // handed over) always holds a connection: slots are published `IDLE` only with
        // their entry in place.
        let entry = unsafe { (*ptr).as_mut().unwrap_unchecked() };
        let now = clock::now_ms();
        if self.config.test_on_check_out
            && now.saturating_sub(entry.last_checked_ms) >= self.config.validation_bypass_ms
        {
            if !self.check(&mut entry.conn) {
                self.close_slot(ticket, CloseReason::Broken);
                return None;
            }
            entry.last_checked_ms = now;
        }
        let meta = self.bag.meta(ticket.index());
        if self.config.observed || waited.is_some() {
            self.note_checkout(meta, entry.id, waited);
        }
        // Stores are what the next CAS waits for (it drains the store buffer), so
        // skip those that would not change anything: the clock moves once a ms.
        if meta.borrowed_at_ms.load(Ordering::Relaxed) != now {
            meta.borrowed_at_ms.store(now, Ordering::Relaxed);
        }
        bump(&meta.borrows, 1);
        Some(Checkout {
            ticket,
            entry: NonNull::from(entry),
        })
    }

    /// What a borrow records beyond the fast path: the wait, the borrow site for leak
    /// detection, the event. Done before the borrow time is stored, so the leak scan
    /// never pairs a new borrow time with the previous borrow's site.
    #[cold]
    fn note_checkout(&self, meta: &SlotMeta, id: u64, waited: Option<Duration>) {
        if let Some(waited) = waited {
            Counters::bump(&self.counters.waits);
            self.counters.wait_time.record(waited);
        }
        if self.config.leak_detection_threshold.is_some() {
            self.record_borrow_site(meta);
        }
        if let Some(handler) = &self.config.event_handler {
            self.hook("HandleEvent::handle_checkout", || {
                handler.handle_checkout(CheckoutEvent {
                    id,
                    duration: waited.unwrap_or_default(),
                })
            });
        }
    }

    fn record_borrow_site(&self, meta: &SlotMeta) {
        let site = BorrowSite {
            thread: std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_owned(),
            backtrace: std::backtrace::Backtrace::force_capture(),
        };
        *meta.borrow_site.lock() = Some(site);
        meta.leak_reported.store(false, Ordering::Relaxed);
    }

    /// Takes a connection back from a guard. `discard` closes it instead.
    #[inline]
    pub(crate) fn checkin(&self, checkout: Checkout<M::Connection>, discard: bool) {
        let Checkout { ticket, entry } = checkout;
        // SAFETY: the guard owned the slot until now and hands ownership to us; the
        // entry pointer is valid while the slot is owned.
        let entry = unsafe { &mut *entry.as_ptr() };
        let now = clock::now_ms();
        let meta = self.bag.meta(ticket.index());
        let held_ms = now.saturating_sub(meta.borrowed_at_ms.load(Ordering::Relaxed));
        if held_ms != 0 {
            bump(&meta.hold_ms, held_ms);
        }
        if self.config.observed {
            self.note_checkin(meta, entry.id, held_ms);
        }
        let close = if discard || std::thread::panicking() {
            Some(CloseReason::Discarded)
        } else if self
            .hook("ManageConnection::has_broken", || {
                self.manager.has_broken(&mut entry.conn)
            })
            .unwrap_or(true)
        {
            Some(CloseReason::Broken)
        } else if now >= entry.expires_ms {
            Some(CloseReason::Lifetime)
        } else if self.config.resets {
            self.reset(entry)
        } else {
            None
        };
        if let Some(reason) = close {
            self.close_slot(ticket, reason);
            return;
        }
        if entry.last_used_ms != now {
            entry.last_used_ms = now;
        }
        affinity::remember(self.id, ticket.index());
        self.give_back(ticket);
    }

    /// The fake close and the optional check on return; `Some` if the connection
    /// must be closed.
    fn reset(&self, entry: &mut Entry<M::Connection>) -> Option<CloseReason> {
        let (action, id) = (self.config.reset_on_return, entry.id);
        if action != ResetAction::None {
            let failed = self.reset_step("ManageConnection::reset", id, || {
                self.manager.reset(&mut entry.conn, action)
            });
            if failed.is_some() {
                return failed;
            }
        }
        if let Some(customizer) = &self.config.customizer {
            let failed = self.reset_step("CustomizeConnection::on_check_in", id, || {
                customizer.on_check_in(&mut entry.conn)
            });
            if failed.is_some() {
                return failed;
            }
        }
        if self.config.test_on_check_in {
            if !self.check(&mut entry.conn) {
                return Some(CloseReason::Broken);
            }
            entry.last_checked_ms = clock::now_ms();
        }
        None
    }

    /// One step of the reset on return: `Some` (close the connection) if it failed or
    /// panicked.
    fn reset_step(
        &self,
        hook: &'static str,
        id: u64,
        f: impl FnOnce() -> Result<(), M::Error>,
    ) -> Option<CloseReason> {
        match self.hook(hook, f) {
            Some(Ok(())) => None,
            Some(Err(e)) => {
                log::debug!(
                    "pool '{}': {hook} failed, closing connection {id}",
                    self.config.name
                );
                self.report(ErrorOrigin::Reset, e);
                Some(CloseReason::ResetFailed)
            }
            None => Some(CloseReason::ResetFailed), // logged by `hook`
        }
    }

    /// `validate`, counting a failure (or a panic) in `validation_failures`.
    fn check(&self, conn: &mut M::Connection) -> bool {
        let valid = self.validate(conn);
        if !valid {
            Counters::bump(&self.counters.validation_failures);
        }
        valid
    }

    /// `is_valid_within` the validation timeout; a failure goes to the error handler.
    pub(crate) fn validate(&self, conn: &mut M::Connection) -> bool {
        let timeout = self.config.validation_timeout;
        match self.hook("ManageConnection::is_valid", || {
            self.manager.is_valid_within(conn, timeout)
        }) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                self.report(ErrorOrigin::Check, e);
                false
            }
            None => false, // logged by `hook`
        }
    }

    /// Hands an error to the error handler and returns what the pool keeps of it: the
    /// error itself when the handler looked at it in place, else its message.
    fn report(&self, origin: ErrorOrigin, error: M::Error) -> SharedError {
        let handler = &self.config.error_handler;
        let in_place = self.hook("HandleError::handle_error_in_place", || {
            handler.handle_error_in_place(&self.config.name, origin, &error)
        });
        if in_place == Some(false) {
            let kept = Arc::new(ErrorMessage(error.to_string()));
            self.hook("HandleError::handle_error", || handler.handle_error(error));
            kept
        } else {
            Arc::new(error)
        }
    }

    /// What a return records beyond the fast path: the leak follow-up, the event.
    #[cold]
    fn note_checkin(&self, meta: &SlotMeta, id: u64, held_ms: u64) {
        if self.config.leak_detection_threshold.is_some() {
            meta.borrowed_at_ms.store(NOT_BORROWED, Ordering::Relaxed);
            if meta.leak_reported.swap(false, Ordering::Relaxed) {
                log::info!(
                    "pool '{}': connection {id}, reported as leaked, was returned after {:?}",
                    self.config.name,
                    Duration::from_millis(held_ms)
                );
            }
        }
        if let Some(handler) = &self.config.event_handler {
            self.hook("HandleEvent::handle_checkin", || {
                handler.handle_checkin(CheckinEvent {
                    id,
                    duration: Duration::from_millis(held_ms),
                })
            });
        }
    }

    /// Gives an owned slot (with its connection) back to the bag, closing the
    /// connection if the pool closed meanwhile.
    pub(crate) fn give_back(&self, ticket: Ticket) {
        if let Err(ticket) = self.bag.give_back(ticket) {
            self.close_slot(ticket, CloseReason::PoolClosed);
        }
    }

    /// Takes a borrowed connection out of the pool for good and frees its slot.
    pub(crate) fn detach(&self, checkout: Checkout<M::Connection>) -> M::Connection {
        let entry = self
            .bag
            .with_value(&checkout.ticket, Option::take)
            .expect("a borrowed slot holds a connection");
        self.bag.free(checkout.ticket);
        let conn = self.release(entry, CloseReason::Detached);
        // The freed slot may be what a waiter needs, or `min_idle` wants refilling.
        self.spawn_creators();
        self.refill_soon();
        conn.expect("a detached connection is handed back, not closed")
    }

    /// Closes the connection in an owned slot and frees the slot. The connection is
    /// closed before the slot is freed, so the pool never has more than `max_size`.
    pub(crate) fn close_slot(&self, ticket: Ticket, reason: CloseReason) {
        let entry = self.bag.with_value(&ticket, Option::take);
        if let Some(entry) = entry {
            self.release(entry, reason);
        }
        self.bag.free(ticket);
        self.spawn_creators();
        self.refill_soon();
    }

    /// Queues a refill of `min_idle` on the connector if the pool is below it: a
    /// connection closed for any reason is replaced at once, not at the next reap.
    /// One refill is queued at a time, so closing many connections costs one.
    pub(crate) fn refill_soon(&self) {
        if self.bag.is_closed()
            || self.connections_estimate() >= self.config.min_idle
            || self.refill_queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = self.weak.clone();
        self.connector.run(move || {
            if let Some(shared) = weak.upgrade() {
                shared.refill_queued.store(false, Ordering::Release);
                shared.fill_min_idle();
            }
        });
    }

    /// Counts and reports a connection leaving the pool, and closes it, unless it is
    /// being detached: then it is handed back.
    pub(crate) fn release(
        &self,
        entry: Entry<M::Connection>,
        reason: CloseReason,
    ) -> Option<M::Connection> {
        Counters::bump(&self.counters.closed[reason.index()]);
        log::debug!(
            "pool '{}': closing connection {} ({reason})",
            self.config.name,
            entry.id
        );
        if let Some(handler) = &self.config.event_handler {
            self.hook("HandleEvent::handle_release", || {
                handler.handle_release(ReleaseEvent {
                    id: entry.id,
                    age: Duration::from_millis(clock::now_ms().saturating_sub(entry.created_ms)),
                    reason,
                })
            });
        }
        if reason == CloseReason::Detached {
            return Some(entry.conn);
        }
        self.close_connection(entry.conn);
        None
    }

    /// Closes a connection: through `on_release` if there is a customizer, else by
    /// dropping it. A panic in either is caught like any hook's.
    fn close_connection(&self, conn: M::Connection) {
        match &self.config.customizer {
            Some(customizer) => {
                self.hook("CustomizeConnection::on_release", || {
                    customizer.on_release(conn)
                });
            }
            None => {
                self.hook("Connection::drop", || drop(conn));
            }
        }
    }

    /// Runs user code `f` (named `hook` in the log); `None` if it panicked. The panic
    /// is counted in `stats().hook_panics` and logged, and the caller treats the call
    /// as failed (see `hook`).
    #[inline]
    pub(crate) fn hook<R>(&self, hook: &'static str, f: impl FnOnce() -> R) -> Option<R> {
        match hook::catch(hook, f) {
            Ok(value) => Some(value),
            Err(panic) => {
                self.note_panic(&panic);
                None
            }
        }
    }

    #[cold]
    fn note_panic(&self, panic: &HookPanic) {
        Counters::bump(&self.counters.hook_panics);
        log::error!(
            "pool '{}': {panic}; the call counts as failed and the pool carries on",
            self.config.name
        );
    }

    /// Opens connections for waiting threads: one more whenever more threads wait
    /// than connections are being opened, while there are empty slots. Threads never
    /// open connections themselves, so a burst of them cannot open one each.
    pub(crate) fn spawn_creators(&self) {
        loop {
            // While the backend is down, the breaker's probe is the only connect.
            // Checked on every round: a connect that fails at once frees `pending`
            // again before this loop looks.
            let pending = self.pending.load(Ordering::Acquire);
            if pending >= self.bag.waiters() || self.bag.is_closed() || self.breaker.is_open() {
                return;
            }
            if !self.start_connect(pending) {
                return;
            }
        }
    }

    /// Opens connections until `min_idle` are open or being opened. Linear in the
    /// pool's size: one count, then one pass claiming empty slots.
    pub(crate) fn fill_min_idle(&self) {
        if self.breaker.is_open() {
            return; // the probe's success refills
        }
        let _filling = self.filling.lock();
        let open = (0..self.bag.len())
            .filter(|&i| self.bag.state(i) != bag::EMPTY)
            .count();
        let mut missing = (self.config.min_idle as usize).saturating_sub(open);
        let mut from = 0;
        while missing > 0 && !self.bag.is_closed() {
            self.pending.fetch_add(1, Ordering::AcqRel);
            let Some(ticket) = self.bag.reserve_empty(from) else {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            };
            from = ticket.index() + 1;
            self.schedule_connect(ticket, 0, false);
            missing -= 1;
        }
    }

    /// Claims an empty slot and schedules a connect for it, if `pending` is still
    /// the number of connects under way. False if no slot is free.
    fn start_connect(&self, pending: usize) -> bool {
        if self
            .pending
            .compare_exchange(pending, pending + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return true; // raced with another creator; the caller looks again
        }
        match self.bag.reserve_empty(0) {
            Some(ticket) => {
                self.schedule_connect(ticket, 0, false);
                true
            }
            None => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                false
            }
        }
    }

    /// Schedules attempt `attempt` (0 = at once) to open a connection into the
    /// `CONNECTING` slot `ticket` owns; `probe` if it is the breaker's probe.
    fn schedule_connect(&self, ticket: Ticket, attempt: u32, probe: bool) {
        let weak = self.weak.clone();
        let job = move || {
            if let Some(shared) = weak.upgrade() {
                shared.connect_job(ticket, attempt, probe);
            }
        };
        if attempt == 0 {
            self.connector.run(job);
        } else {
            // The shared scheduler only waits out the backoff; the connect itself runs
            // on this pool's connector.
            let connector = self.connector.clone();
            let seed = self.id ^ u64::from(attempt) << 48 ^ clock::now_ms();
            self.config
                .thread_pool
                .execute_after(backoff(attempt, seed), move || connector.run(job));
        }
    }

    /// Opens a connection into the `CONNECTING` slot `ticket` owns; on failure retries
    /// with backoff while anyone still needs it, or, while the backend is down, as the
    /// breaker's one probe.
    fn connect_job(&self, ticket: Ticket, attempt: u32, probe: bool) {
        // Demand is checked again when the job runs, not only when it was queued: by
        // then connections opened earlier may have served the waiters (HikariCP does
        // the same), so a burst of threads does not open a connection each. The probe
        // runs whatever the demand, so that the first borrow after the backend comes
        // back finds a connection.
        let wanted = if probe {
            !self.bag.is_closed()
        } else {
            self.still_needed()
        };
        if !wanted {
            if probe {
                self.breaker.end_probe();
            }
            return self.abandon_connect(ticket);
        }
        let started = Instant::now();
        match self.open() {
            Ok(conn) => {
                self.counters.connect_time.record(started.elapsed());
                let now = clock::tick();
                let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
                let expires_ms = match self.config.max_lifetime {
                    Some(lifetime) => now.saturating_add(lifetime_with_jitter(lifetime, id)),
                    None => u64::MAX,
                };
                if let Some(handler) = &self.config.event_handler {
                    self.hook("HandleEvent::handle_acquire", || {
                        handler.handle_acquire(AcquireEvent { id })
                    });
                }
                self.bag.with_value(&ticket, |value| {
                    *value = Some(Entry {
                        conn,
                        id,
                        created_ms: now,
                        expires_ms,
                        last_used_ms: now,
                        last_checked_ms: now,
                    });
                });
                *self.last_error.lock() = None;
                self.give_back(ticket);
                // Counted once it is in its slot, so `connections_estimate` never runs
                // ahead of `state()`.
                Counters::bump(&self.counters.created);
                self.pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(down_for) = self.breaker.succeeded(now) {
                    log::info!(
                        "pool '{}': the backend is back after {down_for:?} down",
                        self.config.name
                    );
                }
                self.note_progress();
                self.spawn_creators();
                self.refill_soon();
            }
            Err(e) => self.connect_failed(ticket, attempt, probe, e),
        }
    }

    fn connect_failed(
        &self,
        ticket: Ticket,
        attempt: u32,
        probe: bool,
        failure: OpenFailure<M::Error>,
    ) {
        Counters::bump(&self.counters.connect_failures);
        let now = clock::tick();
        let name = &self.config.name;
        let just_opened = self.breaker.failed(now);
        let down_for = if just_opened {
            None
        } else {
            self.breaker.open_for(now)
        };
        let summary = down_for.is_some() && self.breaker.summary_due(now);
        // While the breaker is open, the probes' errors reach the handler only with
        // the periodic summary: one report per state change or period, not per probe.
        let error = match failure {
            OpenFailure::Error(e) if down_for.is_none() || summary => {
                self.report(ErrorOrigin::Connect, e)
            }
            OpenFailure::Error(e) => Arc::new(e),
            OpenFailure::Panicked(panic) => panic,
        };
        if just_opened {
            log::warn!(
                "pool '{name}': the backend refused {} connects in a row; borrows fail at \
                 once while no connection is open, and one connect at a time probes it",
                self.breaker.failures()
            );
        } else if let (Some(down_for), true) = (down_for, summary) {
            log::warn!(
                "pool '{name}': the backend is still unavailable after {down_for:?} \
                 ({} connects failed)",
                self.breaker.failures()
            );
        } else {
            log::debug!("pool '{name}': connect attempt {} failed", attempt + 1);
        }
        *self.last_error.lock() = Some(error);
        self.last_failed_attempt
            .fetch_max(attempt.saturating_add(1), Ordering::AcqRel);
        self.note_progress();
        let next = attempt.saturating_add(1);
        if self.breaker.is_open() {
            if probe || self.breaker.claim_probe() {
                self.schedule_connect(ticket, next, true);
            } else {
                self.abandon_connect(ticket);
            }
        } else if self.still_needed() {
            self.schedule_connect(ticket, next, false);
        } else {
            self.abandon_connect(ticket);
        }
    }

    fn abandon_connect(&self, ticket: Ticket) {
        self.bag.free(ticket);
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.note_progress();
    }

    /// Whether the backend refuses consistently, so `build` should fail now rather than
    /// wait out its timeout: no connect has ever succeeded and some connection's
    /// first [`BUILD_ATTEMPTS`] attempts all failed (about 60 ms with the retry
    /// backoff). One failure among successes never fails `build`.
    fn consistently_refused(&self) -> bool {
        self.counters.created.load(Ordering::Acquire) == 0
            && self.last_failed_attempt.load(Ordering::Acquire) >= BUILD_ATTEMPTS
    }

    /// Whether a failed connect should be retried: someone waits, or the pool is
    /// below `min_idle`. Constant time: it runs once per connect.
    fn still_needed(&self) -> bool {
        if self.bag.is_closed() {
            return false;
        }
        self.bag.waiters() > 0 || self.connections_estimate() < self.config.min_idle
    }

    /// Open connections by the counters (opened less closed), without a scan of the
    /// slots. Never above `state().connections` except for a moment while a
    /// connection is being closed.
    fn connections_estimate(&self) -> u32 {
        let stats = &self.counters;
        let created = stats.created.load(Ordering::Relaxed);
        let closed: u64 = stats.closed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        u32::try_from(created.saturating_sub(closed)).unwrap_or(u32::MAX)
    }

    /// Opens a connection and runs `on_acquire`; a panic in either is a connect error
    /// that says so.
    fn open(&self) -> Result<M::Connection, OpenFailure<M::Error>> {
        let mut conn = match hook::catch("ManageConnection::connect", || self.manager.connect()) {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(OpenFailure::Error(e)),
            Err(panic) => {
                self.note_panic(&panic);
                return Err(OpenFailure::Panicked(Arc::new(panic)));
            }
        };
        if let Some(customizer) = &self.config.customizer {
            let outcome = hook::catch("CustomizeConnection::on_acquire", || {
                customizer.on_acquire(&mut conn)
            });
            let error = match outcome {
                Ok(Ok(())) => return Ok(conn),
                Ok(Err(e)) => OpenFailure::Error(e),
                Err(panic) => {
                    self.note_panic(&panic);
                    OpenFailure::Panicked(Arc::new(panic))
                }
            };
            self.hook("Connection::drop", || drop(conn));
            return Err(error);
        }
        Ok(conn)
    }

    fn note_progress(&self) {
        *self.progress.lock() += 1;
        self.progress_cond.notify_all();
    }

    pub(crate) fn state(&self) -> State {
        let mut state = State {
            connections: 0,
            idle_connections: 0,
            in_use: 0,
            pending: 0,
            waiters: u32::try_from(self.bag.waiters()).unwrap_or(u32::MAX),
            max_size: self.config.max_size,
        };
        for i in 0..self.bag.len() {
            match self.bag.state(i) {
                bag::IDLE | bag::RESERVED => state.idle_connections += 1,
                bag::IN_USE => state.in_use += 1,
                bag::CONNECTING => state.pending += 1,
                _ => {}
            }
        }
        state.connections = state.idle_connections + state.in_use;
        state
    }

    pub(crate) fn stats(&self) -> Stats {
        let (mut borrows, mut hold_ms) = (0, 0);
        for i in 0..self.bag.len() {
            let meta = self.bag.meta(i);
            borrows += meta.borrows.load(Ordering::Relaxed);
            hold_ms += meta.hold_ms.load(Ordering::Relaxed);
        }
        self.counters.snapshot(borrows, hold_ms)
    }

    /// Closes the pool; see [`Pool::close`].
    pub(crate) fn close(&self) {
        if self.bag.is_closed() {
            return;
        }
        self.bag.close();
        for job in self.jobs.lock().drain(..) {
            job.cancel();
        }
        self.connector.close();
        for i in 0..self.bag.len() {
            if let Some(ticket) = self.bag.try_reserve(i) {
                self.close_slot(ticket, CloseReason::PoolClosed);
            }
        }
        self.note_progress();
        log::debug!("pool '{}' closed", self.config.name);
    }
}

impl<M: ManageConnection> Drop for Shared<M> {
    fn drop(&mut self) {
        // Connections still in slots (a pool dropped while a connect was finishing)
        // are closed through the customizer like any other.
        for i in 0..self.bag.len() {
            if let Some(ticket) = self.bag.try_reserve(i) {
                if let Some(entry) = self.bag.with_value(&ticket, Option::take) {
                    self.release(entry, CloseReason::PoolClosed);
                }
                self.bag.free(ticket);
            }
        }
    }
}

/// A borrower's timer: its deadline, or the backend found down while it waits (the
/// bag looks at least every `bag::RESCAN`), so that waiters learn of an outage as fast
/// as new borrowers do.
struct BorrowTimer<'a, M: ManageConnection> {
    deadline: Deadline,
    shared: &'a Shared<M>,
}

impl<M: ManageConnection> bag::Timer for BorrowTimer<'_, M> {
    fn expired(&self) -> bool {
        self.deadline.expired() || self.shared.backend_down()
    }

    fn park(&self) {
        self.deadline.park();
    }
}

/// How long a waiter may wait before returned connections are handed to it directly
/// instead of being competed for (see `bag`). Long enough that short waits cost no
/// context switch, short next to the waits r2d2's barging produces. Measured with
/// `benches/fairness.rs` (32 threads, 4 connections, 100 µs holds): at 1 ms nearly
/// every return is a hand-off and throughput falls about 10% below r2d2's, since each
/// hand-off leaves the connection unused while the waiter wakes; at 3 ms throughput
/// matches r2d2's while p99 and maximum waits stay about four times shorter.
const FAIR_AFTER: Duration = Duration::from_millis(3);

/// How many attempts of one connection must fail, with none ever succeeding, before
/// `build` gives up early; see `Shared::consistently_refused`.
const BUILD_ATTEMPTS: u32 = 3;

/// The delay before connect attempt `attempt` (1-based retries): 10 ms doubling up
/// to [`PROBE_CAP`](crate::breaker::PROBE_CAP) (1 s), less a pseudo-random part of up
/// to half of it from `seed`, so that pools (and a fleet's instances) that lost a
/// backend together do not retry in step.
fn backoff(attempt: u32, seed: u64) -> Duration {
    let full = Duration::from_millis(10u64 << attempt.min(7)).min(crate::breaker::PROBE_CAP);
    let ms = clock::millis(full);
    Duration::from_millis(ms - splitmix(seed) % (ms / 2 + 1))
}

/// `lifetime` in milliseconds less a pseudo-random 0 to 2.5%, derived from `seed`.
pub(crate) fn lifetime_with_jitter(lifetime: Duration, seed: u64) -> u64 {
    let ms = clock::millis(lifetime);
    let spread = ms / 40;
    if spread == 0 {
        return ms;
    }
    ms - splitmix(seed) % (spread + 1)
}

/// splitmix64: cheap and well spread for consecutive seeds.
fn splitmix(seed: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_two_and_a_half_percent() {
        let lifetime = Duration::from_secs(1000);
        let values: Vec<u64> = (0..1000)
            .map(|seed| lifetime_with_jitter(lifetime, seed))
            .collect();
        assert!(values.iter().all(|&v| (975_000..=1_000_000).contains(&v)));
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert!(
            distinct.len() > 900,
            "jitter should spread: {}",
            distinct.len()
        );
        assert_eq!(lifetime_with_jitter(Duration::from_millis(10), 3), 10);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for seed in 0..100 {
            let first = backoff(1, seed);
            assert!((10..=20).contains(&first.as_millis()), "{first:?}");
            let late = backoff(30, seed);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
        }
        let spread: std::collections::HashSet<_> = (0..100).map(|s| backoff(30, s)).collect();
        assert!(
            spread.len() > 50,
            "jitter spreads retries: {}",
            spread.len()
        );
    }
}
