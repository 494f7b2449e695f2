//! The one error type every store returns.

use std::error::Error as StdError;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a session operation.
///
/// Each variant says what happened and what the caller can do about it. The
/// enum is `#[non_exhaustive]`: match the variants you handle and treat the
/// rest as a server error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string is not a session ID this library accepts. For a cookie this
    /// means "no session"; for `create_with_id` it is a caller bug.
    #[error("invalid session ID: {0}")]
    InvalidId(String),

    /// The request cannot succeed as made, however often it is retried (for
    /// example an owner key that is empty or longer than
    /// [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN)). Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The session was changed by someone else since it was loaded, so this
    /// save was refused rather than silently overwriting their change. Reload
    /// and apply the change again, or use
    /// [`SessionStoreExt::update`](crate::SessionStoreExt::update), which does
    /// exactly that.
    #[error(
        "session was modified concurrently since it was loaded; reload it and apply the change again"
    )]
    Conflict,

    /// The session does not exist (any more): it was destroyed, rotated away
    /// or expired. It is not recreated; start a new session if appropriate.
    #[error("session not found: it was destroyed, rotated or has expired")]
    NotFound,

    /// The store holds as many sessions as it was configured to allow.
    #[error("session store is full (limit: {limit}); try again later or raise the limit")]
    Capacity {
        /// The configured maximum number of sessions.
        limit: u64,
    },

    /// The owner already has as many sessions as the per-owner limit allows,
    /// and the policy is to refuse new ones.
    #[error(
        "this account has reached its limit of active sessions ({limit}); sign out of one first"
    )]
    TooManySessions {
        /// The configured maximum number of sessions per owner.
        limit: u32,
    },

    /// The session data is larger than the configured limit; nothing was
    /// written.
    #[error(
        "session data is {size} bytes encoded, over the limit of {limit} bytes; store less in the session"
    )]
    TooLarge {
        /// Encoded size of the data that was refused.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A value could not be converted to or from the type asked for (typed
    /// access through serde). The session itself is intact.
    #[error("session value {key:?} could not be (de)serialized: {source}")]
    Value {
        /// The key whose value failed.
        key: String,
        /// What serde reported (from a typed read, with quoted session
        /// strings and numbers replaced by `<redacted>`).
        #[source]
        source: serde_json::Error,
    },

    /// A stored record could not be decoded: it is corrupt or was written by
    /// an incompatible version. Only this session is affected.
    #[error("stored session record is unreadable: {0}")]
    Codec(String),

    /// The storage backend failed (connection lost, timeout, server error).
    /// The operation may be retried.
    #[error("session storage failed: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync + 'static>),
}

impl Error {
    /// Wrap a backend's own error.
    pub fn backend(err: impl StdError + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }

    /// A backend error from a message alone.
    pub fn backend_msg(msg: impl Into<String>) -> Self {
        Self::Backend(msg.into().into())
    }

    /// Whether retrying the same operation later may succeed (a conflict, a
    /// backend failure, or a full store, which makes room as sessions
    /// expire), as opposed to an answer that will not change.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Conflict | Self::Backend(_) | Self::Capacity { .. }
        )
    }
}
