//! Server-side sessions in Redis: single node, Sentinel or Cluster.
//!
//! [`RedisSessionStore`] implements
//! [`SessionStore`](session_core::SessionStore) on a pool of
//! [fred](https://docs.rs/fred) clients. Sessions are shared by every
//! process that talks to the same Redis, expire natively in Redis, and keep
//! every promise of the `session-core` contract: hashed keys, insert-only
//! first saves, compare-and-set updates, deletion that wins over requests in
//! flight, two clocks, atomic rotation, per-owner listing, revocation and
//! limits.
//!
//! # Quick start
//!
//! ```no_run
//! // `no_run`: this needs a Redis server at 127.0.0.1:6379.
//! use std::time::Duration;
//! use session_core::{SessionConfig, SessionStore, SessionStoreExt};
//! use session_redis::RedisSessionStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let store = RedisSessionStore::builder("redis://127.0.0.1:6379")
//!     .session_config(
//!         SessionConfig::new(Duration::from_secs(30 * 60)) // idle timeout
//!             .with_absolute_timeout(Duration::from_secs(12 * 3600)),
//!     )
//!     .key_prefix("myapp:session:")
//!     .build()
//!     .await?;
//!
//! // Login: store the session under a fresh ID, bound to its user.
//! let mut session = store.create().await?;
//! session.set("user_id", "42");
//! session.set_owner("user:42");
//! store.cycle_id(&mut session).await?;
//! let cookie_value = session.id().as_str().to_owned();
//!
//! // A later request.
//! let id = cookie_value.parse()?;
//! store.update(&id, |s| s.set("theme", "dark")).await?;
//! assert_eq!(store.load(&id).await?.expect("live").get("theme"), Some("dark"));
//!
//! // "Sign out everywhere".
//! assert_eq!(store.destroy_owner_sessions("user:42", None).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! * `tls`: `rediss://` (and `rediss-cluster://`, `rediss-sentinel://`)
//!   URLs, through fred's `enable-rustls-ring` (rustls with the *ring*
//!   provider and the platform's root certificates). For custom
//!   certificates build a fred [`Config`](fred::prelude::Config) with its
//!   `tls` field set and use [`RedisSessionStore::builder_from_config`].
//!
//! fred is used with `default-features = false` and only `i-hashes`,
//! `i-scripts`, `i-sorted-sets` and `sha-1` (script hashes).
//! Sentinel needs no extra feature: fred resolves the primary through the
//! sentinels for a `redis-sentinel://` URL (its `sentinel-client` feature is
//! for talking to sentinels directly, which this crate does not do). fred is
//! re-exported as [`session_redis::fred`](fred) so you can name its types
//! at the same version.
//!
//! # Deployments
//!
//! ```no_run
//! # use session_redis::RedisSessionStore;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // One server (database 0), or TLS with the `tls` feature:
//! let single = RedisSessionStore::builder("redis://:password@127.0.0.1:6379/0").build().await?;
//! // let tls = RedisSessionStore::builder("rediss://redis.example.com:6380").build().await?;
//!
//! // A primary found through Sentinel (26379 and the `node`s are sentinels):
//! let sentinel = RedisSessionStore::builder(
//!     "redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster&node=127.0.0.1:26380",
//! )
//! .build()
//! .await?;
//!
//! // A Cluster, from any of its nodes (the others are discovered):
//! let cluster = RedisSessionStore::builder(
//!     "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
//! )
//! .pool_size(2)
//! .build()
//! .await?;
//!
//! // Around a pool the application already has:
//! use session_redis::fred::prelude::*;
//! let pool = Builder::from_config(Config::from_url("redis://127.0.0.1:6379")?).build_pool(4)?;
//! pool.init().await?;
//! let shared = RedisSessionStore::builder_from_pool(pool).key_prefix("sess:").build().await?;
//! # let _ = (single, sentinel, cluster, shared); Ok(()) }
//! ```
//!
//! Connection loss is handled by fred's reconnect policy
//! ([`RedisSessionStoreBuilder::reconnect_policy`]): while Redis is away
//! every operation fails with [`Error::Backend`](session_core::Error::Backend)
//! within the [command timeout](RedisSessionStoreBuilder::command_timeout),
//! and the same store works again once Redis is back.
//!
//! # Key layout
//!
//! Keys hold only the storage key (the SHA-256 of the session ID, in hex)
//! under the configured prefix; a dump of Redis yields no usable cookie.
//!
//! ```text
//! <prefix>{<bucket>}:s:<keyhex>     hash: version, created, last_active, expires,
//!                                   absolute, owner, data, token
//! <prefix>{<bucket>}:idx            sorted set: keyhex -> expires_ms
//! <prefix>{o:<ownerhash>}:owner     sorted set: keyhex -> expires_ms (at least)
//! <prefix>{o:<ownerhash>}:lock      string: per-owner login lock
//! ```
//!
//! A session's *bucket* is its storage key's first two bytes modulo the
//! bucket count ([`RedisSessionStoreBuilder::buckets`], default 64). The
//! braces are Redis Cluster hash tags: a session's record and its bucket's
//! expiry index always share a hash slot, so every write is one atomic
//! script on one node. Rotation draws new IDs until one falls in the old
//! ID's bucket, so the old and the new record share the slot too and
//! rotation is one script, never a cross-slot `RENAME`. An owner's index and
//! lock share a slot of their own, named by a hash of the owner, so owner
//! names (often e-mail addresses) never appear in key names.
//!
//! Every record expires natively (`PEXPIREAT`) at its deadline: the idle
//! deadline capped by the absolute one. Each index key expires when its
//! latest entry does. Nothing is left behind without a purge.
//! [`len`](session_core::SessionStore::len) is one `ZCOUNT` per bucket, pipelined: its
//! cost depends on the bucket count, not on how many keys the database
//! holds. [`purge_expired`](session_core::SessionStore::purge_expired) walks each bucket's
//! index from its earliest deadline, so it costs what it removes; it counts
//! the records it deleted (records that Redis already expired by itself are
//! not counted again).
//!
//! # Scripts
//!
//! Writes are Lua scripts run with `EVALSHA`. They are loaded once when the
//! store is built (on every primary of a Cluster); if a server answers
//! `NOSCRIPT` (after a restart, `SCRIPT FLUSH` or fail-over) the store sends
//! the source with `EVAL`, which runs it and caches it again. Each script
//! receives the store clock's `now` (from
//! [`SessionConfig::now_ms`](session_core::SessionConfig::now_ms), so an
//! injected clock rules) and treats a record whose `expires <= now` as
//! absent:
//!
//! * **save**: insert-only for a new session (a live record means
//!   `Conflict`; an expired one is replaced), otherwise compare-and-set on
//!   the version (`Conflict`) of a live record (`NotFound`);
//! * **touch**: slides the deadline of a live record, version untouched;
//! * **rotate**: checks the old record as save does, writes the new one and
//!   deletes the old, in one step;
//! * **destroy**: deletes the record and its index entry.
//!
//! Every write carries a random token, so a command that fred re-sends after
//! a connection broke mid-flight is recognised as already applied instead of
//! failing as a conflict with itself.
//!
//! # Owners in a Cluster
//!
//! An owner's index lives in the owner's slot, not the session's, so binding
//! a session to an owner takes two steps that no single script can join.
//! They are ordered so that revocation can never miss a bound session:
//!
//! * the owner's index gains the session (with a score of at least the
//!   session's new deadline) **before** the record names the owner, and
//!   loses it only **after** the record stopped naming the owner;
//! * every read of the index (listing, counting, revoking) checks each entry
//!   against the record's `owner` field, so an entry left behind by a failed
//!   or interrupted write is never reported, and entries whose score passed
//!   are dropped (their record has expired);
//! * revocation deletes a record only if it still names the owner, so a
//!   request in flight cannot save it back (its compare-and-set finds
//!   nothing: `NotFound`).
//!
//! New bindings (a login's save or rotation), removals of entries whose
//! record no longer names the owner, and revocations of all of an owner's
//! sessions are serialised per owner by a lock key in the owner's slot
//! (`SET NX PX` with a random token, released by a script that deletes it
//! only for that token). That is also what makes the per-owner limit
//! ([`SessionConfig::with_max_sessions_per_owner`](session_core::SessionConfig::with_max_sessions_per_owner))
//! hold against concurrent logins of the same owner: the count and the
//! binding happen under the lock. Saves and touches that keep an existing
//! binding take no lock.
//!
//! Limits of the approach: the lock is a lease. If a holder stalls longer
//! than [`owner_lock_ttl`](RedisSessionStoreBuilder::owner_lock_ttl), another
//! login may proceed, and the limit can be exceeded by the sessions bound
//! meanwhile (never by more than the stalled logins). A Redis fail-over that
//! loses a lock key has the same effect. A login that cannot get the lock
//! within [`owner_lock_wait`](RedisSessionStoreBuilder::owner_lock_wait)
//! fails with `Error::Backend` and may be retried. Touches and saves of an
//! owned session cost one more round trip (to the owner's slot) than those
//! of an anonymous one.
//!
//! # Operating notes
//!
//! * Redis 5 or newer (tested with 7.0). Use `maxmemory-policy noeviction`:
//!   an evicted record is a lost session.
//! * The clocks of the application servers and of Redis should agree (NTP):
//!   the store decides liveness with its own clock, Redis removes keys with
//!   its own.
//! * The bucket count and the key prefix are part of the data layout:
//!   changing either for a running deployment orphans existing sessions
//!   (they expire by themselves).
//! * Tracing: every operation runs in a `session_redis` debug span with the
//!   operation, the key prefix and the first 8 hex digits of the storage key
//!   (never the session ID).
#![deny(missing_docs)]

mod builder;
mod keys;
mod scripts;
mod store;

pub use builder::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_OWNER_LOCK_TTL, DEFAULT_POOL_SIZE,
    RedisSessionStoreBuilder,
};
pub use store::RedisSessionStore;

/// The fred client crate this store is built on, re-exported so
/// applications can name its `Pool`, `Config` and `ReconnectPolicy` at the
/// version this crate uses.
pub use fred;
