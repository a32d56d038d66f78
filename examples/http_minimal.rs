//! A minimal HTTP service: tiny_http on a few worker threads, notes kept in SQLite.
//! `POST /notes` adds the request body as a note, `GET /notes` lists them, one a line;
//! each request borrows a pooled connection for its query only.
//!
//! `cargo run -F sqlite --example http_minimal` serves on 127.0.0.1:8080 until killed (try
//! `curl -d 'buy milk' localhost:8080/notes`, then `curl localhost:8080/notes`).
//! `cargo run -F sqlite --example http_minimal -- --self-test` serves on a free port instead,
//! sends itself a few requests, checks the answers and exits with 0 or 1.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use stickypool::Pool;
use stickypool::backends::sqlite::SqliteManager;
use tiny_http::{Method, Request, Response, Server};

type BoxError = Box<dyn Error + Send + Sync>;

const WORKERS: usize = 4;

fn main() -> Result<(), BoxError> {
    let self_test = std::env::args().any(|arg| arg == "--self-test");
    let pool = Pool::builder().max_size(4).build(SqliteManager::memory())?;
    pool.get()?
        .execute_batch("CREATE TABLE notes (body TEXT NOT NULL)")?;
    let port = if self_test { 0 } else { 8080 }; // 0: any free port
    let server = Server::http(("127.0.0.1", port))?;
    let addr = server.server_addr().to_ip().expect("a TCP address");
    println!("listening on http://{addr}");

    thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                // `recv` fails once `unblock` is called, which is how the self-test stops
                // the workers.
                while let Ok(mut request) = server.recv() {
                    // Any error, a pool timeout included (every connection busy for
                    // `connection_timeout`, 30 s), becomes a 500.
                    let (status, text) =
                        handle(&pool, &mut request).unwrap_or_else(|e| (500, format!("{e}\n")));
                    // An error here means the client has gone: nothing to do.
                    let _ = request.respond(Response::from_string(text).with_status_code(status));
                }
            });
        }
        if self_test {
            let result = check(addr);
            (0..WORKERS).for_each(|_| server.unblock()); // each `unblock` stops one worker
            return result;
        }
        Ok(())
    }) // waits for the workers: forever, unless self-testing
}

/// Answers one request with a status and a body.
fn handle(pool: &Pool<SqliteManager>, request: &mut Request) -> Result<(u16, String), BoxError> {
    match (request.method(), request.url()) {
        (Method::Get, "/notes") => {
            // Borrowed here, given back when `conn` drops at the end of this block.
            let conn = pool.get()?;
            let mut query = conn.prepare("SELECT body FROM notes ORDER BY rowid")?;
            let notes = query.query_map([], |row| row.get(0).map(|note: String| note + "\n"))?;
            Ok((200, notes.collect::<Result<String, _>>()?))
        }
        (Method::Post, "/notes") => {
            let note = io::read_to_string(request.as_reader().take(64 * 1024))?; // at most 64 KiB
            pool.get()?
                .execute("INSERT INTO notes (body) VALUES (?1)", [note])?;
            Ok((201, "added\n".to_owned()))
        }
        _ => Ok((404, "not found\n".to_owned())),
    }
}

/// The self-test: two notes in, the list back out, each on a new connection.
fn check(addr: SocketAddr) -> Result<(), BoxError> {
    for (method, body, expected) in [
        ("POST", "first", "added\n"),
        ("POST", "second", "added\n"),
        ("GET", "", "\r\n\r\nfirst\nsecond\n"),
    ] {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?; // fail rather than hang
        let len = body.len();
        let request = format!("{method} /notes HTTP/1.0\r\nContent-Length: {len}\r\n\r\n{body}");
        stream.write_all(request.as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?; // HTTP/1.0: the server closes when done
        if !response.ends_with(expected) {
            return Err(format!("{method} /notes: unexpected answer {response:?}").into());
        }
    }
    println!("self-test passed");
    Ok(())
}
