//! Building a store: from a URL (this crate builds the pool) or from the
//! application's own r2d2 pool.

use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, HandleError, Pool};
use session_core::SessionConfig;

use crate::health::{Checkout, take};
use crate::migrations::TableMigrations;
use crate::sql::{Database, LockScope, Statements};
use crate::table::{DEFAULT_TABLE_NAME, TableName};
use crate::url::{Secrets, Target, parse_url, with_default_params};
use crate::{DbError, DbSessionStore, Inner};

/// Default maximum number of pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// Largest accepted pool size; [`DbSessionStoreBuilder::pool_size`] clamps
/// larger values to it (r2d2 reserves room for the whole pool up front).
pub const MAX_POOL_SIZE: u32 = 1024;

/// Default time to wait for a pooled connection (and, on SQLite, for the
/// write lock) before failing with a backend error.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted connection timeout; longer values are clamped to it
/// (r2d2 adds the timeout to the current instant, which would overflow).
pub const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// The least default operation timeout: an operation whose database does not
/// answer fails after this long, or after three times the connection timeout
/// if that is longer (see [`DbSessionStoreBuilder::operation_timeout`]).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest accepted operation timeout; longer values are clamped to it.
pub const MAX_OPERATION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long a starting store may wait for another process's migration
/// (PostgreSQL and MySQL wait up to 60 s for its lock).
const BUILD_MIGRATION_WAIT: Duration = Duration::from_secs(60);

/// The operation timeout when none was set: [`DEFAULT_OPERATION_TIMEOUT`],
/// or three times the connection timeout (a write may wait for the SQLite
/// writer gate, a connection and a lock, each up to it) if that is longer.
pub(crate) fn default_operation_timeout(connection_timeout: Duration) -> Duration {
    connection_timeout
        .saturating_mul(3)
        .max(DEFAULT_OPERATION_TIMEOUT)
        .min(MAX_OPERATION_TIMEOUT)
}

/// An r2d2 pool of SQLite connections.
#[cfg(feature = "sqlite")]
pub type SqlitePool = Pool<ConnectionManager<diesel::SqliteConnection>>;

/// An r2d2 pool of PostgreSQL connections.
#[cfg(feature = "postgres")]
pub type PgPool = Pool<ConnectionManager<diesel::PgConnection>>;

/// An r2d2 pool of MySQL/MariaDB connections.
#[cfg(feature = "mysql")]
pub type MysqlPool = Pool<ConnectionManager<diesel::MysqlConnection>>;

/// The connection pool a store uses: one of the databases compiled in.
///
/// Build a store on a pool the application already has with
/// [`DbSessionStore::from_pool`]; get a store's pool back with
/// [`DbSessionStore::pool`] (for example to run the application's own
/// queries on it). Cloning is cheap: clones share the pool.
#[derive(Clone)]
#[non_exhaustive]
pub enum DbPool {
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    Mysql(MysqlPool),
}

impl DbPool {
    /// Which database the pool connects to.
    pub fn database(&self) -> Database {
        match *self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Database::Sqlite,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Database::Postgres,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => Database::Mysql,
        }
    }

    fn connection_timeout(&self) -> Duration {
        match *self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(ref p) => p.connection_timeout(),
            #[cfg(feature = "postgres")]
            Self::Postgres(ref p) => p.connection_timeout(),
            #[cfg(feature = "mysql")]
            Self::Mysql(ref p) => p.connection_timeout(),
        }
    }

    fn state(&self) -> diesel::r2d2::State {
        match *self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(ref p) => p.state(),
            #[cfg(feature = "postgres")]
            Self::Postgres(ref p) => p.state(),
            #[cfg(feature = "mysql")]
            Self::Mysql(ref p) => p.state(),
        }
    }
}

impl fmt::Debug for DbPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("DbPool")
            .field("database", &self.database())
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .finish()
    }
}

#[cfg(feature = "sqlite")]
impl From<SqlitePool> for DbPool {
    fn from(pool: SqlitePool) -> Self {
        Self::Sqlite(pool)
    }
}

#[cfg(feature = "postgres")]
impl From<PgPool> for DbPool {
    fn from(pool: PgPool) -> Self {
        Self::Postgres(pool)
    }
}

#[cfg(feature = "mysql")]
impl From<MysqlPool> for DbPool {
    fn from(pool: MysqlPool) -> Self {
        Self::Mysql(pool)
    }
}

/// Connection settings for SQLite, applied to every pooled connection when it
/// is opened: `busy_timeout` (so a writer waits for the lock instead of
/// failing with "database is locked"), `journal_mode = WAL` (readers never
/// wait for writers) and `synchronous = NORMAL` (durable across application
/// crashes; the last transactions may be lost only on power failure or OS
/// crash, which is the usual choice for WAL).
///
/// Stores built from a URL install it themselves. If you build the pool,
/// install it with
/// [`connection_customizer`](diesel::r2d2::Builder::connection_customizer)
/// (without it, a store on the pool sets only a busy timeout, on each
/// connection that has none, and warns that the database is not in WAL
/// mode):
///
/// ```
/// use std::time::Duration;
/// use session_db::SqliteTuning;
/// use session_db::diesel::SqliteConnection;
/// use session_db::diesel::r2d2::{ConnectionManager, Pool};
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("app.db");
/// let pool = Pool::builder()
///     .max_size(8)
///     .connection_customizer(Box::new(SqliteTuning::new(Duration::from_secs(5))))
///     .build(ConnectionManager::<SqliteConnection>::new(path.to_string_lossy()))
///     .unwrap();
/// ```
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone, Copy)]
pub struct SqliteTuning {
    busy_timeout: Duration,
    wal: bool,
}

#[cfg(feature = "sqlite")]
impl SqliteTuning {
    /// Writers wait up to `busy_timeout` for the database's write lock.
    pub fn new(busy_timeout: Duration) -> Self {
        Self {
            busy_timeout,
            wal: true,
        }
    }

    fn in_memory(busy_timeout: Duration) -> Self {
        Self {
            busy_timeout,
            wal: false,
        }
    }
}

#[cfg(feature = "sqlite")]
impl Default for SqliteTuning {
    fn default() -> Self {
        Self::new(DEFAULT_CONNECTION_TIMEOUT)
    }
}

#[cfg(feature = "sqlite")]
impl diesel::r2d2::CustomizeConnection<diesel::SqliteConnection, diesel::r2d2::Error>
    for SqliteTuning
{
    fn on_acquire(&self, conn: &mut diesel::SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        let ms = self.busy_timeout.as_millis().min(i32::MAX as u128);
        // busy_timeout first, so switching the journal mode (which needs a
        // lock) also waits for other processes.
        let mut pragmas = format!("PRAGMA busy_timeout = {ms};");
        if self.wal {
            pragmas.push_str(" PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
        }
        conn.batch_execute(&pragmas)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Warn if the database of an application's SQLite pool is a file not in
/// WAL mode: there readers and writers block each other (they wait, with
/// the busy timeout the store gives each connection, but they wait).
/// Switching the mode would change the application's database, so the
/// store leaves that to the application.
#[cfg(feature = "sqlite")]
fn warn_unless_wal(pool: &SqlitePool) {
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let Ok(mut conn) = pool.get() else {
        return;
    };
    let mode = diesel::RunQueryDsl::get_result::<Mode>(
        diesel::sql_query("PRAGMA journal_mode"),
        &mut *conn,
    );
    if let Ok(Mode { journal_mode }) = mode
        && !matches!(journal_mode.to_ascii_lowercase().as_str(), "wal" | "memory")
    {
        tracing::warn!(
            journal_mode,
            "session-db: the application's SQLite pool is not in WAL mode, so session reads \
             and writes block each other; install session_db::SqliteTuning as the pool's \
             connection customizer (or set PRAGMA journal_mode = WAL)"
        );
    }
}

/// Reports connection failures of pools this crate builds through `tracing`
/// (r2d2's default uses the `log` crate), with the URL's secrets redacted:
/// drivers quote the parts of a URL they could not use.
#[derive(Debug, Clone)]
struct TraceErrors(Secrets);

impl HandleError<diesel::r2d2::Error> for TraceErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        let error = self.0.redact(&error.to_string());
        tracing::warn!(%error, "session-db: could not open a database connection");
    }
}

/// A pool this crate opened, how to take connections from it, and what its
/// errors must not show.
struct Opened {
    pool: DbPool,
    checkout: Checkout,
    secrets: Secrets,
}

/// Where the store's connections come from.
enum Source {
    Url(String),
    Pool(DbPool),
}

/// Configures a [`DbSessionStore`]; made by [`DbSessionStore::builder`] (from
/// a URL) or [`DbSessionStore::from_pool`] (from an existing pool).
///
#[cfg_attr(feature = "sqlite", doc = "```")]
#[cfg_attr(not(feature = "sqlite"), doc = "```ignore")]
/// use std::time::Duration;
/// use session_core::SessionConfig;
/// use session_db::DbSessionStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), session_db::DbError> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let url = format!("sqlite://{}", dir.path().join("app.db").display());
/// let store = DbSessionStore::builder(url)
///     .config(
///         SessionConfig::new(Duration::from_secs(30 * 60))
///             .with_absolute_timeout(Duration::from_secs(12 * 3600)),
///     )
///     .table_name("user_sessions")
///     .pool_size(16)
///     .connection_timeout(Duration::from_secs(2))
///     .build()
///     .await?;
/// assert_eq!(store.table_name(), "user_sessions");
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until .build().await"]
pub struct DbSessionStoreBuilder {
    source: Source,
    config: SessionConfig,
    table: String,
    pool_size: u32,
    connection_timeout: Duration,
    operation_timeout: Option<Duration>,
    run_migrations: bool,
}

impl fmt::Debug for DbSessionStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never print it.
        let source = match &self.source {
            Source::Url(_) => "url",
            Source::Pool(_) => "existing pool",
        };
        f.debug_struct("DbSessionStoreBuilder")
            .field("source", &source)
            .field("config", &self.config)
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("connection_timeout", &self.connection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

impl DbSessionStoreBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            config: SessionConfig::default(),
            table: DEFAULT_TABLE_NAME.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            operation_timeout: None,
            run_migrations: true,
        }
    }

    pub(crate) fn from_url(url: String) -> Self {
        Self::new(Source::Url(url))
    }

    pub(crate) fn from_pool(pool: DbPool) -> Self {
        Self::new(Source::Pool(pool))
    }

    /// Timeouts and limits (idle and absolute timeout, data size, per-owner
    /// limit, clock). Default: [`SessionConfig::default`], a 24-hour idle
    /// timeout.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// The table sessions are stored in (default `sessions`). Lower-case
    /// ASCII letters, digits and `_`, not starting with a digit, at most 32
    /// characters, not starting with `sqlite_` or `__diesel`; anything else
    /// (also upper case, on which the databases disagree) makes
    /// [`build`](Self::build) fail with [`DbError::InvalidTableName`].
    /// Several stores may use different tables of one database.
    pub fn table_name(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Maximum number of pooled connections (default 10; at least 1, at
    /// most [`MAX_POOL_SIZE`], values outside are clamped). Only for a pool
    /// built from a URL; an in-memory SQLite database always uses one.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.clamp(1, MAX_POOL_SIZE);
        self
    }

    /// How long an operation waits for a pooled connection before failing
    /// with [`session_core::Error::Backend`] (default 5 s), and how long a
    /// write waits for a per-owner lock ([`DbError::LockTimeout`]). On
    /// SQLite it is also the `busy_timeout`: how long a writer waits for the
    /// write lock, after it waited for its turn at the store's writer gate
    /// and for a connection, each up to this long too (so a write may wait
    /// up to three times this). Only for a pool built from a URL; an
    /// existing pool keeps its own (its connection timeout is then the lock
    /// wait, and the busy timeout of its SQLite connections that have
    /// none). At least 1 ms, at most [`MAX_CONNECTION_TIMEOUT`] (one hour);
    /// values outside are clamped.
    ///
    /// For PostgreSQL it is also libpq's `connect_timeout` (in whole seconds,
    /// at least 2), unless the URL sets one.
    ///
    /// [`build`](Self::build) waits this long for its first connection,
    /// opened before the pool is: a database that refuses it fails the
    /// build at once with [`DbError::Connect`].
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout.clamp(Duration::from_millis(1), MAX_CONNECTION_TIMEOUT);
        self
    }

    /// The longest an operation waits for the database, all waits included
    /// (writer gate, connection, locks, the statements themselves). After it
    /// the operation fails with [`DbError::Timeout`] inside
    /// [`session_core::Error::Backend`], also when the database stopped
    /// answering without closing the connection (a network partition).
    ///
    /// Default: [`DEFAULT_OPERATION_TIMEOUT`] (15 s), or three times the
    /// connection timeout if that is longer. At least 1 ms, at most
    /// [`MAX_OPERATION_TIMEOUT`] (one day); values outside are clamped.
    /// `purge_expired` applies it to each batch of deletions, not to the
    /// whole purge. Building the store may take up to twice the connection
    /// timeout (its first connection, then the pool's), 60 s (another
    /// process's migration) and this timeout.
    ///
    /// A timed-out operation's outcome is unknown: a write may still commit.
    /// Its blocking thread, and the pooled connection it uses, stay busy
    /// until the database driver returns; see the
    /// [crate documentation](crate#when-the-database-stops-answering) for
    /// what bounds that on each database. For PostgreSQL this timeout is
    /// also libpq's `tcp_user_timeout`, unless the URL sets one.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout =
            Some(timeout.clamp(Duration::from_millis(1), MAX_OPERATION_TIMEOUT));
        self
    }

    /// Whether [`build`](Self::build) creates or upgrades the table (default
    /// `true`). Turn it off if your own migrations create it from
    /// [`DbSessionStore::schema_sql`].
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// Open the pool (from a URL), run the migrations, and return the store.
    ///
    /// # Errors
    /// [`DbError::InvalidTableName`], [`DbError::UnsupportedUrl`],
    /// [`DbError::InvalidUrl`] (also for a password with an unescaped `@`,
    /// `/`, `?`, `#` or `%`), [`DbError::FeatureDisabled`] (a URL for a
    /// database whose feature is not enabled), [`DbError::Connect`] at once
    /// if the first connection fails (refused credentials, unknown database,
    /// unreachable host, a SQLite file that cannot be opened; the driver's
    /// reason, without the password) or gets no answer within the
    /// connection timeout, [`DbError::Pool`] if the pool still cannot open
    /// a connection within the connection timeout,
    /// [`DbError::Migration`] or [`DbError::LockTimeout`] if the table cannot
    /// be created.
    /// [`DbError::Timeout`] if all that took longer than twice the
    /// connection timeout, 60 s and the operation timeout together.
    pub async fn build(self) -> Result<DbSessionStore, DbError> {
        let table = TableName::parse(&self.table)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DbError::NoRuntime)?;
        let connection_timeout = match &self.source {
            Source::Url(_) => self.connection_timeout,
            Source::Pool(pool) => pool.connection_timeout(),
        };
        // The first connection and the pool's each wait up to the
        // connection timeout.
        let limit = connection_timeout
            .saturating_mul(2)
            .saturating_add(BUILD_MIGRATION_WAIT)
            .saturating_add(self.effective_operation_timeout(connection_timeout))
            .min(MAX_OPERATION_TIMEOUT);
        let task = runtime.spawn_blocking(move || self.build_blocking(table));
        match tokio::time::timeout(limit, task).await {
            Ok(joined) => joined.map_err(|e| DbError::TaskFailed(e.to_string()))?,
            Err(_) => Err(DbError::Timeout(limit)),
        }
    }

    /// The operation timeout, given the pool's connection timeout.
    fn effective_operation_timeout(&self, connection_timeout: Duration) -> Duration {
        self.operation_timeout
            .unwrap_or_else(|| default_operation_timeout(connection_timeout))
    }

    fn build_blocking(self, table: TableName) -> Result<DbSessionStore, DbError> {
        let Opened {
            pool,
            checkout,
            secrets,
        } = match self.source {
            Source::Pool(ref pool) => Opened {
                pool: pool.clone(),
                checkout: if pool.database() == Database::Sqlite {
                    Checkout::AdoptSqlite
                } else {
                    Checkout::AsIs
                },
                secrets: Secrets::none(),
            },
            Source::Url(ref url) => self.open(url)?,
        };
        let database = pool.database();
        #[cfg(feature = "sqlite")]
        if let (Source::Pool(_), DbPool::Sqlite(p)) = (&self.source, &pool) {
            warn_unless_wal(p);
        }
        if self.run_migrations {
            on_connection(&pool, checkout, &secrets, |c| {
                c.migrate(TableMigrations::new(database, table.clone()))
            })?;
        }
        let mut sql = Statements::new(database, table);
        if database == Database::Mysql {
            sql.lock_scope = on_connection(&pool, checkout, &secrets, |c| c.lock_scope())?;
        }
        tracing::debug!(%database, table = %sql.table, "session store ready");
        Ok(DbSessionStore {
            inner: Arc::new(Inner {
                lock_wait: pool.connection_timeout(),
                operation_timeout: self.effective_operation_timeout(pool.connection_timeout()),
                writer: (database == Database::Sqlite).then(|| Mutex::new(())),
                sql,
                pool,
                config: self.config,
                checkout,
                secrets,
            }),
        })
    }

    fn open(&self, url: &str) -> Result<Opened, DbError> {
        let target = match parse_url(url)? {
            Target::Postgres(url) => Target::Postgres(with_default_params(
                &url,
                &libpq_defaults(
                    self.connection_timeout,
                    self.effective_operation_timeout(self.connection_timeout),
                ),
            )),
            other => other,
        };
        // A SQLite path is no secret, and SQLite's errors are clearer with it.
        let secrets = match &target {
            Target::Postgres(normalized) | Target::Mysql(normalized) => {
                Secrets::from_url(url).and_url(normalized)
            }
            Target::SqliteFile(_) | Target::SqliteMemory(_) => Secrets::none(),
        };
        let (size, timeout) = (self.pool_size, self.connection_timeout);
        // r2d2 would retry a connection that fails for the whole connection
        // timeout and then report a timeout: open one directly first, so a
        // wrong password, an unknown database or a refused connection fails
        // at once, saying why.
        probe(&target, timeout, &secrets)?;
        let redact = |e: diesel::r2d2::PoolError| DbError::Pool(secrets.redact(&e.to_string()));
        let (pool, checkout) = match target {
            #[cfg(feature = "sqlite")]
            Target::SqliteFile(path) => pool_builder(size, timeout, &secrets)
                .test_on_check_out(false)
                .connection_customizer(Box::new(SqliteTuning::new(timeout)))
                .build(ConnectionManager::new(path))
                .map(|p| (DbPool::Sqlite(p), Checkout::AsIs))
                .map_err(redact)?,
            // Every connection to ":memory:" is its own database: keep exactly
            // one, forever.
            #[cfg(feature = "sqlite")]
            Target::SqliteMemory(uri) => pool_builder(1, timeout, &secrets)
                .test_on_check_out(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .connection_customizer(Box::new(SqliteTuning::in_memory(timeout)))
                .build(ConnectionManager::new(uri))
                .map(|p| (DbPool::Sqlite(p), Checkout::AsIs))
                .map_err(redact)?,
            #[cfg(feature = "postgres")]
            Target::Postgres(url) => pool_builder(size, timeout, &secrets)
                .test_on_check_out(false)
                .build(ConnectionManager::new(url))
                .map(|p| (DbPool::Postgres(p), Checkout::PingIfIdle))
                .map_err(redact)?,
            #[cfg(feature = "mysql")]
            Target::Mysql(url) => pool_builder(size, timeout, &secrets)
                .test_on_check_out(true)
                .build(ConnectionManager::new(url))
                .map(|p| (DbPool::Mysql(p), Checkout::AsIs))
                .map_err(redact)?,
            #[allow(unreachable_patterns)]
            other => {
                return Err(DbError::FeatureDisabled {
                    database: other.database().name(),
                    feature: other.database().feature(),
                });
            }
        };
        Ok(Opened {
            pool,
            checkout,
            secrets,
        })
    }
}

/// Open one connection to `target` directly and close it again, waiting at
/// most `timeout`: [`DbError::Connect`] with the driver's reason (secrets
/// redacted) if that fails or takes longer. A SQLite file connection also
/// reads the schema, so a file that is not a database fails here too. In-memory SQLite databases are not probed (nothing can fail,
/// and a probe of a named shared one would be a second connection to it).
///
/// The attempt runs on a thread of its own: a server that accepts the TCP
/// connection and then says nothing (MySQL has no connect timeout in diesel)
/// would otherwise hold the build past its connection timeout. After a
/// timeout that thread is left to finish on its own.
fn probe(target: &Target, timeout: Duration, secrets: &Secrets) -> Result<(), DbError> {
    type Attempt = Box<dyn FnOnce() -> Result<(), String> + Send>;
    let attempt: Attempt = match target {
        #[cfg(feature = "sqlite")]
        Target::SqliteFile(path) => {
            let path = path.clone();
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
            Box::new(move || {
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                let mut conn = diesel::SqliteConnection::establish(&path)
                    .map_err(|e| sqlite_open_failure(&path, &e.to_string()))?;
                // Reading the schema fails on a file that is not a database.
                // Only a read, waiting for locks: the journal-mode switch is
                // the pool's (r2d2 retries it while another process's first
                // start holds the file).
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {ms}; SELECT count(*) FROM sqlite_master;"
                ))
                .map_err(|e| sqlite_open_failure(&path, &e.to_string()))
            })
        }
        #[cfg(feature = "postgres")]
        Target::Postgres(url) => {
            let url = url.clone();
            Box::new(move || establish::<diesel::PgConnection>(&url))
        }
        #[cfg(feature = "mysql")]
        Target::Mysql(url) => {
            let url = url.clone();
            Box::new(move || establish::<diesel::MysqlConnection>(&url))
        }
        // In memory, or a database whose feature is off (`open` says so).
        _ => return Ok(()),
    };
    let database = target.database().name();
    let failed = |reason: String| DbError::Connect { database, reason };
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("session-db-connect".to_owned())
        .spawn(move || {
            // The receiver is gone if the build stopped waiting.
            let _ = done.send(attempt());
        })
        .map_err(|e| failed(format!("could not start a thread to connect: {e}")))?;
    match outcome.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err(failed(secrets.redact(&one_line(&reason)))),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(failed(format!(
            "no answer within {timeout:?} (the connection timeout)"
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(failed("the connection attempt panicked".to_owned()))
        }
    }
}

/// A driver's message on one line (libpq's span several, indented).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join(" ")
}

/// Open a connection to `url` and close it again: the driver's reason if
/// that fails.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn establish<C: diesel::Connection>(url: &str) -> Result<(), String> {
    C::establish(url).map(drop).map_err(|e| e.to_string())
}

/// Why a SQLite file could not be opened: SQLite's reason, the path (not a
/// secret, and the first thing to check) and, for a plain path, what is
/// wrong with it that SQLite does not say: a directory where the file should
/// be, or a missing directory (SQLite creates the file, never the
/// directory), or a file where the directory should be.
#[cfg(feature = "sqlite")]
fn sqlite_open_failure(path: &str, reason: &str) -> String {
    let mut message = format!("{reason} ({path})");
    if path.starts_with("file:") {
        return message;
    }
    let path = std::path::Path::new(path);
    if path.is_dir() {
        message.push_str(&format!(
            "; {} is a directory: name a file in it",
            path.display()
        ));
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(found) if !found.is_dir() => {
                message.push_str(&format!("; {} is not a directory", dir.display()));
            }
            Ok(_) => {}
            Err(_) => {
                message.push_str(&format!("; the directory {} does not exist", dir.display()));
            }
        }
    }
    message
}

/// The libpq parameters a PostgreSQL URL gets unless it sets them, so that a
/// dead network fails the socket instead of blocking a thread forever:
/// `connect_timeout` (the connection timeout, whole seconds, at least 2 as
/// libpq counts), TCP keepalives (a probe after 10 s of silence, every 5 s,
/// 3 unanswered end the connection) and `tcp_user_timeout` (sent data
/// unacknowledged for the operation timeout ends the connection).
fn libpq_defaults(
    connection_timeout: Duration,
    operation_timeout: Duration,
) -> Vec<(&'static str, String)> {
    let connect = connection_timeout.as_secs() + u64::from(connection_timeout.subsec_nanos() > 0);
    let user_timeout = operation_timeout.as_millis().clamp(1, i32::MAX as u128);
    vec![
        ("connect_timeout", connect.max(2).to_string()),
        ("keepalives", "1".to_owned()),
        ("keepalives_idle", "10".to_owned()),
        ("keepalives_interval", "5".to_owned()),
        ("keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", user_timeout.to_string()),
    ]
}

/// Pool settings shared by every database: `min_idle` 1 so building checks
/// that the database is reachable without opening the whole pool at once.
fn pool_builder<C>(
    size: u32,
    timeout: Duration,
    secrets: &Secrets,
) -> diesel::r2d2::Builder<ConnectionManager<C>>
where
    C: diesel::r2d2::R2D2Connection + 'static,
{
    Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(timeout)
        .error_handler(Box::new(TraceErrors(secrets.clone())))
}

/// Run `f` on a connection of `pool` (at build time), prepared as the
/// store's operations will take it (`mode`), but not pinged (a fresh pool).
fn on_connection<T>(
    pool: &DbPool,
    mode: Checkout,
    secrets: &Secrets,
    f: impl FnOnce(&mut dyn AnyConn) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mode = if mode == Checkout::PingIfIdle {
        Checkout::AsIs
    } else {
        mode
    };
    let wait = pool.connection_timeout();
    match *pool {
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(ref p) => f(&mut *take(p, mode, secrets, wait)?),
        #[cfg(feature = "postgres")]
        DbPool::Postgres(ref p) => f(&mut *take(p, mode, secrets, wait)?),
        #[cfg(feature = "mysql")]
        DbPool::Mysql(ref p) => f(&mut *take(p, mode, secrets, wait)?),
    }
}

/// The build-time operations of [`Conn`](crate::conn::Conn), object safe.
trait AnyConn {
    fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError>;
    fn lock_scope(&mut self) -> Result<LockScope, DbError>;
}

impl<C: crate::conn::Conn> AnyConn for C {
    fn migrate(&mut self, migrations: TableMigrations) -> Result<(), DbError> {
        crate::conn::Conn::migrate(self, migrations)
    }

    fn lock_scope(&mut self) -> Result<LockScope, DbError> {
        crate::conn::Conn::lock_scope(self)
    }
}
