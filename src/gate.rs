//! The process-wide pace of connects to backends that are down or not reached yet.
//!
//! A fleet of pools that loses its server, or starts while it is down, would otherwise
//! retry together: 200 pools with `min_idle` 4 made 1,600 attempts within one 100 ms
//! window. Every connect of a pool that has never connected, or whose last connect
//! failed, and every connect in the process within [`FAILURE_MEMORY`] of a failed one
//! (a fleet that loses its server fails together), first takes a token here: at most
//! [`BURST`] at once, then one per [`INTERVAL`] (250 a second) for the whole process,
//! so a server coming back meets a bounded stream of attempts. While connects succeed
//! nothing comes here: the gate costs nothing to healthy pools' refills. Across
//! processes, the backoff's jitter (`engine::connect`) spreads the attempts instead.
//!
//! The rule is GCRA's ("virtual scheduling"): a theoretical time at which the next
//! attempt is due advances by [`INTERVAL`] with every attempt, and an attempt may go
//! when that time is less than [`BURST`] intervals ahead of now. An attempt that may
//! not go yet takes nothing and is told how long to wait; attempts that are abandoned
//! meanwhile (the breaker opened and they are not its probe) therefore cost nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Attempts a process may make at once after a quiet spell.
pub(crate) const BURST: u32 = 30;

/// The steady spacing of attempts: 250 a second.
pub(crate) const INTERVAL: Duration = Duration::from_millis(4);

/// How long after a failed connect anywhere in the process every connect is paced.
pub(crate) const FAILURE_MEMORY: Duration = Duration::from_secs(1);

const NEVER: u64 = u64::MAX;

/// The pace of "cold" connects (see the module documentation).
pub(crate) struct Gate {
    /// When the next attempt is due at the steady pace; `None` before the first.
    due: Mutex<Option<Instant>>,
    /// The pool clock's millisecond of the last failed connect, or `NEVER`.
    last_failure_ms: AtomicU64,
}

impl Gate {
    pub(crate) const fn new() -> Gate {
        Gate {
            due: Mutex::new(None),
            last_failure_ms: AtomicU64::new(NEVER),
        }
    }

    /// Records a failed connect at `now_ms` (the pool clock's).
    pub(crate) fn note_failure(&self, now_ms: u64) {
        self.last_failure_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether a connect failed in the process within [`FAILURE_MEMORY`] of `now_ms`.
    pub(crate) fn failing(&self, now_ms: u64) -> bool {
        match self.last_failure_ms.load(Ordering::Relaxed) {
            NEVER => false,
            at => now_ms.saturating_sub(at) < crate::clock::millis(FAILURE_MEMORY),
        }
    }

    /// Takes a token for an attempt at `now`, or says how long to wait for one.
    pub(crate) fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let tolerance = INTERVAL * (BURST - 1);
        let mut due = self.due.lock();
        let next = due.map_or(now, |at| at.max(now));
        let allowed_at = next.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        *due = Some(next + INTERVAL);
        Ok(())
    }
}

/// The gate every pool of the process shares.
pub(crate) static GATE: Gate = Gate::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_pace() {
        let gate = Gate::new();
        let start = Instant::now();
        for i in 0..BURST {
            assert!(gate.try_take(start).is_ok(), "attempt {i} of the burst");
        }
        let wait = gate.try_take(start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= INTERVAL, "{wait:?}");
        // Over a simulated second, at most the burst and 250 more go.
        let mut taken = BURST;
        let mut now = start;
        while now < start + Duration::from_secs(1) {
            now += Duration::from_millis(1);
            while gate.try_take(now).is_ok() {
                taken += 1;
            }
        }
        assert!(taken <= BURST + 251, "{taken} in a second");
        assert!(taken >= BURST + 240, "{taken}: the pace is 250 a second");
    }

    #[test]
    fn a_failure_is_remembered_for_a_second() {
        let gate = Gate::new();
        assert!(!gate.failing(5_000));
        gate.note_failure(5_000);
        assert!(gate.failing(5_999));
        assert!(!gate.failing(6_000));
    }

    #[test]
    fn a_refused_attempt_takes_nothing() {
        let gate = Gate::new();
        let start = Instant::now();
        for _ in 0..BURST {
            gate.try_take(start).unwrap();
        }
        let wait = gate.try_take(start).unwrap_err();
        assert_eq!(
            gate.try_take(start).unwrap_err(),
            wait,
            "asking again waits the same"
        );
        assert!(gate.try_take(start + wait).is_ok());
    }
}
