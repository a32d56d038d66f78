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
//! If a thread cannot be spawned (the process is out of threads) and the pool has
//! none, the job runs on the calling thread, which is a scheduler thread or a
//! background job: isolation is lost for that job, not the job itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The most threads one pool's connector runs at once.
pub(crate) const MAX_THREADS: usize = 2;

/// How long a connector thread waits for work before it exits.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

/// The blocking-work queue of one pool; see the module docs.
pub(crate) struct Connector {
    name: String,
    state: Mutex<State>,
    work: Condvar,
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
        })
    }

    /// Runs `job` on one of this pool's threads, starting one if none is idle and
    /// fewer than [`MAX_THREADS`] run. After [`close`](Connector::close), jobs are
    /// dropped.
    pub(crate) fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        state.jobs.push_back(Box::new(job));
        if state.idle >= state.jobs.len() {
            self.work.notify_one();
            return;
        }
        if state.threads >= MAX_THREADS {
            return; // a busy thread takes it next
        }
        state.threads += 1;
        drop(state);
        let connector = self.clone();
        let spawned = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || connector.work_loop());
        if let Err(e) = spawned {
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

    /// Stops taking jobs, drops the queued ones and lets the threads exit.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.jobs)
        };
        self.work.notify_all();
        drop(dropped);
    }

    /// The number of threads running now (for tests and the docs' claims).
    #[cfg(test)]
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
            let timed_out = self.work.wait_for(&mut state, IDLE_EXIT).timed_out();
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
