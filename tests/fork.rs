//! A pool does not survive `fork()` (see `Pool`'s docs): in the child every borrow fails
//! with `Error::Forked`, and dropping the pool there closes none of the parent's
//! connections; the parent goes on as if nothing happened.

#![cfg(unix)]

mod common;

use common::{FakeManager, SOON};
use stickypool::{Error, Pool, PooledConnection};

/// What the child found, as its exit code: 0 if all was as documented.
fn child(pool: Pool<FakeManager>, manager: &FakeManager) -> i32 {
    let closed_before = manager.script.closed();
    if !matches!(pool.get(), Err(Error::Forked)) {
        return 1;
    }
    if !matches!(pool.get_timeout(SOON), Err(Error::Forked)) {
        return 2;
    }
    if pool.try_get().is_some() {
        return 3;
    }
    drop(pool);
    if manager.script.closed() != closed_before {
        return 4; // the child closed a connection of the parent's
    }
    0
}

#[test]
fn a_pool_fails_clearly_in_a_forked_child_and_leaves_the_parent_alone() {
    let manager = FakeManager::new();
    let pool = Pool::builder()
        .max_size(2)
        // Both open at `build`, so no borrow below opens another meanwhile.
        .min_idle(Some(2))
        .connection_timeout(SOON)
        .build(manager.clone())
        .expect("build");
    let before = PooledConnection::id(&pool.get().expect("a connection"));
    let opened = manager.script.live();

    // SAFETY: the child runs only the pool's fork-safe paths (no lock, no thread, no
    // close) and leaves with `_exit`, running no destructor or exit handler.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child(pool.clone(), &manager);
        // SAFETY: ends the child at once, as a forked child of a threaded process must.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "the child did not exit: {status}");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child's pool did not behave as documented (see `child` for the code)"
    );

    // The parent's pool is untouched: the same connection, nothing closed.
    assert_eq!(
        PooledConnection::id(&pool.get().expect("the parent still borrows")),
        before
    );
    assert_eq!(manager.script.live(), opened);
    assert_eq!(manager.script.closed(), 0);
}
