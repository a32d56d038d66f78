//! Many threads on few connections: each pool runs the same loop on every thread for a
//! fixed time, and the outcome is the time per operation of the whole group (the
//! inverse of its throughput) and the distribution of the time spent waiting in
//! `get()`. Shared by `benches/roundtrip.rs` (a simulated round trip) and
//! `benches/backends.rs` (real servers).
//!
//! Runs of one shape alternate which pool goes first from round to round, and every
//! table gives each row as a ratio to r2d2's in the same run.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How many threads share how many connections.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub threads: usize,
    pub connections: u32,
}

/// The shapes of the issue: 32 threads on 8 connections and 64 on 16.
pub const SHAPES: [Shape; 2] = [
    Shape {
        threads: 32,
        connections: 8,
    },
    Shape {
        threads: 64,
        connections: 16,
    },
];

/// What one pool did in one run.
pub struct Outcome {
    pub name: String,
    pub ops: u64,
    pub elapsed: Duration,
    /// Time in `get()` (or in taking the connection, for the rows without a pool), ns.
    pub waits: Histogram<u64>,
    /// The worker threads' context switches and CPU time over the whole run.
    pub usage: Usage,
}

/// What threads cost the machine: context switches (voluntary and not) and CPU time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub switches: u64,
    pub cpu: Duration,
}

impl Usage {
    /// The calling thread's usage so far.
    fn this_thread() -> Usage {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `rusage` is plain data, filled by the call.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: a valid pointer to a `rusage`, for the calling thread.
            if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0 {
                let time = |t: libc::timeval| {
                    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
                };
                return Usage {
                    switches: (usage.ru_nvcsw + usage.ru_nivcsw) as u64,
                    cpu: time(usage.ru_utime) + time(usage.ru_stime),
                };
            }
        }
        Usage::default()
    }

    fn add(self, other: Usage) -> Usage {
        Usage {
            switches: self.switches + other.switches,
            cpu: self.cpu + other.cpu,
        }
    }
}

impl Outcome {
    pub fn per_op(&self) -> Duration {
        self.elapsed / u32::try_from(self.ops.max(1)).unwrap_or(u32::MAX)
    }

    /// Context switches per operation, warm-up included (an estimate: the warm-up is a
    /// tenth of the run).
    pub fn switches_per_op(&self) -> f64 {
        self.usage.switches as f64 / (self.ops.max(1) as f64 * 1.1)
    }

    /// CPU time per operation of the worker threads, warm-up included as above.
    pub fn cpu_per_op(&self) -> Duration {
        self.usage.cpu.div_f64(self.ops.max(1) as f64 * 1.1)
    }

    pub fn wait(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.waits.value_at_quantile(quantile))
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.waits.max())
    }
}

/// Runs `op` in a loop on `threads` threads: `warm_up` unrecorded, then `measure`
/// recorded. `op(thread)` does one operation and returns how long it waited for its
/// connection.
pub fn run(
    name: &str,
    threads: usize,
    warm_up: Duration,
    measure: Duration,
    op: &(impl Fn(usize) -> Duration + Sync),
) -> Outcome {
    let barrier = Barrier::new(threads + 1);
    let per_thread: Vec<(Histogram<u64>, Usage)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut waits = new_histogram();
                    barrier.wait();
                    let start = Instant::now();
                    let (record_from, stop_at) = (start + warm_up, start + warm_up + measure);
                    loop {
                        let before = Instant::now();
                        if before >= stop_at {
                            break;
                        }
                        let waited = op(t);
                        if before >= record_from {
                            waits.saturating_record(nanos(waited));
                        }
                    }
                    (waits, Usage::this_thread())
                })
            })
            .collect();
        barrier.wait();
        workers
            .into_iter()
            .map(|w| w.join().expect("benchmark thread panicked"))
            .collect()
    });
    let mut waits = new_histogram();
    let mut usage = Usage::default();
    for (thread_waits, thread_usage) in per_thread {
        waits.add(thread_waits).expect("same bounds");
        usage = usage.add(thread_usage);
    }
    Outcome {
        name: name.to_owned(),
        ops: waits.len(),
        elapsed: measure,
        waits,
        usage,
    }
}

/// `run` through a pool: `get` borrows (the time it takes is the wait), `op` runs on
/// the connection.
pub fn pool_run<G: std::ops::DerefMut>(
    name: &str,
    threads: usize,
    warm_up: Duration,
    measure: Duration,
    get: impl Fn() -> G + Sync,
    op: impl Fn(&mut G::Target) + Sync,
) -> Outcome {
    run(name, threads, warm_up, measure, &|_| {
        let before = Instant::now();
        let mut conn = get();
        let waited = before.elapsed();
        op(&mut conn);
        waited
    })
}

/// Prints one shape's rows, each with its ratios to the row named `r2d2`.
pub fn print_table(title: &str, outcomes: &[Outcome]) {
    println!("{title}");
    let r2d2 = outcomes.iter().find(|o| o.name == "r2d2");
    println!(
        "  {:<34} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10}",
        "",
        "time/op",
        "/ r2d2",
        "p50 wait",
        "p99 wait",
        "/ r2d2",
        "max wait",
        "CPU/op",
        "switch/op"
    );
    for o in outcomes {
        let (op_ratio, p99_ratio) = match r2d2 {
            Some(r) => (
                format!("{:.2}", ratio(o.per_op(), r.per_op())),
                format!("{:.2}", ratio(o.wait(0.99), r.wait(0.99))),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "  {:<34} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10.2}",
            o.name,
            format!("{:.2?}", o.per_op()),
            op_ratio,
            format!("{:.1?}", o.wait(0.5)),
            format!("{:.1?}", o.wait(0.99)),
            p99_ratio,
            format!("{:.1?}", o.max_wait()),
            format!("{:.2?}", o.cpu_per_op()),
            o.switches_per_op(),
        );
    }
}

pub fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(1e-12)
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A whole number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}

/// Connections without a pool: thread `t` uses connection `t % n`, each behind its
/// own mutex (with as many threads as connections, each thread owns one).
pub struct Direct<C> {
    conns: Vec<parking_lot::Mutex<C>>,
}

impl<C> Direct<C> {
    pub fn new(conns: impl IntoIterator<Item = C>) -> Self {
        Direct {
            conns: conns.into_iter().map(parking_lot::Mutex::new).collect(),
        }
    }

    /// Locks thread `t`'s connection, runs `f` on it, and returns how long the lock took.
    pub fn with<R>(&self, t: usize, f: impl FnOnce(&mut C) -> R) -> Duration {
        let before = Instant::now();
        let mut conn = self.conns[t % self.conns.len()].lock();
        let waited = before.elapsed();
        std::hint::black_box(f(&mut conn));
        waited
    }
}
