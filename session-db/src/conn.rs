//! What differs between the databases: transactions, locks, insert-or-replace
//! and migrations. Everything else is shared SQL run through [`Conn`].

use std::time::Duration;

#[cfg(any(feature = "postgres", feature = "mysql"))]
use sha2::{Digest, Sha256};

use crate::DbError;
use crate::error::OpError;
use crate::migrations::TableMigrations;
use crate::sql::{Arg, CountRow, OwnerRow, RecordRow, Statements, Stmt};

/// How long a starting store waits for another process that is migrating the
/// same database.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// A diesel connection this crate can run its operations on. Implemented for
/// `SqliteConnection`, `PgConnection` and `MysqlConnection`.
pub(crate) trait Conn: Sized + 'static {
    /// Run a statement; the number of rows it changed (MySQL: matched, as
    /// diesel connects with `CLIENT_FOUND_ROWS`).
    fn exec(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<usize>;
    fn records(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<Vec<RecordRow>>;
    fn owner_rows(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<Vec<OwnerRow>>;
    fn count(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<i64>;

    /// Run `f`, which writes, so that concurrent writers wait for each other
    /// rather than fail: SQLite takes the database's write lock up front
    /// (`BEGIN IMMEDIATE`, waiting up to `busy_timeout`); PostgreSQL and MySQL
    /// run `f`'s single statements as they are (row locks do the rest).
    fn write<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, OpError>) -> Result<T, OpError>;

    /// Run `f` in a transaction that holds `owner`'s lock, so that no other
    /// binding of a session to the same owner runs in between (the per-owner
    /// limit's count and the write are one step).
    fn owner_locked<T>(
        &mut self,
        sql: &Statements,
        owner: &str,
        wait: Duration,
        f: impl FnOnce(&mut Self) -> Result<T, OpError>,
    ) -> Result<T, OpError>;

    /// Insert a new row (`values` in `COLUMNS` order), replacing an expired
    /// row under the same key. `Ok(false)` if a live row holds the key.
    fn insert(
        &mut self,
        sql: &Statements,
        values: &[Arg<'_>; 8],
        now: i64,
    ) -> Result<bool, OpError>;

    /// Run the pending migrations, serialised with other processes.
    fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError>;
}

macro_rules! shared_queries {
    () => {
        fn exec(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<usize> {
            diesel::RunQueryDsl::execute(stmt.bind(args), self)
        }

        fn records(
            &mut self,
            stmt: &Stmt,
            args: &[Arg<'_>],
        ) -> diesel::QueryResult<Vec<RecordRow>> {
            diesel::RunQueryDsl::load(stmt.bind(args), self)
        }

        fn owner_rows(
            &mut self,
            stmt: &Stmt,
            args: &[Arg<'_>],
        ) -> diesel::QueryResult<Vec<OwnerRow>> {
            diesel::RunQueryDsl::load(stmt.bind(args), self)
        }

        fn count(&mut self, stmt: &Stmt, args: &[Arg<'_>]) -> diesel::QueryResult<i64> {
            diesel::RunQueryDsl::get_result::<CountRow>(stmt.bind(args), self).map(|row| row.n)
        }
    };
}

/// SQLite and PostgreSQL: one `INSERT … ON CONFLICT DO UPDATE … WHERE
/// expires_ms <= now` inserts, replaces an expired row, or changes nothing
/// (0 rows) when the row under the key is live.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn upsert_over_expired<C: Conn>(
    c: &mut C,
    sql: &Statements,
    values: &[Arg<'_>; 8],
    now: i64,
) -> Result<bool, OpError> {
    let mut args = [Arg::Int(now); 9];
    args[..8].copy_from_slice(values);
    Ok(c.exec(&sql.insert, &args)? == 1)
}

/// The key of a per-owner lock: a hash of the table and the owner, so locks
/// of different tables and owners do not contend.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn owner_lock_hash(sql: &Statements, owner: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"session-db owner lock\0");
    h.update(sql.table.as_str().as_bytes());
    h.update([0]);
    h.update(owner.as_bytes());
    h.finalize().into()
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use diesel::SqliteConnection;
    use diesel_migrations::MigrationHarness;

    use super::*;

    impl Conn for SqliteConnection {
        shared_queries!();

        fn write<T>(
            &mut self,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            self.immediate_transaction(f)
        }

        /// SQLite serialises all writers: the `BEGIN IMMEDIATE` write lock is
        /// the owner lock.
        fn owner_locked<T>(
            &mut self,
            _sql: &Statements,
            _owner: &str,
            _wait: Duration,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            self.immediate_transaction(f)
        }

        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
        ) -> Result<bool, OpError> {
            upsert_over_expired(self, sql, values, now)
        }

        /// One `BEGIN IMMEDIATE` transaction around the whole run: a second
        /// process waits for the first (busy timeout), then finds nothing
        /// pending.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            self.immediate_transaction(|c| {
                c.run_pending_migrations(migrations)
                    .map(drop)
                    .map_err(DbError::Migration)
            })
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::Instant;

    use diesel::{Connection, PgConnection};
    use diesel_migrations::MigrationHarness;

    use super::*;

    /// Advisory lock key serialising migrations of session tables in one
    /// database ("sessdbmg").
    const MIGRATION_LOCK: i64 = 0x7365_7373_6462_6d67;

    impl Conn for PgConnection {
        shared_queries!();

        fn write<T>(
            &mut self,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            f(self)
        }

        /// `pg_advisory_xact_lock` on a hash of table and owner, released when
        /// the transaction ends; waiting at most `wait` (a transaction-local
        /// `lock_timeout`).
        fn owner_locked<T>(
            &mut self,
            sql: &Statements,
            owner: &str,
            wait: Duration,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            let hash = owner_lock_hash(sql, owner);
            let key = i64::from_be_bytes([
                hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
            ]);
            let timeout = format!("{}ms", wait.as_millis().max(1));
            self.transaction(|c| {
                c.exec(
                    &Stmt::new("SELECT set_config('lock_timeout', ?, true)"),
                    &[Arg::Text(&timeout)],
                )?;
                c.exec(
                    &Stmt::new("SELECT pg_advisory_xact_lock(?)"),
                    &[Arg::Int(key)],
                )?;
                f(c)
            })
        }

        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
        ) -> Result<bool, OpError> {
            upsert_over_expired(self, sql, values, now)
        }

        /// Session-level advisory lock around the run. DDL is transactional
        /// in PostgreSQL, and the lock also keeps concurrent
        /// `CREATE TABLE IF NOT EXISTS` from racing in the catalog.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            let try_lock = Stmt::new(
                "SELECT CAST(CASE WHEN pg_try_advisory_lock(?) THEN 1 ELSE 0 END AS BIGINT) AS n",
            );
            let deadline = Instant::now() + MIGRATION_LOCK_WAIT;
            while self.count(&try_lock, &[Arg::Int(MIGRATION_LOCK)])? != 1 {
                if Instant::now() >= deadline {
                    return Err(DbError::LockTimeout(MIGRATION_LOCK_WAIT));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let ran = self
                .run_pending_migrations(migrations)
                .map(drop)
                .map_err(DbError::Migration);
            let unlocked = self.exec(
                &Stmt::new("SELECT pg_advisory_unlock(?)"),
                &[Arg::Int(MIGRATION_LOCK)],
            );
            ran?;
            unlocked?;
            Ok(())
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use std::fmt::Write as _;

    use diesel::{Connection, MysqlConnection};
    use diesel_migrations::MigrationHarness;

    use super::*;

    const MIGRATION_LOCK: &str = "session_db:migrate";

    /// `GET_LOCK` with a timeout in whole seconds; true if granted.
    fn get_lock(c: &mut MysqlConnection, name: &str, wait: Duration) -> diesel::QueryResult<bool> {
        let secs = i64::try_from(wait.as_secs().max(1)).unwrap_or(i64::MAX);
        let got = c.count(
            &Stmt::new("SELECT CAST(COALESCE(GET_LOCK(?, ?), 0) AS SIGNED) AS n"),
            &[Arg::Text(name), Arg::Int(secs)],
        )?;
        Ok(got == 1)
    }

    fn release_lock(c: &mut MysqlConnection, name: &str) {
        let released = c.count(
            &Stmt::new("SELECT CAST(COALESCE(RELEASE_LOCK(?), 0) AS SIGNED) AS n"),
            &[Arg::Text(name)],
        );
        // If the connection broke, the server released the lock with it.
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release a MySQL named lock");
        }
    }

    impl Conn for MysqlConnection {
        shared_queries!();

        fn write<T>(
            &mut self,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            f(self)
        }

        /// A named lock (`GET_LOCK`) on a hash of table and owner, taken
        /// before the transaction starts (so its first read sees the previous
        /// holder's commit) and released after it ends.
        fn owner_locked<T>(
            &mut self,
            sql: &Statements,
            owner: &str,
            wait: Duration,
            f: impl FnOnce(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            let hash = owner_lock_hash(sql, owner);
            let mut name = String::from("session_db:");
            for b in &hash[..16] {
                let _ = write!(name, "{b:02x}");
            }
            if !get_lock(self, &name, wait)? {
                return Err(DbError::LockTimeout(wait).into());
            }
            let result = self.transaction(f);
            release_lock(self, &name);
            result
        }

        /// MySQL has no conditional upsert: insert, and only if the key is
        /// taken, delete the row there if it is expired and insert once more;
        /// a second duplicate means a live session holds the key. Each step
        /// is one atomic statement, and the common path (a fresh key) is one
        /// statement that takes no gap locks.
        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
        ) -> Result<bool, OpError> {
            match self.exec(&sql.insert, values) {
                Ok(_) => return Ok(true),
                Err(e) if !is_unique_violation(&e) => return Err(e.into()),
                Err(_) => {}
            }
            // Even if this deletes nothing (a purge may have been faster),
            // the key may be free now: the second insert decides.
            self.exec(&sql.delete_expired_key, &[values[0], Arg::Int(now)])?;
            match self.exec(&sql.insert, values) {
                Ok(_) => Ok(true),
                Err(e) if is_unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }

        /// A named lock around the run. MySQL commits DDL implicitly, so the
        /// lock is what keeps two processes from both recording the version;
        /// `IF NOT EXISTS` makes a repeated DDL harmless.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            if !get_lock(self, MIGRATION_LOCK, MIGRATION_LOCK_WAIT)? {
                return Err(DbError::LockTimeout(MIGRATION_LOCK_WAIT));
            }
            let ran = self
                .run_pending_migrations(migrations)
                .map(drop)
                .map_err(DbError::Migration);
            release_lock(self, MIGRATION_LOCK);
            ran
        }
    }
}

/// Whether a statement failed because a unique key was taken.
pub(crate) fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}
