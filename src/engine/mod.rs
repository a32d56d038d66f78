//! The engine behind [`Pool`](crate::Pool): what happens on borrow, return and connect.
//!
//! The hand-out itself (slots, waiting, hand-off) is in `bag`; this module adds what a
//! connection pool does around it: checking connections on borrow and return, the
//! "fake close" reset, retiring old connections, opening new ones in the background
//! when threads wait, and the per-slot bookkeeping behind `stats()`.
//!
//! The fast path of `get` is: read the thread's hint, one CAS on that slot, read the
//! coarse clock, write the borrow time and count into the slot's own cache-padded
//! block. Giving back is the reverse plus the `has_broken` check and one store and one
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

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use scheduled_thread_pool::JobHandle;

use crate::affinity;
use crate::bag::{self, Bag};
use crate::clock;
use crate::connector::Connector;
use crate::hook::{self, HookPanic};
use crate::manager::{CloseReason, ManageConnection};
use crate::stats::{Counters, Histogram, Stats};
use crate::sync::{AtomicU64, Ordering};

mod checkout;
pub(crate) mod config;
mod connect;
pub(crate) mod housekeeper;
mod pause;
mod recycle;
pub(crate) mod runtime;
pub(crate) mod slot;

pub(crate) use config::Config;
use connect::Connects;
pub use runtime::ConnectionInfo;
pub(crate) use slot::{Checkout, PoolEntry, SlotMeta};

/// What every handle, guard and background job shares.
pub(crate) struct Shared<M: ManageConnection> {
    id: u64,
    bag: Bag<PoolEntry<M::Connection>, SlotMeta>,
    manager: M,
    config: Config<M>,
    counters: Counters,
    /// Live `Pool` handles; the pool closes when the last one goes.
    handles: AtomicUsize,
    /// The connecting side's state (module `connect`).
    connects: Connects,
    jobs: Mutex<Vec<JobHandle>>,
    /// Runs this pool's blocking background work (module `connector`).
    connector: Arc<Connector>,
    /// Closes failed connections, whose drop may block (`recycle::close_slot`); apart
    /// from `connector` so that a close stuck on a hung server delays no connect.
    closer: Arc<Connector>,
    weak: Weak<Shared<M>>,
    /// An `Epoch` (`runtime`), bumped by `retire_all` and `set_max_size`: a
    /// connection of another epoch is rechecked on borrow and on return.
    epoch: AtomicU64,
    /// The fork count when the pool started (module `fork`).
    forks: u32,
    /// The reaper's record of the load (`housekeeper::Shared::shrink_to_load`).
    calm: Mutex<housekeeper::Calm>,
    /// Paused for maintenance (module `pause`).
    pause: pause::PauseState,
    _clock: clock::Running,
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
    /// Threads waiting for a connection (also those waiting for a paused pool to
    /// resume).
    pub waiters: u32,
    /// The pool's `max_size`.
    pub max_size: u32,
    /// The pool's `min_idle` now (`max_size` when it was set to `None`).
    pub min_idle: u32,
}

impl<M: ManageConnection> Shared<M> {
    // What the facade and the service layer read.

    /// The pool's id, unique in the process (affinity hints, bound connections,
    /// metrics).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn manager(&self) -> &M {
        &self.manager
    }

    pub(crate) fn connection_timeout(&self) -> Duration {
        self.config.connection_timeout
    }

    /// The pool's settings, for the facade's getters.
    pub(crate) fn settings(&self) -> &Config<M> {
        &self.config
    }

    /// The scheduler the pool's periodic jobs run on.
    #[cfg(feature = "metrics")]
    pub(crate) fn scheduler(&self) -> &Arc<scheduled_thread_pool::ScheduledThreadPool> {
        &self.config.thread_pool
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.bag.is_closed()
    }

    /// Whether this is a child process forked after the pool started (module `fork`).
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        crate::fork::forked_since(self.forks)
    }

    /// Counts a new `Pool` handle.
    pub(crate) fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `Pool` handle out; the last one closes the pool.
    pub(crate) fn drop_handle(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }

    /// Starts a pool: its state, its background jobs, and the `min_idle` connects.
    pub(crate) fn start(mut config: Config<M>, manager: M) -> Arc<Shared<M>> {
        let id = affinity::new_pool_id();
        if config.name.is_empty() {
            config.name = format!("pool-{id}");
        }
        let size = config.max_size as usize;
        let connector = Connector::new(&config.name);
        let closer = Connector::new(&format!("{}-close", config.name));
        let connects = Connects::new(config.circuit_breaker);
        let shared = Arc::new_cyclic(|weak| Shared {
            id,
            bag: Bag::new(size, config.fair_after),
            manager,
            config,
            counters: Counters::default(),
            handles: AtomicUsize::new(1),
            connects,
            jobs: Mutex::new(Vec::new()),
            connector,
            closer,
            weak: weak.clone(),
            epoch: AtomicU64::new(runtime::Epoch::START.word()),
            forks: crate::fork::generation(),
            calm: Mutex::new(housekeeper::Calm::starting_now()),
            pause: pause::PauseState::default(),
            _clock: clock::Running::start(),
        });
        housekeeper::start(&shared);
        // Under loom, on this thread: the models have few threads to spend.
        #[cfg(loom)]
        shared.connector.inline(|| shared.fill_min_idle());
        #[cfg(not(loom))]
        shared.fill_min_idle();
        shared
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
    pub(crate) fn note_panic(&self, panic: &HookPanic) {
        Counters::bump(&self.counters.hook_panics);
        log::error!(
            "pool '{}': {panic}; the call counts as failed and the pool carries on",
            self.config.name
        );
    }

    pub(crate) fn state(&self) -> State {
        let mut state = State {
            connections: 0,
            idle_connections: 0,
            in_use: 0,
            pending: 0,
            waiters: u32::try_from(self.bag.waiters())
                .unwrap_or(u32::MAX)
                .saturating_add(self.pause.waiting()),
            max_size: self.max_size(),
            min_idle: self.min_idle(),
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
        let (mut borrows, mut hold_ms, mut in_use) = (0, 0, 0);
        let mut held = [0u64; slot::HOLD_BUCKETS];
        for i in 0..self.bag.len() {
            let meta = self.bag.meta(i);
            borrows += meta.borrows.load(Ordering::Relaxed);
            hold_ms += meta.hold_ms.load(Ordering::Relaxed);
            for (sum, count) in held.iter_mut().zip(&meta.cold.hold_times.0) {
                *sum += count.load(Ordering::Relaxed);
            }
            in_use += u64::from(self.bag.state(i) == bag::IN_USE);
        }
        // Returned borrows: every borrow but those still out.
        let returned = borrows.saturating_sub(in_use);
        let hold_time = Histogram::of_holds(returned, &held, hold_ms);
        self.counters.snapshot(borrows, hold_time)
    }

    /// Closes the pool; see [`Pool::close`].
    pub(crate) fn close(&self) {
        // In a forked child: nothing, not even a lock (module `fork`).
        if self.bag.is_closed() || self.forked() {
            return;
        }
        self.bag.close();
        for job in self.jobs.lock().drain(..) {
            job.cancel();
        }
        self.connector.close();
        self.closer.close();
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
        if self.forked() {
            // The connections are the parent's: leave them open (module `fork`).
            self.bag.leak_all();
            return;
        }
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
