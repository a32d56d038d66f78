//! Background jobs, scheduled by a scheduler shared by every pool in the process (r2d2
//! starts three threads per pool). The scheduler never blocks on a backend: the reap
//! and the keepalive (which close and ping connections) run on the pool's own
//! connector threads (module `connector`), one run at a time, and a tick that finds
//! the previous run still going is skipped. The leak scan only reads and logs, so it
//! runs on the scheduler.
//!
//! * **reap**, every `reap_interval`: closes idle connections past `idle_timeout`
//!   (only those beyond `min_idle` in stickypool's API), retires
//!   connections past their lifetime, and
//!   refills `min_idle`. It also notices when it runs far later than scheduled (the
//!   machine was suspended or starved) and says so at `warn`.
//! * **keepalive**, every `keepalive_interval`: pings idle connections not used for
//!   that long; failures are closed and replaced.
//! * **leak scan**, at a quarter of `leak_detection_threshold`: reports borrowed
//!   connections held past the threshold, once each.
//!
//! Jobs hold a `Weak` pointer to the pool, and closing the pool cancels them, so no job
//! outlives its pool. The housekeeper checks an idle connection by claiming its slot
//! (`IDLE` to `RESERVED`) exactly as a borrower would, so it never races a borrower.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use scheduled_thread_pool::ScheduledThreadPool;

use super::Shared;
use super::config::LONGEST_PERIOD;
use crate::bag;
use crate::clock;
use crate::manager::{CloseReason, ManageConnection};
use crate::stats::Counters;

/// Threads of the shared scheduler: enough that a slow connect of one pool does not
/// hold up the others' housekeeping.
const SHARED_THREADS: usize = 4;

/// The scheduler shared by every pool that was not given its own.
pub(crate) fn shared_scheduler() -> Arc<ScheduledThreadPool> {
    static SHARED: OnceLock<Arc<ScheduledThreadPool>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            Arc::new(
                ScheduledThreadPool::builder()
                    .num_threads(SHARED_THREADS)
                    .thread_name_pattern("stickypool-worker-{}")
                    .build(),
            )
        })
        .clone()
}

/// Starts the pool's periodic jobs.
pub(crate) fn start<M: ManageConnection>(shared: &Arc<Shared<M>>) {
    // The models call no periodic job: loom cannot explore a scheduler's threads.
    if cfg!(loom) {
        return;
    }
    let config = &shared.config;
    let mut jobs = shared.jobs.lock();

    let interval = config.reap_interval;
    let mut last_run = Instant::now();
    let reaping = Arc::new(AtomicBool::new(false));
    jobs.push(every(shared, interval, move |pool| {
        let now = Instant::now();
        let late = now.duration_since(last_run).saturating_sub(interval);
        if late > interval / 2 + Duration::from_millis(500) {
            log::warn!(
                "pool '{}': housekeeper ran {late:?} late (the machine was suspended or \
                 the scheduler starved); idle and lifetime checks were delayed",
                pool.config.name
            );
        }
        last_run = now;
        on_connector(pool, &reaping, Shared::reap);
    }));

    if let Some(interval) = config.keepalive_interval {
        let pinging = Arc::new(AtomicBool::new(false));
        jobs.push(every(shared, interval, move |pool| {
            on_connector(pool, &pinging, move |pool| pool.keepalive(interval))
        }));
    }

    if let Some(threshold) = config.leak_detection_threshold {
        let period = (threshold / 4).clamp(Duration::from_millis(1), LONGEST_PERIOD);
        jobs.push(every(shared, period, move |pool| {
            pool.scan_leaks(threshold)
        }));
    }
}

/// Runs `work` on the pool's connector, unless the previous run is still queued or
/// running (a hung backend): then this tick is skipped.
fn on_connector<M: ManageConnection>(
    pool: &Shared<M>,
    busy: &Arc<AtomicBool>,
    work: impl FnOnce(&Shared<M>) + Send + 'static,
) {
    if busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let (weak, busy) = (pool.weak.clone(), busy.clone());
    pool.connector.run(move || {
        if let Some(pool) = weak.upgrade() {
            pool.hook("the housekeeper", || work(&pool));
        }
        busy.store(false, Ordering::Release);
    });
}

/// Runs `job` on the pool every `period` until the pool is gone. User code inside a job
/// is caught where it is called; this catch is the last line, so that even a bug in the
/// pool's own job code cannot stop a periodic job (the scheduler does not reschedule a
/// job that panicked).
fn every<M: ManageConnection>(
    shared: &Arc<Shared<M>>,
    period: Duration,
    mut job: impl FnMut(&Shared<M>) + Send + 'static,
) -> scheduled_thread_pool::JobHandle {
    let weak: Weak<Shared<M>> = Arc::downgrade(shared);
    shared
        .config
        .thread_pool
        .execute_at_fixed_rate(period, period, move || {
            if let Some(pool) = weak.upgrade()
                && !pool.bag.is_closed()
            {
                clock::tick();
                pool.hook("the housekeeper", || job(&pool));
            }
        })
}

/// The reaper's view of the load since it last shrank the pool (`shrink_to_load`).
#[derive(Debug)]
pub(super) struct Calm {
    /// The waits counter when last looked at.
    waits: u64,
    /// Since when no borrow has waited (or since the last shrink, or the start).
    since_ms: u64,
    /// The slots' summed hold time then.
    hold_ms: u64,
}

impl Calm {
    pub(super) fn starting_now() -> Calm {
        Calm::at(0, clock::tick(), 0)
    }

    fn at(waits: u64, since_ms: u64, hold_ms: u64) -> Calm {
        Calm {
            waits,
            since_ms,
            hold_ms,
        }
    }
}

impl<M: ManageConnection> Shared<M> {
    /// Closes idle connections past `idle_timeout` (beyond `min_idle` only in
    /// stickypool's API) and connections past their lifetime; refills
    /// `min_idle`.
    pub(crate) fn reap(&self) {
        let now = clock::now_ms();
        let idle_timeout = self.config.idle_timeout.map(clock::millis);
        let mut idle = (0..self.bag.len())
            .filter(|&i| self.bag.state(i) == bag::IDLE)
            .count();
        for i in 0..self.bag.len() {
            let Some(ticket) = self.bag.try_reserve(i) else {
                continue;
            };
            let epoch = self.epoch();
            let (expired, retired, idle_ms) = self.bag.with_value(&ticket, |entry| {
                let entry = entry.as_ref().expect("an idle slot holds a connection");
                (
                    now >= entry.expires_ms,
                    entry.epoch.is_retired_at(epoch),
                    now.saturating_sub(entry.last_used_ms),
                )
            });
            let reason = if i >= self.bag.limit() {
                Some(CloseReason::Evicted) // beyond a smaller max_size
            } else if retired {
                // Put back idle by a return or connect that straddled `retire_all`.
                Some(CloseReason::Retired)
            } else if expired {
                Some(CloseReason::Lifetime)
            } else if (!self.config.idle_timeout_spares_min_idle || idle > self.min_idle() as usize)
                && idle_timeout.is_some_and(|timeout| idle_ms >= timeout)
            {
                Some(CloseReason::Idle)
            } else {
                None
            };
            match reason {
                Some(reason) => {
                    idle = idle.saturating_sub(1);
                    self.close_slot(ticket, reason);
                }
                None => self.give_back(ticket),
            }
        }
        if let Some(timeout) = idle_timeout {
            self.shrink_to_load(now, timeout);
        }
        self.fill_min_idle();
    }

    /// Closes idle connections the load has not needed for a whole `idle_timeout`.
    ///
    /// The per-connection idle timeout alone does not shrink a pool whose light load
    /// is spread over many threads: each thread takes back the connection it used last
    /// (the affinity hint), so every connection is used now and then and none is idle
    /// for long, while a pool that lends its most recent connection first (r2d2's
    /// stack) would leave the others idle. So the reaper also looks at what the load
    /// needed. When no borrow has had to wait for a whole `idle_timeout` (the waits
    /// counter did not move), it estimates the connections the load used from the
    /// time they were held (the per-slot hold counters: held time over elapsed time is
    /// the average number in use, Little's law), adds one spare, and closes the idle
    /// connections beyond that (never below `min_idle` idle), least recently used
    /// first, so a busy thread keeps its own. If that was too few, a borrow waits while
    /// one is opened, which restarts the window. The borrow path is untouched: this
    /// reads the slots and slow-path counters.
    fn shrink_to_load(&self, now: u64, idle_timeout: u64) {
        let waits = self.counters.waits.load(Ordering::Relaxed);
        let hold_ms: u64 = (0..self.bag.len())
            .map(|i| self.bag.meta(i).hold_ms.load(Ordering::Relaxed))
            .sum();
        let mut calm = self.calm.lock();
        let elapsed = now.saturating_sub(calm.since_ms);
        if waits != calm.waits || elapsed < idle_timeout {
            if waits != calm.waits {
                *calm = Calm::at(waits, now, hold_ms);
            }
            return;
        }
        let used = hold_ms
            .saturating_sub(calm.hold_ms)
            .div_ceil(elapsed.max(1));
        *calm = Calm::at(waits, now, hold_ms);
        drop(calm);
        let mut idle = self.idle_connections();
        let in_use = self.slots_in(&[bag::IN_USE], usize::MAX);
        let keep_idle = (self.min_idle() as usize)
            .max((used as usize + 1).saturating_sub(in_use))
            .max(1);
        if idle.len() <= keep_idle {
            return;
        }
        idle.sort_unstable_by_key(|c| c.last_used_ms);
        for connection in &idle[..idle.len() - keep_idle] {
            self.close_if_unchanged(connection, CloseReason::Idle);
        }
    }

    /// Pings idle connections unused for `interval`; closes those that fail.
    pub(crate) fn keepalive(&self, interval: Duration) {
        let now = clock::now_ms();
        let interval = clock::millis(interval);
        let mut replaced = false;
        for i in 0..self.bag.len() {
            let Some(ticket) = self.bag.try_reserve(i) else {
                continue;
            };
            let failed = self.bag.with_value(&ticket, |entry| {
                let entry = entry.as_mut().expect("an idle slot holds a connection");
                if now.saturating_sub(entry.last_checked_ms.max(entry.last_used_ms)) < interval {
                    return None;
                }
                if self.validate(&mut entry.conn, entry.id, Duration::MAX) {
                    entry.last_checked_ms = now;
                    None
                } else {
                    Some(entry.id)
                }
            });
            match failed {
                Some(id) => {
                    log::info!(
                        "pool '{}': keepalive of connection {id} failed, closing it",
                        self.config.name
                    );
                    self.close_failed(ticket, CloseReason::KeepaliveFailed);
                    replaced = true;
                }
                None => self.give_back(ticket),
            }
        }
        if replaced {
            self.fill_min_idle();
        }
    }

    /// Reports borrowed connections held longer than `threshold`, once per borrow.
    pub(crate) fn scan_leaks(&self, threshold: Duration) {
        let now = clock::now_ms();
        let threshold_ms = clock::millis(threshold);
        for i in 0..self.bag.len() {
            if self.bag.state(i) != bag::IN_USE {
                continue;
            }
            let meta = self.bag.meta(i);
            let borrowed_at = meta.borrowed_at_ms.load(Ordering::Relaxed);
            let held = now.saturating_sub(borrowed_at);
            if held < threshold_ms {
                continue;
            }
            // The site of this borrow, not of one that started since the time was read
            // (then this borrow has ended and there is nothing to report). Marked
            // reported under the site's lock, which the next borrow's record takes too.
            let site = {
                let recorded = meta.cold.borrow_site.lock();
                let site = match &*recorded {
                    Some(site) if site.borrowed_at_ms == borrowed_at => {
                        format!("thread '{}', borrowed at:\n{}", site.thread, site.backtrace)
                    }
                    Some(_) => continue,
                    None => "an unknown borrower".to_owned(),
                };
                if meta.cold.leak_reported.swap(true, Ordering::Relaxed) {
                    continue;
                }
                site
            };
            Counters::bump(&self.counters.leaks);
            log::warn!(
                "pool '{}': a connection has been held for {:?}, longer than \
                 leak_detection_threshold ({threshold:?}); possible leak by {site}",
                self.config.name,
                Duration::from_millis(held),
            );
        }
    }
}
