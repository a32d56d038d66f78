//! A coarse millisecond clock for the hot path.
//!
//! `Instant::now()` costs tens of nanoseconds, more than a whole borrow should. The pool
//! only needs time at millisecond resolution on the hot path (when a connection was
//! returned, when it was borrowed, when it expires), so one background thread stores
//! the milliseconds since the process's first pool into an atomic every millisecond,
//! and the hot path reads that atomic. Slow paths (waiting, housekeeping) call [`tick`]
//! themselves, so the clock never lags far behind even if the thread is starved.
//!
//! The thread ticks only while pools are *used*. Each tick period it clears `used`;
//! the first read of the clock after that sets it again (one store per period, on the
//! cache line the tick itself has just written, so no line moves that would not move
//! anyway). When nothing read the clock for [`QUIET_AFTER`], the thread parks, and an
//! idle process with pools wakes about once a second ([`PARKED`]) instead of a thousand
//! times. The first read after that finds `used` clear, reads the real time itself (so
//! it is exact, not stale) and unparks the thread. The `used` store and the `parked`
//! load on the reader's side, and the `parked` store and the `used` load on the
//! thread's side, are `SeqCst`: one side always sees the other, so the thread never
//! parks while a reader relies on it.
//!
//! The thread exists while some pool is alive: each pool holds a [`Running`] token,
//! and the thread waits on a condvar when the last one is dropped.
//!
//! Under loom there is no thread: the clock reads the models' virtual time
//! (`sync::time`), which stands still unless a model moves it.

#![cfg_attr(loom, allow(dead_code, unreachable_code))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// What the hot path reads, on one cache line.
#[repr(align(64))]
struct Shared {
    now_ms: AtomicU64,
    /// Read since the thread last cleared it.
    used: AtomicBool,
    /// The thread is parked (or about to): a reader that sets `used` unparks it.
    parked: AtomicBool,
}

static CLOCK: Shared = Shared {
    now_ms: AtomicU64::new(0),
    used: AtomicBool::new(false),
    parked: AtomicBool::new(false),
};
static THREAD: OnceLock<std::thread::Thread> = OnceLock::new();
static RUNNING: Mutex<ClockState> = Mutex::new(ClockState {
    pools: 0,
    spawned: false,
});
static WAKE: Condvar = Condvar::new();

const PERIOD: Duration = Duration::from_millis(1);

/// Ticks without a read after which the thread parks.
const QUIET_AFTER: u32 = 50;

/// How long the parked thread sleeps before it looks again (nothing depends on it:
/// readers wake it).
const PARKED: Duration = Duration::from_secs(1);

/// Who needs the clock thread, and whether it exists.
struct ClockState {
    /// Live pools (their [`Running`] tokens).
    pools: usize,
    /// Whether the thread was spawned. Raised only once a spawn succeeded, so after a
    /// failed spawn the next pool tries again.
    spawned: bool,
}

/// Milliseconds since the clock started, as of the last tick (or now, if the clock
/// was resting).
#[inline]
#[cfg(not(loom))]
pub(crate) fn now_ms() -> u64 {
    let now = CLOCK.now_ms.load(Ordering::Relaxed);
    if CLOCK.used.load(Ordering::Relaxed) {
        return now;
    }
    first_use()
}

/// The models' virtual time.
#[cfg(loom)]
pub(crate) fn now_ms() -> u64 {
    crate::sync::time::now_ms()
}

/// The first read in a tick period: marks the clock used, and if the thread rests,
/// reads the real time and wakes it.
#[cold]
#[inline(never)]
fn first_use() -> u64 {
    CLOCK.used.store(true, Ordering::SeqCst);
    if !CLOCK.parked.load(Ordering::SeqCst) {
        return CLOCK.now_ms.load(Ordering::Relaxed);
    }
    let now = tick();
    if let Some(thread) = THREAD.get() {
        thread.unpark();
    }
    now
}

/// Reads the real time, advances the coarse clock to it and returns it.
#[cfg(not(loom))]
pub(crate) fn tick() -> u64 {
    let start = START.get_or_init(Instant::now);
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    CLOCK.now_ms.fetch_max(ms, Ordering::Relaxed);
    ms
}

/// The models' virtual time.
#[cfg(loom)]
pub(crate) fn tick() -> u64 {
    crate::sync::time::now_ms()
}

/// Nanoseconds since the clock started, read from the real clock: for measurements
/// that the coarse clock is too coarse for, off the fast path.
#[cfg(not(loom))]
pub(crate) fn precise_ns() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The models' virtual time.
#[cfg(loom)]
pub(crate) fn precise_ns() -> u64 {
    crate::sync::time::now_ms().saturating_mul(1_000_000)
}

/// Milliseconds as a `Duration`-friendly count, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Keeps the clock thread ticking while it lives.
#[derive(Debug)]
pub(crate) struct Running {
    /// The fork count when it started: a copy of it in a forked child takes no lock
    /// when dropped (the parent's clock thread may have held it at the fork).
    forks: u32,
}

impl Running {
    /// Counts a pool in and makes sure the thread runs. If the thread cannot be
    /// spawned (the process is out of threads), the pool still works: its slow paths
    /// and housekeeper advance the clock, so time-based checks are coarser until a
    /// later pool's start manages to spawn it.
    pub(crate) fn start() -> Running {
        if cfg!(loom) {
            return Running { forks: 0 }; // no thread: virtual time
        }
        Self::start_with(spawn_thread)
    }

    fn start_with(spawn: impl FnOnce() -> std::io::Result<()>) -> Running {
        tick();
        let mut state = lock();
        state.pools += 1;
        if !state.spawned {
            match spawn() {
                Ok(()) => state.spawned = true,
                Err(e) => log::warn!(
                    "stickypool: cannot spawn the clock thread ({e}); time-based checks \
                     advance only on slow paths until a later pool can start it"
                ),
            }
        }
        WAKE.notify_all();
        Running {
            forks: crate::fork::generation(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if crate::fork::forked_since(self.forks) {
            return;
        }
        lock().pools -= 1;
    }
}

fn spawn_thread() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stickypool-clock".into())
        .spawn(run)
        .map(drop)
}

fn lock() -> std::sync::MutexGuard<'static, ClockState> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

fn run() {
    let _ = THREAD.set(std::thread::current());
    let mut quiet: u32 = 0;
    loop {
        {
            let mut state = lock();
            while state.pools == 0 {
                state = WAKE.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
        tick();
        if CLOCK.used.swap(false, Ordering::SeqCst) {
            quiet = 0;
        } else {
            quiet = quiet.saturating_add(1);
        }
        if quiet < QUIET_AFTER {
            std::thread::sleep(PERIOD);
            continue;
        }
        CLOCK.parked.store(true, Ordering::SeqCst);
        if !CLOCK.used.load(Ordering::SeqCst) {
            std::thread::park_timeout(PARKED);
        }
        // Fresh before a reader can see it awake (and trust `now_ms` without a tick of
        // its own). Still quiet unless a reader woke it: then the next swap finds `used`.
        tick();
        CLOCK.parked.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_spawn_is_retried_by_the_next_pool() {
        // Whatever the real thread's state, a failed spawn must leave `spawned` as it
        // was and the count right, and must not stop a later start from spawning.
        let before = lock().spawned;
        let failed = Running::start_with(|| Err(std::io::Error::other("no threads")));
        assert_eq!(lock().spawned, before);
        let mut called = false;
        let next = Running::start_with(|| {
            called = true;
            spawn_thread()
        });
        assert_eq!(
            called, !before,
            "the next start spawns unless a thread exists"
        );
        assert!(lock().spawned);
        let pools = lock().pools;
        drop(failed);
        drop(next);
        assert_eq!(lock().pools, pools - 2);
    }
}
