//! What TLS adds to opening a connection, per backend, against the test servers:
//! the mean time of a connect, plain and with `Tls`, in the same run, and what
//! building one native-tls context costs (which the MySQL and Redis drivers do for
//! every connection, and `PostgresManager::tls` once).
//!
//! `source scripts/servers.sh && cargo run --release -p stickypool-bench --example tls_connect`

use std::time::{Duration, Instant};

use stickypool::ManageConnection;
use stickypool::backends::mysql::MysqlManager;
use stickypool::backends::postgres::PostgresManager;
use stickypool::backends::redis::RedisManager;
use stickypool::backends::tls::Tls;

const CONNECTS: u32 = 100;
const ROUNDS: u32 = 3;

/// One mean connect time, measured when called.
type Measure<'a> = Box<dyn Fn() -> Duration + 'a>;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: source scripts/servers.sh"))
}

/// The mean time of opening (and closing) a connection.
fn mean_connect(manager: &impl ManageConnection) -> Duration {
    let start = Instant::now();
    for _ in 0..CONNECTS {
        drop(
            manager
                .connect()
                .unwrap_or_else(|_| panic!("connect failed")),
        );
    }
    start.elapsed() / CONNECTS
}

fn main() {
    let ca = Tls {
        ca_file: Some(env("STICKYPOOL_TLS_CA_FILE").into()),
        ..Tls::default()
    };
    let with_client = Tls {
        cert_file: Some(env("STICKYPOOL_TLS_CERT_FILE").into()),
        key_file: Some(env("STICKYPOOL_TLS_KEY_FILE").into()),
        ..ca.clone()
    };
    // The server certificate names `localhost` only.
    let by_name = |url: String| url.replace("@127.0.0.1:", "@localhost:");
    let postgres = by_name(env("STICKYPOOL_POSTGRES_URL"));
    let mysql = by_name(env("STICKYPOOL_MYSQL_URL"));
    let pairs: [(&str, Measure, Measure); 3] = [
        (
            "postgres",
            Box::new(|| mean_connect(&PostgresManager::from_url(&postgres).unwrap())),
            Box::new(|| {
                mean_connect(
                    &PostgresManager::from_url(&postgres)
                        .unwrap()
                        .tls(&ca)
                        .unwrap(),
                )
            }),
        ),
        (
            "mysql",
            Box::new(|| mean_connect(&MysqlManager::from_url(&mysql).unwrap())),
            Box::new(|| mean_connect(&MysqlManager::from_url(&mysql).unwrap().tls(&ca).unwrap())),
        ),
        (
            "redis",
            Box::new(|| mean_connect(&RedisManager::new(env("STICKYPOOL_REDIS_URL")).unwrap())),
            Box::new(|| {
                let url = env("STICKYPOOL_REDIS_TLS_URL");
                mean_connect(&RedisManager::new(url).unwrap().tls(&with_client).unwrap())
            }),
        ),
    ];
    for round in 1..=ROUNDS {
        let start = Instant::now();
        for _ in 0..CONNECTS {
            native_tls::TlsConnector::new().unwrap();
        }
        println!(
            "round {round}: one native-tls context {:.1} ms",
            ms(start.elapsed() / CONNECTS)
        );
        for (backend, plain, tls) in &pairs {
            let (plain, tls) = (plain(), tls());
            println!(
                "round {round}: {backend:8} connect plain {:6.2} ms, TLS {:6.2} ms ({:.1}x)",
                ms(plain),
                ms(tls),
                tls.as_secs_f64() / plain.as_secs_f64()
            );
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
