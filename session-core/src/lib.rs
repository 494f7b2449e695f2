//! Server-side sessions for Rust web applications: the core.
//!
//! This crate holds what every storage backend shares: the [`SessionStore`]
//! trait, [`Session`], [`SessionId`], [`SessionConfig`], the [`Error`] type,
//! the record codec, and a conformance suite (feature `testing`) that every
//! backend runs. Pick a store crate for the storage itself:
//! `session-memory`, `session-db` (SQLite, PostgreSQL, MySQL) or
//! `session-redis`, and `session-cookie` for the cookie.
//!
//! # Quick start
//!
//! ```
//! use session_core::{SessionStore, SessionStoreExt, Error};
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let store = MemoryStore::new(3600); // idle timeout: one hour
//!
//! // Login: a new session, rotated to a fresh ID as it gains privilege.
//! let mut session = store.create().await?;
//! session.set("user_id", "42");
//! session.set_owner("user:42");
//! store.cycle_id(&mut session).await?; // stored under a fresh ID
//! let cookie_value = session.id().as_str().to_owned();
//!
//! // A later request: the ID comes back in the cookie.
//! let id = cookie_value.parse()?;
//! let profile = store.load(&id).await?.expect("logged in");
//! assert_eq!(profile.get("user_id"), Some("42"));
//!
//! // Concurrent-safe read-modify-write.
//! store.update(&id, |s| s.set("theme", "dark")).await?;
//!
//! // Logout.
//! assert!(store.destroy(&id).await?);
//! assert!(store.load(&id).await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # The promises
//!
//! 1. **Unguessable IDs**: 256 bits from the OS CSPRNG; caller-chosen IDs must
//!    be at least [`MIN_ID_LEN`] (22) base64url characters, room for 128
//!    bits, whose randomness is the caller's job ([`SessionId`]).
//! 2. **Hashed at rest**: stores key by [`StorageKey`], a domain-separated
//!    SHA-256 of the ID, never the ID itself.
//! 3. **No lost updates**: saves compare-and-set on a version
//!    ([`Error::Conflict`]); [`SessionStoreExt::update`] retries.
//! 4. **Deletion wins**: first saves are insert-only, later ones update-only,
//!    so a destroyed or expired session is never resurrected
//!    ([`Error::NotFound`]).
//! 5. **Two clocks**: a sliding idle timeout and an optional absolute
//!    lifetime ([`SessionConfig`]), enforced on every read.
//! 6. **Rotation**: [`SessionStore::cycle_id`] keeps the data, kills the old
//!    ID, atomically.
//! 7. **Clear errors**: bad input or storage failures are typed [`Error`]s,
//!    never panics, and never affect other sessions.
//!
//! # Feature flags
//!
//! * `testing`: the conformance suite, `testing::run_conformance`, for
//!   store implementors (pulls in tokio).
#![deny(missing_docs)]

mod config;
mod error;
mod finite;
mod id;
mod session;
mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    Clock, DEFAULT_MAX_DATA_SIZE, ManualClock, OwnerLimit, OwnerLimitPolicy, SessionConfig,
    SystemClock, duration_ms, from_ms, to_ms,
};
pub use error::{Error, Result};
pub use id::{MAX_ID_LEN, MIN_ID_LEN, SessionHandle, SessionId, StorageKey};
pub use session::{
    MAX_OWNER_LEN, RecordMeta, Rotation, Session, SessionData, Touch, Write, is_live,
    is_valid_owner, redact_value_error, value_to_json,
};
pub use store::{SessionInfo, SessionStore, SessionStoreExt, UPDATE_ATTEMPTS};

/// Re-exported so stores and applications name the same `async_trait`.
pub use async_trait::async_trait;
