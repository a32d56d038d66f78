//! The circuit breaker: while the backend is known to be down, borrowers learn it at
//! once instead of waiting out `connection_timeout`, and the pool probes the backend
//! with one connect at a time instead of retrying every connection in parallel.
//!
//! | state | when | `get()` with no open connection | connects |
//! |---|---|---|---|
//! | closed | normally | waits for a connection | on demand, each retried with backoff |
//! | open | [`OPEN_AFTER`] connects in a row failed | fails at once: `Error::Unavailable` | one probe at a time, backoff with jitter up to [`PROBE_CAP`] |
//!
//! A pool that has been healthy gives an outage a grace period (`circuit_breaker`'s
//! `Some(grace)`, 1 s by default) before borrows fail at once: a server restart or a
//! short network blip is waited out, and the borrowers that waited through it are
//! served when it ends. A pool that has never connected fails at once, so a service
//! started against a wrong address learns it in milliseconds.
//!
//! One successful connect closes it; the pool then refills `min_idle`. A borrow still
//! waits while the pool has open connections (in use ones come back), so the breaker
//! only speaks when waiting could not help. Logging follows the state: one line when it
//! opens, one when it closes, and a summary every [`SUMMARY_EVERY`] while it stays open.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Consecutive failed connects that open the breaker.
pub(crate) const OPEN_AFTER: u32 = 3;

/// The longest wait between two probes while the breaker is open: a backend that comes
/// back is noticed within this.
pub(crate) const PROBE_CAP: Duration = Duration::from_secs(1);

/// How often a breaker that stays open says so.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

const CLOSED: u64 = u64::MAX;

/// The breaker's state; all times are the pool clock's milliseconds.
#[derive(Debug)]
pub(crate) struct Breaker {
    enabled: bool,
    /// Failed connects since the last success.
    failures: AtomicU32,
    /// When it opened, or `CLOSED`.
    opened_at_ms: AtomicU64,
    /// A probe is scheduled or running.
    probing: AtomicBool,
    /// A connect has succeeded at some point: outages get the grace period.
    ever_connected: AtomicBool,
    /// How long an outage of a pool that has been healthy lasts before borrows fail
    /// at once, in milliseconds.
    grace_ms: u64,
    last_summary_ms: AtomicU64,
}

impl Breaker {
    /// A closed breaker that lets borrows fail at once after `grace` (`None`: a
    /// disabled one, which never opens).
    pub(crate) fn new(grace: Option<Duration>) -> Breaker {
        Breaker {
            enabled: grace.is_some(),
            failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(CLOSED),
            probing: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            grace_ms: grace.map_or(0, crate::clock::millis),
            last_summary_ms: AtomicU64::new(0),
        }
    }

    /// How long it has been open, or `None` while closed.
    pub(crate) fn open_for(&self, now_ms: u64) -> Option<Duration> {
        match self.opened_at_ms.load(Ordering::Acquire) {
            CLOSED => None,
            at => Some(Duration::from_millis(now_ms.saturating_sub(at))),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.opened_at_ms.load(Ordering::Acquire) != CLOSED
    }

    /// Whether borrows should fail at once: open, and either the pool never connected
    /// or the outage has outlasted the grace period.
    pub(crate) fn fails_fast(&self, now_ms: u64) -> bool {
        match self.opened_at_ms.load(Ordering::Acquire) {
            CLOSED => false,
            at => {
                !self.ever_connected.load(Ordering::Relaxed)
                    || now_ms.saturating_sub(at) >= self.grace_ms
            }
        }
    }

    /// Whether the backend is not known to be reachable: no connect has succeeded yet,
    /// or the last one failed. Such a pool's connects are paced by `gate`.
    pub(crate) fn cold(&self) -> bool {
        !self.ever_connected() || self.failures.load(Ordering::Acquire) > 0
    }

    /// Whether a connect has ever succeeded.
    pub(crate) fn ever_connected(&self) -> bool {
        self.ever_connected.load(Ordering::Relaxed)
    }

    /// Whether the breaker is open within the grace period, while borrows still wait.
    pub(crate) fn in_grace(&self, now_ms: u64) -> bool {
        self.is_open() && !self.fails_fast(now_ms)
    }

    /// Records a successful connect; if that closes the breaker, how long it was open.
    pub(crate) fn succeeded(&self, now_ms: u64) -> Option<Duration> {
        if !self.ever_connected.load(Ordering::Relaxed) {
            self.ever_connected.store(true, Ordering::Relaxed);
        }
        self.failures.store(0, Ordering::Release);
        let was = self.opened_at_ms.swap(CLOSED, Ordering::AcqRel);
        self.probing.store(false, Ordering::Release);
        (was != CLOSED).then(|| Duration::from_millis(now_ms.saturating_sub(was)))
    }

    /// Records a failed connect; true if this one opened the breaker.
    pub(crate) fn failed(&self, now_ms: u64) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if !self.enabled || failures < OPEN_AFTER {
            return false;
        }
        let opened = self
            .opened_at_ms
            .compare_exchange(CLOSED, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if opened {
            self.last_summary_ms.store(now_ms, Ordering::Release);
        }
        opened
    }

    /// Claims the probe: true for exactly one caller until [`end_probe`] or a success.
    ///
    /// [`end_probe`]: Breaker::end_probe
    pub(crate) fn claim_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The probe stopped without a success (the pool closed).
    pub(crate) fn end_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Whether a summary line is due (at most one caller per [`SUMMARY_EVERY`]).
    pub(crate) fn summary_due(&self, now_ms: u64) -> bool {
        let last = self.last_summary_ms.load(Ordering::Acquire);
        now_ms.saturating_sub(last) >= crate::clock::millis(SUMMARY_EVERY)
            && self
                .last_summary_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Failed connects since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_a_success() {
        let breaker = Breaker::new(GRACE);
        assert!(!breaker.failed(0));
        assert!(!breaker.failed(1));
        assert!(breaker.failed(2), "the third failure in a row opens it");
        assert!(!breaker.failed(3), "only one failure opens it");
        assert_eq!(breaker.open_for(1002), Some(Duration::from_millis(1000)));
        assert!(breaker.claim_probe());
        assert!(!breaker.claim_probe(), "one probe at a time");
        assert_eq!(breaker.succeeded(2002), Some(Duration::from_millis(2000)));
        assert!(!breaker.is_open());
        assert!(breaker.claim_probe(), "a success ends the probe");
        assert_eq!(breaker.succeeded(2003), None);
    }

    #[test]
    fn a_success_between_failures_keeps_it_closed() {
        let breaker = Breaker::new(GRACE);
        breaker.failed(0);
        breaker.failed(0);
        breaker.succeeded(0);
        assert!(!breaker.failed(0));
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let breaker = Breaker::new(None);
        for now in 0..10 {
            assert!(!breaker.failed(now));
        }
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_pool_that_connected_fails_fast_only_after_the_grace() {
        let never = Breaker::new(GRACE);
        (0..3).for_each(|now| {
            never.failed(now);
        });
        assert!(never.fails_fast(2), "never connected: at once");

        let healthy = Breaker::new(GRACE);
        healthy.succeeded(0);
        (10..13).for_each(|now| {
            healthy.failed(now);
        });
        assert!(healthy.is_open());
        assert!(healthy.in_grace(12) && !healthy.fails_fast(1011));
        assert!(healthy.fails_fast(1012) && !healthy.in_grace(1012));
        healthy.succeeded(1500);
        assert!(!healthy.fails_fast(5000), "closed");
    }

    #[test]
    fn summaries_are_spaced() {
        let breaker = Breaker::new(GRACE);
        for now in 0..3 {
            breaker.failed(now);
        }
        assert!(!breaker.summary_due(10));
        assert!(breaker.summary_due(60_002));
        assert!(!breaker.summary_due(60_003));
    }
}
