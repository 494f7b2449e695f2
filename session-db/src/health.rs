//! Taking a connection from the pool, checked only when it may have died.
//!
//! r2d2 can test every connection it hands out (`test_on_check_out`, one
//! `SELECT 1` round trip per operation). Pools this crate builds do that only
//! for MySQL; see [`Checkout`] for why and what the others do instead.

use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

use crate::DbError;
use crate::conn::Conn;
use crate::url::Secrets;

/// A connection that completed an operation this recently is used without a
/// check (HikariCP's "alive bypass window" has the same length).
pub(crate) const ALIVE_BYPASS: Duration = Duration::from_millis(500);

/// How the store checks connections it takes from its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkout {
    /// Take connections as the pool hands them out: SQLite (nothing can
    /// break a local connection), MySQL (r2d2 tests every connection:
    /// diesel cannot mark a dead MySQL connection broken, so a failed check
    /// of our own could not make r2d2 drop it), and pools the application
    /// built (their own `test_on_check_out` applies).
    AsIs,
    /// SQLite pools the application built: as they are handed out, but the
    /// first time the store takes a connection it gets a busy timeout (the
    /// pool's connection timeout) if it has none, so that without
    /// [`SqliteTuning`](crate::SqliteTuning) the store's statements wait
    /// for a lock instead of failing at once with "database is locked".
    AdoptSqlite,
    /// PostgreSQL pools this crate builds: ping a connection only if it did
    /// not complete an operation within [`ALIVE_BYPASS`] or its last
    /// operation failed. A connection whose socket is dead fails the ping,
    /// and diesel then marks it broken (libpq reports its transaction status
    /// as unknown), so r2d2 discards it when it is returned.
    PingIfIdle,
}

/// When the connection last completed an operation (r2d2 extension).
#[derive(Debug, Clone, Copy)]
struct LastOk(Instant);

/// The connection has been adopted (r2d2 extension): see
/// [`Checkout::AdoptSqlite`].
#[derive(Debug, Clone, Copy)]
struct Adopted;

/// A connection from `pool`, checked and prepared per `mode` (`wait`: the
/// pool's connection timeout); errors with the URL's secrets redacted.
pub(crate) fn take<C>(
    pool: &Pool<ConnectionManager<C>>,
    mode: Checkout,
    secrets: &Secrets,
    wait: Duration,
) -> Result<PooledConnection<ConnectionManager<C>>, DbError>
where
    C: R2D2Connection + Conn + Send + 'static,
{
    let mut conn = checkout(pool, mode, secrets)?;
    if mode == Checkout::AdoptSqlite
        && PooledConnection::extensions(&conn)
            .get::<Adopted>()
            .is_none()
    {
        Conn::adopt(&mut *conn, wait)?;
        PooledConnection::extensions_mut(&mut conn).insert(Adopted);
    }
    Ok(conn)
}

/// A connection from `pool`, checked per `mode`; errors with the URL's
/// secrets redacted.
fn checkout<C>(
    pool: &Pool<ConnectionManager<C>>,
    mode: Checkout,
    secrets: &Secrets,
) -> Result<PooledConnection<ConnectionManager<C>>, DbError>
where
    C: R2D2Connection + Send + 'static,
{
    let get = || {
        pool.get()
            .map_err(|e| DbError::Pool(secrets.redact(&e.to_string())))
    };
    if mode != Checkout::PingIfIdle {
        return get();
    }
    // Every pooled connection may be dead after a database restart: check
    // each one at most once, then let the operation report what happens.
    for _ in 0..=pool.max_size() {
        let mut conn = get()?;
        let recent = PooledConnection::extensions(&conn)
            .get::<LastOk>()
            .is_some_and(|last| last.0.elapsed() < ALIVE_BYPASS);
        if recent || conn.ping().is_ok() {
            return Ok(conn);
        }
        tracing::debug!("a pooled connection failed its check; taking another");
    }
    get()
}

/// Record how an operation on `conn` ended: `healthy` if the database
/// answered (even with "not found" or "conflict"), so the next checkout
/// within [`ALIVE_BYPASS`] needs no check.
pub(crate) fn finished<C>(conn: &mut PooledConnection<ConnectionManager<C>>, healthy: bool)
where
    C: R2D2Connection + Send + 'static,
{
    let extensions = PooledConnection::extensions_mut(conn);
    if healthy {
        extensions.insert(LastOk(Instant::now()));
    } else {
        extensions.remove::<LastOk>();
    }
}
