//! Any [diesel](https://docs.rs/diesel) connection type (feature `diesel`):
//! `diesel::PgConnection`, `diesel::SqliteConnection`, `diesel::MysqlConnection`, or a
//! `#[derive(MultiConnection)]` enum of them.
//!
//! stickypool's `diesel` feature turns on no diesel backend: enable diesel's own
//! `postgres`, `sqlite` or `mysql` feature in your `Cargo.toml` as you would without a
//! pool (Cargo unifies them with stickypool's dependency).
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel::sql_types::Integer;
//! use stickypool::backends::diesel::DieselManager;
//! use stickypool::{Pool, ResetAction};
//!
//! #[derive(QueryableByName)]
//! struct Answer {
//!     #[diesel(sql_type = Integer)]
//!     value: i32,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = DieselManager::<diesel::PgConnection>::new("postgres://app:secret@127.0.0.1/app");
//! let pool = Pool::builder()
//!     .max_size(16)
//!     .reset_on_return(ResetAction::Rollback)
//!     .build(manager)?;
//!
//! let mut conn = pool.get()?;
//! // diesel takes `&mut PgConnection`: `&mut *conn` reaches it through the guard.
//! let answer: Answer = diesel::sql_query("SELECT 41 + 1 AS value").get_result(&mut *conn)?;
//! assert_eq!(answer.value, 42);
//! conn.transaction(|conn| {
//!     diesel::sql_query("SELECT 1").execute(conn)?;
//!     diesel::QueryResult::Ok(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! # Porting from `diesel::r2d2`
//!
//! diesel's r2d2 integration implements `diesel::Connection` for r2d2's pooled
//! connection, so r2d2 code passes `&mut conn`. A stickypool guard dereferences to the
//! connection instead: write `&mut *conn` (or `conn.deref_mut()`) where diesel wants the
//! connection, as above. Methods called on the guard (`conn.transaction(..)`,
//! `conn.batch_execute(..)`) work unchanged through auto-deref. Replace
//! `diesel::r2d2::ConnectionManager::<C>::new(url)` with `DieselManager::<C>::new(url)`
//! and `diesel::r2d2::Pool` with [`stickypool::Pool`](crate::Pool).
//!
//! # What the hooks do
//!
//! * [`is_valid`](ManageConnection::is_valid): diesel's own ping
//!   ([`R2D2Connection::ping`], `SELECT 1`).
//! * [`has_broken`](ManageConnection::has_broken): diesel's own
//!   [`R2D2Connection::is_broken`], no I/O: true when diesel's transaction manager is in
//!   its error state (a failed `COMMIT` or `ROLLBACK` left the connection unusable) or
//!   still inside a transaction diesel opened, as after a panic caught inside
//!   `conn.transaction(..)`. The pool closes such a connection; the server rolls back
//!   what the session held. (diesel offers no public way to make its transaction
//!   manager forget a transaction, so rolling it back and keeping the connection would
//!   leave diesel's bookkeeping wrong.)
//! * [`reset`](ManageConnection::reset): what diesel does not know about, a raw
//!   `BEGIN` sent with `sql_query` or `batch_execute`, is ended by
//!   [`ResetAction::Rollback`] (`ROLLBACK`) or [`ResetAction::Commit`] (`COMMIT`). SQLite
//!   answers those with an error when no transaction is open ("no transaction is
//!   active"), which counts as clean; PostgreSQL only warns, and diesel silences its
//!   warnings. [`ResetAction::Session`] on PostgreSQL also does what `DISCARD ALL`
//!   does except `DEALLOCATE ALL`, which would break diesel's statement cache (as for
//!   [`PostgresManager`](super::postgres)); other backends have no such statement, so
//!   there it does what `Rollback` does. Any other error closes the connection.

use std::fmt;
use std::marker::PhantomData;

use diesel::r2d2::R2D2Connection;
use diesel::result::Error as QueryError;

use crate::manager::{ManageConnection, ResetAction};

/// A [`ManageConnection`] for diesel connections of type `C`.
///
/// See the [module documentation](self) for an example and for what each hook does.
pub struct DieselManager<C> {
    url: String,
    _connection: PhantomData<fn() -> C>,
}

impl<C> DieselManager<C> {
    /// A manager opening its connections with `C::establish(url)`.
    ///
    /// Nothing is opened here.
    pub fn new(url: impl Into<String>) -> DieselManager<C> {
        DieselManager {
            url: url.into(),
            _connection: PhantomData,
        }
    }
}

impl<C> Clone for DieselManager<C> {
    fn clone(&self) -> DieselManager<C> {
        DieselManager::new(self.url.clone())
    }
}

/// Shows the connection type and where it connects, never the password.
impl<C> fmt::Debug for DieselManager<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselManager")
            .field("connection", &std::any::type_name::<C>())
            .field("url", &redact_password(&self.url))
            .finish()
    }
}

/// The error of a [`DieselManager`]: diesel's connect error or its query error.
#[derive(Debug, thiserror::Error)]
pub enum DieselError {
    /// Opening the connection failed.
    #[error(transparent)]
    Connection(#[from] diesel::ConnectionError),
    /// A check or a reset failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl<C> ManageConnection for DieselManager<C>
where
    C: R2D2Connection + Send + 'static,
{
    type Connection = C;
    type Error = DieselError;

    fn connect(&self) -> Result<C, DieselError> {
        Ok(C::establish(&self.url)?)
    }

    fn is_valid(&self, conn: &mut C) -> Result<(), DieselError> {
        Ok(conn.ping()?)
    }

    fn has_broken(&self, conn: &mut C) -> bool {
        conn.is_broken()
    }

    fn can_reset(&self) -> bool {
        true
    }

    fn reset(&self, conn: &mut C, action: ResetAction) -> Result<(), DieselError> {
        let sql = match action {
            ResetAction::Keep => return Ok(()),
            ResetAction::Commit => "COMMIT",
            ResetAction::Session if is_postgres::<C>() => super::POSTGRES_SESSION_RESET,
            ResetAction::Rollback | ResetAction::Session => "ROLLBACK",
        };
        match conn.batch_execute(sql) {
            Err(e) if !no_transaction_was_open(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// SQLite's answer to `COMMIT`/`ROLLBACK` without a transaction: "cannot rollback - no
/// transaction is active".
fn no_transaction_was_open(error: &QueryError) -> bool {
    matches!(error, QueryError::DatabaseError(_, info)
        if info.message().contains("no transaction is active"))
}

/// Whether `C` talks to PostgreSQL. diesel's `Pg` type exists only with diesel's
/// `postgres` feature, which is the application's choice, so it is recognized by name.
fn is_postgres<C: diesel::Connection>() -> bool {
    std::any::type_name::<C::Backend>() == "diesel::pg::backend::Pg"
}

/// The URL or `key=value` string with any password replaced.
fn redact_password(url: &str) -> String {
    let hide = |part: &str| match part.split_once('=') {
        Some(("password", _)) => "password=<redacted>".to_owned(),
        _ => part.to_owned(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.split(' ').map(hide).collect::<Vec<_>>().join(" ");
    };
    let (base, query) = rest
        .split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)));
    let mut out = match base.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:<redacted>@{host}")
        }
        _ => format!("{scheme}://{base}"),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(&query.split('&').map(hide).collect::<Vec<_>>().join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn debug_urls_hide_the_password() {
        assert_eq!(
            redact_password("postgres://app:p@ss@db:5432/app"),
            "postgres://app:<redacted>@db:5432/app"
        );
        assert_eq!(
            redact_password("postgres://app:a/b@db/app?sslmode=disable"),
            "postgres://app:<redacted>@db/app?sslmode=disable"
        );
        assert_eq!(
            redact_password("postgres://app@db/app"),
            "postgres://app@db/app"
        );
        assert_eq!(
            redact_password("postgres://db/app?user=app&password=secret"),
            "postgres://db/app?user=app&password=<redacted>"
        );
        assert_eq!(
            redact_password("host=db password=secret dbname=app"),
            "host=db password=<redacted> dbname=app"
        );
        assert_eq!(redact_password("file:test.db"), "file:test.db");
        assert_eq!(redact_password("app.db"), "app.db");
    }
}
