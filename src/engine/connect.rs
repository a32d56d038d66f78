//! Opening connections: on demand for waiters, to keep `min_idle`, as retries with
//! jittered backoff, and as the circuit breaker's probe.

use std::sync::Arc;
// Not loom's: `refill_queued` and `may_run_short` only decide when `min_idle` is
// refilled (the reaper refills it anyway), which the models do not explore.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use parking_lot::Mutex as PlainMutex;

use super::Shared;
use super::slot::PoolEntry;
use crate::bag::{self, Ticket};
use crate::breaker::Breaker;
use crate::clock;
use crate::error::{Error, SharedError};
use crate::event::AcquireEvent;
use crate::extensions::Extensions;
use crate::hook;
use crate::manager::{ErrorOrigin, ManageConnection};
use crate::stats::Counters;
use crate::sync::{AtomicUsize, Mutex, Ordering, fence};
use crate::trace;

/// The connecting side's state, owned by this module: the rest of the engine reads it
/// through the methods below.
pub(super) struct Connects {
    /// Connections being opened (slots in `CONNECTING`).
    pending: AtomicUsize,
    /// Held while `fill_min_idle` counts and claims slots, so two fills do not both
    /// open the same shortfall.
    filling: Mutex<()>,
    last_error: PlainMutex<Option<SharedError>>,
    /// The highest attempt number (0-based) of any connect that failed, for `build`.
    last_failed_attempt: AtomicU32,
    /// Fails borrows fast while the backend is down (module `breaker`).
    breaker: Breaker,
    /// Bumped after every connect attempt; `build` waits on it. Not loom's: under
    /// loom a pool fills at `build` on the building thread, so `build` never waits
    /// here, and the models do not explore it.
    progress: PlainMutex<u64>,
    progress_cond: parking_lot::Condvar,
    /// A refill of `min_idle` is queued on the connector (one at a time).
    refill_queued: AtomicBool,
    /// The pool may have fewer than `min_idle` idle connections and room for more: a
    /// slot is empty and `min_idle` is not 0. Read by every borrow, written only when
    /// a slot empties or a refill finds none empty, so its line stays shared.
    may_run_short: AtomicBool,
    next_conn_id: AtomicU64,
}

impl Connects {
    pub(super) fn new(circuit_breaker: Option<Duration>) -> Connects {
        Connects {
            pending: AtomicUsize::new(0),
            filling: Mutex::new(()),
            last_error: PlainMutex::new(None),
            last_failed_attempt: AtomicU32::new(0),
            breaker: Breaker::new(circuit_breaker),
            progress: PlainMutex::new(0),
            progress_cond: parking_lot::Condvar::new(),
            refill_queued: AtomicBool::new(false),
            may_run_short: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// The last connect error since the last successful connect.
    pub(super) fn last_error(&self) -> Option<SharedError> {
        self.last_error.lock().clone()
    }

    /// Whether borrows should fail at once: the breaker is open and the outage has
    /// outlasted its grace period (or the pool never connected).
    pub(super) fn breaker_fails_fast(&self) -> bool {
        self.breaker.fails_fast(clock::now_ms())
    }

    /// How long the breaker has been open, if it is.
    pub(super) fn down_for(&self, now_ms: u64) -> Option<Duration> {
        self.breaker.open_for(now_ms)
    }
}

/// Why opening a connection failed: the driver's (or customizer's) error, still
/// typed for the error handler, or a panic in one of them.
pub(super) enum OpenFailure<E> {
    Error(E),
    Panicked(SharedError),
}

impl<M: ManageConnection> Shared<M> {
    /// Blocks until `min_idle` connections are open; see [`Builder::build`].
    pub(crate) fn wait_for_min_idle(&self) -> Result<(), Error> {
        let shared = self;
        let want = shared.min_idle();
        let started = Instant::now();
        // A timeout too large for the clock waits for ever.
        let deadline = started.checked_add(shared.config.connection_timeout);
        let mut progress = shared.connects.progress.lock();
        loop {
            // The counters first (constant time), the slots only to confirm, so
            // waiting for a large pool stays linear in its size.
            if shared.connections_estimate() >= want && shared.state().connections >= want {
                return Ok(());
            }
            if shared.consistently_refused()
                && let Some(e) = shared.connects.last_error.lock().clone()
            {
                return Err(Error::Connect(e));
            }
            if shared.bag.is_closed() {
                return Err(Error::Closed);
            }
            let progress_cond = &shared.connects.progress_cond;
            let timed_out = match deadline {
                Some(deadline) => progress_cond
                    .wait_until(&mut progress, deadline)
                    .timed_out(),
                None => {
                    progress_cond.wait(&mut progress);
                    false
                }
            };
            if timed_out && shared.state().connections < want {
                return Err(Error::Timeout {
                    pool: shared.name().to_owned(),
                    waited: started.elapsed(),
                    state: shared.state(),
                    last_error: shared.connects.last_error.lock().clone(),
                });
            }
        }
    }

    /// Whether a borrow should look if idle connections ran short (one relaxed load).
    #[inline]
    pub(super) fn may_run_short(&self) -> bool {
        self.connects.may_run_short.load(Ordering::Relaxed)
    }

    /// After a borrow took an idle connection while the pool may run short: refill
    /// `min_idle` idle connections (r2d2 opens more as soon as a borrow leaves fewer
    /// than `min_idle` idle). While a refill is queued this is one load: the refill
    /// clears its flag before it counts, so it sees every borrow made meanwhile.
    #[cold]
    pub(super) fn top_up_idle(&self) {
        if !self.connects.refill_queued.load(Ordering::Relaxed) {
            self.refill_soon();
        }
    }

    /// Notes that a slot was emptied: idle connections may now run short.
    pub(super) fn slot_emptied(&self) {
        if self.min_idle() > 0 && !self.may_run_short() {
            self.connects.may_run_short.store(true, Ordering::Relaxed);
        }
    }

    /// Fewer than `min_idle` connections are idle or being opened, and a slot is empty.
    fn idle_short(&self) -> bool {
        self.short_of_idle(&[bag::IDLE, bag::RESERVED, bag::CONNECTING])
    }

    /// Fewer than `min_idle` slots are in one of the `ready` states, and a slot is
    /// empty. Constant time when the counters answer it, else one scan of the slots.
    fn short_of_idle(&self, ready: &[u32]) -> bool {
        let open = self.connections_estimate();
        if open >= self.max_size() || self.min_idle() == 0 {
            // Full: borrows need not look until a slot empties (which sets it again,
            // and whose close asks for a refill itself).
            if self.may_run_short() {
                self.connects.may_run_short.store(false, Ordering::Relaxed);
            }
            return false;
        }
        if open < self.min_idle() {
            return true;
        }
        // Stops at the `min_idle`-th: in a pool that is not short, that is early.
        let min_idle = self.min_idle() as usize;
        self.slots_in(ready, min_idle) < min_idle
    }

    /// How many slots are in one of `states`, counting up to `at_most`.
    pub(super) fn slots_in(&self, states: &[u32], at_most: usize) -> usize {
        (0..self.bag.len())
            .filter(|&i| states.contains(&self.bag.state(i)))
            .take(at_most)
            .count()
    }

    /// Queues a refill of `min_idle` idle connections on the connector if the pool is
    /// below it: a connection closed or borrowed is replaced at once, not at the next
    /// reap. One refill is queued at a time, so closing many connections costs one.
    pub(crate) fn refill_soon(&self) {
        if self.bag.is_closed()
            || !self.idle_short()
            || self.connects.refill_queued.load(Ordering::Relaxed)
            || self.connects.refill_queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = self.weak.clone();
        self.connector.run(move || {
            if let Some(shared) = weak.upgrade() {
                shared
                    .connects
                    .refill_queued
                    .store(false, Ordering::Release);
                shared.fill_min_idle();
            }
        });
    }

    /// Opens connections for waiting threads: one more whenever more threads wait
    /// than connections are being opened, while there are empty slots. Threads never
    /// open connections themselves, so a burst of them cannot open one each.
    pub(crate) fn open_for_waiters(&self) {
        loop {
            // While the backend is down, the breaker's probe is the only connect.
            // Checked on every round: a connect that fails at once frees `pending`
            // again before this loop looks.
            let pending = self.connects.pending.load(Ordering::Acquire);
            if pending >= self.bag.waiters()
                || self.bag.is_closed()
                || self.connects.breaker.is_open()
                || self.is_paused()
                || (self.scouting() && pending > 0)
            {
                return;
            }
            if !self.start_connect(pending) {
                return;
            }
        }
    }

    /// Whether the pool has never reached its backend: then it opens one connection
    /// at a time, and the rest once one succeeds, so a fleet of pools started while
    /// their server is down makes one attempt each, not `min_idle` (module `gate`
    /// paces those). Not under loom, whose models fill at `build` on the building
    /// thread.
    fn scouting(&self) -> bool {
        !cfg!(loom) && !self.connects.breaker.ever_connected()
    }

    /// Opens connections until `min_idle` are idle or being opened (r2d2's meaning:
    /// borrowed ones do not count), as far as there are empty slots. Linear in the
    /// pool's size: one count, then one pass claiming empty slots.
    pub(crate) fn fill_min_idle(&self) {
        if self.connects.breaker.is_open() {
            return; // the probe's success refills
        }
        if self.pause.is_closing() {
            return; // `resume` refills
        }
        let mut claimed = Vec::new();
        {
            let _filling = self.connects.filling.lock();
            let min_idle = self.min_idle() as usize;
            let ready = self.slots_in(&[bag::IDLE, bag::RESERVED, bag::CONNECTING], min_idle);
            let mut wanted = min_idle.saturating_sub(ready);
            if self.scouting() {
                wanted = wanted.min(usize::from(
                    self.connects.pending.load(Ordering::Acquire) == 0,
                ));
            }
            let mut from = 0;
            while claimed.len() < wanted && !self.bag.is_closed() {
                self.connects.pending.fetch_add(1, Ordering::AcqRel);
                let Some(ticket) = self.bag.reserve_empty(from) else {
                    self.connects.pending.fetch_sub(1, Ordering::AcqRel);
                    fence(Ordering::SeqCst); // see `start_connect`
                    break;
                };
                from = ticket.index() + 1;
                claimed.push(ticket);
            }
        }
        // Scheduled once the lock is released: a connector that cannot spawn a thread
        // runs the job right here, and a connect that succeeds refills, which takes
        // the lock again (`a_fill_that_runs_its_connects_inline_finishes`).
        for ticket in claimed {
            self.schedule_connect(ticket, 0, false);
        }
        // A borrower that read `pending` while it counted a claim that failed may have
        // asked for no connect (see `start_connect`).
        self.open_for_waiters();
        self.note_whether_short();
    }

    /// Sets `may_run_short` to whether a slot is empty (and `min_idle` is not 0). When
    /// it clears it, it looks again, so that a slot emptied meanwhile (which sets it)
    /// is never missed.
    pub(super) fn note_whether_short(&self) {
        let flag = &self.connects.may_run_short;
        let any_empty = || self.slots_in(&[bag::EMPTY], 1) > 0;
        if self.min_idle() == 0 {
            return;
        }
        if any_empty() {
            flag.store(true, Ordering::SeqCst);
            return;
        }
        flag.store(false, Ordering::SeqCst);
        if any_empty() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Claims an empty slot and schedules a connect for it, if `pending` is still
    /// the number of connects under way. False if no slot is free.
    pub(super) fn start_connect(&self, pending: usize) -> bool {
        if self
            .connects
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
                self.connects.pending.fetch_sub(1, Ordering::AcqRel);
                // While `pending` counted this attempt, a thread freeing a slot may
                // have read it, taken the waiter for served and left the slot empty.
                // It frees, fences and reads `pending`; this lowers `pending`, fences
                // and looks for the slot: one of the two sees the other (the pool
                // model `an_abandoned_connect_strands_no_waiter` found the window).
                fence(Ordering::SeqCst);
                self.bag.any_empty()
            }
        }
    }

    /// Schedules attempt `attempt` (0 = at once) to open a connection into the
    /// `CONNECTING` slot `ticket` owns; `probe` if it is the breaker's probe.
    pub(super) fn schedule_connect(&self, ticket: Ticket, attempt: u32, probe: bool) {
        let job = self.connect_job_for(ticket, attempt, probe);
        // Under loom, retries run at once: the models have no scheduler.
        if attempt == 0 || cfg!(loom) {
            self.connector.run(job);
        } else {
            let seed = self.id ^ u64::from(attempt) << 48 ^ clock::now_ms();
            let mut delay = backoff(attempt, seed);
            // Borrowers are waiting out the outage's grace: notice its end quickly.
            if probe && self.bag.waiters() > 0 && self.connects.breaker.in_grace(clock::now_ms()) {
                delay = delay.min(GRACE_PROBE_EVERY);
            }
            self.run_connect_after(delay, job);
        }
    }

    /// `connect_job` as a job that holds the pool weakly: dropping the last handle
    /// ends it.
    fn connect_job_for(
        &self,
        ticket: Ticket,
        attempt: u32,
        probe: bool,
    ) -> impl FnOnce() + Send + 'static {
        let weak = self.weak.clone();
        move || {
            if let Some(shared) = weak.upgrade() {
                shared.connect_job(ticket, attempt, probe);
            }
        }
    }

    /// Runs a connect job on this pool's connector after `delay`: the shared
    /// scheduler only waits it out.
    fn run_connect_after(&self, delay: Duration, job: impl FnOnce() + Send + 'static) {
        let connector = self.connector.clone();
        self.config
            .thread_pool
            .execute_after(delay, move || connector.run(job));
    }

    /// Opens a connection into the `CONNECTING` slot `ticket` owns; on failure retries
    /// with backoff while anyone still needs it, or, while the backend is down, as the
    /// breaker's one probe.
    pub(super) fn connect_job(&self, ticket: Ticket, attempt: u32, probe: bool) {
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
                self.connects.breaker.end_probe();
            }
            return self.abandon_connect(ticket);
        }
        // Queued before the breaker opened: its probe is the one connect now.
        if !probe && self.connects.breaker.is_open() {
            return self.abandon_connect(ticket);
        }
        // A pool that has not reached its backend, or whose last connect failed, and
        // any pool while connects fail in the process, keeps to the process-wide pace
        // of such connects (module `gate`).
        if !cfg!(loom)
            && (self.connects.breaker.cold() || crate::gate::GATE.failing(clock::now_ms()))
            && let Err(wait) = crate::gate::GATE.try_take(Instant::now())
        {
            let job = self.connect_job_for(ticket, attempt, probe);
            return self.run_connect_after(wait, job);
        }
        let started = Instant::now();
        // Read before connecting: a connection opened with credentials a
        // `retire_all` meant to replace is retired too.
        let epoch = self.epoch();
        let span = trace::span!(
            "connect",
            pool = %self.config.name,
            attempt,
            conn_id = tracing::field::Empty
        )
        .entered();
        let opened = self.open();
        match opened {
            Ok(conn) if epoch.is_retired_at(self.epoch()) => {
                // `retire_all` ran while this connected, perhaps to leave the server
                // or the credentials it used: connect again. (Borrows would close it
                // anyway, since they compare epochs; this saves them the round.)
                #[allow(clippy::drop_non_drop)] // a real span with the `tracing` feature
                drop(span);
                self.close_connection(conn);
                self.connect_job(ticket, attempt, probe);
            }
            Ok(conn) => {
                self.counters.connect_time.record(started.elapsed());
                let now = clock::tick();
                let id = self.connects.next_conn_id.fetch_add(1, Ordering::Relaxed);
                span.record("conn_id", id);
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
                    *value = Some(PoolEntry {
                        conn,
                        id,
                        created_ms: now,
                        expires_ms,
                        last_used_ms: now,
                        last_checked_ms: now,
                        epoch,
                        extensions: Extensions::new(),
                    });
                });
                *self.connects.last_error.lock() = None;
                // Closed as evicted instead if the pool shrank below the slot meanwhile.
                self.give_back(ticket);
                // Counted once it is in its slot, so `connections_estimate` never runs
                // ahead of `state()`.
                Counters::bump(&self.counters.created);
                self.connects.pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(down_for) = self.connects.breaker.succeeded(now) {
                    log::info!(
                        "pool '{}': the backend is back after {down_for:?} down",
                        self.config.name
                    );
                }
                self.note_progress();
                // Pairs with the barrier of a borrower that registers meanwhile: it
                // reads `pending` after registering, this reads the waiters after
                // lowering `pending`; without the fence both can read the old values,
                // and the borrower waits with no connect for it (the pool model
                // `retire_all_racing_a_connect_lends_nothing_retired` found it).
                fence(Ordering::SeqCst);
                self.open_for_waiters();
                self.refill_soon();
            }
            Err(e) => self.connect_failed(ticket, attempt, probe, e),
        }
    }

    pub(super) fn connect_failed(
        &self,
        ticket: Ticket,
        attempt: u32,
        probe: bool,
        failure: OpenFailure<M::Error>,
    ) {
        Counters::bump(&self.counters.connect_failures);
        let now = clock::tick();
        crate::gate::GATE.note_failure(now);
        let name = &self.config.name;
        let just_opened = self.connects.breaker.failed(now);
        let down_for = if just_opened {
            None
        } else {
            self.connects.breaker.open_for(now)
        };
        let summary = down_for.is_some() && self.connects.breaker.summary_due(now);
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
                self.connects.breaker.failures()
            );
        } else if let (Some(down_for), true) = (down_for, summary) {
            log::warn!(
                "pool '{name}': the backend is still unavailable after {down_for:?} \
                 ({} connects failed)",
                self.connects.breaker.failures()
            );
        } else {
            log::debug!("pool '{name}': connect attempt {} failed", attempt + 1);
        }
        *self.connects.last_error.lock() = Some(error);
        self.connects
            .last_failed_attempt
            .fetch_max(attempt.saturating_add(1), Ordering::AcqRel);
        self.note_progress();
        let next = attempt.saturating_add(1);
        if self.connects.breaker.is_open() {
            if probe || self.connects.breaker.claim_probe() {
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

    /// Gives up a connect that nobody needs any more (or that the breaker stopped)
    /// and frees its slot.
    ///
    /// `pending` is lowered before the slot is freed, and the waiters are looked at
    /// after it (`free_slot`, behind the free's barrier): a borrower that registers
    /// meanwhile either finds the slot empty and `pending` lowered when it asks for a
    /// connect, or is seen here and gets one. Freeing first left a window in which the
    /// borrower saw `pending` still counting this connect, asked for none, and waited
    /// out its timeout beside an empty slot (the pool model
    /// `an_abandoned_connect_strands_no_waiter`).
    pub(super) fn abandon_connect(&self, ticket: Ticket) {
        self.connects.pending.fetch_sub(1, Ordering::AcqRel);
        self.free_slot(ticket);
        self.note_progress();
    }

    /// Whether the backend refuses consistently, so `build` should fail now rather than
    /// wait out its timeout: no connect has ever succeeded and some connection's
    /// first [`BUILD_ATTEMPTS`] attempts all failed (about 60 ms with the retry
    /// backoff). One failure among successes never fails `build`.
    pub(super) fn consistently_refused(&self) -> bool {
        self.counters.created.load(Ordering::Acquire) == 0
            && self.connects.last_failed_attempt.load(Ordering::Acquire) >= BUILD_ATTEMPTS
    }

    /// Whether a connect should go on: someone waits, or fewer than `min_idle` are
    /// idle. Constant time while the pool is filling up (the counters answer it).
    pub(super) fn still_needed(&self) -> bool {
        if self.bag.is_closed() {
            return false;
        }
        // Connects under way (this one among them) are not connections yet.
        self.bag.waiters() > 0 || self.short_of_idle(&[bag::IDLE, bag::RESERVED])
    }

    /// Open connections by the counters (opened less closed), without a scan of the
    /// slots. Never above `state().connections` except for a moment while a
    /// connection is being closed.
    pub(super) fn connections_estimate(&self) -> u32 {
        let stats = &self.counters;
        let created = stats.created.load(Ordering::Relaxed);
        let closed: u64 = stats.closed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        u32::try_from(created.saturating_sub(closed)).unwrap_or(u32::MAX)
    }

    /// Opens a connection and runs `on_acquire`; a panic in either is a connect error
    /// that says so.
    pub(super) fn open(&self) -> Result<M::Connection, OpenFailure<M::Error>> {
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

    pub(super) fn note_progress(&self) {
        *self.connects.progress.lock() += 1;
        self.connects.progress_cond.notify_all();
    }
}

/// The longest wait between two probes while borrowers wait out an outage's grace
/// period: the first of them is served within this of the backend's return.
const GRACE_PROBE_EVERY: Duration = Duration::from_millis(50);

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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Counter;

    impl ManageConnection for Counter {
        type Connection = u64;
        type Error = std::io::Error;
        fn connect(&self) -> Result<u64, std::io::Error> {
            Ok(0)
        }
        fn is_valid(&self, _: &mut u64) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn has_broken(&self, _: &mut u64) -> bool {
            false
        }
    }

    /// A connector that cannot spawn a thread runs each job on the thread that hands
    /// it over. A fill that held its lock while handing connects over deadlocked there:
    /// a connect that succeeds asks for a refill, which takes the same lock.
    #[test]
    fn a_fill_that_runs_its_connects_inline_finishes() {
        let pool = crate::Pool::builder()
            .max_size(3)
            .min_idle(Some(0))
            .build(Counter)
            .unwrap();
        pool.shared().connector.refuse_threads();
        let (done, finished) = std::sync::mpsc::channel();
        let filler = pool.clone();
        std::thread::spawn(move || {
            filler.set_min_idle(Some(2)).unwrap();
            done.send(()).unwrap();
        });
        let waited = finished.recv_timeout(Duration::from_secs(10));
        assert!(waited.is_ok(), "the fill deadlocked on its own lock");
        assert_eq!(pool.state().idle_connections, 2);
    }

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
