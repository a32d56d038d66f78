//! Porting is an import change: the same r2d2-style service module
//! (`tests/port/service.rs`) compiled against r2d2 0.8 and against
//! `stickypool::compat`, with only the `use` line differing, and run against both.

#[allow(dead_code)]
mod with_r2d2 {
    // The line a service has today (redundant for clippy, kept to show the change).
    #[allow(clippy::single_component_path_imports)]
    use r2d2;
    include!("port/service.rs");
}

#[allow(dead_code)]
mod with_stickypool {
    use stickypool::compat as r2d2;
    include!("port/service.rs");
}

use std::sync::Arc;
use std::time::Duration;

macro_rules! same_behaviour {
    ($name:ident, $service:ident) => {
        #[test]
        fn $name() {
            use $service::*;
            let counters = Arc::new(Counters::default());
            let state = build(&counters, false).expect("builds");
            assert_eq!(
                settings(&state),
                (2, Some(1), Duration::from_millis(200), true)
            );
            // One connection, used by each request in turn: its extensions persist.
            assert_eq!(handle_request(&state).unwrap(), 1);
            assert_eq!(handle_request(&state).unwrap(), 2);
            // A guard stored in a struct and moved to another thread.
            assert!(run_job_on_a_thread(&state).unwrap() >= 2, "on_acquire ran");
            // Both connections busy: a timeout, reported with the requested timeout.
            let busy = busy_error(&state).expect("the pool is exhausted");
            assert!(!busy.is_empty());
            assert_eq!(
                *counters.timeouts.lock().unwrap(),
                [Duration::from_millis(20)]
            );
            let checkins = counters.checkins.lock().unwrap().clone();
            assert!(checkins.len() >= 3, "{checkins:?}");
            assert!(!counters.checkouts.lock().unwrap().is_empty());
            // State survives a clone of the application state.
            let again = state.clone();
            assert_eq!(idle_count(&again), 2);

            // A refusing backend: `build` fails and the error handler hears of it.
            let refused = Arc::new(Counters::default());
            assert!(build(&refused, true).is_err());
            let errors = refused.errors.lock().unwrap().clone();
            assert!(
                errors.iter().any(|e| e.contains("connection refused")),
                "{errors:?}"
            );
        }
    };
}

same_behaviour!(the_service_runs_on_r2d2, with_r2d2);
same_behaviour!(the_same_service_runs_on_stickypool, with_stickypool);
