//! The cost of a borrow and return (`get` then drop) with connections that cost nothing,
//! for stickypool, r2d2 and a naive `Mutex<Vec<_>>` pool, in one run.
//!
//! Groups:
//! * `single_thread`: one thread, a pool of 8;
//! * `two_threads`: two threads borrowing in a loop from one pool of 8 (each finds a
//!   free connection: this measures what the pools share between threads);
//! * `threads32_conns8`: 32 threads on a pool of 8, splitting a fixed number of
//!   iterations. On a machine with fewer cores than threads they mostly run one after
//!   another, so this measures the uncontended path more than the waiting one.
//!
//! After criterion's groups, the **fixed-duration** rows: one thread on 8 connections,
//! then the contended ones, 32 threads on 8 connections and 64 on 16. Every thread
//! borrows and returns in a loop until a deadline, so threads are preempted while they
//! hold a connection and the others wait for it, as in a service. Each row is the wall
//! time over the operations of all threads, with its ratio to the floor and to r2d2 in
//! the same round; rounds rotate the order of the pools. `FIXED_SECS` (default 2) per
//! row, `FIXED_ROUNDS` (default 3).
//!
//! Pools:
//! * `stickypool`: idle timeout and max lifetime off;
//! * `stickypool-lifecycle`: idle timeout, max lifetime, keepalive and a 1 s reap
//!   interval on, to show the lifecycle features cost nothing on the hot path. Leak
//!   detection stays off: it captures a backtrace on every borrow by design, which is
//!   for finding leaks, not for production hot paths;
//! * `r2d2`: r2d2's defaults with the same sizing and `test_on_check_out(false)`;
//! * `naive-mutex`: a `parking_lot::Mutex<Vec<Conn>>` with a condvar, popped under the
//!   lock and pushed back on drop: the simplest pool that is correct;
//! * `floor`: a bare array of CAS slots with a thread-local hint, spinning when all
//!   are taken: no statistics, lifecycle or parking. The cost of the design itself.
//!
//! All pools use the same no-op manager and are fully connected before measuring.
//! One iteration is one `get` + drop; in the threaded groups the time reported is the
//! wall time for all threads together to do `iters` operations, so ns/op is the
//! inverse of the pool's total throughput.
//!
//! Run with `cargo bench --bench checkout`, then `scripts/bench-summary` for a table of
//! ns/op and ratios read from criterion's results (the fixed-duration rows are printed
//! by the run itself). `cargo bench --bench checkout -- fixed` runs those alone.

mod common;

use std::cell::{Cell, UnsafeCell};
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};

use common::{CONNECTION_TIMEOUT, Conn, NoopManager, r2d2_pool, stickypool_pool};

/// A pool that can be benchmarked: one borrow and return.
trait BenchPool: Sync {
    fn get_and_drop(&self);
}

impl BenchPool for stickypool::Pool<NoopManager> {
    #[inline]
    fn get_and_drop(&self) {
        let mut conn = self.get().expect("stickypool get");
        conn.queries += 1;
        black_box(&mut *conn);
    }
}

impl BenchPool for r2d2::Pool<NoopManager> {
    #[inline]
    fn get_and_drop(&self) {
        let mut conn = self.get().expect("r2d2 get");
        conn.queries += 1;
        black_box(&mut *conn);
    }
}

/// The naive pool: a vector of connections under a mutex, and a condvar for threads
/// waiting on an empty vector.
struct NaivePool {
    conns: Mutex<Vec<Conn>>,
    returned: Condvar,
}

struct NaiveGuard<'a> {
    pool: &'a NaivePool,
    conn: Option<Conn>,
}

impl NaivePool {
    fn new(size: usize) -> Self {
        NaivePool {
            conns: Mutex::new((0..size).map(|_| Conn::default()).collect()),
            returned: Condvar::new(),
        }
    }

    fn get(&self) -> NaiveGuard<'_> {
        let mut conns = self.conns.lock();
        loop {
            if let Some(conn) = conns.pop() {
                return NaiveGuard {
                    pool: self,
                    conn: Some(conn),
                };
            }
            self.returned.wait(&mut conns);
        }
    }
}

impl Drop for NaiveGuard<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.conns.lock().push(conn);
            self.pool.returned.notify_one();
        }
    }
}

impl BenchPool for NaivePool {
    #[inline]
    fn get_and_drop(&self) {
        let mut guard = self.get();
        let conn = guard.conn.as_mut().expect("a guard holds a connection");
        conn.queries += 1;
        black_box(conn);
    }
}

/// The floor: a bare array of CAS slots and a thread-local hint, and nothing else (no
/// statistics, no lifecycle, no waiting but spinning). What any pool of this design
/// costs at least; stickypool's rows are read against it.
struct FloorPool {
    slots: Box<[CachePadded<FloorSlot>]>,
}

struct FloorSlot {
    taken: AtomicBool,
    conn: UnsafeCell<Conn>,
}

// SAFETY: a slot's `conn` is reached only by the thread that won its `taken` flag
// (Acquire on the win, Release on the give-back), so no two threads touch it at once.
unsafe impl Sync for FloorPool {}

thread_local! {
    static FLOOR_HINT: Cell<usize> = const { Cell::new(0) };
}

struct FloorGuard<'a> {
    slot: &'a FloorSlot,
    index: usize,
}

impl FloorPool {
    fn new(size: usize) -> Self {
        FloorPool {
            slots: (0..size)
                .map(|_| {
                    CachePadded::new(FloorSlot {
                        taken: AtomicBool::new(false),
                        conn: UnsafeCell::new(Conn::default()),
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn try_take(&self, index: usize) -> Option<FloorGuard<'_>> {
        let slot = self.slots.get(index)?;
        slot.taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(FloorGuard { slot, index })
    }

    #[inline]
    fn get(&self) -> FloorGuard<'_> {
        if let Some(guard) = self.try_take(FLOOR_HINT.get()) {
            return guard;
        }
        loop {
            if let Some(guard) = (0..self.slots.len()).find_map(|i| self.try_take(i)) {
                return guard;
            }
            thread::yield_now();
        }
    }
}

impl Drop for FloorGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        FLOOR_HINT.set(self.index);
        self.slot.taken.store(false, Ordering::Release);
    }
}

impl BenchPool for FloorPool {
    #[inline]
    fn get_and_drop(&self) {
        let guard = self.get();
        // SAFETY: the guard's slot was won by this thread (see `FloorPool`'s `Sync`).
        let conn = unsafe { &mut *guard.slot.conn.get() };
        conn.queries += 1;
        black_box(conn);
    }
}

/// stickypool with every lifecycle setting on except leak detection.
fn stickypool_lifecycle_pool(size: u32) -> stickypool::Pool<NoopManager> {
    stickypool::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .check_on_borrow(None)
        .idle_timeout(Some(Duration::from_secs(10 * 60)))
        .max_lifetime(Some(Duration::from_secs(30 * 60)))
        .keepalive_interval(Some(Duration::from_secs(30)))
        .reap_interval(Duration::from_secs(1))
        .connection_timeout(CONNECTION_TIMEOUT)
        .build(NoopManager)
        .expect("stickypool pool")
}

/// `threads` threads do `iters` borrows between them; the wall time from the moment
/// they are released together until the last one finishes.
fn run_threads<P: BenchPool>(pool: &P, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|i| {
                let share = iters / threads as u64 + u64::from(i < iters % threads as u64);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..share {
                        pool.get_and_drop();
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("benchmark thread panicked");
        }
        start.elapsed()
    })
}

/// Benchmarks one pool in `group`: on the calling thread if `threads` is 1, else with
/// `threads` threads sharing the iterations.
fn bench_pool<P: BenchPool>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    pool: &P,
    threads: usize,
) {
    if threads == 1 {
        group.bench_function(name, |b| b.iter(|| pool.get_and_drop()));
    } else {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| run_threads(pool, threads, iters))
        });
    }
}

fn bench_group(c: &mut Criterion, name: &str, threads: usize, size: u32) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    // Each pool is built just before it is measured and dropped right after, so no
    // pool's background threads run while another is measured.
    bench_pool(&mut group, "stickypool", &stickypool_pool(size), threads);
    bench_pool(
        &mut group,
        "stickypool-lifecycle",
        &stickypool_lifecycle_pool(size),
        threads,
    );
    bench_pool(&mut group, "r2d2", &r2d2_pool(size), threads);
    bench_pool(
        &mut group,
        "naive-mutex",
        &NaivePool::new(size as usize),
        threads,
    );
    bench_pool(&mut group, "floor", &FloorPool::new(size as usize), threads);
    group.finish();
}

/// How many operations a thread does between looks at the clock's stop flag.
const BATCH: u64 = 64;

/// `threads` threads borrow and return from `pool` in a loop for `measure` (after a
/// tenth of it unrecorded); the wall time per operation of all threads together, in ns.
fn run_for<P: BenchPool>(pool: &P, threads: usize, measure: Duration) -> f64 {
    let barrier = Barrier::new(threads + 1);
    let recording = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let elapsed = thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..BATCH {
                        pool.get_and_drop();
                    }
                    if recording.load(Ordering::Relaxed) {
                        done += BATCH;
                    }
                }
                ops.fetch_add(done, Ordering::Relaxed);
            });
        }
        barrier.wait();
        thread::sleep(measure / 10);
        recording.store(true, Ordering::Relaxed);
        let start = Instant::now();
        thread::sleep(measure);
        stop.store(true, Ordering::Relaxed);
        start.elapsed()
    });
    elapsed.as_secs_f64() * 1e9 / ops.load(Ordering::Relaxed).max(1) as f64
}

/// The fixed-duration rows (see the module docs), printed as a table per
/// shape and round.
fn fixed_duration(measure: Duration, rounds: u64) {
    type Row = (&'static str, fn(u32, usize, Duration) -> f64);
    let rows: [Row; 4] = [
        ("stickypool", |n, t, d| run_for(&stickypool_pool(n), t, d)),
        ("r2d2", |n, t, d| run_for(&r2d2_pool(n), t, d)),
        ("naive-mutex", |n, t, d| {
            run_for(&NaivePool::new(n as usize), t, d)
        }),
        ("floor", |n, t, d| {
            run_for(&FloorPool::new(n as usize), t, d)
        }),
    ];
    for (threads, connections) in [(1, 8), (32, 8), (64, 16)] {
        for round in 0..rounds {
            let mut order: Vec<_> = rows.iter().collect();
            order.rotate_left(round as usize % rows.len());
            let mut times: Vec<(&str, f64)> = order
                .into_iter()
                .map(|(name, run)| (*name, run(connections, threads, measure)))
                .collect();
            times.sort_by_key(|(name, _)| rows.iter().position(|(n, _)| n == name));
            let of = |name| times.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
            let (floor, r2d2) = (of("floor").unwrap(), of("r2d2").unwrap());
            println!(
                "fixed duration: {threads} threads, {connections} connections (round {})",
                round + 1
            );
            println!(
                "  {:<12} {:>10} {:>8} {:>8}",
                "", "ns/op", "/ floor", "/ r2d2"
            );
            for (name, time) in &times {
                println!(
                    "  {:<12} {:>10.1} {:>8.2} {:>8.2}",
                    name,
                    time,
                    time / floor,
                    time / r2d2,
                );
            }
        }
    }
}

/// A whole number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}"))
    })
}

fn main() {
    // `cargo bench --bench checkout -- fixed`: only the fixed-duration rows.
    let only_fixed = std::env::args().skip(1).any(|a| a == "fixed");
    let measure = Duration::from_secs(env_u64("FIXED_SECS", 2).max(1));
    let rounds = env_u64("FIXED_ROUNDS", 3).max(1);
    if only_fixed {
        fixed_duration(measure, rounds);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    bench_group(&mut c, "single_thread", 1, 8);
    bench_group(&mut c, "two_threads", 2, 8);
    bench_group(&mut c, "threads32_conns8", 32, 8);
    c.final_summary();
    println!("\nTable of ns/op and ratios: scripts/bench-summary\n");
    fixed_duration(measure, rounds);
}
