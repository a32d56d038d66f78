//! Smoke tests of the examples: each built example binary is run with tiny parameters
//! and its exit status and output are checked.
//!
//! `cargo test --all-features` builds the examples before running any test; their
//! binaries sit next to this test's executable (`target/<profile>/deps/..` →
//! `../examples/<name>`). A test whose example was not built (a narrower
//! `cargo test --test examples`) fails with a message saying how to build it.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of the built example `name`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable is in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "example binary {} not found: run `cargo test --all-features` (which builds the \
         examples) or `cargo build --all-features --examples` first",
        path.display()
    );
    path
}

/// Runs example `name` with `args` and returns its output, with the output shown on
/// failure.
fn run(name: &str, args: &[&str]) -> Output {
    let output = Command::new(example(name))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    eprintln!(
        "$ {name} {}\n--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The cells of the report row starting with `label`.
#[cfg(feature = "compare")]
fn row<'a>(report: &'a str, label: &str) -> Vec<&'a str> {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` row in the report"));
    line[label.len()..].split_whitespace().collect()
}

#[cfg(feature = "compare")]
mod demo {
    use super::*;

    /// Checks a successful report with `pools` columns and no errors.
    fn check_report(output: &Output, pools: usize) -> String {
        assert!(output.status.success(), "demo failed: {}", output.status);
        let report = stdout(output);
        let ops = row(&report, "ops");
        assert!(ops.len() >= pools, "one ops cell per pool");
        for cell in &ops[..pools] {
            let n: u64 = cell.parse().expect("ops is a number");
            assert!(n > 0, "no operations completed");
        }
        assert_eq!(&row(&report, "errors")[..pools], vec!["0"; pools]);
        assert!(report.contains("wait p99"));
        assert!(report.contains("stickypool pool.stats(): borrows"));
        report
    }

    #[test]
    fn sqlite_runs_and_reports() {
        let out = run(
            "demo",
            &[
                "--threads",
                "8",
                "--connections",
                "2",
                "--seconds",
                "0.3",
                "--quiet",
            ],
        );
        let report = check_report(&out, 1);
        assert!(report.contains("8 threads, 2 connections"));
        // stderr is not a terminal here, so no progress bar was drawn.
        assert!(stderr(&out).is_empty(), "nothing on stderr");
    }

    #[test]
    fn compare_with_r2d2_prints_both_and_the_ratio() {
        let out = run(
            "demo",
            &[
                "--threads",
                "4",
                "--connections",
                "2",
                "--seconds",
                "0.2",
                "--compare",
                "r2d2",
            ],
        );
        let report = check_report(&out, 2);
        assert!(report.contains("stickypool/r2d2"));
        assert!(report.contains("the operations per second of r2d2"));
    }

    #[test]
    fn redis_backend() {
        let Some(url) = support::redis_url("demo redis_backend") else {
            return;
        };
        let out = run(
            "demo",
            &[
                "--backend",
                "redis",
                "--url",
                &url,
                "--threads",
                "4",
                "--seconds",
                "0.3",
            ],
        );
        check_report(&out, 1);
    }

    #[test]
    fn mysql_backend() {
        let Some(url) = support::mysql_url("demo mysql_backend") else {
            return;
        };
        let out = run(
            "demo",
            &[
                "--backend",
                "mysql",
                "--url",
                &url,
                "--threads",
                "4",
                "--seconds",
                "0.3",
            ],
        );
        check_report(&out, 1);
    }

    #[test]
    fn help_and_bad_flags() {
        let out = run("demo", &["--help"]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("Usage: demo"));

        for (args, message) in [
            (&["--bogus"][..], "unknown argument `--bogus`"),
            (
                &["--threads", "zero"],
                "--threads: expected a positive whole number",
            ),
            (&["--threads"], "--threads needs a value"),
            (&["--backend", "postgres"], "unknown backend `postgres`"),
            (&["--compare", "bb8"], "can only compare with `r2d2`"),
        ] {
            let out = run("demo", args);
            assert_eq!(out.status.code(), Some(2), "{args:?} exits with 2");
            assert!(stderr(&out).contains(message), "{args:?} says {message:?}");
        }
    }

    #[test]
    fn a_server_backend_without_a_url_is_a_clear_error() {
        let out = Command::new(example("demo"))
            .args(["--backend", "redis", "--seconds", "0.1"])
            .env_remove("STICKYPOOL_REDIS_URL")
            .output()
            .expect("run demo");
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("pass --url or set STICKYPOOL_REDIS_URL"));
    }
}

#[cfg(feature = "sqlite")]
mod jobs {
    use super::*;

    #[test]
    fn crashed_and_failed_jobs_leave_nothing_behind() {
        let out = run("jobs", &["--jobs", "8", "--workers", "2"]);
        assert!(out.status.success(), "jobs failed: {}", out.status);
        let report = stdout(&out);
        assert!(report.contains("all checks passed"));
        assert!(!report.contains("FAILED"));
        assert!(report.contains("job   2 panicked: 0 rows"));
        assert!(report.contains("job   3 returned an error"));
        assert!(report.contains("connections discarded: 1"));
        // The panic is the simulated one, caught by the worker.
        assert!(stderr(&out).contains("simulated crash before COMMIT"));
    }

    #[test]
    fn bad_flags_exit_with_2() {
        let out = run("jobs", &["--workers", "0"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--workers: expected a whole number from 1 to 256"));
    }
}
