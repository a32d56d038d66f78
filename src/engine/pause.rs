//! Pausing a pool for maintenance (HikariCP's suspend, PgBouncer's `PAUSE`): new
//! borrows wait until [`resume`](Shared::resume) (or fail at once), borrowed
//! connections come back as usual, and the pool may close them all meanwhile.
//!
//! It costs the borrow path nothing: pausing bumps the epoch (module `runtime`), so
//! every connection looks stale to its next borrow and return, which then take the
//! cold `recheck`. There a borrow that finds the pool paused gives the connection back
//! and waits here, on a condition variable, until the pool resumes or its deadline
//! passes; a return keeps the connection (or closes it, with `and_close`). The epoch
//! is read with `Acquire` there, after `pause` stored its flags, so a borrow that
//! starts after `pause` returned sees them, as it sees a `retire_all`. A borrow
//! already past that point when `pause` ran may still complete.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::Shared;
use super::runtime::Epoch;
use crate::bag::Deadline;
use crate::manager::{CloseReason, ManageConnection};

/// A pool's pause flags, and what paused borrowers wait on.
#[derive(Default)]
pub(crate) struct PauseState {
    paused: AtomicBool,
    /// Paused borrowers fail at once with `Error::Paused` instead of waiting.
    failing: AtomicBool,
    /// Connections are closed as they come back, and none is opened.
    closing: AtomicBool,
    /// Borrowers waiting here (counted in `State::waiters`).
    waiting: AtomicU32,
    lock: Mutex<()>,
    resumed: Condvar,
}

impl PauseState {
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Borrowers waiting for the pool to resume.
    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }
}

impl<M: ManageConnection> Shared<M> {
    /// Pauses new borrows. Idempotent.
    pub(crate) fn pause(&self) {
        self.pause.paused.store(true, Ordering::Release);
        self.bump_epoch(Epoch::paused);
        log::info!("pool '{}' paused", self.config.name);
    }

    /// Makes paused borrowers fail at once, and wakes those waiting.
    pub(crate) fn pause_failing(&self) {
        self.pause.failing.store(true, Ordering::Release);
        let _waiting = self.pause.lock.lock();
        self.pause.resumed.notify_all();
    }

    /// Closes the idle connections now and the borrowed ones as they come back, until
    /// `resume`. Returns how many were closed now.
    pub(crate) fn pause_closing(&self) -> usize {
        self.pause.closing.store(true, Ordering::Release);
        self.bump_epoch(Epoch::paused);
        self.retain(|_| false)
    }

    /// Lets borrows in again; `min_idle` is refilled.
    pub(crate) fn resume(&self) {
        {
            let _waiting = self.pause.lock.lock();
            self.pause.closing.store(false, Ordering::Release);
            self.pause.failing.store(false, Ordering::Release);
            self.pause.paused.store(false, Ordering::Release);
            self.pause.resumed.notify_all();
        }
        // The connections kept their old epoch: their next borrow takes the new one.
        self.bump_epoch(Epoch::paused);
        self.refill_soon();
        log::info!("pool '{}' resumed", self.config.name);
    }

    /// Whether the pool is paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// Waits while the pool is paused: `Ok` once it is not (or no longer), `Err(true)`
    /// if paused borrowers are to fail at once, `Err(false)` if `deadline` passed.
    #[cold]
    pub(crate) fn wait_while_paused(&self, deadline: &Deadline) -> Result<(), bool> {
        let mut waiting = self.pause.lock.lock();
        self.pause.waiting.fetch_add(1, Ordering::Relaxed);
        let outcome = loop {
            if !self.pause.is_paused() {
                break Ok(());
            }
            if self.pause.failing.load(Ordering::Acquire) {
                break Err(true);
            }
            match deadline.left() {
                Some(left) if left.is_zero() => break Err(false),
                Some(left) => {
                    let until = Instant::now() + left;
                    self.pause.resumed.wait_until(&mut waiting, until);
                }
                None => self.pause.resumed.wait(&mut waiting),
            }
        };
        self.pause.waiting.fetch_sub(1, Ordering::Relaxed);
        outcome
    }

    /// Why a connection rechecked while the pool is paused must close (`and_close`).
    pub(crate) fn paused_close(&self) -> Option<CloseReason> {
        self.pause.is_closing().then_some(CloseReason::Evicted)
    }
}
