//! Pool events, r2d2's `event` module: the handler trait and what it is given. Every
//! name is also at the crate root.
//!
//! The event types have r2d2's accessor methods (`connection_id()`, `duration()`,
//! `age()`, `timeout()`) and, as stickypool's additions, public fields and
//! `ReleaseEvent::reason`, `TimeoutEvent::waited`.

use std::fmt;
use std::time::Duration;

use crate::manager::CloseReason;

/// A connection was opened.
#[derive(Debug, Clone, Copy)]
pub struct AcquireEvent {
    /// The connection's id, unique within the pool.
    pub id: u64,
}

impl AcquireEvent {
    /// The connection's id (r2d2's accessor).
    #[inline]
    pub fn connection_id(&self) -> u64 {
        self.id
    }
}

/// A connection was closed.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseEvent {
    /// The connection's id.
    pub id: u64,
    /// How long it lived.
    pub age: Duration,
    /// Why it was closed.
    pub reason: CloseReason,
}

impl ReleaseEvent {
    /// The connection's id (r2d2's accessor).
    #[inline]
    pub fn connection_id(&self) -> u64 {
        self.id
    }

    /// How long the connection lived (r2d2's accessor).
    #[inline]
    pub fn age(&self) -> Duration {
        self.age
    }

    /// Why it was closed.
    #[inline]
    pub fn reason(&self) -> CloseReason {
        self.reason
    }
}

/// A connection was borrowed.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutEvent {
    /// The connection's id.
    pub id: u64,
    /// How long the borrower waited; zero for a borrow that took an idle connection
    /// at once (the fast path reads no clock).
    pub duration: Duration,
}

impl CheckoutEvent {
    /// The connection's id (r2d2's accessor).
    #[inline]
    pub fn connection_id(&self) -> u64 {
        self.id
    }

    /// How long the borrower waited (r2d2's accessor; see the field).
    #[inline]
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// A connection came back.
#[derive(Debug, Clone, Copy)]
pub struct CheckinEvent {
    /// The connection's id.
    pub id: u64,
    /// How long it was held, from the end of the borrow to the start of the return.
    pub duration: Duration,
}

impl CheckinEvent {
    /// The connection's id (r2d2's accessor).
    #[inline]
    pub fn connection_id(&self) -> u64 {
        self.id
    }

    /// How long the connection was held (r2d2's accessor).
    #[inline]
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

/// A borrower gave up waiting.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutEvent {
    /// The timeout the borrow asked for (`connection_timeout`, or `get_timeout`'s).
    pub timeout: Duration,
    /// How long it waited (at least `timeout`).
    pub waited: Duration,
}

impl TimeoutEvent {
    /// The timeout of the borrow that failed (r2d2's accessor).
    #[inline]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long the borrow waited.
    #[inline]
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Receives pool events, r2d2's `HandleEvent`. Methods run on the thread where the
/// event happens, so they should be quick. When no handler is set the pool does not
/// build events at all.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use stickypool::{CheckinEvent, CheckoutEvent, HandleEvent, ManageConnection, Pool};
/// # #[derive(Debug)] struct Manager;
/// # impl ManageConnection for Manager {
/// #     type Connection = ();
/// #     type Error = std::io::Error;
/// #     fn connect(&self) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> { Ok(()) }
/// #     fn has_broken(&self, _: &mut ()) -> bool { false }
/// # }
///
/// /// Counts borrows and returns, for a dashboard.
/// #[derive(Debug, Default)]
/// struct Borrows(Mutex<(u32, u32)>);
///
/// impl HandleEvent for Borrows {
///     fn handle_checkout(&self, _: CheckoutEvent) {
///         self.0.lock().unwrap().0 += 1;
///     }
///     fn handle_checkin(&self, _: CheckinEvent) {
///         self.0.lock().unwrap().1 += 1;
///     }
/// }
///
/// let events = Arc::new(Borrows::default());
/// let pool = Pool::builder()
///     .event_handler(Box::new(events.clone()))
///     .build(Manager)?;
/// drop(pool.get()?);
/// assert_eq!(*events.0.lock().unwrap(), (1, 1));
/// # Ok::<(), stickypool::Error>(())
/// ```
pub trait HandleEvent: fmt::Debug + Send + Sync + 'static {
    /// A connection was opened.
    fn handle_acquire(&self, event: AcquireEvent) {
        let _ = event;
    }
    /// A connection was closed.
    fn handle_release(&self, event: ReleaseEvent) {
        let _ = event;
    }
    /// A connection was borrowed.
    fn handle_checkout(&self, event: CheckoutEvent) {
        let _ = event;
    }
    /// A connection came back.
    fn handle_checkin(&self, event: CheckinEvent) {
        let _ = event;
    }
    /// A borrower timed out.
    fn handle_timeout(&self, event: TimeoutEvent) {
        let _ = event;
    }
}

/// A shared handler, so one can be kept by the caller (to read what it gathered) and
/// given to a pool.
impl<T: HandleEvent + ?Sized> HandleEvent for std::sync::Arc<T> {
    fn handle_acquire(&self, event: AcquireEvent) {
        (**self).handle_acquire(event)
    }
    fn handle_release(&self, event: ReleaseEvent) {
        (**self).handle_release(event)
    }
    fn handle_checkout(&self, event: CheckoutEvent) {
        (**self).handle_checkout(event)
    }
    fn handle_checkin(&self, event: CheckinEvent) {
        (**self).handle_checkin(event)
    }
    fn handle_timeout(&self, event: TimeoutEvent) {
        (**self).handle_timeout(event)
    }
}

/// An event handler that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopEventHandler;

impl HandleEvent for NopEventHandler {}
