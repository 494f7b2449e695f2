//! `RedisSessionStore` and its `SessionStore` implementation.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fred::bytes::Bytes;
use fred::clients::WithOptions;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::{Client, ClientLike, KeysInterface, Pool, SortedSetsInterface, Value};
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use fred::types::{ClusterHash, CustomCommand};
use futures_util::future::join_all;
use session_core::{
    Error, OwnerLimit, OwnerLimitPolicy, RecordMeta, Result, Rotation, Session, SessionConfig,
    SessionData, SessionHandle, SessionId, SessionInfo, SessionStore, StorageKey, Write,
    async_trait,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::keys::{Layout, hex, hex_into};
use crate::record;
use crate::scripts::{LATEST_DEADLINE_MS, Script, Scripts};

/// How many expired index entries one purge script handles at a time.
const PURGE_BATCH: i64 = 256;
/// How often a touch follows the session to a new owner before giving up.
const TOUCH_ATTEMPTS: usize = 8;
/// How many candidate IDs one call for OS randomness yields when a
/// rotation looks for a new ID in the old one's bucket.
const ROTATION_BATCH: usize = 32;
/// Bytes of a generated session ID, and its length in base64url.
const ID_BYTES: usize = 32;
const ID_CHARS: usize = 43;
/// How often a listing or count of an owner's sessions reads them without
/// the owner's lock, finding a session moving each time, before it takes
/// the lock.
const LISTING_ATTEMPTS: usize = 2;
/// How long a command refused while its Cluster slot moves is sent again,
/// for a client without a command timeout ...
const SLOT_MOVE_BUDGET: Duration = Duration::from_secs(2);
/// ... first after this pause, doubling up to the next.
const SLOT_MOVE_FIRST_DELAY: Duration = Duration::from_millis(2);
const SLOT_MOVE_MAX_DELAY: Duration = Duration::from_millis(100);

/// A [`SessionStore`] in Redis (single node, Sentinel or Cluster), on a pool
/// of [fred] clients. Cheap to clone: clones share the pool.
///
/// Build one with [`RedisSessionStore::builder`] (from a URL),
/// [`RedisSessionStore::builder_from_config`] (from a fred `Config`), or
/// [`RedisSessionStore::builder_from_pool`] /
/// [`RedisSessionStore::builder_from_client`] (around clients you already
/// have). See the [crate docs](crate) for the key layout, the scripts and
/// the failure model.
#[derive(Clone)]
pub struct RedisSessionStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    /// The pool's clients, each sending every command with fred's own
    /// timeout, which (unlike dropping the future) also stops fred from
    /// writing the command later.
    pub(crate) clients: Vec<WithOptions<Client>>,
    /// Round-robin position in `clients`.
    pub(crate) next: AtomicUsize,
    /// Whether this store built the pool, and so closes it when dropped.
    pub(crate) owns_pool: bool,
    pub(crate) config: SessionConfig,
    pub(crate) layout: Layout,
    pub(crate) scripts: Scripts,
    pub(crate) command_timeout: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    /// How long receipts are kept, in ms, as the scripts take it.
    pub(crate) receipt_ttl: Value,
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
    ///
    /// A pool the store built (from a URL or a fred `Config`) is closed
    /// (`quit`) when the last clone of the store is dropped, even if a
    /// clone of the pool taken from here is still in use; keep the store
    /// alive for as long as you use its pool, or build the pool yourself
    /// and pass it to
    /// [`builder_from_pool`](RedisSessionStore::builder_from_pool), which
    /// never closes it.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }
}

/// The activity time and expiry a save or rotation kept from the stored
/// record because they were later than its own (a touch that reached Redis
/// after the write read its clock): what the record holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kept {
    last_active_ms: i64,
    expires_ms: i64,
}

impl Kept {
    /// From a write script's `LATER` reply: the activity fields it kept.
    fn parse(fields: &str) -> Option<Self> {
        let (last_active_ms, expires_ms) = record::parse_activity_fields(fields.as_bytes())?;
        Some(Self {
            last_active_ms,
            expires_ms,
        })
    }

    /// `write`, holding what the record holds, for the session to commit.
    fn apply(kept: Option<Self>, mut write: Write) -> Write {
        if let Some(kept) = kept {
            write.meta.last_active_ms = kept.last_active_ms;
            write.meta.expires_ms = kept.expires_ms;
        }
        write
    }
}

/// What a session-slot write script answered.
enum Outcome {
    /// Applied; with what it kept of the stored record, if anything.
    Written(Option<Kept>),
    Conflict,
    NotFound,
    Rebind,
    Corrupt,
}

impl Outcome {
    /// A write's outcome, and for an applied write that ended the stored
    /// record's binding to an owner, that owner and the record's deadline.
    fn parse_write(reply: &Value) -> Result<(Self, Option<(String, i64)>)> {
        let (status, unbound) = split_unbinding(reply)?;
        let outcome = match status.strip_prefix("LATER") {
            Some(fields) => Self::Written(Some(
                Kept::parse(fields).ok_or_else(|| unexpected(&status))?,
            )),
            None => Self::parse(&Value::String(status.into()))?,
        };
        match outcome {
            Self::Written(_) => Ok((outcome, unbound)),
            _ if unbound.is_some() => Err(unexpected("a refused write that unbound an owner")),
            _ => Ok((outcome, None)),
        }
    }

    fn parse(reply: &Value) -> Result<Self> {
        match status(reply)? {
            "OK" => Ok(Self::Written(None)),
            "CONFLICT" => Ok(Self::Conflict),
            "NOTFOUND" => Ok(Self::NotFound),
            "REBIND" => Ok(Self::Rebind),
            "CORRUPT" => Ok(Self::Corrupt),
            other => Err(unexpected(other)),
        }
    }

    /// `Ok` for a write that was applied (with what it kept of the stored
    /// record), the error for a refused one.
    fn written(self) -> Result<Option<Kept>> {
        match self {
            Self::Written(kept) => Ok(kept),
            Self::Conflict => Err(Error::Conflict),
            Self::NotFound => Err(Error::NotFound),
            Self::Rebind => Err(Error::backend_msg(
                "session-redis: unexpected REBIND from a binding write",
            )),
            Self::Corrupt => Err(corrupt_record()),
        }
    }
}

/// A write script's reply split in two: its status, and for a write that
/// ended a record's binding to an owner (after the status, a space, the
/// record's deadline, a space and the owner), that owner and deadline.
fn split_unbinding(reply: &Value) -> Result<(String, Option<(String, i64)>)> {
    let text = match reply {
        Value::String(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|_| {
            Error::backend_msg("session-redis: a script answered bytes that are not UTF-8")
        })?,
        other => {
            return Err(Error::backend_msg(format!(
                "session-redis: a script answered {:?}, not a status",
                other.kind()
            )));
        }
    };
    let Some((status, rest)) = text.split_once(' ') else {
        return Ok((text, None));
    };
    let unbound = rest
        .split_once(' ')
        .and_then(|(deadline, owner)| Some((owner.to_owned(), deadline.parse::<i64>().ok()?)))
        .ok_or_else(|| unexpected(&text))?;
    Ok((status.to_owned(), Some(unbound)))
}

/// What a destroy script did.
struct Destroyed {
    key: StorageKey,
    /// Whether it ended a session that was not known to be expired.
    live: bool,
    /// The owner the deleted record was bound to, and its deadline.
    owner: Option<(String, i64)>,
}

impl Destroyed {
    /// From the script's reply: `1` or `0`, then for a record bound to an
    /// owner a space, the record's deadline, a space and the owner.
    fn parse(key: StorageKey, reply: &Value) -> Result<Self> {
        let (status, owner) = split_unbinding(reply)?;
        let live = match status.as_str() {
            "1" => true,
            "0" => false,
            other => return Err(unexpected(other)),
        };
        Ok(Self { key, live, owner })
    }

    /// The index entry to drop if the deleted record was bound to `owner`.
    fn unbound_from(&self, owner: &str) -> Option<(StorageKey, i64)> {
        match &self.owner {
            Some((bound, deadline)) if bound == owner => Some((self.key, *deadline)),
            _ => None,
        }
    }
}

/// What a script's `CORRUPT` means: the record (or whatever holds its key)
/// is not a session record of this format.
fn corrupt_record() -> Error {
    Error::Codec(
        "stored session record is corrupt (or not a record of this format); destroy the session to start over"
            .into(),
    )
}

/// Whether Redis refused a read because the key holds another type: a
/// corrupt record, not a failed round trip.
fn wrong_type(e: &FredError) -> bool {
    e.details().starts_with("WRONGTYPE")
}

/// Whether a failed lock attempt may succeed if sent again: the command
/// may not have reached Redis (a timeout, a broken connection, a Cluster
/// or fail-over in transition), or the server asked to be asked again. An
/// error reply about the command or its key (`WRONGTYPE`, `ERR …`) would
/// only come back.
fn worth_retrying(e: &FredError) -> bool {
    match e.kind() {
        ErrorKind::Timeout
        | ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Cluster
        | ErrorKind::Routing
        | ErrorKind::Backpressure
        | ErrorKind::Sentinel => true,
        ErrorKind::Unknown => {
            let code = e.details().split_whitespace().next().unwrap_or_default();
            matches!(
                code,
                "BUSY" | "LOADING" | "TRYAGAIN" | "READONLY" | "MASTERDOWN" | "CLUSTERDOWN"
            )
        }
        _ => false,
    }
}

/// The status a script answered: a string, or the first item of an array.
fn status(reply: &Value) -> Result<&str> {
    let first = match reply {
        Value::Array(items) => items.first(),
        other => Some(other),
    };
    match first {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::backend_msg(format!(
            "session-redis: a script answered {:?}, not a status",
            other.kind()
        ))),
        None => Err(Error::backend_msg(
            "session-redis: a script answered without a status",
        )),
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

/// The metadata of a record from its first bytes (`None` if there is no
/// record: an empty `GETRANGE`).
fn meta_from(value: &Value) -> Result<Option<RecordMeta>> {
    let bytes = match value {
        Value::Null => return Ok(None),
        other => other.as_bytes().ok_or_else(|| {
            Error::backend_msg(format!(
                "session-redis: a record read answered {:?}",
                other.kind()
            ))
        })?,
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    record::decode_meta(bytes).map(Some)
}

fn no_randomness(e: getrandom::Error) -> Error {
    Error::backend_msg(format!("OS randomness unavailable: {e}"))
}

/// A fresh token, unique among every token of every process: names a
/// write's receipt, or an owner lock's holder. 64 random bits drawn once
/// per process, then a counter, in hex. Tokens only need to be unique,
/// not secret (they are not credentials), so they cost no system call.
fn token() -> Result<Bytes> {
    static NONCE: OnceLock<[u8; 8]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = match NONCE.get() {
        Some(nonce) => nonce,
        None => {
            let mut fresh = [0u8; 8];
            getrandom::fill(&mut fresh).map_err(no_randomness)?;
            NONCE.get_or_init(|| fresh)
        }
    };
    let mut out = [0u8; 32];
    hex_into(&mut out[..16], nonce);
    hex_into(
        &mut out[16..],
        &COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
    );
    Ok(Bytes::copy_from_slice(&out))
}

/// The storage key an index member names, if it is one: 64 hex digits.
fn key_of_member(member: &[u8]) -> Option<StorageKey> {
    let text = std::str::from_utf8(member).ok()?;
    StorageKey::from_hex(text).ok()
}

/// The first hex digits of a storage key: enough to follow one session in
/// logs, useless as a credential.
fn key_hint(key: &StorageKey) -> String {
    let mut hint = [0u8; 8];
    hex_into(&mut hint, &key.as_bytes()[..4]);
    String::from_utf8_lossy(&hint).into_owned()
}

/// A number as Redis takes it in a command: decimal text. (fred would
/// format an integer argument the same way, only slower.)
pub(crate) fn num(n: i64) -> Value {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    Value::Bytes(Bytes::copy_from_slice(&digits[at..]))
}

/// An expiry as `PXAT`, `PEXPIREAT` and index scores take it: Redis refuses
/// a `PXAT` before 1970, and a record expiring then is expired anyway; a
/// deadline after [`LATEST_DEADLINE_MS`] (the end of the year 9999) is
/// given to Redis as that (see there).
fn expiry_arg(expires_ms: i64) -> Value {
    num(expires_ms.clamp(1, LATEST_DEADLINE_MS))
}

/// The record version a compare-and-set expects, as the scripts compare it
/// (empty: insert only).
fn expected_arg(expected: Option<u64>) -> Value {
    match expected {
        Some(v) => Value::Bytes(Bytes::copy_from_slice(&record::version_field(v))),
        None => Value::from_static_str(""),
    }
}

/// A whole record, ready to send.
fn record_arg(write: &Write) -> Value {
    Value::Bytes(record::encode(&write.meta, &write.encoded).into())
}

/// Run `script` on `client` with `EVALSHA`, routed by its first key; if the
/// server lost the script (restart, `SCRIPT FLUSH`, fail-over), send the
/// source with `EVAL`, which runs it and caches it again on that server.
/// `command` builds the whole command from its first argument (the script's
/// hash or its source), so the arguments need no copy for the second try.
/// A call refused while a Cluster moves its slot is sent again (see
/// [`while_slot_moves`]).
///
/// Scripts go out as custom commands because fred applies per-command
/// options (our timeout) to those but not to its `LuaInterface`, and
/// pipelines them with other commands.
async fn run_script(
    client: &WithOptions<Client>,
    script: &Script,
    command: impl Fn(Value) -> Vec<Value>,
) -> Result<Value, FredError> {
    match run_script_once(client, script, &command).await {
        Err(e) if slot_moving(&e) => {
            Box::pin(while_slot_moves(client, || {
                run_script_once(client, script, &command)
            }))
            .await
        }
        other => other,
    }
}

/// Send a command again while it is refused because a Cluster is moving
/// its slot to another node, with a short back-off, until one command
/// timeout of `client` has passed (or [`SLOT_MOVE_BUDGET`] for a client
/// without one); the last refusal is the answer. The first attempt has
/// just been refused.
///
/// While a slot moves, both nodes refuse a command naming several keys of
/// the slot with `TRYAGAIN` as long as either lacks one of them (a
/// receipt key never exists beforehand, so every write to a session of
/// that slot meets it), and the old node answers `ASK` for a key it no
/// longer holds. fred follows `MOVED`, but sends a command it was told to
/// `ASK` elsewhere back to the old node, so that ends in fred's "too many
/// redirections" once the command's redirections (limited by the store's
/// per-command options, see the builder) run out. Either way nothing ran,
/// and the command goes through once the move ends.
async fn while_slot_moves<T, F>(
    client: &WithOptions<Client>,
    mut attempt: impl FnMut() -> F,
) -> Result<T, FredError>
where
    F: Future<Output = Result<T, FredError>>,
{
    let budget = client.options().timeout.unwrap_or(SLOT_MOVE_BUDGET);
    let started = Instant::now();
    let mut delay = SLOT_MOVE_FIRST_DELAY;
    loop {
        tracing::debug!("a Cluster slot is moving to another node; trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(SLOT_MOVE_MAX_DELAY);
        match attempt().await {
            Err(e) if slot_moving(&e) && started.elapsed() + delay < budget => {}
            other => return other,
        }
    }
}

/// Whether Redis (or fred) refused a command because a Cluster is moving
/// its slot: `TRYAGAIN` (the node has only some of a command's keys) or
/// fred's routing errors for redirections it could not follow. Nothing
/// ran, and the command will go through once the move ends.
fn slot_moving(e: &FredError) -> bool {
    *e.kind() == ErrorKind::Routing || e.details().starts_with("TRYAGAIN")
}

/// One attempt of [`run_script`]: `EVALSHA`, then `EVAL` if the server
/// lost the script.
async fn run_script_once(
    client: &WithOptions<Client>,
    script: &Script,
    command: &impl Fn(Value) -> Vec<Value>,
) -> Result<Value, FredError> {
    let argv = command(script.sha.clone());
    // The first key follows the hash and the key count.
    let hash = argv
        .get(2)
        .and_then(Value::as_bytes)
        .map_or(ClusterHash::Random, |k| {
            ClusterHash::Custom(fred::util::redis_keyslot(k))
        });
    let evalsha = CustomCommand::new_static("EVALSHA", hash.clone(), false);
    match client.custom::<Value, Value>(evalsha, argv).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            tracing::debug!(
                script = script.name,
                "script missing on the server; sending it again"
            );
            let eval = CustomCommand::new_static("EVAL", hash, false);
            // Boxed: a rare second command need not double the size of
            // every script call's future.
            Box::pin(
                client.custom::<Value, Value>(eval, command(Value::from_static_str(script.lua))),
            )
            .await
        }
        other => other,
    }
}

/// A script call's arguments: the hash or source, the key count, the
/// keys, then the other arguments.
struct Argv(Vec<Value>);

impl Argv {
    fn new(head: Value, keys: usize, args: usize) -> Self {
        let mut argv = Vec::with_capacity(2 + keys + args);
        argv.push(head);
        argv.push(num(keys as i64));
        Self(argv)
    }

    fn arg(mut self, value: impl Into<Value>) -> Self {
        self.0.push(value.into());
        self
    }

    fn args(mut self, values: impl IntoIterator<Item = Value>) -> Self {
        self.0.extend(values);
        self
    }

    fn done(self) -> Vec<Value> {
        self.0
    }
}

/// What a session-slot script needs to answer a re-sent call as it
/// answered the first: a receipt key named by a fresh token (its last
/// key) and the receipt lifetime (its first argument).
struct Receipt {
    key: Bytes,
    ttl: Value,
}

impl Receipt {
    /// The receipt as the script's last key.
    fn key(&self) -> Value {
        Value::Bytes(self.key.clone())
    }

    /// The lifetime as the script's first argument.
    fn args(&self) -> [Value; 1] {
        [self.ttl.clone()]
    }
}

/// A fresh 256-bit session ID whose storage key falls in `bucket`. That
/// takes about as many draws as there are buckets, each a base64 encoding
/// and a SHA-256 (a fraction of a microsecond together), so candidates come from
/// one call for OS randomness per batch.
fn id_in_bucket(layout: &Layout, bucket: u16) -> Result<SessionId> {
    let mut random = [0u8; ID_BYTES * ROTATION_BATCH];
    let mut text = [0u8; ID_CHARS];
    loop {
        getrandom::fill(&mut random).map_err(no_randomness)?;
        for candidate in random.chunks_exact(ID_BYTES) {
            let len = URL_SAFE_NO_PAD
                .encode_slice(candidate, &mut text)
                .map_err(|e| Error::backend_msg(format!("encoding a session ID: {e}")))?;
            let encoded =
                std::str::from_utf8(&text[..len]).map_err(|e| Error::backend_msg(e.to_string()))?;
            let id = SessionId::parse(encoded)?;
            if layout.bucket(id.storage_key()) == bucket {
                return Ok(id);
            }
        }
    }
}

/// A held (or possibly held) owner lock, with the client that took it:
/// every attempt and the release go through that one client, so they reach
/// Redis in the order they were sent. Release it with [`Inner::unlock`]; if
/// it is dropped first (a cancelled request, or a lock attempt that failed
/// on this side but may have run on the server), the drop releases it in
/// the background, so the owner's next login does not wait for the lease to
/// run out.
struct OwnerLock {
    key: Value,
    token: Value,
    client: Option<WithOptions<Client>>,
    /// When the lock command that took it was sent: the lease runs from
    /// that moment or later.
    leased_at: Instant,
    unlock: Script,
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, token, unlock) = (
            std::mem::replace(&mut self.key, Value::Null),
            std::mem::replace(&mut self.token, Value::Null),
            self.unlock.clone(),
        );
        runtime.spawn(async move {
            let _ = run_script(&client, &unlock, |head| {
                Argv::new(head, 1, 1)
                    .arg(key.clone())
                    .arg(token.clone())
                    .done()
            })
            .await;
        });
    }
}

/// A write that may bind a session to an owner: a save or a rotation.
enum Op {
    Save(Write),
    Rotate(Rotation),
}

impl Op {
    fn write(&self) -> &Write {
        match self {
            Self::Save(write) => write,
            Self::Rotate(rotation) => &rotation.write,
        }
    }

    /// Where the session is stored now, if it is.
    fn source(&self) -> Option<&StorageKey> {
        match self {
            Self::Save(write) => Some(&write.key),
            Self::Rotate(r) if r.write.expected_version.is_some() => Some(&r.old_key),
            Self::Rotate(_) => None,
        }
    }

    /// Record in `session` that the write was stored, keeping what it
    /// `kept` of the stored record.
    fn commit(self, session: &mut Session, kept: Option<Kept>) {
        match self {
            Self::Save(write) => session.commit_write(Kept::apply(kept, write)),
            Self::Rotate(mut rotation) => {
                rotation.write = Kept::apply(kept, rotation.write);
                session.commit_rotation(rotation);
            }
        }
    }
}

/// fred's message for `e`, readable: fred keeps an I/O error as the
/// `Debug` form of `std::io::Error` (`Os { code: 111, kind:
/// ConnectionRefused, message: "Connection refused" }`), of which this
/// keeps the message (`I/O error: Connection refused`).
pub(crate) fn describe(e: &FredError) -> String {
    if *e.kind() != ErrorKind::IO {
        return e.to_string();
    }
    let details = e.details();
    let quoted = |after: &str| {
        let rest = details.split_once(after)?.1;
        Some(rest.split_once('"')?.0.to_owned())
    };
    let message = quoted("message: \"")
        .or_else(|| quoted("error: \""))
        .or_else(|| {
            let kind = details.strip_prefix("Kind(")?.strip_suffix(')')?;
            Some(kind.to_owned())
        })
        .unwrap_or_else(|| details.to_owned());
    format!("I/O error: {message}")
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

    /// The next client, round-robin, preferring connected ones (as fred's
    /// pool does); every command sent through it carries the command
    /// timeout.
    fn client(&self) -> &WithOptions<Client> {
        // The builder refuses a pool without clients, so `n >= 1`.
        let n = self.clients.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.clients[(start + i) % n])
            .find(|c| c.is_connected())
            .unwrap_or(&self.clients[start])
    }

    fn fred_error(&self, e: FredError) -> Error {
        match e.kind() {
            ErrorKind::Timeout => Error::backend_msg(format!(
                "session-redis: Redis did not answer within {:?}",
                self.command_timeout
            )),
            ErrorKind::IO => Error::backend_msg(format!(
                "session-redis: the connection to Redis failed: {}",
                describe(&e)
            )),
            _ => Error::backend(e),
        }
    }

    /// Send the command `call` makes on the next client; while a Cluster
    /// moves its slot, send it again (see [`while_slot_moves`]).
    async fn call_raw<'a, T, F>(
        &'a self,
        call: impl Fn(&'a WithOptions<Client>) -> F,
    ) -> Result<T, FredError>
    where
        F: Future<Output = Result<T, FredError>>,
    {
        let client = self.client();
        match call(client).await {
            Err(e) if slot_moving(&e) => Box::pin(while_slot_moves(client, || call(client))).await,
            other => other,
        }
    }

    /// As [`call_raw`](Self::call_raw), with the store's error.
    async fn call<'a, T, F>(&'a self, call: impl Fn(&'a WithOptions<Client>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T, FredError>>,
    {
        self.call_raw(call).await.map_err(|e| self.fred_error(e))
    }

    async fn eval(&self, script: &Script, command: impl Fn(Value) -> Vec<Value>) -> Result<Value> {
        run_script(self.client(), script, command)
            .await
            .map_err(|e| self.fred_error(e))
    }

    /// A fresh receipt for a write to a session of `bucket`.
    fn receipt(&self, bucket: u16) -> Result<Receipt> {
        Ok(Receipt {
            key: self.layout.receipt(bucket, &token()?),
            ttl: self.receipt_ttl.clone(),
        })
    }

    // ---- session records ------------------------------------------------

    /// The metadata of a record (`None` if missing, a codec error if
    /// corrupt). Reads the header and owner only, never the data.
    async fn read_meta(&self, key: &StorageKey) -> Result<Option<RecordMeta>> {
        let reply = self
            .call_raw(|c| {
                c.getrange::<Value, _>(self.layout.record(key), 0, record::MAX_META_LEN - 1)
            })
            .await;
        match reply {
            Ok(value) => meta_from(&value),
            Err(e) if wrong_type(&e) => Err(corrupt_record()),
            Err(e) => Err(self.fred_error(e)),
        }
    }

    /// Write a whole record: insert-only or compare-and-set as `write` says;
    /// with `owner`, only if the stored record is bound to that owner.
    async fn write_record(&self, write: &Write, owner: Option<&str>) -> Result<Outcome> {
        let bucket = self.layout.bucket(&write.key);
        let record = self.layout.record_hex(bucket, &hex(&write.key));
        let receipt = self.receipt(bucket)?;
        let command = |head| {
            Argv::new(head, 3, 6)
                .arg(record.clone())
                .arg(self.layout.index(bucket))
                .arg(receipt.key())
                .args(receipt.args())
                .arg(num(write.now_ms))
                .arg(expected_arg(write.expected_version))
                .arg(record_arg(write))
                .arg(expiry_arg(write.meta.expires_ms))
                .arg(owner.unwrap_or_default())
                .done()
        };
        let reply = self.eval(&self.scripts.save, command).await?;
        self.written(&reply, write.key, write.now_ms).await
    }

    /// The outcome of a save or rotation script's `reply`. Where the write
    /// ended an owner link (the session rebound or unbound, or `key` the
    /// old key of a rotation), that owner's index no longer names `key`.
    async fn written(&self, reply: &Value, key: StorageKey, now: i64) -> Result<Outcome> {
        let (outcome, unbound) = Outcome::parse_write(reply)?;
        if let Some((owner, deadline)) = unbound {
            self.forget(&owner, &[(key, deadline)], now).await;
        }
        Ok(outcome)
    }

    /// Rotate a stored session (the new key is in the old key's bucket).
    async fn rotate_record(&self, rotation: &Rotation) -> Result<Outcome> {
        let write = &rotation.write;
        let bucket = self.layout.bucket(&write.key);
        let old = self.layout.record_hex(bucket, &hex(&rotation.old_key));
        let new = self.layout.record_hex(bucket, &hex(&write.key));
        let receipt = self.receipt(bucket)?;
        let command = |head| {
            Argv::new(head, 4, 5)
                .arg(old.clone())
                .arg(new.clone())
                .arg(self.layout.index(bucket))
                .arg(receipt.key())
                .args(receipt.args())
                .arg(num(write.now_ms))
                .arg(expected_arg(write.expected_version))
                .arg(record_arg(write))
                .arg(expiry_arg(write.meta.expires_ms))
                .done()
        };
        let reply = self.eval(&self.scripts.rotate, command).await?;
        self.written(&reply, rotation.old_key, write.now_ms).await
    }

    /// Perform `op`'s write: a save, a rotation of a stored session, or the
    /// first store of a new session under its new ID.
    async fn apply(&self, op: &Op, owner: Option<&str>) -> Result<Outcome> {
        match op {
            Op::Save(write) => self.write_record(write, owner).await,
            Op::Rotate(r) if r.write.expected_version.is_some() => self.rotate_record(r).await,
            Op::Rotate(r) => self.write_record(&r.write, None).await,
        }
    }

    /// Delete a record, only if bound to `owner` when given.
    async fn destroy_record(
        &self,
        key: &StorageKey,
        owner: Option<&str>,
        now: i64,
    ) -> Result<Destroyed> {
        let bucket = self.layout.bucket(key);
        let record = self.layout.record_hex(bucket, &hex(key));
        let receipt = self.receipt(bucket)?;
        let command = |head| {
            Argv::new(head, 3, 3)
                .arg(record.clone())
                .arg(self.layout.index(bucket))
                .arg(receipt.key())
                .args(receipt.args())
                .arg(num(now))
                .arg(owner.unwrap_or_default())
                .done()
        };
        Destroyed::parse(*key, &self.eval(&self.scripts.destroy, command).await?)
    }

    /// Delete records (each only if bound to `owner`), all at once, then
    /// drop their entries from `owner`'s index. Returns how many sessions
    /// were ended that were not known to be expired.
    async fn destroy_owned(&self, owner: &str, keys: &[StorageKey], now: i64) -> Result<u64> {
        let results = join_all(
            keys.iter()
                .map(|k| self.destroy_record(k, Some(owner), now)),
        )
        .await;
        let mut ended = 0;
        let mut gone = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok(destroyed) => {
                    ended += u64::from(destroyed.live);
                    gone.extend(destroyed.unbound_from(owner));
                }
                Err(e) => failure = Some(e),
            }
        }
        // Even when some deletions failed: the entries of those that
        // succeeded go.
        self.forget(owner, &gone, now).await;
        match failure {
            Some(e) => Err(e),
            None => Ok(ended),
        }
    }

    /// After a deletion: drop the entry of the record it deleted from the
    /// index of the owner the record was bound to.
    async fn forget_destroyed(&self, destroyed: &Destroyed, now: i64) {
        if let Some((owner, _)) = &destroyed.owner {
            let gone = destroyed.unbound_from(owner);
            self.forget(owner, gone.as_slice(), now).await;
        }
    }

    /// A new ID for rotating `session`: in its old ID's bucket if it is
    /// stored, so the rotation is one script in one hash slot; any fresh ID
    /// for a session never stored, which has no old record.
    fn rotation_id(&self, session: &Session) -> Result<SessionId> {
        if session.is_new() || self.layout.buckets() == 1 {
            return SessionId::generate();
        }
        id_in_bucket(&self.layout, self.layout.bucket(session.id().storage_key()))
    }

    // ---- owner indexes --------------------------------------------------

    /// Add (or extend) `key` in `owner`'s index before a record names it.
    async fn claim(&self, owner: &str, key: &StorageKey, expires_ms: i64, now: i64) -> Result<()> {
        let index = self.layout.owner_index(owner);
        let member = hex(key);
        let command = |head| {
            Argv::new(head, 1, 3)
                .arg(index.as_str())
                .arg(num(now))
                .arg(Bytes::copy_from_slice(&member))
                .arg(expiry_arg(expires_ms))
                .done()
        };
        self.eval(&self.scripts.claim, command).await.map(drop)
    }

    /// Drop from `owner`'s index the entries of records the store has just
    /// deleted (`(key, deadline)`), unless a login claimed a key anew since.
    /// Best effort: an entry left behind only costs space until its
    /// deadline, when the index would drop it anyway, so a failure is
    /// logged, not returned (the deletion it follows stands).
    async fn forget(&self, owner: &str, gone: &[(StorageKey, i64)], now: i64) {
        if gone.is_empty() {
            return;
        }
        let index = self.layout.owner_index(owner);
        let command = |head| {
            Argv::new(head, 1, 1 + 2 * gone.len())
                .arg(index.as_str())
                .arg(num(now))
                .args(gone.iter().flat_map(|(key, deadline)| {
                    [
                        Value::Bytes(Bytes::copy_from_slice(&hex(key))),
                        expiry_arg(*deadline),
                    ]
                }))
                .done()
        };
        if let Err(e) = self.eval(&self.scripts.forget, command).await {
            tracing::warn!(error = %e, "could not drop ended sessions from their owner's index; the entries expire by themselves");
        }
    }

    /// Undo a claim of `key` (with deadline `expires_ms`) in `owner`'s
    /// index whose write found no session (`NotFound`): a request still
    /// holding a session that was revoked or expired meanwhile must not
    /// leave the owner's index behind. The entry stays if a later claim
    /// raised it.
    async fn unclaim(&self, owner: &str, key: &StorageKey, expires_ms: i64, now: i64) {
        let deadline = expires_ms.clamp(1, LATEST_DEADLINE_MS);
        self.forget(owner, &[(*key, deadline)], now).await;
    }

    /// Members of `owner`'s index whose score (at least the deadline of any
    /// record bound to the owner under that key) is after `now`.
    async fn owner_members(&self, owner: &str, now: i64) -> Result<Vec<StorageKey>> {
        let after_now = ZRange {
            kind: ZRangeKind::Exclusive,
            range: ZRangeBound::Score(now as f64),
        };
        // Bytes, not strings: a member that is not a storage key (not even
        // UTF-8) is skipped, never a reason to fail.
        let members: Vec<Bytes> = self
            .call(|c| {
                c.zrangebyscore(
                    self.layout.owner_index(owner),
                    after_now.clone(),
                    "+inf",
                    false,
                    None,
                )
            })
            .await?;
        Ok(members.iter().filter_map(|m| key_of_member(m)).collect())
    }

    /// `owner`'s live sessions, verified against their records, oldest first.
    async fn owner_entries(&self, owner: &str, now: i64) -> Result<Vec<(StorageKey, RecordMeta)>> {
        let keys = self.owner_members(owner, now).await?;
        let metas = self.read_meta_by_bucket(&keys).await?;
        Ok(Self::live_entries(owner, now, keys, metas))
    }

    /// Of `keys` and their records' metadata, those live and bound to
    /// `owner`, oldest first.
    fn live_entries(
        owner: &str,
        now: i64,
        keys: Vec<StorageKey>,
        metas: Vec<Result<Option<RecordMeta>>>,
    ) -> Vec<(StorageKey, RecordMeta)> {
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
        found
    }

    /// As [`read_meta`](Self::read_meta), reading the records of each
    /// bucket at one instant (one script per bucket): a rotation, which
    /// moves a session between two keys of its bucket in one script, is
    /// then seen either done or not, so the session is found under exactly
    /// one of its keys if both are asked.
    async fn read_meta_by_bucket(
        &self,
        keys: &[StorageKey],
    ) -> Result<Vec<Result<Option<RecordMeta>>>> {
        let mut by_bucket: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_bucket
                .entry(self.layout.bucket(key))
                .or_default()
                .push(i);
        }
        let replies = join_all(by_bucket.iter().map(|(&bucket, at)| {
            let command = move |head| {
                Argv::new(head, at.len(), 1)
                    .args(
                        at.iter()
                            .map(|&i| self.layout.record_hex(bucket, &hex(&keys[i])).into()),
                    )
                    .arg(num(record::MAX_META_LEN as i64))
                    .done()
            };
            self.eval(&self.scripts.peek, command)
        }))
        .await;
        let mut metas: Vec<Result<Option<RecordMeta>>> = keys.iter().map(|_| Ok(None)).collect();
        for ((_, at), reply) in by_bucket.iter().zip(replies) {
            let reply = reply?;
            let items = as_array(&reply)?;
            if items.len() != at.len() {
                return Err(unexpected("a record read of the wrong length"));
            }
            for (&i, item) in at.iter().zip(items) {
                metas[i] = match item {
                    Value::Integer(_) => Err(corrupt_record()),
                    other => meta_from(other),
                };
            }
        }
        Ok(metas)
    }

    /// `owner`'s live sessions other than the one `op` writes, oldest first.
    async fn owner_others(&self, owner: &str, op: &Op, now: i64) -> Result<Vec<StorageKey>> {
        let (source, target) = (op.source(), &op.write().key);
        Ok(self
            .owner_entries(owner, now)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| Some(key) != source && key != target)
            .collect())
    }

    /// Take `owner`'s lock, waiting up to the configured lock wait.
    async fn lock(&self, owner: &str) -> Result<OwnerLock> {
        let mut lock = OwnerLock {
            key: self.layout.owner_lock(owner).into(),
            token: token()?.into(),
            client: Some(self.client().clone()),
            leased_at: Instant::now(),
            unlock: self.scripts.unlock.clone(),
        };
        let ttl = num(session_core::duration_ms(self.lock_ttl).max(1));
        let deadline = Instant::now().checked_add(self.lock_wait);
        let mut delay = Duration::from_millis(2);
        let mut failure = None;
        loop {
            let Some(client) = lock.client.as_ref() else {
                return Err(Error::backend_msg(
                    "session-redis: owner lock without a client",
                ));
            };
            let sent = Instant::now();
            let command = |head| {
                Argv::new(head, 1, 2)
                    .arg(lock.key.clone())
                    .arg(lock.token.clone())
                    .arg(ttl.clone())
                    .done()
            };
            match run_script(client, &self.scripts.lock, command).await {
                Ok(held) if held.as_i64() == Some(1) => {
                    lock.leased_at = sent;
                    return Ok(lock);
                }
                Ok(_) => {}
                // The command may have run anyway: later attempts use the
                // same token, so they find the lock if it did.
                Err(e) if worth_retrying(&e) => failure = Some(self.fred_error(e)),
                // An answer that will not change by asking again (a key of
                // another type under the lock's name, a refused command).
                // Dropping `lock` releases whatever an earlier attempt may
                // have taken.
                Err(e) => {
                    return Err(Error::backend_msg(format!(
                        "session-redis: Redis refused to take an owner lock: {e}"
                    )));
                }
            }
            if deadline.is_some_and(|d| Instant::now() + delay > d) {
                return Err(match failure {
                    // Dropping `lock` releases whatever this token may hold.
                    Some(e) => e,
                    None => {
                        lock.client = None; // every attempt was answered: nothing to release
                        Error::backend_msg(format!(
                            "session-redis: another login, rotation, revocation or listing of this owner's sessions held its lock for over {:?}; try again",
                            self.lock_wait
                        ))
                    }
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock(&self, mut lock: OwnerLock) {
        let Some(client) = lock.client.take() else {
            return;
        };
        let (key, token) = (
            std::mem::replace(&mut lock.key, Value::Null),
            std::mem::replace(&mut lock.token, Value::Null),
        );
        let command = |head| {
            Argv::new(head, 1, 1)
                .arg(key.clone())
                .arg(token.clone())
                .done()
        };
        if let Err(e) = run_script(&client, &self.scripts.unlock, command).await {
            tracing::warn!(error = %e, "could not release an owner lock; it expires by itself");
        }
    }

    /// Refuse to send writes under `lock` unless they reach Redis within
    /// the lease: a script call takes at most two command timeouts
    /// (`EVALSHA`, then `EVAL`), and fred never sends a command after its
    /// timeout.
    fn ensure_lease(&self, lock: &OwnerLock) -> Result<()> {
        let needed = self.command_timeout.saturating_mul(2);
        if lock.leased_at.elapsed().saturating_add(needed) < self.lock_ttl {
            Ok(())
        } else {
            Err(Error::backend_msg(
                "session-redis: Redis is too slow to finish this within the owner lock's lease; try again",
            ))
        }
    }

    /// Check `op` against the stored record before anything is written, so
    /// that a write the script would refuse claims nothing in an owner's
    /// index and, under a limit, is reported as stale rather than as one
    /// session too many. Returns the owner the stored session is bound to;
    /// a corrupt record is a `Codec` error, as the script would answer.
    /// (The script checks again; this only answers early.)
    async fn precheck(&self, op: &Op) -> Result<Option<Arc<str>>> {
        let Some(source) = op.source() else {
            return Ok(None);
        };
        let write = op.write();
        let stored = self
            .read_meta(source)
            .await?
            .filter(|m| m.is_live(write.now_ms));
        match (write.expected_version, stored) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::Conflict),
            (Some(_), None) => Err(Error::NotFound),
            (Some(expected), Some(meta)) if meta.version != expected => Err(Error::Conflict),
            (Some(_), Some(meta)) => Ok(meta.owner),
        }
    }

    /// Store `session` bound to `owner` with a write that may bind it newly
    /// (a login): a save, or with `new_id` a rotation.
    ///
    /// Two kinds of write take the owner's lock: a new binding under a
    /// per-owner limit (the count and the write must be one step), and a
    /// rotation of a session already bound to the owner. A rotation moves
    /// the session to a key claimed in the owner's index only now, which a
    /// revocation or a count that read the index a moment earlier would
    /// miss, while the old key it did read is gone by the time it acts on
    /// it; under the lock, revocations and counts (which take it too) see
    /// the session under one key or the other. Saves and touches keep their
    /// key, so they need no lock.
    async fn bind(
        self: &Arc<Self>,
        owner: &str,
        session: &mut Session,
        new_id: Option<SessionId>,
    ) -> Result<()> {
        let prepare = |session: &Session| -> Result<Op> {
            Ok(match &new_id {
                None => Op::Save(session.prepare_write(&self.config)?),
                Some(id) => Op::Rotate(session.prepare_rotation_to(&self.config, id.clone())?),
            })
        };
        let op = prepare(session)?;
        let stored = self.precheck(&op).await?;
        let already_bound = stored.as_deref() == Some(owner);
        let limit = self.config.max_sessions_per_owner();
        let moves_owned = already_bound && matches!(op, Op::Rotate(_));
        if !moves_owned && (already_bound || limit.is_none()) {
            // No limit to keep (or the session already belongs to `owner`),
            // and no key of the owner's moves.
            let kept = self.claim_and_write(owner, &op).await?;
            op.commit(session, kept);
            return Ok(());
        }
        let lock = self.lock(owner).await?;
        // Dated now, after the lock wait, and checked again under the lock.
        let op = match prepare(session) {
            Ok(op) => op,
            Err(e) => {
                self.unlock(lock).await;
                return Err(e);
            }
        };
        // The work under the lock runs to its end even if this request is
        // dropped meanwhile (a client gone, a timeout around the call): a
        // login dropped once its session was stored would otherwise never
        // end the owner's oldest sessions, and leave the owner over the
        // limit until its next login.
        let (inner, owner) = (Arc::clone(self), owner.to_owned());
        let locked = tokio::spawn(
            async move {
                let result = inner.bind_locked(&owner, op, limit, &lock).await;
                inner.unlock(lock).await;
                result
            }
            .in_current_span(),
        );
        match locked.await {
            Ok(result) => {
                let (op, kept) = result?;
                op.commit(session, kept);
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                return Err(Error::backend_msg(
                    "session-redis: the runtime shut down while a login held the owner's lock",
                ));
            }
        }
        Ok(())
    }

    /// The part of [`bind`](Self::bind) under the owner's lock: the limit
    /// (if any) applies only if the write binds the session newly.
    async fn bind_locked(
        &self,
        owner: &str,
        op: Op,
        limit: Option<OwnerLimit>,
        lock: &OwnerLock,
    ) -> Result<(Op, Option<Kept>)> {
        let stored = self.precheck(&op).await?;
        let limit = limit.filter(|_| stored.as_deref() != Some(owner));
        let max = |limit: OwnerLimit| usize::try_from(limit.max).unwrap_or(usize::MAX);
        if let Some(limit) = limit.filter(|l| l.policy == OwnerLimitPolicy::RefuseNew) {
            let others = self.owner_others(owner, &op, op.write().now_ms).await?;
            if others.len() >= max(limit) {
                return Err(Error::TooManySessions { limit: limit.max });
            }
        }
        let write = op.write();
        self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
            .await?;
        self.ensure_lease(lock)?;
        let kept = self.write_claimed(owner, &op).await?;
        // Only now that the write is stored: end the oldest sessions over
        // the limit. The write stands even if this fails (the next login
        // of the owner tries again).
        if let Some(limit) = limit.filter(|l| l.policy == OwnerLimitPolicy::EndOldest)
            && let Err(e) = self.end_oldest(owner, &op, max(limit), lock).await
        {
            tracing::warn!(error = %e, "could not end an owner's oldest sessions over the limit");
        }
        Ok((op, kept))
    }

    /// Claim `op`'s key in `owner`'s index, then write.
    async fn claim_and_write(&self, owner: &str, op: &Op) -> Result<Option<Kept>> {
        let write = op.write();
        self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
            .await?;
        self.write_claimed(owner, op).await
    }

    /// Perform `op`, whose key `owner`'s index has just claimed. If the
    /// session turns out to be gone, the claim stood for nothing: drop it.
    /// If the write kept a later expiry of the stored record (a rotation, or
    /// a rebinding, of a session a touch extended meanwhile), the index
    /// entry is raised to it: until then it holds the write's own deadline,
    /// still in the future, so listings and revocations see the session. The
    /// write stands even if that fails; the entry then ends up to the gap
    /// between the two requests early.
    async fn write_claimed(&self, owner: &str, op: &Op) -> Result<Option<Kept>> {
        let outcome = self.apply(op, None).await?;
        let write = op.write();
        if matches!(outcome, Outcome::NotFound) {
            self.unclaim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                .await;
        }
        let kept = outcome.written()?;
        if let Some(kept) = kept.filter(|k| k.expires_ms > write.meta.expires_ms)
            && let Err(e) = self
                .claim(owner, &write.key, kept.expires_ms, write.now_ms)
                .await
        {
            tracing::warn!(error = %e, "could not raise a rotated session's entry in its owner's index to the deadline it kept");
        }
        Ok(kept)
    }

    /// End `owner`'s oldest sessions other than the one `op` just wrote,
    /// until `max` are left (under the owner's `lock`, so none of them is
    /// moving to a key the listing did not see).
    async fn end_oldest(&self, owner: &str, op: &Op, max: usize, lock: &OwnerLock) -> Result<()> {
        let now = self.now();
        let others = self.owner_others(owner, op, now).await?;
        let excess = (others.len() + 1).saturating_sub(max);
        let oldest = &others[..excess.min(others.len())];
        if oldest.is_empty() {
            return Ok(());
        }
        self.ensure_lease(lock)?;
        self.destroy_owned(owner, oldest, now).await?;
        tracing::debug!(
            ended = oldest.len(),
            "ended an owner's oldest sessions to make room"
        );
        Ok(())
    }

    // ---- operations -----------------------------------------------------

    async fn save(self: &Arc<Self>, session: &mut Session) -> Result<()> {
        let write = session.prepare_write(&self.config)?;
        let Some(owner) = write.meta.owner.clone() else {
            let kept = self.write_record(&write, None).await?.written()?;
            session.commit_write(Kept::apply(kept, write));
            return Ok(());
        };
        // Boxed: an owned session's save takes more steps, whose futures
        // need not weigh on every anonymous save.
        Box::pin(self.save_owned(&owner, write, session)).await
    }

    async fn save_owned(
        self: &Arc<Self>,
        owner: &str,
        write: Write,
        session: &mut Session,
    ) -> Result<()> {
        if write.expected_version.is_some() {
            // An update that keeps the owner the record already names:
            // extend the owner's index first, then write only if the record
            // is still bound to that owner.
            self.claim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                .await?;
            match self.write_record(&write, Some(owner)).await? {
                Outcome::Rebind => {}
                Outcome::NotFound => {
                    self.unclaim(owner, &write.key, write.meta.expires_ms, write.now_ms)
                        .await;
                    return Err(Error::NotFound);
                }
                // The owner's index holds any deadline the write kept: the
                // touch that stored it claimed it for this owner.
                outcome => {
                    let kept = outcome.written()?;
                    session.commit_write(Kept::apply(kept, write));
                    return Ok(());
                }
            }
        }
        // A new binding.
        self.bind(owner, session, None).await
    }

    async fn touch(&self, session: &mut Session) -> Result<()> {
        let touch = session.prepare_touch(&self.config)?;
        let bucket = self.layout.bucket(&touch.key);
        let record = self.layout.record_hex(bucket, &hex(&touch.key));
        let fields = record::activity_fields(touch.last_active_ms, touch.expires_ms);
        let mut owner = session.owner().map(str::to_owned);
        for _ in 0..TOUCH_ATTEMPTS {
            if let Some(o) = owner.as_deref() {
                self.claim(o, &touch.key, touch.expires_ms, touch.now_ms)
                    .await?;
            }
            let command = |head| {
                Argv::new(head, 2, 4)
                    .arg(record.clone())
                    .arg(self.layout.index(bucket))
                    .arg(num(touch.now_ms))
                    .arg(Bytes::copy_from_slice(&fields))
                    .arg(expiry_arg(touch.expires_ms))
                    .arg(owner.as_deref().unwrap_or_default())
                    .done()
            };
            let reply = self.eval(&self.scripts.touch, command).await?;
            match status(&reply)? {
                "OK" => {
                    session.commit_touch(&touch);
                    return Ok(());
                }
                "NOTFOUND" => {
                    if let Some(o) = owner.as_deref() {
                        self.unclaim(o, &touch.key, touch.expires_ms, touch.now_ms)
                            .await;
                    }
                    return Err(Error::NotFound);
                }
                "CORRUPT" => return Err(corrupt_record()),
                // Rebound since it was loaded: extend the index of the owner
                // it has now, then try again.
                "OWNER" => owner = as_array(&reply)?.get(1).and_then(value_string),
                other => return Err(unexpected(other)),
            }
        }
        Err(Error::backend_msg(
            "session-redis: the session was bound to another owner during every attempt to touch it; try again",
        ))
    }

    async fn cycle_id(self: &Arc<Self>, session: &mut Session) -> Result<()> {
        let new_id = self.rotation_id(session)?;
        if let Some(owner) = session.owner().map(str::to_owned) {
            return self.bind(&owner, session, Some(new_id)).await;
        }
        let op = Op::Rotate(session.prepare_rotation_to(&self.config, new_id)?);
        let kept = self.apply(&op, None).await?.written()?;
        op.commit(session, kept);
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let now = self.now();
        let key = || self.layout.record(id.storage_key());
        // Awaited here rather than passed to a helper: fred's future is
        // large, and every async layer it is handed to would store it again.
        let client = self.client();
        let reply = match client.get(key()).await {
            Err(e) if slot_moving(&e) => {
                Box::pin(while_slot_moves(client, || client.get(key()))).await
            }
            other => other,
        };
        let value: Option<Bytes> = match reply {
            Ok(value) => value,
            Err(e) if wrong_type(&e) => return Err(corrupt_record()),
            Err(e) => return Err(self.fred_error(e)),
        };
        let Some(bytes) = value else {
            return Ok(None);
        };
        let (meta, data) = record::decode(&bytes)?;
        if !meta.is_live(now) {
            return Ok(None);
        }
        let data = SessionData::decode(data)?;
        Ok(Some(Session::from_stored(id.clone(), meta, data)))
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        let now = self.now();
        let destroyed = self.destroy_record(id.storage_key(), None, now).await?;
        self.forget_destroyed(&destroyed, now).await;
        Ok(destroyed.live)
    }

    async fn purge_bucket(&self, bucket: u16, now: i64) -> Result<(u64, Vec<String>)> {
        let index = self.layout.index(bucket);
        let mut removed = 0u64;
        let mut owners = Vec::new();
        loop {
            let fetched: Vec<Bytes> = self
                .call(|c| {
                    c.zrangebyscore(
                        index.clone(),
                        "-inf",
                        ZRange {
                            kind: ZRangeKind::Inclusive,
                            range: ZRangeBound::Score(now as f64),
                        },
                        false,
                        Some((0, PURGE_BATCH)),
                    )
                })
                .await?;
            let full = fetched.len() as i64 >= PURGE_BATCH;
            // A member that is not a storage key in hex names no record of
            // this store: drop it, so it can neither fail the purge nor
            // fill its batches for good.
            let (members, junk): (Vec<Bytes>, Vec<Bytes>) = fetched
                .into_iter()
                .partition(|m| key_of_member(m).is_some());
            if !junk.is_empty() {
                tracing::warn!(
                    count = junk.len(),
                    "dropping bucket index entries that name no session"
                );
                let _: i64 = self.call(|c| c.zrem(index.clone(), junk.clone())).await?;
            }
            if !members.is_empty() {
                let receipt = self.receipt(bucket)?;
                let command = |head| {
                    Argv::new(head, members.len() + 2, members.len() + 2)
                        .arg(index.clone())
                        .args(
                            members
                                .iter()
                                .map(|m| self.layout.record_hex(bucket, m).into()),
                        )
                        .arg(receipt.key())
                        .args(receipt.args())
                        .arg(num(now))
                        .args(members.iter().cloned().map(Value::Bytes))
                        .done()
                };
                let reply = self.eval(&self.scripts.purge, command).await?;
                let items = as_array(&reply)?;
                removed += items.first().and_then(Value::as_u64).unwrap_or(0);
                owners.extend(items.iter().skip(1).filter_map(value_string));
            }
            if !full {
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
        // Owner index entries whose score passed stand for expired records
        // only; dropping them needs no lock.
        for result in join_all(owners.iter().map(|owner| {
            self.call(|c| {
                c.zremrangebyscore::<i64, _, _, _>(
                    self.layout.owner_index(owner),
                    "-inf",
                    ZRange {
                        kind: ZRangeKind::Inclusive,
                        range: ZRangeBound::Score(now as f64),
                    },
                )
            })
        }))
        .await
        {
            result?;
        }
        Ok(removed)
    }

    async fn len(&self) -> Result<u64> {
        let now = self.now();
        // Sent together: fred writes the commands of concurrent calls to a
        // connection in one go.
        let counts = join_all((0..self.layout.buckets()).map(|bucket| {
            self.call(move |c| {
                c.zcount::<i64, _>(
                    self.layout.index(bucket),
                    now.saturating_add(1) as f64,
                    f64::INFINITY,
                )
            })
        }))
        .await;
        let mut total = 0u64;
        for count in counts {
            total += u64::try_from(count?).unwrap_or(0);
        }
        Ok(total)
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        Ok(self
            .owner_entries_settled(owner)
            .await?
            .iter()
            .map(|(key, meta)| SessionInfo::from_meta(key, meta, current))
            .collect())
    }

    /// `owner`'s live sessions for a listing or a count, each exactly once,
    /// without waiting for the owner's lock when no session moves meanwhile.
    ///
    /// A rotation claims the session's new key in the owner's index, then
    /// moves the record (one script in the session's bucket), then drops the
    /// old key, and the index and the records are read by separate commands.
    /// So: read the index, read each bucket's records at one instant (a
    /// moving session is then under one of the keys read, if the read
    /// names both), and read the index again. A session whose record had
    /// already moved to a key the first read did not name was claimed
    /// under that key after the first read, so the second read names a key
    /// the first did not (that one, or the key it has moved on to since):
    /// then read again, and after [`LISTING_ATTEMPTS`] such rounds under
    /// the owner's lock, which every rotation of the owner's sessions takes.
    async fn owner_entries_settled(&self, owner: &str) -> Result<Vec<(StorageKey, RecordMeta)>> {
        if !session_core::is_valid_owner(owner) {
            return Ok(Vec::new());
        }
        for _ in 0..LISTING_ATTEMPTS {
            let now = self.now();
            let keys = self.owner_members(owner, now).await?;
            let metas = self.read_meta_by_bucket(&keys).await?;
            let again = self.owner_members(owner, now).await?;
            let mut known = keys.clone();
            known.sort_unstable();
            if again.iter().all(|k| known.binary_search(k).is_ok()) {
                return Ok(Self::live_entries(owner, now, keys, metas));
            }
        }
        let lock = self.lock(owner).await?;
        let result = self.owner_entries(owner, self.now()).await;
        self.unlock(lock).await;
        result
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        if !session_core::is_valid_owner(owner) {
            return Ok(false);
        }
        let now = self.now();
        let members = self.owner_members(owner, now).await?;
        let Some(key) = members.into_iter().find(|k| k.handle() == *handle) else {
            return Ok(false);
        };
        let destroyed = self.destroy_record(&key, Some(owner), now).await?;
        self.forget_destroyed(&destroyed, now).await;
        Ok(destroyed.live)
    }

    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        // Every session bound to `owner` is in the index (claimed before its
        // record named the owner, and kept there while its deadline lasts).
        // The lock keeps the owner's sessions where the index read finds
        // them: a rotation of one takes it too. See "Owners" in the crate
        // docs.
        if !session_core::is_valid_owner(owner) {
            return Ok(0);
        }
        let lock = self.lock(owner).await?;
        let result = self.destroy_owner_sessions_locked(owner, keep, &lock).await;
        self.unlock(lock).await;
        result
    }

    async fn destroy_owner_sessions_locked(
        &self,
        owner: &str,
        keep: Option<&SessionId>,
        lock: &OwnerLock,
    ) -> Result<u64> {
        let now = self.now();
        let keep = keep.map(SessionId::storage_key);
        let members: Vec<StorageKey> = self
            .owner_members(owner, now)
            .await?
            .into_iter()
            .filter(|k| Some(k) != keep)
            .collect();
        if members.is_empty() {
            return Ok(0);
        }
        self.ensure_lease(lock)?;
        self.destroy_owned(owner, &members, now).await
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
        async { Ok(self.inner.owner_entries_settled(owner).await?.len() as u64) }
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
    #[test]
    fn io_errors_read_as_their_message_not_their_debug_form() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let os = std::io::Error::from_raw_os_error(111);
        let custom = std::io::Error::other("tls handshake failed");
        for (e, shown) in [
            (os, "I/O error: Connection refused"),
            (refused, "I/O error: ConnectionRefused"),
            (custom, "I/O error: tls handshake failed"),
        ] {
            assert_eq!(super::describe(&fred::error::Error::from(e)), shown);
        }
        let other = fred::error::Error::new(fred::error::ErrorKind::Auth, "WRONGPASS");
        assert_eq!(super::describe(&other), other.to_string());
    }

    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn script_replies_parse_into_outcomes() {
        assert!(matches!(
            Outcome::parse(&s("OK")).unwrap(),
            Outcome::Written(None)
        ));
        assert!(matches!(
            Outcome::parse(&s("REBIND")).unwrap(),
            Outcome::Rebind
        ));
        assert!(matches!(
            Outcome::parse(&s("CONFLICT")).unwrap().written(),
            Err(Error::Conflict)
        ));
        assert!(matches!(
            Outcome::parse(&s("NOTFOUND")).unwrap().written(),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            Outcome::parse(&s("CORRUPT")).unwrap().written(),
            Err(Error::Codec(_))
        ));
        assert!(matches!(Outcome::parse(&s("WAT")), Err(Error::Backend(_))));
        assert!(matches!(
            Outcome::parse(&Value::Null),
            Err(Error::Backend(_))
        ));
        assert_eq!(
            status(&Value::Array(vec![s("OWNER"), s("bob")])).unwrap(),
            "OWNER"
        );
        assert!(status(&Value::Array(Vec::new())).is_err());
    }

    #[test]
    fn destroy_replies_name_the_owner_whose_entry_goes() {
        let key = *SessionId::generate().unwrap().storage_key();
        let d = Destroyed::parse(key, &s("1")).unwrap();
        assert!(d.live && d.owner.is_none());
        assert!(d.unbound_from("ann").is_none());
        let d = Destroyed::parse(key, &s("0 1732000000000 ann lee")).unwrap();
        assert!(!d.live);
        assert_eq!(d.owner, Some(("ann lee".to_owned(), 1_732_000_000_000)));
        assert_eq!(d.unbound_from("ann lee"), Some((key, 1_732_000_000_000)));
        assert!(d.unbound_from("ann").is_none());
        for bad in ["2", "", "1 soon ann", "1 1732000000000"] {
            assert!(Destroyed::parse(key, &s(bad)).is_err(), "{bad:?}");
        }
        assert!(Destroyed::parse(key, &Value::Null).is_err());
    }

    #[test]
    fn write_replies_name_the_owner_a_write_unbound() {
        let (outcome, unbound) = Outcome::parse_write(&s("OK")).unwrap();
        assert!(matches!(outcome, Outcome::Written(None)) && unbound.is_none());
        let (outcome, unbound) = Outcome::parse_write(&s("OK 42 bo b")).unwrap();
        assert!(matches!(outcome, Outcome::Written(None)));
        assert_eq!(unbound, Some(("bo b".to_owned(), 42)));
        // A write that kept the stored record's later activity and expiry.
        let fields = record::activity_fields(7, 9);
        let later = format!("LATER{}", std::str::from_utf8(&fields).unwrap());
        let kept = Some(Kept {
            last_active_ms: 7,
            expires_ms: 9,
        });
        let (outcome, unbound) = Outcome::parse_write(&s(&later)).unwrap();
        assert!(matches!(outcome, Outcome::Written(k) if k == kept) && unbound.is_none());
        let (outcome, unbound) = Outcome::parse_write(&s(&format!("{later} 42 bob"))).unwrap();
        assert!(matches!(outcome, Outcome::Written(k) if k == kept));
        assert_eq!(unbound, Some(("bob".to_owned(), 42)));
        assert!(Outcome::parse_write(&s("LATER+0000000000000000007")).is_err());
        assert!(matches!(
            Outcome::parse_write(&s("CONFLICT")).unwrap().0,
            Outcome::Conflict
        ));
        assert!(Outcome::parse_write(&s("CONFLICT 42 bob")).is_err());
        assert!(Outcome::parse_write(&s("OK 42")).is_err());
        assert!(Outcome::parse_write(&Value::Integer(1)).is_err());
    }

    #[test]
    fn record_reads_tell_missing_from_corrupt() {
        assert!(meta_from(&Value::Null).unwrap().is_none());
        assert!(meta_from(&s("")).unwrap().is_none());
        assert!(matches!(meta_from(&s("junk")), Err(Error::Codec(_))));
        let meta = RecordMeta {
            version: 2,
            created_ms: 10,
            last_active_ms: 20,
            expires_ms: 30,
            absolute_ms: None,
            owner: Some(Arc::from("ann")),
        };
        let bytes = record::encode(&meta, b"\x01{}");
        let read = Value::Bytes(Bytes::copy_from_slice(&bytes[..record::HEADER_LEN + 3]));
        assert_eq!(meta_from(&read).unwrap(), Some(meta));
    }

    #[test]
    fn rotation_candidates_are_full_strength_ids_in_the_bucket() {
        let layout = Layout::new("p:".into(), crate::keys::MAX_BUCKETS);
        let mut seen = std::collections::HashSet::new();
        for bucket in [0, 1, 517, crate::keys::MAX_BUCKETS - 1] {
            for _ in 0..3 {
                let id = id_in_bucket(&layout, bucket).unwrap();
                assert_eq!(layout.bucket(id.storage_key()), bucket);
                assert_eq!(id.as_str().len(), 43, "256 bits, like a generated ID");
                assert!(seen.insert(id.as_str().to_owned()));
            }
        }
    }

    #[test]
    fn lock_attempts_are_repeated_only_when_asking_again_can_help() {
        for (kind, details) in [
            (ErrorKind::Timeout, "timed out"),
            (ErrorKind::IO, "connection reset"),
            (ErrorKind::Canceled, "canceled"),
            (ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"),
            (
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            (ErrorKind::Unknown, "BUSY Redis is busy running a script"),
            (
                ErrorKind::Unknown,
                "READONLY You can't write against a read only replica.",
            ),
        ] {
            assert!(
                worth_retrying(&FredError::new(kind.clone(), details)),
                "{details}"
            );
        }
        for (kind, details) in [
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (ErrorKind::Unknown, "ERR Error running script"),
            (ErrorKind::Unknown, "NOPERM this user has no permissions"),
            (ErrorKind::InvalidCommand, "unknown command"),
        ] {
            assert!(!worth_retrying(&FredError::new(kind, details)), "{details}");
        }
    }

    #[test]
    fn only_refusals_of_a_moving_slot_are_sent_again_while_it_moves() {
        for (kind, details) in [
            (
                ErrorKind::Unknown,
                "TRYAGAIN Multiple keys request during rehashing of slot",
            ),
            (ErrorKind::Routing, "Too many redirections."),
            (ErrorKind::Routing, "Max attempts reached."),
        ] {
            assert!(slot_moving(&FredError::new(kind, details)), "{details}");
        }
        for (kind, details) in [
            (ErrorKind::Timeout, "timed out"),
            (ErrorKind::IO, "connection reset"),
            (ErrorKind::Unknown, "ERR Error running script"),
            (ErrorKind::Unknown, "NOSCRIPT No matching script"),
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key",
            ),
            (ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"),
        ] {
            assert!(!slot_moving(&FredError::new(kind, details)), "{details}");
        }
    }

    #[test]
    fn tokens_are_unique_hex() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "one nonce per process");
    }

    #[test]
    fn numbers_are_sent_as_decimal_text() {
        for n in [0, 7, -7, 1_732_000_000_000, i64::MAX, i64::MIN] {
            assert_eq!(num(n).as_bytes(), Some(n.to_string().as_bytes()));
        }
    }

    #[test]
    fn expiries_are_sent_between_1970_and_the_end_of_9999() {
        assert_eq!(expiry_arg(-5).as_bytes(), Some(&b"1"[..]));
        assert_eq!(expiry_arg(0).as_bytes(), Some(&b"1"[..]));
        assert_eq!(
            expiry_arg(1_732_000_000_000).as_bytes(),
            Some(&b"1732000000000"[..])
        );
        for late in [LATEST_DEADLINE_MS + 1, i64::MAX] {
            assert_eq!(expiry_arg(late).as_bytes(), Some(&b"253402300799999"[..]));
        }
    }
}
