//! A TechEmpower-style thread-pool HTTP service, run by `scripts/service-bench`: the
//! same handlers over stickypool, over r2d2, or over one dedicated connection per
//! worker thread (`direct`), so that `wrk` measures what a blocking service gains or
//! loses from the pool.
//!
//! ```text
//! service serve --mode stickypool|r2d2|direct|stickypool-checked --workers N --connections N
//!               [--addr 127.0.0.1:0] [--prime N] [--no-nodelay]
//! service report RESULTS.txt     # the markdown tables of a scripts/service-bench run
//! ```
//!
//! `serve` reads `STICKYPOOL_POSTGRES_URL` and `STICKYPOOL_REDIS_URL` (set by
//! `source scripts/servers.sh`; the script creates the tables) and prints
//! `listening on http://ADDR` once it accepts requests. Routes:
//!
//! | Route | Does |
//! |---|---|
//! | `GET /db` | one prepared `SELECT id, randomnumber FROM world WHERE id = $1`, random id in 1..=10000; JSON |
//! | `GET /fortunes` | every row of `fortune`, plus one added in memory, sorted by message, HTML-escaped, as an HTML table |
//! | `GET /redis` | Redis `GET` of one key |
//! | `GET /ping` | nothing (used to prime tiny_http's connection threads) |
//! | `GET /stats` | what was served since the last `/stats`, as `key=value` pairs |
//!
//! Both pools keep their defaults, their borrow-time checks included, except `max_size`
//! and `min_idle`, both `--connections`. Every PostgreSQL connection, pooled or not,
//! prepares the two statements once when it is opened ([`Db::prepare`]). The pools'
//! managers are the usual ones, wrapped ([`Counted`]) to count the connections they
//! open and the checks the pool asks for, which `/stats` reports.
//!
//! Two of tiny_http's habits are worked around, because they would otherwise be what
//! the benchmark measures (docs/benchmarks.md has the measurements):
//! * it does not set `TCP_NODELAY` on accepted sockets, so a response written in two
//!   parts can wait for the client's delayed ACK (about 40 ms). The listener is given
//!   `TCP_NODELAY`, which Linux copies to accepted sockets; `serve` checks that copy
//!   at start.
//! * it serves each connection on a thread of its own, from a thread pool that adds a
//!   thread only when none is idle at the moment a connection is accepted, and a
//!   thread woken for a queued connection counts as idle until it runs. A burst of
//!   connections (wrk opens all of its at once) can therefore be queued behind a few
//!   threads, and a queued connection waits until one of them is done with a
//!   keep-alive connection: not during the run. `--prime N` opens N connections to the
//!   server one at a time before it reports ready, so N threads are idle when wrk
//!   connects. `/stats` reports the distinct client addresses served and the requests
//!   per worker, so the script can check every run.

use std::collections::HashMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Statement};
use r2d2_postgres::PostgresConnectionManager;
use stickypool::backends::postgres::PostgresManager;
use stickypool::backends::redis::RedisManager;
use tiny_http::{Header, Request, Response, Server};

const USAGE: &str = "\
Usage: service serve --mode MODE --workers N --connections N
                     [--addr ADDR] [--prime N] [--no-nodelay]
       service report RESULTS.txt

serve: the benchmark's HTTP service (GET /db, /fortunes, /redis, /ping, /stats);
       reads STICKYPOOL_POSTGRES_URL and STICKYPOOL_REDIS_URL.
       --mode         stickypool, r2d2, direct, or stickypool-checked (stickypool
                      checking every borrow: check_on_borrow 0)
       --connections  the pools' max_size and min_idle (ignored by direct)
       --prime N      open N connections to itself first, one at a time [default: 0]
       --no-nodelay   leave TCP_NODELAY off (to see the delayed-ACK stall)
report: the markdown tables of scripts/service-bench's results file.
";

/// The Redis key `/redis` reads (the script sets it).
const REDIS_KEY: &str = "stickypool:bench:greeting";
/// Rows in `world`; `/db` picks an id in `1..=WORLD_ROWS`.
const WORLD_ROWS: i32 = 10_000;

type Failure = Box<dyn Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse_serve(&args[1..]).and_then(|opts| serve(&opts)),
        Some("report") if args.len() == 2 => {
            report::print(&args[1]).and_then(|flagged| match flagged {
                0 => Ok(()),
                n => Err(format!("{n} runs flagged (see the run checks column)").into()),
            })
        }
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("bad arguments\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Stickypool,
    /// stickypool with `check_on_borrow(Some(0))`: every borrow checked, as in r2d2.
    StickypoolChecked,
    R2d2,
    Direct,
}

struct Options {
    mode: Mode,
    workers: usize,
    connections: u32,
    addr: String,
    prime: usize,
    nodelay: bool,
}

fn parse_serve(args: &[String]) -> Result<Options, Failure> {
    let mut opts = Options {
        mode: Mode::Stickypool,
        workers: 0,
        connections: 0,
        addr: "127.0.0.1:0".into(),
        prime: 0,
        nodelay: true,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                opts.mode = match value()?.as_str() {
                    "stickypool" => Mode::Stickypool,
                    "stickypool-checked" => Mode::StickypoolChecked,
                    "r2d2" => Mode::R2d2,
                    "direct" => Mode::Direct,
                    other => return Err(format!("unknown mode `{other}`").into()),
                }
            }
            "--workers" => opts.workers = value()?.parse()?,
            "--connections" => opts.connections = value()?.parse()?,
            "--addr" => opts.addr = value()?.clone(),
            "--prime" => opts.prime = value()?.parse()?,
            "--no-nodelay" => opts.nodelay = false,
            _ => return Err(format!("unknown argument `{flag}`\n{USAGE}").into()),
        }
    }
    if !(1..=1024).contains(&opts.workers) || !(1..=1024).contains(&opts.connections) {
        return Err("--workers and --connections must be 1 to 1024".into());
    }
    Ok(opts)
}

fn env(var: &str) -> Result<String, Failure> {
    std::env::var(var).map_err(|_| format!("{var} is not set (source scripts/servers.sh)").into())
}

// ---------------------------------------------------------------------------------
// Connections: the same `Db` in every mode, reached through `Conns`.
// ---------------------------------------------------------------------------------

/// A PostgreSQL connection with the benchmark's statements, prepared once when it was
/// opened and reused for its whole life.
struct Db {
    client: Client,
    world: Statement,
    fortunes: Statement,
}

impl Db {
    fn prepare(mut client: Client) -> Result<Db, postgres::Error> {
        let world = client.prepare("SELECT id, randomnumber FROM world WHERE id = $1")?;
        let fortunes = client.prepare("SELECT id, message FROM fortune")?;
        Ok(Db {
            client,
            world,
            fortunes,
        })
    }
}

/// What a pool's manager did: connections opened, checks run. The process runs one
/// mode, so one pair per backend is enough.
struct Counts {
    opened: AtomicU64,
    checks: AtomicU64,
}

impl Counts {
    const fn new() -> Counts {
        Counts {
            opened: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        }
    }

    fn count_open(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn count_check(&self) {
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    /// `(opened, checks)` so far.
    fn read(&self) -> [u64; 2] {
        [
            self.opened.load(Ordering::Relaxed),
            self.checks.load(Ordering::Relaxed),
        ]
    }
}

static DB_COUNTS: Counts = Counts::new();
static REDIS_COUNTS: Counts = Counts::new();

/// A pool's own manager, wrapped to count the connections it opens and the checks the
/// pool asks of it; PostgreSQL connections also prepare the statements once
/// ([`Db::prepare`]). Checks and `has_broken` are the wrapped manager's, so each pool
/// checks connections exactly as it would without the wrapper.
struct Counted<M>(M);

impl stickypool::ManageConnection for Counted<PostgresManager> {
    type Connection = Db;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Db, postgres::Error> {
        let db = Db::prepare(self.0.connect()?)?;
        DB_COUNTS.count_open();
        Ok(db)
    }

    fn is_valid(&self, db: &mut Db) -> Result<(), postgres::Error> {
        DB_COUNTS.count_check();
        self.0.is_valid(&mut db.client)
    }

    // The bounded check is the one stickypool calls.
    fn is_valid_within(&self, db: &mut Db, timeout: Duration) -> Result<(), postgres::Error> {
        DB_COUNTS.count_check();
        self.0.is_valid_within(&mut db.client, timeout)
    }

    fn has_broken(&self, db: &mut Db) -> bool {
        self.0.has_broken(&mut db.client)
    }
}

impl r2d2::ManageConnection for Counted<PostgresConnectionManager<NoTls>> {
    type Connection = Db;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Db, postgres::Error> {
        let db = Db::prepare(self.0.connect()?)?;
        DB_COUNTS.count_open();
        Ok(db)
    }

    fn is_valid(&self, db: &mut Db) -> Result<(), postgres::Error> {
        DB_COUNTS.count_check();
        self.0.is_valid(&mut db.client)
    }

    fn has_broken(&self, db: &mut Db) -> bool {
        self.0.has_broken(&mut db.client)
    }
}

impl stickypool::ManageConnection for Counted<RedisManager> {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<redis::Connection, redis::RedisError> {
        let conn = self.0.connect()?;
        REDIS_COUNTS.count_open();
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
        REDIS_COUNTS.count_check();
        self.0.is_valid(conn)
    }

    fn is_valid_within(
        &self,
        conn: &mut redis::Connection,
        timeout: Duration,
    ) -> Result<(), redis::RedisError> {
        REDIS_COUNTS.count_check();
        self.0.is_valid_within(conn, timeout)
    }

    fn has_broken(&self, conn: &mut redis::Connection) -> bool {
        self.0.has_broken(conn)
    }
}

impl r2d2::ManageConnection for Counted<redis::Client> {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<redis::Connection, redis::RedisError> {
        let conn = self.0.connect()?;
        REDIS_COUNTS.count_open();
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut redis::Connection) -> Result<(), redis::RedisError> {
        REDIS_COUNTS.count_check();
        self.0.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut redis::Connection) -> bool {
        self.0.has_broken(conn)
    }
}

/// How a handler reaches its connections: borrowed from a pool for the call, or the
/// worker's own.
trait Conns {
    fn with_db<R>(&mut self, f: impl FnOnce(&mut Db) -> Result<R, Failure>) -> Result<R, Failure>;
    fn with_redis<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> Result<R, Failure>,
    ) -> Result<R, Failure>;
}

struct StickyPools {
    db: stickypool::Pool<Counted<PostgresManager>>,
    redis: stickypool::Pool<Counted<RedisManager>>,
}

impl StickyPools {
    /// stickypool's defaults, but for the size and, if asked, a check on every borrow;
    /// `build` opens every connection.
    fn build(size: u32, check_every_borrow: bool) -> Result<StickyPools, Failure> {
        let db = PostgresManager::from_url(&env("STICKYPOOL_POSTGRES_URL")?)?;
        let redis = RedisManager::new(env("STICKYPOOL_REDIS_URL")?.as_str())?;
        Ok(StickyPools {
            db: Self::builder(size, check_every_borrow).build(Counted(db))?,
            redis: Self::builder(size, check_every_borrow).build(Counted(redis))?,
        })
    }

    fn builder<M: stickypool::ManageConnection>(
        size: u32,
        check_every_borrow: bool,
    ) -> stickypool::Builder<M> {
        let builder = stickypool::Pool::builder()
            .max_size(size)
            .min_idle(Some(size));
        if check_every_borrow {
            builder.check_on_borrow(Some(Duration::ZERO))
        } else {
            builder
        }
    }
}

impl Conns for &StickyPools {
    fn with_db<R>(&mut self, f: impl FnOnce(&mut Db) -> Result<R, Failure>) -> Result<R, Failure> {
        f(&mut *self.db.get()?)
    }

    fn with_redis<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        f(&mut *self.redis.get()?)
    }
}

struct R2d2Pools {
    db: r2d2::Pool<Counted<PostgresConnectionManager<NoTls>>>,
    redis: r2d2::Pool<Counted<redis::Client>>,
}

impl R2d2Pools {
    /// r2d2's defaults, but for the size; `build` opens every connection.
    fn build(size: u32) -> Result<R2d2Pools, Failure> {
        let config: postgres::Config = env("STICKYPOOL_POSTGRES_URL")?.parse()?;
        let db = PostgresConnectionManager::new(config, NoTls);
        let redis = redis::Client::open(env("STICKYPOOL_REDIS_URL")?.as_str())?;
        Ok(R2d2Pools {
            db: r2d2::Pool::builder()
                .max_size(size)
                .min_idle(Some(size))
                .build(Counted(db))?,
            redis: r2d2::Pool::builder()
                .max_size(size)
                .min_idle(Some(size))
                .build(Counted(redis))?,
        })
    }
}

impl Conns for &R2d2Pools {
    fn with_db<R>(&mut self, f: impl FnOnce(&mut Db) -> Result<R, Failure>) -> Result<R, Failure> {
        f(&mut *self.db.get()?)
    }

    fn with_redis<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        f(&mut *self.redis.get()?)
    }
}

/// A worker's own connections: no pool, no checks.
struct Direct {
    db: Db,
    redis: redis::Connection,
}

impl Direct {
    fn open_all(workers: usize) -> Result<Vec<Direct>, Failure> {
        let config: postgres::Config = env("STICKYPOOL_POSTGRES_URL")?.parse()?;
        let redis = redis::Client::open(env("STICKYPOOL_REDIS_URL")?.as_str())?;
        (0..workers)
            .map(|_| {
                Ok(Direct {
                    db: Db::prepare(config.connect(NoTls)?)?,
                    redis: redis.get_connection()?,
                })
            })
            .collect()
    }
}

impl Conns for Direct {
    fn with_db<R>(&mut self, f: impl FnOnce(&mut Db) -> Result<R, Failure>) -> Result<R, Failure> {
        f(&mut self.db)
    }

    fn with_redis<R>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> Result<R, Failure>,
    ) -> Result<R, Failure> {
        f(&mut self.redis)
    }
}

// ---------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------

/// What one worker served since the last `/stats`.
#[derive(Default)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Time spent between receiving a request and having answered it.
    busy: Duration,
    /// Requests per client connection.
    peers: HashMap<SocketAddr, u64>,
}

/// Where `/stats` counts from: the previous call.
struct Mark {
    at: Instant,
    db: [u64; 2],
    redis: [u64; 2],
}

impl Mark {
    fn now() -> Mark {
        Mark {
            at: Instant::now(),
            db: DB_COUNTS.read(),
            redis: REDIS_COUNTS.read(),
        }
    }
}

/// What the workers share besides the connections.
struct App {
    /// One per worker; a worker locks only its own, `/stats` locks them all.
    tallies: Vec<Mutex<Tally>>,
    last_stats: Mutex<Mark>,
}

fn serve(opts: &Options) -> Result<(), Failure> {
    let listener = listen(&opts.addr, opts.nodelay)?;
    if opts.nodelay && !nodelay_is_inherited()? {
        return Err("accepted sockets do not inherit TCP_NODELAY from the listener".into());
    }
    let addr = listener.local_addr()?;
    let server = Server::from_listener(listener, None)?;
    match opts.mode {
        Mode::Stickypool | Mode::StickypoolChecked => {
            let check_every_borrow = opts.mode == Mode::StickypoolChecked;
            let pools = StickyPools::build(opts.connections, check_every_borrow)?;
            run(&server, addr, opts, vec![&pools; opts.workers])
        }
        Mode::R2d2 => {
            let pools = R2d2Pools::build(opts.connections)?;
            run(&server, addr, opts, vec![&pools; opts.workers])
        }
        Mode::Direct => run(&server, addr, opts, Direct::open_all(opts.workers)?),
    }
}

/// A listener on `addr`, with `TCP_NODELAY` set if asked (tiny_http never sets it on
/// the sockets it accepts; Linux copies it from the listener).
fn listen(addr: &str, nodelay: bool) -> Result<TcpListener, Failure> {
    let listener = TcpListener::bind(addr)?;
    if nodelay {
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    }
    Ok(listener)
}

/// Whether a socket accepted from a [`listen`] listener has `TCP_NODELAY`.
fn nodelay_is_inherited() -> Result<bool, Failure> {
    let listener = listen("127.0.0.1:0", true)?;
    let _client = TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    Ok(accepted.nodelay()?)
}

/// Runs one worker per element of `conns`, primes tiny_http, reports ready, and serves
/// until the process is killed.
fn run<C: Conns + Send>(
    server: &Server,
    addr: SocketAddr,
    opts: &Options,
    conns: Vec<C>,
) -> Result<(), Failure> {
    let app = App {
        tallies: (0..conns.len()).map(|_| Mutex::default()).collect(),
        last_stats: Mutex::new(Mark::now()),
    };
    std::thread::scope(|s| {
        for (me, conns) in conns.into_iter().enumerate() {
            let app = &app;
            s.spawn(move || work(server, app, me, conns));
        }
        // The workers never return: a failure here must end the process itself.
        if let Err(e) = prime(addr, opts.prime).and_then(|()| announce(addr)) {
            eprintln!("service: {e}");
            std::process::exit(1);
        }
    });
    Ok(())
}

fn announce(addr: SocketAddr) -> Result<(), Failure> {
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    Ok(())
}

/// Opens `n` connections to the server one at a time, each waiting for its answer
/// (so a tiny_http connection thread is serving it before the next one opens), then
/// closes them all: `n` idle connection threads are left for the next burst. tiny_http
/// ends an idle connection thread after 5 s, so the load must follow soon.
fn prime(addr: SocketAddr, n: usize) -> Result<(), Failure> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: prime\r\n\r\n")?;
        read_headers(&mut stream)?;
        open.push(stream);
    }
    drop(open);
    // Let the threads see the connections close and go back to waiting.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// Reads a response with an empty body (`/ping`'s): up to the end of its headers.
fn read_headers(stream: &mut TcpStream) -> Result<(), Failure> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err("the server closed a priming connection".into());
        }
        got.push(byte[0]);
    }
    Ok(())
}

/// One worker thread: handles requests one at a time until the server stops.
fn work(server: &Server, app: &App, me: usize, mut conns: impl Conns) {
    let mut rng = Rng::seeded(me);
    while let Ok(request) = server.recv() {
        let started = Instant::now();
        if request.url() == "/stats" {
            let body = stats(app);
            let _ = request.respond(Response::from_string(body));
            continue;
        }
        let peer = request.remote_addr().copied();
        let reply = match request.url() {
            "/db" => single_query(&mut conns, &mut rng),
            "/fortunes" => fortunes(&mut conns),
            "/redis" => redis_get(&mut conns),
            "/ping" => Ok(Reply::new("text/plain", String::new())),
            _ => Ok(Reply {
                status: 404,
                content_type: "text/plain",
                body: "not found\n".into(),
            }),
        };
        let failed = reply.is_err();
        let reply = reply.unwrap_or_else(|e| Reply {
            status: 500,
            content_type: "text/plain",
            body: format!("{e}\n"),
        });
        respond(request, reply);
        let mut tally = app.tallies[me].lock().expect("a tally");
        tally.requests += 1;
        tally.failures += u64::from(failed);
        tally.busy += started.elapsed();
        if let Some(peer) = peer {
            *tally.peers.entry(peer).or_default() += 1;
        }
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn new(content_type: &'static str, body: String) -> Reply {
        Reply {
            status: 200,
            content_type,
            body,
        }
    }
}

fn respond(request: Request, reply: Reply) {
    let content_type =
        Header::from_bytes("Content-Type", reply.content_type).expect("a valid header");
    let response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(content_type);
    // An error means the client went away; wrk counts that on its side.
    let _ = request.respond(response);
}

/// `/stats`: what the workers served since the last call, and what the pools' managers
/// did meanwhile (connections opened, checks run). Resets what it reports.
///
/// `busy_*` is the share of the time a worker spent handling requests;
/// `idle_workers` counts the workers that handled none; `starved_peers` the client
/// connections served less than a tenth of the mean (wrk keeps one request in flight
/// on each connection, so served fairly they get about as many each).
fn stats(app: &App) -> String {
    let before = std::mem::replace(&mut *app.last_stats.lock().expect("a mark"), Mark::now());
    let now = app.last_stats.lock().expect("a mark");
    let tallies: Vec<Tally> = app
        .tallies
        .iter()
        .map(|t| std::mem::take(&mut *t.lock().expect("a tally")))
        .collect();
    let interval = before.at.elapsed().as_secs_f64().max(1e-9);
    let busy: Vec<f64> = tallies
        .iter()
        .map(|t| t.busy.as_secs_f64() / interval)
        .collect();
    let requests: Vec<u64> = tallies.iter().map(|t| t.requests).collect();
    let mut peers: HashMap<SocketAddr, u64> = HashMap::new();
    for (&peer, &n) in tallies.iter().flat_map(|t| &t.peers) {
        *peers.entry(peer).or_default() += n;
    }
    let per_peer = peers.values().sum::<u64>() as f64 / peers.len().max(1) as f64;
    let starved = peers
        .values()
        .filter(|&&n| (n as f64) < per_peer / 10.0)
        .count();
    format!(
        "requests={} failures={} peers={} starved_peers={starved} workers={} idle_workers={} busy_min={:.2} \
         busy_mean={:.2} requests_min={} requests_max={} db_opened={} db_checks={} \
         redis_opened={} redis_checks={}\n",
        requests.iter().sum::<u64>(),
        tallies.iter().map(|t| t.failures).sum::<u64>(),
        peers.len(),
        tallies.len(),
        requests.iter().filter(|&&n| n == 0).count(),
        busy.iter().copied().fold(f64::INFINITY, f64::min),
        busy.iter().sum::<f64>() / busy.len() as f64,
        requests.iter().min().unwrap_or(&0),
        requests.iter().max().unwrap_or(&0),
        now.db[0] - before.db[0],
        now.db[1] - before.db[1],
        now.redis[0] - before.redis[0],
        now.redis[1] - before.redis[1],
    )
}

// ---------------------------------------------------------------------------------
// The handlers: the same code in every mode.
// ---------------------------------------------------------------------------------

/// `/db`: one row of `world` by a random id.
fn single_query(conns: &mut impl Conns, rng: &mut Rng) -> Result<Reply, Failure> {
    let id = rng.world_id();
    let (id, random_number): (i32, i32) = conns.with_db(|db| {
        let row = db.client.query_one(&db.world, &[&id])?;
        Ok((row.get(0), row.get(1)))
    })?;
    Ok(Reply::new(
        "application/json",
        format!(r#"{{"id":{id},"randomNumber":{random_number}}}"#),
    ))
}

/// `/fortunes`: the rows of `fortune` plus one added at request time, sorted by
/// message, as an escaped HTML table.
fn fortunes(conns: &mut impl Conns) -> Result<Reply, Failure> {
    let mut rows: Vec<(i32, String)> = conns.with_db(|db| {
        let rows = db.client.query(&db.fortunes, &[])?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    })?;
    rows.push((0, "Additional fortune added at request time.".into()));
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    let mut html = String::with_capacity(2048);
    html.push_str(
        "<!DOCTYPE html><html><head><title>Fortunes</title></head><body>\
         <table><tr><th>id</th><th>message</th></tr>",
    );
    for (id, message) in &rows {
        html.push_str(&format!("<tr><td>{id}</td><td>"));
        escape_html(message, &mut html);
        html.push_str("</td></tr>");
    }
    html.push_str("</table></body></html>");
    Ok(Reply::new("text/html; charset=utf-8", html))
}

fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
}

/// `/redis`: one `GET`.
fn redis_get(conns: &mut impl Conns) -> Result<Reply, Failure> {
    let value: Option<String> =
        conns.with_redis(|conn| Ok(redis::cmd("GET").arg(REDIS_KEY).query(conn)?))?;
    Ok(Reply::new("text/plain", value.unwrap_or_default()))
}

/// xorshift64*: enough to spread ids, no shared state between workers.
struct Rng(u64);

impl Rng {
    fn seeded(worker: usize) -> Rng {
        static START: OnceLock<u64> = OnceLock::new();
        let start = *START.get_or_init(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64
        });
        Rng((start ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn world_id(&mut self) -> i32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x % WORLD_ROWS as u64) as i32 + 1
    }
}

// ---------------------------------------------------------------------------------
// The report: scripts/service-bench's results file as markdown tables.
// ---------------------------------------------------------------------------------

mod report {
    use std::collections::HashMap;

    use super::Failure;

    /// One measured run: a line of the results file, `key=value` pairs from the
    /// script (endpoint, shape, mode, round), from wrk (`rps`, `p50_ms`, `p99_ms`,
    /// `errors`) and from the server's `/stats`.
    struct Run {
        endpoint: String,
        threads: u32,
        connections: u32,
        mode: String,
        round: u32,
        rps: f64,
        p50_ms: f64,
        p99_ms: f64,
        /// Distinct client connections the server served, and how many wrk opened.
        peers: u32,
        wrk_connections: u32,
        /// Connections served less than a tenth of the mean.
        starved_peers: u32,
        idle_workers: u32,
        busy_mean: f64,
        /// The endpoint's pool: connections opened and checks run during the run.
        opened: u64,
        checks: u64,
        requests: u64,
        /// wrk's errors and the server's failed requests.
        errors: u64,
    }

    /// A run's p50 at or above this looks like the delayed-ACK stall (about 40 ms).
    const STALL_P50_MS: f64 = 30.0;

    impl Run {
        fn parse(line: &str) -> Result<Run, Failure> {
            let fields: HashMap<&str, &str> = line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let get = |key: &str| {
                fields
                    .get(key)
                    .copied()
                    .ok_or_else(|| Failure::from(format!("no `{key}` in: {line}")))
            };
            let endpoint = get("endpoint")?.to_owned();
            let backend = if endpoint == "redis" { "redis" } else { "db" };
            Ok(Run {
                threads: get("threads")?.parse()?,
                connections: get("connections")?.parse()?,
                mode: get("mode")?.into(),
                round: get("round")?.parse()?,
                rps: get("rps")?.parse()?,
                p50_ms: get("p50_ms")?.parse()?,
                p99_ms: get("p99_ms")?.parse()?,
                peers: get("peers")?.parse()?,
                wrk_connections: get("wrk_connections")?.parse()?,
                starved_peers: get("starved_peers")?.parse()?,
                idle_workers: get("idle_workers")?.parse()?,
                busy_mean: get("busy_mean")?.parse()?,
                opened: get(&format!("{backend}_opened"))?.parse()?,
                checks: get(&format!("{backend}_checks"))?.parse()?,
                requests: get("requests")?.parse()?,
                errors: get("errors")?.parse::<u64>()? + get("failures")?.parse::<u64>()?,
                endpoint,
            })
        }

        /// What is wrong with the run, if anything.
        fn flags(&self) -> Vec<String> {
            let mut flags = Vec::new();
            if self.peers < self.wrk_connections {
                flags.push(format!(
                    "served {}/{} connections",
                    self.peers, self.wrk_connections
                ));
            }
            if self.starved_peers > 0 {
                flags.push(format!("{} connections starved", self.starved_peers));
            }
            if self.idle_workers > 0 {
                flags.push(format!("{} workers served nothing", self.idle_workers));
            }
            if self.errors > 0 {
                flags.push(format!("{} errors", self.errors));
            }
            if self.p50_ms >= STALL_P50_MS {
                flags.push(format!("p50 {:.1} ms", self.p50_ms));
            }
            flags
        }
    }

    /// Prints one table per endpoint; returns how many runs were flagged.
    pub fn print(path: &str) -> Result<usize, Failure> {
        let text = std::fs::read_to_string(path)?;
        let runs = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Run::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut flagged = 0;
        for endpoint in distinct(runs.iter().map(|r| r.endpoint.clone())) {
            println!("\n#### `/{endpoint}`\n");
            println!(
                "| threads / connections | mode | req/s (median) | req/s (range) | p99 ms (median) \
                 | vs r2d2 (median, range) | workers busy | pool checks per request \
                 | connections opened during run | run checks |"
            );
            println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
            let of_endpoint: Vec<&Run> = runs.iter().filter(|r| r.endpoint == endpoint).collect();
            for shape in distinct(of_endpoint.iter().map(|r| (r.threads, r.connections))) {
                for mode in ["stickypool", "stickypool-checked", "r2d2", "direct"] {
                    let rows: Vec<&Run> = of_endpoint
                        .iter()
                        .copied()
                        .filter(|r| (r.threads, r.connections) == shape && r.mode == mode)
                        .collect();
                    if !rows.is_empty() {
                        flagged += print_row(&rows, &of_endpoint);
                    }
                }
            }
        }
        Ok(flagged)
    }

    /// Prints the row of one shape and mode; returns how many of its runs were flagged.
    fn print_row(rows: &[&Run], all: &[&Run]) -> usize {
        let first = rows[0];
        let connections = if first.mode == "direct" {
            format!("{} (one per thread)", first.threads)
        } else {
            first.connections.to_string()
        };
        let rps: Vec<f64> = rows.iter().map(|r| r.rps).collect();
        let p99: Vec<f64> = rows.iter().map(|r| r.p99_ms).collect();
        let busy: Vec<f64> = rows.iter().map(|r| r.busy_mean).collect();
        let checks: Vec<f64> = rows
            .iter()
            .map(|r| r.checks as f64 / r.requests.max(1) as f64)
            .collect();
        // Each run against r2d2 in the same round, shape and endpoint.
        let ratios: Vec<f64> = rows
            .iter()
            .filter_map(|r| {
                all.iter()
                    .find(|o| {
                        o.mode == "r2d2"
                            && o.round == r.round
                            && (o.threads, o.connections) == (r.threads, r.connections)
                    })
                    .map(|o| r.rps / o.rps)
            })
            .collect();
        let ratio = if ratios.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.2} ({:.2}-{:.2})",
                median(&ratios),
                min(&ratios),
                max(&ratios)
            )
        };
        let opened: Vec<String> = rows.iter().map(|r| r.opened.to_string()).collect();
        let flags: Vec<String> = rows
            .iter()
            .flat_map(|r| {
                r.flags()
                    .into_iter()
                    .map(move |f| format!("round {}: {f}", r.round))
            })
            .collect();
        println!(
            "| {} / {connections} | {} | {:.0} | {:.0}-{:.0} | {:.1} | {ratio} | {:.0}% | {:.3} | {} | {} |",
            first.threads,
            first.mode,
            median(&rps),
            min(&rps),
            max(&rps),
            median(&p99),
            100.0 * median(&busy),
            median(&checks),
            opened.join(", "),
            if flags.is_empty() {
                "ok".to_owned()
            } else {
                flags.join("; ")
            },
        );
        rows.iter().filter(|r| !r.flags().is_empty()).count()
    }

    /// The values in first-seen order, without repeats.
    fn distinct<T: PartialEq>(values: impl Iterator<Item = T>) -> Vec<T> {
        let mut out = Vec::new();
        for v in values {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn median(values: &[f64]) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        }
    }

    fn min(values: &[f64]) -> f64 {
        values.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(values: &[f64]) -> f64 {
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}
