//! One pool's blocking background work, on threads of its own.
//!
//! Connecting, pinging an idle connection and closing one can each block for as long
//! as a server stays silent. If that work ran on the scheduler every pool shares, four
//! hung connects to one dead server would stop every other pool's connects, keepalives
//! and even `build`. So the shared scheduler only *schedules*: when a job is due it
//! hands the blocking part to the pool's `Connector`, which runs it on at most
//! [`MAX_THREADS`] threads of that pool. A hung backend can occupy only its own pool's
//! threads.
//!
//! Threads start on demand and exit after [`IDLE_EXIT`] without work, so an idle
//! process keeps none, and a process with many pools pays threads only for the pools
//! that are busy. Two threads per pool let a slow connect and a keepalive overlap
//! without letting one pool open connections in a burst (HikariCP uses one).
//!
//! Every job given to [`Connector::run`] runs, also after [`Connector::close`]: a job
//! may own a slot (a connect, a close), and a job dropped unrun would lose it. Closing
//! only lets the threads exit as soon as the queue is empty.
//!
//! If a thread cannot be spawned (the process is out of threads) and the pool has
//! none, the job runs on the calling thread, which is a scheduler thread, a background
//! job or a borrower giving a connection back: isolation is lost for that job, not the
//! job itself. Callers therefore never hold a lock of the pool's while they hand a job
//! over (the job may take it).
//!
//! Under loom a connector runs one thread, which exits only once the connector is
//! closed (loom has no timed wait), and [`Connector::inline`] runs jobs on the caller:
//! the models use it to fill a pool at `build` without spending loom's few threads.

use std::collections::VecDeque;
#[cfg(loom)]
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use std::sync::Arc;

use crate::sync::{Condvar, Mutex, spawn};

/// The most threads one pool's connector runs at once.
#[cfg(not(loom))]
pub(crate) const MAX_THREADS: usize = 2;
#[cfg(loom)]
pub(crate) const MAX_THREADS: usize = 1;

/// How long a connector thread waits for work before it exits.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

/// The blocking-work queue of one pool; see the module docs.
pub(crate) struct Connector {
    name: String,
    state: Mutex<State>,
    work: Condvar,
    /// Loom only: jobs run on the caller (see [`Connector::inline`]). A `std` atomic:
    /// only the thread that set it runs jobs while it is set.
    #[cfg(loom)]
    inline: AtomicBool,
    /// Test only: spawning a thread fails, as when the process is out of threads.
    #[cfg(all(test, not(loom)))]
    refuse_threads: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Connector {
    /// A connector whose threads are named after the pool.
    pub(crate) fn new(pool_name: &str) -> Arc<Connector> {
        Arc::new(Connector {
            name: format!("stickypool-{pool_name}"),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            #[cfg(loom)]
            inline: AtomicBool::new(false),
            #[cfg(all(test, not(loom)))]
            refuse_threads: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs `job` on one of this pool's threads, starting one if none is idle and
    /// fewer than [`MAX_THREADS`] run.
    pub(crate) fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        #[cfg(loom)]
        if self.inline.load(std::sync::atomic::Ordering::Relaxed) {
            return job();
        }
        let mut state = self.state.lock();
        state.jobs.push_back(Box::new(job));
        if state.idle >= state.jobs.len() {
            drop(state);
            self.work.notify_one();
            return;
        }
        if state.threads >= MAX_THREADS {
            return; // a busy thread takes it next
        }
        state.threads += 1;
        drop(state);
        let connector = self.clone();
        if let Err(e) = self.spawn_thread(move || connector.work_loop()) {
            let mut state = self.state.lock();
            state.threads -= 1;
            if state.threads > 0 {
                return;
            }
            let job = state.jobs.pop_back();
            drop(state);
            log::warn!(
                "{}: cannot spawn a connector thread ({e}); running the job here",
                self.name
            );
            if let Some(job) = job {
                job();
            }
        }
    }

    fn spawn_thread(&self, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        #[cfg(all(test, not(loom)))]
        if self
            .refuse_threads
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(std::io::Error::other("refused by the test"));
        }
        spawn(self.name.clone(), f)
    }

    /// Test only: from now on no thread can be spawned.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn refuse_threads(&self) {
        self.refuse_threads
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Loom only: runs `f` with every job given to this connector meanwhile run on
    /// the calling thread.
    #[cfg(loom)]
    pub(crate) fn inline<R>(&self, f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::Ordering::Relaxed;
        self.inline.store(true, Relaxed);
        let result = f();
        self.inline.store(false, Relaxed);
        result
    }

    /// Lets the threads exit once the queue is empty. Jobs given later still run.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_all();
    }

    /// The number of threads running now (for tests and the docs' claims).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn threads(&self) -> usize {
        self.state.lock().threads
    }

    fn work_loop(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // Jobs catch user code themselves; this keeps the thread count right
                // even if the pool's own code had a bug.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                state = self.state.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let deadline = std::time::Instant::now().checked_add(IDLE_EXIT);
            let (woken, timed_out) = self.work.wait_until(state, deadline);
            state = woken;
            state.idle -= 1;
            if timed_out && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_on_at_most_max_threads_and_all_run() {
        let connector = Connector::new("test");
        let (done, finished) = mpsc::channel();
        let release = Arc::new(Mutex::new(()));
        let held = release.lock();
        for i in 0..10 {
            let (done, release) = (done.clone(), release.clone());
            connector.run(move || {
                drop(release.lock());
                done.send(i).unwrap();
            });
        }
        assert!(connector.threads() <= MAX_THREADS);
        drop(held);
        let mut got: Vec<i32> = (0..10)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        connector.close();
    }
}
