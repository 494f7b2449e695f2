//! [`Session`]: the per-request handle, and what happens to it when the
//! response is ready.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
/// A browser may send several cookies of the session cookie's name (a stale
/// one for an old path or a parent domain comes first): the first that names
/// a live session is the session. They are loaded in order, so the usual
/// single cookie costs one lookup, and a stale one listed first one more.
///
/// # Reads, writes and concurrency
///
/// Writes ([`set`](Self::set), [`insert`](Self::insert),
/// [`remove`](Self::remove), [`clear`](Self::clear),
/// [`set_owner`](Self::set_owner), [`clear_owner`](Self::clear_owner),
/// [`update`](Self::update)) change this request's copy at once and are
/// stored together when the response is ready (unless it is a 5xx). The
/// handle keeps a log, in order, of those writes and of every read
/// ([`get`](Self::get), [`get_as`](Self::get_as), [`owner`](Self::owner)
/// with the value seen; [`contains_key`](Self::contains_key) with presence
/// only).
///
/// If another request stored the session meanwhile, the save meets a
/// conflict. The layer then reloads it and replays the log on the fresh
/// copy: writes are applied again, [`update`](Self::update) closures run
/// again, and each read is checked, at its place in the log, against what
/// the replayed session holds there. If every read still sees what the
/// handler saw, the result is saved; otherwise the handler decided on stale
/// data, so nothing is saved and the response becomes `409 Conflict` (see
/// [`SessionFailure`]). A value the handler wrote itself and read back is
/// therefore no conflict, while a value an `update` closure produced from
/// data that has changed since is. No write is ever silently lost.
///
/// # Lifetime
///
/// The handle belongs to its request. Once the handler has answered, the
/// layer stores what it changed (see
/// [What happens on a request](crate#what-happens-on-a-request)); from then
/// on, and also once the request was cancelled (its future dropped) or the
/// inner service returned an error, every method that would change the
/// session, or load it if it was never loaded, returns
/// [`Error::InvalidInput`]: a task spawned by the handler must not outlive
/// the request with the handle. Values already loaded can still be read.
///
/// A cancelled request stores nothing: its pending writes are lost. What
/// [`cycle_id`](Self::cycle_id) and [`destroy`](Self::destroy) did before the
/// cancellation has happened in the store, but its cookie is never sent; after
/// a rotation the browser's cookie then names the old, dead ID, so the
/// visitor is signed out.
///
/// # Errors
///
/// Methods that may need to load the session return the store's
/// [`Error`] when loading fails (the store is down, or the record is corrupt:
/// [`Error::Codec`], reported only when no other cookie of the request names
/// a live session); what to answer is the handler's choice.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// The well-formed session IDs the request's cookies carried, in order
    /// (usually none or one; at most `session_cookie::MAX_CANDIDATES`): not
    /// yet known to be live. The first live one is the session.
    cookie_ids: Vec<SessionId>,
    /// Set when the response is ready or the request was dropped; written
    /// under the state lock by `finish`, so a method that checked it under
    /// the lock cannot slip a change past the end of the request.
    finished: AtomicBool,
    state: Mutex<State>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the ID: only whether the request brought one.
        f.debug_struct("Session")
            .field("cookies", &self.inner.cookie_ids.len())
            .field("finished", &self.inner.finished.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    slot: Slot,
    /// The handler's writes and reads, in order, since the session was
    /// loaded or last stored: replayed on a fresh copy after a conflict.
    log: Vec<Entry>,
    cookie: CookieAction,
    /// How many of the cookie's IDs have been looked up: all but the last of
    /// them named no live session (and the last, if the slot is active,
    /// was the session).
    examined: usize,
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
    /// Send the removal cookie: only after `destroy` ended a live session.
    Remove,
}

/// An `update` or `try_update` closure: whether its change succeeded
/// (always, for `update`).
type Closure = Box<dyn FnMut(&mut session_core::Session) -> bool + Send>;

/// One step of the handler's log.
enum Entry {
    Put(String, Value),
    Remove(String),
    Clear,
    SetOwner(String),
    ClearOwner,
    /// An `update` closure, whether its first run succeeded (a
    /// `try_update` closure that failed applied nothing) and whether it
    /// changed the session.
    Update {
        change: Closure,
        ok: bool,
        changed: bool,
    },
    /// The handler saw this value under the key.
    Read(String, Option<Value>),
    /// The handler saw the key present or absent.
    Has(String, bool),
    /// The handler saw this owner.
    ReadOwner(Option<String>),
}

impl Entry {
    fn is_read(&self) -> bool {
        matches!(self, Self::Read(..) | Self::Has(..) | Self::ReadOwner(_))
    }

    /// Whether two reads check the same thing (with no write between them
    /// they then saw the same value).
    fn same_check(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Read(a, _), Self::Read(b, _)) | (Self::Has(a, _), Self::Has(b, _)) => a == b,
            (Self::ReadOwner(_), Self::ReadOwner(_)) => true,
            _ => false,
        }
    }

    /// The same read, re-taken on `session`.
    fn retaken(&self, session: &session_core::Session) -> Option<Self> {
        match self {
            Self::Read(key, _) => Some(Self::Read(key.clone(), session.get_value(key).cloned())),
            Self::Has(key, _) => Some(Self::Has(key.clone(), session.contains_key(key))),
            Self::ReadOwner(_) => Some(Self::ReadOwner(session.owner().map(str::to_owned))),
            _ => None,
        }
    }

    /// Apply a plain write (not an `update` closure, not a read).
    fn apply(&self, session: &mut session_core::Session) {
        match self {
            Self::Put(key, value) => {
                // A JSON value always serializes, so this cannot fail.
                if let Err(e) = session.insert(key.as_str(), value) {
                    tracing::error!(error = %e, "applying a session write failed");
                }
            }
            Self::Remove(key) => {
                session.remove(key);
            }
            Self::Clear => session.clear(),
            Self::SetOwner(owner) => session.set_owner(owner.as_str()),
            Self::ClearOwner => session.clear_owner(),
            Self::Update { .. } | Self::Read(..) | Self::Has(..) | Self::ReadOwner(_) => {}
        }
    }
}

/// Whether `after` holds different data or a different owner than `before`.
fn content_differs(before: &session_core::Session, after: &session_core::Session) -> bool {
    before.owner() != after.owner() || before.data() != after.data()
}

/// Why replaying the log on a fresh copy did not give a session to save.
enum ReplayError {
    /// A read no longer sees what the handler saw, or an `update` closure's
    /// outcome (failed, changed or not) differs from its first run.
    Stale,
    /// An `update` closure panicked.
    Panicked,
}

/// Replay `log` on a copy of `fresh`.
fn replay(
    log: &mut [Entry],
    fresh: &session_core::Session,
) -> Result<session_core::Session, ReplayError> {
    let mut session = fresh.clone();
    for entry in log {
        match entry {
            Entry::Read(key, seen) => {
                if session.get_value(key) != seen.as_ref() {
                    return Err(ReplayError::Stale);
                }
            }
            Entry::Has(key, seen) => {
                if session.contains_key(key) != *seen {
                    return Err(ReplayError::Stale);
                }
            }
            Entry::ReadOwner(seen) => {
                if session.owner() != seen.as_deref() {
                    return Err(ReplayError::Stale);
                }
            }
            Entry::Update {
                change,
                ok,
                changed,
            } => {
                let mut next = session.clone();
                let Ok(now_ok) = catch_unwind(AssertUnwindSafe(|| change(&mut next))) else {
                    return Err(ReplayError::Panicked);
                };
                if now_ok != *ok {
                    return Err(ReplayError::Stale);
                }
                if !now_ok {
                    continue; // a failed change applies nothing, now as then
                }
                if content_differs(&session, &next) != *changed {
                    return Err(ReplayError::Stale);
                }
                session = next;
            }
            write => write.apply(&mut session),
        }
    }
    Ok(session)
}

impl State {
    fn current(&self) -> Option<&session_core::Session> {
        match &self.slot {
            Slot::Active(active) => Some(&active.current),
            Slot::Unloaded | Slot::Absent => None,
        }
    }

    /// Log a read of the current session. Without a session there is
    /// nothing a concurrent request could change, so nothing is logged; a
    /// read the log already holds since the last write is not logged twice.
    fn note(&mut self, read: Entry) {
        if !matches!(self.slot, Slot::Active(_)) {
            return;
        }
        let repeated = self
            .log
            .iter()
            .rev()
            .take_while(|e| e.is_read())
            .any(|e| e.same_check(&read));
        if !repeated {
            self.log.push(read);
        }
    }

    /// The writes are stored: forget them. The handler's later decisions may
    /// still rest on what it read, so each read is kept, re-taken on the
    /// stored session, to be checked by a later replay.
    fn settle(&mut self) {
        let mut carried: Vec<Entry> = Vec::new();
        if let Some(session) = self.current() {
            for entry in &self.log {
                if let Some(read) = entry.retaken(session)
                    && !carried.iter().any(|c| c.same_check(&read))
                {
                    carried.push(read);
                }
            }
        }
        self.log = carried;
    }

    /// Undo the writes not yet stored; the reads stay logged.
    fn roll_back(&mut self) {
        if let Slot::Active(active) = &mut self.slot {
            if active.current.is_new() {
                self.slot = Slot::Absent;
                self.log.clear();
                return;
            }
            active.current = active.base.clone();
        }
        self.log.retain(Entry::is_read);
    }

    /// There is no session (any more): nothing to replay or to check.
    fn end(&mut self) {
        self.slot = Slot::Absent;
        self.log.clear();
    }
}

/// Why storing the session did not happen.
enum PersistError {
    /// The session was destroyed, expired or rotated away meanwhile.
    Gone,
    /// The handler's decision rests on data that has changed since.
    StaleRead,
    /// Conflicts every time, up to the configured number of attempts.
    Contention,
    /// An `update` closure panicked when it was re-run.
    Panicked,
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
    /// The handler consulted the session, so the response depends on the
    /// `Cookie` header.
    pub(crate) used: bool,
}

fn finished_error() -> Error {
    Error::InvalidInput(
        "this request is over (its response is ready, or it was cancelled); a Session handle \
         cannot be used after its request (do not keep it in a task that outlives the handler)"
            .into(),
    )
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie_ids: Vec<SessionId>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                cookie_ids,
                finished: AtomicBool::new(false),
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
        let value = self.read_value(key).await?;
        Ok(value.and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        }))
    }

    /// The value under `key` converted to `T`, or `None` if there is none.
    ///
    /// # Errors
    /// [`Error::Value`] if the value does not have the shape of `T`; the
    /// store's [`Error`] if loading fails. Where serde's message would quote a
    /// string or number held in the session (`invalid type: string "…"`,
    /// `integer `…``, an unknown variant or field), the quotation reads
    /// `<redacted>`, so the error can be logged. (A `Deserialize` impl of
    /// your own that writes the input into its message is beyond this.)
    pub async fn get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.read_value(key).await? {
            None => Ok(None),
            Some(value) => T::deserialize(&value)
                .map(Some)
                .map_err(|source| Error::Value {
                    key: key.to_owned(),
                    source: session_core::redact_value_error(source, &value),
                }),
        }
    }

    /// Whether `key` is present. Only its presence is logged as read, so a
    /// concurrent change of its value does not make this request stale.
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn contains_key(&self, key: &str) -> Result<bool> {
        let mut state = self.loaded().await?;
        let present = state.current().is_some_and(|s| s.contains_key(key));
        state.note(Entry::Has(key.to_owned(), present));
        Ok(present)
    }

    /// The owner the session is bound to, if any (see
    /// [`set_owner`](Self::set_owner)).
    ///
    /// # Errors
    /// The store's [`Error`] if loading fails.
    pub async fn owner(&self) -> Result<Option<String>> {
        let mut state = self.loaded().await?;
        let owner = state.current().and_then(|s| s.owner()).map(str::to_owned);
        state.note(Entry::ReadOwner(owner.clone()));
        Ok(owner)
    }

    /// The ID of this request's session: the first one its cookies named
    /// that is live, or the one a write in this request created, or the new
    /// one after [`cycle_id`](Self::cycle_id). `None` if there is no session.
    ///
    /// An ID created by a write in this request is not stored yet: it is
    /// stored only if the end-of-request save succeeds, which it does not for
    /// a 5xx response or a failed save (see
    /// [What happens on a request](crate#what-happens-on-a-request)), and
    /// until then no other request can find it. After `cycle_id` it is
    /// stored already.
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
    /// The store's [`Error`] if loading fails; [`Error::InvalidInput`] after
    /// the request (see [Lifetime](#lifetime)).
    pub async fn set(&self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        self.write(Entry::Put(key.into(), Value::String(value.into())))
            .await
    }

    /// Store any serde-serializable value under `key`.
    ///
    /// # Errors
    /// [`Error::Value`] if `value` cannot be represented as JSON (a NaN or
    /// infinite float, say; nothing changes); otherwise as for
    /// [`set`](Self::set).
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<()> {
        let key = key.into();
        let value = session_core::value_to_json(&key, value)?;
        self.write(Entry::Put(key, value)).await
    }

    /// Remove `key`, if present. (To know whether it was there,
    /// [`contains_key`](Self::contains_key) first.)
    ///
    /// # Errors
    /// As for [`set`](Self::set).
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.write(Entry::Remove(key.to_owned())).await
    }

    /// Remove every key. The session itself and its owner stay; see
    /// [`destroy`](Self::destroy) to end it.
    ///
    /// # Errors
    /// As for [`set`](Self::set).
    pub async fn clear(&self) -> Result<()> {
        self.write(Entry::Clear).await
    }

    /// Bind the session to an owner (a user key), so the application can
    /// list and end all of that owner's sessions. Do it at login, followed by
    /// [`cycle_id`](Self::cycle_id). An empty owner, or one longer than
    /// [`session_core::MAX_OWNER_LEN`] bytes, is refused when the session
    /// is stored.
    ///
    /// # Errors
    /// As for [`set`](Self::set).
    pub async fn set_owner(&self, owner: impl Into<String>) -> Result<()> {
        self.write(Entry::SetOwner(owner.into())).await
    }

    /// Remove the owner binding.
    ///
    /// # Errors
    /// As for [`set`](Self::set).
    pub async fn clear_owner(&self) -> Result<()> {
        self.write(Entry::ClearOwner).await
    }

    /// Read-modify-write: run `change` on the session now and return its
    /// result. If storing meets a concurrent change, `change` runs again on
    /// the fresh session instead of the request being refused, so concurrent
    /// updates all take effect: this is the way to keep a counter.
    ///
    /// * `change` may therefore run more than once and must only change the
    ///   session's data and owner. It is kept until the response is ready,
    ///   which is why it must be `'static` (move what it needs into it).
    /// * Whatever it changed is kept, whatever it returns: for a change that
    ///   can fail part-way, use [`try_update`](Self::try_update).
    /// * Its return value is from the **first** run, on the session as this
    ///   request saw it; after a replay the stored result may differ (a
    ///   counter may have moved on). Do not base further decisions on it
    ///   that must hold for the stored state: read the value with
    ///   [`get`](Self::get) after the update instead, which is checked on
    ///   replay.
    /// * A replay must have the same outcome as the first run: if the first
    ///   run changed the session and the replay changes nothing (or the
    ///   reverse, say a withdrawal refused at first would now go through),
    ///   the request's decision is stale and the response becomes `409`.
    /// * If `change` panics, the panic propagates to the caller and the
    ///   session is left as it was before the call. If it panics when re-run
    ///   at the end of the request, nothing is saved and the response
    ///   becomes a `500` ([`SessionFailure::Refused`]).
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
    /// As for [`set`](Self::set).
    pub async fn update<F, R>(&self, change: F) -> Result<R>
    where
        F: FnMut(&mut session_core::Session) -> R + Send + 'static,
    {
        self.run_update(change, |_| true).await
    }

    /// As [`update`](Self::update), for a change that can fail: when
    /// `change` returns `Err`, whatever it changed before failing is
    /// dropped (it ran on a copy) and its error comes back as `Ok(Err(e))`.
    /// On replay the outcome must hold as for `update`: a change that failed
    /// must fail again (and one that succeeded must succeed), or the
    /// response becomes `409`.
    ///
    /// ```
    /// # async fn demo(session: session_tower::Session) -> session_core::Result<()> {
    /// let paid = session
    ///     .try_update(|s| {
    ///         let balance: u64 = s.get_as("balance").ok().flatten().unwrap_or(0);
    ///         s.set("last_payment", "pending");
    ///         let left = balance.checked_sub(30).ok_or("insufficient balance")?;
    ///         s.insert("balance", &left).map_err(|_| "unreadable balance")?;
    ///         Ok::<_, &str>(left)
    ///     })
    ///     .await?;
    /// // On "insufficient balance", "last_payment" is not set either.
    /// # let _ = paid; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for [`set`](Self::set).
    pub async fn try_update<F, T, E>(&self, change: F) -> Result<std::result::Result<T, E>>
    where
        F: FnMut(&mut session_core::Session) -> std::result::Result<T, E> + Send + 'static,
    {
        self.run_update(change, |result: &std::result::Result<T, E>| result.is_ok())
            .await
    }

    /// Run `change` on a copy of the session, keep the copy if `succeeded`
    /// says its result is a success, and log the change for replay.
    async fn run_update<F, R, S>(&self, mut change: F, succeeded: S) -> Result<R>
    where
        F: FnMut(&mut session_core::Session) -> R + Send + 'static,
        S: Fn(&R) -> bool + Send + 'static,
    {
        let mut state = self.writable().await?;
        let (mut next, created) = match &state.slot {
            Slot::Active(active) => (active.current.clone(), false),
            Slot::Unloaded | Slot::Absent => (self.store().create().await?, true),
        };
        let before = next.clone();
        // On a copy: a panic, or a failure, leaves the session as it was.
        let result = change(&mut next);
        let ok = succeeded(&result);
        let changed = ok && content_differs(&before, &next);
        if created && !changed {
            // No session, and nothing to put in one.
            return Ok(result);
        }
        if ok {
            install(&mut state, next, created);
        }
        state.log.push(Entry::Update {
            change: Box::new(move |s: &mut session_core::Session| succeeded(&change(s))),
            ok,
            changed,
        });
        Ok(result)
    }

    /// Give the session a fresh ID now, storing its pending changes with it,
    /// atomically; the old ID is dead at once and the response carries the
    /// new cookie. Call it whenever privilege changes, above all at login
    /// (after [`set_owner`](Self::set_owner)): it defeats session fixation.
    /// A request without a session gets a new, stored one.
    ///
    /// A concurrent change is handled as at the end of a request: the log is
    /// replayed if what the handler read still holds.
    ///
    /// # Errors
    /// What the store refused, for the handler to answer; nothing was stored
    /// and the pending writes are discarded (what the handler read stays
    /// logged):
    /// * [`Error::TooManySessions`] when the owner is at the per-owner limit;
    /// * [`Error::Conflict`] if something the handler read has changed
    ///   meanwhile, or the session keeps changing: the client may retry;
    /// * [`Error::NotFound`] if the session was ended meanwhile. The handle
    ///   then has no session, so writing to it and calling `cycle_id` again
    ///   starts a new one (for example to sign in on a fresh session);
    /// * [`Error::InvalidInput`] after the request, or if an
    ///   [`update`](Self::update) closure panicked when re-run;
    /// * [`Error::Backend`] and so on.
    pub async fn cycle_id(&self) -> Result<()> {
        let shared = &self.inner.shared;
        let mut state = self.writable().await?;
        if !matches!(state.slot, Slot::Active(_)) {
            let session = shared.store.create().await?;
            install(&mut state, session, true);
        }
        match persist(shared, &mut state, Persist::Rotate).await {
            Ok(_) => {
                state.settle();
                state.cookie = CookieAction::Set;
                Ok(())
            }
            Err(PersistError::Gone) => {
                tracing::debug!("rotation: the session was ended meanwhile");
                state.end();
                if state.cookie == CookieAction::Set {
                    state.cookie = CookieAction::Nothing;
                }
                Err(Error::NotFound)
            }
            Err(PersistError::StaleRead | PersistError::Contention) => {
                state.roll_back();
                Err(Error::Conflict)
            }
            Err(PersistError::Panicked) => {
                state.roll_back();
                Err(Error::InvalidInput(
                    "an update closure panicked when it was re-applied to the concurrently \
                     changed session; nothing was stored"
                        .into(),
                ))
            }
            Err(PersistError::Store(e)) => {
                state.roll_back();
                Err(e)
            }
        }
    }

    /// End the session now (logout): it is removed from the store and a
    /// concurrent request cannot save it back. Returns whether a live
    /// session was removed; only then does the response carry the removal
    /// cookie. (If there was none, the browser's cookie names nothing and is
    /// harmless; deleting it could delete a newer cookie that a concurrent
    /// sign-in sent.)
    ///
    /// If the request carried several cookies of the session cookie's name,
    /// the sessions named by those not yet looked up are destroyed too (the
    /// first live one is the session; without this, a later live one would
    /// become the session of the next request, which would still be signed
    /// in). That costs one store call each, at most
    /// [`MAX_CANDIDATES`](session_cookie::MAX_CANDIDATES); the usual single
    /// cookie costs one. The removal cookie can only address the cookie the
    /// [`CookieConfig`](session_cookie::CookieConfig) describes (its path
    /// and domain): stale cookies of the same name for other paths or
    /// domains stay in the browser, naming nothing, until they expire.
    ///
    /// Writes after this start a new session (with a new ID), for example
    /// to carry a "you have signed out" message. The response then carries
    /// that session's cookie in place of the removal cookie, or the removal
    /// cookie if the new session is not stored (a 5xx response, a failed
    /// save).
    ///
    /// # Errors
    /// [`Error::Backend`] if the store fails. If nothing was removed by
    /// then, the session is unchanged; otherwise (a later cookie's session
    /// could not be removed) the handle has no session any more and the
    /// removal cookie is sent, as after a success.
    /// [`Error::InvalidInput`] after the request.
    pub async fn destroy(&self) -> Result<bool> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        if inner.finished.load(Ordering::SeqCst) {
            return Err(finished_error());
        }
        // This request's stored session first, then every cookie ID not yet
        // found dead (all of them if nothing was loaded).
        let mut ids: Vec<&SessionId> = Vec::new();
        if let Slot::Active(active) = &state.slot
            && !active.current.is_new()
        {
            ids.push(active.current.id());
        }
        let unexamined = if matches!(state.slot, Slot::Unloaded) {
            0
        } else {
            state.examined
        };
        ids.extend(inner.cookie_ids.iter().skip(unexamined));
        let mut removed = false;
        let mut failure = None;
        for id in ids {
            match inner
                .shared
                .store
                .destroy(id)
                .instrument(span("destroy", id.storage_key()))
                .await
            {
                Ok(r) => removed |= r,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !removed && let Some(e) = failure {
            return Err(e);
        }
        state.end();
        state.examined = inner.cookie_ids.len();
        if removed {
            state.cookie = CookieAction::Remove;
        } else if state.cookie == CookieAction::Set {
            state.cookie = CookieAction::Nothing;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Mark the handle as belonging to a request that is over.
    pub(crate) fn end_request(&self) {
        self.inner.finished.store(true, Ordering::SeqCst);
    }

    /// The value under `key` as the handler sees it, logged as read.
    async fn read_value(&self, key: &str) -> Result<Option<Value>> {
        let mut state = self.loaded().await?;
        let value = state.current().and_then(|s| s.get_value(key)).cloned();
        state.note(Entry::Read(key.to_owned(), value.clone()));
        Ok(value)
    }

    /// Lock the state, loading the session first if no method has yet: the
    /// cookie's IDs are looked up in order, and the first live one is the
    /// session. The loads run without the lock, so a slow or hung load (say
    /// in a task that outlived the request) never holds up the end of the
    /// request.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>> {
        let inner = &self.inner;
        {
            let mut state = inner.state.lock().await;
            if !matches!(state.slot, Slot::Unloaded) {
                return Ok(state);
            }
            if inner.finished.load(Ordering::SeqCst) {
                return Err(finished_error());
            }
            if inner.cookie_ids.is_empty() {
                state.slot = Slot::Absent;
                return Ok(state);
            }
        }
        let mut found = None;
        let mut examined = 0;
        // A corrupt record behind one cookie (say a stale one for an old
        // path) must not hide a live session behind a later one: it is
        // reported only if no cookie names a live session. A store that is
        // down ends the search at once.
        let mut corrupt = None;
        for id in &inner.cookie_ids {
            examined += 1;
            let loaded = match inner
                .shared
                .store
                .load(id)
                .instrument(span("load", id.storage_key()))
                .await
            {
                Ok(loaded) => loaded,
                Err(e @ Error::Codec(_)) => {
                    tracing::debug!(
                        key = %KeyPrefix(id.storage_key()),
                        "the cookie names a corrupt record; trying the next one"
                    );
                    corrupt.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if loaded.is_some() {
                found = loaded;
                break;
            }
            tracing::debug!(
                key = %KeyPrefix(id.storage_key()),
                "the cookie names no live session"
            );
        }
        if found.is_none()
            && let Some(e) = corrupt
        {
            return Err(e);
        }
        let mut state = inner.state.lock().await;
        if matches!(state.slot, Slot::Unloaded) {
            // Nobody else loaded, wrote or destroyed meanwhile.
            if inner.finished.load(Ordering::SeqCst) {
                return Err(finished_error());
            }
            state.examined = examined;
            state.slot = match found {
                Some(session) => Slot::Active(Box::new(Active {
                    base: session.clone(),
                    current: session,
                })),
                None => Slot::Absent,
            };
        }
        Ok(state)
    }

    /// As [`loaded`](Self::loaded), for a method that changes the session.
    async fn writable(&self) -> Result<MutexGuard<'_, State>> {
        let state = self.loaded().await?;
        if self.inner.finished.load(Ordering::SeqCst) {
            return Err(finished_error());
        }
        Ok(state)
    }

    async fn write(&self, entry: Entry) -> Result<()> {
        let mut state = self.writable().await?;
        if let Slot::Active(active) = &mut state.slot {
            entry.apply(&mut active.current);
        } else {
            let mut session = self.store().create().await?;
            entry.apply(&mut session);
            if !session.is_modified() {
                // Removing from no session: still no session.
                return Ok(());
            }
            install(&mut state, session, true);
        }
        state.log.push(entry);
        Ok(())
    }

    /// Store what the handler changed (or touch the session), and say what
    /// the response needs. `server_error`: the handler answered 5xx, so
    /// nothing is stored. Afterwards the handle refuses changes.
    pub(crate) async fn finish(&self, server_error: bool) -> Finish {
        let shared = &self.inner.shared;
        let mut state = self.inner.state.lock().await;
        self.end_request();
        let used = !matches!(state.slot, Slot::Unloaded);
        let failure = if server_error {
            None
        } else {
            store_changes(shared, &mut state).await
        };
        let set_cookie = match (state.cookie, &state.slot) {
            (CookieAction::Set, Slot::Active(active)) if !active.current.is_new() => {
                Some(set_cookie_header(shared, &active.current))
            }
            (CookieAction::Remove, _) => Some(shared.cookie.removal_header()),
            _ => None,
        };
        Finish {
            failure,
            set_cookie,
            used,
        }
    }
}

/// The `Set-Cookie` that hands the browser `session`, just stored or
/// touched. A configured `Max-Age` is cut to what is left of the session's
/// life where that is shorter (near its absolute deadline, or under an idle
/// timeout shorter than the `Max-Age`): a cookie that outlives its session
/// names nothing and only costs a lookup on every request until it expires.
fn set_cookie_header(shared: &Shared, session: &session_core::Session) -> HeaderValue {
    let now = shared.store.config().now_ms();
    let left_ms = session.meta().expires_ms.saturating_sub(now);
    // Rounded up by the cookie: the milliseconds since the store computed
    // the expiry must not cut a whole second off every cookie.
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    shared.cookie.set_cookie_header_within(session.id(), left)
}

/// Make `session` the active one. `created`: it is new in this request.
fn install(state: &mut State, session: session_core::Session, created: bool) {
    match &mut state.slot {
        Slot::Active(active) if !created => active.current = session,
        _ => {
            state.slot = Slot::Active(Box::new(Active {
                base: session.clone(),
                current: session,
            }));
        }
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
                // Logged out elsewhere, revoked, expired or rotated by a
                // concurrent request: it stays gone (deletion wins), and the
                // handler's writes cannot be stored, so the request fails
                // rather than answer as if they had been. No cookie either
                // way: the browser's one names nothing (harmless), and
                // removing it could delete the newer cookie a concurrent
                // rotation sent.
                tracing::warn!(
                    "session not saved: it was ended or rotated by a concurrent request while \
                     this one changed it; answering 409"
                );
                state.end();
                if state.cookie == CookieAction::Set {
                    state.cookie = CookieAction::Nothing;
                }
                Some(SessionFailure::Ended)
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
            Err(PersistError::Panicked) => {
                tracing::error!(
                    "session not saved: an update closure panicked when it was re-applied to \
                     the concurrently changed session; answering 500"
                );
                Some(SessionFailure::Refused)
            }
            Err(PersistError::Store(e)) => {
                tracing::error!(error = %e, "session not saved: the store refused or failed");
                Some(SessionFailure::from_store_error(&e))
            }
        };
    }
    if active.current.is_new() {
        return None;
    }
    let config = shared.store.config();
    // Saturating: the timestamp comes from storage, and an absurd one (a
    // corrupt row) must not overflow; it simply reads as long idle.
    let idle_for = config
        .now_ms()
        .saturating_sub(active.current.meta().last_active_ms);
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
            // As for a save: no cookie, above all no removal cookie.
            tracing::debug!("the session was ended during the request; not touched");
            state.end();
        }
        // A missed touch only shortens the session's life: not worth failing
        // the response for.
        Err(e) => tracing::warn!(error = %e, "touching the session failed"),
    }
    None
}

/// Store the active session (save or rotate), reloading and replaying the
/// log on conflict. `Ok(false)`: after a reload there was nothing left to
/// write.
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
            // A new session's insert-only write conflicts only if its random
            // ID is taken: nothing to replay on.
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
        let replayed = match replay(&mut state.log, &fresh) {
            Ok(replayed) => replayed,
            Err(ReplayError::Stale) => return Err(PersistError::StaleRead),
            Err(ReplayError::Panicked) => return Err(PersistError::Panicked),
        };
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

/// Longest pause between two attempts to store a conflicting session.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Let the request that won finish before trying again: after the `n`th
/// conflict sleep a random time between half and all of `min(2^(n-1) ms,
/// 50 ms)`, so losers neither hammer the store nor retry in lock-step.
async fn backoff(attempt: u32) {
    tokio::time::sleep(backoff_delay(attempt, jitter())).await;
}

/// The pause after the `attempt`th conflict (from 1), for a random `jitter`.
fn backoff_delay(attempt: u32, jitter: u64) -> Duration {
    let shift = attempt.saturating_sub(1).min(6);
    let ceiling = Duration::from_millis(1 << shift).min(MAX_BACKOFF);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    let half = ceiling_us / 2;
    Duration::from_micros(half + jitter % (ceiling_us - half + 1))
}

/// Random bits for jitter, not for secrets: `RandomState` is seeded from the
/// OS once per thread and gives each instance different keys.
fn jitter() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_about_a_millisecond_to_a_cap_of_fifty() {
        for (attempt, low, high) in [
            (1, 500, 1_000),
            (2, 1_000, 2_000),
            (3, 2_000, 4_000),
            (6, 16_000, 32_000),
            (7, 25_000, 50_000),
            (100, 25_000, 50_000),
        ] {
            assert_eq!(
                backoff_delay(attempt, 0),
                Duration::from_micros(low),
                "{attempt}"
            );
            assert_eq!(
                backoff_delay(attempt, high - low),
                Duration::from_micros(high),
                "{attempt}"
            );
            assert!(backoff_delay(attempt, u64::MAX) <= Duration::from_micros(high));
        }
    }

    #[test]
    fn jitter_varies() {
        let draws: std::collections::HashSet<u64> = (0..16).map(|_| jitter()).collect();
        assert!(draws.len() > 1, "{draws:?}");
    }
}
