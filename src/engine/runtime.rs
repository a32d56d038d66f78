//! Changes at runtime: `min_idle`, evicting idle connections, retiring every
//! connection (credential rotation, a new primary), and keeping only the connections a
//! predicate accepts.
//!
//! None of it touches the borrow path beyond what it already reads: the one addition
//! is that a return compares the connection's generation with the pool's (a load of
//! a field written only by `retire_all`) to close connections opened before the last
//! `retire_all`.

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

impl<M: ManageConnection> Shared<M> {
    /// The current `min_idle`.
    #[inline]
    pub(crate) fn min_idle(&self) -> u32 {
        self.config.min_idle.load(Ordering::Relaxed)
    }

    /// Sets `min_idle` (`None`: `max_size`), as the builder validates it, and opens
    /// what a larger value asks for at once.
    pub(crate) fn set_min_idle(&self, min_idle: Option<u32>) -> Result<(), Error> {
        let value = min_idle.unwrap_or(self.config.max_size);
        if value > self.config.max_size {
            return Err(Error::config(
                "min_idle",
                format!(
                    "must not exceed max_size ({}), got {value}",
                    self.config.max_size
                ),
            ));
        }
        *self.config.min_idle_setting.lock() = min_idle;
        self.config.min_idle.store(value, Ordering::Relaxed);
        // Idle connections may now run short.
        self.note_whether_short();
        self.fill_min_idle();
        Ok(())
    }

    /// The connections idle now, as `(slot, info)`. Each slot is claimed only while it
    /// is looked at, so no borrower waits for user code that runs on the result.
    fn idle_connections(&self) -> Vec<(usize, ConnectionInfo)> {
        let now = clock::tick();
        let mut idle = Vec::new();
        for i in 0..self.bag.len() {
            if let Some(ticket) = self.bag.try_reserve(i) {
                let info = self.bag.with_value(&ticket, |entry| {
                    let entry = entry.as_ref().expect("an idle slot holds a connection");
                    ConnectionInfo {
                        id: entry.id,
                        age: Duration::from_millis(now.saturating_sub(entry.created_ms)),
                        idle: Duration::from_millis(now.saturating_sub(entry.last_used_ms)),
                    }
                });
                self.give_back(ticket);
                idle.push((i, info));
            }
        }
        idle
    }

    /// Closes the connection `id` in slot `i` for `reason` if it is still there and
    /// idle; whether it did.
    fn close_if_idle(&self, i: usize, id: u64, reason: CloseReason) -> bool {
        let Some(ticket) = self.bag.try_reserve(i) else {
            return false;
        };
        let same = self
            .bag
            .with_value(&ticket, |entry| entry.as_ref().is_some_and(|e| e.id == id));
        if same {
            self.close_slot(ticket, reason);
        } else {
            self.give_back(ticket);
        }
        same
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
        let mut closed = 0;
        for (i, info) in self.idle_connections() {
            let kept = self.hook("Pool::retain's predicate", || keep(&info));
            if kept == Some(false) && self.close_if_idle(i, info.id, reason) {
                closed += 1;
            }
        }
        self.fill_min_idle();
        closed
    }

    /// Retires every connection open now: the idle ones at once, the borrowed ones
    /// when they come back. Connections opened from now on are not affected.
    pub(crate) fn retire_all(&self) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.retain_idle(|_| false, CloseReason::Retired)
    }

    /// Whether a connection of `generation` was opened before the last `retire_all`.
    #[inline]
    pub(crate) fn retired(&self, generation: u64) -> bool {
        generation != self.generation.load(Ordering::Relaxed)
    }
}
