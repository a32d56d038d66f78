//! What happens to a connection on its way back or out: the reset ("fake close"), the
//! checks, reporting errors, and closing.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::slot::{Checkout, PoolEntry};
use crate::bag::Ticket;
use crate::clock;
use crate::error::{Chain, ErrorMessage, SharedError};
use crate::event::ReleaseEvent;
use crate::manager::{CloseReason, ErrorOrigin, ManageConnection, ResetAction};
use crate::stats::Counters;
use crate::sync::{Ordering, fence};
use crate::trace;

impl<M: ManageConnection> Shared<M> {
    /// The fake close and the optional check on return; `Some` if the connection
    /// must be closed.
    pub(super) fn recycle(&self, entry: &mut PoolEntry<M::Connection>) -> Option<CloseReason> {
        self.recycle_with(entry, self.config.reset_on_return)
    }

    /// `recycle` with the reset `action`.
    fn recycle_with(
        &self,
        entry: &mut PoolEntry<M::Connection>,
        action: ResetAction,
    ) -> Option<CloseReason> {
        let id = entry.id;
        if action != ResetAction::Keep {
            let _span =
                trace::span!("reset", pool = %self.config.name, conn_id = id, action = ?action)
                    .entered();
            let failed = self.reset_step("ManageConnection::reset", id, || {
                self.manager.reset(&mut entry.conn, action)
            });
            if failed.is_some() {
                return failed;
            }
            // A session reset wipes what `on_acquire` set up (`SET`s, prepared
            // statements): set it up again, as on a new connection.
            if action == ResetAction::Session
                && let Some(customizer) = &self.config.customizer
            {
                let failed = self.reset_step("CustomizeConnection::on_acquire", id, || {
                    customizer.on_acquire(&mut entry.conn)
                });
                if failed.is_some() {
                    return failed;
                }
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
            if !self.check(&mut entry.conn, entry.id) {
                return Some(CloseReason::Broken);
            }
            entry.last_checked_ms = clock::now_ms();
        }
        None
    }

    /// Whether a connection returned by a panicking borrower can be kept. It may be
    /// anywhere: mid-transaction, or with a reply half read if the panic came from a
    /// callback inside the driver. So it is kept only if the manager can reset it and,
    /// in this order, `has_broken` says no, the check passes within the validation
    /// timeout (the server answers and the driver is in step with it, so a hung server
    /// holds the unwinding thread no longer than that), the rollback (the session reset
    /// where that is the pool's reset, never a commit) succeeds, and the customizer's
    /// `on_check_in` and the optional check on return pass, as on any return.
    pub(super) fn recover_after_panic(&self, entry: &mut PoolEntry<M::Connection>) -> bool {
        let can_reset = self.hook("ManageConnection::can_reset", || self.manager.can_reset());
        if can_reset != Some(true) || self.has_broken(&mut entry.conn) {
            return false;
        }
        if !self.check(&mut entry.conn, entry.id) {
            return false;
        }
        entry.last_checked_ms = clock::now_ms();
        let action = match self.config.reset_on_return {
            ResetAction::Session => ResetAction::Session,
            _ => ResetAction::Rollback,
        };
        let recovered = self.recycle_with(entry, action).is_none();
        if recovered {
            Counters::bump(&self.counters.recovered_after_panic);
        }
        recovered
    }

    /// One step of the reset on return: `Some` (close the connection) if it failed or
    /// panicked.
    pub(super) fn reset_step(
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
    pub(super) fn check(&self, conn: &mut M::Connection, id: u64) -> bool {
        self.check_within(conn, id, Duration::MAX)
    }

    /// [`check`](Self::check) bounded by `limit` as well as `validation_timeout`.
    pub(super) fn check_within(&self, conn: &mut M::Connection, id: u64, limit: Duration) -> bool {
        let valid = self.validate(conn, id, limit);
        if !valid {
            Counters::bump(&self.counters.validation_failures);
        }
        valid
    }

    /// `is_valid_within` the validation timeout, or `limit` if shorter; a failure goes
    /// to the error handler.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn validate(&self, conn: &mut M::Connection, id: u64, limit: Duration) -> bool {
        let _span = trace::span!("validate", pool = %self.config.name, conn_id = id).entered();
        let timeout = self.config.validation_timeout.min(limit);
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
    pub(super) fn report(&self, origin: ErrorOrigin, error: M::Error) -> SharedError {
        let handler = &self.config.error_handler;
        let in_place = self.hook("HandleError::handle_error_in_place", || {
            handler.handle_error_in_place(&self.config.name, origin, &error)
        });
        if in_place == Some(false) {
            let kept = Arc::new(ErrorMessage(Chain(&error).to_string()));
            self.hook("HandleError::handle_error", || handler.handle_error(error));
            kept
        } else {
            Arc::new(error)
        }
    }

    /// Takes a borrowed connection out of the pool for good and frees its slot.
    pub(crate) fn detach(&self, checkout: Checkout<M::Connection>) -> M::Connection {
        let entry = self
            .bag
            .with_value(checkout.ticket(), Option::take)
            .expect("a borrowed slot holds a connection");
        self.bag.free(checkout.into_ticket());
        self.slot_emptied();
        let conn = self.release(entry, CloseReason::Detached);
        // The freed slot may be what a waiter needs, or `min_idle` wants refilling.
        self.open_for_waiters();
        self.refill_soon();
        conn.expect("a detached connection is handed back, not closed")
    }

    /// Closes the connection in an owned slot and frees the slot. The connection is
    /// closed before the slot is freed, so the pool never has more than `max_size`.
    pub(crate) fn close_slot(&self, ticket: Ticket, reason: CloseReason) {
        if let Some(entry) = self.bag.with_value(&ticket, Option::take) {
            self.release(entry, reason);
        }
        self.free_slot(ticket);
    }

    /// `close_slot` for a connection that failed a check or a reset, on the pool's
    /// closer thread instead of the caller's: its server may be hung, and some drivers
    /// wait for the server when a connection is dropped (`postgres::Client` waits for
    /// it to end the session), which would hold a borrower past its timeout for as long
    /// as the server hangs. The slot stays taken until the connection is closed.
    pub(crate) fn close_failed(&self, ticket: Ticket, reason: CloseReason) {
        let Some(entry) = self.bag.with_value(&ticket, Option::take) else {
            self.free_slot(ticket);
            return;
        };
        self.note_release(&entry, reason);
        let (weak, conn) = (self.weak.clone(), self.conn_of(entry));
        self.closer.run(move || match weak.upgrade() {
            Some(pool) => {
                pool.close_connection(conn);
                pool.free_slot(ticket);
            }
            None => {
                let _ = crate::hook::catch("Connection::drop", || drop(conn));
                drop(ticket);
            }
        });
    }

    /// Frees an owned, emptied slot, and opens a connection in it if a waiter or
    /// `min_idle` needs one.
    pub(super) fn free_slot(&self, ticket: Ticket) {
        self.bag.free(ticket);
        // A full fence (`free`'s own barrier is light, paired only with the waiters'):
        // a creator that counted itself in `pending` and found no empty slot lowers
        // `pending`, fences and looks again (`start_connect`); so either it sees this
        // slot, or `open_for_waiters` below sees `pending` without it.
        fence(Ordering::SeqCst);
        self.slot_emptied();
        self.open_for_waiters();
        self.refill_soon();
    }

    /// Counts and reports a connection leaving the pool, and closes it, unless it is
    /// being detached: then it is handed back.
    pub(crate) fn release(
        &self,
        entry: PoolEntry<M::Connection>,
        reason: CloseReason,
    ) -> Option<M::Connection> {
        self.note_release(&entry, reason);
        let conn = self.conn_of(entry);
        if reason == CloseReason::Detached {
            return Some(conn);
        }
        self.close_connection(conn);
        None
    }

    /// The connection of an entry leaving the pool. The user's values in its
    /// extensions are dropped here, as a hook: a `Drop` of theirs that panics must not
    /// unwind through the caller, which still owns the slot and would never free it.
    fn conn_of(&self, entry: PoolEntry<M::Connection>) -> M::Connection {
        let PoolEntry {
            conn, extensions, ..
        } = entry;
        self.hook("Extensions::drop", || drop(extensions));
        conn
    }

    /// Counts, logs and reports (`handle_release`) a connection leaving the pool.
    fn note_release(&self, entry: &PoolEntry<M::Connection>, reason: CloseReason) {
        Counters::bump(&self.counters.closed[reason.index()]);
        trace::event!(
            pool = %self.config.name,
            conn_id = entry.id,
            reason = reason.as_str(),
            "connection closed"
        );
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
    }

    /// Closes a connection: through `on_release` if there is a customizer, else by
    /// dropping it. A panic in either is caught like any hook's.
    pub(super) fn close_connection(&self, conn: M::Connection) {
        if self.forked() {
            // The parent's session: closing it here would end it there (`fork`).
            std::mem::forget(conn);
            return;
        }
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
}
