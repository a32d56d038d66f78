//! A scriptable fake manager: fails connect, ping and reset on command, can block in
//! connect, and counts every open and close so tests can check nothing leaks.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use stickypool::{ManageConnection, ResetAction};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FakeError(pub String);

#[derive(Debug, Default)]
pub struct Script {
    pub fail_connect: AtomicBool,
    pub fail_valid: AtomicBool,
    pub fail_reset: AtomicBool,
    /// How long each connect takes, in microseconds.
    pub connect_delay_us: AtomicU64,
    /// Connects block while this is set (see `release_connects`).
    pub block_connect: Mutex<bool>,
    unblocked: Condvar,
    pub opened: AtomicU64,
    pub connect_attempts: AtomicU64,
    pub valid_calls: AtomicU64,
    /// Times each connection id was closed (dropped).
    pub closes: Mutex<HashMap<u64, u32>>,
    pub resets: Mutex<Vec<(u64, ResetAction)>>,
    /// Connection ids whose next `is_valid` fails.
    pub dead: Mutex<Vec<u64>>,
    /// Hooks (`"connect"`, `"is_valid"`, `"has_broken"`, `"can_reset"`, `"reset"`, `"drop"`, and the
    /// customizer's and handler's method names) that panic, with how many more times.
    pub panics: Mutex<HashMap<&'static str, u32>>,
    /// Connect attempts (numbered from 1, in the order they start) that fail.
    pub fail_attempts: Mutex<Vec<u64>>,
    /// The bound the pool passed to each `is_valid_within`.
    pub check_timeouts: Mutex<Vec<Duration>>,
}

impl Script {
    /// Makes `hook` panic the next `times` times it runs.
    pub fn panic_in(&self, hook: &'static str, times: u32) {
        self.panics.lock().unwrap().insert(hook, times);
    }

    /// Panics if `hook` is scripted to.
    pub fn maybe_panic(&self, hook: &'static str) {
        let mut panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left) = panics.get_mut(hook)
            && *left > 0
        {
            *left -= 1;
            drop(panics);
            panic!("{hook} panicked (scripted)");
        }
    }

    pub fn closed(&self) -> u64 {
        self.closes
            .lock()
            .unwrap()
            .values()
            .map(|&n| u64::from(n))
            .sum()
    }

    pub fn live(&self) -> u64 {
        self.opened.load(Ordering::SeqCst) - self.closed()
    }

    pub fn block_connects(&self) {
        *self.block_connect.lock().unwrap() = true;
    }

    pub fn release_connects(&self) {
        *self.block_connect.lock().unwrap() = false;
        self.unblocked.notify_all();
    }

    /// Every connection opened was closed exactly once.
    pub fn assert_all_closed_once(&self) {
        let closes = self.closes.lock().unwrap();
        let opened = self.opened.load(Ordering::SeqCst);
        assert_eq!(
            closes.len() as u64,
            opened,
            "every opened connection closed"
        );
        for (id, &n) in closes.iter() {
            assert_eq!(n, 1, "connection {id} closed {n} times");
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FakeManager {
    pub script: Arc<Script>,
}

#[derive(Debug)]
pub struct FakeConn {
    pub id: u64,
    /// The connect attempt that opened it, numbered as `Script::connect_attempts`
    /// counts them: compared with that counter, it tells whether the connect started
    /// before or after some point (a `retire_all`, say).
    pub attempt: u64,
    pub broken: bool,
    pub in_transaction: bool,
    pub data: Vec<u32>,
    script: Arc<Script>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        *self
            .script
            .closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.id)
            .or_default() += 1;
        self.script.maybe_panic("drop");
    }
}

impl FakeManager {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ManageConnection for FakeManager {
    type Connection = FakeConn;
    type Error = FakeError;

    fn connect(&self) -> Result<FakeConn, FakeError> {
        let script = &self.script;
        let attempt = script.connect_attempts.fetch_add(1, Ordering::SeqCst) + 1;
        script.maybe_panic("connect");
        if script.fail_attempts.lock().unwrap().contains(&attempt) {
            return Err(FakeError(format!("attempt {attempt} refused (scripted)")));
        }
        let mut blocked = script.block_connect.lock().unwrap();
        while *blocked {
            blocked = script.unblocked.wait(blocked).unwrap();
        }
        drop(blocked);
        let delay = script.connect_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if script.fail_connect.load(Ordering::SeqCst) {
            return Err(FakeError("connection refused (scripted)".into()));
        }
        let id = script.opened.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(FakeConn {
            id,
            attempt,
            broken: false,
            in_transaction: false,
            data: Vec::new(),
            script: script.clone(),
        })
    }

    fn is_valid(&self, conn: &mut FakeConn) -> Result<(), FakeError> {
        self.script.valid_calls.fetch_add(1, Ordering::SeqCst);
        self.script.maybe_panic("is_valid");
        let mut dead = self.script.dead.lock().unwrap();
        if let Some(pos) = dead.iter().position(|&id| id == conn.id) {
            dead.remove(pos);
            return Err(FakeError(format!("connection {} is dead", conn.id)));
        }
        if self.script.fail_valid.load(Ordering::SeqCst) {
            return Err(FakeError("ping failed (scripted)".into()));
        }
        Ok(())
    }

    fn is_valid_within(&self, conn: &mut FakeConn, timeout: Duration) -> Result<(), FakeError> {
        self.script.check_timeouts.lock().unwrap().push(timeout);
        self.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut FakeConn) -> bool {
        self.script.maybe_panic("has_broken");
        conn.broken
    }

    fn can_reset(&self) -> bool {
        self.script.maybe_panic("can_reset");
        true
    }

    fn reset(&self, conn: &mut FakeConn, action: ResetAction) -> Result<(), FakeError> {
        self.script.resets.lock().unwrap().push((conn.id, action));
        self.script.maybe_panic("reset");
        if self.script.fail_reset.load(Ordering::SeqCst) {
            return Err(FakeError("reset failed (scripted)".into()));
        }
        match action {
            ResetAction::Rollback | ResetAction::Session => conn.data.clear(),
            _ => {} // commit, keep as it is
        }
        conn.in_transaction = false;
        Ok(())
    }
}

/// Polls `condition` every millisecond until it holds or `within` passes.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A generous deadline for things that should happen "soon" on a loaded machine.
pub const SOON: Duration = Duration::from_secs(10);
