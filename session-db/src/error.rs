//! The crate's error type, and how it reaches `session_core::Error`.

use std::error::Error as StdError;
use std::time::Duration;

/// What went wrong setting up or talking to the database.
///
/// Construction ([`DbSessionStoreBuilder::build`](crate::DbSessionStoreBuilder::build))
/// returns it directly. Store operations return [`session_core::Error`]; a
/// failure of the database becomes [`session_core::Error::Backend`] wrapping
/// a `DbError`, which you can get back with `downcast_ref::<DbError>()` on the
/// boxed source. `?` converts a `DbError` into a `session_core::Error`.
///
/// Messages never include the database URL, which may carry a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL's scheme names no database this crate knows.
    #[error(
        "unsupported database URL scheme {scheme:?}; use sqlite://path, a plain file path, \
         sqlite::memory:, postgres:// (or postgresql://), or mysql:// (or mariadb://)"
    )]
    UnsupportedUrl {
        /// The scheme that was given (the URL itself is not repeated).
        scheme: String,
    },

    /// The URL is for a database whose cargo feature was not compiled in.
    #[error(
        "the URL is for {database}, but session-db was built without its `{feature}` feature; \
         enable it in Cargo.toml: session-db = {{ version = \"0.1\", features = [\"{feature}\"] }}"
    )]
    FeatureDisabled {
        /// The database the URL is for.
        database: &'static str,
        /// The feature that supports it.
        feature: &'static str,
    },

    /// The URL is malformed in a way this crate checks itself, for example a
    /// password with a character that must be percent-encoded. The message
    /// says what to fix and never repeats the URL.
    #[error("invalid database URL: {0}")]
    InvalidUrl(&'static str),

    /// The table name is not a plain SQL identifier this crate accepts.
    #[error("invalid session table name {name:?}: {reason}")]
    InvalidTableName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The first connection to the database, opened when the store is
    /// built, failed: the server refused the credentials or does not know
    /// the database, the host is unreachable or refused the connection, or
    /// a SQLite file could not be opened. Building reports it at once, not
    /// after the connection timeout (only a server that does not answer at
    /// all takes that long). `reason` is what the driver said, for example
    /// `FATAL:  password authentication failed for user "app"`, with the
    /// URL, its password and anything that could be part of the password
    /// replaced by `***`.
    #[error("could not connect to {database}: {reason}")]
    Connect {
        /// The database the URL is for.
        database: &'static str,
        /// Why, as the driver reported it (secrets redacted).
        reason: String,
    },

    /// No connection could be had from the pool within its connection
    /// timeout: every connection is busy, or the database became
    /// unreachable or started refusing connections after the store was
    /// built (at build time that is [`DbError::Connect`]). The text is what the pool and the driver
    /// reported, with the URL, its password and anything that could be part
    /// of the password replaced by `***`.
    #[error("no database connection available: {0}")]
    Pool(String),

    /// A statement failed.
    #[error("database statement failed: {0}")]
    Query(#[source] diesel::result::Error),

    /// Creating or upgrading the session table failed.
    #[error("session table migration failed: {0}")]
    Migration(#[source] Box<dyn StdError + Send + Sync + 'static>),

    /// A database lock (the per-owner lock, the migration lock or, on
    /// SQLite, the turn to write) was not granted in time: another process
    /// or request holds it. The operation changed nothing and may be retried.
    #[error(
        "timed out after {0:?} waiting for a database lock; another process or request holds it"
    )]
    LockTimeout(Duration),

    /// The database did not answer within the store's operation timeout
    /// ([`DbSessionStoreBuilder::operation_timeout`](crate::DbSessionStoreBuilder::operation_timeout)):
    /// it is unreachable (for example a network partition that keeps the
    /// connection open) or overloaded. The outcome of the operation is
    /// unknown (a write may still commit), and its blocking thread stays busy
    /// until the database driver gives up.
    #[error(
        "the database did not answer within {0:?} (the store's operation timeout); the operation \
         may still complete in the background"
    )]
    Timeout(Duration),

    /// The store was used outside a tokio runtime; its blocking database work
    /// runs on tokio's blocking thread pool (and its operation timeout on
    /// tokio's timer, so the runtime needs timers enabled, as
    /// `#[tokio::main]` and `Builder::enable_all` do).
    #[error(
        "session-db must be used inside a tokio runtime (it runs database calls with spawn_blocking)"
    )]
    NoRuntime,

    /// The blocking task running a database call panicked or was cancelled.
    #[error("a blocking database task failed: {0}")]
    TaskFailed(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Query(e)
    }
}

impl From<DbError> for session_core::Error {
    fn from(e: DbError) -> Self {
        session_core::Error::Backend(Box::new(e))
    }
}

/// The error of one store operation while it runs: either an answer for the
/// caller (`Conflict`, `NotFound`, …) or a database failure.
#[derive(Debug)]
pub(crate) enum OpError {
    Session(session_core::Error),
    Db(DbError),
}

impl From<session_core::Error> for OpError {
    fn from(e: session_core::Error) -> Self {
        Self::Session(e)
    }
}

impl From<DbError> for OpError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

impl From<diesel::result::Error> for OpError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<OpError> for session_core::Error {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Session(e) => e,
            OpError::Db(e) => e.into(),
        }
    }
}
