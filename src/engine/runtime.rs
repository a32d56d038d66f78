//! Changes at runtime: `min_idle`, evicting idle connections, retiring every
//! connection (credential rotation, a new primary), and keeping only the connections a
//! predicate accepts.
//!
//! None of it touches the borrow path beyond what it already reads: the one addition
//! is that a return compares the connection's epoch with the pool's (a load of a field
//! written only by `retire_all` and `set_max_size`). Only when they differ does it look
//! further: retired by `retire_all`, or in a slot beyond a smaller `max_size`, it is
//! closed; otherwise it takes the current epoch and the next return is fast again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::clock;
use crate::error::Error;
use crate::manager::{CloseReason, ManageConnection};

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

impl<M: ManageConnection> Shared<M> {
    /// The current `min_idle`.
    #[inline]
    pub(crate) fn min_idle(&self) -> u32 {
        self.config.min_idle.load(Ordering::Relaxed)
    }

    /// Sets `min_idle` (`None`: `max_size`), as the builder validates it, and opens
    /// what a larger value asks for at once.
    pub(crate) fn set_min_idle(&self, min_idle: Option<u32>) -> Result<(), Error> {
        let max_size = self.max_size();
        let value = min_idle.unwrap_or(max_size);
        if value > max_size {
            return Err(Error::config(
                "min_idle",
                format!("must not exceed max_size ({max_size}), got {value}"),
            ));
        }
        *self.config.min_idle_setting.lock() = min_idle;
        self.config.min_idle.store(value, Ordering::Relaxed);
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
    pub(crate) fn evict_idle(&self) -> usize {
        self.retain_idle(|_| false, CloseReason::Evicted)
    }

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
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.retired_before.fetch_max(now, Ordering::AcqRel);
        self.retain_idle(|_| false, CloseReason::Retired)
    }

    /// Whether a connection of `epoch` must be looked at again on return.
    #[inline]
    pub(crate) fn stale(&self, epoch: u64) -> bool {
        epoch != self.epoch.load(Ordering::Relaxed)
    }

    /// Why a returned connection in slot `index` must close, after a `retire_all` or a
    /// resize; `None` (and the entry is current again) if it may stay.
    #[cold]
    pub(crate) fn recheck(
        &self,
        entry: &mut super::PoolEntry<M::Connection>,
        index: usize,
    ) -> Option<CloseReason> {
        if entry.epoch < self.retired_before.load(Ordering::Acquire) {
            return Some(CloseReason::Retired);
        }
        if index >= self.bag.limit() {
            return Some(CloseReason::Evicted);
        }
        entry.epoch = self.epoch.load(Ordering::Acquire);
        None
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
        let setting = *self.config.min_idle_setting.lock();
        if let Some(min_idle) = setting
            && min_idle > max_size
        {
            return Err(Error::config(
                "max_size",
                format!(
                    "must not be below min_idle ({min_idle}), got {max_size}; lower min_idle first"
                ),
            ));
        }
        let size = max_size as usize;
        self.bag.set_limit(size);
        self.config
            .min_idle
            .store(setting.unwrap_or(max_size), Ordering::Relaxed);
        // Connections beyond the new size go: idle ones now, the others on return.
        self.epoch.fetch_add(1, Ordering::AcqRel);
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
