//! r2d2 0.8's documented and tested behaviours, one test each, through the
//! r2d2-shaped API (`stickypool::compat`). Every wait has a deadline; nothing sleeps
//! for seconds.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{SOON, wait_until};
use stickypool::compat as r2d2;
use stickypool::compat::event::{
    AcquireEvent, CheckinEvent, CheckoutEvent, ReleaseEvent, TimeoutEvent,
};

/// A manager in r2d2's tests' style, with what the tests need to see.
#[derive(Debug, Default)]
struct Manager {
    connects: AtomicU32,
    closes: Arc<AtomicU32>,
    refuse: AtomicBool,
    /// The next `is_valid` blocks until `release` is called.
    block_next_check: AtomicBool,
    blocked: Mutex<bool>,
    released: Condvar,
}

#[derive(Debug)]
struct Conn {
    id: u32,
    broken: bool,
    closes: Arc<AtomicU32>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

impl Manager {
    fn release(&self) {
        *self.blocked.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = std::io::Error;

    fn connect(&self) -> Result<Conn, std::io::Error> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("connection refused"));
        }
        Ok(Conn {
            id: self.connects.fetch_add(1, Ordering::SeqCst) + 1,
            broken: false,
            closes: self.closes.clone(),
        })
    }

    fn is_valid(&self, _: &mut Conn) -> Result<(), std::io::Error> {
        if self.block_next_check.swap(false, Ordering::SeqCst) {
            let mut blocked = self.blocked.lock().unwrap();
            *blocked = true;
            while *blocked {
                blocked = self.released.wait(blocked).unwrap();
            }
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

fn manager() -> Arc<Manager> {
    Arc::new(Manager::default())
}

/// Shares one manager between a test and its pool.
#[derive(Debug, Clone)]
struct Shared(Arc<Manager>);

impl r2d2::ManageConnection for Shared {
    type Connection = Conn;
    type Error = std::io::Error;
    fn connect(&self) -> Result<Conn, std::io::Error> {
        self.0.connect()
    }
    fn is_valid(&self, conn: &mut Conn) -> Result<(), std::io::Error> {
        self.0.is_valid(conn)
    }
    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.0.has_broken(conn)
    }
}

#[test]
fn the_pool_never_holds_more_than_max_size() {
    let pool = r2d2::Pool::builder()
        .max_size(5)
        .build(Shared(manager()))
        .unwrap();
    let held: Vec<_> = (0..5).map(|_| pool.get().unwrap()).collect();
    assert!(pool.try_get().is_none());
    assert!(pool.get_timeout(Duration::from_millis(10)).is_err());
    assert_eq!(pool.state().connections, 5);
    drop(held);
}

#[test]
fn connections_are_acquired_and_released() {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(Shared(manager()))
        .unwrap();
    let a = pool.get().unwrap();
    let b = pool.get().unwrap();
    assert_eq!(pool.state().idle_connections, 0);
    drop((a, b));
    assert_eq!(pool.state().idle_connections, 2);
}

#[test]
fn try_get_never_waits() {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(Shared(manager()))
        .unwrap();
    let a = pool.try_get().expect("idle");
    let _b = pool.try_get().expect("idle");
    assert!(pool.try_get().is_none());
    drop(a);
    assert!(pool.try_get().is_some());
}

#[test]
fn get_timeout_waits_that_long_and_no_longer_than_it_must() {
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(Shared(manager()))
        .unwrap();
    let held = pool.get().unwrap();
    let started = Instant::now();
    assert!(pool.get_timeout(Duration::from_millis(50)).is_err());
    assert!(started.elapsed() >= Duration::from_millis(50));
    let (done, returned) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| done.send(pool.get_timeout(SOON).map(|c| c.id)).unwrap());
        thread::sleep(Duration::from_millis(10));
        let id = held.id;
        drop(held);
        assert_eq!(returned.recv_timeout(SOON).unwrap().unwrap(), id);
    });
}

#[test]
fn pools_and_guards_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send_static<T: Send + 'static>() {}
    send_sync::<r2d2::Pool<Shared>>();
    send_static::<r2d2::PooledConnection<Shared>>();
}

#[test]
fn a_slow_is_valid_does_not_lock_the_pool() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .test_on_check_out(true)
        .build(Shared(m.clone()))
        .unwrap();
    m.block_next_check.store(true, Ordering::SeqCst);
    thread::scope(|s| {
        let slow = s.spawn(|| pool.get().map(|c| c.id));
        assert!(wait_until(SOON, || *m.blocked.lock().unwrap()));
        // One borrower is inside `is_valid`; another borrows meanwhile.
        let other = pool
            .get_timeout(SOON)
            .expect("not blocked by the slow check");
        m.release();
        assert_ne!(slow.join().unwrap().unwrap(), other.id);
    });
}

#[test]
fn a_broken_connection_is_dropped_on_return() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(Shared(m.clone()))
        .unwrap();
    let mut conn = pool.get().unwrap();
    let id = conn.id;
    conn.broken = true;
    drop(conn);
    assert_eq!(m.closes.load(Ordering::SeqCst), 1);
    assert_ne!(pool.get_timeout(SOON).unwrap().id, id);
}

#[test]
fn a_failing_initialization_fails_build() {
    let m = manager();
    m.refuse.store(true, Ordering::SeqCst);
    let err = r2d2::Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_secs(5))
        .build(Shared(m))
        .unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[test]
fn a_lazy_pool_reports_the_connect_error_on_get() {
    let m = manager();
    m.refuse.store(true, Ordering::SeqCst);
    let pool = r2d2::Pool::builder().max_size(2).build_unchecked(Shared(m));
    let err = pool.get_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[test]
fn connection_timeout_is_gets_timeout() {
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::from_millis(50))
        .build(Shared(manager()))
        .unwrap();
    assert_eq!(pool.connection_timeout(), Duration::from_millis(50));
    let _held = pool.get().unwrap();
    let started = Instant::now();
    assert!(pool.get().is_err());
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn the_customizer_runs_on_acquire_and_release() {
    #[derive(Debug, Default, Clone)]
    struct Customizer {
        acquired: Arc<AtomicU32>,
        released: Arc<AtomicU32>,
    }
    impl r2d2::CustomizeConnection<Conn, std::io::Error> for Customizer {
        fn on_acquire(&self, conn: &mut Conn) -> Result<(), std::io::Error> {
            conn.id += 1000;
            self.acquired.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn on_release(&self, _: Conn) {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
    }
    let customizer = Customizer::default();
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .connection_customizer(Box::new(customizer.clone()))
        .build(Shared(manager()))
        .unwrap();
    assert!(pool.get().unwrap().id > 1000);
    assert_eq!(customizer.acquired.load(Ordering::SeqCst), 2);
    drop(pool);
    assert_eq!(customizer.released.load(Ordering::SeqCst), 2);
}

#[test]
fn idle_timeout_closes_idle_connections_and_min_idle_refills() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(3)
        .idle_timeout(Some(Duration::from_millis(50)))
        .reap_interval(Duration::from_millis(10))
        .build(Shared(m.clone()))
        .unwrap();
    // Whatever `min_idle` is (here `max_size`), idle connections past the timeout go,
    // and fresh ones take their place.
    assert!(wait_until(SOON, || m.closes.load(Ordering::SeqCst) >= 3));
    assert!(wait_until(SOON, || pool.state().idle_connections == 3));
    assert!(m.connects.load(Ordering::SeqCst) >= 6);
}

#[test]
fn idle_timeout_spares_a_connection_in_use() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(3)
        .min_idle(Some(0))
        .idle_timeout(Some(Duration::from_millis(50)))
        .reap_interval(Duration::from_millis(10))
        .build(Shared(m.clone()))
        .unwrap();
    let three: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let busy = three[2].id;
    drop(three); // the last one returned is this thread's next borrow
    // Used more often than the timeout, the borrowed-and-returned one survives while
    // the two idle ones are closed.
    let deadline = Instant::now() + SOON;
    while m.closes.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "{:?}", pool.state());
        assert_eq!(pool.get().unwrap().id, busy);
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.get().unwrap().id, busy);
    assert_eq!(pool.state().connections, 1);
}

#[test]
fn max_lifetime_retires_connections_even_in_use() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .max_lifetime(Some(Duration::from_millis(50)))
        .reap_interval(Duration::from_millis(10))
        .build(Shared(m.clone()))
        .unwrap();
    let first = pool.get().unwrap().id;
    let deadline = Instant::now() + SOON;
    while pool.get().unwrap().id == first {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(5));
    }
    assert!(m.closes.load(Ordering::SeqCst) >= 1);
}

#[test]
fn min_idle_keeps_that_many_idle() {
    let pool = r2d2::Pool::builder()
        .max_size(5)
        .min_idle(Some(2))
        .build(Shared(manager()))
        .unwrap();
    assert_eq!(pool.min_idle(), Some(2));
    assert!(wait_until(SOON, || pool.state().idle_connections == 2));
    assert_eq!(pool.state().connections, 2);
    let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    // Borrows left fewer than two idle: the pool opens more, up to max_size.
    assert!(
        wait_until(SOON, || {
            let s = pool.state();
            s.idle_connections == 2 && s.connections == 5
        }),
        "{:?}",
        pool.state()
    );
    drop(held);
    assert_eq!(pool.state().idle_connections, 5);
    assert_eq!(pool.state().connections, 5);
}

#[test]
fn dropping_the_pool_closes_its_connections() {
    let m = manager();
    let pool = r2d2::Pool::builder()
        .max_size(3)
        .build(Shared(m.clone()))
        .unwrap();
    let held = pool.get().unwrap();
    drop(pool);
    assert_eq!(m.closes.load(Ordering::SeqCst), 2, "the idle ones at once");
    drop(held);
    assert_eq!(
        m.closes.load(Ordering::SeqCst),
        3,
        "the borrowed one on return"
    );
}

#[derive(Debug, Default)]
struct Events(Mutex<Vec<String>>, Mutex<Option<Duration>>);

impl r2d2::HandleEvent for Events {
    fn handle_acquire(&self, e: AcquireEvent) {
        self.push(format!("acquire {}", e.connection_id()));
    }
    fn handle_release(&self, e: ReleaseEvent) {
        assert!(e.age() > Duration::ZERO);
        self.push(format!("release {}", e.connection_id()));
    }
    fn handle_checkout(&self, e: CheckoutEvent) {
        assert!(e.duration() < SOON);
        self.push(format!("checkout {}", e.connection_id()));
    }
    fn handle_checkin(&self, e: CheckinEvent) {
        *self.1.lock().unwrap() = Some(e.duration());
        self.push(format!("checkin {}", e.connection_id()));
    }
    fn handle_timeout(&self, e: TimeoutEvent) {
        self.push(format!("timeout {:?}", e.timeout()));
    }
}

impl Events {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
}

#[test]
fn every_event_arrives_with_r2d2s_values() {
    let events = Arc::new(Events::default());
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .event_handler(Box::new(events.clone()))
        .build(Shared(manager()))
        .unwrap();
    let outer = Instant::now();
    let conn = pool.get().unwrap();
    let inner = Instant::now();
    let id = pool.state().connections; // the only one, id 1
    assert!(pool.get_timeout(Duration::from_millis(15)).is_err());
    let held = inner.elapsed();
    drop(conn);
    let outer = outer.elapsed();
    drop(pool);
    // The hold as the borrower saw it, not rounded to the coarse clock.
    let reported = events.1.lock().unwrap().expect("a checkin");
    assert!(
        reported >= held && reported <= outer,
        "{reported:?} not in {held:?}..{outer:?}"
    );
    assert_eq!(
        *events.0.lock().unwrap(),
        [
            format!("acquire {id}"),
            format!("checkout {id}"),
            "timeout 15ms".to_owned(),
            format!("checkin {id}"),
            format!("release {id}"),
        ]
    );
}

#[test]
fn extensions_live_as_long_as_the_connection() {
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(Shared(manager()))
        .unwrap();
    let mut conn = pool.get().unwrap();
    r2d2::PooledConnection::extensions_mut(&mut conn).insert(7u8);
    drop(conn);
    let mut conn = pool.get().unwrap();
    assert_eq!(
        r2d2::PooledConnection::extensions(&conn).get::<u8>(),
        Some(&7)
    );
    // Gone with the connection.
    r2d2::PooledConnection::extensions_mut(&mut conn).insert(8u8);
    conn.broken = true;
    drop(conn);
    let conn = pool.get_timeout(SOON).unwrap();
    assert_eq!(r2d2::PooledConnection::extensions(&conn).get::<u8>(), None);
}

#[test]
fn the_getters_report_the_settings() {
    let pool = r2d2::Pool::builder()
        .max_size(7)
        .min_idle(Some(3))
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(5)))
        .max_lifetime(None)
        .connection_timeout(Duration::from_secs(2))
        .build(Shared(manager()))
        .unwrap();
    assert_eq!(pool.max_size(), 7);
    assert_eq!(pool.min_idle(), Some(3));
    assert!(!pool.test_on_check_out());
    assert_eq!(pool.idle_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(pool.max_lifetime(), None);
    assert_eq!(pool.connection_timeout(), Duration::from_secs(2));
    let default = r2d2::Pool::new(Shared(manager())).unwrap();
    assert_eq!(default.min_idle(), None, "unset, as r2d2 reports it");
}

#[test]
fn test_on_check_out_checks_every_borrow() {
    #[derive(Debug, Default)]
    struct Counting(AtomicU32);
    impl r2d2::ManageConnection for Counting {
        type Connection = ();
        type Error = std::io::Error;
        fn connect(&self) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn has_broken(&self, _: &mut ()) -> bool {
            false
        }
    }
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(Counting::default())
        .unwrap();
    for _ in 0..10 {
        drop(pool.get().unwrap());
    }
    assert_eq!(pool.manager().0.load(Ordering::SeqCst), 10);
}
