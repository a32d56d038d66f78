// A small service written against r2d2 0.8's API, compiled twice by `tests/r2d2_port.rs`:
// once with `use r2d2;` and once with `use stickypool::compat as r2d2;`. Nothing here
// may name either crate; only the `use` line of the including module differs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2d2::event::{CheckinEvent, CheckoutEvent, TimeoutEvent};

#[derive(Debug, Default)]
pub struct Counters {
    pub connects: Mutex<u32>,
    pub errors: Mutex<Vec<String>>,
    pub checkouts: Mutex<Vec<u64>>,
    pub checkins: Mutex<Vec<(u64, Duration)>>,
    pub timeouts: Mutex<Vec<Duration>>,
}

#[derive(Debug)]
pub struct Conn {
    pub id: u32,
    pub queries: Vec<String>,
}

#[derive(Debug)]
pub struct Manager {
    pub counters: Arc<Counters>,
    pub refuse: bool,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = std::io::Error;

    fn connect(&self) -> Result<Conn, std::io::Error> {
        if self.refuse {
            return Err(std::io::Error::other("connection refused"));
        }
        let mut connects = self.counters.connects.lock().unwrap();
        *connects += 1;
        Ok(Conn {
            id: *connects,
            queries: Vec::new(),
        })
    }

    fn is_valid(&self, _: &mut Conn) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct Handler(pub Arc<Counters>);

impl r2d2::HandleEvent for Handler {
    fn handle_checkout(&self, event: CheckoutEvent) {
        self.0.checkouts.lock().unwrap().push(event.connection_id());
    }

    fn handle_checkin(&self, event: CheckinEvent) {
        let seen = (event.connection_id(), event.duration());
        self.0.checkins.lock().unwrap().push(seen);
    }

    fn handle_timeout(&self, event: TimeoutEvent) {
        self.0.timeouts.lock().unwrap().push(event.timeout());
    }
}

#[derive(Debug)]
pub struct Errors(pub Arc<Counters>);

impl r2d2::HandleError<std::io::Error> for Errors {
    fn handle_error(&self, error: std::io::Error) {
        self.0.errors.lock().unwrap().push(error.to_string());
    }
}

#[derive(Debug)]
pub struct Greeter;

impl r2d2::CustomizeConnection<Conn, std::io::Error> for Greeter {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), std::io::Error> {
        conn.queries.push("SET NAMES utf8mb4".to_owned());
        Ok(())
    }
}

pub type DbPool = r2d2::Pool<Manager>;
pub type DbConn = r2d2::PooledConnection<Manager>;

/// Application state holding the pool, as web frameworks do.
#[derive(Clone)]
pub struct AppState {
    pub pool: DbPool,
}

/// A unit of work that owns its connection: stored in a struct, sent to a thread.
pub struct Job {
    pub conn: DbConn,
}

/// Per-connection state kept in the connection's extensions.
pub struct Served(pub u32);

pub fn build(counters: &Arc<Counters>, refuse: bool) -> Result<AppState, r2d2::Error> {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_millis(200))
        .idle_timeout(Some(Duration::from_secs(600)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .test_on_check_out(true)
        .event_handler(Box::new(Handler(counters.clone())))
        .error_handler(Box::new(Errors(counters.clone())))
        .connection_customizer(Box::new(Greeter))
        .build(Manager {
            counters: counters.clone(),
            refuse,
        })?;
    Ok(AppState { pool })
}

pub fn handle_request(state: &AppState) -> Result<u32, r2d2::Error> {
    let mut conn: DbConn = state.pool.get()?;
    conn.queries.push("SELECT 1".to_owned());
    let served = match r2d2::PooledConnection::extensions_mut(&mut conn).get_mut::<Served>() {
        Some(served) => {
            served.0 += 1;
            served.0
        }
        None => {
            r2d2::PooledConnection::extensions_mut(&mut conn).insert(Served(1));
            1
        }
    };
    Ok(served)
}

pub fn run_job_on_a_thread(state: &AppState) -> Result<usize, r2d2::Error> {
    let job = Job {
        conn: state.pool.get()?,
    };
    let handle = std::thread::spawn(move || {
        let mut job = job;
        job.conn.queries.push("UPDATE jobs SET done = 1".to_owned());
        job.conn.queries.len()
    });
    Ok(handle.join().expect("the job thread"))
}

pub fn settings(state: &AppState) -> (u32, Option<u32>, Duration, bool) {
    let pool = &state.pool;
    (
        pool.max_size(),
        pool.min_idle(),
        pool.connection_timeout(),
        pool.test_on_check_out(),
    )
}

pub fn busy_error(state: &AppState) -> Option<String> {
    let _a = state.pool.get().ok()?;
    let _b = state.pool.get().ok()?;
    assert!(state.pool.try_get().is_none());
    state
        .pool
        .get_timeout(Duration::from_millis(20))
        .err()
        .map(|e| e.to_string())
}

pub fn idle_count(state: &AppState) -> u32 {
    state.pool.state().idle_connections
}
