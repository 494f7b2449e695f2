//! [`Session`]: the per-request handle, and what happens to it when the
//! response is ready.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use session_core::{Error, Result, SessionId, SessionStore, StorageKey};
use tokio::sync::{Mutex, MutexGuard};
use tracing::Instrument as _;

use crate::SessionFailure;
use crate::layer::Shared;

/// The session of the request being handled.
///
/// The [`SessionLayer`](crate::SessionLayer) puts one in the request
/// extensions; with the `axum` feature a handler simply takes it as an
/// argument. Clones are cheap and share the same state.
///
/// # Lazy
///
/// Nothing is read from the store until a method needs the session's
/// contents, and nothing is stored unless the handler changes something. A
/// request without a (live) session gets a new one only when the handler
/// writes to it, under a fresh random ID: an ID offered by the client is
/// never adopted.
///
/// # Reads, writes and concurrency
///
/// Writes ([`set`](Self::set), [`insert`](Self::insert),
/// [`remove`](Self::remove), [`clear`](Self::clear),
/// [`set_owner`](Self::set_owner), [`update`](Self::update)) change this
/// request's copy at once and are stored together when the response is ready
/// (unless it is a 5xx). The layer records them, and the stored value of
/// every key the handler read ([`get`](Self::get), [`get_as`](Self::get_as),
/// [`contains_key`](Self::contains_key), [`owner`](Self::owner)) that it had
/// not itself overwritten first.
///
/// If another request stored the session meanwhile, the save meets a
/// conflict. The layer then reloads it: if every key this handler read still
/// has the value it saw, the recorded writes are applied again to the fresh
/// session (closures given to [`update`](Self::update) run again) and saved;
/// otherwise the handler decided on stale data, so nothing is saved and the
/// response becomes `409 Conflict` (see [`SessionFailure`]). No write is ever
/// silently lost.
///
/// Read-modify-write of one value, such as a counter, belongs in
/// [`update`](Self::update): its closure is re-run on conflict instead of
/// adding to the read set, so concurrent increments all count.
///
/// # Errors
///
/// Methods that may need to load the session return the store's
/// [`Error`] when loading fails (the store is down, or the record is corrupt:
/// [`Error::Codec`]); what to answer is the handler's choice.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The well-formed session ID the request's cookie carried, if any: not
    /// yet known to be live.
    cookie_id: Option<SessionId>,
    state: Mutex<State>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the ID: only whether the request brought one.
        f.debug_struct("Session")
            .field("cookie", &self.inner.cookie_id.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    slot: Slot,
    /// The handler's writes since the session was loaded or last stored, to
    /// replay on a fresh copy after a conflict.
    ops: Vec<Op>,
    /// Stored values of the keys the handler read, as first seen.
    reads: HashMap<String, Option<Value>>,
    /// The stored owner, if the handler read it.
    owner_read: Option<Option<String>>,
    /// What the handler overwrote without reading since the last `update`.
    blind: Blind,
    cookie: CookieAction,
}

#[derive(Default)]
enum Slot {
    /// The cookie's ID (if any) has not been looked up.
    #[default]
    Unloaded,
    /// There is no live session; a write creates one.
    Absent,
    /// A session: loaded, or created by a write in this request.
    Active(Box<Active>),
}

struct Active {
    /// As stored (or, for a new session, as created).
    base: session_core::Session,
    /// With the handler's writes applied.
    current: session_core::Session,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum CookieAction {
    #[default]
    Nothing,
    /// Send the cookie with the current session's ID.
    Set,
    /// Send the removal cookie.
    Remove,
}

/// Keys (and the owner) whose current value the handler wrote without first
/// reading the stored one, so reading them back depends on no stored value.
#[derive(Default)]
struct Blind {
    all_keys: bool,
    keys: HashSet<String>,
    owner: bool,
}

impl Blind {
    fn covers(&self, key: &str) -> bool {
        self.all_keys || self.keys.contains(key)
    }
}

type Closure = Box<dyn FnMut(&mut session_core::Session) + Send>;

/// One recorded write.
enum Op {
    Put(String, Value),
    Remove(String),
    Clear,
    SetOwner(String),
    ClearOwner,
    Update(Closure),
}

impl Op {
    fn apply(&mut self, session: &mut session_core::Session) {
        match self {
            Self::Put(key, value) => {
                // A JSON value always serializes, so this cannot fail.
                if let Err(e) = session.insert(key.as_str(), &*value) {
                    tracing::error!(error = %e, "replaying a session write failed");
                }
            }
            Self::Remove(key) => {
                session.remove(key);
            }
            Self::Clear => session.clear(),
            Self::SetOwner(owner) => session.set_owner(owner.as_str()),
            Self::ClearOwner => session.clear_owner(),
            Self::Update(change) => change(session),
        }
    }

    fn note_blind(&self, blind: &mut Blind) {
        match self {
            Self::Put(key, _) | Self::Remove(key) => {
                blind.keys.insert(key.clone());
            }
            Self::Clear => {
                blind.all_keys = true;
                blind.keys.clear();
            }
            Self::SetOwner(_) | Self::ClearOwner => blind.owner = true,
            // The closure may have read anything: later reads depend on the
            // stored values again.
            Self::Update(_) => *blind = Blind::default(),
        }
    }
}

impl State {
    fn current(&self) -> Option<&session_core::Session> {
        match &self.slot {
            Slot::Active(active) => Some(&active.current),
            Slot::Unloaded | Slot::Absent => None,
        }
    }

    /// Record that the handler read `key`, if its value came from the store.
    fn note_read(&mut self, key: &str) {
        if let Slot::Active(active) = &self.slot
            && !active.base.is_new()
            && !self.blind.covers(key)
            && !self.reads.contains_key(key)
        {
            let stored = active.base.get_value(key).cloned();
            self.reads.insert(key.to_owned(), stored);
        }
    }

    fn note_owner_read(&mut self) {
        if let Slot::Active(active) = &self.slot
            && !active.base.is_new()
            && !self.blind.owner
            && self.owner_read.is_none()
        {
            self.owner_read = Some(active.base.owner().map(str::to_owned));
        }
    }

    /// Whether the stored values the handler read are still those in `fresh`.
    fn reads_hold(&self, fresh: &session_core::Session) -> bool {
        self.reads
            .iter()
            .all(|(key, seen)| fresh.get_value(key) == seen.as_ref())
            && self
                .owner_read
                .as_ref()
                .is_none_or(|seen| fresh.owner() == seen.as_deref())
    }

    /// Forget the handler's writes and reads: they are stored (or abandoned).
    fn settle(&mut self) {
        self.ops.clear();
        self.reads.clear();
        self.owner_read = None;
        self.blind = Blind::default();
    }

    /// Undo the writes not yet stored.
    fn roll_back(&mut self) {
        if let Slot::Active(active) = &mut self.slot {
            if active.base.is_new() {
                self.slot = Slot::Absent;
            } else {
                active.current = active.base.clone();
            }
        }
        self.ops.clear();
        self.blind = Blind::default();
    }
}

/// Why storing the session did not happen.
enum PersistError {
    /// The session was destroyed or expired meanwhile.
    Gone,
    /// A key the handler read has changed since.
    StaleRead,
    /// Conflicts every time, up to the configured number of attempts.
    Contention,
    /// Anything else the store said.
    Store(Error),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Persist {
    Save,
    Rotate,
}

/// What the layer must do to the response once the handler is done.
pub(crate) struct Finish {
    /// Replace the response by an error response.
    pub(crate) failure: Option<SessionFailure>,
    /// Append this `Set-Cookie` header.
    pub(crate) set_cookie: Option<HeaderValue>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie_id: Option<SessionId>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                cookie_id,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The store behind this session, for queries beyond this one session:
    /// an owner's sessions ("your devices"), signing out elsewhere, counting.
    ///
    /// ```
    /// # async fn demo(session: session_tower::Session) -> session_core::Result<()> {
    /// if let Some(owner) = session.owner().await? {
    ///     let current = session.id().await?;
    ///     let devices = session.store().owner_sessions(&owner, current.as_ref()).await?;
    ///     // "Sign out everywhere else":
    ///     session.store().destroy_owner_sessions(&owner, current.as_ref()).await?;
    ///     # let _ = devices;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.shared.store
    }

    /// The string stored under `key`, if there is one and it is a string.
    ///
    /// # Errors
    /// As for every method that loads: the store's [`Error`].
    pub async fn get(&self, key: &str) -> Result<Option<String>> {
        let mut state = self.loaded().await?;
        state.note_read(key);
        Ok(state.current().and_then(|s| s.get(key)).map(str::to_owned))
    }

    /// The value under `key` converted to `T`, or `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Value`] if the value does not have the shape of `T`; the
    /// store's [`Error`] if loading fails.
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let mut state = self.loaded().await?;
        state.note_read(key);
        match state.current() {
            Some(session) => session.get_as(key),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn contains_key(&self, key: &str) -> Result<bool> {
        let mut state = self.loaded().await?;
        state.note_read(key);
        Ok(state.current().is_some_and(|s| s.contains_key(key)))
    }

    /// The owner the session is bound to, if any (see
    /// [`set_owner`](Self::set_owner)).
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn owner(&self) -> Result<Option<String>> {
        let mut state = self.loaded().await?;
        state.note_owner_read();
        Ok(state.current().and_then(|s| s.owner()).map(str::to_owned))
    }

    /// The ID of this request's session: the one its cookie named if that
    /// session is live, or the one a write in this request created (stored
    /// when the response is ready), or the new one after
    /// [`cycle_id`](Self::cycle_id). `None` if there is no session.
    ///
    /// Pass it as `current` to
    /// [`SessionStore::owner_sessions`] to mark this session in the listing,
    /// or as `keep` to [`SessionStore::destroy_owner_sessions`].
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn id(&self) -> Result<Option<SessionId>> {
        let state = self.loaded().await?;
        Ok(state.current().map(|s| s.id().clone()))
    }

    /// Store the string `value` under `key`.
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn set(&self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        self.write(Op::Put(key.into(), Value::String(value.into())))
            .await
    }

    /// Store any serde-serializable value under `key`.
    ///
    /// # Errors
    /// [`Error::Value`] if `value` cannot be represented as JSON (nothing
    /// changes); the store's [`Error`] if loading fails.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let key = key.into();
        let value = serde_json::to_value(value).map_err(|source| Error::Value {
            key: key.clone(),
            source,
        })?;
        self.write(Op::Put(key, value)).await
    }

    /// Remove `key`, if present. (To know whether it was there,
    /// [`contains_key`](Self::contains_key) first.)
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.write(Op::Remove(key.to_owned())).await
    }

    /// Remove every key. The session itself and its owner stay; see
    /// [`destroy`](Self::destroy) to end it.
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn clear(&self) -> Result<()> {
        self.write(Op::Clear).await
    }

    /// Bind the session to an owner (a user key), so the application can
    /// list and end all of that owner's sessions. Do it at login, followed by
    /// [`cycle_id`](Self::cycle_id).
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn set_owner(&self, owner: impl Into<String>) -> Result<()> {
        self.write(Op::SetOwner(owner.into())).await
    }

    /// Remove the owner binding.
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn clear_owner(&self) -> Result<()> {
        self.write(Op::ClearOwner).await
    }

    /// Read-modify-write: run `change` on the session now and return its
    /// result. If storing meets a concurrent change, `change` runs again on
    /// the fresh session instead of the request being refused, so concurrent
    /// updates all take effect. What `change` reads is not added to the
    /// read set.
    ///
    /// `change` may therefore run more than once and must only change the
    /// session. The value returned is from the first run: after a replay the
    /// stored result may differ (a counter may have moved on).
    ///
    /// ```
    /// # async fn demo(session: session_tower::Session) -> session_core::Result<()> {
    /// let visits = session
    ///     .update(|s| {
    ///         let n = s.get_as::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    ///         s.insert("visits", &n).map(|()| n)
    ///     })
    ///     .await??;
    /// # let _ = visits; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn update<F, R>(&self, mut change: F) -> Result<R>
    where
        F: FnMut(&mut session_core::Session) -> R + Send + 'static,
    {
        let store = &self.inner.shared.store;
        let mut state = self.loaded().await?;
        let session = active_or_create(&mut state, store).await?;
        let result = change(session);
        let op = Op::Update(Box::new(move |s: &mut session_core::Session| {
            change(s);
        }));
        op.note_blind(&mut state.blind);
        state.ops.push(op);
        Ok(result)
    }

    /// Give the session a fresh ID now, storing its pending changes with it,
    /// atomically; the old ID is dead at once and the response carries the
    /// new cookie. Call it whenever privilege changes, above all at login
    /// (after [`set_owner`](Self::set_owner)): it defeats session fixation.
    /// A request without a session gets a new, stored one.
    ///
    /// A concurrent change is handled as at the end of a request: the
    /// pending writes are replayed if what the handler read still holds.
    ///
    /// # Errors
    /// What the store refused, for the handler to answer:
    /// [`Error::TooManySessions`] when the owner is at the per-owner limit,
    /// [`Error::Conflict`] if a key the handler read has changed meanwhile,
    /// [`Error::NotFound`] if the session was ended meanwhile (the response
    /// then removes the cookie), [`Error::Backend`] and so on. On error
    /// nothing was stored and the pending changes are discarded, so the end
    /// of the request does not try them again.
    pub async fn cycle_id(&self) -> Result<()> {
        let shared = &self.inner.shared;
        let mut state = self.loaded().await?;
        active_or_create(&mut state, &shared.store).await?;
        match persist(shared, &mut state, Persist::Rotate).await {
            Ok(_) => {
                state.settle();
                state.cookie = CookieAction::Set;
                Ok(())
            }
            Err(PersistError::Gone) => {
                state.slot = Slot::Absent;
                state.settle();
                state.cookie = CookieAction::Remove;
                Err(Error::NotFound)
            }
            Err(PersistError::StaleRead | PersistError::Contention) => {
                state.roll_back();
                Err(Error::Conflict)
            }
            Err(PersistError::Store(e)) => {
                state.roll_back();
                Err(e)
            }
        }
    }

    /// End the session now (logout): it is removed from the store, the
    /// response carries the removal cookie, and a concurrent request cannot
    /// save it back. Returns whether a live session was removed.
    ///
    /// Writes after this start a new session (with a new ID), for example
    /// to carry a "you have signed out" message.
    ///
    /// # Errors
    /// [`Error::Backend`] if the store fails; the session is then unchanged.
    pub async fn destroy(&self) -> Result<bool> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let stored_id = match &state.slot {
            Slot::Unloaded => inner.cookie_id.clone(),
            Slot::Active(active) if !active.current.is_new() => Some(active.current.id().clone()),
            Slot::Active(_) | Slot::Absent => None,
        };
        let removed = match stored_id {
            Some(id) => {
                let key = id.storage_key();
                inner
                    .shared
                    .store
                    .destroy(&id)
                    .instrument(span("destroy", key))
                    .await?
            }
            None => false,
        };
        state.slot = Slot::Absent;
        state.settle();
        state.cookie = CookieAction::Remove;
        Ok(removed)
    }

    /// Lock the state, loading the session first if no method has yet.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        if matches!(state.slot, Slot::Unloaded) {
            state.slot = match &inner.cookie_id {
                None => Slot::Absent,
                Some(id) => {
                    let loaded = inner
                        .shared
                        .store
                        .load(id)
                        .instrument(span("load", id.storage_key()))
                        .await?;
                    match loaded {
                        Some(session) => Slot::Active(Box::new(Active {
                            base: session.clone(),
                            current: session,
                        })),
                        None => {
                            tracing::debug!(
                                key = %KeyPrefix(id.storage_key()),
                                "the cookie names no live session"
                            );
                            Slot::Absent
                        }
                    }
                }
            };
        }
        Ok(state)
    }

    async fn write(&self, mut op: Op) -> Result<()> {
        let store = &self.inner.shared.store;
        let mut state = self.loaded().await?;
        op.apply(active_or_create(&mut state, store).await?);
        op.note_blind(&mut state.blind);
        state.ops.push(op);
        Ok(())
    }

    /// Store what the handler changed (or touch the session), and say what
    /// the response needs. `server_error`: the handler answered 5xx, so
    /// nothing is stored.
    pub(crate) async fn finish(&self, server_error: bool) -> Finish {
        let shared = &self.inner.shared;
        let mut state = self.inner.state.lock().await;
        let mut failure = None;
        if !server_error {
            failure = store_changes(shared, &mut state).await;
        }
        let set_cookie = match (state.cookie, &state.slot) {
            (CookieAction::Set, Slot::Active(active)) if !active.current.is_new() => {
                Some(shared.cookie.set_cookie_header(active.current.id()))
            }
            (CookieAction::Remove, _) => Some(shared.cookie.removal_header()),
            _ => None,
        };
        Finish {
            failure,
            set_cookie,
        }
    }
}

/// The session to write to, creating a new one (fresh ID) if there is none.
async fn active_or_create<'s>(
    state: &'s mut State,
    store: &Arc<dyn SessionStore>,
) -> Result<&'s mut session_core::Session> {
    if !matches!(state.slot, Slot::Active(_)) {
        let session = store.create().await?;
        state.slot = Slot::Active(Box::new(Active {
            base: session.clone(),
            current: session,
        }));
    }
    match &mut state.slot {
        Slot::Active(active) => Ok(&mut active.current),
        // Just made active above.
        Slot::Unloaded | Slot::Absent => Err(Error::NotFound),
    }
}

/// The end-of-request save or touch. Returns the failure that must replace
/// the response, if any.
async fn store_changes(shared: &Shared, state: &mut State) -> Option<SessionFailure> {
    let Slot::Active(active) = &mut state.slot else {
        return None;
    };
    if active.current.is_modified() {
        let first_save = active.current.is_new();
        return match persist(shared, state, Persist::Save).await {
            Ok(wrote) => {
                state.settle();
                if wrote && (first_save || shared.cookie.max_age().is_some()) {
                    state.cookie = CookieAction::Set;
                }
                None
            }
            Err(PersistError::Gone) => {
                tracing::info!("the session was ended during the request; not saved");
                state.slot = Slot::Absent;
                state.settle();
                state.cookie = CookieAction::Remove;
                None
            }
            Err(PersistError::StaleRead) => {
                tracing::warn!(
                    "session not saved: a value the handler read was changed by a concurrent \
                     request, so its decision may be stale; answering 409"
                );
                Some(SessionFailure::StaleRead)
            }
            Err(PersistError::Contention) => {
                tracing::warn!(
                    attempts = shared.save_attempts,
                    "session not saved: it kept changing concurrently; answering 409"
                );
                Some(SessionFailure::Contention)
            }
            Err(PersistError::Store(e)) => {
                tracing::error!(error = %e, "session not saved: the store failed");
                Some(SessionFailure::from_store_error(&e))
            }
        };
    }
    if active.current.is_new() {
        return None;
    }
    let config = shared.store.config();
    let idle_for = config.now_ms() - active.current.meta().last_active_ms;
    if idle_for < session_core::duration_ms(shared.touch_interval) {
        return None;
    }
    let key = *active.current.id().storage_key();
    match shared
        .store
        .touch(&mut active.current)
        .instrument(span("touch", &key))
        .await
    {
        Ok(()) => {
            active.base = active.current.clone();
            if shared.cookie.max_age().is_some() && state.cookie == CookieAction::Nothing {
                state.cookie = CookieAction::Set;
            }
        }
        Err(Error::NotFound) => {
            tracing::info!("the session was ended during the request");
            state.slot = Slot::Absent;
            state.settle();
            state.cookie = CookieAction::Remove;
        }
        // A missed touch only shortens the session's life: not worth failing
        // the response for.
        Err(e) => tracing::warn!(error = %e, "touching the session failed"),
    }
    None
}

/// Store the active session (save or rotate), reloading and replaying the
/// recorded writes on conflict. `Ok(false)`: after a reload there was nothing
/// left to write.
async fn persist(
    shared: &Shared,
    state: &mut State,
    how: Persist,
) -> std::result::Result<bool, PersistError> {
    let store = &*shared.store;
    let mut attempt = 0;
    loop {
        let Slot::Active(active) = &mut state.slot else {
            return Ok(false);
        };
        let key = *active.current.id().storage_key();
        let result = match how {
            Persist::Save => {
                store
                    .save(&mut active.current)
                    .instrument(span("save", &key))
                    .await
            }
            Persist::Rotate => {
                store
                    .cycle_id(&mut active.current)
                    .instrument(span("cycle_id", &key))
                    .await
            }
        };
        match result {
            Ok(()) => {
                active.base = active.current.clone();
                return Ok(true);
            }
            Err(Error::Conflict) if !active.current.is_new() => {}
            Err(Error::NotFound) => return Err(PersistError::Gone),
            Err(e) => return Err(PersistError::Store(e)),
        }

        attempt += 1;
        if attempt >= shared.save_attempts {
            return Err(PersistError::Contention);
        }
        tracing::debug!(key = %KeyPrefix(&key), attempt, "session conflict: reloading");
        backoff(attempt).await;
        let fresh = match store
            .load(active.current.id())
            .instrument(span("load", &key))
            .await
        {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return Err(PersistError::Gone),
            Err(e) => return Err(PersistError::Store(e)),
        };
        if !state.reads_hold(&fresh) {
            return Err(PersistError::StaleRead);
        }
        let mut replayed = fresh.clone();
        for op in &mut state.ops {
            op.apply(&mut replayed);
        }
        let unchanged = !replayed.is_modified();
        state.slot = Slot::Active(Box::new(Active {
            base: fresh,
            current: replayed,
        }));
        if how == Persist::Save && unchanged {
            return Ok(false);
        }
    }
}

/// The span of one store operation on a request's session: the operation and
/// the first hex digits of the storage key, never the ID.
fn span(op: &'static str, key: &StorageKey) -> tracing::Span {
    tracing::debug_span!("session", op, key = %KeyPrefix(key))
}

/// Displays the first eight hex digits of a storage key.
struct KeyPrefix<'a>(&'a StorageKey);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0.as_bytes()[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Step aside so the request that won can finish: more so the longer this
/// one keeps losing, with jitter so losers do not retry in lock-step.
async fn backoff(attempt: u32) {
    let ceiling = 1u32 << attempt.min(6);
    let mut byte = [0u8; 1];
    let yields = match getrandom::fill(&mut byte) {
        Ok(()) => u32::from(byte[0]) % ceiling + 1,
        Err(_) => ceiling,
    };
    for _ in 0..yields {
        YieldNow(false).await;
    }
}

/// Yield once to the executor (any executor).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
