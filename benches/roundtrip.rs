//! Many threads on few connections with a simulated server round trip, so the waiting
//! path can be tuned without servers: each borrow spins for `ROUNDTRIP_WORK_NS` of CPU
//! work (the client's side of a query: encoding, parsing) and then blocks for
//! `ROUNDTRIP_BLOCK_US` in `thread::sleep` (the wait for the server's answer: the thread
//! is descheduled, as on a socket read). Timer slack is set to 1 ns for these threads,
//! so a sleep lasts about what it asks for.
//!
//! Rows: stickypool (the default fairness bound, then `fair_after(50 ms)`), r2d2, and
//! `direct`: no pool, thread `t` locks connection `t % n` (each behind its own mutex),
//! the simplest thing a service without a pool would write. Shapes: 32 threads on 8
//! connections and 64 on 16. Each row gives the wall time per operation of the whole
//! group, the time spent waiting for a connection (p50, p99, max), and the ratios to
//! r2d2 in the same run.
//!
//! Settings (environment): `ROUNDTRIP_SECS` measured per row (default 2, after a tenth
//! of that unrecorded), `ROUNDTRIP_ROUNDS` (default 1; rounds alternate the order of
//! the rows), `ROUNDTRIP_WORK_NS` (default 2000), `ROUNDTRIP_BLOCK_US` (default 20).
//!
//! Run with `cargo bench --bench roundtrip`.

mod common;
#[path = "common/contended.rs"]
mod contended;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Conn, NoopManager, r2d2_pool, stickypool_pool, stickypool_pool_with};
use contended::{Direct, Outcome, SHAPES, Shape, env_u64, pool_run, print_table, run};

/// The simulated query: CPU work, then a blocking wait.
#[derive(Clone, Copy)]
struct RoundTrip {
    work: Duration,
    block: Duration,
}

impl RoundTrip {
    fn run(&self, conn: &mut Conn) {
        let start = Instant::now();
        while start.elapsed() < self.work {
            conn.queries = black_box(conn.queries.wrapping_add(1));
        }
        std::thread::sleep(self.block);
    }
}

/// Sets this thread's timer slack (inherited by threads it spawns) to 1 ns.
fn tight_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn rows(
    shape: Shape,
    trip: RoundTrip,
    warm_up: Duration,
    measure: Duration,
    round: u64,
) -> Vec<Outcome> {
    let sticky = |name: &str, pool: stickypool::Pool<NoopManager>| {
        let get = || pool.get().expect("stickypool get");
        pool_run(name, shape.threads, warm_up, measure, get, |conn| {
            trip.run(conn)
        })
    };
    let default = || sticky("stickypool", stickypool_pool(shape.connections));
    let barging = || {
        let pool = stickypool_pool_with(shape.connections, Duration::from_millis(50));
        sticky("stickypool, fair_after 50ms", pool)
    };
    let r2d2 = || {
        let pool = r2d2_pool(shape.connections);
        let get = || pool.get().expect("r2d2 get");
        pool_run("r2d2", shape.threads, warm_up, measure, get, |conn| {
            trip.run(conn)
        })
    };
    let direct = || {
        let conns = Direct::new((0..shape.connections).map(|_| Conn::default()));
        run(
            "direct (a mutex per connection)",
            shape.threads,
            warm_up,
            measure,
            &|t| conns.with(t, |conn| trip.run(conn)),
        )
    };
    // Alternate the order, so neither pool always runs first.
    let (s, b, r, d) = if round.is_multiple_of(2) {
        let (s, b, r) = (default(), barging(), r2d2());
        (s, b, r, direct())
    } else {
        let (d, r, b) = (direct(), r2d2(), barging());
        (default(), b, r, d)
    };
    vec![s, b, r, d]
}

fn main() {
    tight_timer_slack();
    let secs = env_u64("ROUNDTRIP_SECS", 2).max(1);
    let rounds = env_u64("ROUNDTRIP_ROUNDS", 1).max(1);
    let trip = RoundTrip {
        work: Duration::from_nanos(env_u64("ROUNDTRIP_WORK_NS", 2000)),
        block: Duration::from_micros(env_u64("ROUNDTRIP_BLOCK_US", 20)),
    };
    let measure = Duration::from_secs(secs);
    let warm_up = measure / 10;
    println!(
        "roundtrip: {:?} of work then {:?} blocked per borrow, {secs} s per row",
        trip.work, trip.block
    );
    for round in 0..rounds {
        for shape in SHAPES {
            let outcomes = rows(shape, trip, warm_up, measure, round);
            print_table(
                &format!(
                    "{} threads, {} connections (round {})",
                    shape.threads,
                    shape.connections,
                    round + 1
                ),
                &outcomes,
            );
        }
    }
}
