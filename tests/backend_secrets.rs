//! Passwords never show in the managers' or pools' `Debug` output, in errors or in logs.
#![cfg(any(feature = "mysql", feature = "redis"))]

mod logs;
mod servers;

use std::time::Duration;

use stickypool::{ManageConnection, Pool};

const SECRET: &str = "hunter2-do-not-print";

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

/// Builds a pool against a closed port, so every connect fails, and checks the error
/// and everything logged meanwhile.
fn failing_pool<M: ManageConnection + std::fmt::Debug>(manager: M) {
    logs::capture();
    let err = Pool::builder()
        .max_size(2)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(2))
        .build(manager)
        .expect_err("nothing listens there");
    assert_no_secret("the build error", &err.to_string());
    assert_no_secret("the build error", &format!("{err:?}"));
    for (_, line) in logs::all() {
        assert_no_secret("a log message", &line);
    }
}

#[cfg(feature = "mysql")]
mod mysql_secrets {
    use super::*;
    use ::mysql::{Opts, OptsBuilder};
    use stickypool::ResetAction;
    use stickypool::backends::mysql::MysqlManager;

    #[test]
    fn mysql_manager_debug_hides_the_password() {
        let port = servers::closed_port();
        let url = format!("mysql://app:{SECRET}@127.0.0.1:{port}/app");
        let from_url = MysqlManager::from_url(&url).unwrap();
        let debug = format!("{from_url:?}");
        assert_no_secret("MysqlManager", &debug);
        assert!(
            debug.contains("<redacted>"),
            "says a password is set: {debug}"
        );
        assert!(
            debug.contains("app") && debug.contains(&port.to_string()),
            "{debug}"
        );
        // The driver's own options would have printed it.
        assert!(format!("{:?}", Opts::from_url(&url).unwrap()).contains(SECRET));

        let builder = OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(port)
            .user(Some("app"))
            .pass(Some(SECRET));
        assert_no_secret("MysqlManager", &format!("{:?}", MysqlManager::new(builder)));
        assert_no_secret("MysqlManager", &format!("{:#?}", from_url));

        failing_pool(from_url);
    }

    #[test]
    fn mysql_pool_debug_hides_the_password() {
        let Some(url) = servers::mysql_url("mysql_pool_debug_hides_the_password") else {
            return;
        };
        let pool = Pool::builder()
            .max_size(1)
            .reset_on_return(ResetAction::Rollback)
            .build(MysqlManager::from_url(&url).unwrap())
            .unwrap();
        let password = servers::url_password(&url).expect("the test URL has a password");
        let debug = format!("{pool:?}");
        assert!(
            !debug.contains(&password),
            "Pool shows the password: {debug}"
        );
    }
}

#[cfg(feature = "redis")]
mod redis_secrets {
    use super::*;
    use stickypool::backends::redis::{RedisClusterManager, RedisManager};

    #[test]
    fn redis_manager_debug_hides_the_password() {
        let port = servers::closed_port();
        let manager = RedisManager::new(format!("redis://app:{SECRET}@127.0.0.1:{port}/2"))
            .unwrap()
            .connect_timeout(Duration::from_secs(1));
        let debug = format!("{manager:?}");
        assert_no_secret("RedisManager", &debug);
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains(&format!("127.0.0.1:{port}")), "{debug}");

        failing_pool(manager);
    }

    #[test]
    fn redis_cluster_manager_debug_hides_the_password() {
        let ports = [servers::closed_port(), servers::closed_port()];
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("redis://:{SECRET}@127.0.0.1:{p}/"))
            .collect();
        let manager = RedisClusterManager::new(urls.iter().map(String::as_str)).unwrap();
        let debug = format!("{manager:?}");
        assert_no_secret("RedisClusterManager", &debug);
        assert!(debug.contains(&ports[0].to_string()), "{debug}");

        let from_client = RedisClusterManager::from_client(
            ::redis::cluster::ClusterClient::new(urls.iter().map(String::as_str)).unwrap(),
        );
        assert_no_secret("RedisClusterManager", &format!("{from_client:?}"));

        failing_pool(manager);
    }

    #[test]
    fn redis_pool_debug_hides_the_password() {
        let Some(url) = servers::redis_url("redis_pool_debug_hides_the_password") else {
            return;
        };
        let manager = RedisManager::new(url.as_str()).unwrap();
        let pool = Pool::builder().max_size(1).build(manager).unwrap();
        let debug = format!("{pool:?}");
        if let Some(password) = servers::url_password(&url) {
            assert!(
                !debug.contains(&password),
                "Pool shows the password: {debug}"
            );
        }
        assert!(debug.contains("RedisManager"), "{debug}");
    }
}
