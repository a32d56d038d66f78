//! TLS from the config file against the real servers, with the certificates the test
//! setup makes (`scripts/servers.sh`): a CA, a server certificate for the name
//! `localhost` only, and a client certificate.
//!
//! Every server listens on 127.0.0.1, so a URL naming `localhost` matches the
//! certificate and one naming `127.0.0.1` does not: that is how the tests tell
//! `verify = "full"` from `verify = "ca"`.
#![cfg(all(feature = "tls", feature = "toml"))]

mod servers;

use stickypool::Pools;
use stickypool::config::ConfigError;

const CA_FILE: &str = "STICKYPOOL_TLS_CA_FILE";
const CERT_FILE: &str = "STICKYPOOL_TLS_CERT_FILE";
const KEY_FILE: &str = "STICKYPOOL_TLS_KEY_FILE";
const REDIS_TLS_URL: &str = "STICKYPOOL_REDIS_TLS_URL";

/// A `tls` table trusting the test CA.
const WITH_CA: &str = "tls = { ca_file = \"${STICKYPOOL_TLS_CA_FILE}\" }";

/// The certificate files, or skip.
fn files(test: &str) -> Option<(String, String, String)> {
    Some((
        servers::env_or_skip(test, CA_FILE)?,
        servers::env_or_skip(test, CERT_FILE)?,
        servers::env_or_skip(test, KEY_FILE)?,
    ))
}

/// Asserts that `text` holds no line of the client key's file.
fn assert_no_key(text: &str) {
    let key = std::fs::read_to_string(std::env::var(KEY_FILE).unwrap()).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "shows the key: {text}");
    }
    assert!(!text.contains("PRIVATE KEY"), "shows the key: {text}");
}

/// One pool `main` from a TOML table; a TLS failure must fail the start, not wait.
fn pools(backend: &str, url: &str, tls: &str) -> Result<Pools, ConfigError> {
    Pools::from_toml_str(&format!(
        "[pools.main]\nbackend = \"{backend}\"\nurl = \"{url}\"\nmin_idle = 1\n\
         connection_timeout = \"10s\"\n{tls}\n"
    ))
}

fn build_error(result: Result<Pools, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("the pool started"),
        Err(e) => e.to_string(),
    }
}

#[cfg(feature = "postgres")]
mod postgres_tls {
    use super::*;

    /// The test server's URL with `host` in place of 127.0.0.1 and `user` in place of
    /// the test user (no password for another user).
    fn url(test: &str, host: &str, user: Option<&str>) -> Option<String> {
        let url = servers::postgres_url(test)?;
        let url = url.replace("@127.0.0.1:", &format!("@{host}:"));
        Some(match user {
            None => url,
            Some(user) => {
                let (_, rest) = url.split_once('@').unwrap();
                format!("postgres://{user}@{rest}")
            }
        })
    }

    /// Whether the pool's session is encrypted, as the server sees it.
    fn encrypted(pools: &Pools) -> bool {
        let mut conn = pools.postgres("main").unwrap().get().unwrap();
        conn.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    }

    #[test]
    fn a_pool_from_the_file_connects_over_tls_and_verifies_the_server() {
        let test = "a_pool_from_the_file_connects_over_tls_and_verifies_the_server";
        let (Some(url), Some(_)) = (url(test, "localhost", None), files(test)) else {
            return;
        };
        let pools = pools("postgres", &url, WITH_CA).unwrap();
        assert!(encrypted(&pools));
        // The same pool type as without TLS: code does not change with the file.
        let plain = super::pools("postgres", &url.replace("localhost", "127.0.0.1"), "").unwrap();
        assert!(!encrypted(&plain));
    }

    #[test]
    fn verify_full_checks_the_name_and_ca_only_the_chain() {
        let test = "verify_full_checks_the_name_and_ca_only_the_chain";
        let (Some(by_ip), Some(by_name)) =
            (url(test, "127.0.0.1", None), url(test, "localhost", None))
        else {
            return;
        };
        let ca = "ca_file = \"${STICKYPOOL_TLS_CA_FILE}\"";
        let err = build_error(pools("postgres", &by_ip, &format!("tls = {{ {ca} }}")));
        assert!(
            err.contains("certificate verify failed") && err.contains("IP address mismatch"),
            "a name mismatch: {err}"
        );
        let pools_ca = pools(
            "postgres",
            &by_ip,
            &format!("tls = {{ {ca}, verify = \"ca\" }}"),
        )
        .unwrap();
        assert!(encrypted(&pools_ca));

        // Without the CA the server's certificate is not trusted...
        let err = build_error(pools("postgres", &by_name, "tls = {}"));
        assert!(err.contains("certificate verify failed"), "{err}");
        // ...unless nothing is verified.
        let unverified = pools("postgres", &by_ip, "tls = { verify = \"off\" }").unwrap();
        assert!(encrypted(&unverified));
    }

    #[test]
    fn a_client_certificate_logs_in() {
        let test = "a_client_certificate_logs_in";
        let Some(url) = url(test, "localhost", Some("stickypool_cert")) else {
            return;
        };
        let with_cert = "tls = { ca_file = \"${STICKYPOOL_TLS_CA_FILE}\", \
             cert_file = \"${STICKYPOOL_TLS_CERT_FILE}\", key_file = \"${STICKYPOOL_TLS_KEY_FILE}\" }";
        let pools = pools("postgres", &url, with_cert).unwrap();
        let mut conn = pools.postgres("main").unwrap().get().unwrap();
        let user: String = conn.query_one("SELECT current_user", &[]).unwrap().get(0);
        assert_eq!(user, "stickypool_cert");
        assert_no_key(&format!("{:?} {pools:?}", pools.postgres("main").unwrap()));

        let err = build_error(super::pools("postgres", &url, WITH_CA));
        assert!(
            err.contains("connection requires a valid client certificate"),
            "{err}"
        );
    }

    #[test]
    fn plain_text_is_never_chosen_when_tls_is_asked_for() {
        let (Some(url), Some(_)) = (
            url("plain_text_is_never_chosen", "localhost", None),
            files("plain_text_is_never_chosen"),
        ) else {
            return;
        };
        let err = build_error(pools(
            "postgres",
            &format!("{url}?sslmode=disable"),
            WITH_CA,
        ));
        assert!(err.contains("`tls` the URL's `sslmode=disable`"), "{err}");
        let err = build_error(pools("postgres", &format!("{url}?sslmode=require"), ""));
        assert!(
            err.contains("`url` asks for `sslmode=require`, which needs a `tls` table"),
            "{err}"
        );
    }

    #[test]
    fn a_server_without_tls_is_refused_not_used_in_plain_text() {
        // PgBouncer, in front of the test server, offers no TLS to its clients.
        let test = "a_server_without_tls_is_refused";
        let (Some(url), Some(_)) = (
            servers::env_or_skip(test, "STICKYPOOL_PGBOUNCER_SESSION_URL"),
            files(test),
        ) else {
            return;
        };
        assert!(
            super::pools("postgres", &url, "").is_ok(),
            "plain text works"
        );
        let err = build_error(pools("postgres", &url, "tls = { verify = \"off\" }"));
        assert!(err.contains("server does not support TLS"), "{err}");
    }

    #[test]
    fn a_rotated_postgres_url_keeps_tls() {
        let test = "a_rotated_postgres_url_keeps_tls";
        let (Some(url), Some(_)) = (url(test, "localhost", None), files(test)) else {
            return;
        };
        let pools = pools("postgres", &url, WITH_CA).unwrap();
        let pool = pools.postgres("main").unwrap();
        pool.manager().set_url(&url).unwrap();
        pool.retain(|_| false);
        assert!(encrypted(&pools));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_fails_the_start() {
        let test = "a_key_that_is_not_the_certificates_fails_the_start";
        let (Some(url), Some((ca, _, _))) =
            (url(test, "localhost", Some("stickypool_cert")), files(test))
        else {
            return;
        };
        // The server's key, beside the CA: a real key, not the client certificate's.
        let other_key = std::path::Path::new(&ca).with_file_name("server.key");
        let err = build_error(pools(
            "postgres",
            &url,
            &format!(
                "tls = {{ ca_file = \"{ca}\", cert_file = \"${{STICKYPOOL_TLS_CERT_FILE}}\", \
                 key_file = \"{}\" }}",
                other_key.display()
            ),
        ));
        assert!(
            err.contains("`tls`"),
            "fails on the settings, not at connect: {err}"
        );
    }

    #[test]
    fn the_password_is_not_in_a_tls_pools_errors_or_debug() {
        let test = "the_password_is_not_in_a_tls_pools_errors_or_debug";
        let (Some(url), Some(_)) = (url(test, "localhost", None), files(test)) else {
            return;
        };
        let password = servers::url_password(&url).unwrap();
        let wrong = url.replace(&password, "wrong-password-do-not-print");
        let err = build_error(pools("postgres", &wrong, WITH_CA));
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(!err.contains("wrong-password-do-not-print"), "{err}");

        let pools = pools("postgres", &url, WITH_CA).unwrap();
        let debug = format!("{:?}", pools.postgres("main").unwrap());
        assert!(debug.contains("tls_from_files: true"), "{debug}");
        assert!(!debug.contains(&password), "{debug}");
    }
}

#[cfg(feature = "mysql")]
mod mysql_tls {
    use super::*;

    fn url(test: &str, host: &str) -> Option<String> {
        Some(servers::mysql_url(test)?.replace("@127.0.0.1:", &format!("@{host}:")))
    }

    /// The session's cipher, empty on plain text.
    fn cipher(pools: &Pools) -> String {
        use mysql::prelude::Queryable;
        let mut conn = pools.mysql("main").unwrap().get().unwrap();
        let row: Option<(String, String)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .unwrap();
        row.unwrap().1
    }

    /// Where the server sees the session come from: `localhost` over its unix
    /// socket, `address:port` over TCP.
    fn client_host(pools: &Pools) -> String {
        use mysql::prelude::Queryable;
        let mut conn = pools.mysql("main").unwrap().get().unwrap();
        conn.query_first(
            "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_mysql_pool_from_the_file_connects_over_tls() {
        let test = "a_mysql_pool_from_the_file_connects_over_tls";
        let (Some(by_name), Some(by_ip), Some(_)) =
            (url(test, "localhost"), url(test, "127.0.0.1"), files(test))
        else {
            return;
        };
        let ca = "ca_file = \"${STICKYPOOL_TLS_CA_FILE}\"";
        let pools_tls = pools("mysql", &by_name, &format!("tls = {{ {ca} }}")).unwrap();
        assert!(!cipher(&pools_tls).is_empty());
        // Over TCP: the driver's switch to the server's unix socket is off.
        let host = client_host(&pools_tls);
        assert!(host.starts_with("127.0.0.1:"), "{host}");
        assert!(cipher(&pools("mysql", &by_ip, "").unwrap()).is_empty());

        let err = build_error(pools("mysql", &by_ip, &format!("tls = {{ {ca} }}")));
        assert!(
            err.contains("IP address mismatch"),
            "a name mismatch: {err}"
        );
        let pools_ca = pools(
            "mysql",
            &by_ip,
            &format!("tls = {{ {ca}, verify = \"ca\" }}"),
        )
        .unwrap();
        assert!(!cipher(&pools_ca).is_empty());
    }

    #[test]
    fn a_rotated_mysql_url_keeps_tls() {
        let test = "a_rotated_mysql_url_keeps_tls";
        let (Some(url), Some(_)) = (url(test, "localhost"), files(test)) else {
            return;
        };
        let pools = pools("mysql", &url, WITH_CA).unwrap();
        let pool = pools.mysql("main").unwrap();
        pool.manager().set_url(&url).unwrap();
        pool.retain(|_| false);
        assert!(!cipher(&pools).is_empty());
    }

    /// A listener that greets every client as a MySQL server without TLS would
    /// (protocol 10, capabilities without `CLIENT_SSL`), then hangs up.
    fn server_without_tls() -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                // PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, LONG_PASSWORD,
                // CONNECT_WITH_DB, TRANSACTIONS; not SSL (0x800).
                let capabilities: u32 = 0x0200 | 0x8000 | 0x8_0000 | 0x1 | 0x8 | 0x2000;
                let mut payload = vec![10];
                payload.extend_from_slice(b"10.11.0-fake\0");
                payload.extend_from_slice(&1u32.to_le_bytes());
                payload.extend_from_slice(b"abcdefgh\0");
                payload.extend_from_slice(&(capabilities as u16).to_le_bytes());
                payload.push(0x21);
                payload.extend_from_slice(&2u16.to_le_bytes());
                payload.extend_from_slice(&((capabilities >> 16) as u16).to_le_bytes());
                payload.push(21);
                payload.extend_from_slice(&[0; 10]);
                payload.extend_from_slice(b"ijklmnopqrst\0");
                payload.extend_from_slice(b"mysql_native_password\0");
                let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
                packet.push(0);
                packet.extend_from_slice(&payload);
                let _ = stream.write_all(&packet);
                let _ = stream.read(&mut [0; 256]);
            }
        });
        port
    }

    #[test]
    fn a_mysql_server_without_tls_is_refused_not_used_in_plain_text() {
        let url = format!("mysql://app:pw@127.0.0.1:{}/app", server_without_tls());
        // In plain text the client gets past the greeting; the server then hangs up.
        let plain = build_error(pools("mysql", &url, ""));
        assert!(!plain.contains("capability"), "{plain}");
        let err = build_error(pools("mysql", &url, "tls = { verify = \"off\" }"));
        assert!(
            err.contains("server does not have this capability"),
            "{err}"
        );
    }

    #[test]
    fn a_mysql_client_certificate_is_refused_with_the_reason() {
        let (Some(url), Some(_)) = (
            url("mysql_client_cert", "localhost"),
            files("mysql_client_cert"),
        ) else {
            return;
        };
        let err = build_error(pools(
            "mysql",
            &url,
            "tls = { cert_file = \"${STICKYPOOL_TLS_CERT_FILE}\", key_file = \"${STICKYPOOL_TLS_KEY_FILE}\" }",
        ));
        assert!(err.contains("PKCS#12"), "{err}");
    }
}

#[cfg(feature = "redis")]
mod redis_tls {
    use super::*;

    const CLIENT: &str =
        "cert_file = \"${STICKYPOOL_TLS_CERT_FILE}\", key_file = \"${STICKYPOOL_TLS_KEY_FILE}\"";
    const CA: &str = "ca_file = \"${STICKYPOOL_TLS_CA_FILE}\"";

    fn ping(pools: &Pools) -> String {
        let mut conn = pools.redis("main").unwrap().get().unwrap();
        redis::cmd("PING").query(&mut *conn).unwrap()
    }

    #[test]
    fn a_redis_pool_from_the_file_connects_over_tls_with_a_client_certificate() {
        let test = "a_redis_pool_from_the_file_connects_over_tls";
        let (Some(url), Some(_)) = (servers::env_or_skip(test, REDIS_TLS_URL), files(test)) else {
            return;
        };
        // The server's TLS port speaks only TLS and asks for a client certificate.
        let pools_tls = pools("redis", &url, &format!("tls = {{ {CA}, {CLIENT} }}")).unwrap();
        assert_eq!(ping(&pools_tls), "PONG");
        assert_no_key(&format!(
            "{:?} {pools_tls:?}",
            pools_tls.redis("main").unwrap()
        ));
        let err = build_error(pools("redis", &url, &format!("tls = {{ {CA} }}")));
        assert!(err.contains("could not open a connection"), "{err}");

        let by_ip = url.replace("localhost", "127.0.0.1");
        let err = build_error(pools(
            "redis",
            &by_ip,
            &format!("tls = {{ {CA}, {CLIENT} }}"),
        ));
        assert!(
            err.contains("IP address mismatch"),
            "a name mismatch: {err}"
        );
        let pools_ca = pools(
            "redis",
            &by_ip,
            &format!("tls = {{ {CA}, {CLIENT}, verify = \"ca\" }}"),
        )
        .unwrap();
        assert_eq!(ping(&pools_ca), "PONG");
        let err = build_error(pools(
            "redis",
            &by_ip,
            &format!("tls = {{ {CLIENT}, verify = \"off\" }}"),
        ));
        assert!(
            err.contains("no client certificate when `verify` is"),
            "{err}"
        );
    }

    #[test]
    fn a_rotated_redis_url_keeps_the_certificates() {
        let test = "a_rotated_redis_url_keeps_the_certificates";
        let (Some(url), Some(_)) = (servers::env_or_skip(test, REDIS_TLS_URL), files(test)) else {
            return;
        };
        let pools = pools("redis", &url, &format!("tls = {{ {CA}, {CLIENT} }}")).unwrap();
        let pool = pools.redis("main").unwrap();
        pool.manager().set_url(url.as_str()).unwrap();
        pool.retain(|_| false);
        // Without the client certificate the server would refuse this connection.
        assert_eq!(ping(&pools), "PONG");
    }

    #[test]
    fn tls_on_a_plain_redis_url_is_refused() {
        let err = build_error(pools(
            "redis",
            "redis://127.0.0.1:1/",
            "tls = { verify = \"off\" }",
        ));
        assert!(err.contains("TLS needs a `rediss://` address"), "{err}");
    }
}
