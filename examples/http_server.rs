//! A blocking HTTP service on a fixed pool of worker threads, with its connection pools
//! declared in a TOML file, thread-bound connections and Prometheus metrics.
//!
//! * The pools come from a file (`--config`, default `examples/http_server.toml`):
//!   `Pools::from_toml_file` builds each one and opens its `min_idle` connections
//!   before the server accepts anything, so a wrong path or an unreachable Redis fails
//!   at start with a message naming the pool. `local` is the SQLite pool; `cache`, a
//!   Redis pool, is optional: without it the service runs and skips the counter.
//! * `--workers` threads (8 by default) each loop on `server.recv()` (tiny_http) and
//!   handle one request at a time: the thread-per-request model stickypool is built for.
//! * Handlers use `pool.bind()`: the first `bind` on a thread borrows a connection and
//!   binds it to the thread, and helper functions deeper down that `bind` the same pool
//!   get that same connection, and so its open transaction, without it being passed
//!   down. It goes back to the pool when the request's last guard drops.
//! * `GET /metrics` publishes every pool's state and counters (`Pools::publish_metrics`)
//!   and renders them with the request counters in Prometheus text format.
//!
//! Routes:
//!
//! | Route | Does |
//! |---|---|
//! | `GET /health` | `{"status":"ok","pools":{...}}` with each pool's connections |
//! | `POST /notes` | the body (UTF-8 text, at most 64 KiB) becomes a note in SQLite; `INCR`s a Redis counter; answers `201 {"id":..,"notes":..,"posted":..}` |
//! | `GET /notes` | the latest 100 notes from SQLite and the counter from Redis |
//! | `GET /metrics` | Prometheus text format |
//!
//! ```text
//! source scripts/servers.sh      # sets STICKYPOOL_REDIS_URL, used by the config file
//! cargo run --release --features toml,sqlite,redis,metrics --example http_server -- --addr 127.0.0.1:8080
//!
//! curl -d 'hello' http://127.0.0.1:8080/notes
//! curl http://127.0.0.1:8080/notes
//! curl http://127.0.0.1:8080/metrics
//! ```
//!
//! The first line on stdout is `listening on http://ADDR`, with the port the system
//! chose when `--addr` ends in `:0`. The server runs until it is killed.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use stickypool::backends::redis::RedisManager;
use stickypool::backends::sqlite::SqliteManager;
use stickypool::registry::LookupError;
use stickypool::{Pool, Pools};
use tiny_http::{Header, Method, Request, Response, Server};

const USAGE: &str = "\
A blocking HTTP service with pools from a TOML file, thread-bound connections and
Prometheus metrics.

Usage: http_server [OPTIONS]

Options:
  --config PATH    the pools file [default: examples/http_server.toml]
  --addr ADDR      where to listen; port 0 picks a free one [default: 127.0.0.1:8080]
  --workers N      worker threads handling requests [default: 8]
  -h, --help       print this help

Routes: GET /health, POST /notes (body: the note), GET /notes, GET /metrics
";

/// The largest note accepted.
const MAX_BODY: u64 = 64 * 1024;
/// The Redis key counting posted notes.
const POSTED_KEY: &str = "stickypool:example:notes_posted";

struct Options {
    config: PathBuf,
    addr: String,
    workers: usize,
}

/// What the handlers share: the pools, looked up once at start.
struct App<'a> {
    pools: &'a Pools,
    db: &'a Pool<SqliteManager>,
    cache: Option<&'a Pool<RedisManager>>,
    prometheus: PrometheusHandle,
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("http_server: {msg}\nRun `http_server --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match serve(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(opts: &Options) -> Result<(), Box<dyn std::error::Error>> {
    // Install the recorder before building the pools, so nothing published is lost.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Prefix("stickypool_".into()),
            stickypool::metrics::BUCKETS,
        )?
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;

    // Builds every pool and opens its `min_idle` connections: configuration mistakes
    // and unreachable servers fail here, with the pool's alias in the message.
    let pools = Pools::from_toml_file(&opts.config)
        .map_err(|e| format!("{}: {e}", opts.config.display()))?;
    let db = pools.sqlite("local")?;
    let cache = match pools.redis("cache") {
        Ok(pool) => Some(pool),
        // No Redis pool configured: run without the counter.
        Err(LookupError::UnknownAlias { .. }) => None,
        // A `cache` pool of another backend is a mistake worth stopping for.
        Err(e) => return Err(e.into()),
    };
    db.get()?.execute_batch(
        "CREATE TABLE IF NOT EXISTS notes (
             id INTEGER PRIMARY KEY,
             body TEXT NOT NULL,
             created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
         )",
    )?;

    let server =
        Server::http(&opts.addr).map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| opts.addr.clone(), |a| a.to_string());
    // The first line of output, which scripts and the smoke test wait for.
    println!("listening on http://{addr}");
    eprintln!(
        "{} workers; pools: {}; redis counter {}",
        opts.workers,
        pools.aliases().collect::<Vec<_>>().join(", "),
        if cache.is_some() {
            "on"
        } else {
            "off (no `cache` pool)"
        },
    );

    let app = App {
        pools: &pools,
        db,
        cache,
        prometheus,
    };
    std::thread::scope(|s| {
        for i in 0..opts.workers {
            let (server, app) = (&server, &app);
            std::thread::Builder::new()
                .name(format!("http-worker-{i}"))
                .spawn_scoped(s, move || {
                    loop {
                        match server.recv() {
                            Ok(request) => handle(app, request),
                            Err(e) => {
                                eprintln!("http_server: accepting a request failed: {e}");
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
                .expect("spawn a worker thread");
        }
    });
    Ok(())
}

/// A response before it is sent.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Why a request failed, and the status it maps to.
enum Failure {
    /// No connection within the pool's `connection_timeout`, or the pool is closed.
    Unavailable(stickypool::Error),
    BadRequest(String),
    TooLarge,
    Backend(String),
}

impl From<stickypool::Error> for Failure {
    fn from(e: stickypool::Error) -> Failure {
        Failure::Unavailable(e)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Backend(format!("sqlite: {e}"))
    }
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Failure {
        Failure::Backend(format!("redis: {e}"))
    }
}

impl From<Failure> for Reply {
    fn from(f: Failure) -> Reply {
        match f {
            Failure::Unavailable(e) => Reply::text(503, format!("{e}\n")),
            Failure::BadRequest(why) => Reply::text(400, format!("{why}\n")),
            Failure::TooLarge => Reply::text(413, format!("a note is at most {MAX_BODY} bytes\n")),
            Failure::Backend(e) => {
                eprintln!("http_server: {e}");
                Reply::text(500, "internal error\n")
            }
        }
    }
}

fn handle(app: &App<'_>, mut request: Request) {
    let started = Instant::now();
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    let (route, result) = match (request.method(), path.as_str()) {
        (Method::Get, "/health") => ("/health", Ok(health(app))),
        (Method::Post, "/notes") => (
            "/notes",
            read_body(&mut request).and_then(|b| post_note(app, &b)),
        ),
        (Method::Get, "/notes") => ("/notes", list_notes(app)),
        (Method::Get, "/metrics") => ("/metrics", Ok(render_metrics(app))),
        (_, "/health" | "/notes" | "/metrics") => {
            ("other", Ok(Reply::text(405, "method not allowed\n")))
        }
        _ => ("other", Ok(Reply::text(404, "not found\n"))),
    };
    let reply = result.unwrap_or_else(Reply::from);

    metrics::counter!("http_requests_total", "route" => route, "status" => reply.status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed());

    let content_type =
        Header::from_bytes("Content-Type", reply.content_type).expect("a valid header");
    let response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(content_type);
    if let Err(e) = request.respond(response) {
        // The client went away; nothing to do but note it.
        eprintln!("http_server: sending the response failed: {e}");
    }
}

fn read_body(request: &mut Request) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    // Read at most one byte more than allowed, to tell "too large" without reading
    // whatever a client sends.
    request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::BadRequest(format!("cannot read the body: {e}")))?;
    if bytes.len() as u64 > MAX_BODY {
        return Err(Failure::TooLarge);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::BadRequest("the note must be UTF-8 text".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Failure::BadRequest(
            "the note is empty: send it as the request body".into(),
        ));
    }
    Ok(text.to_owned())
}

fn health(app: &App<'_>) -> Reply {
    let pools: Vec<String> = app
        .pools
        .states()
        .map(|(alias, s)| {
            format!(
                r#""{}":{{"connections":{},"idle":{},"in_use":{},"max_size":{}}}"#,
                json_escape(alias),
                s.connections,
                s.idle_connections,
                s.in_use,
                s.max_size
            )
        })
        .collect();
    Reply::json(
        200,
        format!(r#"{{"status":"ok","pools":{{{}}}}}"#, pools.join(",")),
    )
}

/// `POST /notes`: the note and the count of notes in one SQLite transaction, then the
/// Redis counter.
fn post_note(app: &App<'_>, body: &str) -> Result<Reply, Failure> {
    // Bind a connection to this thread for the request. `insert_note` and `count_notes`
    // bind the pool again and get this same connection, so they run inside the
    // transaction begun here. If anything fails before COMMIT, the `?` drops the guard
    // with the transaction open and the pool rolls it back (`reset_on_return =
    // "rollback"` in the config file) before the connection is used again.
    let db = app.db.bind()?;
    db.borrow().execute_batch("BEGIN IMMEDIATE")?;
    let id = insert_note(app.db, body)?;
    let notes = count_notes(app.db)?;
    db.borrow().execute_batch("COMMIT")?;
    drop(db); // back to the pool before talking to Redis

    let posted = match app.cache {
        Some(cache) => {
            let conn = cache.bind()?;
            let n: i64 = redis::cmd("INCR")
                .arg(POSTED_KEY)
                .query(&mut *conn.borrow_mut())?;
            n.to_string()
        }
        None => "null".to_owned(),
    };
    Ok(Reply::json(
        201,
        format!(r#"{{"id":{id},"notes":{notes},"posted":{posted}}}"#),
    ))
}

/// Deep in the call stack: no connection parameter, the thread's bound one is used.
fn insert_note(db: &Pool<SqliteManager>, body: &str) -> Result<i64, Failure> {
    let conn = db.bind()?;
    let conn = conn.borrow();
    conn.execute("INSERT INTO notes (body) VALUES (?1)", [body])?;
    Ok(conn.last_insert_rowid())
}

fn count_notes(db: &Pool<SqliteManager>) -> Result<i64, Failure> {
    let conn = db.bind()?;
    let n = conn
        .borrow()
        .query_row("SELECT count(*) FROM notes", [], |row| row.get(0))?;
    Ok(n)
}

/// `GET /notes`: the latest notes, and the Redis counter.
fn list_notes(app: &App<'_>) -> Result<Reply, Failure> {
    let notes = {
        let conn = app.db.bind()?;
        let conn = conn.borrow();
        let mut stmt = conn
            .prepare_cached("SELECT id, body, created_at FROM notes ORDER BY id DESC LIMIT 100")?;
        let rows = stmt.query_map([], |row| {
            Ok(format!(
                r#"{{"id":{},"body":"{}","created_at":"{}"}}"#,
                row.get::<_, i64>(0)?,
                json_escape(&row.get::<_, String>(1)?),
                json_escape(&row.get::<_, String>(2)?),
            ))
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let posted = match app.cache {
        Some(cache) => {
            let conn = cache.bind()?;
            let n: Option<i64> = redis::cmd("GET")
                .arg(POSTED_KEY)
                .query(&mut *conn.borrow_mut())?;
            n.unwrap_or(0).to_string()
        }
        None => "null".to_owned(),
    };
    Ok(Reply::json(
        200,
        format!(r#"{{"notes":[{}],"posted":{posted}}}"#, notes.join(",")),
    ))
}

/// `GET /metrics`: publish the pools' current numbers, then render everything.
fn render_metrics(app: &App<'_>) -> Reply {
    app.pools.publish_metrics();
    // Drains the exporter's histogram buffers; the exporter leaves scheduling it to us.
    app.prometheus.run_upkeep();
    Reply {
        status: 200,
        content_type: "text/plain; version=0.0.4",
        body: app.prometheus.render(),
    }
}

/// Escapes a string for a JSON string literal.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `Ok(None)` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut opts = Options {
        config: PathBuf::from("examples/http_server.toml"),
        addr: "127.0.0.1:8080".to_owned(),
        workers: 8,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--config" => opts.config = PathBuf::from(value()?),
            "--addr" => opts.addr = value()?,
            "--workers" => {
                let v = value()?;
                opts.workers = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| format!("--workers: expected 1 to 1024, got `{v}`"))?;
            }
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    Ok(Some(opts))
}
