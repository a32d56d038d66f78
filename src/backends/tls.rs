//! TLS from files, said the same way for PostgreSQL, MySQL and Redis.
//!
//! [`Tls`] names the certificate authority to trust, an optional client certificate
//! and key, and how much of the server's certificate to [`Verify`]. It is the config
//! file's `tls` table, and with the `tls` feature the managers take it in code:
//! [`PostgresManager::tls`](crate::backends::postgres::PostgresManager::tls),
//! [`MysqlManager::tls`](crate::backends::mysql::MysqlManager::tls) and
//! [`RedisManager::tls`](crate::backends::redis::RedisManager::tls).
//!
//! ```toml
//! [pools.main]
//! backend = "postgres"
//! url = "postgres://app:${DB_PASSWORD}@db.internal:5432/app"
//! tls = { ca_file = "/etc/ssl/db-ca.pem" }
//!
//! [pools.cache]
//! backend = "redis"
//! url = "rediss://cache.internal:6380/"
//! tls = { ca_file = "/etc/ssl/cache-ca.pem", cert_file = "/etc/ssl/app.pem", key_file = "/etc/ssl/app.key" }
//! ```
//!
//! The TLS library is the platform's, through
//! [`native-tls`](https://docs.rs/native-tls): OpenSSL on Linux, Secure Transport on
//! macOS, SChannel on Windows. All three drivers support it (`postgres-native-tls`,
//! the `mysql` crate's `native-tls` feature, the `redis` crate's `tls-native-tls`),
//! so one library and one set of system roots serve every backend.
//!
//! # What each field means
//!
//! * `ca_file`: PEM certificates trusted in addition to the system's roots (a
//!   private CA); for Redis, instead of them, as the driver does. Without it, the
//!   system's roots are trusted.
//! * `cert_file` and `key_file`: a client certificate (PEM) and its private key
//!   (PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`), given together, for servers that
//!   ask for one (PostgreSQL's `cert` login, Redis's `tls-auth-clients`). The MySQL
//!   driver's TLS takes a client identity only as a PKCS#12 archive, so a `mysql`
//!   pool refuses them with an error saying so; the Redis driver does not send one
//!   when `verify` is `"off"`, so that combination is refused too.
//! * `verify`: [`Verify::Full`] (the default) checks the certificate's chain and that
//!   it names the host connected to, as libpq's `sslmode=verify-full` does;
//!   [`Verify::Ca`] checks only the chain (libpq's `verify-ca`); [`Verify::Off`]
//!   checks nothing, which encrypts but lets anyone on the path pretend to be the
//!   server (libpq's `require`).
//!
//! A pool with `tls` set never falls back to plain text: PostgreSQL's `sslmode`
//! becomes `require` (a URL saying `sslmode=disable` is refused), a MySQL connection
//! fails if the server does not offer TLS, and a Redis URL must be `rediss://`.
//! Without `tls`, connections are plain text, and a PostgreSQL URL asking for
//! `sslmode=require` is refused rather than failing at every connect.
//!
//! The files are read when the manager is made, so a missing or malformed file fails
//! the pool's start, naming the field and the path. Errors and `Debug` output show
//! paths, never the contents of a key.

use std::path::PathBuf;

/// TLS settings: which authority to trust, an optional client certificate, and how
/// much to verify. See the [module documentation](self).
///
/// ```
/// use stickypool::backends::tls::{Tls, Verify};
///
/// let tls = Tls {
///     ca_file: Some("/etc/ssl/db-ca.pem".into()),
///     ..Tls::default()
/// };
/// assert_eq!(tls.verify, Verify::Full);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(default, deny_unknown_fields)
)]
pub struct Tls {
    /// PEM certificates to trust besides the system's roots.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM), with `key_file`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8 PEM), with `cert_file`.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub key_file: Option<PathBuf>,
    /// How much of the server's certificate to check.
    pub verify: Verify,
}

/// How much of the server's certificate a [`Tls`] connection checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize, serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum Verify {
    /// `"full"`: the chain up to a trusted root, and the host name (the default).
    #[default]
    Full,
    /// `"ca"`: the chain only; any host name is accepted.
    Ca,
    /// `"off"`: nothing. The connection is encrypted, but not authenticated.
    Off,
}

/// A [`Tls`] that cannot be used: a file that cannot be read or parsed, a field the
/// backend does not support, or a URL that contradicts it. The message names the
/// field and the path, never a key's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub(crate) String);

/// A client certificate and its key: the PEM files (the Redis driver takes these)
/// and the identity parsed from them (native-tls takes that).
#[cfg(feature = "tls")]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct ClientIdentity {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    identity: native_tls::Identity,
}

/// Never the key.
#[cfg(feature = "tls")]
impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// The file `path` of field `field`.
    fn read(field: &str, path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path)
            .map_err(|e| TlsError(format!("cannot read `{field}` {}: {e}", path.display())))
    }

    /// The contents of `ca_file`, checked to hold at least one PEM certificate.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ca_pem(&self) -> Result<Option<Vec<u8>>, TlsError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = Tls::read("ca_file", path)?;
        Tls::certificates(&pem, path)?;
        Ok(Some(pem))
    }

    /// Every certificate of a PEM file (a bundle may hold several).
    fn certificates(
        pem: &[u8],
        path: &std::path::Path,
    ) -> Result<Vec<native_tls::Certificate>, TlsError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let text = String::from_utf8_lossy(pem);
        let mut certificates = Vec::new();
        let mut rest = &text[..];
        while let Some(start) = rest.find(BEGIN) {
            let Some(len) = rest[start..].find(END) else {
                break;
            };
            let block = &rest[start..start + len + END.len()];
            let certificate = native_tls::Certificate::from_pem(block.as_bytes()).map_err(|e| {
                TlsError(format!(
                    "`ca_file` {} holds a certificate that does not parse: {e}",
                    path.display()
                ))
            })?;
            certificates.push(certificate);
            rest = &rest[start + len + END.len()..];
        }
        if certificates.is_empty() {
            return Err(TlsError(format!(
                "`ca_file` {} holds no PEM certificate ({BEGIN})",
                path.display()
            )));
        }
        Ok(certificates)
    }

    /// The client certificate and key, if given; both or neither.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn client_identity(&self) -> Result<Option<ClientIdentity>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let cert_pem = Tls::read("cert_file", cert)?;
                let key_pem = Tls::read("key_file", key)?;
                // Parsed here so that a bad pair fails when the manager is made.
                let identity =
                    native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
                        TlsError(format!(
                            "`cert_file` {} and `key_file` {} are not a PEM certificate and its \
                         PKCS#8 PEM key: {e}",
                            cert.display(),
                            key.display()
                        ))
                    })?;
                Ok(Some(ClientIdentity {
                    cert_pem,
                    key_pem,
                    identity,
                }))
            }
            (Some(_), None) => Err(TlsError(
                "`cert_file` needs `key_file`, the certificate's private key".into(),
            )),
            (None, Some(_)) => Err(TlsError(
                "`key_file` needs `cert_file`, the certificate it belongs to".into(),
            )),
        }
    }

    /// A native-tls connector doing what this says.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn connector(&self) -> Result<native_tls::TlsConnector, TlsError> {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(path) = &self.ca_file {
            for certificate in Tls::certificates(&Tls::read("ca_file", path)?, path)? {
                builder.add_root_certificate(certificate);
            }
        }
        if let Some(client) = self.client_identity()? {
            builder.identity(client.identity);
        }
        builder
            .danger_accept_invalid_hostnames(self.verify != Verify::Full)
            .danger_accept_invalid_certs(self.verify == Verify::Off);
        builder
            .build()
            .map_err(|e| TlsError(format!("the TLS library refused the settings: {e}")))
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    fn file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stickypool-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = Tls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Tls::default()
        };
        let err = tls.connector().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read `ca_file` /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let tls = Tls {
            ca_file: Some(file("empty-ca.pem", "not a certificate\n")),
            ..Tls::default()
        };
        let err = tls.ca_pem().unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let tls = Tls {
            cert_file: Some("client.pem".into()),
            ..Tls::default()
        };
        assert!(
            tls.client_identity()
                .unwrap_err()
                .0
                .contains("needs `key_file`")
        );
        let tls = Tls {
            key_file: Some("client.key".into()),
            ..Tls::default()
        };
        assert!(
            tls.client_identity()
                .unwrap_err()
                .0
                .contains("needs `cert_file`")
        );
    }

    #[test]
    fn a_bad_key_is_refused_without_its_contents() {
        let secret = "secret-key-material-do-not-print";
        let tls = Tls {
            cert_file: Some(file("cert.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n")),
            key_file: Some(file(
                "key.pem",
                &format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
            )),
            ..Tls::default()
        };
        let err = tls.client_identity().unwrap_err().to_string();
        assert!(err.contains("key.pem"), "names the file: {err}");
        assert!(!err.contains(secret), "shows the key: {err}");
    }
}
