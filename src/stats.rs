//! Counters since the pool started, and the snapshot [`Stats`] users read.
//!
//! Nothing here is written on the fast path. Borrow counts and hold times live in each
//! slot's own cache-padded block (written by the thread that owns the slot, so no other
//! slot's line is touched)
//! and are summed when read; the counters here change only on slow paths: waiting,
//! timing out, opening and closing connections.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manager::CloseReason;

const BUCKETS: usize = 40;

/// A histogram of durations in power-of-two microsecond buckets, lock-free.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub(crate) fn record(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
        }
    }
}

/// Bucket 0 holds 0 µs, bucket `i` holds `[2^(i-1), 2^i)` µs.
fn bucket_of(micros: u64) -> usize {
    ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`.
fn bucket_upper(i: usize) -> Duration {
    if i == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(1u64 << i.min(63))
    }
}

/// A snapshot of a duration histogram with power-of-two microsecond buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: Duration,
}

impl Histogram {
    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of all samples.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The mean sample, or zero when empty.
    pub fn mean(&self) -> Duration {
        match self.count() {
            0 => Duration::ZERO,
            n => self.sum / u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the top of the bucket the
    /// quantile falls in, so at most twice the true value. Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper(i);
            }
        }
        bucket_upper(self.counts.len() - 1)
    }

    /// The buckets as `(upper bound, count)` pairs, for exporters.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &count)| (bucket_upper(i), count))
    }

    /// The samples recorded after `earlier`, an older snapshot of the same histogram
    /// (for exporters that publish per interval). Buckets that shrank count as empty.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let counts = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
            .collect();
        Histogram {
            counts,
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    pub(crate) fn add_zeros(&mut self, n: u64) {
        if let Some(first) = self.counts.first_mut() {
            *first += n;
        }
    }
}

/// The pool's slow-path counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) waits: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) closed: [AtomicU64; CloseReason::ALL.len()],
    pub(crate) leaks: AtomicU64,
    pub(crate) validation_failures: AtomicU64,
    pub(crate) hook_panics: AtomicU64,
    pub(crate) wait_time: AtomicHistogram,
    pub(crate) connect_time: AtomicHistogram,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many connections were closed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClosedCounts {
    counts: [u64; CloseReason::ALL.len()],
}

impl ClosedCounts {
    /// Closed for `reason`.
    pub fn get(&self, reason: CloseReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Closed for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(reason, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// Counters since the pool started; see [`Pool::stats`](crate::Pool::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Successful borrows.
    pub borrows: u64,
    /// Borrows that had to wait (the rest were served at once).
    pub waits: u64,
    /// Borrows that timed out.
    pub timeouts: u64,
    /// Borrows refused at once because `max_waiters` threads were waiting.
    pub rejected: u64,
    /// Borrows that failed at once because the backend was down (the circuit breaker
    /// was open and no connection was open).
    pub unavailable: u64,
    /// Connections opened.
    pub connections_created: u64,
    /// Failed attempts to open a connection.
    pub connect_failures: u64,
    /// Connections that failed `is_valid` on borrow or return.
    pub validation_failures: u64,
    /// Connections closed, by reason.
    pub closed: ClosedCounts,
    /// Connections reported as leaked.
    pub leaks_reported: u64,
    /// Calls into user code (manager, customizer, event handler) that panicked. The
    /// pool caught each, treated the call as failed and went on.
    pub hook_panics: u64,
    /// How long borrows waited (the immediate ones count as zero).
    pub wait_time: Histogram,
    /// How long opening a connection took.
    pub connect_time: Histogram,
    /// Total time connections were held, at millisecond resolution.
    pub hold_time_total: Duration,
}

impl Counters {
    pub(crate) fn snapshot(&self, borrows: u64, hold_ms: u64) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let waits = load(&self.waits);
        let mut wait_time = self.wait_time.snapshot();
        wait_time.add_zeros(borrows.saturating_sub(wait_time.count()));
        let mut closed = ClosedCounts::default();
        for (count, counter) in closed.counts.iter_mut().zip(&self.closed) {
            *count = load(counter);
        }
        Stats {
            borrows,
            waits,
            timeouts: load(&self.timeouts),
            rejected: load(&self.rejected),
            unavailable: load(&self.unavailable),
            connections_created: load(&self.created),
            connect_failures: load(&self.connect_failures),
            validation_failures: load(&self.validation_failures),
            closed,
            leaks_reported: load(&self.leaks),
            hook_panics: load(&self.hook_panics),
            wait_time,
            connect_time: self.connect_time.snapshot(),
            hold_time_total: Duration::from_millis(hold_ms),
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "borrows {} (waited {}, timed out {}, rejected {}), wait p50 <= {:?} p99 <= {:?}, \
             connections opened {} (failed {}), closed {}",
            self.borrows,
            self.waits,
            self.timeouts,
            self.rejected,
            self.wait_time.quantile(0.5),
            self.wait_time.quantile(0.99),
            self.connections_created,
            self.connect_failures,
            self.closed.total(),
        )?;
        for (reason, count) in self.closed.iter().filter(|(_, c)| *c > 0) {
            write!(f, " [{reason}: {count}]")?;
        }
        write!(f, ", leaks reported {}", self.leaks_reported)?;
        if self.hook_panics > 0 {
            write!(f, ", hook panics {}", self.hook_panics)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(2), 2);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(1024), 11);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_bound_the_samples() {
        let h = AtomicHistogram::default();
        for micros in [0, 10, 100, 1000, 10_000] {
            h.record(Duration::from_micros(micros));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum(), Duration::from_micros(11_110));
        assert_eq!(s.quantile(0.0), Duration::ZERO);
        assert_eq!(s.quantile(0.2), Duration::ZERO);
        // 100 µs is in [64, 128).
        assert_eq!(s.quantile(0.6), Duration::from_micros(128));
        // 10 ms is in [8192, 16384) µs.
        assert_eq!(s.quantile(1.0), Duration::from_micros(16_384));
        assert!(Histogram::default().quantile(0.5).is_zero());
    }
}
