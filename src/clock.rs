//! A coarse millisecond clock for the hot path.
//!
//! `Instant::now()` costs tens of nanoseconds, more than a whole borrow should. The pool
//! only needs time at millisecond resolution on the hot path (when a connection was
//! returned, when it was borrowed, when it expires), so one background thread stores
//! the milliseconds since the process's first pool into an atomic every millisecond,
//! and the hot path reads that atomic. The thread runs only while some pool is alive:
//! each pool holds a [`Running`] token, and the thread sleeps on a condvar when the
//! last one is dropped. Slow paths (waiting, housekeeping) call [`tick`] themselves, so
//! the clock never lags far behind even if the thread is starved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();
static NOW_MS: AtomicU64 = AtomicU64::new(0);
static RUNNING: Mutex<usize> = Mutex::new(0);
static WAKE: Condvar = Condvar::new();

const PERIOD: Duration = Duration::from_millis(1);

/// Milliseconds since the clock started, as of the last tick.
#[inline]
pub(crate) fn now_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
}

/// Reads the real time, advances the coarse clock to it and returns it.
pub(crate) fn tick() -> u64 {
    let start = START.get_or_init(Instant::now);
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    NOW_MS.fetch_max(ms, Ordering::Relaxed);
    ms
}

/// Milliseconds as a `Duration`-friendly count, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Keeps the clock thread ticking while it lives.
#[derive(Debug)]
pub(crate) struct Running(());

impl Running {
    pub(crate) fn start() -> Running {
        tick();
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running += 1;
        if *running == 1 {
            static THREAD: OnceLock<()> = OnceLock::new();
            THREAD.get_or_init(|| {
                std::thread::Builder::new()
                    .name("stickypool-clock".into())
                    .spawn(run)
                    .expect("cannot spawn the stickypool clock thread");
            });
            WAKE.notify_all();
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
    }
}

fn run() {
    loop {
        {
            let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            while *running == 0 {
                running = WAKE.wait(running).unwrap_or_else(|e| e.into_inner());
            }
        }
        tick();
        std::thread::sleep(PERIOD);
    }
}
