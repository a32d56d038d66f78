//! Changes at runtime: `min_idle`, evicting idle connections, retiring every
//! connection (credential rotation, a new primary), and keeping only the connections a
//! predicate accepts.
//!
//! What this adds to the borrow path: a borrow and a return each compare the
//! connection's [`Epoch`] with the pool's (a load of a word written only by
//! `retire_all` and `set_max_size`). Only when they differ does it look further:
//! retired by `retire_all`, or in a slot beyond a smaller `max_size`, the connection is
//! closed; otherwise it takes the current epoch and the next borrow is fast again.
//!
//! The borrow's comparison is what makes `retire_all` and `set_max_size` hold for
//! every borrow that starts after they return, whatever was in flight when they ran: a
//! return that had compared epochs before the call, a connect that read the epoch
//! before it, a hand-off to a waiter. Each of those may still put an old connection
//! into a slot, but no borrow keeps it: the borrow loads the epoch after the call
//! changed it (it started after the call returned), sees the change and closes the
//! connection (the pool models `retire_all_racing_a_return_lends_nothing_retired`,
//! `retire_all_racing_a_connect_lends_nothing_retired` and
//! `shrinking_while_a_return_hands_off_lends_nothing_beyond_the_limit` in
//! `tests/loom_pool.rs`).

use std::time::Duration;

use super::Shared;
use crate::clock;
use crate::error::Error;
use crate::manager::{CloseReason, ManageConnection};
use crate::sync::Ordering;

/// The pool's epoch: `retire_all` calls in the high half, resizes in the low half,
/// one word so that one load tells both (two separate counters let a check read one
/// before and one after a `retire_all`, and take a retired connection for a current
/// one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64);

impl Epoch {
    /// The epoch of a new pool.
    pub(crate) const START: Epoch = Epoch(0);

    /// The word kept in `Shared::epoch`.
    pub(crate) fn word(self) -> u64 {
        self.0
    }

    fn retires(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn resizes(self) -> u32 {
        self.0 as u32
    }

    fn of(retires: u32, resizes: u32) -> Epoch {
        Epoch(u64::from(retires) << 32 | u64::from(resizes))
    }

    /// After one more `retire_all`.
    fn retired(self) -> Epoch {
        Epoch::of(self.retires().wrapping_add(1), self.resizes())
    }

    /// After one more resize.
    fn resized(self) -> Epoch {
        Epoch::of(self.retires(), self.resizes().wrapping_add(1))
    }

    /// After a pause or a resume: as after a resize, every connection is rechecked
    /// (module `pause`).
    pub(crate) fn paused(self) -> Epoch {
        self.resized()
    }

    /// Whether a connection of this epoch was retired by a `retire_all` that `now`
    /// counts.
    pub(crate) fn is_retired_at(self, now: Epoch) -> bool {
        self.retires() != now.retires()
    }
}

/// What [`Pool::retain`](crate::Pool::retain) shows of an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's id (as in events and logs).
    pub id: u64,
    /// How long ago it was opened.
    pub age: Duration,
    /// How long it has been idle (since it was last returned or opened).
    pub idle: Duration,
}

/// An idle connection as seen by `idle_connections`: where, which, and since when.
pub(crate) struct IdleConnection {
    slot: usize,
    id: u64,
    created_ms: u64,
    pub(crate) last_used_ms: u64,
}

/// What [`Shared::recheck`] decided.
pub(crate) enum Recheck {
    /// Keep and lend it.
    Keep,
    /// Close it.
    Close(CloseReason),
    /// The pool is paused: keep it, but do not lend it.
    Paused,
}

impl<M: ManageConnection> Shared<M> {
    /// The current `min_idle`.
    #[inline]
    pub(crate) fn min_idle(&self) -> u32 {
        self.config.min_idle.load(Ordering::Relaxed)
    }

    /// Sets `min_idle` (`None`: `max_size`), as the builder validates it, and opens
    /// what a larger value asks for at once.
    pub(crate) fn set_min_idle(&self, min_idle: Option<u32>) -> Result<(), Error> {
        {
            // Held while sizes are checked and changed, so that a `set_max_size` at
            // the same time cannot leave `min_idle` above `max_size`.
            let mut setting = self.config.min_idle_setting.lock();
            let max_size = self.max_size();
            let value = min_idle.unwrap_or(max_size);
            if value > max_size {
                return Err(Error::config(
                    "min_idle",
                    format!("must not exceed max_size ({max_size}), got {value}"),
                ));
            }
            *setting = min_idle;
            self.config.min_idle.store(value, Ordering::Relaxed);
        }
        // Idle connections may now run short.
        self.note_whether_short();
        self.fill_min_idle();
        Ok(())
    }

    /// The connections idle now. Each slot is claimed only while it is looked at, so
    /// no borrower waits for what runs on the result (user code, for `retain`).
    pub(crate) fn idle_connections(&self) -> Vec<IdleConnection> {
        let mut idle = Vec::new();
        for slot in 0..self.bag.len() {
            if let Some(ticket) = self.bag.try_reserve(slot) {
                let (id, created_ms, last_used_ms) = self.bag.with_value(&ticket, |entry| {
                    let e = entry.as_ref().expect("an idle slot holds a connection");
                    (e.id, e.created_ms, e.last_used_ms)
                });
                self.give_back(ticket);
                idle.push(IdleConnection {
                    slot,
                    id,
                    created_ms,
                    last_used_ms,
                });
            }
        }
        idle
    }

    /// Closes `idle` for `reason` if it is still idle and unused since it was looked
    /// at; whether it did.
    pub(crate) fn close_if_unchanged(&self, idle: &IdleConnection, reason: CloseReason) -> bool {
        let Some(ticket) = self.bag.try_reserve(idle.slot) else {
            return false;
        };
        let unchanged = self.bag.with_value(&ticket, |entry| {
            entry
                .as_ref()
                .is_some_and(|e| e.id == idle.id && e.last_used_ms == idle.last_used_ms)
        });
        if unchanged {
            self.close_slot(ticket, reason);
        } else {
            self.give_back(ticket);
        }
        unchanged
    }

    /// Closes every idle connection; `min_idle` is refilled with new ones.
    /// Closes the idle connections `keep` rejects. `keep` is user code: it runs with
    /// no slot claimed, and if it panics the connection is kept.
    pub(crate) fn retain(&self, keep: impl FnMut(&ConnectionInfo) -> bool) -> usize {
        self.retain_idle(keep, CloseReason::Evicted)
    }

    fn retain_idle(
        &self,
        mut keep: impl FnMut(&ConnectionInfo) -> bool,
        reason: CloseReason,
    ) -> usize {
        let now = clock::tick();
        let mut closed = 0;
        for idle in self.idle_connections() {
            let info = ConnectionInfo {
                id: idle.id,
                age: Duration::from_millis(now.saturating_sub(idle.created_ms)),
                idle: Duration::from_millis(now.saturating_sub(idle.last_used_ms)),
            };
            let kept = self.hook("Pool::retain's predicate", || keep(&info));
            if kept == Some(false) && self.close_if_unchanged(&idle, reason) {
                closed += 1;
            }
        }
        self.fill_min_idle();
        closed
    }

    /// Retires every connection open now: the idle ones at once, the borrowed ones
    /// when they come back. Connections opened from now on are not affected.
    pub(crate) fn retire_all(&self) -> usize {
        self.bump_epoch(Epoch::retired);
        self.retain_idle(|_| false, CloseReason::Retired)
    }

    pub(crate) fn bump_epoch(&self, next: fn(Epoch) -> Epoch) {
        let _ = self
            .epoch
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(next(Epoch(e)).0)
            });
    }

    /// The pool's epoch now.
    #[inline]
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Whether a connection of `epoch` must be looked at again (`recheck`).
    #[inline]
    pub(crate) fn stale(&self, epoch: Epoch) -> bool {
        epoch.0 != self.epoch.load(Ordering::Relaxed)
    }

    /// What to do with the connection in slot `index` after a `retire_all`, a resize
    /// or a pause: close it, keep it (and it is current again), or, while the pool is
    /// paused, keep it without lending it.
    #[cold]
    pub(crate) fn recheck(
        &self,
        entry: &mut super::PoolEntry<M::Connection>,
        index: usize,
    ) -> Recheck {
        // One load: the retire count and the limit's resize count of the same moment.
        // The limit is stored before the resize count (`set_max_size`), so an epoch
        // that counts a resize comes with its limit; and the pause flags before a
        // pause's count (module `pause`).
        let now = self.epoch();
        if entry.epoch.is_retired_at(now) {
            return Recheck::Close(CloseReason::Retired);
        }
        if index >= self.bag.limit() {
            return Recheck::Close(CloseReason::Evicted);
        }
        if self.is_paused() {
            // Stays stale, so it is rechecked again once the pool resumes.
            return match self.paused_close() {
                Some(reason) => Recheck::Close(reason),
                None => Recheck::Paused,
            };
        }
        entry.epoch = now;
        Recheck::Keep
    }

    /// The current `max_size`.
    #[inline]
    pub(crate) fn max_size(&self) -> u32 {
        u32::try_from(self.bag.limit()).unwrap_or(u32::MAX)
    }

    /// Resizes the pool, as the builder validates `max_size` (and against `min_idle`).
    /// Growing opens what waiters and `min_idle` ask for at once; shrinking closes the
    /// idle connections beyond the new size now and the borrowed ones on return.
    pub(crate) fn set_max_size(&self, max_size: u32) -> Result<(), Error> {
        if max_size == 0 || max_size > crate::engine::config::MAX_POOL_SIZE {
            return Err(Error::config(
                "max_size",
                format!(
                    "must be between 1 and {}, got {max_size}",
                    crate::engine::config::MAX_POOL_SIZE
                ),
            ));
        }
        let size = max_size as usize;
        {
            // Held while sizes are checked and changed (see `set_min_idle`).
            let setting = self.config.min_idle_setting.lock();
            if let Some(min_idle) = *setting
                && min_idle > max_size
            {
                return Err(Error::config(
                    "max_size",
                    format!(
                        "must not be below min_idle ({min_idle}), got {max_size}; lower min_idle first"
                    ),
                ));
            }
            self.bag.set_limit(size);
            self.config
                .min_idle
                .store(setting.unwrap_or(max_size), Ordering::Relaxed);
            // After the limit: a borrow that sees this epoch sees the limit too, and
            // closes a connection beyond it (`recheck`).
            self.bump_epoch(Epoch::resized);
        }
        // Connections beyond the new size go: idle ones now, the others on return.
        for i in size..self.bag.len() {
            if let Some(ticket) = self.bag.try_reserve(i) {
                self.close_slot(ticket, CloseReason::Evicted);
            }
        }
        self.open_for_waiters();
        self.note_whether_short();
        self.fill_min_idle();
        Ok(())
    }
}
