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

/// Each power of two of nanoseconds is split into this many buckets (HDR-style), so a
/// bucket is at most 1/32 (3.1%) wider than its lower bound.
const SUB: u64 = 32;
/// 32 exact buckets for 0..32 ns, then 32 per power of two up to 2^44 ns (about 4.9
/// hours); longer samples land in the last.
const BUCKETS: usize = (SUB as usize) * 41;

/// A histogram of durations in log-linear nanosecond buckets, lock-free.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub(crate) fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Histogram {
        Histogram {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Buckets `0..SUB` hold exactly that many ns; above, bucket `g * SUB + k` (`g >= 1`)
/// holds `[(SUB + k) << (g - 1), (SUB + k + 1) << (g - 1))` ns.
fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB {
        return nanos as usize;
    }
    let shift = u64::from(u64::BITS - 1 - nanos.leading_zeros()) - SUB.trailing_zeros() as u64;
    let bucket = (shift + 1) * SUB + ((nanos >> shift) - SUB);
    usize::try_from(bucket).map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1))
}

/// The upper bound of bucket `i` (exclusive, but exact for the first `SUB`).
fn bucket_upper(i: usize) -> Duration {
    let i = i as u64;
    if i < SUB {
        return Duration::from_nanos(i);
    }
    let (group, k) = (i / SUB, i % SUB);
    Duration::from_nanos((SUB + k + 1) << (group - 1))
}

/// A snapshot of a duration histogram: log-linear nanosecond buckets, so a quantile is
/// within about 3% of the true value.
#[derive(Clone, Default, PartialEq, Eq)]
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
    /// quantile falls in, at most about 3% above the true value. Zero when empty.
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

    /// A histogram of `returned` holds: `log2_ms[k]` of them lasted `[2^k, 2^(k+1))`
    /// ms, the rest under 1 ms, `sum_ms` in all. Each is placed at its range's middle
    /// (0.5 ms for the short ones), so the quantiles are within a factor of about 1.5.
    pub(crate) fn of_holds(returned: u64, log2_ms: &[u64], sum_ms: u64) -> Histogram {
        let mut counts = vec![0; BUCKETS];
        let mut place = |nanos: u64, count: u64| counts[bucket_of(nanos)] += count;
        let long: u64 = log2_ms.iter().sum();
        place(500_000, returned.saturating_sub(long));
        for (k, &count) in log2_ms.iter().enumerate() {
            place(3 * (1_000_000u64 << k) / 2, count);
        }
        Histogram {
            counts,
            sum: Duration::from_millis(sum_ms),
        }
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
}

/// The count, sum and a few quantiles, not the 1,312 buckets.
impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.quantile(1.0))
            .finish()
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
    pub(crate) recovered_after_panic: AtomicU64,
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
    /// Connections whose borrower panicked that the pool rolled back and kept instead
    /// of closing (see [`PooledConnection`](crate::PooledConnection)).
    pub recovered_after_panic: u64,
    /// How long the borrows that waited waited (`waits` of them; the `borrows - waits`
    /// that took an idle connection at once are not in it).
    pub wait_time: Histogram,
    /// How long opening a connection took.
    pub connect_time: Histogram,
    /// How long returned connections had been held: at millisecond resolution, by
    /// powers of two of milliseconds (holds under 1 ms together), so its quantiles are
    /// coarser than the others'.
    pub hold_time: Histogram,
    /// Total time connections were held, at millisecond resolution (`hold_time`'s sum).
    pub hold_time_total: Duration,
}

impl Counters {
    pub(crate) fn snapshot(&self, borrows: u64, hold_time: Histogram) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let waits = load(&self.waits);
        let wait_time = self.wait_time.snapshot();
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
            recovered_after_panic: load(&self.recovered_after_panic),
            wait_time,
            connect_time: self.connect_time.snapshot(),
            hold_time_total: hold_time.sum(),
            hold_time,
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "borrows {} (waited {}: p50 <= {:?}, p99 <= {:?}; timed out {}, rejected {}), \
             connections opened {} (failed {}), closed {}",
            self.borrows,
            self.waits,
            self.wait_time.quantile(0.5),
            self.wait_time.quantile(0.99),
            self.timeouts,
            self.rejected,
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
        if self.recovered_after_panic > 0 {
            write!(f, ", kept after a panic {}", self.recovered_after_panic)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_lands_in_a_bucket_within_three_percent() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(31), 31);
        assert_eq!(bucket_of(32), 32);
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut previous = 0;
        for nanos in (0..5000).chain((5000..1u64 << 40).step_by(9_999_991)) {
            let b = bucket_of(nanos);
            assert!(b >= previous, "buckets grow with the value");
            previous = b;
            let upper = bucket_upper(b).as_nanos() as u64;
            assert!(upper >= nanos, "{nanos} above its bucket's bound {upper}");
            assert!(upper - nanos <= nanos / 32 + 1, "{nanos} -> {upper}");
        }
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
        let close = |q: f64, micros: u64| {
            let got = s.quantile(q).as_nanos() as f64;
            let want = Duration::from_micros(micros).as_nanos() as f64;
            assert!(
                got >= want && got <= want * 1.032,
                "q{q}: {got} ns for {want} ns"
            );
        };
        close(0.6, 100);
        close(1.0, 10_000);
        assert!(Histogram::default().quantile(0.5).is_zero());
    }
}
