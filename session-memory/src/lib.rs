//! In-process session storage: fast, zero-configuration, lost on restart.
//!
//! [`MemoryStore`] keeps sessions in a sharded map inside the process. It is
//! the store for a single instance, for development and for tests. Sessions do
//! not survive a restart and are not shared between processes: for that use
//! `session-db` or `session-redis`, which offer the same
//! [`SessionStore`] API.
//!
//! ```
//! use session_core::{SessionStore, SessionStoreExt};
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_core::Result<()> {
//! let store = MemoryStore::new(3600); // one hour idle timeout
//!
//! let mut session = store.create().await?;
//! session.set("user_id", "42");
//! store.save(&mut session).await?;
//!
//! let loaded = store.load(session.id()).await?.expect("stored");
//! assert_eq!(loaded.get("user_id"), Some("42"));
//! assert_eq!(store.len().await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! * **Sharded.** Sessions are spread over independently locked shards by
//!   their hashed key, and no lock is ever held across an `.await`, so many
//!   tasks on many cores rarely wait for each other.
//! * **Expiry index.** Each shard keeps its sessions ordered by expiry, so
//!   [`purge_expired`](SessionStore::purge_expired) costs what it removes, not
//!   a scan of every session, and [`len`](SessionStore::len) excludes expired
//!   sessions at the cost of counting only those. A purge takes each shard's
//!   lock for at most 128 sessions at a time and frees them outside it, so
//!   loads keep their latency while a large purge runs. A shard the purge
//!   leaves holding a quarter or less of its peak gives the memory back, so
//!   a flood of visitors that has expired does not keep its memory forever:
//!   that compaction holds the shard's lock once more, for time in
//!   proportion to the shard's peak size (a 64th of the store's, with the
//!   default shards), and is paid again only after the shard has grown
//!   fourfold and emptied.
//! * **Optional cap.** [`MemoryStoreBuilder::max_sessions`] bounds the number
//!   of stored sessions, so a flood of visitors cannot exhaust memory; the
//!   [`CapacityPolicy`] says whether new sessions are refused or the ones
//!   closest to expiry make room (anonymous ones before signed-in ones).
//! * **Optional background purge.** [`MemoryStore::spawn_purge_task`] runs
//!   `purge_expired` periodically on tokio and stops when the store is
//!   dropped.
//! * **Keyed by hash.** Like every store, it keys sessions by
//!   [`StorageKey`], never by the raw ID.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use session_core::{
    Error, OwnerLimitPolicy, RecordMeta, Result, Rotation, Session, SessionConfig, SessionData,
    SessionHandle, SessionId, SessionInfo, SessionStore, StorageKey, Write, async_trait,
};

/// Default number of shards.
const DEFAULT_SHARDS: usize = 64;

/// Most expired sessions a purge removes per shard lock: the lock is let go
/// between batches, so a purge of many sessions never stalls the loads and
/// saves of that shard for long.
const PURGE_BATCH: usize = 128;

/// What a full store does with a new session (see
/// [`MemoryStoreBuilder::max_sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityPolicy {
    /// Refuse it: the save returns [`Error::Capacity`]. Existing sessions are
    /// never disturbed. The safe default for logged-in traffic.
    RefuseNew,
    /// Make room by ending the anonymous session (bound to no owner, see
    /// [`Session::set_owner`]) that would expire soonest, or, only when every
    /// stored session has an owner, the owned one that would expire soonest.
    /// Keeps the store accepting new visitors under a flood, at the price of
    /// ending idle sessions early; a flood of anonymous visitors ends only
    /// anonymous sessions, so it signs no one out.
    EvictSoonestExpiring,
}

/// An in-process [`SessionStore`]. Cheap to clone: clones share the sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Configures a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    config: SessionConfig,
    shards: usize,
    capacity: Option<(u64, CapacityPolicy)>,
}

impl MemoryStoreBuilder {
    /// Cap the number of stored sessions at `max` (raised to 1 if given as
    /// 0). When full, expired sessions are purged first; if that frees
    /// nothing, `policy` decides.
    #[must_use]
    pub fn max_sessions(mut self, max: u64, policy: CapacityPolicy) -> Self {
        self.capacity = Some((max.max(1), policy));
        self
    }

    /// Number of independently locked shards (rounded up to a power of two;
    /// default 64).
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.clamp(1, 1 << 16).next_power_of_two();
        self
    }

    /// Build the store.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..self.shards)
                    .map(|_| Mutex::new(Shard::default()))
                    .collect(),
                config: self.config,
                stored: AtomicU64::new(0),
                capacity: self.capacity,
                owner_lock: Mutex::new(()),
                moves: RwLock::new(()),
                stop: tokio::sync::watch::Sender::new(()),
            }),
        }
    }
}

impl MemoryStore {
    /// A store whose sessions expire after `idle_timeout_secs` seconds without
    /// a save or touch.
    pub fn new(idle_timeout_secs: u64) -> Self {
        Self::with_config(SessionConfig::from_secs(idle_timeout_secs))
    }

    /// A store with the given timeouts and limits.
    pub fn with_config(config: SessionConfig) -> Self {
        Self::builder(config).build()
    }

    /// Configure a store: capacity, shards.
    pub fn builder(config: SessionConfig) -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            config,
            shards: DEFAULT_SHARDS,
            capacity: None,
        }
    }

    /// Run [`purge_expired`](SessionStore::purge_expired) every `interval` on
    /// the current tokio runtime. The task holds only a weak reference and
    /// ends as soon as every clone of the store has been dropped (not at its
    /// next tick). A purge yields to other tasks between batches, so a large
    /// one does not hold a runtime worker.
    ///
    /// # Errors
    /// [`Error::Backend`] if called outside a tokio runtime.
    pub fn spawn_purge_task(&self, interval: Duration) -> Result<tokio::task::JoinHandle<()>> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::backend_msg("spawn_purge_task must be called inside a tokio runtime")
        })?;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let mut stop = self.inner.stop.subscribe();
        let interval = interval.max(Duration::from_millis(1));
        Ok(handle.spawn(async move {
            loop {
                // `changed` ends (with an error) when the store, which holds
                // the sender, is dropped; an interval too long to add to
                // the clock waits for that alone.
                let dropped = match tokio::time::Instant::now().checked_add(interval) {
                    Some(at) => tokio::time::timeout_at(at, stop.changed()).await.is_ok(),
                    None => {
                        let _ = stop.changed().await;
                        true
                    }
                };
                if dropped {
                    break;
                }
                let Some(inner) = weak.upgrade() else { break };
                let purged = inner.purge().await;
                if purged > 0 {
                    tracing::debug!(purged, "purged expired sessions");
                }
            }
        }))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.inner.config)
            .field("shards", &self.inner.shards.len())
            .field("stored", &self.inner.stored())
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

struct Inner {
    config: SessionConfig,
    shards: Box<[Mutex<Shard>]>,
    /// With a capacity: sessions held plus capacity reserved for inserts in
    /// progress. Without one it is not kept (see [`Inner::stored`]).
    stored: AtomicU64,
    capacity: Option<(u64, CapacityPolicy)>,
    /// Serialises saves that bind a session to an owner while a per-owner
    /// limit is configured, so the count and the insert are one step.
    owner_lock: Mutex<()>,
    /// Held shared by a rotation that moves a session to another shard, and
    /// exclusively by whatever must see each session exactly once while it
    /// visits the shards one at a time (`len`, an owner's sessions, ending
    /// them): otherwise a session moving from a shard not yet visited to
    /// one already visited would be missed, and the reverse counted twice.
    /// A write that binds a session under `EndOldest` holds it shared from
    /// storing the session until the owner's excess is ended, so no listing,
    /// count or revocation sees the owner over the limit in between.
    moves: RwLock<()>,
    /// Dropped with the store, which ends its purge tasks at once.
    stop: tokio::sync::watch::Sender<()>,
}

/// The per-owner limit's lock, held across a binding write.
struct OwnerGate<'a> {
    _guard: MutexGuard<'a, ()>,
    limit: session_core::OwnerLimit,
    /// Whether the write binds the session to this owner anew.
    binding: bool,
}

mod table;

use table::{Entry, Table};

/// A shard: its own table of sessions, behind its own lock.
type Shard = Table;

/// How the stored session relates to a write, checked under the shard lock.
fn check_precondition(
    shard: &Shard,
    key: &StorageKey,
    expected: Option<u64>,
    now: i64,
) -> Result<()> {
    match (shard.live(key, now), expected) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::Conflict),
        (None, Some(_)) => Err(Error::NotFound),
        (Some(e), Some(v)) if e.meta.version == v => Ok(()),
        (Some(_), Some(_)) => Err(Error::Conflict),
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while a shard was locked cannot leave it half-updated in a way
    // that breaks memory safety; keep serving rather than poisoning forever.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn shard_index(&self, key: &StorageKey) -> usize {
        let b = key.as_bytes();
        let n = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        // Keys are SHA-256 output, so the low bits are uniform.
        (n as usize) & (self.shards.len() - 1)
    }

    fn shard(&self, key: &StorageKey) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(key)])
    }

    fn now(&self) -> i64 {
        self.config.now_ms()
    }

    /// The exclusive hold on cross-shard moves (see [`Inner::moves`]).
    fn no_moves(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.moves
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remove up to a batch of sessions expired at `now` from shard `i`,
    /// counted free before its lock is let go (so a save waiting for room
    /// sees the room as soon as the sessions are gone) and freed after.
    /// Returns how many were removed and whether more may be left.
    fn purge_shard_batch(&self, i: usize, now: i64, removed: &mut Vec<Entry>) -> (u64, bool) {
        let mut shard = lock(&self.shards[i]);
        let more = shard.purge_batch(now, PURGE_BATCH, removed);
        let n = removed.len() as u64;
        self.release_n(n);
        drop(shard);
        removed.clear();
        (n, more)
    }

    /// Remove every expired session, a batch per shard lock at a time,
    /// yielding to other tasks between batches. Then give back the memory of
    /// a shard left mostly empty (after a flood of sessions expired or was
    /// ended), so it does not keep its peak size forever; this is done here
    /// and not when sessions are removed, so no load or save pays for it.
    async fn purge(&self) -> u64 {
        let now = self.now();
        let mut purged = 0;
        let mut removed = Vec::with_capacity(PURGE_BATCH);
        for i in 0..self.shards.len() {
            loop {
                let (n, more) = self.purge_shard_batch(i, now, &mut removed);
                purged += n;
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if lock(&self.shards[i]).shrink_if_sparse() {
                tracing::debug!(shard = i, "shrank a mostly empty shard");
                tokio::task::yield_now().await;
            }
        }
        purged
    }

    fn try_reserve(&self, max: u64) -> bool {
        self.stored
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Reserve room for one more stored session, per the capacity policy.
    /// Only a store with a capacity counts its sessions: the shared counter
    /// would otherwise be the one thing every insert on every core touches.
    ///
    /// A full store first frees expired sessions, a batch at a time and only
    /// until there is room, so no one save pays for purging a backlog. It
    /// refuses (or evicts) only once no shard holds an expired session and
    /// there is still no room: a concurrent purge counts what it removed
    /// before anyone can see it gone, so it never looks full meanwhile.
    fn reserve(&self) -> Result<()> {
        let Some((max, policy)) = self.capacity else {
            return Ok(());
        };
        let now = self.now();
        let mut removed = Vec::new();
        let mut next = 0;
        loop {
            if self.try_reserve(max) {
                return Ok(());
            }
            let mut freed = false;
            while next < self.shards.len() && !freed {
                let (n, more) = self.purge_shard_batch(next, now, &mut removed);
                if !more {
                    next += 1;
                }
                freed = n > 0;
            }
            if freed {
                continue;
            }
            if self.try_reserve(max) {
                return Ok(());
            }
            if policy == CapacityPolicy::EvictSoonestExpiring && self.evict_soonest_expiring() {
                continue;
            }
            tracing::warn!(
                limit = max,
                "memory session store is full; refusing a new session"
            );
            return Err(Error::Capacity { limit: max });
        }
    }

    fn release(&self) {
        self.release_n(1);
    }

    fn release_n(&self, n: u64) {
        if self.capacity.is_some() && n > 0 {
            self.stored.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Sessions held (expired ones not yet purged included).
    fn stored(&self) -> u64 {
        if self.capacity.is_some() {
            self.stored.load(Ordering::Relaxed)
        } else {
            let _no_moves = self.no_moves();
            self.shards.iter().map(|s| lock(s).len() as u64).sum()
        }
    }

    /// End the anonymous session closest to expiry or, if every session
    /// has an owner, the owned one closest to expiry. Returns whether there
    /// was one to end (it may have changed meanwhile; the caller retries).
    fn evict_soonest_expiring(&self) -> bool {
        let soonest = |anonymous: bool| {
            self.shards
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    lock(s)
                        .first_expiry(anonymous)
                        .map(|(exp, key)| (exp, key, i))
                })
                .min()
        };
        let (anonymous, soonest) = match soonest(true) {
            Some(found) => (true, Some(found)),
            None => (false, soonest(false)),
        };
        let Some((expires, key, index)) = soonest else {
            return false;
        };
        let mut shard = lock(&self.shards[index]);
        // Only if it is still the same entry, and still anonymous if it was
        // chosen as such; otherwise the caller retries.
        if shard
            .get(&key)
            .is_some_and(|e| e.meta.expires_ms == expires && (!anonymous || e.meta.owner.is_none()))
        {
            shard.remove(&key);
            drop(shard);
            self.release();
            tracing::debug!("evicted the session closest to expiry to make room");
        }
        true
    }

    /// The shared hold on cross-shard moves (see [`Inner::moves`]).
    fn moving(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.moves
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live sessions of `owner`, as `(key, meta)`, oldest first.
    fn owner_entries(&self, owner: &str, now: i64) -> Vec<(StorageKey, RecordMeta)> {
        let _no_moves = self.no_moves();
        self.owner_entries_held(owner, now)
    }

    /// [`Inner::owner_entries`] for a caller that holds the owner lock and
    /// [`Inner::moving`]: the owner's sessions cannot move meanwhile, as
    /// only a write holding the owner lock moves or binds them.
    fn owner_entries_held(&self, owner: &str, now: i64) -> Vec<(StorageKey, RecordMeta)> {
        let mut found = Vec::new();
        for shard in &*self.shards {
            let shard = lock(shard);
            found.extend(
                shard
                    .owned(owner)
                    .filter(|(_, e)| e.meta.is_live(now))
                    .map(|(k, e)| (k, e.meta.clone())),
            );
        }
        found.sort_by_key(|(key, meta)| (meta.created_ms, *key));
        found
    }

    /// Remove the entry at `key` if it is live and bound to `owner`.
    fn remove_owned(&self, key: &StorageKey, owner: &str, now: i64) -> bool {
        let mut shard = self.shard(key);
        let owned = shard
            .live(key, now)
            .is_some_and(|e| e.meta.owner.as_deref() == Some(owner));
        if owned {
            shard.remove(key);
            drop(shard);
            self.release();
        }
        owned
    }

    /// If `write` binds its session to an owner and a per-owner limit is
    /// set, take the owner lock (held until the returned gate is dropped, so
    /// counting and writing are one step) and, under `RefuseNew`, refuse a
    /// session that would exceed the limit. `current` is where the session is
    /// stored now, if it is. Nothing is ended here: under `EndOldest` the
    /// excess is ended by [`Inner::end_excess`] only once the write succeeded.
    ///
    /// `precheck` is the write's own precondition (version, existence): a
    /// write that would fail anyway fails with its own error (`NotFound`,
    /// `Conflict`) rather than [`Error::TooManySessions`].
    fn owner_gate(
        &self,
        write: &Write,
        current: Option<&StorageKey>,
        precheck: impl Fn() -> Result<()>,
    ) -> Result<Option<OwnerGate<'_>>> {
        let (Some(limit), Some(owner)) = (
            self.config.max_sessions_per_owner(),
            write.meta.owner.as_deref(),
        ) else {
            return Ok(None);
        };
        let now = write.now_ms;
        // A save that keeps both its key and its owner binds nothing: no
        // lock, so the signed-in users' saves do not queue behind each
        // other. (If the session is rebound or moved meanwhile, its version
        // moved too, and the compare-and-set refuses the write.)
        if current == Some(&write.key)
            && self
                .shard(&write.key)
                .live(&write.key, now)
                .is_some_and(|e| e.meta.owner.as_deref() == Some(owner))
        {
            return Ok(None);
        }
        let guard = self
            .owner_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let already_bound = current.is_some_and(|key| {
            self.shard(key)
                .live(key, now)
                .is_some_and(|e| e.meta.owner.as_deref() == Some(owner))
        });
        if !already_bound && limit.policy == OwnerLimitPolicy::RefuseNew {
            let others = self
                .owner_entries(owner, now)
                .iter()
                .filter(|(k, _)| Some(k) != current)
                .count();
            if others + 1 > limit.max as usize {
                precheck()?;
                return Err(Error::TooManySessions { limit: limit.max });
            }
        }
        Ok(Some(OwnerGate {
            _guard: guard,
            limit,
            binding: !already_bound,
        }))
    }

    /// Whether a write through `gate` ends the owner's excess sessions,
    /// and so must hold [`Inner::moving`] from storing the session until
    /// [`Inner::end_excess`] is done.
    fn ends_excess(gate: Option<&OwnerGate<'_>>) -> bool {
        gate.is_some_and(|g| g.binding && g.limit.policy == OwnerLimitPolicy::EndOldest)
    }

    /// After a successful write that newly bound `write`'s session to its
    /// owner under `EndOldest`, end the owner's oldest other sessions beyond
    /// the limit. The caller holds [`Inner::moving`] since before the write.
    fn end_excess(&self, gate: &OwnerGate<'_>, write: &Write) {
        let Some(owner) = write.meta.owner.as_deref() else {
            return;
        };
        if !Self::ends_excess(Some(gate)) {
            return;
        }
        let now = write.now_ms;
        let others: Vec<_> = self
            .owner_entries_held(owner, now)
            .into_iter()
            .filter(|(k, _)| *k != write.key)
            .collect();
        let excess = (others.len() + 1).saturating_sub(gate.limit.max as usize);
        for (key, _) in others.iter().take(excess) {
            self.remove_owned(key, owner, now);
        }
        if excess > 0 {
            tracing::debug!(
                ended = excess,
                "ended an owner's oldest sessions to respect the per-owner limit"
            );
        }
    }

    fn write(&self, mut write: Write) -> Result<Write> {
        let current = write.expected_version.map(|_| write.key);
        let gate = self.owner_gate(&write, current.as_ref(), || {
            check_precondition(
                &self.shard(&write.key),
                &write.key,
                write.expected_version,
                write.now_ms,
            )
        })?;
        let inserting = write.expected_version.is_none();
        if inserting {
            self.reserve()?;
        }
        let _moving = Self::ends_excess(gate.as_ref()).then(|| self.moving());
        let applied = self.shard(&write.key).apply(&mut write);
        match applied {
            Err(e) => {
                if inserting {
                    self.release();
                }
                return Err(e);
            }
            // An insert replaced an expired entry: it holds no new room.
            Ok(Some(_)) if inserting => self.release(),
            Ok(_) => {}
        }
        if let Some(gate) = gate {
            self.end_excess(&gate, &write);
        }
        Ok(write)
    }

    /// Perform `rotation`, leaving in `rotation.write.meta` the activity
    /// time and expiry stored (see [`table::keep_later_deadline`]).
    fn rotate(&self, rotation: &mut Rotation) -> Result<()> {
        let write = &rotation.write;
        let stored = write.expected_version.is_some();
        let current = stored.then_some(rotation.old_key);
        let gate = self.owner_gate(write, current.as_ref(), || {
            check_precondition(
                &self.shard(&rotation.old_key),
                &rotation.old_key,
                write.expected_version,
                write.now_ms,
            )?;
            check_precondition(&self.shard(&write.key), &write.key, None, write.now_ms)
        })?;
        if !stored {
            self.reserve()?;
        }
        let (a, b) = (
            self.shard_index(&rotation.old_key),
            self.shard_index(&write.key),
        );
        let _moving = (a != b || Self::ends_excess(gate.as_ref())).then(|| self.moving());
        let (mut first, mut second) = if a == b {
            (lock(&self.shards[a]), None)
        } else {
            let (lo, hi) = (a.min(b), a.max(b));
            let lo_guard = lock(&self.shards[lo]);
            let hi_guard = lock(&self.shards[hi]);
            if a < b {
                (lo_guard, Some(hi_guard))
            } else {
                (hi_guard, Some(lo_guard))
            }
        };
        // `first` holds the old key's shard, `second` (if any) the new key's.
        let checked = check_precondition(
            &first,
            &rotation.old_key,
            write.expected_version,
            write.now_ms,
        )
        .and_then(|()| {
            let new_shard = second.as_deref().unwrap_or(&*first);
            check_precondition(new_shard, &write.key, None, write.now_ms)
        });
        if let Err(e) = checked {
            drop((first, second, _moving));
            if !stored {
                self.release();
            }
            return Err(e);
        }
        let write = &mut rotation.write;
        if stored {
            // Checked above: the live version the rotation expects.
            if let Some(old) = first.remove(&rotation.old_key) {
                table::keep_later_deadline(&mut write.meta, &old.meta);
            }
        }
        let new_shard = second.as_deref_mut().unwrap_or(&mut *first);
        if new_shard.remove(&write.key).is_some() {
            self.release(); // an expired entry under the new key
        }
        new_shard.insert(write.key, Entry::of(write));
        drop((first, second));
        if let Some(gate) = gate {
            self.end_excess(&gate, write);
        }
        drop(_moving);
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let key = id.storage_key();
        let shard = self.inner.shard(key);
        // The clock is read only for a session that is there, under its
        // lock: a miss (say, a made-up cookie) needs no time.
        let Some(e) = shard.get(key) else {
            return Ok(None);
        };
        Ok(e.meta.is_live(self.inner.now()).then(|| {
            Session::from_stored(
                id.clone(),
                e.meta.clone(),
                SessionData::from_encoded_trusted(Arc::clone(&e.data)),
            )
        }))
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let write = session.prepare_write(&self.inner.config)?;
        let write = self.inner.write(write)?;
        session.commit_write(write);
        Ok(())
    }

    async fn touch(&self, session: &mut Session) -> Result<()> {
        let touch = session.prepare_touch(&self.inner.config)?;
        self.inner.shard(&touch.key).touch(&touch)?;
        session.commit_touch(&touch);
        Ok(())
    }

    async fn cycle_id(&self, session: &mut Session) -> Result<()> {
        let mut rotation = session.prepare_rotation(&self.inner.config)?;
        self.inner.rotate(&mut rotation)?;
        session.commit_rotation(rotation);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let now = self.inner.now();
        let key = id.storage_key();
        let mut shard = self.inner.shard(key);
        let Some(entry) = shard.remove(key) else {
            return Ok(false);
        };
        drop(shard);
        self.inner.release();
        Ok(entry.meta.is_live(now))
    }

    async fn purge_expired(&self) -> Result<u64> {
        Ok(self.inner.purge().await)
    }

    async fn len(&self) -> Result<u64> {
        let now = self.inner.now();
        let mut live = 0u64;
        let _no_moves = self.inner.no_moves();
        for shard in &*self.inner.shards {
            let shard = lock(shard);
            live += (shard.len() - shard.expired_count(now)) as u64;
        }
        Ok(live)
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        let now = self.inner.now();
        Ok(self
            .inner
            .owner_entries(owner, now)
            .iter()
            .map(|(key, meta)| SessionInfo::from_meta(key, meta, current))
            .collect())
    }

    async fn count_owner_sessions(&self, owner: &str) -> Result<u64> {
        let now = self.inner.now();
        let mut count = 0u64;
        let _no_moves = self.inner.no_moves();
        for shard in &*self.inner.shards {
            let shard = lock(shard);
            count += shard
                .owned(owner)
                .filter(|(_, e)| e.meta.is_live(now))
                .count() as u64;
        }
        Ok(count)
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        let now = self.inner.now();
        let found = {
            let _no_moves = self.inner.no_moves();
            self.inner.shards.iter().find_map(|shard| {
                lock(shard)
                    .owned(owner)
                    .map(|(key, _)| key)
                    .find(|key| key.handle() == *handle)
            })
        };
        if let Some(key) = found {
            return Ok(self.inner.remove_owned(&key, owner, now));
        }
        Ok(false)
    }
    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        let now = self.inner.now();
        let keep = keep.map(SessionId::storage_key);
        let mut ended = 0u64;
        let _no_moves = self.inner.no_moves();
        for shard in &*self.inner.shards {
            let mut shard = lock(shard);
            let mut removed = 0u64;
            let keys: Vec<StorageKey> = shard.owned(owner).map(|(key, _)| key).collect();
            for key in keys {
                if Some(&key) == keep {
                    continue;
                }
                if let Some(entry) = shard.remove(&key) {
                    removed += 1;
                    if entry.meta.is_live(now) {
                        ended += 1;
                    }
                }
            }
            drop(shard);
            self.inner.release_n(removed);
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::ManualClock;

    fn store_with(
        clock: &ManualClock,
        build: impl FnOnce(MemoryStoreBuilder) -> MemoryStoreBuilder,
    ) -> MemoryStore {
        build(MemoryStore::builder(
            SessionConfig::from_secs(60).with_clock(clock.clone()),
        ))
        .build()
    }

    async fn saved(store: &MemoryStore) -> Session {
        let mut s = store.create().await.unwrap();
        store.save(&mut s).await.unwrap();
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        session_core::testing::run_conformance(|config| async move {
            Arc::new(MemoryStore::with_config(config)) as Arc<dyn SessionStore>
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_with_a_single_shard() {
        // Rotation and owner bookkeeping within one shard take other paths.
        session_core::testing::run_conformance(|config| async move {
            Arc::new(MemoryStore::builder(config).shards(1).build()) as Arc<dyn SessionStore>
        })
        .await;
    }

    /// A clock that counts how often it is read.
    #[derive(Debug, Clone, Default)]
    struct CountingClock {
        time: ManualClock,
        reads: Arc<AtomicU64>,
    }

    impl session_core::Clock for CountingClock {
        fn now_ms(&self) -> i64 {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.time.now_ms()
        }
    }

    #[tokio::test]
    async fn a_load_that_finds_nothing_reads_no_clock() {
        let clock = CountingClock::default();
        let store =
            MemoryStore::with_config(SessionConfig::from_secs(60).with_clock(clock.clone()));
        let stored = saved(&store).await;
        let before = clock.reads.load(Ordering::Relaxed);
        let stranger = SessionId::generate().unwrap();
        assert!(store.load(&stranger).await.unwrap().is_none());
        assert_eq!(clock.reads.load(Ordering::Relaxed), before);

        // A session that is there is still judged by the clock.
        assert!(store.load(stored.id()).await.unwrap().is_some());
        clock.time.advance(Duration::from_secs(60));
        assert!(store.load(stored.id()).await.unwrap().is_none());
        assert_eq!(clock.reads.load(Ordering::Relaxed), before + 2);
    }

    #[tokio::test]
    async fn seed_constructor_means_idle_seconds() {
        let store = MemoryStore::new(3600);
        assert_eq!(store.config().idle_timeout(), Duration::from_secs(3600));
        assert_eq!(store.config().absolute_timeout(), None);
    }

    #[tokio::test]
    async fn full_store_rejects_new_sessions_and_keeps_old_ones() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.max_sessions(2, CapacityPolicy::RefuseNew));
        let a = saved(&store).await;
        let b = saved(&store).await;
        let mut c = store.create().await.unwrap();
        assert!(matches!(
            store.save(&mut c).await,
            Err(Error::Capacity { limit: 2 })
        ));
        assert!(store.load(a.id()).await.unwrap().is_some());
        assert!(store.load(b.id()).await.unwrap().is_some());
        assert_eq!(store.len().await.unwrap(), 2);

        // Updates of stored sessions are not new sessions.
        let mut a2 = store.load(a.id()).await.unwrap().unwrap();
        a2.set("k", "v");
        store.save(&mut a2).await.unwrap();
        store.cycle_id(&mut a2).await.unwrap();

        // Destroying one makes room.
        store.destroy(b.id()).await.unwrap();
        store.save(&mut c).await.unwrap();
    }

    #[tokio::test]
    async fn full_store_purges_expired_sessions_before_refusing() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.max_sessions(2, CapacityPolicy::RefuseNew));
        saved(&store).await;
        saved(&store).await;
        clock.advance(Duration::from_secs(61));
        let fresh = saved(&store).await;
        assert!(store.load(fresh.id()).await.unwrap().is_some());
        assert_eq!(store.len().await.unwrap(), 1);
        assert!(
            store.purge_expired().await.unwrap() <= 1,
            "the full store purged at least what it needed"
        );
    }

    #[tokio::test]
    async fn a_write_that_would_fail_anyway_says_why_rather_than_too_many_sessions() {
        let clock = ManualClock::new();
        let config = SessionConfig::from_secs(60)
            .with_clock(clock.clone())
            .with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew);
        let store = MemoryStore::with_config(config);
        let mut first = store.create().await.unwrap();
        first.set_owner("u");
        store.save(&mut first).await.unwrap();

        let stored = saved(&store).await;
        let mut stale = store.load(stored.id()).await.unwrap().unwrap();
        let mut fresh = stale.clone();
        fresh.set("k", "v");
        store.save(&mut fresh).await.unwrap();
        stale.set_owner("u");
        assert!(matches!(store.save(&mut stale).await, Err(Error::Conflict)));
        assert!(matches!(
            store.cycle_id(&mut stale).await,
            Err(Error::Conflict)
        ));

        let mut ended = store.load(stored.id()).await.unwrap().unwrap();
        store.destroy(stored.id()).await.unwrap();
        ended.set_owner("u");
        assert!(matches!(store.save(&mut ended).await, Err(Error::NotFound)));
        assert!(matches!(
            store.cycle_id(&mut ended).await,
            Err(Error::NotFound)
        ));

        let mut anonymous = saved(&store).await;
        anonymous.set_owner("u");
        assert!(matches!(
            store.save(&mut anonymous).await,
            Err(Error::TooManySessions { limit: 1 })
        ));
    }

    #[tokio::test]
    async fn try_update_saves_nothing_when_the_change_fails() {
        use session_core::SessionStoreExt as _;
        let store = MemoryStore::new(60);
        let mut s = store.create().await.unwrap();
        s.set("balance", "10");
        store.save(&mut s).await.unwrap();
        let failed: std::result::Result<(), &str> = store
            .try_update(s.id(), |s| {
                s.set("balance", "0");
                Err("step two failed")
            })
            .await
            .unwrap();
        assert_eq!(failed, Err("step two failed"));
        let stored = store.load(s.id()).await.unwrap().unwrap();
        assert_eq!(stored.get("balance"), Some("10"));
        assert_eq!(stored.version(), 1, "nothing was written");

        let done: std::result::Result<u8, &str> = store
            .try_update(s.id(), |s| {
                s.set("balance", "7");
                Ok(7)
            })
            .await
            .unwrap();
        assert_eq!(done, Ok(7));
        let stored = store.load(s.id()).await.unwrap().unwrap();
        assert_eq!(stored.get("balance"), Some("7"));
    }

    #[tokio::test]
    async fn a_save_into_a_full_store_purges_only_until_there_is_room() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.max_sessions(2000, CapacityPolicy::RefuseNew));
        for _ in 0..2000 {
            saved(&store).await;
        }
        clock.advance(Duration::from_secs(61));
        saved(&store).await;
        let left = store.purge_expired().await.unwrap();
        assert!(
            left >= 2000 - PURGE_BATCH as u64,
            "the save purged a batch, not the backlog: {left} left"
        );
        assert_eq!(store.len().await.unwrap(), 1);
    }

    /// A save that finds the store full while another save purges the
    /// expired sessions must see the room that purge made, and neither
    /// refuse nor evict a live session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_saves_into_a_store_full_of_expired_sessions_all_fit() {
        for policy in [
            CapacityPolicy::RefuseNew,
            CapacityPolicy::EvictSoonestExpiring,
        ] {
            for _ in 0..20 {
                let clock = ManualClock::new();
                let store = store_with(&clock, |b| b.max_sessions(1000, policy));
                for _ in 16..1000 {
                    saved(&store).await; // expire at 60 s
                }
                clock.advance(Duration::from_secs(30));
                let mut live = Vec::new();
                for _ in 0..16 {
                    live.push(saved(&store).await); // expire at 90 s
                }
                clock.advance(Duration::from_secs(31));
                let barrier = Arc::new(tokio::sync::Barrier::new(8));
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (store, barrier) = (store.clone(), barrier.clone());
                        tokio::spawn(async move {
                            let mut s = store.create().await.unwrap();
                            barrier.wait().await;
                            store.save(&mut s).await
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
                for s in &live {
                    assert!(
                        store.load(s.id()).await.unwrap().is_some(),
                        "{policy:?}: a live session was evicted"
                    );
                }
                assert_eq!(store.len().await.unwrap(), 24);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn len_counts_each_session_once_while_sessions_rotate_across_shards() {
        let store = MemoryStore::new(3600);
        let mut sessions = Vec::new();
        for _ in 0..10 {
            let mut s = store.create().await.unwrap();
            store.save(&mut s).await.unwrap();
            sessions.push(s);
        }
        let rotating = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..2000 {
                    for s in &mut sessions {
                        store.cycle_id(s).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        while !rotating.is_finished() {
            assert_eq!(store.len().await.unwrap(), 10);
            assert_eq!(store.inner.stored(), 10);
            tokio::task::yield_now().await;
        }
        rotating.await.unwrap();
    }

    #[tokio::test]
    async fn full_store_can_evict_the_session_closest_to_expiry() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| {
            b.max_sessions(2, CapacityPolicy::EvictSoonestExpiring)
        });
        let oldest = saved(&store).await;
        clock.advance(Duration::from_secs(10));
        let mut busy = saved(&store).await;
        clock.advance(Duration::from_secs(10));
        store.touch(&mut busy).await.unwrap();
        let newest = saved(&store).await;
        assert!(
            store.load(oldest.id()).await.unwrap().is_none(),
            "closest to expiry was evicted"
        );
        assert!(store.load(busy.id()).await.unwrap().is_some());
        assert!(store.load(newest.id()).await.unwrap().is_some());
        assert_eq!(store.len().await.unwrap(), 2);
    }

    async fn saved_for(store: &MemoryStore, owner: &str) -> Session {
        let mut s = store.create().await.unwrap();
        s.set_owner(owner);
        store.save(&mut s).await.unwrap();
        s
    }

    #[tokio::test]
    async fn a_full_store_evicts_anonymous_sessions_before_signed_in_ones() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| {
            b.max_sessions(3, CapacityPolicy::EvictSoonestExpiring)
        });
        let alice = saved_for(&store, "alice").await; // expires first
        clock.advance(Duration::from_secs(10));
        let anonymous = saved(&store).await;
        clock.advance(Duration::from_secs(10));
        let bob = saved_for(&store, "bob").await;
        clock.advance(Duration::from_secs(10));
        // A flood of anonymous visitors ends only anonymous sessions.
        let mut flood = Vec::new();
        for _ in 0..5 {
            flood.push(saved(&store).await);
            clock.advance(Duration::from_secs(1));
        }
        assert!(store.load(anonymous.id()).await.unwrap().is_none());
        for s in &flood[..4] {
            assert!(store.load(s.id()).await.unwrap().is_none());
        }
        for s in [&alice, &bob, &flood[4]] {
            assert!(store.load(s.id()).await.unwrap().is_some());
        }
        assert_eq!(store.count_owner_sessions("alice").await.unwrap(), 1);
        assert_eq!(store.count_owner_sessions("bob").await.unwrap(), 1);
        assert_eq!(store.len().await.unwrap(), 3);
    }

    /// A save or rotation that read the clock before another request's
    /// touch got the shard lock keeps the touch's later deadline, and the
    /// caller's session holds that stored deadline, not its own.
    #[tokio::test]
    async fn a_late_save_or_rotation_leaves_its_session_the_stored_deadline() {
        for rotate in [false, true] {
            let clock = session_core::testing::HookClock::default();
            let store =
                MemoryStore::with_config(SessionConfig::from_secs(60).with_clock(clock.clone()));
            let mut s = store.create().await.unwrap();
            store.save(&mut s).await.unwrap();
            let mut late = store.load(s.id()).await.unwrap().unwrap();
            let (other, id, time) = (store.clone(), s.id().clone(), clock.time.clone());
            clock.arm_request(move || async move {
                time.advance(Duration::from_secs(30));
                let mut s = other.load(&id).await.unwrap().unwrap();
                other.touch(&mut s).await.unwrap();
            });
            late.set("saved", "late");
            if rotate {
                store.cycle_id(&mut late).await.unwrap();
            } else {
                store.save(&mut late).await.unwrap();
            }
            let stored = store.load(late.id()).await.unwrap().unwrap();
            assert_eq!(stored.get("saved"), Some("late"));
            assert_eq!(
                stored.expires_at(),
                s.expires_at() + Duration::from_secs(30)
            );
            assert_eq!(late.expires_at(), stored.expires_at(), "rotate: {rotate}");
            assert_eq!(late.last_active(), stored.last_active(), "rotate: {rotate}");
        }
    }

    /// Under `EndOldest`, a login stores its session and then ends the
    /// owner's oldest: no listing, count or revocation may see the owner
    /// over the limit in between. Found by a randomized stress run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_oldest_never_shows_an_owner_over_the_limit() {
        const LIMIT: u32 = 2;
        let store = MemoryStore::with_config(
            SessionConfig::from_secs(60)
                .with_max_sessions_per_owner(LIMIT, OwnerLimitPolicy::EndOldest),
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (store, done) = (store.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut most = 0;
                while !done.load(Ordering::Relaxed) {
                    most = most.max(store.count_owner_sessions("alice").await.unwrap());
                    tokio::task::yield_now().await;
                }
                most
            })
        };
        for _ in 0..2000 {
            let mut s = store.create().await.unwrap();
            s.set_owner("alice");
            store.save(&mut s).await.unwrap();
            tokio::task::yield_now().await;
        }
        done.store(true, Ordering::Relaxed);
        let most = watcher.await.unwrap();
        assert!(
            most <= u64::from(LIMIT),
            "a count saw {most} sessions of an owner limited to {LIMIT}"
        );
    }

    /// When every session has an owner, the one closest to expiry goes, and
    /// the owner index and the counts forget it at once.
    #[tokio::test]
    async fn evicting_a_signed_in_session_keeps_the_owner_index_and_counts_exact() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder(
            SessionConfig::from_secs(60)
                .with_clock(clock.clone())
                .with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew),
        )
        .shards(4)
        .max_sessions(2, CapacityPolicy::EvictSoonestExpiring)
        .build();
        let alice = saved_for(&store, "alice").await;
        clock.advance(Duration::from_secs(10));
        let bob = saved_for(&store, "bob").await;
        clock.advance(Duration::from_secs(10));
        let carol = saved_for(&store, "carol").await;

        assert!(store.load(alice.id()).await.unwrap().is_none(), "evicted");
        assert_eq!(store.count_owner_sessions("alice").await.unwrap(), 0);
        assert!(
            store
                .owner_sessions("alice", None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.destroy_owner_sessions("alice", None).await.unwrap(),
            0
        );
        let handle = alice.id().handle();
        assert!(!store.destroy_owner_session("alice", &handle).await.unwrap());
        assert_eq!(store.len().await.unwrap(), 2);
        assert_eq!(store.inner.stored(), 2);
        for shard in &*store.inner.shards {
            lock(shard).assert_consistent();
        }

        // Alice's limit of one counts nothing for the evicted session: she
        // can sign in again (which evicts Bob, now closest to expiry).
        let again = saved_for(&store, "alice").await;
        assert!(store.load(bob.id()).await.unwrap().is_none());
        assert_eq!(store.count_owner_sessions("bob").await.unwrap(), 0);
        assert_eq!(store.count_owner_sessions("alice").await.unwrap(), 1);
        let mut stale = alice.clone();
        stale.set("k", "v");
        assert!(matches!(store.save(&mut stale).await, Err(Error::NotFound)));
        for s in [&again, &carol] {
            assert!(store.load(s.id()).await.unwrap().is_some());
        }
        assert_eq!(store.inner.stored(), 2);
        for shard in &*store.inner.shards {
            lock(shard).assert_consistent();
        }
    }

    /// A mixed workload on a full, evicting store: after every step the
    /// owner index, the counts and every shard's indexes agree.
    #[tokio::test]
    async fn eviction_keeps_every_index_exact_through_a_mixed_workload() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| {
            b.shards(4)
                .max_sessions(16, CapacityPolicy::EvictSoonestExpiring)
        });
        let owners = ["a", "b", "c"];
        let mut held: Vec<Session> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..600 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            clock.advance(Duration::from_millis(x % 50)); // 30 s at most: no expiry
            let pick = (x >> 8) as usize;
            match x % 5 {
                0 | 1 => {
                    let mut s = store.create().await.unwrap();
                    if let Some(owner) = owners.get(pick % 5) {
                        s.set_owner(*owner);
                    }
                    store.save(&mut s).await.unwrap();
                    held.push(s);
                }
                2 if !held.is_empty() => {
                    let i = pick % held.len();
                    let s = &mut held[i];
                    match owners.get(pick % 4) {
                        Some(owner) => s.set_owner(*owner),
                        None => s.clear_owner(),
                    }
                    if store.save(s).await.is_err() {
                        held.swap_remove(i); // evicted meanwhile
                    }
                }
                3 if !held.is_empty() => {
                    let i = pick % held.len();
                    if store.cycle_id(&mut held[i]).await.is_err() {
                        held.swap_remove(i);
                    }
                }
                _ => {
                    let owner = owners[pick % 3];
                    store.destroy_owner_sessions(owner, None).await.unwrap();
                }
            }
            held.retain(|s| {
                let shard = store.inner.shard(s.id().storage_key());
                shard
                    .live(s.id().storage_key(), clock_now(&clock))
                    .is_some()
            });
            for shard in &*store.inner.shards {
                lock(shard).assert_consistent();
            }
            let live = store.len().await.unwrap();
            assert!(live <= 16);
            assert_eq!(store.inner.stored(), live, "nothing expires here");
            let mut owned = 0;
            for owner in owners {
                let n = store.count_owner_sessions(owner).await.unwrap();
                assert_eq!(
                    n,
                    held.iter().filter(|s| s.owner() == Some(owner)).count() as u64,
                    "{owner}"
                );
                owned += n;
            }
            let anonymous = held.iter().filter(|s| s.owner().is_none()).count() as u64;
            assert_eq!(owned + anonymous, live);
        }
    }

    fn clock_now(clock: &ManualClock) -> i64 {
        session_core::Clock::now_ms(clock)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn capacity_holds_under_a_concurrent_flood() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.max_sessions(100, CapacityPolicy::RefuseNew));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..50 {
                    let mut s = store.create().await.unwrap();
                    match store.save(&mut s).await {
                        Ok(()) => {}
                        Err(Error::Capacity { .. }) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                refused
            }));
        }
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap();
        }
        assert_eq!(store.len().await.unwrap(), 100, "never more than the cap");
        assert_eq!(refused, 300);
    }

    #[tokio::test]
    async fn purge_costs_what_it_removes() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.shards(4));
        for _ in 0..1000 {
            saved(&store).await;
        }
        clock.advance(Duration::from_secs(30));
        let young = saved(&store).await;
        clock.advance(Duration::from_secs(31));
        // The purge walks each shard's expiry index from the front and stops
        // at the first live entry; the live sessions are never visited. We
        // check the index invariant that makes this true: the expiry index
        // (ordered by deadline) covers exactly the stored entries with their
        // current deadlines.
        for shard in &*store.inner.shards {
            lock(shard).assert_consistent();
        }
        assert_eq!(store.purge_expired().await.unwrap(), 1000);
        assert!(store.load(young.id()).await.unwrap().is_some());
        assert_eq!(store.inner.stored(), 1);
        for shard in &*store.inner.shards {
            lock(shard).assert_consistent(); // purge keeps the indexes in step
        }
    }

    #[tokio::test]
    async fn shards_give_memory_back_once_a_flood_is_purged() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b.shards(2));
        let room = |store: &MemoryStore| -> usize {
            store.inner.shards.iter().map(|s| lock(s).room()).sum()
        };
        clock.advance(Duration::from_secs(30));
        let mut kept = Vec::new();
        for _ in 0..20 {
            kept.push(saved_for(&store, "alice").await); // expire at 90 s
        }
        clock.advance(Duration::from_secs(1));
        for _ in 0..20_000 {
            saved(&store).await; // the flood: expires at 91 s
        }
        let peak = room(&store);
        assert!(peak >= 20_000);
        clock.advance(Duration::from_secs(30)); // the kept ones are live at 60 s idle
        for s in &mut kept {
            store.touch(s).await.unwrap();
        }
        clock.advance(Duration::from_secs(31));
        assert_eq!(store.purge_expired().await.unwrap(), 20_000);
        assert!(
            room(&store) < 1_000,
            "{} sessions' room kept for 20 sessions",
            room(&store)
        );
        for s in &kept {
            assert!(store.load(s.id()).await.unwrap().is_some());
        }
        assert_eq!(store.count_owner_sessions("alice").await.unwrap(), 20);
        for shard in &*store.inner.shards {
            lock(shard).assert_consistent();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn background_purge_runs_and_stops_when_the_store_is_dropped() {
        let clock = ManualClock::new();
        let store = store_with(&clock, |b| b);
        let task = store.spawn_purge_task(Duration::from_secs(5)).unwrap();
        saved(&store).await;
        clock.advance(Duration::from_secs(61));
        assert_eq!(store.inner.stored(), 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(store.inner.stored(), 0, "the task purged");
        assert!(!task.is_finished());
        drop(store);
        tokio::time::timeout(Duration::from_millis(100), task)
            .await
            .expect("the task ends as soon as the store is gone")
            .unwrap();

        // Also when its interval is too long to ever tick.
        let store = store_with(&clock, |b| b);
        let task = store.spawn_purge_task(Duration::MAX).unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!task.is_finished());
        drop(store);
        tokio::time::timeout(Duration::from_millis(100), task)
            .await
            .expect("the task ends as soon as the store is gone")
            .unwrap();
    }

    #[test]
    fn purge_task_outside_a_runtime_is_an_error_not_a_panic() {
        let store = MemoryStore::new(60);
        assert!(matches!(
            store.spawn_purge_task(Duration::from_secs(1)),
            Err(Error::Backend(_))
        ));
    }

    #[tokio::test]
    async fn stores_only_the_hashed_key() {
        let store = MemoryStore::new(60);
        let s = saved(&store).await;
        let shard = store.inner.shard(s.id().storage_key());
        assert!(shard.get(s.id().storage_key()).is_some());
        assert_ne!(s.id().storage_key().to_hex(), s.id().as_str());
    }

    #[tokio::test]
    async fn debug_output_reveals_no_session_id() {
        let store = MemoryStore::new(60);
        let s = saved(&store).await;
        let shown = format!("{store:?} {s:?}");
        assert!(!shown.contains(s.id().as_str()));
    }
}
