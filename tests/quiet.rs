//! An idle process with pools is quiet: its threads, all of them, wake at most about
//! ten times a second, and the time-based checks stay exact after the quiet spell.
//!
//! A test binary of its own, with one test: the measurement counts every thread of the
//! process.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{FakeManager, SOON, wait_until};
use stickypool::Pool;

/// Context switches (voluntary and not) of every thread of this process, by thread id.
fn switches() -> HashMap<u32, u64> {
    let mut all = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task");
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // exited meanwhile
        };
        let count: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        all.insert(tid, count);
    }
    all
}

/// The names of this process's threads (as the kernel keeps them: 15 bytes at most).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Wake-ups between two readings: the growth of threads seen in both, plus everything
/// of threads that appeared (a thread that exited woke at most once more, to exit).
fn wakeups(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    let gone = before.keys().filter(|t| !after.contains_key(t)).count() as u64;
    let grown: u64 = after
        .iter()
        .map(|(tid, &n)| n - before.get(tid).copied().unwrap_or(0).min(n))
        .sum();
    grown + gone
}

#[test]
fn an_idle_process_with_pools_wakes_at_most_ten_times_a_second() {
    let pools: Vec<Pool<FakeManager>> = (0..3)
        .map(|_| {
            Pool::builder()
                .max_size(4)
                .min_idle(Some(2))
                .idle_timeout(Some(Duration::from_secs(600)))
                .build(FakeManager::new())
                .expect("build")
        })
        .collect();
    for pool in &pools {
        drop(pool.get().expect("borrow"));
    }
    // The pools' connect threads (named after the pool) exit after two idle seconds;
    // wait until they have, so the window sees the idle state, not the start-up.
    assert!(
        wait_until(SOON, || !thread_names()
            .iter()
            .any(|n| n.starts_with("stickypool-pool"))),
        "connector threads never exited: {:?}",
        thread_names()
    );

    let window = Duration::from_millis(500);
    let before = switches();
    let begun = Instant::now();
    std::thread::sleep(window);
    let after = switches();
    let took = begun.elapsed();
    let woke = wakeups(&before, &after);
    let per_second = woke as f64 / took.as_secs_f64();
    eprintln!(
        "{woke} wake-ups in {took:?} ({per_second:.1}/s) across {} threads",
        after.len()
    );
    // Ten a second, plus this thread's own sleep.
    assert!(
        woke <= 5 + 1,
        "{woke} wake-ups in {took:?} while idle ({per_second:.1}/s)"
    );

    // After the quiet spell the clock is exact at once: a connection borrowed now and
    // held 30 ms is counted as held about 30 ms, not a quiet spell less or more.
    let pool = &pools[0];
    let before = pool.stats().hold_time_total;
    let conn = pool.get().expect("borrow");
    std::thread::sleep(Duration::from_millis(30));
    drop(conn);
    let held = pool.stats().hold_time_total - before;
    assert!(
        held >= Duration::from_millis(25) && held <= Duration::from_millis(200),
        "held {held:?}"
    );
}
