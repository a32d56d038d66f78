//! Calling user code (manager methods, customizer hooks, event handlers) so that a
//! panic in it cannot take a slot, a counter or a background job down with it.
//!
//! Every call the pool makes into user code goes through [`catch`]. A panic is caught
//! where it happens, so no unwinding ever passes through code that owns a slot; the
//! caller then treats the call as failed (a connect error, a broken connection, a
//! failed reset) and the pool counts and logs it. Because nothing unwinds out, a hook
//! that panics while its thread is already unwinding (a guard dropped during a panic)
//! cannot abort the process either.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A hook (a manager method, customizer or event handler) panicked. The pool recovered;
/// this is what [`Error::Connect`](crate::Error::Connect) carries when `connect` or
/// `on_acquire` panicked, and what the log line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPanic {
    hook: &'static str,
    message: String,
}

impl HookPanic {
    /// The hook that panicked, as `Trait::method`.
    pub fn hook(&self) -> &'static str {
        self.hook
    }

    /// The panic's message, if it had a string payload.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HookPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} panicked: {}", self.hook, self.message)
    }
}

impl std::error::Error for HookPanic {}

/// Runs user code, turning a panic into a [`HookPanic`] naming `hook`.
///
/// `AssertUnwindSafe` is right here: after a panic the pool does not use what the hook
/// may have left half-changed. A connection the hook had `&mut` to is closed, and the
/// pool's own state is not reachable from user code.
#[inline]
pub(crate) fn catch<R>(hook: &'static str, f: impl FnOnce() -> R) -> Result<R, HookPanic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| HookPanic {
        hook,
        message: message(payload),
    })
}

fn message(payload: Box<dyn Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string payload)".to_owned()
    };
    // A payload whose own drop panics must not unwind from here either.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_hook() {
        let e = catch("ManageConnection::connect", || -> u32 {
            panic!("boom {}", 7)
        })
        .unwrap_err();
        assert_eq!(e.hook(), "ManageConnection::connect");
        assert_eq!(e.message(), "boom 7");
        assert_eq!(e.to_string(), "ManageConnection::connect panicked: boom 7");
        assert_eq!(catch("x", || 3), Ok(3));
        let e = catch("x", || std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(e.message(), "(a non-string payload)");
    }
}
