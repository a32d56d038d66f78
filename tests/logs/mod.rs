//! Captures the `log` records of a test binary (one logger per process), so tests can
//! assert what the pool logged. Tests share the capture and filter on their own pool's
//! name.

#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

/// A captured record: its level and its formatted message.
pub type Record = (log::Level, String);

fn records() -> &'static Mutex<Vec<Record>> {
    static RECORDS: OnceLock<Mutex<Vec<Record>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        struct Capture;
        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                let line = (record.level(), record.args().to_string());
                records().lock().unwrap().push(line);
            }
            fn flush(&self) {}
        }
        static CAPTURE: Capture = Capture;
        log::set_logger(&CAPTURE).expect("the capture is the binary's only logger");
        log::set_max_level(log::LevelFilter::Trace);
        Mutex::new(Vec::new())
    })
}

/// Starts capturing (idempotent): call before the code whose logs a test checks.
pub fn capture() {
    records();
}

/// Every record captured so far.
pub fn all() -> Vec<Record> {
    records().lock().unwrap().clone()
}

/// Whether a record at `level` names pool `pool` (as `'pool'`) and contains `needle`.
pub fn logged(level: log::Level, pool: &str, needle: &str) -> bool {
    let pool = format!("'{pool}'");
    records()
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == level && m.contains(&pool) && m.contains(needle))
}
