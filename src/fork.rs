//! A pool does not survive `fork()`.
//!
//! A child process gets a copy of the pool without its threads (the clock, the
//! connectors, the scheduler), and with its connections' sockets shared with the parent:
//! a query from the child would interleave with the parent's on the same session, and
//! closing a connection in the child would end the parent's session (drivers send a
//! goodbye message when a connection is dropped). So a pool used in a child fails
//! clearly instead: every borrow returns [`Error::Forked`](crate::Error::Forked)
//! (`try_get` returns `None`), and closing or dropping the pool in the child closes
//! nothing and touches no lock (a thread of the parent may have held one at the fork);
//! the connections are left to the parent. Build new pools in the child.
//!
//! A `pthread_atfork` handler, registered when the first pool starts, counts forks in
//! the child; each pool remembers the count it started with. A borrow reads the count
//! once (a load of a line that is written only by a fork).

use std::sync::atomic::{AtomicU32, Ordering};

/// How many times this process's ancestors forked it off (counted in each child).
static FORKS: AtomicU32 = AtomicU32::new(0);

/// The current count, for a pool that starts now; registers the handler once.
pub(crate) fn generation() -> u32 {
    #[cfg(all(unix, not(loom)))]
    {
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: `pthread_atfork` takes three optional function pointers; the
            // child handler only does an atomic add, which is async-signal-safe, as
            // a handler run in the child of a multithreaded process must be.
            let failed = unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
            if failed != 0 {
                log::warn!("stickypool: cannot register a fork handler ({failed})");
            }
        });
    }
    FORKS.load(Ordering::Relaxed)
}

#[cfg(all(unix, not(loom)))]
extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Whether this process was forked from the one in which the count was `generation`.
#[inline]
pub(crate) fn forked_since(generation: u32) -> bool {
    FORKS.load(Ordering::Relaxed) != generation
}
