//! The concurrency primitives the pool uses, from `std`/`parking_lot` normally and from
//! `loom` under `--cfg loom`, so the same code is model-checked: the bag, and the engine
//! around it (connecting, retiring, resizing, closing).
//!
//! Under loom, what the pool does with time and background threads is replaced by
//! what a model can explore: time is virtual ([`time`]) and moves only when a model
//! advances it, and the connector's threads are loom threads. State that carries no
//! ordering (statistics, the circuit breaker's counters, `Arc` counts) stays on `std`
//! atomics, which loom does not explore.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence as light_barrier_fence, fence as heavy_barrier_fence};
#[cfg(loom)]
pub(crate) use loom::thread::{Thread, current};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::thread::{Thread, current};

/// Parks the current thread until unparked or, outside loom, until `timeout` passes.
/// Loom has no timed park; its models never rely on the timeout.
pub(crate) fn park_timeout(timeout: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = timeout;
        loom::thread::park();
    }
    #[cfg(not(loom))]
    std::thread::park_timeout(timeout);
}

/// Spawns a named thread (a loom thread under loom).
pub(crate) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    #[cfg(loom)]
    return loom::thread::Builder::new().name(name).spawn(f).map(drop);
    #[cfg(not(loom))]
    std::thread::Builder::new().name(name).spawn(f).map(drop)
}

/// The guard of a [`Mutex`].
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
/// The guard of a [`Mutex`].
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

/// A condition variable for [`Mutex`], taking and giving back the guard by value.
#[derive(Debug, Default)]
pub(crate) struct Condvar(
    #[cfg(loom)] loom::sync::Condvar,
    #[cfg(not(loom))] parking_lot::Condvar,
);

impl Condvar {
    pub(crate) fn new() -> Self {
        #[cfg(loom)]
        return Condvar(loom::sync::Condvar::new());
        #[cfg(not(loom))]
        Condvar(parking_lot::Condvar::new())
    }

    /// Waits for a notification, or until `deadline` (`None`: no deadline). Whether
    /// it timed out. Under loom the wait never times out: a model that relied on the
    /// timeout deadlocks, which loom reports.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<std::time::Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        #[cfg(loom)]
        {
            let _ = deadline;
            (self.0.wait(guard).unwrap(), false)
        }
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            let timed_out = match deadline {
                Some(deadline) => self.0.wait_until(&mut guard, deadline).timed_out(),
                None => {
                    self.0.wait(&mut guard);
                    false
                }
            };
            (guard, timed_out)
        }
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Time as the pool's decisions see it. Real time normally; under loom a virtual
/// clock that stands still until a model advances it ([`time::advance`]), so that an
/// execution depends only on the schedule loom chose, and a timeout fires exactly
/// where a model says.
pub(crate) mod time {
    /// Milliseconds of virtual time since the model began.
    #[cfg(loom)]
    pub(crate) fn now_ms() -> u64 {
        NOW_MS.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Moves virtual time forward.
    #[cfg(loom)]
    pub(crate) fn advance(by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        NOW_MS.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    // A `std` atomic in a loom static: reset for every execution, and not a point
    // where loom switches threads (time is not what the models explore).
    #[cfg(loom)]
    loom::lazy_static! {
        static ref NOW_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    }
}

/// A mutex with parking_lot's signature (no poisoning) over both backends.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(loom)] loom::sync::Mutex<T>,
    #[cfg(not(loom))] parking_lot::Mutex<T>,
);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(loom)]
        return Mutex(loom::sync::Mutex::new(value));
        #[cfg(not(loom))]
        Mutex(parking_lot::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        return self.0.lock().unwrap();
        #[cfg(not(loom))]
        self.0.lock()
    }
}

/// `UnsafeCell` with loom's closure API. Under loom every access is tracked, so a model
/// in which two threads touch one slot's payload at once fails.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(loom)]
        return UnsafeCell(loom::cell::UnsafeCell::new(value));
        #[cfg(not(loom))]
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to the value. The caller must own the value (see `bag`).
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with_mut(f);
        #[cfg(not(loom))]
        f(self.0.get())
    }

    /// A raw pointer to the value, for guards that hold it across calls. Under loom
    /// the access is checked when the pointer is taken (a model in which another
    /// thread owns the slot then fails), not while it is used.
    pub(crate) fn get(&self) -> *mut T {
        #[cfg(loom)]
        return self.0.with_mut(|value| value);
        #[cfg(not(loom))]
        self.0.get()
    }
}

/// The fast side of an asymmetric barrier pair; see [`heavy_barrier`].
#[inline]
pub(crate) fn light_barrier() {
    #[cfg(loom)]
    light_barrier_fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    membarrier::light();
}

/// The slow side of an asymmetric barrier pair.
///
/// A `light_barrier` in one thread and a `heavy_barrier` in another order memory as
/// two `SeqCst` fences would: whichever comes second sees everything before the first.
/// On Linux the light side is only a compiler fence and the heavy side is the
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` system call, which runs a full
/// barrier on every CPU currently running a thread of this process (the technique of
/// folly's asymmetric barriers and userspace RCU). That takes the store-load fence
/// off the path that gives a connection back, at the cost of a system call (about a
/// microsecond) for a thread that is about to park anyway.
///
/// Elsewhere, under Miri, when the kernel does not offer the call, or once it has
/// failed, both sides are `SeqCst` fences; under loom too, where the models check the
/// protocol with plain fences. The call is probed once at registration; if it still
/// fails later (a seccomp filter installed after start-up, `ENOMEM`) it is retried
/// once, then the process switches to fences for good. Never a panic: a light barrier
/// that ran as a compiler fence just before the switch is covered by the bag's bounded
/// park, so at worst one wake-up is late by `bag::RESCAN`.
pub(crate) fn heavy_barrier() {
    #[cfg(loom)]
    heavy_barrier_fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    membarrier::heavy();
}

/// Registers the process for expedited membarriers, once. Must run before any pair
/// of barriers is used (the bag does it when it is created, and every thread that
/// uses a bag synchronized with its creation, so it sees the outcome).
pub(crate) fn init_barriers() {
    #[cfg(not(loom))]
    membarrier::init();
}

/// Whether light barriers are compiler fences (expedited membarriers work).
#[cfg(all(test, not(loom)))]
pub(crate) fn barriers_are_asymmetric() -> bool {
    membarrier::expedited()
}

/// Makes every later expedited membarrier fail, as a seccomp filter would.
#[cfg(all(test, not(loom)))]
pub(crate) fn fail_membarrier() {
    membarrier::FAIL.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(loom))]
mod membarrier {
    use std::sync::Once;
    #[cfg(all(target_os = "linux", not(miri)))]
    use std::sync::atomic::compiler_fence;
    use std::sync::atomic::{AtomicBool, Ordering, fence};

    /// Set once, before any bag exists, if expedited membarriers work; cleared for good
    /// if one fails later.
    static EXPEDITED: AtomicBool = AtomicBool::new(false);

    /// Test only: expedited membarriers fail.
    #[cfg(test)]
    pub(super) static FAIL: AtomicBool = AtomicBool::new(false);

    #[cfg(all(target_os = "linux", not(miri)))]
    mod sys {
        pub(super) const QUERY: libc::c_long = 0;
        pub(super) const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
        pub(super) const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

        pub(super) fn membarrier(cmd: libc::c_long) -> libc::c_long {
            #[cfg(test)]
            if cmd == PRIVATE_EXPEDITED && super::FAIL.load(std::sync::atomic::Ordering::Relaxed) {
                return -1;
            }
            // SAFETY: `membarrier(cmd, flags = 0)` takes no pointers and touches no
            // memory of ours; an unknown command just fails with EINVAL.
            unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long) }
        }
    }

    pub(super) fn init() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            #[cfg(all(target_os = "linux", not(miri)))]
            {
                let supported = sys::membarrier(sys::QUERY);
                let needed = sys::PRIVATE_EXPEDITED | sys::REGISTER_PRIVATE_EXPEDITED;
                // Registered and one real call made: a filter that refuses the call
                // now is found here, not inside a wait.
                if supported >= 0
                    && supported & needed == needed
                    && sys::membarrier(sys::REGISTER_PRIVATE_EXPEDITED) == 0
                    && sys::membarrier(sys::PRIVATE_EXPEDITED) == 0
                {
                    EXPEDITED.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    #[cfg(test)]
    pub(super) fn expedited() -> bool {
        EXPEDITED.load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn light() {
        #[cfg(all(target_os = "linux", not(miri)))]
        if EXPEDITED.load(Ordering::Relaxed) {
            compiler_fence(Ordering::SeqCst);
            return;
        }
        fence(Ordering::SeqCst);
    }

    pub(super) fn heavy() {
        #[cfg(all(target_os = "linux", not(miri)))]
        if EXPEDITED.load(Ordering::Relaxed) {
            if (0..2).any(|_| sys::membarrier(sys::PRIVATE_EXPEDITED) == 0) {
                return;
            }
            EXPEDITED.store(false, Ordering::Relaxed);
            log::warn!(
                "stickypool: membarrier(PRIVATE_EXPEDITED) failed ({}); using plain \
                 fences from now on",
                std::io::Error::last_os_error()
            );
        }
        fence(Ordering::SeqCst);
    }
}
