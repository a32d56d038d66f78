//! `tracing` spans around the pool's slow work (feature `tracing`): waiting for a
//! connection, connecting, checking and resetting one, with structured fields
//! (`pool`, `conn_id`, `waited_ms`, `attempt`, `action`), and an event when one is
//! closed (`reason`). All at `debug` level, target `stickypool`.
//!
//! Nothing here is on the fast path: an uncontended borrow neither waits nor connects,
//! and the check and the reset are round trips to the server. Without the feature the
//! macros expand to nothing.

/// A span (not yet entered) named `$name` with `tracing`'s field syntax.
#[cfg(feature = "tracing")]
macro_rules! span {
    ($name:literal, $($field:tt)*) => {
        ::tracing::debug_span!(target: "stickypool", $name, $($field)*)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! span {
    ($($ignored:tt)*) => {
        $crate::trace::NoSpan
    };
}

/// An event with `tracing`'s field syntax.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($($field:tt)*) => {
        ::tracing::debug!(target: "stickypool", $($field)*)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($($ignored:tt)*) => {};
}

pub(crate) use {event, span};

/// What `span!` gives without the feature: enters nothing, records nothing.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;

#[cfg(not(feature = "tracing"))]
impl NoSpan {
    pub(crate) fn entered(self) -> NoSpan {
        self
    }

    pub(crate) fn record<V>(&self, _field: &str, _value: V) {}
}

/// The span of a borrow that waits, recording how long when it ends.
pub(crate) struct Waiting {
    #[cfg(feature = "tracing")]
    span: tracing::span::EnteredSpan,
    #[cfg(feature = "tracing")]
    started: std::time::Instant,
}

impl Waiting {
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn start(pool: &str, started: std::time::Instant) -> Waiting {
        Waiting {
            #[cfg(feature = "tracing")]
            span: span!("wait", pool = %pool, waited_ms = tracing::field::Empty).entered(),
            #[cfg(feature = "tracing")]
            started,
        }
    }
}

#[cfg(feature = "tracing")]
impl Drop for Waiting {
    fn drop(&mut self) {
        let waited = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.span.record("waited_ms", waited);
    }
}
