//! The SQL this crate runs: statements rendered once per store for its
//! database and table, bound at run time, and cached as prepared statements
//! by diesel.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Nullable, Text, Untyped};
use diesel::{QueryableByName, RunQueryDsl};

use crate::table::TableName;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Database {
    /// SQLite (feature `sqlite`).
    Sqlite,
    /// PostgreSQL (feature `postgres`).
    Postgres,
    /// MySQL or MariaDB (feature `mysql`).
    Mysql,
}

impl Database {
    /// The cargo feature that supports this database.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
        }
    }

    /// Whether this build of the crate supports the database.
    pub fn is_enabled(self) -> bool {
        match self {
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Postgres => cfg!(feature = "postgres"),
            Self::Mysql => cfg!(feature = "mysql"),
        }
    }

    /// The database's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL/MariaDB",
        }
    }

    fn quote(self, ident: &str) -> String {
        match self {
            Self::Mysql => format!("`{ident}`"),
            Self::Sqlite | Self::Postgres => format!("\"{ident}\""),
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows deleted by one `purge_expired` statement. Purging loops over batches
/// of this size so no statement holds locks on many rows for long.
pub(crate) const PURGE_BATCH: usize = 1000;

/// The DDL that creates the session table and its indexes, for `table`.
pub(crate) fn create_table_sql(db: Database, table: &TableName) -> String {
    let template = match db {
        Database::Sqlite => include_str!("schema/sqlite.sql"),
        Database::Postgres => include_str!("schema/postgres.sql"),
        Database::Mysql => include_str!("schema/mysql.sql"),
    };
    template.replace("{table}", table.as_str())
}

/// The DDL that removes what [`create_table_sql`] created.
pub(crate) fn drop_table_sql(db: Database, table: &TableName) -> String {
    format!("DROP TABLE IF EXISTS {}", db.quote(table.as_str()))
}

/// A value bound to a `?` of a [`Stmt`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
    Text(&'a str),
    OptText(Option<&'a str>),
}

/// A statement with `?` where values go. Placeholders are rendered by diesel
/// for the backend (`$1`… on PostgreSQL), so the text can be shared.
#[derive(Debug)]
pub(crate) struct Stmt {
    /// The text between placeholders: one more part than there are binds.
    parts: Box<[Box<str>]>,
}

impl Stmt {
    pub(crate) fn new(template: &str) -> Self {
        Self {
            parts: template.split('?').map(Into::into).collect(),
        }
    }

    pub(crate) fn bind<'a>(&'a self, args: &'a [Arg<'a>]) -> Bound<'a> {
        Bound { stmt: self, args }
    }

    #[cfg(all(test, feature = "sqlite"))]
    fn template(&self) -> String {
        self.parts.join("?")
    }
}

/// A [`Stmt`] with its values: a diesel query. Unlike `diesel::sql_query` it
/// is safe to cache as a prepared statement (keyed by its SQL text), so each
/// pooled connection prepares each statement once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound<'a> {
    stmt: &'a Stmt,
    args: &'a [Arg<'a>],
}

impl<DB> QueryFragment<DB> for Bound<'_>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Binary> + HasSqlType<Text>,
    i64: ToSql<BigInt, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
    [u8]: ToSql<Binary, DB>,
    str: ToSql<Text, DB>,
    for<'x> Option<&'x str>: ToSql<Nullable<Text>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.stmt.parts.len() != self.args.len() + 1 {
            return Err(diesel::result::Error::QueryBuilderError(
                format!(
                    "statement has {} placeholders but {} values",
                    self.stmt.parts.len().saturating_sub(1),
                    self.args.len()
                )
                .into(),
            ));
        }
        let mut parts = self.stmt.parts.iter();
        if let Some(first) = parts.next() {
            out.push_sql(first);
        }
        for (arg, part) in self.args.iter().zip(parts) {
            match arg {
                Arg::Int(v) => out.push_bind_param::<BigInt, i64>(v)?,
                Arg::OptInt(v) => out.push_bind_param::<Nullable<BigInt>, Option<i64>>(v)?,
                Arg::Bytes(v) => out.push_bind_param::<Binary, [u8]>(v)?,
                Arg::Text(v) => out.push_bind_param::<Text, str>(v)?,
                Arg::OptText(v) => out.push_bind_param::<Nullable<Text>, Option<&str>>(v)?,
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

impl QueryId for Bound<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Bound<'_> {
    type SqlType = Untyped;
}

impl<C> RunQueryDsl<C> for Bound<'_> {}

/// A whole stored session, as `load` reads it.
#[derive(Debug, QueryableByName)]
pub(crate) struct RecordRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) version: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) created_ms: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) last_active_ms: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) expires_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub(crate) absolute_ms: Option<i64>,
    /// The owner's bytes, checked by `load` (a corrupt row may hold bytes
    /// that are not UTF-8).
    #[diesel(sql_type = Nullable<Binary>)]
    pub(crate) owner: Option<Vec<u8>>,
    #[diesel(sql_type = Binary)]
    pub(crate) data: Vec<u8>,
}

/// One of an owner's sessions, as the owner queries read it (no data).
#[derive(Debug, QueryableByName)]
pub(crate) struct OwnerRow {
    #[diesel(sql_type = Binary)]
    pub(crate) id_hash: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    pub(crate) created_ms: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) last_active_ms: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) expires_ms: i64,
}

/// A single number: counts and lock results.
#[derive(Debug, QueryableByName)]
pub(crate) struct CountRow {
    #[diesel(sql_type = BigInt)]
    pub(crate) n: i64,
}

/// The current database and the server's version (MySQL).
#[cfg(feature = "mysql")]
#[derive(Debug, QueryableByName)]
pub(crate) struct ScopeRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) database_name: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) version: String,
}

/// What the names of a server's locks must include, and how they wait. Only
/// MySQL needs it: its named locks are server-wide, so their names include
/// the database; PostgreSQL's advisory locks are per database already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LockScope {
    /// The current database (`DATABASE()`).
    pub(crate) database: String,
    /// Whether `GET_LOCK` takes fractions of a second (MariaDB).
    pub(crate) fractional_wait: bool,
}

/// Every statement a store runs, rendered for its database and table.
///
/// "Live" is always `expires_ms > now`, mirroring `session_core::is_live`,
/// with `now` bound from the store's clock (never the database's).
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) db: Database,
    pub(crate) table: TableName,
    /// How lock names are scoped (MySQL).
    pub(crate) lock_scope: LockScope,
    /// `?key, ?now` → [`RecordRow`] of the live session.
    pub(crate) load: Stmt,
    /// Insert-only. SQLite and PostgreSQL: `?key … ?data, ?now`, replacing an
    /// expired row in the same statement. MySQL: `?key … ?data`, see
    /// `delete_expired_key`.
    pub(crate) insert: Stmt,
    /// `?key, ?now`: remove an expired row that blocks an insert (MySQL).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub(crate) delete_expired_key: Stmt,
    /// Compare-and-set: `?version, ?last_active, ?expires, ?owner, ?data,
    /// ?key, ?expected_version, ?now`; the stored activity time and expiry
    /// only move forward.
    pub(crate) update: Stmt,
    /// As `update`, and only if the stored owner is `?owner` already (a save
    /// that binds nothing new): `update`'s arguments, then `?owner`.
    pub(crate) update_bound: Stmt,
    /// Compare-and-set that also moves the row to a new key: `?new_key`, then
    /// as `update` with the old key.
    pub(crate) rotate: Stmt,
    /// As `rotate`, and only if the stored owner is `?owner` already.
    pub(crate) rotate_bound: Stmt,
    /// `?last_active, ?expires, ?key, ?now`.
    pub(crate) touch: Stmt,
    /// `?key, ?now` → count of live rows under the key (0 or 1).
    pub(crate) live_count: Stmt,
    /// `?key, ?version, ?now` → 1 if the live row under the key has that
    /// version.
    pub(crate) version_live: Stmt,
    /// `?key, ?now`: delete the live session.
    pub(crate) destroy: Stmt,
    /// `?now`: delete up to [`PURGE_BATCH`] expired rows.
    pub(crate) purge: Stmt,
    /// `?now` → count of live rows.
    pub(crate) len: Stmt,
    /// `?now` → 1 if any row is live, else 0.
    pub(crate) any_live: Stmt,
    /// `?owner, ?now` → [`OwnerRow`]s, oldest first.
    pub(crate) owner_list: Stmt,
    /// `?owner, ?now` → count.
    pub(crate) owner_count: Stmt,
    /// `?key, ?now, ?owner` → 1 if the live session is bound to the owner.
    pub(crate) owner_bound: Stmt,
    /// `?key, ?owner, ?now`: delete one live session of the owner.
    pub(crate) destroy_owned: Stmt,
    /// `?owner, ?now`: delete every live session of the owner.
    pub(crate) destroy_owner: Stmt,
    /// `?owner, ?now, ?keep_key`.
    pub(crate) destroy_owner_except: Stmt,
}

const COLUMNS: &str =
    "id_hash, version, created_ms, last_active_ms, expires_ms, absolute_ms, owner, data";

impl Statements {
    pub(crate) fn new(db: Database, table: TableName) -> Self {
        let t = db.quote(table.as_str());
        // The owner is read as bytes and checked in Rust, so a corrupt one is
        // a codec error for its session, never a lossy conversion (MySQL
        // stores it as bytes already, so it compares exactly).
        let owner = match db {
            Database::Mysql => "owner",
            Database::Sqlite => "CAST(owner AS BLOB)",
            Database::Postgres => "convert_to(owner, 'UTF8')",
        };
        let insert = match db {
            Database::Sqlite | Database::Postgres => format!(
                "INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id_hash) DO UPDATE SET version = excluded.version, \
                 created_ms = excluded.created_ms, last_active_ms = excluded.last_active_ms, \
                 expires_ms = excluded.expires_ms, absolute_ms = excluded.absolute_ms, \
                 owner = excluded.owner, data = excluded.data \
                 WHERE {t}.expires_ms <= ?"
            ),
            Database::Mysql => {
                format!("INSERT INTO {t} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            }
        };
        let purge = match db {
            // Lock a batch, skipping rows another transaction is changing (an
            // insert may be replacing an expired row right now); the lock
            // re-checks `expires_ms` against the row's latest version.
            Database::Postgres => format!(
                "WITH doomed AS (SELECT id_hash FROM {t} WHERE expires_ms <= ? \
                 LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED) \
                 DELETE FROM {t} USING doomed WHERE {t}.id_hash = doomed.id_hash"
            ),
            // Runs inside BEGIN IMMEDIATE: nothing changes underneath it.
            Database::Sqlite => format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE expires_ms <= ? LIMIT {PURGE_BATCH})"
            ),
            // Deterministic order keeps statement-based replication safe.
            Database::Mysql => {
                format!(
                    "DELETE FROM {t} WHERE expires_ms <= ? ORDER BY expires_ms, id_hash LIMIT {PURGE_BATCH}"
                )
            }
        };
        // A save or rotation keeps the later of the stored and its own
        // activity time and expiry: one whose clock reading came before a
        // touch that landed first (a touch bumps no version, so the
        // compare-and-set passes) must not pull the touch's deadline back.
        // Both are capped by the absolute deadline, which never changes, so
        // the later one is within it.
        let later = match db {
            Database::Sqlite => "MAX",
            Database::Postgres | Database::Mysql => "GREATEST",
        };
        let deadline = format!(
            "last_active_ms = {later}(last_active_ms, ?), expires_ms = {later}(expires_ms, ?)"
        );
        let update = format!(
            "UPDATE {t} SET version = ?, {deadline}, owner = ?, data = ? \
             WHERE id_hash = ? AND version = ? AND expires_ms > ?"
        );
        let rotate = format!(
            "UPDATE {t} SET id_hash = ?, version = ?, {deadline}, owner = ?, data = ? \
             WHERE id_hash = ? AND version = ? AND expires_ms > ?"
        );
        let s = |sql: String| Stmt::new(&sql);
        Self {
            load: s(format!(
                "SELECT version, created_ms, last_active_ms, expires_ms, absolute_ms, {owner} AS owner, data \
                 FROM {t} WHERE id_hash = ? AND expires_ms > ?"
            )),
            insert: s(insert),
            delete_expired_key: s(format!(
                "DELETE FROM {t} WHERE id_hash = ? AND expires_ms <= ?"
            )),
            update_bound: s(format!("{update} AND owner = ?")),
            update: s(update),
            rotate_bound: s(format!("{rotate} AND owner = ?")),
            rotate: s(rotate),
            // Only forward: a touch dated before a save (or touch) that
            // landed first must not pull its deadline back. `last_active_ms`
            // comes first, as MySQL's later assignments see earlier ones.
            touch: s(format!(
                "UPDATE {t} SET \
                 last_active_ms = CASE WHEN expires_ms < ? THEN ? ELSE last_active_ms END, \
                 expires_ms = CASE WHEN expires_ms < ? THEN ? ELSE expires_ms END \
                 WHERE id_hash = ? AND expires_ms > ?"
            )),
            live_count: s(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE id_hash = ? AND expires_ms > ?"
            )),
            version_live: s(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE id_hash = ? AND version = ? AND expires_ms > ?"
            )),
            destroy: s(format!(
                "DELETE FROM {t} WHERE id_hash = ? AND expires_ms > ?"
            )),
            purge: s(purge),
            len: s(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE expires_ms > ?"
            )),
            any_live: s(format!(
                "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM {t} WHERE expires_ms > ? LIMIT 1) AS live"
            )),
            owner_list: s(format!(
                "SELECT id_hash, created_ms, last_active_ms, expires_ms FROM {t} \
                 WHERE owner = ? AND expires_ms > ? ORDER BY created_ms, id_hash"
            )),
            owner_count: s(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE owner = ? AND expires_ms > ?"
            )),
            owner_bound: s(format!(
                "SELECT COUNT(*) AS n FROM {t} WHERE id_hash = ? AND expires_ms > ? AND owner = ?"
            )),
            destroy_owned: s(format!(
                "DELETE FROM {t} WHERE id_hash = ? AND owner = ? AND expires_ms > ?"
            )),
            destroy_owner: s(format!(
                "DELETE FROM {t} WHERE owner = ? AND expires_ms > ?"
            )),
            destroy_owner_except: s(format!(
                "DELETE FROM {t} WHERE owner = ? AND expires_ms > ? AND id_hash <> ?"
            )),
            db,
            table,
            lock_scope: LockScope::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_has_as_many_placeholders_as_documented() {
        for db in [Database::Sqlite, Database::Postgres, Database::Mysql] {
            let s = Statements::new(db, TableName::parse("sessions").unwrap());
            let insert_binds = if db == Database::Mysql { 8 } else { 9 };
            for (stmt, binds) in [
                (&s.load, 2),
                (&s.insert, insert_binds),
                (&s.delete_expired_key, 2),
                (&s.update, 8),
                (&s.update_bound, 9),
                (&s.rotate, 9),
                (&s.rotate_bound, 10),
                (&s.touch, 6),
                (&s.live_count, 2),
                (&s.version_live, 3),
                (&s.destroy, 2),
                (&s.purge, 1),
                (&s.len, 1),
                (&s.any_live, 1),
                (&s.owner_list, 2),
                (&s.owner_count, 2),
                (&s.owner_bound, 3),
                (&s.destroy_owned, 3),
                (&s.destroy_owner, 2),
                (&s.destroy_owner_except, 3),
            ] {
                assert_eq!(stmt.parts.len() - 1, binds, "{db}: {stmt:?}");
            }
        }
    }

    #[test]
    fn the_table_name_is_quoted_for_each_database() {
        let table = TableName::parse("select").unwrap();
        assert!(
            Statements::new(Database::Postgres, table.clone()).len.parts[0]
                .contains("FROM \"select\"")
        );
        assert!(
            Statements::new(Database::Mysql, table.clone()).len.parts[0].contains("FROM `select`")
        );
        assert!(
            create_table_sql(Database::Sqlite, &table)
                .contains("\"select_owner_idx\" ON \"select\"")
        );
        assert_eq!(
            drop_table_sql(Database::Mysql, &table),
            "DROP TABLE IF EXISTS `select`"
        );
    }

    /// The queries the crate relies on for speed are answered from the
    /// indexes, never by scanning the table (checked on SQLite, whose
    /// planner is deterministic on an empty table).
    #[cfg(feature = "sqlite")]
    #[test]
    fn owner_and_expiry_queries_use_their_indexes() {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, SqliteConnection};

        #[derive(QueryableByName)]
        struct Plan {
            #[diesel(sql_type = Text)]
            detail: String,
        }

        let table = TableName::parse("sessions").unwrap();
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute(&create_table_sql(Database::Sqlite, &table))
            .unwrap();
        let s = Statements::new(Database::Sqlite, table);
        let key = [7u8; 32];
        let (owner, now, k) = (Arg::Text("alice"), Arg::Int(5), Arg::Bytes(&key));
        for (stmt, args, index) in [
            (&s.owner_list, vec![owner, now], "sessions_owner_idx"),
            (&s.owner_count, vec![owner, now], "sessions_owner_idx"),
            (&s.destroy_owner, vec![owner, now], "sessions_owner_idx"),
            (
                &s.destroy_owner_except,
                vec![owner, now, k],
                "sessions_owner_idx",
            ),
            (&s.len, vec![now], "sessions_expires_idx"),
            (&s.any_live, vec![now], "sessions_expires_idx"),
            (&s.purge, vec![now], "sessions_expires_idx"),
            (&s.load, vec![k, now], "sqlite_autoindex_sessions_1"),
            (
                &s.update,
                vec![now, now, now, owner, k, k, now, now],
                "sqlite_autoindex_sessions_1",
            ),
            (
                &s.touch,
                vec![now, now, now, now, k, now],
                "sqlite_autoindex_sessions_1",
            ),
            (
                &s.owner_bound,
                vec![k, now, owner],
                "sqlite_autoindex_sessions_1",
            ),
        ] {
            let explain = Stmt::new(&format!("EXPLAIN QUERY PLAN {}", stmt.template()));
            let plan: Vec<Plan> =
                diesel::RunQueryDsl::load(explain.bind(&args), &mut conn).unwrap();
            let plan: Vec<String> = plan.into_iter().map(|p| p.detail).collect();
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{stmt:?} does not use {index}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN sessions")),
                "{stmt:?} scans the table: {plan:?}"
            );
        }
    }

    /// session-core refuses longer owners, so every owner it accepts fits
    /// the MySQL column (the other databases store TEXT).
    #[test]
    fn the_mysql_owner_column_is_as_wide_as_the_longest_owner() {
        let ddl = create_table_sql(Database::Mysql, &TableName::parse("s").unwrap());
        assert!(
            ddl.contains(&format!(
                "owner          VARBINARY({}) NULL",
                session_core::MAX_OWNER_LEN
            )),
            "{ddl}"
        );
    }

    #[test]
    fn database_features_match_the_build() {
        assert_eq!(Database::Sqlite.is_enabled(), cfg!(feature = "sqlite"));
        assert_eq!(Database::Postgres.feature(), "postgres");
        assert_eq!(Database::Mysql.to_string(), "MySQL/MariaDB");
    }
}
