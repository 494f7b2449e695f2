//! `RedisSessionStore` and its `SessionStore` implementation.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fred::bytes::Bytes;
use fred::error::Error as FredError;
use fred::prelude::{ClientLike, HashesInterface, LuaInterface, Pool, SortedSetsInterface, Value};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use futures_util::future::join_all;
use session_core::{
    Error, OwnerLimitPolicy, RecordMeta, Result, Rotation, Session, SessionConfig, SessionData,
    SessionHandle, SessionId, SessionInfo, SessionStore, StorageKey, Write, async_trait,
    duration_ms,
};
use tracing::Instrument;

use crate::keys::Layout;
use crate::scripts::{Script, Scripts};

/// Record fields read to rebuild a session's metadata, in this order.
const META_FIELDS: [&str; 6] = [
    "version",
    "created",
    "last_active",
    "expires",
    "absolute",
    "owner",
];
/// The same, plus the data.
const LOAD_FIELDS: [&str; 7] = [
    "version",
    "created",
    "last_active",
    "expires",
    "absolute",
    "owner",
    "data",
];
/// How many expired index entries one purge script handles at a time.
const PURGE_BATCH: i64 = 256;
/// How often a touch re-reads the stored owner before giving up.
const TOUCH_ATTEMPTS: usize = 4;

/// A [`SessionStore`] in Redis (single node, Sentinel or Cluster), on a pool
/// of [fred] clients. Cheap to clone: clones share the pool.
///
/// Build one with [`RedisSessionStore::builder`] (from a URL),
/// [`RedisSessionStore::builder_from_config`] (from a fred `Config`), or
/// [`RedisSessionStore::builder_from_pool`] /
/// [`RedisSessionStore::builder_from_client`] (around clients you already
/// have). See the [crate docs](crate) for the key layout and the scripts.
#[derive(Clone)]
pub struct RedisSessionStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// Whether this store built the pool, and so closes it when dropped.
    pub(crate) owns_pool: bool,
    pub(crate) config: SessionConfig,
    pub(crate) layout: Layout,
    pub(crate) scripts: Scripts,
    pub(crate) command_timeout: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.owns_pool {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            handle.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

impl fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("key_prefix", &self.inner.layout.prefix())
            .field("buckets", &self.inner.layout.buckets())
            .field("pool_size", &self.inner.pool.size())
            .field("command_timeout", &self.inner.command_timeout)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// The prefix every key of this store starts with.
    pub fn key_prefix(&self) -> &str {
        self.inner.layout.prefix()
    }

    /// The number of buckets sessions are spread over.
    pub fn buckets(&self) -> u16 {
        self.inner.layout.buckets()
    }

    /// The fred pool the store sends its commands through, for health checks
    /// or metrics. Commands sent through it share the store's connections.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }
}

/// What a session-slot script answered.
enum Outcome {
    Written { old_owner: Option<String> },
    Conflict,
    NotFound,
    Rebind,
}

impl Outcome {
    fn parse(reply: &Value) -> Result<Self> {
        let items = as_array(reply)?;
        match status(items)?.as_str() {
            "OK" => Ok(Self::Written {
                old_owner: items.get(1).and_then(value_string),
            }),
            "CONFLICT" => Ok(Self::Conflict),
            "NOTFOUND" => Ok(Self::NotFound),
            "REBIND" => Ok(Self::Rebind),
            other => Err(unexpected(other)),
        }
    }

    /// The owner the write moved the session away from, or an error for
    /// a refused write.
    fn written(self) -> Result<Option<String>> {
        match self {
            Self::Written { old_owner } => Ok(old_owner),
            Self::Conflict => Err(Error::Conflict),
            Self::NotFound => Err(Error::NotFound),
            Self::Rebind => Err(Error::backend_msg(
                "session-redis: unexpected REBIND from a binding write",
            )),
        }
    }
}

fn as_array(reply: &Value) -> Result<&[Value]> {
    match reply {
        Value::Array(items) => Ok(items),
        other => Err(Error::backend_msg(format!(
            "session-redis: a script answered {:?}, not an array",
            other.kind()
        ))),
    }
}

fn status(items: &[Value]) -> Result<String> {
    items
        .first()
        .and_then(value_string)
        .ok_or_else(|| Error::backend_msg("session-redis: a script answered without a status"))
}

fn unexpected(status: &str) -> Error {
    Error::backend_msg(format!(
        "session-redis: a script answered an unknown status {status:?}"
    ))
}

fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => other.as_str().map(|s| s.into_owned()),
    }
}

fn field_i64(v: &Value, name: &str) -> Result<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        other => other
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| Error::Codec(format!("stored field {name:?} is not an integer"))),
    }
}

/// Rebuild the metadata from `META_FIELDS` (a prefix of `LOAD_FIELDS`).
/// `None` if the record does not exist.
fn decode_meta(values: &[Value]) -> Result<Option<RecordMeta>> {
    let [version, created, last_active, expires, absolute, owner, ..] = values else {
        return Err(Error::backend_msg(
            "session-redis: HMGET answered too few fields",
        ));
    };
    let Some(expires_ms) = field_i64(expires, "expires")? else {
        if values.iter().all(|v| matches!(v, Value::Null)) {
            return Ok(None);
        }
        return Err(Error::Codec("stored record has no expiry".into()));
    };
    let version = field_i64(version, "version")?
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| Error::Codec("stored record has no valid version".into()))?;
    let created_ms = field_i64(created, "created")?
        .ok_or_else(|| Error::Codec("stored record has no creation time".into()))?;
    let last_active_ms = field_i64(last_active, "last_active")?
        .ok_or_else(|| Error::Codec("stored record has no activity time".into()))?;
    let owner = match owner {
        Value::Null => None,
        other => Some(Arc::from(
            other
                .as_str()
                .ok_or_else(|| Error::Codec("stored owner is not UTF-8".into()))?
                .as_ref(),
        )),
    };
    Ok(Some(RecordMeta {
        version,
        created_ms,
        last_active_ms,
        expires_ms,
        absolute_ms: field_i64(absolute, "absolute")?,
        owner,
    }))
}

/// A fresh write token: lets a script recognise a retry of a write it
/// already applied (fred re-sends commands cut off by a lost connection).
fn token() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::backend_msg(format!("OS randomness unavailable: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The first hex digits of a storage key: enough to follow one session in
/// logs, useless as a credential.
fn key_hint(key: &StorageKey) -> String {
    let mut hex = key.to_hex();
    hex.truncate(8);
    hex
}

fn owner_args(owner: Option<&str>) -> [Value; 2] {
    match owner {
        Some(o) => ["1".into(), o.into()],
        None => ["0".into(), "".into()],
    }
}

/// ARGV 1 to 10 of the SAVE and ROTATE scripts.
fn record_args(write: &Write) -> Vec<Value> {
    let [has_owner, owner] = owner_args(write.meta.owner.as_deref());
    vec![
        write.now_ms.into(),
        write
            .expected_version
            .map_or_else(String::new, |v| v.to_string())
            .into(),
        write.meta.version.to_string().into(),
        write.meta.created_ms.into(),
        write.meta.last_active_ms.into(),
        write.meta.expires_ms.into(),
        write
            .meta
            .absolute_ms
            .map_or_else(String::new, |v| v.to_string())
            .into(),
        has_owner,
        owner,
        Value::Bytes(Bytes::copy_from_slice(&write.encoded)),
    ]
}

/// A held owner lock. Release it with [`Inner::unlock`]; if the future
/// holding it is dropped first (a cancelled request), dropping the guard
/// releases it in the background, so the owner's next login does not wait
/// for the lock to expire.
struct OwnerLock {
    key: String,
    token: String,
    pool: Option<Pool>,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let _ = pool
                .eval::<Value, _, _, _>(crate::scripts::UNLOCK, vec![key], vec![token])
                .await;
        });
    }
}

impl Inner {
    fn now(&self) -> i64 {
        self.config.now_ms()
    }

    fn span(&self, op: &'static str, key: Option<&StorageKey>) -> tracing::Span {
        tracing::debug_span!(
            "session_redis",
            op,
            prefix = self.layout.prefix(),
            key = key.map(key_hint).as_deref().unwrap_or("")
        )
    }

    /// Await one Redis call, bounded by the command timeout.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, FredError>>,
    ) -> Result<Result<T, FredError>> {
        tokio::time::timeout(self.command_timeout, call)
            .await
            .map_err(|_| {
                Error::backend_msg(format!(
                    "session-redis: Redis did not answer within {:?}",
                    self.command_timeout
                ))
            })
    }

    async fn call<T>(&self, call: impl Future<Output = Result<T, FredError>>) -> Result<T> {
        self.timed(call).await?.map_err(Error::backend)
    }

    /// Run a script by SHA; if the server lost it (restart, `SCRIPT FLUSH`,
    /// fail-over), send the source with `EVAL`, which runs it and caches it
    /// again on that server.
    async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<Value>) -> Result<Value> {
        let first = self
            .timed(self.pool.evalsha::<Value, _, _, _>(
                script.sha.as_str(),
                keys.clone(),
                args.clone(),
            ))
            .await?;
        match first {
            Ok(v) => Ok(v),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::debug!(
                    script = script.name,
                    "script missing on the server; sending it again"
                );
                self.call(self.pool.eval::<Value, _, _, _>(script.lua, keys, args))
                    .await
            }
            Err(e) => Err(Error::backend(e)),
        }
    }

    // ---- session records ------------------------------------------------

    /// The metadata of each record (`Ok(None)` if missing, a codec error if
    /// corrupt); the outer error is a failed round trip.
    async fn read_meta(&self, keys: &[StorageKey]) -> Result<Vec<Result<Option<RecordMeta>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pipe = self.pool.next().pipeline();
        for key in keys {
            let () = pipe
                .hmget(self.layout.record(key), META_FIELDS.to_vec())
                .await
                .map_err(Error::backend)?;
        }
        let replies = self
            .call(async { Ok::<_, FredError>(pipe.try_all::<Value>().await) })
            .await?;
        replies
            .into_iter()
            .map(|r| match r {
                Ok(v) => Ok(decode_meta(as_array(&v)?)),
                Err(e) => Err(Error::backend(e)),
            })
            .collect()
    }

    async fn write_record(&self, write: &Write, token: &str, same_owner: bool) -> Result<Outcome> {
        let bucket = self.layout.bucket(&write.key);
        let hex = write.key.to_hex();
        let mut args = record_args(write);
        args.extend([
            hex.as_str().into(),
            token.into(),
            if same_owner { "1" } else { "0" }.into(),
        ]);
        let keys = vec![
            self.layout.record_in(bucket, &hex),
            self.layout.index(bucket),
        ];
        Outcome::parse(&self.eval(&self.scripts.save, keys, args).await?)
    }

    async fn rotate_record(&self, rotation: &Rotation, token: &str) -> Result<Outcome> {
        let write = &rotation.write;
        let bucket = self.layout.bucket(&write.key);
        let old_hex = rotation.old_key.to_hex();
        let new_hex = write.key.to_hex();
        let mut args = record_args(write);
        args.extend([
            old_hex.as_str().into(),
            new_hex.as_str().into(),
            token.into(),
        ]);
        let keys = vec![
            self.layout.record_in(bucket, &old_hex),
            self.layout.record_in(bucket, &new_hex),
            self.layout.index(bucket),
        ];
        Outcome::parse(&self.eval(&self.scripts.rotate, keys, args).await?)
    }

    /// Delete a record, only if bound to `owner` when given. Returns whether
    /// a live session was removed and the owner it was bound to.
    async fn destroy_record(
        &self,
        key: &StorageKey,
        owner: Option<&str>,
        now: i64,
    ) -> Result<(bool, Option<String>)> {
        let bucket = self.layout.bucket(key);
        let hex = key.to_hex();
        let [has_owner, owner] = owner_args(owner);
        let keys = vec![
            self.layout.record_in(bucket, &hex),
            self.layout.index(bucket),
        ];
        let reply = self
            .eval(
                &self.scripts.destroy,
                keys,
                vec![now.into(), hex.into(), has_owner, owner],
            )
            .await?;
        let items = as_array(&reply)?;
        let was_live = items.first().and_then(Value::as_i64) == Some(1);
        Ok((was_live, items.get(1).and_then(value_string)))
    }

    // ---- owner indexes --------------------------------------------------

    /// Add (or extend) `key` in `owner`'s index before a record names it.
    async fn claim(&self, owner: &str, key: &StorageKey, expires_ms: i64, now: i64) -> Result<()> {
        let keys = vec![self.layout.owner_index(owner)];
        let args = vec![now.into(), key.to_hex().into(), expires_ms.into()];
        self.eval(&self.scripts.claim, keys, args).await.map(drop)
    }

    /// Members of `owner`'s index; with `live_after`, only those whose
    /// score (at least the record's deadline) is after that time.
    async fn owner_members(&self, owner: &str, live_after: Option<i64>) -> Result<Vec<StorageKey>> {
        let min = match live_after {
            Some(now) => ZRange {
                kind: ZRangeKind::Exclusive,
                range: ZRangeBound::Score(now as f64),
            },
            None => ZRange {
                kind: ZRangeKind::Inclusive,
                range: ZRangeBound::NegInfiniteScore,
            },
        };
        let members: Vec<String> = self
            .call(
                self.pool
                    .zrangebyscore(self.layout.owner_index(owner), min, "+inf", false, None),
            )
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| StorageKey::from_hex(m).ok())
            .collect())
    }

    /// `owner`'s live sessions, verified against their records, oldest first.
    async fn owner_entries(&self, owner: &str, now: i64) -> Result<Vec<(StorageKey, RecordMeta)>> {
        let keys = self.owner_members(owner, Some(now)).await?;
        let metas = self.read_meta(&keys).await?;
        let mut found: Vec<(StorageKey, RecordMeta)> = keys
            .into_iter()
            .zip(metas)
            .filter_map(|(key, meta)| match meta {
                Ok(meta) => meta.map(|m| (key, m)),
                Err(e) => {
                    // One unreadable record must not hide the others.
                    tracing::warn!(key = %key_hint(&key), error = %e, "skipping an unreadable session record");
                    None
                }
            })
            .filter(|(_, m)| m.is_live(now) && m.owner.as_deref() == Some(owner))
            .collect();
        found.sort_by_key(|(key, meta)| (meta.created_ms, *key));
        Ok(found)
    }

    /// Remove the index entries among `keys` whose record does not (any
    /// more) name `owner`. Only under the owner's lock: bindings take it too,
    /// so no record can start naming `owner` between the check and the
    /// removal.
    async fn prune_owner(&self, owner: &str, keys: &[StorageKey], now: i64) -> Result<()> {
        let metas = self.read_meta(keys).await?;
        let stale: Vec<String> = keys
            .iter()
            .zip(metas)
            .filter(|(_, meta)| match meta {
                Ok(Some(m)) => !(m.is_live(now) && m.owner.as_deref() == Some(owner)),
                Ok(None) => true,
                // Unreadable: keep the entry, so revocation still finds it.
                Err(_) => false,
            })
            .map(|(k, _)| k.to_hex())
            .collect();
        if !stale.is_empty() {
            self.call(
                self.pool
                    .zrem::<i64, _, _>(self.layout.owner_index(owner), stale),
            )
            .await?;
        }
        Ok(())
    }

    async fn try_lock(&self, owner: &str, token: &str) -> Result<bool> {
        let keys = vec![self.layout.owner_lock(owner)];
        let args = vec![token.into(), duration_ms(self.lock_ttl).max(1).into()];
        Ok(self.eval(&self.scripts.lock, keys, args).await?.as_i64() == Some(1))
    }

    /// Take `owner`'s lock, waiting up to the configured lock wait.
    async fn lock(&self, owner: &str) -> Result<OwnerLock> {
        let token = token()?;
        let deadline = tokio::time::Instant::now() + self.lock_wait;
        let mut delay = Duration::from_millis(2);
        loop {
            if self.try_lock(owner, &token).await? {
                return Ok(OwnerLock {
                    key: self.layout.owner_lock(owner),
                    token,
                    pool: Some(self.pool.clone()),
                });
            }
            if tokio::time::Instant::now() + delay > deadline {
                return Err(Error::backend_msg(format!(
                    "session-redis: another login of this owner held its lock for over {:?}; try again",
                    self.lock_wait
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock(&self, mut lock: OwnerLock) {
        lock.pool = None; // released here, not by the drop guard
        let released = self
            .eval(
                &self.scripts.unlock,
                vec![std::mem::take(&mut lock.key)],
                vec![std::mem::take(&mut lock.token).into()],
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release an owner lock; it expires by itself");
        }
    }

    /// Run `critical` under `owner`'s lock, releasing it whatever happens.
    async fn locked<T>(&self, owner: &str, critical: impl Future<Output = Result<T>>) -> Result<T> {
        let lock = self.lock(owner).await?;
        let result = critical.await;
        self.unlock(lock).await;
        result
    }

    /// Best effort, after a session left `owner` (rebound, rotated away or
    /// destroyed): drop its stale index entries if the lock is free now.
    /// Entries left behind are harmless: reads verify them and they expire.
    async fn forget(&self, owner: &str, keys: &[StorageKey], now: i64) {
        let result = async {
            let token = token()?;
            if !self.try_lock(owner, &token).await? {
                return Ok(());
            }
            let lock = OwnerLock {
                key: self.layout.owner_lock(owner),
                token,
                pool: Some(self.pool.clone()),
            };
            let pruned = self.prune_owner(owner, keys, now).await;
            self.unlock(lock).await;
            pruned
        }
        .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "stale owner index entries left for later");
        }
    }

    /// Make room for a session newly bound to `owner` under the per-owner
    /// limit (call with the owner's lock held). `current` is where the
    /// session being bound is stored now, if it is; it is never counted.
    async fn admit(&self, owner: &str, current: Option<&StorageKey>, now: i64) -> Result<()> {
        let Some(limit) = self.config.max_sessions_per_owner() else {
            return Ok(());
        };
        let members = self.owner_members(owner, None).await?;
        self.prune_owner(owner, &members, now).await?;
        let others: Vec<(StorageKey, RecordMeta)> = self
            .owner_entries(owner, now)
            .await?
            .into_iter()
            .filter(|(k, _)| Some(k) != current)
            .collect();
        let excess = (others.len() + 1).saturating_sub(limit.max as usize);
        if excess == 0 {
            return Ok(());
        }
        if limit.policy != OwnerLimitPolicy::EndOldest {
            return Err(Error::TooManySessions { limit: limit.max });
        }
        let oldest: Vec<StorageKey> = others.iter().take(excess).map(|(k, _)| *k).collect();
        for result in join_all(
            oldest
                .iter()
                .map(|k| self.destroy_record(k, Some(owner), now)),
        )
        .await
        {
            result?;
        }
        tracing::debug!(
            ended = oldest.len(),
            "ended an owner's oldest sessions to make room"
        );
        self.prune_owner(owner, &oldest, now).await
    }

    /// Whether the stored, live record at `key` is bound to `owner`.
    async fn stored_owner_is(&self, key: &StorageKey, owner: &str, now: i64) -> Result<bool> {
        let metas = self.read_meta(std::slice::from_ref(key)).await?;
        Ok(matches!(
            metas.first(),
            Some(Ok(Some(m))) if m.is_live(now) && m.owner.as_deref() == Some(owner)
        ))
    }

    // ---- operations -----------------------------------------------------

    async fn save(&self, session: &mut Session) -> Result<()> {
        let write = session.prepare_write(&self.config)?;
        let token = token()?;
        let old_owner = match write.meta.owner.as_deref() {
            None => self.write_record(&write, &token, false).await?.written()?,
            Some(owner) => {
                // Fast path for an update that keeps the owner: extend the
                // owner's index, then write if the record still names them.
                let fast = if write.expected_version.is_some() {
                    self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                        .await?;
                    match self.write_record(&write, &token, true).await? {
                        Outcome::Rebind => None,
                        other => Some(other),
                    }
                } else {
                    None
                };
                match fast {
                    Some(Outcome::NotFound) => {
                        // Destroyed meanwhile: drop the entry just claimed.
                        self.forget(owner, &[write.key], write.now_ms).await;
                        return Err(Error::NotFound);
                    }
                    Some(outcome) => outcome.written()?,
                    None => {
                        // A new binding: serialised per owner, limit applied.
                        let current = write.expected_version.map(|_| write.key);
                        self.locked(owner, async {
                            self.admit(owner, current.as_ref(), write.now_ms).await?;
                            self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                                .await?;
                            let outcome = self.write_record(&write, &token, false).await?;
                            if !matches!(outcome, Outcome::Written { .. }) {
                                self.prune_owner(owner, &[write.key], write.now_ms).await?;
                            }
                            outcome.written()
                        })
                        .await?
                    }
                }
            }
        };
        let (key, now) = (write.key, write.now_ms);
        session.commit_write(write);
        if let Some(old) = old_owner {
            self.forget(&old, &[key], now).await;
        }
        Ok(())
    }

    async fn touch(&self, session: &mut Session) -> Result<()> {
        let touch = session.prepare_touch(&self.config)?;
        let bucket = self.layout.bucket(&touch.key);
        let hex = touch.key.to_hex();
        let keys = vec![
            self.layout.record_in(bucket, &hex),
            self.layout.index(bucket),
        ];
        let mut owner = session.owner().map(str::to_owned);
        for _ in 0..TOUCH_ATTEMPTS {
            if let Some(o) = owner.as_deref() {
                self.claim(o, &touch.key, touch.expires_ms, touch.now_ms)
                    .await?;
            }
            let [has_owner, owner_arg] = owner_args(owner.as_deref());
            let args = vec![
                touch.now_ms.into(),
                touch.last_active_ms.into(),
                touch.expires_ms.into(),
                hex.clone().into(),
                has_owner,
                owner_arg,
            ];
            let reply = self.eval(&self.scripts.touch, keys.clone(), args).await?;
            let items = as_array(&reply)?;
            match status(items)?.as_str() {
                "OK" => {
                    session.commit_touch(&touch);
                    return Ok(());
                }
                "NOTFOUND" => return Err(Error::NotFound),
                // Someone rebound the session since it was loaded: extend
                // the index of the owner it has now, then try again.
                "OWNER" => owner = items.get(1).and_then(value_string),
                other => return Err(unexpected(other)),
            }
        }
        Err(Error::Conflict)
    }

    async fn cycle_id(&self, session: &mut Session) -> Result<()> {
        let old_key = *session.id().storage_key();
        let bucket = self.layout.bucket(&old_key);
        // The new ID must land in the old one's bucket, so the rotation is
        // one script in one hash slot.
        let new_id = loop {
            let id = SessionId::generate()?;
            if self.layout.bucket(id.storage_key()) == bucket {
                break id;
            }
        };
        let rotation = session.prepare_rotation_to(&self.config, new_id)?;
        let token = token()?;
        let write = &rotation.write;
        let stored = write.expected_version.is_some();
        let old_owner = match write.meta.owner.as_deref() {
            None => self.rotate_record(&rotation, &token).await?.written()?,
            Some(owner) => {
                self.locked(owner, async {
                    // Only a session that did not belong to the owner yet
                    // counts against the limit.
                    if self.config.max_sessions_per_owner().is_some()
                        && !(stored && self.stored_owner_is(&old_key, owner, write.now_ms).await?)
                    {
                        self.admit(owner, stored.then_some(&old_key), write.now_ms)
                            .await?;
                    }
                    self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                        .await?;
                    let outcome = self.rotate_record(&rotation, &token).await?;
                    if !matches!(outcome, Outcome::Written { .. }) {
                        self.prune_owner(owner, &[write.key], write.now_ms).await?;
                    }
                    let old_owner = outcome.written()?;
                    if old_owner.as_deref() == Some(owner) {
                        // The old key's entry in this owner's index is stale
                        // now; we hold the lock, so drop it at once.
                        self.prune_owner(owner, &[old_key], write.now_ms).await?;
                        return Ok(None);
                    }
                    Ok(old_owner)
                })
                .await?
            }
        };
        let now = write.now_ms;
        session.commit_rotation(rotation);
        if let Some(old) = old_owner {
            self.forget(&old, &[old_key], now).await;
        }
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let now = self.now();
        let values: Vec<Value> = self
            .call(
                self.pool
                    .hmget(self.layout.record(id.storage_key()), LOAD_FIELDS.to_vec()),
            )
            .await?;
        let Some(meta) = decode_meta(&values)? else {
            return Ok(None);
        };
        if !meta.is_live(now) {
            return Ok(None);
        }
        let data = match values.get(6) {
            Some(Value::Null) | None => {
                return Err(Error::Codec("stored record has no data".into()));
            }
            Some(v) => SessionData::decode(v.as_bytes().unwrap_or_default())?,
        };
        Ok(Some(Session::from_stored(id.clone(), meta, data)))
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let now = self.now();
        let key = id.storage_key();
        let (was_live, owner) = self.destroy_record(key, None, now).await?;
        if let Some(owner) = owner {
            self.forget(&owner, &[*key], now).await;
        }
        Ok(was_live)
    }

    async fn purge_bucket(&self, bucket: u16, now: i64) -> Result<(u64, Vec<String>)> {
        let index = self.layout.index(bucket);
        let mut removed = 0u64;
        let mut owners = Vec::new();
        loop {
            let members: Vec<String> = self
                .call(self.pool.zrangebyscore(
                    index.as_str(),
                    "-inf",
                    ZRange {
                        kind: ZRangeKind::Inclusive,
                        range: ZRangeBound::Score(now as f64),
                    },
                    false,
                    Some((0, PURGE_BATCH)),
                ))
                .await?;
            if members.is_empty() {
                break;
            }
            let mut keys = Vec::with_capacity(members.len() + 1);
            keys.push(index.clone());
            keys.extend(members.iter().map(|m| self.layout.record_in(bucket, m)));
            let mut args: Vec<Value> = Vec::with_capacity(members.len() + 1);
            args.push(now.into());
            args.extend(members.iter().map(|m| Value::from(m.as_str())));
            let reply = self.eval(&self.scripts.purge, keys, args).await?;
            let items = as_array(&reply)?;
            removed += items.first().and_then(Value::as_u64).unwrap_or(0);
            owners.extend(items.iter().skip(1).filter_map(value_string));
            if (members.len() as i64) < PURGE_BATCH {
                break;
            }
        }
        Ok((removed, owners))
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = self.now();
        let results = join_all((0..self.layout.buckets()).map(|b| self.purge_bucket(b, now))).await;
        let mut removed = 0;
        let mut owners = Vec::new();
        for result in results {
            let (n, o) = result?;
            removed += n;
            owners.extend(o);
        }
        owners.sort_unstable();
        owners.dedup();
        // Entries whose deadline passed are dead whatever their record says;
        // dropping them needs no lock.
        for result in join_all(owners.iter().map(|owner| {
            self.call(self.pool.zremrangebyscore::<i64, _, _, _>(
                self.layout.owner_index(owner),
                "-inf",
                ZRange {
                    kind: ZRangeKind::Inclusive,
                    range: ZRangeBound::Score(now as f64),
                },
            ))
        }))
        .await
        {
            result?;
        }
        Ok(removed)
    }

    async fn len(&self) -> Result<u64> {
        let now = self.now();
        let pipe = self.pool.next().pipeline();
        for bucket in 0..self.layout.buckets() {
            let () = pipe
                .zcount(self.layout.index(bucket), (now + 1) as f64, f64::INFINITY)
                .await
                .map_err(Error::backend)?;
        }
        let counts = self
            .call(async { Ok::<_, FredError>(pipe.try_all::<i64>().await) })
            .await?;
        let mut total = 0u64;
        for count in counts {
            total += u64::try_from(count.map_err(Error::backend)?).unwrap_or(0);
        }
        Ok(total)
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        let now = self.now();
        Ok(self
            .owner_entries(owner, now)
            .await?
            .iter()
            .map(|(key, meta)| SessionInfo::from_meta(key, meta, current))
            .collect())
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        let now = self.now();
        let members = self.owner_members(owner, Some(now)).await?;
        let Some(key) = members.into_iter().find(|k| k.handle() == *handle) else {
            return Ok(false);
        };
        let (was_live, _) = self.destroy_record(&key, Some(owner), now).await?;
        self.forget(owner, &[key], now).await;
        Ok(was_live)
    }

    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        let now = self.now();
        let keep = keep.map(SessionId::storage_key);
        // Under the lock no binding of this owner is half done, so every
        // session that names the owner is listed in the index.
        self.locked(owner, async {
            let members: Vec<StorageKey> = self
                .owner_members(owner, None)
                .await?
                .into_iter()
                .filter(|k| Some(k) != keep)
                .collect();
            let mut ended = 0;
            for result in join_all(
                members
                    .iter()
                    .map(|k| self.destroy_record(k, Some(owner), now)),
            )
            .await
            {
                if result?.0 {
                    ended += 1;
                }
            }
            self.prune_owner(owner, &members, now).await?;
            Ok(ended)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let span = self.inner.span("load", Some(id.storage_key()));
        self.inner.load(id).instrument(span).await
    }

    async fn save(&self, session: &mut Session) -> Result<()> {
        let span = self.inner.span("save", Some(session.id().storage_key()));
        self.inner.save(session).instrument(span).await
    }

    async fn touch(&self, session: &mut Session) -> Result<()> {
        let span = self.inner.span("touch", Some(session.id().storage_key()));
        self.inner.touch(session).instrument(span).await
    }

    async fn cycle_id(&self, session: &mut Session) -> Result<()> {
        let span = self
            .inner
            .span("cycle_id", Some(session.id().storage_key()));
        self.inner.cycle_id(session).instrument(span).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let span = self.inner.span("destroy", Some(id.storage_key()));
        self.inner.destroy(id).instrument(span).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let span = self.inner.span("purge_expired", None);
        self.inner.purge_expired().instrument(span).await
    }

    async fn len(&self) -> Result<u64> {
        let span = self.inner.span("len", None);
        self.inner.len().instrument(span).await
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        let span = self.inner.span("owner_sessions", None);
        self.inner
            .owner_sessions(owner, current)
            .instrument(span)
            .await
    }

    async fn count_owner_sessions(&self, owner: &str) -> Result<u64> {
        let span = self.inner.span("count_owner_sessions", None);
        async {
            Ok(self
                .inner
                .owner_entries(owner, self.inner.now())
                .await?
                .len() as u64)
        }
        .instrument(span)
        .await
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        let span = self.inner.span("destroy_owner_session", None);
        self.inner
            .destroy_owner_session(owner, handle)
            .instrument(span)
            .await
    }

    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        let span = self.inner.span("destroy_owner_sessions", None);
        self.inner
            .destroy_owner_sessions(owner, keep)
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn a_missing_record_decodes_as_none() {
        let nulls = vec![Value::Null; 7];
        assert!(decode_meta(&nulls).unwrap().is_none());
    }

    #[test]
    fn a_record_decodes_with_and_without_optional_fields() {
        let full = [
            s("3"),
            s("10"),
            s("20"),
            s("30"),
            s("40"),
            s("alice"),
            Value::Null,
        ];
        let meta = decode_meta(&full).unwrap().unwrap();
        assert_eq!(
            (
                meta.version,
                meta.created_ms,
                meta.last_active_ms,
                meta.expires_ms
            ),
            (3, 10, 20, 30)
        );
        assert_eq!(meta.absolute_ms, Some(40));
        assert_eq!(meta.owner.as_deref(), Some("alice"));
        let bare = [s("1"), s("10"), s("20"), s("30"), Value::Null, Value::Null];
        let meta = decode_meta(&bare).unwrap().unwrap();
        assert_eq!((meta.absolute_ms, meta.owner), (None, None));
    }

    #[test]
    fn corrupt_records_are_codec_errors() {
        let no_expiry = [
            s("1"),
            s("10"),
            s("20"),
            Value::Null,
            Value::Null,
            Value::Null,
        ];
        assert!(matches!(decode_meta(&no_expiry), Err(Error::Codec(_))));
        let bad_number = [s("x"), s("10"), s("20"), s("30"), Value::Null, Value::Null];
        assert!(matches!(decode_meta(&bad_number), Err(Error::Codec(_))));
        let bad_owner = [
            s("1"),
            s("10"),
            s("20"),
            s("30"),
            Value::Null,
            Value::Bytes(Bytes::from_static(&[0xff, 0xfe])),
        ];
        assert!(matches!(decode_meta(&bad_owner), Err(Error::Codec(_))));
    }

    #[test]
    fn script_replies_parse_into_outcomes() {
        let ok = Value::Array(vec![s("OK"), s("bob")]);
        assert!(
            matches!(Outcome::parse(&ok).unwrap(), Outcome::Written { old_owner: Some(o) } if o == "bob")
        );
        assert!(matches!(
            Outcome::parse(&Value::Array(vec![s("CONFLICT")]))
                .unwrap()
                .written(),
            Err(Error::Conflict)
        ));
        assert!(matches!(
            Outcome::parse(&Value::Array(vec![s("NOTFOUND")]))
                .unwrap()
                .written(),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Outcome::parse(&Value::Array(vec![s("WAT")])),
            Err(Error::Backend(_))
        ));
        assert!(matches!(
            Outcome::parse(&Value::Null),
            Err(Error::Backend(_))
        ));
    }

    #[test]
    fn tokens_are_fresh_hex() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
