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
//!     .config(
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
//! fred is used with `default-features = false` and only `i-keys`,
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
//! A Cluster node needs a Cluster URL: `build` refuses a `redis://` (or
//! Sentinel) URL that reaches one, with
//! [`Error::InvalidInput`](session_core::Error::InvalidInput), as it
//! does a malformed URL, because fred follows the Cluster's `MOVED`
//! redirects only in Cluster mode.
//!
//! # Key layout
//!
//! Keys hold only the storage key (the SHA-256 of the session ID, in hex)
//! under the configured prefix; a dump of Redis yields no usable cookie.
//!
//! ```text
//! <prefix>{<bucket>}:r:<keyhex>     string: the session record (below)
//! <prefix>{<bucket>}:idx            sorted set: keyhex -> expires_ms
//! <prefix>{<bucket>}:w:<token>      string: receipt of one applied write (15 s)
//! <prefix>{o:<ownerhash>}:owner     sorted set: keyhex -> expires_ms (at least)
//! <prefix>{o:<ownerhash>}:lock      string: per-owner login lock
//! ```
//!
//! A session's *bucket* is its storage key's first two bytes modulo the
//! bucket count ([`RedisSessionStoreBuilder::buckets`], default 64). The
//! braces are Redis Cluster hash tags: a session's record, its bucket's
//! expiry index and the receipts of writes to it always share a hash slot,
//! so every write to a record is one script on one node. Rotating a stored
//! session draws new IDs until one falls in the old ID's bucket, so the old
//! and the new record share the slot too and rotation is one script, never
//! a cross-slot `RENAME`. That takes about as many draws as there are
//! buckets, each a base64 encoding and a SHA-256 (a fraction of a
//! microsecond together in an optimised build, on the calling task: about
//! 30 µs per rotation at the default 64 buckets, 0.3 ms at the maximum of
//! 1024); a session that was never stored needs no such draw. An owner's
//! index and lock share a slot of their own, named by a hash of the owner,
//! so owner names (often e-mail addresses) never appear in key names.
//!
//! Records are named `:r:`. The format before this one kept each session
//! in a hash named `:s:`; after an upgrade those sessions are not found
//! (their users sign in again) and their hashes expire by themselves.
//!
//! ## The record
//!
//! A session is one string, so a [`load`](session_core::SessionStore::load)
//! is one `GET`: a fixed-width text header, the owner, then the data as
//! `session-core`'s codec encodes it.
//!
//! ```text
//! offset  bytes  field
//!      0      1  record format: '1'
//!      1     20  version: decimal, zero-padded
//!     21     20  last activity, Unix ms: sign and 19 digits, zero-padded
//!     41     20  expiry (idle deadline capped by the absolute one): the same
//!     61     20  creation: the same
//!     81     20  absolute deadline: the same, or 20 spaces for none
//!    101      4  owner length in bytes: decimal (0000: no owner)
//!    105      n  owner
//!  105+n    ...  data
//! ```
//!
//! The scripts read the header (and owner) with `GETRANGE`, never the
//! data, and a touch rewrites the activity and expiry fields in place with
//! one `SETRANGE`.
//!
//! A record is *corrupt* if it is not a record of this format: a field
//! that is not exactly what the store writes (a time must be a sign and 19
//! digits within the range of an `i64`, the owner length 4 digits, at most
//! 1024 and within the value; `1e5`, `0x1f` or ` inf` are no numbers), an
//! owner that is not UTF-8, or a key of another type under a record's name.
//! The scripts check the header as strictly as the store's own decoder. A
//! corrupt record is a [`Codec`](session_core::Error::Codec) error for that
//! session only, from `load`, `save`, `touch` and `cycle_id` alike (they
//! write nothing); listings skip it; `destroy` and revocation delete it,
//! and so does `purge_expired` once its index entry is due.
//!
//! Every record expires natively (`SET … PXAT`, `PEXPIREAT`) at its
//! deadline: the idle deadline capped by the absolute one. Redis is never
//! given a deadline after the end of the year 9999 (an idle timeout of
//! `Duration::MAX` saturates near `i64::MAX`, which a Cluster moving the
//! key would overflow): a later deadline stays exact in the record, and
//! the key expires at the end of 9999. Each index key
//! expires no earlier than its latest entry (writes only ever raise its
//! expiry; a purge sets it to its latest entry's), and receipts after 15
//! seconds. An index entry outlives its record until something removes
//! it: every write that adds an entry to a bucket index (a first save, a
//! rotation) also removes up to two entries whose deadline has passed and
//! whose record Redis has already expired, so while traffic keeps an index
//! alive it holds about its live sessions, not every session it ever
//! held. Nothing is left behind without a purge.
//! [`len`](session_core::SessionStore::len) is one `ZCOUNT` per bucket,
//! all sent at once: its cost depends on the bucket count, not on how many keys
//! the database holds.
//! [`purge_expired`](session_core::SessionStore::purge_expired) walks each
//! bucket's index from its earliest deadline, so it costs what it removes;
//! it counts the records it deleted (records that Redis already expired by
//! itself are not counted again).
//!
//! # Scripts
//!
//! Writes are Lua scripts run with `EVALSHA`. They are loaded once when the
//! store is built (on every primary of a Cluster); if a server answers
//! `NOSCRIPT` (after a restart, `SCRIPT FLUSH` or fail-over) the store sends
//! the source with `EVAL`, which runs it and caches it again. Each script
//! receives the store clock's `now` (from
//! [`SessionConfig::now_ms`](session_core::SessionConfig::now_ms), so an
//! injected clock rules) and treats a record as absent if there is none
//! or its expiry is not after `now`; a corrupt record is answered with
//! `Codec` (nothing written) by the scripts that write it:
//!
//! * **save**: insert-only for a new session (a live record means
//!   `Conflict`; an expired one is replaced), otherwise compare-and-set on
//!   the version (`Conflict`) of a live record (`NotFound`); writes the
//!   whole record;
//! * **touch**: rewrites the activity and expiry fields of a live record
//!   in place, version and data untouched, and only forward: a touch whose
//!   activity time is not after the stored one changes nothing;
//! * **rotate**: checks the old record as save does, writes the new one and
//!   deletes the old, in one step (and, as save and destroy, reports the
//!   owner binding it ended, for the owner's index);
//! * **destroy**: deletes the record and its index entry, whatever the
//!   record holds, a key of another type included (a corrupt record can
//!   always be ended; revocation ends a corrupt record the owner's index
//!   names, since its owner cannot be read), and answers with the owner the
//!   record was bound to and its deadline, so the store then drops the
//!   entry from that owner's index (a second script, in the owner's slot).
//!
//! Redis runs a script without interleaving other commands, but does not
//! roll back one that fails part-way. So every script reads and checks
//! everything before its first write (a refused write changes nothing), and
//! nothing after its first write depends on what a record holds: a garbled
//! field makes a record corrupt, never makes a script fail (the scripts
//! read records with `redis.pcall`, parse every field strictly, and clamp
//! every deadline they hand to Redis). Redis refuses a script for lack of
//! memory only before its first write; an *index* key of the wrong type
//! planted under the prefix by something else is the one thing that could
//! still stop a script midway.
//!
//! # Re-sent commands
//!
//! When a connection breaks after a command was sent and before its reply
//! came, fred sends the command again on a new connection, so Redis may run
//! a write twice, possibly with another process's write in between. Each
//! save, rotation, destroy and purge therefore carries a fresh token and,
//! when it changes something, stores its reply under a *receipt* key named
//! by the token, in the record's slot. A re-sent script finds its receipt
//! and answers as the first run did: a save already applied is reported as
//! applied (not as a conflict with itself, which would make
//! [`update`](session_core::SessionStoreExt::update) apply its change
//! twice), and a re-sent destroy or purge still reports what it removed. A
//! script that changed nothing leaves no receipt: running it again is as
//! good as once. A touch needs no receipt: it only moves a session's
//! activity forward, so a re-sent (or late) touch cannot undo a later
//! save's deadline; if the session ended in between, the re-sent touch
//! reports `NotFound`, which is true by then.
//!
//! Saves and rotations move deadlines only forward too: one whose clock
//! reading came before a touch of the same session reached Redis (a touch
//! bumps no version, so the compare-and-set passes) keeps the touch's later
//! activity time and expiry, in the record, its native expiry and its index
//! entries, and the caller's [`Session`](session_core::Session) holds them
//! after the call.
//!
//! Receipts expire after 15 seconds (or four command timeouts, if longer).
//! fred re-sends a command only until its timeout (the command timeout, set
//! as fred's own per-command timeout, so a command that timed out is never
//! sent later), so 15 s, seven default timeouts, leaves a wide margin. The
//! price is one small key, some 130 bytes of Redis memory, per applied
//! write for those seconds: about 2 MB at 1000 writes per second. Tokens are unique, not secret: 64
//! random bits drawn once per process and a counter. The alternative,
//! forbidding fred to re-send writes, would also stop it from following a
//! Cluster's `MOVED` redirections, so every write during a resharding or
//! fail-over would fail.
//!
//! # Owners
//!
//! An owner's index lives in the owner's slot, not the session's, so binding
//! a session to an owner takes two steps that no single script can join.
//! They keep one invariant: **while a record is bound to an owner, the
//! owner's index holds its key with a score no earlier than the record's
//! deadline.**
//!
//! * Every write that leaves a record bound to an owner (save, touch,
//!   rotation) first raises the key's score in the owner's index to the new
//!   deadline, and only then writes the record.
//! * An entry is removed once its score has passed, when any record it
//!   stood for has expired, or as soon as a write of the store ends the
//!   binding it stands for: `destroy`, revocation and ending the oldest
//!   sessions over a limit (which delete the record), a rotation (which
//!   moves it to a new key), and a save that binds the record to another
//!   owner or to none. Each such script reports the owner and deadline of
//!   the binding it ended, and the store then drops the entry (a second
//!   script, in the owner's slot), only if its score is still no later
//!   than that deadline, so a login that claimed the key anew meanwhile
//!   keeps its entry. So once every session of an owner has been ended,
//!   has moved away or has expired, nothing is left under the owner's
//!   name. A save or touch that claimed an entry and then found its
//!   session gone (`NotFound`: revoked or expired while a request held it)
//!   drops that entry the same way. Entries of writes refused otherwise
//!   (`Conflict`), or whose cleanup failed (it is best effort, after the
//!   write), stay until their deadline passes: removing them earlier could remove the entry of a login that
//!   has claimed it and not yet written its record. They cost a little
//!   space and a check on each read.
//! * The index key expires with its latest entry: every write to it sets
//!   its expiry to its highest score, and Redis deletes it when it is
//!   empty. It never outlives the sessions it names.
//! * Every read of an index (listing, counting, revoking) checks each entry
//!   against the record's `owner` field, so such entries are never
//!   reported.
//!
//! So [`destroy_owner_sessions`](session_core::SessionStore::destroy_owner_sessions)
//! ("sign out everywhere") ends every session bound to the owner by a write
//! that completed before the call, including one whose caller saw an error
//! but which Redis applied anyway; it deletes each only if it still names
//! the owner, and a request still holding one cannot save it back (its
//! compare-and-set finds nothing: `NotFound`). One kind of write moves a
//! bound session: a rotation, to a key it claims in the index only then. A
//! revocation that read the index a moment earlier would not know the new
//! key, and would find the old one gone; so revocation and the rotation of
//! a session already bound to the owner take the owner's lock (below), and
//! a session rotating while its owner is revoked is ended under one ID or
//! the other (or its rotation finds it ended: `NotFound`). A login whose
//! write completes while the revocation runs may survive it, as a login
//! just after it would. Beyond the lock's lease (below), this needs no
//! timing assumption but application servers whose clocks agree (an entry
//! is dropped when its score passes by the dropping server's clock).
//!
//! A per-owner limit
//! ([`SessionConfig::with_max_sessions_per_owner`](session_core::SessionConfig::with_max_sessions_per_owner))
//! needs the count and the new binding to happen together, so logins under
//! a limit are serialised per owner by a lock key in the owner's slot (`SET
//! NX PX` with a random token, released by a script that deletes it only
//! for that token; a lock command that failed on the client side is
//! released too, in case it ran). Under the lock a login checks its own
//! record first (a stale or ended session is refused as `Conflict` or
//! `NotFound`, not as one session too many), then with `RefuseNew` counts
//! the owner's live sessions before writing, and with `EndOldest` writes
//! first and only then ends the oldest sessions over the limit, so a login
//! that is refused ends nothing. What a login or rotation does under the
//! lock runs on a task of its own, so a request dropped meanwhile (a
//! timeout around the call, a client gone) still ends the oldest sessions
//! and releases the lock, never leaving the owner over the limit.
//! Rotations of sessions already bound to
//! the owner and revocations of all the owner's sessions take the same
//! lock, so no revocation misses a session that is moving to a new ID.
//! Logins without a limit, and saves and touches (which keep the session's
//! key), take no lock.
//!
//! [`owner_sessions`](session_core::SessionStore::owner_sessions) and
//! [`count_owner_sessions`](session_core::SessionStore::count_owner_sessions)
//! see each live session of the owner exactly once, even one rotating
//! meanwhile, without waiting for the lock: they read the owner's index,
//! then the records of each bucket at one instant (one read-only script per
//! bucket; a rotation moves a record within its bucket in one script, so
//! it is seen done or not done, never both or neither), then the index
//! again. A session that moved after the first index read to a key that
//! read did not name was claimed under that key after it, so the second
//! read names a key the first did not; the read is then repeated, and
//! after two such rounds done under the lock. A listing made while a login
//! under `EndOldest` runs may see its new session before the oldest one
//! has ended, as a `load` of the oldest would still find it.
//!
//! The lock is a lease
//! ([`owner_lock_ttl`](RedisSessionStoreBuilder::owner_lock_ttl)). A
//! holder sends its writes only if at least two command timeouts of the
//! lease are left, and fred never sends a command after its timeout, so
//! the writes reach Redis within the lease unless the network holds them
//! longer than that. If it does, or a Redis fail-over loses the lock key,
//! holders of the same owner's lock may overlap: the limit can then be
//! exceeded by overlapping logins, `EndOldest` end one session more than
//! needed, or a session rotated at that moment survive a revocation under
//! its new ID. A login, rotation, revocation (or a listing that found
//! sessions moving twice) that cannot get the lock
//! within [`owner_lock_wait`](RedisSessionStoreBuilder::owner_lock_wait)
//! fails with `Error::Backend` and may be retried; only timeouts, broken
//! connections and replies that ask to retry (`LOADING`, `BUSY`, …) are
//! retried within the wait, so an error Redis would only repeat (a key of
//! another type under the lock's name) fails at once. A save or touch of an
//! owned session refused as `Conflict` may have raised the score of its
//! (existing) entry, which then lasts until that later deadline.
//!
//! # Failures and time limits
//!
//! Connection loss is handled by fred's reconnect policy
//! ([`RedisSessionStoreBuilder::reconnect_policy`]); the same store works
//! again once Redis is back. While Redis is away or slow, each command
//! fails with [`Error::Backend`](session_core::Error::Backend) after the
//! [command timeout](RedisSessionStoreBuilder::command_timeout). A read is
//! one command, a script call up to two (`EVALSHA`, then `EVAL` when the
//! server lost the script), and an operation runs a few of these one after
//! another, so it fails within a small multiple of the timeout. Every
//! command, reads included, carries the timeout as fred's own per-command
//! timeout, so a command that timed out is dropped from fred's queue, never
//! sent after a reconnection:
//!
//! | operation | command timeouts, at most |
//! |---|---|
//! | `load`, `len` | 1 |
//! | `owner_sessions`, `count_owner_sessions` | 4 (15, plus up to `owner_lock_wait`, if sessions of the owner move meanwhile) |
//! | `save`, `touch`, `destroy`, `cycle_id` of an anonymous session | 2 |
//! | `destroy` of an owned session | 4 |
//! | `destroy_owner_session` | 5 |
//! | `save`, `touch` keeping the session's owner | 4 (6 if the session is gone) |
//! | a login: `cycle_id` or `save` binding a session to a new owner | 5 (9 for a `save` of a stored session; 2 more if it was bound to another owner) |
//! | `save` clearing the session's owner | 4 |
//! | `cycle_id` keeping the session's owner | 12, plus up to [`owner_lock_wait`](RedisSessionStoreBuilder::owner_lock_wait) for the lock |
//! | `destroy_owner_sessions` | 9, plus up to `owner_lock_wait` |
//! | a login under a per-owner limit | 16 (20), plus up to `owner_lock_wait` |
//!
//! Where a lock is taken, its last attempt (one script call: 2) is counted;
//! earlier attempts fall within `owner_lock_wait`. (`touch` takes four
//! more for each time it finds the session rebound to
//! another owner meanwhile.) `purge_expired`, `destroy_owner_sessions` and
//! ending the oldest sessions under `EndOldest` work on all buckets or
//! sessions in parallel, 256 expired entries per bucket and round trip.
//!
//! While a Cluster moves a slot to another node, its two nodes refuse a
//! script naming several keys of the slot with `TRYAGAIN` until the move
//! ends (a write's receipt key never exists beforehand, so every write to
//! the slot's sessions meets it), and fred cannot follow an `ASK`
//! redirection (it sends the command back to the node that said `ASK`; the
//! store limits each command's redirections so that this fails the one
//! command, not its connection). Nothing runs in either case, so the store
//! sends such a command again, with a back-off from 2 ms to 100 ms, until
//! one command timeout has passed since its first attempt; the table does
//! not count that time. Writes to the sessions of a slot that takes longer
//! than that to move fail with `Error::Backend` meanwhile; the other
//! sessions are not affected. fred follows `MOVED` (a move that has ended)
//! by itself.
//!
//! A write that failed with `Error::Backend` may or may not have been
//! applied (Redis may have run it and the reply been lost): reload before
//! acting on it. [`touch`](session_core::SessionStore::touch) follows a
//! session that is rebound to other owners while it runs; if that happens
//! on each of its eight attempts it fails with `Error::Backend` rather
//! than `Conflict`, which `touch` does not return.
//!
//! # Operating notes
//!
//! * Redis 7.0 or newer, or Valkey (tested with Redis 7.0): the scripts use
//!   `SET … PXAT` and `PEXPIREAT … GT`, and the builder refuses an older
//!   server (it asks `HELLO`, which every ACL user may run, or else `INFO`;
//!   a server that answers neither is given the benefit of the doubt, with
//!   a warning). The scripting `cjson` library (in every Redis build) encodes
//!   purge receipts. Use `maxmemory-policy noeviction`: an evicted record
//!   is a lost session, an evicted receipt a write that may be applied
//!   twice.
//! * The clocks of the application servers and of Redis should agree (NTP):
//!   the store decides liveness with its own clock, Redis removes keys with
//!   its own.
//! * The bucket count and the key prefix are part of the data layout:
//!   changing either for a running deployment orphans existing sessions
//!   (they expire by themselves).
//! * Tracing: every operation runs in a `session_redis` debug span with the
//!   operation, the key prefix and the first 8 hex digits of the storage key
//!   (never the session ID).
//! * Cost: a load is one `GET` sent as fred's own command, so fred
//!   pipelines it with the other tasks' commands on the connection; a save
//!   or touch is one `EVALSHA`, which fred writes to the socket on its own
//!   (it flushes every script call). Under load a save therefore costs
//!   Redis several times what a plain `SET` does: about six commands run
//!   inside the script (receipt, header read, write, index entry, index
//!   expiry, receipt), plus a system call of its own on each side.
#![deny(missing_docs)]

mod builder;
mod keys;
mod record;
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
