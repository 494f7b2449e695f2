//! SQL session storage on diesel and r2d2: SQLite (the default, compiled
//! in), PostgreSQL and MySQL/MariaDB, all behind one type,
//! [`DbSessionStore`].
//!
//! Sessions survive restarts and are shared by every process that uses the
//! same database. The store implements the whole
//! [`SessionStore`](session_core::SessionStore) contract of `session-core`
//! (insert-only first saves, compare-and-set updates, idle and absolute
//! timeouts read from the injected clock, atomic ID rotation, per-owner
//! listing, revocation and limits) and passes its conformance suite on all
//! three databases.
//!
//! # Quick start
//!
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```ignore")]
//! use session_core::{SessionConfig, SessionStore, SessionStoreExt};
//! use session_db::DbSessionStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
//! // `url` is for example "sqlite://data/sessions.db". The file, the table
//! // and its indexes are created if they are missing.
//! let config = SessionConfig::from_secs(3600); // one hour idle timeout
//! let store = DbSessionStore::connect(&url, config.clone()).await?;
//!
//! // Login: a new session bound to its user, stored under a fresh ID.
//! let mut session = store.create().await?;
//! session.set("user_id", "42");
//! session.set_owner("user:42");
//! store.cycle_id(&mut session).await?;
//! let id = session.id().clone(); // its text goes into the cookie
//!
//! // Another process, or this one after a restart, sees the same sessions.
//! let other = DbSessionStore::connect(&url, config).await?;
//! let loaded = other.load(&id).await?.expect("stored");
//! assert_eq!(loaded.get("user_id"), Some("42"));
//!
//! // Concurrent-safe read-modify-write, then "sign out everywhere".
//! other.update(&id, |s| s.set("theme", "dark")).await?;
//! assert_eq!(store.count_owner_sessions("user:42").await?, 1);
//! assert_eq!(store.destroy_owner_sessions("user:42", None).await?, 1);
//! assert!(store.load(&id).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! * `sqlite` (default): SQLite, compiled into the binary (`libsqlite3-sys`
//!   with "bundled"), so no system library is needed.
//! * `postgres`: PostgreSQL through libpq (Debian/Ubuntu: `libpq-dev`).
//! * `mysql`: MySQL and MariaDB through libmysqlclient (Debian/Ubuntu:
//!   `default-libmysqlclient-dev` and `pkg-config`).
//!
//! Enable only what you use: with `default-features = false, features =
//! ["postgres"]` neither SQLite nor the MySQL client is compiled. A URL for a
//! database whose feature is off fails with [`DbError::FeatureDisabled`],
//! which names the feature to enable.
//!
//! # Connecting
//!
//! [`DbSessionStore::connect`] takes a URL and a [`SessionConfig`] (idle and
//! absolute timeouts, limits); [`DbSessionStore::builder`] also sets the table
//! name, the pool size, the connection timeout and the operation timeout.
//!
//! | URL | database |
//! |---|---|
//! | `sqlite://data/sessions.db`, `sqlite:///var/lib/app/sessions.db`, `sqlite:sessions.db`, or a plain path `data/sessions.db` | SQLite file (created if missing), the path taken literally |
//! | `sqlite://data/sessions.db?mode=rwc`, `file:sessions.db?mode=rwc` | SQLite [URI filename](https://www.sqlite.org/uri.html): a `sqlite:` URL with a query becomes `file:` + path + query |
//! | `sqlite::memory:`, `file::memory:`, `file:name?mode=memory&cache=shared` | SQLite in memory: one connection, gone when the store is dropped, not shared between processes; for tests and demos |
//! | `postgres://user:password@host:5432/app` or `postgresql://…` | PostgreSQL; every libpq parameter works (`?sslmode=require&application_name=web`) |
//! | `mysql://user:password@host:3306/app` or `mariadb://…` | MySQL or MariaDB |
//!
//! Schemes are case-insensitive. A server scheme without `//`
//! (`postgresql:app`, `mysql:/root@db/app`) and a libpq `key=value`
//! connection string (`host=db dbname=app`) are refused with
//! [`DbError::InvalidUrl`] rather than taken for a SQLite file name, and so
//! is a MySQL URL without a database (MySQL would connect, then fail every
//! statement with "No database selected"). In a
//! server URL, percent-encode an `@`,
//! `/`, `?`, `#` or `%` in the user name or password (`%40`, `%2F`, `%3F`,
//! `%23`, `%25`): otherwise the drivers would take part of the password for
//! the host, port or database (and quote it in their error messages), so
//! such URLs are refused with [`DbError::InvalidUrl`].
//!
//! ```no_run
//! use std::time::Duration;
//! use session_core::SessionConfig;
//! use session_db::DbSessionStore;
//!
//! # async fn demo() -> Result<(), session_db::DbError> {
//! let config = SessionConfig::new(Duration::from_secs(30 * 60)) // idle
//!     .with_absolute_timeout(Duration::from_secs(12 * 3600));
//!
//! // SQLite (feature `sqlite`, the default)
//! let sqlite = DbSessionStore::builder("sqlite://data/sessions.db")
//!     .config(config.clone())
//!     .build()
//!     .await?;
//!
//! // PostgreSQL (feature `postgres`)
//! let postgres = DbSessionStore::builder("postgres://app:secret@db.internal:5432/app")
//!     .config(config.clone())
//!     .table_name("web_sessions")
//!     .pool_size(20)
//!     .connection_timeout(Duration::from_secs(2))
//!     .build()
//!     .await?;
//!
//! // MySQL / MariaDB (feature `mysql`)
//! let mysql = DbSessionStore::builder("mysql://app:secret@db.internal:3306/app")
//!     .config(config)
//!     .build()
//!     .await?;
//! # let _ = (sqlite, postgres, mysql);
//! # Ok(())
//! # }
//! ```
//!
//! # Using an existing pool
//!
//! An application that already has an r2d2 pool of diesel connections can
//! keep sessions in the same database without a second pool:
//! [`DbSessionStore::from_pool`] takes a [`SqlitePool`], [`PgPool`] or
//! [`MysqlPool`]: aliases of `diesel::r2d2::Pool<ConnectionManager<…>>`
//! (diesel is re-exported as [`session_db::diesel`](diesel), so the versions
//! match). The pool's own size and connection timeout apply, and
//! [`DbSessionStore::pool`] hands the pool back.
//!
//! For SQLite, install [`SqliteTuning`] as the pool's connection customizer
//! (as below): WAL, so session reads and writes do not block each other,
//! and a busy timeout, so they wait for a lock instead of failing with
//! "database is locked". If you do not, the store still gives each
//! connection it takes a busy timeout (the pool's connection timeout) the
//! first time, unless the connection has one already (SQLite's default is
//! none), so its statements, and the application's own on those
//! connections, wait for locks. It does not switch the database to WAL,
//! which would change the application's database file: building logs a
//! warning instead if the file is not in WAL mode.
//!
#![cfg_attr(feature = "sqlite", doc = "```")]
#![cfg_attr(not(feature = "sqlite"), doc = "```ignore")]
//! use std::time::Duration;
//! use session_core::SessionStore;
//! use session_db::diesel::SqliteConnection;
//! use session_db::diesel::r2d2::{ConnectionManager, Pool};
//! use session_db::{DbSessionStore, SqliteTuning};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("app.db").to_string_lossy().into_owned();
//! // The application's pool, also used for its own tables.
//! let pool = Pool::builder()
//!     .max_size(8)
//!     .connection_customizer(Box::new(SqliteTuning::new(Duration::from_secs(5))))
//!     .build(ConnectionManager::<SqliteConnection>::new(path))?;
//!
//! let store = DbSessionStore::from_pool(pool.clone()).table_name("sessions").build().await?;
//! assert!(store.is_empty().await?);
//! # Ok(())
//! # }
//! ```
//!
//! # Schema
//!
//! One table (default name `sessions`, see
//! [`DbSessionStoreBuilder::table_name`]) with one row per session:
//!
//! | column | content |
//! |---|---|
//! | `id_hash` | primary key: the session's [`StorageKey`], a domain-separated SHA-256 of the ID, as 32 raw bytes. The ID itself is never stored, so a dump of the table yields no usable cookie |
//! | `version` | incremented by every save; compare-and-set updates check it |
//! | `created_ms` | creation time, Unix milliseconds |
//! | `last_active_ms` | last save or touch |
//! | `expires_ms` | when the session expires: the idle deadline, capped by the absolute one. Live means `expires_ms > now` |
//! | `absolute_ms` | the absolute deadline, if the configuration has one |
//! | `owner` | the owner the session is bound to, or NULL |
//! | `data` | the session data in `session-core`'s versioned encoding (a JSON object after a format byte) |
//!
//! with an index on `expires_ms` (for `len` and `purge_expired`) and one on
//! `(owner, expires_ms)` (every owner query reads only that owner's rows;
//! partial, `WHERE owner IS NOT NULL`, where the database supports it). The
//! DDL, where `{table}` is the configured name:
//!
//! SQLite:
//!
//! ```sql
#![doc = include_str!("schema/sqlite.sql")]
//! ```
//!
//! PostgreSQL:
//!
//! ```sql
#![doc = include_str!("schema/postgres.sql")]
//! ```
//!
//! MySQL/MariaDB (the owner is stored as bytes so it compares exactly: no
//! case folding, no ignored trailing spaces; session-core already refuses
//! owners longer than [`MAX_OWNER_LEN`](session_core::MAX_OWNER_LEN), 1024
//! bytes, the width of the column):
//!
//! ```sql
#![doc = include_str!("schema/mysql.sql")]
//! ```
//!
//! ## Migrations
//!
//! The DDL above is embedded and run by [`DbSessionStoreBuilder::build`]
//! through diesel's `MigrationHarness`, from a `MigrationSource` that renders
//! it for the configured table. diesel records each applied migration in
//! `__diesel_schema_migrations` as `00000000000001_{table}`: one row per
//! table, so several session tables do not collide, and numbered below any
//! timestamped migration of your own, so `diesel migration revert` never
//! picks it.
//!
//! Building first reads `__diesel_schema_migrations`: if every migration of
//! the table is recorded, it does nothing else. So an application role that
//! may read and write the session table but not create tables (no `CREATE`
//! on the schema) can start a store once the table exists, as long as it may
//! `SELECT` from `__diesel_schema_migrations`. On PostgreSQL both tables
//! are looked for in the current schema (the first schema of the
//! `search_path` that exists, where `CREATE TABLE` puts them), so a store
//! whose search path is `tenant, public` gets its own table in `tenant`,
//! never `public`'s. Otherwise the migrations run,
//! idempotently (`IF NOT EXISTS` everywhere), and safely when several
//! processes start at once:
//!
//! * PostgreSQL: the whole run is one transaction (DDL is transactional)
//!   that takes `pg_advisory_xact_lock(0x7365_7373_6462_6d67)` ("sessdbmg")
//!   with a 60 s `lock_timeout` ([`DbError::LockTimeout`] after that). The
//!   lock ends with the transaction, so it cannot outlive it, also behind a
//!   pooler such as PgBouncer in transaction mode (where a session-level lock
//!   and its unlock could reach different server connections). Note that
//!   diesel caches prepared statements, which PgBouncer's transaction mode
//!   supports only from version 1.21 with `max_prepared_statements` set.
//! * MySQL/MariaDB: a named lock (`GET_LOCK`, 60 s) whose name includes the
//!   database (in lower case, so a server that ignores its case, per
//!   `lower_case_table_names`, still serialises `App` with `app`), so stores
//!   of other databases on the same server do not wait.
//!   MySQL commits DDL implicitly; `IF NOT EXISTS` makes a repeat harmless.
//! * SQLite: one `BEGIN IMMEDIATE` transaction.
//!
//! If you drop the table by hand, also delete its row from
//! `__diesel_schema_migrations`. To manage the schema yourself, take the DDL
//! from [`DbSessionStore::schema_sql`] and build with
//! [`run_migrations(false)`](DbSessionStoreBuilder::run_migrations).
//!
//! ### Next to the diesel CLI
//!
//! * `diesel migration revert --all` reverts your migrations (they sort after
//!   the session table's) and then stops with an error at
//!   `00000000000001_{table}`, a version it has no directory for. Delete that
//!   row (and drop the table) yourself if you really mean "all", or manage
//!   the session table in your own migrations as above.
//! * `diesel print-schema` also prints the session table. Leave it out with
//!   `filter = { except_tables = ["^sessions$"] }` (a regular expression)
//!   under `[print_schema]` in `diesel.toml`; the store does not use your
//!   `schema.rs`.
//!
//! # How the promises are kept
//!
//! * **Time comes from the store's clock**, bound into every statement as
//!   `now`, never from the database server's: expiry is tested with a
//!   `ManualClock`, and the database's clock does not matter (keep the
//!   application servers' clocks in sync, as for any expiry).
//! * **Insert-only create** is one statement checked by rows affected. On
//!   SQLite and PostgreSQL, `INSERT … ON CONFLICT (id_hash) DO UPDATE …
//!   WHERE expires_ms <= now` also replaces an expired row nobody purged yet,
//!   and changes nothing (0 rows: [`Conflict`](session_core::Error::Conflict))
//!   over a live one. MySQL has no conditional upsert: a plain `INSERT`, and
//!   only on a duplicate key a `DELETE … WHERE expires_ms <= now` and a
//!   second `INSERT`.
//! * **Compare-and-set update**: `UPDATE … WHERE id_hash = ? AND version = ?
//!   AND expires_ms > now`. When it matches no row, one more read tells a
//!   version [`Conflict`](session_core::Error::Conflict) from a session that
//!   is gone ([`NotFound`](session_core::Error::NotFound)). MySQL counts
//!   matched rather than changed rows (diesel connects with
//!   `CLIENT_FOUND_ROWS`), so a touch that changes nothing is still found.
//! * **Deadlines only move forward**: a save, rotation or touch stores the
//!   later of the stored and its own `last_active_ms` and `expires_ms`
//!   (`MAX(…, ?)` on SQLite, `GREATEST(…, ?)` elsewhere), so a request
//!   whose clock reading came before another's write of the same session
//!   cannot end the session before its idle timeout counted from that
//!   write. The [`Session`] a save or rotation leaves the caller holds the
//!   deadline it computed itself; when a later one was kept, the next load
//!   shows it.
//! * **A stored version of 0 or less, or of `i64::MAX`** (never written by
//!   this crate) loads as [`Error::Codec`](session_core::Error::Codec):
//!   version 0 means "never stored" to session-core, and the next version
//!   after `i64::MAX` does not fit the column, so such a session could never
//!   be saved. So does an owner that is not UTF-8 or not an owner
//!   session-core accepts (the owner is read as bytes and checked, never
//!   converted lossily).
//! * **Touch** updates only `last_active_ms` and `expires_ms` of a live row
//!   (forward only, as above).
//! * **Rotation** is one `UPDATE` of the key column itself, compare-and-set
//!   on the version: the old ID is dead in the same instant the new one is
//!   live.
//! * **`len`** counts `WHERE expires_ms > now`; **`purge_expired`** deletes
//!   expired rows at most 1000 per statement, looping, so it never holds
//!   long locks (each batch is its own blocking task, bounded by the
//!   operation timeout).
//! * **Blocking work stays off the async executor**: every database call runs
//!   on tokio's blocking pool (`spawn_blocking`), with one pooled connection.
//!   When every connection is busy for longer than the connection timeout,
//!   the operation fails promptly with
//!   [`Error::Backend`](session_core::Error::Backend) instead of hanging,
//!   and no operation waits longer than the operation timeout (see
//!   [When the database stops answering](#when-the-database-stops-answering)).
//! * **A corrupt row** fails to decode with
//!   [`Error::Codec`](session_core::Error::Codec) for that session only.
//!
//! # Per-owner limit and concurrency
//!
//! With [`SessionConfig::with_max_sessions_per_owner`], a write that newly
//! binds a session to an owner counts the owner's live sessions (through the
//! owner index) and refuses or ends the oldest, and then writes, in one
//! transaction that holds a lock for that owner, so two logins of the same
//! user in different processes cannot both squeeze under the limit:
//!
//! * PostgreSQL: `pg_advisory_xact_lock` on a 64-bit hash of table and owner
//!   (advisory locks are per database), released at commit, with a
//!   transaction-local `lock_timeout`; if PostgreSQL picks it as a deadlock
//!   victim it runs again;
//! * MySQL/MariaDB: `GET_LOCK` on a name hashed from database, table and
//!   owner (named locks are server-wide), taken before the transaction
//!   begins (so its reads see the previous holder's commit) and released
//!   after it ends. The transaction runs at READ COMMITTED, so the read that
//!   tells a conflict from a deleted session sees a deletion that committed
//!   while the write waited; if InnoDB picks it as a deadlock victim it runs
//!   again. Named locks are local to one server: on Galera or
//!   another multi-primary cluster, send all session writes to one node, or
//!   the limit holds per node only;
//! * SQLite: `BEGIN IMMEDIATE`, which serialises all writers anyway (waiting
//!   up to `busy_timeout`).
//!
//! Waiting longer than the pool's connection timeout for the lock fails
//! with [`DbError::LockTimeout`] (inside
//! [`Error::Backend`](session_core::Error::Backend)) on every database.
//! MariaDB waits to the millisecond; MySQL takes `GET_LOCK`'s timeout in
//! whole seconds, so there the wait is rounded up (300 ms waits up to 1 s).
//!
//! Only writes that bind a session to an owner it does not have yet take the
//! lock: a save of a session that keeps its owner first runs as a
//! compare-and-set that also requires the stored owner to be that owner, and
//! is done if it matches, so a slow login never stalls the other requests of
//! the same user. The exception is a rotation under
//! [`OwnerLimitPolicy::EndOldest`](session_core::OwnerLimitPolicy::EndOldest):
//! it moves the session to a new key, and a login ending the owner's oldest
//! sessions deletes them by key, so it takes the lock too (rotations are
//! rare: login, privilege changes). Other owners and anonymous sessions
//! never wait for the lock. Every process writing to the table must be
//! configured with the same limit. A PostgreSQL or MySQL write that the
//! server rolls back to break a deadlock (a rotation's key change, or a
//! login ending an owner's oldest sessions, against a revocation's delete by
//! owner or a purge) runs again after a 10 ms pause, up to three times,
//! rather than failing.
//!
//! # Connection checks
//!
//! A pooled connection may have died since it was last used (a database
//! restart, a failover, a firewall that drops idle connections). How pools
//! built from a URL notice it:
//!
//! * PostgreSQL: a connection that completed an operation within the last
//!   500 ms is used as it is; an older one (or one whose last operation
//!   failed) is pinged first, and a dead one is discarded (diesel marks a
//!   PostgreSQL connection with a dead socket broken, so r2d2 drops it). This
//!   saves r2d2's `SELECT 1` per operation (about 25 µs on a local server, a
//!   network round trip otherwise) on a busy store. A connection that dies
//!   less than 500 ms after its last use fails one operation with a backend
//!   error and is then discarded.
//! * MySQL/MariaDB: r2d2 tests every connection it hands out
//!   (`test_on_check_out`). diesel cannot mark a dead MySQL connection
//!   broken, and r2d2 offers no other way to drop one, so the test on
//!   checkout is what lets a store recover after an outage; it costs one
//!   `SELECT 1` round trip per operation.
//! * SQLite: no check; a local connection does not die.
//!
//! A pool given to [`DbSessionStore::from_pool`] keeps its own settings
//! (r2d2's default is to test on checkout); a SQLite one gets only a busy
//! timeout where it has none (see
//! [Using an existing pool](#using-an-existing-pool)).
//!
//! # When the database stops answering
//!
//! A network partition may leave a connection open but silent: the driver
//! then waits for an answer that never comes, and the connection checks
//! above wait with it. Every operation is therefore bounded by the
//! **operation timeout** ([`DbSessionStoreBuilder::operation_timeout`];
//! default 15 s, or three times the connection timeout if that is longer):
//! after it the operation fails with [`DbError::Timeout`] (inside
//! [`Error::Backend`](session_core::Error::Backend)). `purge_expired`
//! applies it to each batch. The timeout runs on tokio's timer, so the
//! runtime needs timers enabled (`#[tokio::main]` and
//! `Builder::enable_all` do).
//!
//! The outcome of a timed-out operation is unknown (a write may still
//! commit), and the blocking thread that runs it, and its pooled connection,
//! stay busy until the driver returns. What makes the driver return:
//!
//! * PostgreSQL: a pool built from a URL adds these libpq parameters unless
//!   the URL sets them: `connect_timeout` (the connection timeout in whole
//!   seconds, at least 2), `keepalives=1`, `keepalives_idle=10`,
//!   `keepalives_interval=5`, `keepalives_count=3` and `tcp_user_timeout`
//!   (the operation timeout in milliseconds). So a dead peer fails the
//!   socket within about the operation timeout (or 25 s of silence), and the
//!   thread is freed. `tcp_user_timeout` needs libpq 12 or later; these
//!   parameters apply to TCP only, not to Unix sockets. A pool given to
//!   [`DbSessionStore::from_pool`] uses its own connection string: add them
//!   there.
//! * MySQL/MariaDB: diesel exposes none of libmysqlclient's timeouts
//!   (`MYSQL_OPT_READ_TIMEOUT`, `MYSQL_OPT_WRITE_TIMEOUT`,
//!   `MYSQL_OPT_CONNECT_TIMEOUT`), so a thread waiting on a silent server is
//!   freed only when the operating system gives up on the socket: for unsent
//!   data after TCP's retransmissions (`net.ipv4.tcp_retries2`, about 15
//!   minutes by default on Linux), for an answer through TCP keepalive, which
//!   libmysqlclient turns on (`net.ipv4.tcp_keepalive_time`, two hours by
//!   default). Lower those settings on the application's hosts if threads
//!   must be freed sooner; the operation timeout bounds what callers wait
//!   either way.
//! * SQLite: the database is local; only a stuck file system can stall it.
//!
//! Each stalled operation holds one thread of tokio's blocking pool (512 by
//! default) and one pooled connection. Once every connection is stalled,
//! further operations fail after the connection timeout without taking a
//! thread for long.
//!
//! # SQLite tuning
//!
//! Every pooled SQLite connection is opened with `PRAGMA busy_timeout` (the
//! connection timeout), `journal_mode = WAL` (readers never block writers or
//! each other, and a writer does not block readers) and `synchronous =
//! NORMAL` (no fsync per commit; a crash of the application loses nothing,
//! a power failure at most the last commits), through [`SqliteTuning`], an
//! r2d2 connection customizer. Every write runs in a `BEGIN IMMEDIATE`
//! transaction, which takes the write lock up front and so waits for it
//! (`busy_timeout`) instead of failing with `SQLITE_BUSY` when a deferred
//! transaction tries to upgrade. WAL needs the database on a local
//! filesystem, and leaves `-wal` and `-shm` files beside it.
//!
//! SQLite admits one writer at a time, and its busy handler waits for the
//! lock by sleeping (1, 2, 5… up to 100 ms) and retrying, so many
//! concurrent writers that meet there lose most of their time asleep.
//! Within one process they never do: a store's writes (save, touch,
//! rotation, destroy, revocation) queue at an in-process gate, in order and
//! without holding a connection, and the one at the front meets only other
//! processes' writers in the busy handler. The gate is waited for up to the
//! connection timeout, then the write fails with
//! [`DbError::LockTimeout`]. Reads and `purge_expired` (which deletes in
//! short batches) do not queue.
//!
//! A write may wait three times, each time up to the connection timeout:
//! for its turn at the gate, for a pooled connection, then for the write
//! lock (held by another process). Size the pool so the connection wait is
//! rare, or shorten the timeout if the sum must stay under a bound.
//!
//! An in-memory database lives in its pool's single connection. If r2d2
//! ever discards that connection (a task panicked while holding it, or a
//! transaction could not be rolled back), a new, empty database takes its
//! place: in-memory stores are for tests and demos.
//!
//! # Errors and tracing
//!
//! Building a store returns [`DbError`]. Built from a URL, it opens one
//! connection before the pool, so a wrong password, an unknown database or
//! user, a refused connection or a SQLite file that cannot be opened (a missing directory,
//! a file that is not a database) fails at once with [`DbError::Connect`]
//! and the driver's reason (`FATAL:  password authentication failed for
//! user "app"`, `Unknown database 'app'`), not after the connection
//! timeout; a server that does not answer at all fails after the
//! connection timeout. Operations return
//! [`session_core::Error`]; database failures are
//! [`Error::Backend`](session_core::Error::Backend) wrapping a [`DbError`].
//! Messages never contain the database URL or its password: connection
//! errors of pools built from a URL are logged and returned with the URL,
//! the password (as written and decoded) and anything that could be a piece
//! of it replaced by `***`.
//!
//! Each operation runs in a `tracing` span named `session_db` with fields
//! `op` (`load`, `save`, …) and `key`: the first 8 hex digits of the
//! storage key, never the session ID. Backend failures are logged at `warn`.
//!
// The docs name every database's types; those of a database whose feature
// is off do not exist, so their links lead to the feature flags instead
// (docs.rs builds with all features).
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "[`SqlitePool`]: crate#feature-flags\n[`SqliteTuning`]: crate#feature-flags"
)]
#![cfg_attr(not(feature = "postgres"), doc = "[`PgPool`]: crate#feature-flags")]
#![cfg_attr(not(feature = "mysql"), doc = "[`MysqlPool`]: crate#feature-flags")]
#![deny(missing_docs)]

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!(
    "session-db needs at least one database feature: `sqlite` (the default), `postgres` or `mysql`"
);

mod builder;
mod conn;
mod error;
mod health;
mod migrations;
mod ops;
mod sql;
mod table;
mod url;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_core::{
    Result, Session, SessionConfig, SessionHandle, SessionId, SessionInfo, SessionStore,
    StorageKey, async_trait, is_valid_owner,
};

#[cfg(feature = "mysql")]
pub use builder::MysqlPool;
#[cfg(feature = "postgres")]
pub use builder::PgPool;
pub use builder::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_OPERATION_TIMEOUT, DEFAULT_POOL_SIZE, DbPool,
    DbSessionStoreBuilder, MAX_CONNECTION_TIMEOUT, MAX_OPERATION_TIMEOUT, MAX_POOL_SIZE,
};
#[cfg(feature = "sqlite")]
pub use builder::{SqlitePool, SqliteTuning};
/// The diesel this crate is built on, for naming pool and connection types
/// that match it.
pub use diesel;
pub use error::DbError;
pub use sql::Database;
pub use table::{DEFAULT_TABLE_NAME, MAX_TABLE_NAME_LEN};

use crate::error::OpError;
use crate::health::Checkout;
use crate::ops::Limits;
use crate::sql::Statements;
use crate::table::TableName;
use crate::url::Secrets;

/// A [`SessionStore`] in a SQL database: SQLite, PostgreSQL or
/// MySQL/MariaDB. Cheap to clone: clones share the pool.
///
/// See the [crate documentation](crate) for URLs, the schema and how each
/// guarantee is kept.
#[derive(Clone)]
pub struct DbSessionStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: DbPool,
    sql: Statements,
    config: SessionConfig,
    /// How long to wait for a per-owner lock (the pool's connection timeout).
    lock_wait: Duration,
    /// How long an operation may wait for its blocking task.
    operation_timeout: Duration,
    /// SQLite only: held by this store's one writer at a time. SQLite
    /// admits one writer per database; without the gate, concurrent writes
    /// of one process all take connections and meet in SQLite's busy
    /// handler, which sleeps (1, 2, 5… up to 100 ms) and retries, so
    /// throughput collapses with many tasks. Behind the gate they queue in
    /// order, without connections, and only other processes' writers still
    /// meet in the busy handler.
    writer: Option<parking_lot::Mutex<()>>,
    /// How connections taken from the pool are checked.
    checkout: Checkout,
    /// What connection errors must not show (from the URL).
    secrets: Secrets,
}

impl DbSessionStore {
    /// Connect with the given timeouts and limits and default pool settings
    /// (a pool of 10, a 5 s connection timeout, table `sessions`). Creates the
    /// table if needed.
    ///
    /// # Errors
    /// As [`DbSessionStoreBuilder::build`].
    pub async fn connect(url: impl Into<String>, config: SessionConfig) -> Result<Self, DbError> {
        Self::builder(url).config(config).build().await
    }

    /// Configure a store on the database at `url` (see the
    /// [crate documentation](crate#connecting) for the accepted forms).
    pub fn builder(url: impl Into<String>) -> DbSessionStoreBuilder {
        DbSessionStoreBuilder::from_url(url.into())
    }

    /// Configure a store on a pool the application already has (see
    /// [Using an existing pool](crate#using-an-existing-pool)).
    pub fn from_pool(pool: impl Into<DbPool>) -> DbSessionStoreBuilder {
        DbSessionStoreBuilder::from_pool(pool.into())
    }

    /// The DDL that creates the session table `table` on `database`, for
    /// applications that manage the schema with their own migrations.
    ///
    /// ```
    /// use session_db::{Database, DbSessionStore};
    ///
    /// let ddl = DbSessionStore::schema_sql(Database::Postgres, "web_sessions")?;
    /// assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS \"web_sessions\""));
    /// # Ok::<(), session_db::DbError>(())
    /// ```
    ///
    /// # Errors
    /// [`DbError::InvalidTableName`].
    pub fn schema_sql(database: Database, table: &str) -> Result<String, DbError> {
        Ok(sql::create_table_sql(database, &TableName::parse(table)?))
    }

    /// Which database the store uses.
    pub fn database(&self) -> Database {
        self.inner.sql.db
    }

    /// The table the store uses.
    pub fn table_name(&self) -> &str {
        self.inner.sql.table.as_str()
    }

    /// The connection pool, for example to run the application's own queries
    /// on the same connections.
    pub fn pool(&self) -> &DbPool {
        &self.inner.pool
    }

    fn limits(&self) -> Limits {
        Limits {
            owner: self.inner.config.max_sessions_per_owner(),
            lock_wait: self.inner.lock_wait,
        }
    }

    fn now(&self) -> i64 {
        self.inner.config.now_ms()
    }

    /// [`run`](Self::run) a write: on SQLite, behind the store's writer gate,
    /// waited for up to the pool's connection timeout (then
    /// [`DbError::LockTimeout`]), and taken before a connection is, so a
    /// queued writer holds none.
    async fn run_write<T, F>(&self, op: &'static str, key: Option<&StorageKey>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, OpError> + Send + 'static,
    {
        self.run(op, key, move |inner| {
            let _gate = match &inner.writer {
                Some(gate) => Some(
                    gate.try_lock_for(inner.lock_wait)
                        .ok_or(DbError::LockTimeout(inner.lock_wait))?,
                ),
                None => None,
            };
            f(inner)
        })
        .await
    }

    /// Run `f` on a blocking thread inside a `session_db` span, waiting for
    /// it at most the operation timeout ([`DbError::Timeout`] after that; the
    /// thread finishes on its own).
    async fn run<T, F>(&self, op: &'static str, key: Option<&StorageKey>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, OpError> + Send + 'static,
    {
        let span = tracing::debug_span!("session_db", op, key = tracing::field::Empty);
        if let Some(key) = key {
            span.record("key", tracing::field::display(KeyPrefix(key)));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DbError::NoRuntime)?;
        let inner = Arc::clone(&self.inner);
        let task_span = span.clone();
        let task = runtime.spawn_blocking(move || {
            let _entered = task_span.enter();
            f(&inner)
        });
        let timeout = self.inner.operation_timeout;
        let result = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result.map_err(session_core::Error::from),
            Ok(Err(e)) => Err(DbError::TaskFailed(e.to_string()).into()),
            Err(_) => Err(DbError::Timeout(timeout).into()),
        };
        if let Err(session_core::Error::Backend(e)) = &result {
            span.in_scope(|| tracing::warn!(error = %e, "session storage failed"));
        }
        result
    }
}

/// Check out a connection from `inner`'s pool and evaluate `$body` with
/// `$conn` (the connection, of the pool's concrete type) and `$sql` (the
/// store's statements). The body is generic code over `conn::Conn`.
macro_rules! with_conn {
    ($inner:expr, |$conn:ident, $sql:ident| $body:expr) => {{
        let inner: &Inner = $inner;
        let $sql = &inner.sql;
        match inner.pool {
            #[cfg(feature = "sqlite")]
            DbPool::Sqlite(ref pool) => {
                on_pool(inner, pool, |$conn: &mut diesel::SqliteConnection| $body)
            }
            #[cfg(feature = "postgres")]
            DbPool::Postgres(ref pool) => {
                on_pool(inner, pool, |$conn: &mut diesel::PgConnection| $body)
            }
            #[cfg(feature = "mysql")]
            DbPool::Mysql(ref pool) => {
                on_pool(inner, pool, |$conn: &mut diesel::MysqlConnection| $body)
            }
        }
    }};
}

/// Run `f` on a connection checked out of `pool` (`inner`'s), noting whether
/// the database answered.
fn on_pool<C, T>(
    inner: &Inner,
    pool: &diesel::r2d2::Pool<diesel::r2d2::ConnectionManager<C>>,
    f: impl FnOnce(&mut C) -> Result<T, OpError>,
) -> Result<T, OpError>
where
    C: diesel::r2d2::R2D2Connection + conn::Conn + Send + 'static,
{
    let mut pooled = health::take(pool, inner.checkout, &inner.secrets, inner.lock_wait)?;
    let result = f(&mut pooled);
    if inner.checkout == Checkout::PingIfIdle {
        health::finished(&mut pooled, !matches!(result, Err(OpError::Db(_))));
    }
    result
}

/// The first 8 hex digits of a storage key: enough to correlate log lines,
/// useless as a credential.
struct KeyPrefix<'a>(&'a StorageKey);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0.as_bytes()[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DbSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSessionStore")
            .field("database", &self.database())
            .field("table", &self.table_name())
            .field("pool", &self.inner.pool)
            .field("config", &self.inner.config)
            .finish()
    }
}

#[async_trait]
impl SessionStore for DbSessionStore {
    fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = *id.storage_key();
        let now = self.now();
        let found = self
            .run("load", Some(&key), move |inner| {
                with_conn!(inner, |c, sql| ops::load(c, sql, &key, now))
            })
            .await?;
        Ok(found.map(|(meta, data)| Session::from_stored(id.clone(), meta, data)))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let write = session.prepare_write(&self.inner.config)?;
        let key = write.key;
        let limits = self.limits();
        let write = self
            .run_write("save", Some(&key), move |inner| {
                with_conn!(inner, |c, sql| ops::save(c, sql, limits, &write))?;
                Ok(write)
            })
            .await?;
        session.commit_write(write);
        Ok(())
    }

    async fn touch(&self, session: &mut Session) -> Result<()> {
        let touch = session.prepare_touch(&self.inner.config)?;
        self.run_write("touch", Some(&touch.key), move |inner| {
            with_conn!(inner, |c, sql| ops::touch(c, sql, &touch))
        })
        .await?;
        session.commit_touch(&touch);
        Ok(())
    }

    async fn cycle_id(&self, session: &mut Session) -> Result<()> {
        let rotation = session.prepare_rotation(&self.inner.config)?;
        let key = rotation.old_key;
        let limits = self.limits();
        let rotation = self
            .run_write("cycle_id", Some(&key), move |inner| {
                with_conn!(inner, |c, sql| ops::rotate(c, sql, limits, &rotation))?;
                Ok(rotation)
            })
            .await?;
        session.commit_rotation(rotation);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let key = *id.storage_key();
        let now = self.now();
        self.run_write("destroy", Some(&key), move |inner| {
            with_conn!(inner, |c, sql| ops::destroy(c, sql, &key, now))
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = self.now();
        // One blocking task per batch, so the operation timeout bounds each
        // batch rather than the whole purge.
        let mut purged = 0u64;
        loop {
            let removed = self
                .run("purge_expired", None, move |inner| {
                    with_conn!(inner, |c, sql| ops::purge_batch(c, sql, now))
                })
                .await?;
            purged += removed as u64;
            if removed < sql::PURGE_BATCH {
                break;
            }
        }
        if purged > 0 {
            tracing::debug!(purged, "purged expired sessions");
        }
        Ok(purged)
    }

    async fn len(&self) -> Result<u64> {
        let now = self.now();
        self.run("len", None, move |inner| {
            with_conn!(inner, |c, sql| ops::len(c, sql, now))
        })
        .await
    }

    async fn is_empty(&self) -> Result<bool> {
        let now = self.now();
        self.run("is_empty", None, move |inner| {
            with_conn!(inner, |c, sql| ops::is_empty(c, sql, now))
        })
        .await
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        // No session can be bound to an owner the core refuses: answer
        // without asking the database (which may not even store the key).
        if !is_valid_owner(owner) {
            return Ok(Vec::new());
        }
        let now = self.now();
        let owner = owner.to_owned();
        let current = current.cloned();
        self.run("owner_sessions", None, move |inner| {
            with_conn!(inner, |c, sql| ops::owner_sessions(
                c,
                sql,
                &owner,
                current.as_ref(),
                now
            ))
        })
        .await
    }

    async fn count_owner_sessions(&self, owner: &str) -> Result<u64> {
        if !is_valid_owner(owner) {
            return Ok(0);
        }
        let now = self.now();
        let owner = owner.to_owned();
        self.run("count_owner_sessions", None, move |inner| {
            with_conn!(inner, |c, sql| ops::count_owner_sessions(
                c, sql, &owner, now
            ))
        })
        .await
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        if !is_valid_owner(owner) {
            return Ok(false);
        }
        let now = self.now();
        let owner = owner.to_owned();
        let handle = *handle;
        self.run_write("destroy_owner_session", None, move |inner| {
            with_conn!(inner, |c, sql| ops::destroy_owner_session(
                c, sql, &owner, &handle, now
            ))
        })
        .await
    }

    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        if !is_valid_owner(owner) {
            return Ok(0);
        }
        let now = self.now();
        let owner = owner.to_owned();
        let keep = keep.map(|id| *id.storage_key());
        self.run_write("destroy_owner_sessions", None, move |inner| {
            with_conn!(inner, |c, sql| ops::destroy_owner_sessions(
                c,
                sql,
                &owner,
                keep.as_ref(),
                now
            ))
        })
        .await
    }
}
