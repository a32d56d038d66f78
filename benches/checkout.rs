//! The cost of a borrow and return (`get` then drop) with connections that cost nothing,
//! for stickypool, r2d2 and a naive `Mutex<Vec<_>>` pool, in one run.
//!
//! Groups:
//! * `single_thread`: one thread, a pool of 8;
//! * `two_threads`: two threads borrowing in a loop from one pool of 8 (each finds a
//!   free connection: this measures what the pools share between threads);
//! * `threads32_conns8`: 32 threads on a pool of 8 (threads wait for each other).
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
//! ns/op and ratios read from criterion's results.

mod common;

use std::cell::{Cell, UnsafeCell};
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
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
        .test_on_check_out(false)
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

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    bench_group(&mut c, "single_thread", 1, 8);
    bench_group(&mut c, "two_threads", 2, 8);
    bench_group(&mut c, "threads32_conns8", 32, 8);
    c.final_summary();
    println!("\nTable of ns/op and ratios: scripts/bench-summary");
}
