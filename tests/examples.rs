//! Smoke tests of the examples: each built example binary is run with tiny parameters
//! and its exit status and output are checked.
//!
//! `cargo test --all-features` builds the examples before running any test; their
//! binaries sit next to this test's executable (`target/<profile>/deps/..` →
//! `../examples/<name>`). A test whose example was not built (a narrower
//! `cargo test --test examples`) fails with a message saying how to build it.

// Every test needs an example's features; without them only the helpers remain.
#![cfg_attr(not(feature = "sqlite"), allow(dead_code))]

mod servers;

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
#[cfg(all(feature = "sqlite", feature = "redis", feature = "mysql"))]
fn row<'a>(report: &'a str, label: &str) -> Vec<&'a str> {
    let line = report
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` row in the report"));
    line[label.len()..].split_whitespace().collect()
}

#[cfg(all(feature = "sqlite", feature = "redis", feature = "mysql"))]
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
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("plots/waits.svg");
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
                "--svg",
                svg.to_str().unwrap(),
            ],
        );
        let report = check_report(&out, 2);
        assert!(report.contains("stickypool/r2d2"));
        assert!(report.contains("the operations per second of r2d2"));
        assert!(report.contains("time per operation"), "{report}");
        assert!(report.contains("p99 wait in get()"), "{report}");
        // The wait-time CDFs of both pools, where the report says.
        assert!(report.contains(&format!("wait-time CDF: {}", svg.display())));
        let plot = std::fs::read_to_string(&svg).expect("the SVG was written");
        assert!(plot.starts_with("<svg"), "an SVG document");
        assert!(
            plot.contains("stickypool") && plot.contains("r2d2"),
            "both pools named"
        );
        assert!(plot.matches("<polyline").count() >= 2, "a curve per pool");
    }

    #[test]
    fn redis_backend() {
        let Some(url) = servers::redis_url("demo redis_backend") else {
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
        let Some(url) = servers::mysql_url("demo mysql_backend") else {
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
mod worker_threads {
    use super::*;

    #[test]
    fn every_job_writes_its_row_and_the_summary_adds_up() {
        let out = run("worker_threads", &["50"]);
        assert!(
            out.status.success(),
            "worker_threads failed: {}",
            out.status
        );
        let report = stdout(&out);
        assert!(report.contains("50 of 50 rows written, 0 jobs failed"));
        // Both connections back in the pool; 52 borrows: the CREATE TABLE, the 50 jobs
        // and the final count.
        assert!(
            report.contains("pool.state(): State { connections: 2, idle_connections: 2, in_use: 0")
        );
        assert!(report.contains("pool.stats(): borrows 52 "));
        assert!(stderr(&out).is_empty(), "no job failed");
    }
}

#[cfg(feature = "sqlite")]
mod http_minimal {
    use super::*;

    #[test]
    fn self_test_posts_and_lists_notes() {
        let out = run("http_minimal", &["--self-test"]);
        assert!(out.status.success(), "http_minimal failed: {}", out.status);
        let report = stdout(&out);
        assert!(report.starts_with("listening on http://127.0.0.1:"));
        assert!(report.contains("self-test passed"));
    }
}

#[cfg(feature = "sqlite")]
mod jobs {
    use super::*;

    #[test]
    fn crashed_and_failed_jobs_leave_nothing_behind() {
        let out = run("jobs", &[]);
        assert!(out.status.success(), "jobs failed: {}", out.status);
        let report = stdout(&out);
        assert!(report.contains("all checks passed"));
        assert!(!report.contains("FAILED"));
        assert!(report.contains("[ok] job   1 committed: 3 rows"));
        assert!(report.contains("[ok] job   2 panicked: 0 rows"));
        assert!(report.contains("[ok] job   3 returned an error: 0 rows"));
        assert!(report.contains("connections rolled back and kept after a panic: 1"));
        assert!(report.contains("connections closed: 0"));
        // The panic is the simulated one, caught by the worker.
        assert!(stderr(&out).contains("simulated crash before COMMIT"));
    }
}

#[cfg(all(
    feature = "toml",
    feature = "sqlite",
    feature = "redis",
    feature = "metrics"
))]
mod http_server {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::process::{Child, Stdio};
    use std::time::Duration;

    /// The running server, killed when dropped (also when the test fails).
    struct Running {
        child: Child,
        addr: String,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts the server on a free loopback port with `config`, in `dir`, and waits for
    /// its `listening on http://ADDR` line.
    fn start(config: &std::path::Path, dir: &std::path::Path) -> Running {
        let mut child = Command::new(example("http_server"))
            .args(["--addr", "127.0.0.1:0", "--workers", "4", "--config"])
            .arg(config)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start http_server");
        let stdout = child.stdout.take().expect("piped stdout");
        // Read the first line on a thread, so a server that never prints it fails the
        // test after a timeout instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut running = Running {
            child,
            addr: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("http_server printed its address within 20 s");
        running.addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        running
    }

    /// A minimal HTTP/1.1 client: one request per connection. Returns the status and
    /// the body.
    fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).expect("connect to http_server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {response:?}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, body.to_owned())
    }

    /// The value of `"key":` in a flat JSON text, as written.
    fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
        let start = json
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {json}"))
            + key.len()
            + 3;
        let rest = &json[start..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Drives every route; `redis` says whether the config has a Redis pool.
    fn exercise(server: &Running, redis: bool) {
        let addr = server.addr.as_str();
        let (status, body) = request(addr, "GET", "/health", "");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""status":"ok""#) && body.contains(r#""local":"#));

        let (status, first) = request(addr, "POST", "/notes", "first note");
        assert_eq!(status, 201, "{first}");
        let (status, second) = request(addr, "POST", "/notes", "a \"quoted\"\nsecond note");
        assert_eq!(status, 201, "{second}");
        assert_eq!(json_field(&second, "notes"), "2");
        if redis {
            let posted: i64 = json_field(&second, "posted").parse().expect("a count");
            let before: i64 = json_field(&first, "posted").parse().expect("a count");
            assert!(
                posted > before,
                "the Redis counter went up: {first} {second}"
            );
        } else {
            assert_eq!(json_field(&second, "posted"), "null");
        }

        // Several clients at once: the workers' SQLite transactions queue up on the
        // write lock (busy timeout) and every note lands.
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..5 {
                        let (status, body) =
                            request(addr, "POST", "/notes", &format!("note {t}-{i}"));
                        assert_eq!(status, 201, "{body}");
                    }
                });
            }
        });
        let (status, last) = request(addr, "POST", "/notes", "last note");
        assert_eq!(status, 201, "{last}");
        assert_eq!(json_field(&last, "notes"), "23");

        let (status, list) = request(addr, "GET", "/notes", "");
        assert_eq!(status, 200, "{list}");
        assert!(list.contains(r#""body":"first note""#), "{list}");
        assert!(
            list.contains(r#""body":"a \"quoted\"\nsecond note""#),
            "{list}"
        );
        if redis {
            assert_ne!(json_field(&list, "posted"), "null");
        }

        let (status, _) = request(addr, "POST", "/notes", "   ");
        assert_eq!(status, 400, "an empty note is refused");
        let (status, _) = request(addr, "DELETE", "/notes", "");
        assert_eq!(status, 405);
        let (status, _) = request(addr, "GET", "/nowhere", "");
        assert_eq!(status, 404);

        let (status, metrics) = request(addr, "GET", "/metrics", "");
        assert_eq!(status, 200);
        assert!(metrics.contains("stickypool_connections"), "{metrics}");
        assert!(metrics.contains("pool=\"local\""), "{metrics}");
        assert!(metrics.contains("http_requests_total"), "{metrics}");
        if redis {
            assert!(metrics.contains("pool=\"cache\""), "{metrics}");
        }
    }

    #[test]
    fn serves_notes_from_sqlite_without_redis() {
        let dir = servers::TempDir::new("http-sqlite");
        let config = dir.path().join("pools.toml");
        std::fs::write(
            &config,
            r#"
[pools.local]
backend = "sqlite"
path = "notes.db"
init = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;"
max_size = 4
min_idle = 1
reset_on_return = "rollback"
"#,
        )
        .unwrap();
        let server = start(&config, dir.path());
        exercise(&server, false);
        assert!(dir.path().join("notes.db").is_file());
    }

    #[test]
    fn serves_notes_with_the_shipped_config_and_redis() {
        if servers::redis_url("http_server with redis").is_none() {
            return;
        }
        // The config file shipped with the example, which reads STICKYPOOL_REDIS_URL;
        // run in a temporary directory so its relative SQLite path lands there.
        let dir = servers::TempDir::new("http-redis");
        let config =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http_server.toml");
        let server = start(&config, dir.path());
        exercise(&server, true);
    }

    #[test]
    fn bad_config_fails_at_start_naming_the_problem() {
        let dir = servers::TempDir::new("http-bad");
        let config = dir.path().join("pools.toml");
        std::fs::write(
            &config,
            "[pools.local]\nbackend = \"sqlite\"\npath = \"x.db\"\nmax_size = 0\n",
        )
        .unwrap();
        let out = Command::new(example("http_server"))
            .args(["--addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .expect("run http_server");
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("max_size"), "{}", stderr(&out));

        let out = run("http_server", &["--workers", "none"]);
        assert_eq!(out.status.code(), Some(2));
    }
}
