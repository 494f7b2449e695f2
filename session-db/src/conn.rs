//! What differs between the databases: transactions, locks, insert-or-replace
//! and migrations. Everything else is shared SQL run through [`Conn`].

use std::time::Duration;

#[cfg(any(feature = "postgres", feature = "mysql"))]
use sha2::{Digest, Sha256};

use crate::DbError;
use crate::error::OpError;
use crate::migrations::TableMigrations;
use crate::sql::{Arg, CountRow, LockScope, OwnerRow, RecordRow, Statements, Stmt};

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
    /// run `f`'s single statements as they are (row locks do the rest), and
    /// run `f` again if the server rolled a statement back to break a
    /// deadlock (a key-changing rotation can deadlock with a revocation's
    /// delete by owner, a login ending an owner's oldest session with a
    /// purge), so `f` may run several times.
    fn write<T>(&mut self, f: impl FnMut(&mut Self) -> Result<T, OpError>) -> Result<T, OpError>;

    /// Run `f` in a transaction that holds `owner`'s lock, so that no other
    /// binding of a session to the same owner runs in between (the per-owner
    /// limit's count and the write are one step). Waiting longer than `wait`
    /// for the lock fails with [`DbError::LockTimeout`]. `f` runs again if
    /// the database aborted a run to break a deadlock.
    fn owner_locked<T>(
        &mut self,
        sql: &Statements,
        owner: &str,
        wait: Duration,
        f: impl FnMut(&mut Self) -> Result<T, OpError>,
    ) -> Result<T, OpError>;

    /// Insert a new row (`values` in `COLUMNS` order), replacing an expired
    /// row under the same key. `Ok(false)` if a live row holds the key.
    /// `in_transaction`: the insert is part of a longer transaction, whose
    /// locks are held until it ends.
    fn insert(
        &mut self,
        sql: &Statements,
        values: &[Arg<'_>; 8],
        now: i64,
        in_transaction: bool,
    ) -> Result<bool, OpError>;

    /// Prepare a connection of a pool the application built, the first
    /// time the store takes it (see `Checkout::AdoptSqlite`): SQLite gets
    /// a busy timeout of `busy_timeout` unless it has one.
    fn adopt(&mut self, busy_timeout: Duration) -> Result<(), DbError> {
        let _ = busy_timeout;
        Ok(())
    }

    /// What the database's server-wide lock names must include (MySQL).
    fn lock_scope(&mut self) -> Result<LockScope, DbError> {
        Ok(LockScope::default())
    }

    /// Run the pending migrations, serialised with other processes. When
    /// every migration is recorded already, only reads: a role without the
    /// right to create tables can start a store on a migrated database.
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

/// Whether any of `migrations` is not recorded in diesel's
/// `__diesel_schema_migrations` yet (`table_exists` counts that table).
fn pending<C: Conn>(
    c: &mut C,
    migrations: &TableMigrations,
    table_exists: &str,
) -> Result<bool, DbError> {
    let read = |e| DbError::Migration(Box::new(e));
    if c.count(&Stmt::new(table_exists), &[]).map_err(read)? == 0 {
        return Ok(true);
    }
    let recorded =
        Stmt::new("SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version = ?");
    for version in migrations.versions() {
        if c.count(&recorded, &[Arg::Text(&version)]).map_err(read)? == 0 {
            return Ok(true);
        }
    }
    Ok(false)
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

/// A hash naming a lock: of what it is for, the scope the database's lock
/// names share (MySQL's are server-wide), and the parts (table, owner).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn lock_hash(purpose: &str, scope: &str, parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"session-db ");
    h.update(purpose.as_bytes());
    h.update([0]);
    if !scope.is_empty() {
        h.update(scope.as_bytes());
        h.update([0]);
    }
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A transaction opened with `begin` (which may set options for it, in one
/// round trip), committed if `f` succeeds and rolled back otherwise, as
/// diesel's own `Connection::transaction` does.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn transaction_with<C, T, E>(
    c: &mut C,
    begin: &str,
    f: impl FnOnce(&mut C) -> Result<T, E>,
) -> Result<T, E>
where
    C: diesel::Connection<TransactionManager = diesel::connection::AnsiTransactionManager>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::begin_transaction_sql(c, begin)?;
    match f(c) {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(c)?;
            Ok(value)
        }
        Err(error) => match AnsiTransactionManager::rollback_transaction(c) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// How many times a write the server rolled back to break a deadlock is
/// run again before its error is returned.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const DEADLOCK_RERUNS: u32 = 3;

/// Run `f`; if the server rolled it back to break a deadlock (`victim`
/// says so; its transaction is gone, so running it again is safe), pause
/// and run it again, up to [`DEADLOCK_RERUNS`] times. The pause lets the
/// transaction it deadlocked with, which the rollback only woke, take the
/// rows first: a rerun that raced it there would deadlock once more.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn rerun_deadlock_victims<C, T>(
    c: &mut C,
    victim: fn(&Result<T, OpError>) -> bool,
    mut f: impl FnMut(&mut C) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let mut result = f(c);
    for _ in 0..DEADLOCK_RERUNS {
        if !victim(&result) {
            break;
        }
        tracing::debug!("a write was a deadlock victim; running it again");
        std::thread::sleep(Duration::from_millis(10));
        result = f(c);
    }
    result
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use diesel::SqliteConnection;
    use diesel_migrations::MigrationHarness;

    use super::*;

    const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) AS n FROM sqlite_master \
         WHERE type = 'table' AND name = '__diesel_schema_migrations'";

    impl Conn for SqliteConnection {
        shared_queries!();

        fn write<T>(
            &mut self,
            f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            self.immediate_transaction(f)
        }

        /// SQLite serialises all writers: the `BEGIN IMMEDIATE` write lock is
        /// the owner lock (waiting up to `busy_timeout`, not `wait`).
        fn owner_locked<T>(
            &mut self,
            _sql: &Statements,
            _owner: &str,
            _wait: Duration,
            f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            self.immediate_transaction(f)
        }

        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
            _in_transaction: bool,
        ) -> Result<bool, OpError> {
            upsert_over_expired(self, sql, values, now)
        }

        /// SQLite's default busy timeout is 0: a statement that meets a
        /// lock fails at once with "database is locked". A busy timeout the
        /// application chose is kept.
        fn adopt(&mut self, busy_timeout: Duration) -> Result<(), DbError> {
            use diesel::connection::SimpleConnection;

            #[derive(diesel::QueryableByName)]
            struct Busy {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                timeout: i64,
            }
            let current: Busy =
                diesel::RunQueryDsl::get_result(diesel::sql_query("PRAGMA busy_timeout"), self)?;
            if current.timeout == 0 {
                let ms = busy_timeout.as_millis().clamp(1, i32::MAX as u128);
                self.batch_execute(&format!("PRAGMA busy_timeout = {ms}"))?;
            }
            Ok(())
        }

        /// One `BEGIN IMMEDIATE` transaction around the whole run: a second
        /// process waits for the first (busy timeout), then finds nothing
        /// pending.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            if !pending(self, &migrations, MIGRATIONS_TABLE_EXISTS)? {
                return Ok(());
            }
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
    use diesel::PgConnection;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use diesel_migrations::MigrationHarness;

    use super::*;

    /// Advisory lock key serialising migrations of session tables in one
    /// database ("sessdbmg"; documented in the crate docs).
    const MIGRATION_LOCK: i64 = 0x7365_7373_6462_6d67;

    /// Whether diesel's migrations table is in the current schema (the first
    /// of the search path that exists), where diesel creates it and looks
    /// first, and where the session table is created. Not anywhere on the
    /// search path: with `tenant, public`, a `public` table recording
    /// another store's migration would otherwise stop this store from
    /// creating its table in `tenant`, and it would share `public`'s
    /// sessions (and revoke them).
    const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) AS n FROM pg_catalog.pg_tables \
         WHERE schemaname = current_schema() AND tablename = '__diesel_schema_migrations'";

    /// `BEGIN` with a transaction-local `lock_timeout` of `wait`.
    fn begin_waiting(wait: Duration) -> String {
        format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'",
            wait.as_millis().clamp(1, i32::MAX as u128)
        )
    }

    /// `pg_advisory_xact_lock(key)`, released when the transaction ends,
    /// waiting at most `wait` (the transaction's `lock_timeout`): its
    /// failure is [`DbError::LockTimeout`] if [`is_lock_timeout`] says so,
    /// else the statement's error (a `statement_timeout` or an
    /// administrator's cancel is not a lock timeout).
    fn xact_lock(c: &mut PgConnection, key: i64, wait: Duration) -> Result<(), DbError> {
        let started = std::time::Instant::now();
        match c.exec(
            &Stmt::new("SELECT pg_advisory_xact_lock(?)"),
            &[Arg::Int(key)],
        ) {
            Ok(_) => Ok(()),
            Err(DieselError::DatabaseError(DatabaseErrorKind::Unknown, ref info))
                if is_lock_timeout(info.message(), started.elapsed(), wait) =>
            {
                Err(DbError::LockTimeout(wait))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a failed lock statement hit `lock_timeout` (SQLSTATE 55P03).
    /// diesel reports neither the SQLSTATE nor a kind for it, so: by the
    /// server's English message ("canceling statement due to lock
    /// timeout"), and for a translated one (`lc_messages`) by whether the
    /// statement waited about as long as the lock timeout, which a shorter
    /// `statement_timeout` cancel does not.
    pub(super) fn is_lock_timeout(message: &str, waited: Duration, wait: Duration) -> bool {
        if message.contains("lock timeout") {
            return true;
        }
        if message.contains("statement timeout") || message.contains("user request") {
            return false;
        }
        waited + Duration::from_millis(20) >= wait
    }

    /// Whether PostgreSQL aborted a statement to break a deadlock (SQLSTATE
    /// 40P01, which diesel reports as an unknown kind: so by the server's
    /// message). Its transaction is rolled back, so running it again is safe.
    fn is_deadlock<T>(result: &Result<T, OpError>) -> bool {
        matches!(
            result,
            Err(OpError::Db(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                info
            )))) if info.message().starts_with("deadlock detected")
        )
    }

    impl Conn for PgConnection {
        shared_queries!();

        /// `f`'s statements as they are; if PostgreSQL chose one as a
        /// deadlock victim (a revocation's delete by owner against a login
        /// that ends an owner's oldest sessions), `f` runs again.
        fn write<T>(
            &mut self,
            f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            rerun_deadlock_victims(self, is_deadlock, f)
        }

        /// `pg_advisory_xact_lock` on a hash of table and owner (advisory
        /// locks are per database already), released when the transaction
        /// ends; waiting at most `wait` (a transaction-local `lock_timeout`).
        /// If PostgreSQL rolled the transaction back to break a deadlock, it
        /// runs again.
        fn owner_locked<T>(
            &mut self,
            sql: &Statements,
            owner: &str,
            wait: Duration,
            mut f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            let hash = lock_hash("owner lock", "", &[sql.table.as_str(), owner]);
            let key = i64::from_be_bytes([
                hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
            ]);
            rerun_deadlock_victims(self, is_deadlock, |c| {
                transaction_with(c, &begin_waiting(wait), |c| {
                    xact_lock(c, key, wait)?;
                    f(c)
                })
            })
        }

        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
            _in_transaction: bool,
        ) -> Result<bool, OpError> {
            upsert_over_expired(self, sql, values, now)
        }

        /// The whole run is one transaction holding a transaction-level
        /// advisory lock (DDL is transactional in PostgreSQL): nothing is
        /// left half done, and no lock outlives the transaction, also behind
        /// a pooler such as PgBouncer in transaction mode, where a
        /// session-level lock and its unlock could reach different server
        /// connections.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            if !pending(self, &migrations, MIGRATIONS_TABLE_EXISTS)? {
                return Ok(());
            }
            transaction_with(self, &begin_waiting(MIGRATION_LOCK_WAIT), |c| {
                xact_lock(c, MIGRATION_LOCK, MIGRATION_LOCK_WAIT)?;
                c.run_pending_migrations(migrations)
                    .map(drop)
                    .map_err(DbError::Migration)
            })
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use std::fmt::Write as _;

    use diesel::MysqlConnection;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use diesel_migrations::MigrationHarness;

    use super::*;
    use crate::sql::ScopeRow;

    const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) AS n FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = '__diesel_schema_migrations'";

    /// Each locked transaction reads what committed before each of its
    /// statements: after a compare-and-set matched no row, the read that
    /// tells a conflict from a deleted session must see the deletion (under
    /// REPEATABLE READ it would read the snapshot of the transaction's first
    /// read). The named lock serialises the writers that must not overlap.
    /// READ COMMITTED also takes no gap locks, so concurrent locked inserts
    /// do not deadlock on a shared gap.
    const BEGIN_READ_COMMITTED: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN";

    /// A named lock's name: `session_db:` and 32 hex digits of a hash that
    /// includes the database, because MySQL's lock names are server-wide.
    /// The database name is folded to lower case: where the server ignores
    /// its case (`lower_case_table_names` 1 or 2: Windows and macOS by
    /// default), `App` and `app` are one database, whose stores must share
    /// their locks, or two processes could both pass the per-owner limit, or
    /// both record the same migration (one failing to start). Where the case
    /// counts, two databases whose names differ only in case merely share
    /// their locks, which costs a wait at most.
    pub(super) fn lock_name(purpose: &str, scope: &str, parts: &[&str]) -> String {
        let hash = lock_hash(purpose, &scope.to_lowercase(), parts);
        let mut name = String::from("session_db:");
        for b in &hash[..16] {
            let _ = write!(name, "{b:02x}");
        }
        name
    }

    /// `GET_LOCK`, waiting up to `wait`; true if granted. MariaDB takes the
    /// timeout in fractional seconds; MySQL only in whole seconds, so there
    /// it is rounded up (a 300 ms wait waits up to 1 s).
    fn get_lock(
        c: &mut MysqlConnection,
        name: &str,
        wait: Duration,
        fractional: bool,
    ) -> diesel::QueryResult<bool> {
        let timeout = if fractional {
            format!("{}.{:03}", wait.as_secs(), wait.subsec_millis())
        } else {
            let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            whole.max(1).to_string()
        };
        let got = c.count(
            &Stmt::new("SELECT CAST(COALESCE(GET_LOCK(?, ?), 0) AS SIGNED) AS n"),
            &[Arg::Text(name), Arg::Text(&timeout)],
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

    fn is_deadlock<T>(result: &Result<T, OpError>) -> bool {
        matches!(
            result,
            Err(OpError::Db(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::SerializationFailure,
                _
            ))))
        )
    }

    impl Conn for MysqlConnection {
        shared_queries!();

        fn write<T>(
            &mut self,
            f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            rerun_deadlock_victims(self, is_deadlock, f)
        }

        /// A named lock (`GET_LOCK`) on a hash of database, table and owner,
        /// taken before the transaction starts (so its first read sees the
        /// previous holder's commit) and released after it ends. The
        /// transaction runs at READ COMMITTED. If InnoDB chose it as a
        /// deadlock victim (it rolled it back), it runs again.
        fn owner_locked<T>(
            &mut self,
            sql: &Statements,
            owner: &str,
            wait: Duration,
            mut f: impl FnMut(&mut Self) -> Result<T, OpError>,
        ) -> Result<T, OpError> {
            let scope = &sql.lock_scope;
            let name = lock_name("owner lock", &scope.database, &[sql.table.as_str(), owner]);
            if !get_lock(self, &name, wait, scope.fractional_wait)? {
                return Err(DbError::LockTimeout(wait).into());
            }
            let result = rerun_deadlock_victims(self, is_deadlock, |c| {
                transaction_with(c, BEGIN_READ_COMMITTED, &mut f)
            });
            release_lock(self, &name);
            result
        }

        /// MySQL has no conditional upsert. On its own (autocommit): insert,
        /// and only if the key is taken, delete the row there if it is
        /// expired and insert once more; a second duplicate means a live
        /// session holds the key. The common path (a fresh key) is one
        /// statement. Inside a transaction a failed insert would keep a
        /// shared lock on the duplicate row until the end, and two such
        /// transactions would deadlock on the delete: there, delete an
        /// expired row first, then insert.
        fn insert(
            &mut self,
            sql: &Statements,
            values: &[Arg<'_>; 8],
            now: i64,
            in_transaction: bool,
        ) -> Result<bool, OpError> {
            let delete_expired = [values[0], Arg::Int(now)];
            if in_transaction {
                self.exec(&sql.delete_expired_key, &delete_expired)?;
            } else {
                match self.exec(&sql.insert, values) {
                    Ok(_) => return Ok(true),
                    Err(e) if !is_unique_violation(&e) => return Err(e.into()),
                    Err(_) => {}
                }
                // Even if this deletes nothing (a purge may have been
                // faster), the key may be free now: the second insert decides.
                self.exec(&sql.delete_expired_key, &delete_expired)?;
            }
            match self.exec(&sql.insert, values) {
                Ok(_) => Ok(true),
                Err(e) if is_unique_violation(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }

        fn lock_scope(&mut self) -> Result<LockScope, DbError> {
            let rows: Vec<ScopeRow> = diesel::RunQueryDsl::load(
                diesel::sql_query("SELECT DATABASE() AS database_name, VERSION() AS version"),
                self,
            )?;
            Ok(rows
                .into_iter()
                .next()
                .map(|row| LockScope {
                    database: row.database_name.unwrap_or_default(),
                    // MariaDB (since 10.1.2) honours fractions of a second.
                    fractional_wait: row.version.contains("MariaDB"),
                })
                .unwrap_or_default())
        }

        /// A named lock around the run. MySQL commits DDL implicitly, so the
        /// lock is what keeps two processes from both recording the version;
        /// `IF NOT EXISTS` makes a repeated DDL harmless.
        fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
            if !pending(self, &migrations, MIGRATIONS_TABLE_EXISTS)? {
                return Ok(());
            }
            let scope = self.lock_scope()?;
            let name = lock_name("migration lock", &scope.database, &[]);
            if !get_lock(self, &name, MIGRATION_LOCK_WAIT, scope.fractional_wait)? {
                return Err(DbError::LockTimeout(MIGRATION_LOCK_WAIT));
            }
            let ran = self
                .run_pending_migrations(migrations)
                .map(drop)
                .map_err(DbError::Migration);
            release_lock(self, &name);
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

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod rerun_tests {
    use super::{DEADLOCK_RERUNS, rerun_deadlock_victims};
    use crate::DbError;
    use crate::error::OpError;

    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn victim(result: &Result<(), OpError>) -> bool {
        matches!(
            result,
            Err(OpError::Db(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::SerializationFailure,
                _
            ))))
        )
    }

    fn deadlock() -> Result<(), OpError> {
        Err(DieselError::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new("Deadlock found when trying to get lock".to_owned()),
        )
        .into())
    }

    /// Under contention a rerun can meet another deadlock (a busy owner's
    /// logins, revocations and purges): the write still goes through, as
    /// long as it keeps being the victim only a few times.
    #[test]
    fn a_deadlock_victim_runs_again_until_it_goes_through() {
        let mut runs = 0;
        let result = rerun_deadlock_victims(&mut (), victim, |_| {
            runs += 1;
            if runs < 3 { deadlock() } else { Ok(()) }
        });
        assert!(result.is_ok(), "after {runs} runs: {result:?}");
        assert_eq!(runs, 3);

        let mut runs = 0;
        let result = rerun_deadlock_victims(&mut (), victim, |_| {
            runs += 1;
            deadlock()
        });
        assert!(victim(&result), "the last error is returned");
        assert_eq!(runs, 1 + DEADLOCK_RERUNS, "and the reruns are bounded");

        let mut runs = 0;
        let result = rerun_deadlock_victims(&mut (), victim, |_| {
            runs += 1;
            Err(DbError::Timeout(std::time::Duration::ZERO).into())
        });
        assert!(result.is_err());
        assert_eq!(runs, 1, "other errors are not rerun");
    }
}

#[cfg(all(test, feature = "mysql"))]
mod mysql_tests {
    use super::mysql::lock_name;

    /// A server that ignores the case of database names (Windows, macOS)
    /// takes `App` and `app` for one database: stores connected through
    /// either name must wait for each other's locks.
    #[test]
    fn lock_names_ignore_the_case_of_the_database_name() {
        for purpose in ["owner lock", "migration lock"] {
            assert_eq!(
                lock_name(purpose, "App", &["sessions", "user:42"]),
                lock_name(purpose, "app", &["sessions", "user:42"]),
            );
        }
        assert_ne!(
            lock_name("owner lock", "app", &["sessions", "user:42"]),
            lock_name("owner lock", "other", &["sessions", "user:42"]),
            "other databases do not wait"
        );
        let name = lock_name("owner lock", "Äpp", &["sessions", "user:42"]);
        assert!(name.len() <= 64, "MySQL's limit for lock names: {name}");
    }
}

#[cfg(all(test, feature = "postgres"))]
mod postgres_tests {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};

    use super::postgres::is_lock_timeout;
    use super::{Conn, transaction_with};
    use crate::error::OpError;

    /// Two transactions that lock two rows in opposite orders: PostgreSQL
    /// rolls one back to break the deadlock. Through `write`, the victim
    /// runs again and succeeds once the other has committed, instead of
    /// surfacing an error for an operation that can simply be repeated.
    #[test]
    fn a_write_chosen_as_deadlock_victim_runs_again() {
        let Some(url) = session_core::testing::service_url("SESSION_TEST_POSTGRES_URL") else {
            return;
        };
        let table = format!("deadlock_test_{}", std::process::id());
        let mut setup = PgConnection::establish(&url).unwrap();
        setup
            .batch_execute(&format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, n INT NOT NULL); \
                 INSERT INTO {table} VALUES (1, 0), (2, 0)"
            ))
            .unwrap();
        let update_sql = format!("UPDATE {table} SET n = n + 1 WHERE id = ");
        let update = move |c: &mut PgConnection, id: i32| {
            diesel::sql_query(format!("{update_sql}{id}"))
                .execute(c)
                .map(drop)
        };
        let both_locked = Arc::new(Barrier::new(2));
        let other = {
            let (url, both_locked, update) =
                (url.clone(), Arc::clone(&both_locked), update.clone());
            std::thread::spawn(move || {
                let mut c = PgConnection::establish(&url).unwrap();
                transaction_with(&mut c, "BEGIN", |c| {
                    update(c, 2)?;
                    both_locked.wait();
                    update(c, 1)
                })
            })
        };
        let mut c = PgConnection::establish(&url).unwrap();
        diesel::sql_query("SET deadlock_timeout = '50ms'")
            .execute(&mut c)
            .unwrap();
        let mut runs = 0;
        let written = c.write(|c| {
            runs += 1;
            let first = runs == 1;
            transaction_with(c, "BEGIN", |c| {
                update(c, 1)?;
                if first {
                    both_locked.wait();
                    // Wait for row 2 last, so this transaction (its
                    // deadlock_timeout 50 ms, the other's 1 s) finds the
                    // deadlock and is its victim.
                    std::thread::sleep(Duration::from_millis(300));
                }
                update(c, 2)
            })
            .map_err(OpError::from)
        });
        other
            .join()
            .unwrap()
            .expect("the other transaction commits");
        let counts: Vec<i32> = (1..=2)
            .map(|id| {
                diesel::sql_query(format!("SELECT n AS n FROM {table} WHERE id = {id}"))
                    .get_result::<Count>(&mut setup)
                    .unwrap()
                    .n
            })
            .collect();
        diesel::sql_query(format!("DROP TABLE {table}"))
            .execute(&mut setup)
            .unwrap();
        assert!(
            written.is_ok(),
            "the victim ran again: {:?} after {runs} runs",
            written.err()
        );
        assert_eq!(runs, 2, "the first run was the deadlock victim");
        assert_eq!(
            counts,
            [2, 2],
            "both transactions' updates are kept, once each"
        );
    }

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }

    #[test]
    fn only_a_lock_timeout_is_a_lock_timeout() {
        let wait = Duration::from_secs(5);
        let early = Duration::from_millis(300);
        for (message, waited, expected) in [
            ("canceling statement due to lock timeout", early, true),
            ("canceling statement due to lock timeout", wait, true),
            ("canceling statement due to statement timeout", wait, false),
            ("canceling statement due to statement timeout", early, false),
            ("canceling statement due to user request", wait, false),
            // A translated message: by how long the statement waited.
            ("Abbruch der Anweisung wegen Zeitüberschreitung", wait, true),
            (
                "Abbruch der Anweisung wegen Zeitüberschreitung",
                early,
                false,
            ),
        ] {
            assert_eq!(
                is_lock_timeout(message, waited, wait),
                expected,
                "{message} after {waited:?}"
            );
        }
    }
}
