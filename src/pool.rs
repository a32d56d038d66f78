//! The public pool handle, [`Pool`]: a facade over the engine (`engine`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::Builder;
use crate::engine::{Config, Shared, State};
use crate::error::Error;
use crate::guard::{OwnedConnection, PooledConnection};
use crate::manager::ManageConnection;
use crate::stats::Stats;

/// How often [`Pool::close_within`] looks whether the borrowed connections came back.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// A pool of connections. Cheap to clone; every clone is a handle to the same pool,
/// and the pool closes when the last handle is dropped.
///
/// ```
/// # use stickypool::{ManageConnection, Pool};
/// # #[derive(Debug)] struct Manager;
/// # impl ManageConnection for Manager {
/// #     type Connection = Vec<u8>;
/// #     type Error = std::io::Error;
/// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
/// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
/// # }
/// let pool = Pool::builder().max_size(4).build(Manager)?;
/// std::thread::scope(|s| {
///     for _ in 0..8 {
///         s.spawn(|| {
///             let mut conn = pool.get().unwrap();
///             conn.push(1);
///         });
///     }
/// });
/// assert_eq!(pool.state().connections, 4);
/// # Ok::<(), stickypool::Error>(())
/// ```
///
/// # Fork
///
/// A pool does not survive `fork()`: the child has none of the pool's threads, and the
/// connections' sockets are shared with the parent. In the child every borrow fails
/// with [`Error::Forked`] (`try_get` gives `None`), and closing or dropping the pool
/// there leaves the connections to the parent, which goes on using them. Build the
/// child's pools after the fork (`tests/fork.rs`).
pub struct Pool<M: ManageConnection> {
    shared: Arc<Shared<M>>,
}

impl<M: ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        self.shared.add_handle();
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl<M: ManageConnection> Drop for Pool<M> {
    fn drop(&mut self) {
        self.shared.drop_handle();
    }
}

impl<M: ManageConnection + fmt::Debug> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name())
            .field("state", &self.state())
            .field("manager", self.shared.manager())
            .finish_non_exhaustive()
    }
}

impl<M: ManageConnection> Pool<M> {
    /// A pool with the default settings; see [`Builder::build`].
    pub fn new(manager: M) -> Result<Pool<M>, Error> {
        Builder::new().build(manager)
    }

    /// A builder for a pool.
    pub fn builder() -> Builder<M> {
        Builder::new()
    }

    pub(crate) fn from_config(config: Config<M>, manager: M) -> Pool<M> {
        Pool {
            shared: Shared::start(config, manager),
        }
    }

    /// Blocks until `min_idle` connections are open; see [`Builder::build`].
    pub(crate) fn wait_for_min_idle(&self) -> Result<(), Error> {
        self.shared.wait_for_min_idle()
    }

    /// Borrows a connection, waiting up to `connection_timeout`.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let mut conn = pool.get()?; // waits up to `connection_timeout` if all are busy
    /// conn.push(1);
    /// drop(conn); // back to the pool
    /// assert_eq!(pool.state().idle_connections, 2);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    #[inline]
    pub fn get(&self) -> Result<PooledConnection<'_, M>, Error> {
        self.get_timeout(self.shared.connection_timeout())
    }

    /// Borrows a connection, waiting up to `timeout`.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use std::time::Duration;
    /// use stickypool::Error;
    ///
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let held = pool.get()?;
    /// match pool.get_timeout(Duration::from_millis(10)) {
    ///     Err(Error::Timeout { waited, .. }) => assert!(waited >= Duration::from_millis(10)),
    ///     other => panic!("the only connection is held: {other:?}"),
    /// }
    /// drop(held);
    /// assert!(pool.get_timeout(Duration::from_millis(10)).is_ok());
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    #[inline]
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection<'_, M>, Error> {
        let checkout = self.shared.checkout(timeout)?;
        Ok(PooledConnection::new(&self.shared, checkout))
    }

    /// Borrows a connection, waiting until `deadline` at the latest: for a request
    /// that carries its deadline through several calls. Like every borrow, its check of
    /// the connection is bounded by what is left, so it returns by the deadline plus
    /// what an unbounded manager's check takes (the ready managers bound theirs).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let request_deadline = Instant::now() + Duration::from_millis(20);
    /// let held = pool.get_deadline(request_deadline)?;
    /// assert!(pool.get_deadline(request_deadline).is_err(), "none free by then");
    /// assert!(Instant::now() >= request_deadline);
    /// # drop(held);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    #[inline]
    pub fn get_deadline(&self, deadline: Instant) -> Result<PooledConnection<'_, M>, Error> {
        self.get_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// Borrows an idle connection if there is one; never waits and never opens one.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let held = pool.try_get().expect("one is idle");
    /// assert!(pool.try_get().is_none(), "and it is borrowed");
    /// drop(held);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    #[inline]
    pub fn try_get(&self) -> Option<PooledConnection<'_, M>> {
        let checkout = self.shared.try_checkout()?;
        Some(PooledConnection::new(&self.shared, checkout))
    }

    /// Borrows a connection with a `'static` guard that can be stored in structs and
    /// sent to other threads. Costs an `Arc` clone more than [`get`](Pool::get).
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use stickypool::OwnedConnection;
    ///
    /// struct Job {
    ///     conn: OwnedConnection<Manager>, // no lifetime: the guard holds the pool
    /// }
    ///
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let job = Job { conn: pool.get_owned()? };
    /// let worker = std::thread::spawn(move || {
    ///     let mut job = job;
    ///     job.conn.push(7);
    /// });
    /// worker.join().unwrap();
    /// assert_eq!(*pool.get()?, [7]);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn get_owned(&self) -> Result<OwnedConnection<M>, Error> {
        self.get_owned_timeout(self.shared.connection_timeout())
    }

    /// [`get_owned`](Pool::get_owned), waiting up to `timeout` instead of the pool's
    /// `connection_timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use stickypool::{Error, ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let held = pool.get_owned_timeout(Duration::from_millis(10))?;
    /// let busy = pool.get_owned_timeout(Duration::from_millis(10));
    /// assert!(matches!(busy, Err(Error::Timeout { .. })));
    /// # drop(held);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn get_owned_timeout(&self, timeout: Duration) -> Result<OwnedConnection<M>, Error> {
        let checkout = self.shared.checkout(timeout)?;
        Ok(OwnedConnection::new(self.shared.clone(), checkout))
    }

    /// [`try_get`](Pool::try_get) with a `'static` guard: an idle connection now, or
    /// `None` without waiting.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(1).build(Manager)?;
    /// let held = std::thread::spawn({
    ///     let conn = pool.try_get_owned().expect("one is idle");
    ///     move || drop(conn) // a 'static guard moves to another thread
    /// });
    /// held.join().unwrap();
    /// assert!(pool.try_get_owned().is_some(), "back in the pool");
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn try_get_owned(&self) -> Option<OwnedConnection<M>> {
        let checkout = self.shared.try_checkout()?;
        Some(OwnedConnection::new(self.shared.clone(), checkout))
    }

    /// The pool's id, unique in the process.
    pub(crate) fn id(&self) -> u64 {
        self.shared.id()
    }

    /// The engine, for the crate's own tests.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn shared(&self) -> &Arc<Shared<M>> {
        &self.shared
    }

    /// The engine, for a job that must not keep the pool open (metrics).
    #[cfg(feature = "metrics")]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared<M>> {
        Arc::downgrade(&self.shared)
    }

    /// The scheduler the pool's jobs run on.
    #[cfg(feature = "metrics")]
    pub(crate) fn shared_scheduler(&self) -> Arc<scheduled_thread_pool::ScheduledThreadPool> {
        self.shared.scheduler().clone()
    }

    /// How long [`get`](Pool::get) waits (r2d2's getter).
    pub fn connection_timeout(&self) -> Duration {
        self.shared.connection_timeout()
    }

    /// The `min_idle` setting as given (`None`: `max_size`), r2d2's getter.
    pub fn min_idle(&self) -> Option<u32> {
        *self.shared.settings().min_idle_setting.lock()
    }

    /// When borrows check a connection ([`Builder::check_on_borrow`]): `None` never,
    /// `Some(age)` when its last check is at least `age` old.
    pub fn check_on_borrow(&self) -> Option<Duration> {
        let settings = self.shared.settings();
        settings
            .test_on_check_out
            .then(|| Duration::from_millis(settings.validation_bypass_ms))
    }

    /// The `idle_timeout` setting (r2d2's getter).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.shared.settings().idle_timeout
    }

    /// The `max_lifetime` setting (r2d2's getter).
    pub fn max_lifetime(&self) -> Option<Duration> {
        self.shared.settings().max_lifetime
    }

    /// A snapshot of the pool's connections.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let held = pool.get()?;
    /// let state = pool.state();
    /// assert_eq!((state.connections, state.in_use, state.idle_connections), (2, 1, 1));
    /// drop(held);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Counters since the pool started.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// drop(pool.get()?);
    /// drop(pool.get()?);
    /// let stats = pool.stats();
    /// assert_eq!(stats.borrows, 2);
    /// assert_eq!(stats.connections_created, 2);
    /// assert_eq!(stats.timeouts, 0);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The pool's `max_size`.
    pub fn max_size(&self) -> u32 {
        self.shared.max_size()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The pool's manager.
    pub fn manager(&self) -> &M {
        self.shared.manager()
    }

    /// Resizes the pool while it runs (any `max_size` the builder accepts, not below
    /// `min_idle`). Growing lets waiting borrowers have new connections at once;
    /// shrinking closes the idle connections beyond the new size now and borrowed
    /// ones when they come back. Borrowers see it through loads they already make.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(2).min_idle(Some(0)).build(Manager)?;
    /// pool.set_max_size(20)?;
    /// let held: Vec<_> = (0..20).map(|_| pool.get()).collect::<Result<_, _>>()?;
    /// drop(held);
    /// pool.set_max_size(4)?;
    /// assert_eq!(pool.state().connections, 4);
    /// assert!(pool.set_max_size(0).is_err());
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn set_max_size(&self, max_size: u32) -> Result<(), Error> {
        self.shared.set_max_size(max_size)
    }

    /// Changes `min_idle` while the pool runs (`None`: `max_size`), with the builder's
    /// validation; a larger value opens the connections it asks for at once, a smaller
    /// one lets the housekeeper close the surplus as it goes idle. Lock-free for
    /// borrowers: they read it with one relaxed load where they already read the
    /// setting.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(4).min_idle(Some(0)).build(Manager)?;
    /// pool.set_min_idle(Some(2))?;
    /// assert_eq!(pool.min_idle(), Some(2));
    /// assert!(pool.set_min_idle(Some(5)).is_err(), "more than max_size");
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn set_min_idle(&self, min_idle: Option<u32>) -> Result<(), Error> {
        self.shared.set_min_idle(min_idle)
    }

    /// Retires every connection open now, HikariCP's soft eviction: idle ones are
    /// closed at once, borrowed ones when they come back, and new ones replace them.
    /// For credential rotation (change the manager's credentials first) or a failover
    /// to a new primary. Returns how many were closed at once.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let held = pool.get()?;
    /// assert_eq!(pool.retire_all(), 1, "the idle one");
    /// drop(held); // closed, not returned
    /// assert_eq!(pool.stats().closed.get(stickypool::CloseReason::Retired), 2);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn retire_all(&self) -> usize {
        self.shared.retire_all()
    }

    /// Closes the idle connections for which `keep` returns false, judging by id, age
    /// and idle time, and returns how many. `keep` runs with no connection claimed (a
    /// borrower is never held up by it); a connection borrowed meanwhile is left alone,
    /// and if `keep` panics, the connection is kept. `retain(|_| false)` closes every
    /// idle connection; `min_idle` is refilled with new ones.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use std::time::Duration;
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// // Close the connections older than a minute (none are, yet).
    /// assert_eq!(pool.retain(|c| c.age < Duration::from_secs(60)), 0);
    /// assert_eq!(pool.retain(|_| false), 2, "every idle one");
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn retain(&self, keep: impl FnMut(&crate::ConnectionInfo) -> bool) -> usize {
        self.shared.retain(keep)
    }

    /// Closes the pool: waiting threads and later borrows get [`Error::Closed`], idle
    /// connections are closed now and borrowed ones when they come back, and the
    /// background jobs stop. Dropping the last handle does the same.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = Vec<u8>;
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<Vec<u8>, std::io::Error> { Ok(Vec::new()) }
    /// #     fn is_valid(&self, _: &mut Vec<u8>) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut Vec<u8>) -> bool { false }
    /// # }
    /// use stickypool::Error;
    ///
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let held = pool.get()?;
    /// pool.close();
    /// assert!(pool.is_closed());
    /// assert!(matches!(pool.get(), Err(Error::Closed)));
    /// assert_eq!(pool.state().connections, 1, "the borrowed one closes when it comes back");
    /// drop(held);
    /// assert_eq!(pool.state().connections, 0);
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn close(&self) {
        self.shared.close();
    }

    /// Pauses the pool for maintenance (HikariCP's suspend, PgBouncer's `PAUSE`): from
    /// now on borrows wait until [`resume`](Pool::resume) (or their timeout), and
    /// borrowed connections come back as usual. The returned [`Pause`] can also close
    /// every connection, for a switch-over, and make borrows fail at once instead of
    /// waiting. A borrow that was already under way when `pause` ran may complete.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// use std::time::Duration;
    /// use stickypool::Error;
    ///
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let held = pool.get()?;
    /// pool.pause().and_close(); // the idle one closes now, the held one when returned
    /// assert!(pool.get_timeout(Duration::from_millis(10)).is_err(), "borrows wait");
    /// drop(held);
    /// assert_eq!(pool.state().connections, 0);
    /// pool.pause().failing();
    /// assert!(matches!(pool.get(), Err(Error::Paused { .. })), "or fail at once");
    /// pool.resume();
    /// assert!(pool.get().is_ok());
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn pause(&self) -> Pause<'_, M> {
        self.shared.pause();
        Pause { pool: self }
    }

    /// Ends a [`pause`](Pool::pause): borrows go on, and `min_idle` is refilled.
    pub fn resume(&self) {
        self.shared.resume();
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }

    /// Closes the pool and waits up to `timeout` for the borrowed connections to come
    /// back (each is closed as it does), for a deploy's graceful drain: new borrows
    /// fail with [`Error::Closed`] at once. Returns how many connections were still
    /// borrowed when it gave up, 0 if all came back; those are closed whenever their
    /// borrowers return them.
    ///
    /// ```
    /// # use stickypool::{ManageConnection, Pool};
    /// # #[derive(Debug)] struct Manager;
    /// # impl ManageConnection for Manager {
    /// #     type Connection = ();
    /// #     type Error = std::io::Error;
    /// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
    /// #     fn has_broken(&self, _: &mut ()) -> bool { false }
    /// # }
    /// use std::time::Duration;
    ///
    /// let pool = Pool::builder().max_size(2).build(Manager)?;
    /// let request = pool.get_owned()?;
    /// let finishing = std::thread::spawn(move || drop(request)); // a request finishing
    /// assert_eq!(pool.close_within(Duration::from_secs(10)), 0, "it came back");
    /// assert_eq!(pool.state().connections, 0);
    /// # finishing.join().unwrap();
    /// # Ok::<(), stickypool::Error>(())
    /// ```
    pub fn close_within(&self, timeout: Duration) -> u32 {
        self.close();
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let out = self.state().in_use;
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if out == 0 || left == Some(Duration::ZERO) {
                return out;
            }
            // A maintenance call, off every hot path: look again every few ms.
            std::thread::sleep(left.map_or(DRAIN_POLL, |left| left.min(DRAIN_POLL)));
        }
    }

    /// Whether the pool is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

/// A paused pool's options; see [`Pool::pause`]. The pool stays paused whether this is
/// kept or dropped, until [`Pool::resume`].
#[derive(Debug)]
pub struct Pause<'a, M: ManageConnection> {
    pool: &'a Pool<M>,
}

impl<M: ManageConnection> Pause<'_, M> {
    /// Closes the idle connections now and each borrowed one as it comes back, and
    /// opens none, until the pool resumes (for a maintenance switch-over: the pool
    /// then connects afresh). Returns how many were closed now.
    pub fn and_close(self) -> usize {
        self.pool.shared.pause_closing()
    }

    /// Borrows fail at once with [`Error::Paused`] instead of waiting, those waiting
    /// included.
    pub fn failing(self) -> Self {
        self.pool.shared.pause_failing();
        self
    }
}
