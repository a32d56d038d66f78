//! Wait times under contention: 32 threads share 4 connections. Each thread loops:
//! time `get()`, hold the connection for 100 µs, drop it. stickypool and r2d2 run in
//! the same process one after the other, and the output gives each pool's throughput
//! and the p50/p99/p99.9/max of the time spent in `get()`, and the ratios.
//!
//! The hold is `thread::sleep(100 µs)`: the holder is descheduled while it holds the
//! connection, as a thread waiting on the database is, which is the realistic case for
//! a blocking service (and lets 32 threads share 2 cores). Linux timer slack makes the
//! actual sleep longer than 100 µs; the output shows the measured mean hold, the
//! throughput bound it implies (connections / hold), and how long each connection sat
//! unused between two borrows: the cost of passing it from one thread to the next,
//! which is where the pools' throughputs differ.
//!
//! With every connection always wanted, the mean wait is set by the throughput (32
//! threads cycle through 4 connections), whatever the pool does; what a pool decides is
//! how the waiting is shared out: first come, first served (stickypool) or whoever asks
//! at the right moment (r2d2, where a thread giving a connection back takes it again at
//! once, so the median wait is near zero and the tail is long).
//!
//! Settings (environment):
//! * `FAIRNESS_SECS`: measured seconds per pool (default 3), after a warm-up of a
//!   tenth of that which is not recorded;
//! * `FAIRNESS_ROUNDS`: how many times to measure each pool (default 1); rounds
//!   alternate which pool goes first.
//!
//! Run with `cargo bench --bench fairness`.

mod common;
// For its histogram and environment helpers; the contended runner is not used here.
#[allow(dead_code)]
#[path = "common/contended.rs"]
mod contended;

use std::ops::DerefMut;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use common::{Conn, NoopManager, r2d2_pool, stickypool_pool};
use contended::{env_u64, nanos, new_histogram};

const THREADS: usize = 32;
const CONNECTIONS: u32 = 4;
const HOLD: Duration = Duration::from_micros(100);

/// What one pool did in one round.
struct Outcome {
    name: &'static str,
    /// Borrows started in the measured window (the last ones may end after it).
    ops: u64,
    /// The measured window.
    elapsed: Duration,
    /// Time in `get()`, nanoseconds.
    waits: Histogram<u64>,
    /// Total time connections were held (the sleeps), to derive the mean hold.
    held: Duration,
}

impl Outcome {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn mean_hold(&self) -> Duration {
        self.held / u32::try_from(self.ops.max(1)).unwrap_or(u32::MAX)
    }

    /// How long each connection sat unused between two borrows, on average: the time
    /// per borrow per connection less the hold. With every connection always wanted,
    /// this is the latency of passing a connection from one thread to the next.
    fn idle_gap(&self) -> Duration {
        let per_borrow = f64::from(CONNECTIONS) / self.ops_per_sec();
        Duration::from_secs_f64((per_borrow - self.mean_hold().as_secs_f64()).max(0.0))
    }

    fn wait(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.waits.value_at_quantile(quantile))
    }

    fn mean_wait(&self) -> Duration {
        Duration::from_nanos(self.waits.mean() as u64)
    }

    fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.waits.max())
    }
}

/// Runs the loop on `THREADS` threads for `warm_up` unrecorded then `measure`
/// recorded. `borrow` does one `get()`, and returns a guard that gives the connection
/// back when dropped.
fn run<G: DerefMut<Target = Conn>>(
    name: &'static str,
    warm_up: Duration,
    measure: Duration,
    borrow: impl Fn() -> G + Sync,
) -> Outcome {
    let barrier = Barrier::new(THREADS + 1);
    let per_thread: Vec<_> = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, borrow) = (&barrier, &borrow);
                s.spawn(move || {
                    let mut waits = new_histogram();
                    let mut held = Duration::ZERO;
                    barrier.wait();
                    let start = Instant::now();
                    let (record_from, stop_at) = (start + warm_up, start + warm_up + measure);
                    loop {
                        let before = Instant::now();
                        if before >= stop_at {
                            break;
                        }
                        let mut conn = borrow();
                        let got = Instant::now();
                        conn.queries += 1;
                        thread::sleep(HOLD);
                        let done = Instant::now();
                        drop(conn);
                        if before >= record_from {
                            waits.saturating_record(nanos(got - before));
                            held += done - got;
                        }
                    }
                    (waits, held)
                })
            })
            .collect();
        barrier.wait();
        workers
            .into_iter()
            .map(|w| w.join().expect("fairness thread panicked"))
            .collect()
    });
    let mut waits = new_histogram();
    let mut held = Duration::ZERO;
    for (thread_waits, thread_held) in per_thread {
        waits
            .add(thread_waits)
            .expect("histograms with the same bounds");
        held += thread_held;
    }
    Outcome {
        name,
        ops: waits.len(),
        elapsed: measure,
        waits,
        held,
    }
}

fn stickypool_round(warm_up: Duration, measure: Duration) -> Outcome {
    let pool: stickypool::Pool<NoopManager> = stickypool_pool(CONNECTIONS);
    run("stickypool", warm_up, measure, || {
        pool.get().expect("stickypool get")
    })
}

fn r2d2_round(warm_up: Duration, measure: Duration) -> Outcome {
    let pool = r2d2_pool(CONNECTIONS);
    run("r2d2", warm_up, measure, || pool.get().expect("r2d2 get"))
}

fn print_outcome(o: &Outcome) {
    println!(
        "{:<11} {:>6.0} ops/s  wait mean {:>7.1?}  p50 {:>7.1?}  p99 {:>7.1?}  p99.9 {:>7.1?}  \
         max {:>7.1?}  \
         (mean hold {:.1?}, idle between borrows {:.1?}, {} ops)",
        o.name,
        o.ops_per_sec(),
        o.mean_wait(),
        o.wait(0.50),
        o.wait(0.99),
        o.wait(0.999),
        o.max_wait(),
        o.mean_hold(),
        o.idle_gap(),
        o.ops,
    );
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(1e-9)
}

fn compare(sticky: &Outcome, r2d2: &Outcome) {
    let throughput = sticky.ops_per_sec() / r2d2.ops_per_sec();
    let p99 = ratio(r2d2.wait(0.99), sticky.wait(0.99));
    let max = ratio(r2d2.max_wait(), sticky.max_wait());
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "stickypool / r2d2 throughput: {throughput:.2}x (target >= 1: {})",
        verdict(throughput >= 1.0)
    );
    println!(
        "r2d2 / stickypool wait: p50 {:.2}x, p99 {p99:.2}x (target >= 2: {}), p99.9 {:.2}x, \
         max {max:.2}x (target >= 2: {})",
        ratio(r2d2.wait(0.5), sticky.wait(0.5)),
        verdict(p99 >= 2.0),
        ratio(r2d2.wait(0.999), sticky.wait(0.999)),
        verdict(max >= 2.0),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let secs = env_u64("FAIRNESS_SECS", 3);
    let rounds = env_u64("FAIRNESS_ROUNDS", 1).max(1);
    let measure = Duration::from_secs(secs.max(1));
    let warm_up = measure / 10;
    let bound = f64::from(CONNECTIONS) / HOLD.as_secs_f64();
    println!(
        "fairness: {THREADS} threads, {CONNECTIONS} connections, hold = thread::sleep({HOLD:?}) \
         (I/O-like: the holder sleeps, as when waiting on the database), {secs} s per pool \
         after {warm_up:?} warm-up; bound at a 100 µs hold: {bound:.0} ops/s"
    );
    for round in 0..rounds {
        if rounds > 1 {
            println!("-- round {}", round + 1);
        }
        let (sticky, r2d2) = if round % 2 == 0 {
            let sticky = stickypool_round(warm_up, measure);
            (sticky, r2d2_round(warm_up, measure))
        } else {
            let r2d2 = r2d2_round(warm_up, measure);
            (stickypool_round(warm_up, measure), r2d2)
        };
        for outcome in [&sticky, &r2d2] {
            print_outcome(outcome);
        }
        let real_bound = f64::from(CONNECTIONS) / sticky.mean_hold().as_secs_f64();
        println!("bound at the measured stickypool hold: {real_bound:.0} ops/s");
        compare(&sticky, &r2d2);
    }
}
