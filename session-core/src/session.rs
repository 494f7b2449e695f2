//! The session a request works with, and the parts of it stores persist.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::from_ms;
use crate::{Error, Result, SessionConfig, SessionId, StorageKey};

/// Envelope version written in the first byte of every encoded record.
const CODEC_V1: u8 = 1;

/// Longest owner key accepted, in bytes. Owners are user keys ("user:42", an
/// account UUID), not free text; every backend can index this length.
pub const MAX_OWNER_LEN: usize = 1024;

/// One visitor's server-side state: a map of string keys to values.
///
/// Values set with [`set`](Session::set) are strings, read back with
/// [`get`](Session::get); any serde type can be stored with
/// [`insert`](Session::insert) and read with [`get_as`](Session::get_as).
/// Changes live in this value until a store saves it.
///
/// ```
/// use session_core::{SessionStore, SessionConfig, Session, SessionId};
///
/// let mut session = Session::new(SessionId::generate()?, &SessionConfig::from_secs(3600));
/// session.set("user_id", "42");
/// session.insert("cart", &vec![3, 1, 4])?;
/// assert_eq!(session.get("user_id"), Some("42"));
/// assert_eq!(session.get_as::<Vec<u32>>("cart")?, Some(vec![3, 1, 4]));
/// assert!(session.is_modified());
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    id: SessionId,
    meta: RecordMeta,
    data: SessionData,
    modified: bool,
}

impl Session {
    /// The session's ID: what goes into the cookie.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The string stored under `key`, if there is one and it is a string.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.map().get(key).and_then(Value::as_str)
    }

    /// Store a string under `key`. Setting the value a key already has does
    /// not mark the session modified.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if self.get(&key) == Some(value.as_str()) {
            return;
        }
        self.data.map_mut().insert(key, Value::String(value));
        self.modified = true;
    }

    /// Store any serde-serializable value under `key`.
    ///
    /// # Errors
    /// [`Error::Value`] if `value` cannot be serialized to JSON (for example a
    /// map with non-string keys, or a float that is NaN or infinite, which
    /// JSON cannot represent and would otherwise come back as `null`); the
    /// session is left unchanged.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let key = key.into();
        let value = value_to_json(&key, value)?;
        if self.data.map().get(&key) != Some(&value) {
            self.data.map_mut().insert(key, value);
            self.modified = true;
        }
        Ok(())
    }

    /// The value under `key` converted to `T`, or `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Value`] if the stored value does not have the shape of `T`.
    /// Where serde's message would quote a string or number held in the
    /// session (`invalid type: string "…"`, `integer `…``, an unknown
    /// variant or field), the quotation reads `<redacted>`, so the error
    /// can be logged (see
    /// [`redact_value_error`]). (A `Deserialize` impl of your own that writes
    /// the input into its message is beyond this.)
    pub fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.data.map().get(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|source| Error::Value {
                key: key.to_owned(),
                source: redact_value_error(source, v),
            }),
        }
    }

    /// The raw JSON value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.data.map().get(key)
    }

    /// Remove `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.data.map().contains_key(key) {
            return false;
        }
        self.data.map_mut().remove(key);
        self.modified = true;
        true
    }

    /// Remove every key (the session itself stays; see
    /// [`SessionStore::destroy`](crate::SessionStore::destroy) to end it).
    pub fn clear(&mut self) {
        if !self.data.map().is_empty() {
            self.data = SessionData::default();
            self.modified = true;
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.data.map().contains_key(key)
    }

    /// The keys, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.map().keys().map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.map().len()
    }

    /// Whether the session holds no keys.
    pub fn is_empty(&self) -> bool {
        self.data.map().is_empty()
    }

    /// The owner (user key) this session is bound to, if any.
    pub fn owner(&self) -> Option<&str> {
        self.meta.owner.as_deref()
    }

    /// Bind the session to an owner, typically at login together with
    /// [`SessionStore::cycle_id`](crate::SessionStore::cycle_id). The binding
    /// is stored with the session and lets the application list and end all
    /// of an owner's sessions. Owners compare exactly (byte for byte); an
    /// owner that is empty, longer than [`MAX_OWNER_LEN`] bytes or contains
    /// control characters is refused by the next save with
    /// [`Error::InvalidInput`] (see [`is_valid_owner`]).
    pub fn set_owner(&mut self, owner: impl Into<String>) {
        let owner = owner.into();
        if self.meta.owner.as_deref() != Some(owner.as_str()) {
            self.meta.owner = Some(owner.into());
            self.modified = true;
        }
    }

    /// Remove the owner binding (for example when a user signs out but the
    /// session is kept for an anonymous cart).
    pub fn clear_owner(&mut self) {
        if self.meta.owner.take().is_some() {
            self.modified = true;
        }
    }

    /// Whether the data or owner changed since the session was loaded, created
    /// or last saved.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Whether this session has never been stored.
    pub fn is_new(&self) -> bool {
        self.meta.version == 0
    }

    /// The stored version this value was loaded at (0 if never stored). A
    /// save succeeds only if the store still holds this version.
    pub fn version(&self) -> u64 {
        self.meta.version
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        from_ms(self.meta.created_ms)
    }

    /// When the session was last saved or touched.
    pub fn last_active(&self) -> SystemTime {
        from_ms(self.meta.last_active_ms)
    }

    /// When the session expires unless it is saved or touched again: the idle
    /// deadline, capped by the absolute one.
    pub fn expires_at(&self) -> SystemTime {
        from_ms(self.meta.expires_ms)
    }

    /// The absolute deadline, past which no activity keeps the session alive.
    pub fn absolute_deadline(&self) -> Option<SystemTime> {
        self.meta.absolute_ms.map(from_ms)
    }
}

/// # For store implementors
///
/// Applications do not need these: they are how a store turns a `Session`
/// into what it persists and back, so that every backend computes versions,
/// deadlines and encodings the same way.
impl Session {
    /// A new, never-stored session with `id`, its deadlines computed from
    /// `config` at the current time.
    pub fn new(id: SessionId, config: &SessionConfig) -> Self {
        let now = config.now_ms();
        let absolute_ms = config.absolute_deadline(now);
        Self {
            id,
            meta: RecordMeta {
                version: 0,
                created_ms: now,
                last_active_ms: now,
                expires_ms: config.expiry_after_activity(now, absolute_ms),
                absolute_ms,
                owner: None,
            },
            data: SessionData::default(),
            modified: false,
        }
    }

    /// A session as loaded from storage.
    pub fn from_stored(id: SessionId, meta: RecordMeta, data: SessionData) -> Self {
        Self {
            id,
            meta,
            data,
            modified: false,
        }
    }

    /// The metadata as it will be (or was) stored.
    pub fn meta(&self) -> &RecordMeta {
        &self.meta
    }

    /// The data, cheap to clone (copy-on-write).
    pub fn data(&self) -> &SessionData {
        &self.data
    }

    /// Compute what a save must write: the new metadata (version + 1, activity
    /// now, deadlines slid) and the encoded data, checked against the size
    /// limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if the encoded data exceeds the configured limit;
    /// [`Error::InvalidInput`] if the owner key is empty or too long;
    /// [`Error::Codec`] if the loaded version is `u64::MAX` (only a corrupt
    /// record holds one); [`Error::NotFound`] if the session's absolute
    /// deadline has passed.
    pub fn prepare_write(&self, config: &SessionConfig) -> Result<Write> {
        self.prepare_write_under(config, self.id.storage_key())
    }

    fn prepare_write_under(&self, config: &SessionConfig, key: &StorageKey) -> Result<Write> {
        if let Some(owner) = self.meta.owner.as_deref() {
            check_owner(owner)?;
        }
        let mut data = self.data.clone();
        let encoded = data.ensure_encoded();
        if encoded.len() > config.max_data_size() {
            return Err(Error::TooLarge {
                size: encoded.len(),
                limit: config.max_data_size(),
            });
        }
        // A stored version of u64::MAX cannot be advanced: only a corrupt
        // (or hand-written) record holds one, so it is reported as such
        // rather than wrapping to 0 and breaking compare-and-set.
        let version = self.meta.version.checked_add(1).ok_or_else(|| {
            Error::Codec("stored version is at its maximum and cannot advance".into())
        })?;
        let now = config.now_ms();
        let absolute_ms = self.absolute_under(config, now)?;
        let meta = RecordMeta {
            version,
            last_active_ms: now,
            expires_ms: config.expiry_after_activity(now, absolute_ms),
            absolute_ms,
            ..self.meta.clone()
        };
        Ok(Write {
            key: *key,
            expected_version: (!self.is_new()).then_some(self.meta.version),
            meta,
            data,
            encoded,
            now_ms: now,
        })
    }

    /// Record that `write` (from [`Session::prepare_write`]) was stored.
    pub fn commit_write(&mut self, write: Write) {
        // The written data is this session's data, now with its encoding
        // kept for the next save.
        self.data = write.data;
        self.meta = write.meta;
        self.modified = false;
    }

    /// Compute a touch: the new activity time and expiry, data untouched.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the session was never stored, or its absolute
    /// deadline has passed.
    pub fn prepare_touch(&self, config: &SessionConfig) -> Result<Touch> {
        if self.is_new() {
            return Err(Error::NotFound);
        }
        let now = config.now_ms();
        let absolute_ms = self.absolute_under(config, now)?;
        Ok(Touch {
            key: *self.id.storage_key(),
            last_active_ms: now,
            expires_ms: config.expiry_after_activity(now, absolute_ms),
            now_ms: now,
        })
    }

    /// The absolute deadline a write or touch at `now` applies: the stored
    /// one, or the one `config` gives from the creation time where that is
    /// earlier or the session was stored without one. So an absolute
    /// timeout configured (or shortened) after sessions were stored reaches
    /// them at their next save or touch, and never lets them live past
    /// their creation plus the timeout.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the session's absolute deadline has passed
    /// (even before its first save): it has expired, whatever its idle
    /// deadline says, and is neither stored nor extended.
    fn absolute_under(&self, config: &SessionConfig, now: i64) -> Result<Option<i64>> {
        let absolute = match (
            self.meta.absolute_ms,
            config.absolute_deadline(self.meta.created_ms),
        ) {
            (Some(stored), Some(configured)) => Some(stored.min(configured)),
            (stored, configured) => stored.or(configured),
        };
        if absolute.is_some_and(|at| !is_live(at, now)) {
            return Err(Error::NotFound);
        }
        Ok(absolute)
    }

    /// Record that `touch` was stored.
    pub fn commit_touch(&mut self, touch: &Touch) {
        self.meta.last_active_ms = touch.last_active_ms;
        self.meta.expires_ms = touch.expires_ms;
    }

    /// Compute a rotation to a fresh ID: the write of the current data (with
    /// any pending changes) under the new ID's key, and the old key to delete.
    /// Creation time and absolute deadline carry over.
    ///
    /// # Errors
    /// [`Error::TooLarge`] as for a save; [`Error::Backend`] if no randomness.
    pub fn prepare_rotation(&self, config: &SessionConfig) -> Result<Rotation> {
        self.prepare_rotation_to(config, SessionId::generate()?)
    }

    /// As [`Session::prepare_rotation`], to a new ID the store chose (a store
    /// may need the new key to share a shard or hash slot with the old one).
    ///
    /// # Errors
    /// As [`Session::prepare_rotation`].
    pub fn prepare_rotation_to(
        &self,
        config: &SessionConfig,
        new_id: SessionId,
    ) -> Result<Rotation> {
        let write = self.prepare_write_under(config, new_id.storage_key())?;
        Ok(Rotation {
            old_key: *self.id.storage_key(),
            new_id,
            write,
        })
    }

    /// Record that `rotation` was stored: the session now has the new ID.
    pub fn commit_rotation(&mut self, rotation: Rotation) {
        self.id = rotation.new_id;
        self.commit_write(rotation.write);
    }
}

/// The metadata stored beside a session's data.
///
/// Times are Unix milliseconds from the store's [`Clock`](crate::Clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Incremented by every save; 0 means never stored.
    pub version: u64,
    /// Creation time.
    pub created_ms: i64,
    /// Last save or touch.
    pub last_active_ms: i64,
    /// When the session expires: the idle deadline capped by the absolute one.
    /// A session is live while `now < expires_ms`.
    pub expires_ms: i64,
    /// The absolute deadline, if the store has an absolute timeout.
    pub absolute_ms: Option<i64>,
    /// The owner the session is bound to (shared, so loads do not copy it).
    pub owner: Option<Arc<str>>,
}

impl RecordMeta {
    /// Whether a session with this metadata is live at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        is_live(self.expires_ms, now_ms)
    }
}

/// `value` as the JSON a session stores under `key`, as
/// [`Session::insert`] converts it (for layers that keep their own log of
/// writes, so they refuse the same values).
///
/// # Errors
/// [`Error::Value`] if `value` cannot be serialized to JSON, or holds a
/// float that is NaN or infinite: JSON has no such numbers, and serde_json
/// would silently turn them into `null`.
pub fn value_to_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .and_then(|json| crate::finite::check(value, &json).map(|()| json))
        .map_err(|source| Error::Value {
            key: key.to_owned(),
            source,
        })
}

/// `error` (from converting `value` to a typed value) with each quotation
/// of a string or number of `value`, as serde quotes one (`"…"`,
/// `` `…` ``), replaced by `<redacted>`.
///
/// serde quotes the offending input in its messages (`invalid type: string
/// "…", expected u64`, `invalid type: integer `…``, `unknown variant
/// `…``), and session values are often secrets (CSRF and OAuth tokens,
/// one-time codes) while errors end up in logs and, in careless handlers,
/// in responses. The message is kept, since it says what was wrong, with
/// each such quotation replaced by `<redacted>`.
pub fn redact_value_error(error: serde_json::Error, value: &Value) -> serde_json::Error {
    /// How serde quotes a string (`Unexpected::Str`), a variant or a field.
    fn string(s: &str, out: &mut Vec<String>) {
        out.push(format!("{s:?}"));
        out.push(format!("`{s}`"));
    }
    /// Each string and number of `value`, as serde quotes it.
    fn quotations(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => string(s, out),
            Value::Number(n) => out.push(match n.as_f64() {
                // `Unexpected::Float` writes `{}` with ".0" added to a
                // whole number; integers come as themselves.
                Some(f) if n.is_f64() && f.is_finite() && f.fract() == 0.0 => {
                    format!("`{f}.0`")
                }
                Some(f) if n.is_f64() => format!("`{f}`"),
                _ => format!("`{n}`"),
            }),
            Value::Array(items) => items.iter().for_each(|v| quotations(v, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                string(k, out);
                quotations(v, out);
            }),
            Value::Null | Value::Bool(_) => {}
        }
    }
    let mut found = Vec::new();
    quotations(value, &mut found);
    let mut message = error.to_string();
    let mut changed = false;
    for quoted in found {
        if message.contains(&quoted) {
            message = message.replace(&quoted, "<redacted>");
            changed = true;
        }
    }
    if changed {
        <serde_json::Error as serde::de::Error>::custom(message)
    } else {
        error
    }
}

/// Whether `owner` is a key a session can be bound to: 1 to
/// [`MAX_OWNER_LEN`] bytes, without control characters (NUL, newlines…),
/// which some databases cannot store and no user key needs. Stores answer
/// owner queries for any other string with "no sessions" without asking
/// storage.
pub fn is_valid_owner(owner: &str) -> bool {
    check_owner(owner).is_ok()
}

fn check_owner(owner: &str) -> Result<()> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(Error::InvalidInput(format!(
            "an owner key must be 1 to {MAX_OWNER_LEN} bytes, not {}",
            owner.len()
        )));
    }
    if owner.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "an owner key must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Whether a session expiring at `expires_ms` is live at `now_ms`. The one
/// definition every backend's queries mirror: live means `now < expires`.
pub fn is_live(expires_ms: i64, now_ms: i64) -> bool {
    now_ms < expires_ms
}

/// A write a store must perform for [`SessionStore::save`](crate::SessionStore::save).
#[derive(Debug, Clone)]
pub struct Write {
    /// Where to write.
    pub key: StorageKey,
    /// `None`: insert only; fail with [`Error::Conflict`] if a live session is
    /// stored under `key`. `Some(v)`: update only, and only if the live stored
    /// version is `v`; fail with [`Error::Conflict`] if it differs and
    /// [`Error::NotFound`] if there is no live session.
    pub expected_version: Option<u64>,
    /// The metadata to store.
    pub meta: RecordMeta,
    /// The data (its encoding is `encoded`).
    pub data: SessionData,
    /// The data encoded with the shared codec: what a store keeps.
    pub encoded: Arc<[u8]>,
    /// The time the write was computed at: "live" means `now_ms < expires`.
    pub now_ms: i64,
}

/// A touch a store must perform for [`SessionStore::touch`](crate::SessionStore::touch):
/// update-only, data and version unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Touch {
    /// Which session.
    pub key: StorageKey,
    /// The new last-activity time.
    pub last_active_ms: i64,
    /// The new expiry.
    pub expires_ms: i64,
    /// The current time; a session that is not live now must not be touched.
    pub now_ms: i64,
}

/// A rotation a store must perform atomically for
/// [`SessionStore::cycle_id`](crate::SessionStore::cycle_id): `write` under
/// the new key (with `write.expected_version` checked against the session at
/// `old_key`, or insert-only if the session was never stored) and delete
/// `old_key`, all or nothing.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The key the session is stored under now.
    pub old_key: StorageKey,
    /// The new ID.
    pub new_id: SessionId,
    /// The write under the new ID's key.
    pub write: Write,
}

/// A session's key-value data.
///
/// Cheap to clone (clones share the map until one of them writes), decoded
/// at most once (data loaded as bytes is decoded on first access), and
/// encoded at most once per change (the bytes of the last encoding are kept
/// until the next write).
#[derive(Clone, Default)]
pub struct SessionData {
    /// The decoded map; filled on first access when the data came as bytes.
    map: OnceLock<Arc<BTreeMap<String, Value>>>,
    /// The encoded form, whenever it is known to match the map.
    encoded: Option<Arc<[u8]>>,
}

type DataMap = BTreeMap<String, Value>;

impl SessionData {
    /// Data from bytes this process produced with [`SessionData::encoded`]
    /// (for example kept by an in-process store), decoded only when first
    /// read. Bytes from storage outside the process must go through
    /// [`SessionData::decode`], which checks them.
    pub fn from_encoded_trusted(bytes: Arc<[u8]>) -> Self {
        Self {
            map: OnceLock::new(),
            encoded: Some(bytes),
        }
    }

    fn map(&self) -> &DataMap {
        self.map.get_or_init(|| {
            let map = match self.encoded.as_deref() {
                None => Ok(DataMap::new()),
                Some(bytes) => decode_map(bytes),
            };
            // Only `decode` (which checks) and `from_encoded_trusted` (bytes
            // of our own encoding) set `encoded` without a map, so this
            // cannot fail; an empty map keeps it panic-free regardless.
            debug_assert!(map.is_ok(), "trusted session bytes failed to decode");
            Arc::new(map.unwrap_or_default())
        })
    }

    fn map_mut(&mut self) -> &mut DataMap {
        self.map();
        self.encoded = None;
        let map = self.map.get_mut().expect("`map()` initialised it");
        Arc::make_mut(map)
    }

    /// The data encoded with the shared, versioned codec (one format byte,
    /// then JSON). Reuses the bytes of the last encoding or load if the data
    /// has not changed since.
    pub fn encoded(&self) -> Arc<[u8]> {
        match &self.encoded {
            Some(bytes) => Arc::clone(bytes),
            None => encode_map(self.map()).into(),
        }
    }

    /// Encode now if needed and keep the bytes, so the next
    /// [`encoded`](SessionData::encoded) is free.
    fn ensure_encoded(&mut self) -> Arc<[u8]> {
        let bytes = self.encoded();
        self.encoded = Some(Arc::clone(&bytes));
        bytes
    }

    /// Encode with the shared codec into a fresh vector.
    pub fn encode(&self) -> Vec<u8> {
        match &self.encoded {
            Some(bytes) => bytes.to_vec(),
            None => encode_map(self.map()),
        }
    }

    /// Decode and check bytes written by [`SessionData::encode`] or
    /// [`SessionData::encoded`], as read from storage.
    ///
    /// # Errors
    /// [`Error::Codec`] for anything else: empty input, an unknown format
    /// version, a body that is not a JSON object, or one that names a key
    /// twice in any object (the encoder never does; JSON readers disagree
    /// about which of the two counts, so the record is refused rather than
    /// read one way here and another elsewhere).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let map = decode_map(bytes)?;
        // `decode_map` checked the format byte and that the body is JSON.
        check_unique_keys(&bytes[1..])?;
        Ok(Self {
            map: OnceLock::from(Arc::new(map)),
            encoded: Some(bytes.into()),
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

fn encode_map(map: &DataMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(CODEC_V1);
    // Serializing a map of strings to JSON values into a Vec cannot fail.
    if serde_json::to_writer(&mut out, map).is_err() {
        out.truncate(1);
        out.extend_from_slice(b"{}");
    }
    out
}

fn decode_map(bytes: &[u8]) -> Result<DataMap> {
    match bytes.split_first() {
        None => Err(Error::Codec("empty record".into())),
        // Only where and what kind of fault: serde's message would quote the
        // record's data, which may hold secrets, into logs.
        Some((&CODEC_V1, body)) => serde_json::from_slice(body).map_err(|e| {
            Error::Codec(format!(
                "record body is not a JSON object ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        }),
        Some((other, _)) => Err(Error::Codec(format!(
            "unknown record format {other}; it was written by a newer or foreign version"
        ))),
    }
}

/// Refuse a JSON document that repeats a key within one object, at any
/// depth. serde_json keeps the last of the two without a word; a record
/// holding both was not written by this codec (corrupt or tampered with).
/// A separate pass over the bytes, so that the values themselves are still
/// read by serde_json's own `Value`, whatever its features.
fn check_unique_keys(body: &[u8]) -> Result<()> {
    use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::collections::HashSet;

    /// Walks any JSON value, checking each object's keys.
    struct Unique;

    /// An object key, borrowed from the input unless it holds escapes.
    struct Key<'de>(Cow<'de, str>);

    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            d.deserialize_any(Unique)
        }
    }

    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(KeyVisitor)
        }
    }

    impl<'de> Visitor<'de> for Unique {
        type Value = Unique;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> std::result::Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Unique, A::Error> {
            let mut seen = HashSet::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if !seen.insert(key) {
                    // The key is not quoted: keys can be data too.
                    return Err(A::Error::custom("repeated key"));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
    }

    // The body already parsed as JSON, so a repeated key is all that can
    // fail here.
    serde_json::from_slice::<Unique>(body)
        .map(|_| ())
        .map_err(|e| {
            Error::Codec(format!(
                "record body repeats a key in one object (at line {} column {})",
                e.line(),
                e.column()
            ))
        })
}

impl PartialEq for SessionData {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

/// Shows the keys only: values often hold secrets (CSRF and OAuth tokens),
/// and a `Session` in a log line or a panic message must not spill them.
impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.map().keys().map(|k| (k, format_args!("<redacted>"))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::time::Duration;

    fn session() -> Session {
        Session::new(
            SessionId::generate().unwrap(),
            &SessionConfig::from_secs(60),
        )
    }

    #[test]
    fn string_get_set_round_trip() {
        let mut s = session();
        assert_eq!(s.get("user_id"), None);
        s.set("user_id", "42");
        assert_eq!(s.get("user_id"), Some("42"));
        assert!(s.contains_key("user_id"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn setting_an_equal_value_is_not_a_modification() {
        let mut s = session();
        s.set("a", "1");
        s.insert("n", &7).unwrap();
        let w = s.prepare_write(&SessionConfig::from_secs(60)).unwrap();
        s.commit_write(w);
        assert!(!s.is_modified());
        s.set("a", "1");
        s.insert("n", &7).unwrap();
        s.set_owner("x");
        s.clear_owner();
        assert!(s.is_modified(), "owner change is a modification");
        let w = s.prepare_write(&SessionConfig::from_secs(60)).unwrap();
        s.commit_write(w);
        s.set("a", "1");
        s.insert("n", &7).unwrap();
        assert!(!s.remove("missing"));
        assert!(!s.is_modified());
        s.set("a", "2");
        assert!(s.is_modified());
    }

    #[test]
    fn a_version_at_its_maximum_is_a_codec_error_not_a_wrap() {
        let config = SessionConfig::from_secs(60);
        let fresh = session();
        let meta = RecordMeta {
            version: u64::MAX,
            ..fresh.meta().clone()
        };
        let mut s = Session::from_stored(fresh.id().clone(), meta, SessionData::default());
        s.set("a", "1");
        assert!(matches!(s.prepare_write(&config), Err(Error::Codec(_))));
        let to = SessionId::generate().unwrap();
        assert!(matches!(
            s.prepare_rotation_to(&config, to),
            Err(Error::Codec(_))
        ));
    }

    #[test]
    fn remove_and_clear_mark_modified_only_when_something_changes() {
        let mut s = session();
        s.clear();
        assert!(!s.is_modified());
        s.set("a", "1");
        s.set("b", "2");
        assert!(s.remove("a"));
        assert_eq!(s.keys().collect::<Vec<_>>(), ["b"]);
        s.clear();
        assert!(s.is_empty());
        assert!(s.is_modified());
    }

    #[test]
    fn typed_access_through_serde() {
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Cart {
            items: Vec<u32>,
            note: Option<String>,
        }
        let mut s = session();
        let cart = Cart {
            items: vec![1, 2],
            note: Some("gift".into()),
        };
        s.insert("cart", &cart).unwrap();
        assert_eq!(s.get_as::<Cart>("cart").unwrap(), Some(cart));
        assert_eq!(s.get_as::<Cart>("nothing").unwrap(), None);
        // A string set with `set` is also a typed String.
        s.set("name", "bob");
        assert_eq!(s.get_as::<String>("name").unwrap().as_deref(), Some("bob"));
        // `get` only answers for strings.
        assert_eq!(s.get("cart"), None);
        let err = s.get_as::<u64>("name").unwrap_err();
        assert!(
            matches!(err, Error::Value { ref key, .. } if key == "name"),
            "{err}"
        );
    }

    #[test]
    fn unserializable_values_are_refused_and_change_nothing() {
        let mut s = session();
        let mut bad = std::collections::HashMap::new();
        bad.insert((1, 2), 3);
        assert!(matches!(s.insert("bad", &bad), Err(Error::Value { .. })));
        assert!(!s.contains_key("bad"));
        assert!(!s.is_modified());
    }

    #[test]
    fn errors_never_quote_the_sessions_data() {
        let mut s = Session::new(
            SessionId::generate().unwrap(),
            &SessionConfig::from_secs(60),
        );
        s.set("csrf", "s3cret-token");
        let typed = s.get_as::<u64>("csrf").unwrap_err().to_string();
        assert!(!typed.contains("s3cret"), "{typed}");
        assert!(
            typed.contains("invalid type"),
            "still says what is wrong: {typed}"
        );

        // Numbers too: a one-time code, a PIN, an account number.
        s.insert("otp", &[804_913u64]).unwrap();
        s.insert("pin", &-4_271i64).unwrap();
        s.insert("rate", &[0.0173f64, 1234.0]).unwrap();
        for (key, wrong) in [
            ("otp", s.get_as::<Vec<String>>("otp")),
            ("pin", s.get_as::<u8>("pin").map(|_| None)),
            ("rate", s.get_as::<(f64, u8)>("rate").map(|_| None)),
            ("rate", s.get_as::<(u8, f64)>("rate").map(|_| None)),
        ] {
            let shown = wrong.unwrap_err().to_string();
            for secret in ["804913", "4271", "0.0173", "1234"] {
                assert!(!shown.contains(secret), "{key}: {shown}");
            }
            assert!(shown.contains("<redacted>"), "{key}: {shown}");
        }

        let corrupt = SessionData::decode(b"\x01\"s3cret-token\"")
            .unwrap_err()
            .to_string();
        assert!(!corrupt.contains("s3cret"), "{corrupt}");
        assert!(corrupt.contains("not a JSON object"), "{corrupt}");
    }

    #[test]
    fn non_finite_floats_are_refused_not_stored_as_null() {
        #[derive(Serialize)]
        struct Reading {
            label: Option<String>,
            values: Vec<f32>,
        }
        let mut s = session();
        s.insert("kept", &1.5f64).unwrap();
        let nested = Reading {
            label: None,
            values: vec![1.0, f32::NEG_INFINITY],
        };
        for result in [
            s.insert("x", &f64::NAN),
            s.insert("kept", &f64::INFINITY),
            s.insert("x", &Some(f32::NAN)),
            s.insert("x", &[(1, f64::NAN)]),
            s.insert("x", &nested),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, Error::Value { .. }) && err.to_string().contains("finite"),
                "{err}"
            );
        }
        assert!(!s.contains_key("x"));
        assert_eq!(s.get_as::<f64>("kept").unwrap(), Some(1.5));

        // Nulls that were meant as nulls, and finite floats, are fine.
        let fine = Reading {
            label: None,
            values: vec![f32::MAX, -0.0],
        };
        s.insert("fine", &fine).unwrap();
        s.insert("none", &None::<f64>).unwrap();
        s.insert("json", &serde_json::json!({"a": null, "b": [1.0]}))
            .unwrap();
        assert_eq!(s.get_as::<Option<f64>>("none").unwrap(), Some(None));
    }

    #[test]
    fn codec_round_trips_and_rejects_junk() {
        let mut s = session();
        s.set("ключ", "värde \"quoted\" \u{1F600}");
        s.insert("n", &u64::MAX).unwrap();
        let bytes = s.data().encode();
        assert_eq!(bytes[0], CODEC_V1);
        assert_eq!(SessionData::decode(&bytes).unwrap(), *s.data());

        for junk in [
            &b""[..],
            b"\x01",
            b"\x01[1,2]",
            b"\x01{\"a\":",
            b"\x02{}",
            b"{}",
            b"\xff\xfe\x00",
        ] {
            assert!(
                matches!(SessionData::decode(junk), Err(Error::Codec(_))),
                "{junk:?} decoded"
            );
        }
    }

    #[test]
    fn a_record_that_repeats_a_key_is_corrupt() {
        for twice in [
            &br#"{"user_id":"42","user_id":"1"}"#[..],
            br#"{"cart":{"n":1,"n":2}}"#,
            br#"{"list":[1,{"x":null,"y":0,"x":true}]}"#,
            // The same key once escaped: still the same key.
            br#"{"role":"user","\u0072ole":"admin"}"#,
        ] {
            let record = [&[CODEC_V1][..], twice].concat();
            let err = SessionData::decode(&record).unwrap_err();
            let shown = err.to_string();
            assert!(matches!(err, Error::Codec(_)), "{shown}");
            assert!(shown.contains("repeats a key"), "{shown}");
            for key in ["user_id", "\"n\"", "role", "\"x\""] {
                assert!(!shown.contains(key), "quotes the record: {shown}");
            }
        }

        // The same key in different objects is no repetition.
        let fine = br#"{"a":{"a":1,"b":{"a":2}},"b":[{"a":1},{"a":2}],"c":"a"}"#;
        let record = [&[CODEC_V1][..], fine].concat();
        let data = SessionData::decode(&record).unwrap();
        assert_eq!(data.len(), 3);
    }

    #[test]
    fn encoding_is_reused_until_the_data_changes() {
        let config = SessionConfig::from_secs(60);
        let mut s = session();
        s.set("k", "v");
        let w = s.prepare_write(&config).unwrap();
        let first = Arc::clone(&w.encoded);
        s.commit_write(w);
        // Saving again without a change reuses the bytes; an owner change
        // is metadata and does not touch them either.
        s.set_owner("alice");
        let w = s.prepare_write(&config).unwrap();
        assert!(Arc::ptr_eq(&first, &w.encoded));
        s.commit_write(w);
        s.set("k", "w");
        let w = s.prepare_write(&config).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &w.encoded),
            "a change is encoded afresh"
        );
        assert_eq!(
            SessionData::decode(&w.encoded).unwrap().encoded(),
            w.encoded
        );
    }

    #[test]
    fn trusted_bytes_are_decoded_on_first_read() {
        let mut s = session();
        s.set("user_id", "42");
        s.insert("n", &7).unwrap();
        let bytes = s.data().encoded();
        let lazy = SessionData::from_encoded_trusted(Arc::clone(&bytes));
        assert!(lazy.map.get().is_none(), "nothing decoded yet");
        assert!(Arc::ptr_eq(&lazy.encoded(), &bytes), "re-encoding is free");
        let loaded = Session::from_stored(s.id().clone(), s.meta().clone(), lazy);
        assert_eq!(loaded.get("user_id"), Some("42"));
        assert_eq!(loaded.get_as::<u32>("n").unwrap(), Some(7));
        assert_eq!(loaded.data(), s.data());
    }

    #[test]
    fn debug_output_shows_keys_but_no_values() {
        let mut s = session();
        s.set("csrf", "s3cret-token");
        let shown = format!("{s:?}");
        assert!(shown.contains("csrf"), "{shown}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
    }

    #[test]
    fn clones_share_data_until_written() {
        let mut a = session();
        a.set("k", "v");
        let mut b = a.clone();
        b.set("k", "w");
        assert_eq!(a.get("k"), Some("v"));
        assert_eq!(b.get("k"), Some("w"));
    }

    #[test]
    fn write_bumps_version_slides_idle_and_keeps_absolute() {
        let clock = ManualClock::new();
        let config = SessionConfig::from_secs(60)
            .with_absolute_timeout(Duration::from_secs(100))
            .with_clock(clock.clone());
        let mut s = Session::new(SessionId::generate().unwrap(), &config);
        let created = s.meta().created_ms;
        assert!(s.is_new());
        let w = s.prepare_write(&config).unwrap();
        assert_eq!(w.expected_version, None, "first save is insert-only");
        s.commit_write(w);
        assert_eq!(s.version(), 1);

        clock.advance(Duration::from_secs(50));
        let w = s.prepare_write(&config).unwrap();
        assert_eq!(w.expected_version, Some(1));
        assert_eq!(w.meta.version, 2);
        assert_eq!(
            w.meta.expires_ms,
            created + 100_000,
            "capped by absolute deadline"
        );
        assert_eq!(w.meta.created_ms, created);
        s.commit_write(w);

        let t = s.prepare_touch(&config).unwrap();
        s.commit_touch(&t);
        assert_eq!(s.version(), 2, "touch does not bump the version");
    }

    #[test]
    fn an_absolute_timeout_configured_later_reaches_stored_sessions() {
        let clock = ManualClock::new();
        let before = SessionConfig::from_secs(3600).with_clock(clock.clone());
        let mut s = Session::new(SessionId::generate().unwrap(), &before);
        let created = s.meta().created_ms;
        s.commit_write(s.prepare_write(&before).unwrap());
        assert_eq!(s.meta().absolute_ms, None);

        // The store restarts with an absolute timeout of 100 s.
        let after = before
            .clone()
            .with_absolute_timeout(Duration::from_secs(100));
        clock.advance(Duration::from_secs(50));
        let w = s.prepare_write(&after).unwrap();
        assert_eq!(w.meta.absolute_ms, Some(created + 100_000));
        assert_eq!(w.meta.expires_ms, created + 100_000, "capped at once");
        let t = s.prepare_touch(&after).unwrap();
        assert_eq!(t.expires_ms, created + 100_000);
        s.commit_write(w);

        // A shorter one later still applies; a longer one does not extend.
        let shorter = before
            .clone()
            .with_absolute_timeout(Duration::from_secs(80));
        assert_eq!(
            s.prepare_write(&shorter).unwrap().meta.absolute_ms,
            Some(created + 80_000)
        );
        let longer = before.with_absolute_timeout(Duration::from_secs(1000));
        assert_eq!(
            s.prepare_write(&longer).unwrap().meta.absolute_ms,
            Some(created + 100_000)
        );

        // Past the deadline, a stored session neither saves nor touches.
        clock.advance(Duration::from_secs(60));
        assert!(matches!(s.prepare_write(&after), Err(Error::NotFound)));
        assert!(matches!(s.prepare_touch(&after), Err(Error::NotFound)));

        // Nor does a new one whose first save comes too late: it would be
        // stored already dead.
        let fresh = Session::new(SessionId::generate().unwrap(), &after);
        clock.advance(Duration::from_secs(101));
        assert!(matches!(fresh.prepare_write(&after), Err(Error::NotFound)));
    }

    #[test]
    fn oversized_data_is_refused_before_any_write() {
        let config = SessionConfig::from_secs(60).with_max_data_size(32);
        let mut s = Session::new(SessionId::generate().unwrap(), &config);
        s.set("big", "x".repeat(64));
        assert!(matches!(
            s.prepare_write(&config),
            Err(Error::TooLarge { limit: 32, .. })
        ));
    }

    #[test]
    fn the_smallest_data_limit_still_stores_an_empty_session() {
        assert_eq!(
            SessionData::default().encode().len(),
            crate::config::EMPTY_DATA_LEN
        );
        let config = SessionConfig::from_secs(60).with_max_data_size(0);
        let mut s = Session::new(SessionId::generate().unwrap(), &config);
        let w = s
            .prepare_write(&config)
            .expect("an empty session fits any limit");
        s.commit_write(w);
        s.set("k", "v");
        assert!(matches!(
            s.prepare_write(&config),
            Err(Error::TooLarge { limit: 3, .. })
        ));
    }

    #[test]
    fn touching_a_never_stored_session_is_not_found() {
        let config = SessionConfig::from_secs(60);
        let s = Session::new(SessionId::generate().unwrap(), &config);
        assert!(matches!(s.prepare_touch(&config), Err(Error::NotFound)));
    }

    #[test]
    fn rotation_changes_id_and_keeps_data_and_creation() {
        let config = SessionConfig::from_secs(60);
        let mut s = Session::new(SessionId::generate().unwrap(), &config);
        s.set("k", "v");
        let old = s.id().clone();
        let r = s.prepare_rotation(&config).unwrap();
        assert_eq!(r.old_key, *old.storage_key());
        assert_eq!(r.write.key, *r.new_id.storage_key());
        let created = s.meta().created_ms;
        s.commit_rotation(r);
        assert_ne!(*s.id(), old);
        assert_eq!(s.get("k"), Some("v"));
        assert_eq!(s.meta().created_ms, created);
    }
}
