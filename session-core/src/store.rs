//! The `SessionStore` trait every backend implements.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::config::from_ms;
use crate::{
    Error, RecordMeta, Result, Session, SessionConfig, SessionHandle, SessionId, StorageKey,
};

/// Where sessions live. One API for every backend.
///
/// The trait is object-safe (`Arc<dyn SessionStore>` works) and every future
/// it returns is `Send`. Its contract, which the conformance suite in
/// `session_core::testing` checks for every backend:
///
/// * [`create`](Self::create) makes a session in memory only: a visitor who
///   never gets anything stored costs no storage.
/// * The first [`save`](Self::save) of a session is insert-only. Later saves
///   are update-only and compare-and-set on the version that was loaded: a
///   stale save fails with [`Error::Conflict`], a save of a session destroyed
///   or expired meanwhile fails with [`Error::NotFound`], and neither changes
///   what is stored.
/// * Expired sessions (idle or absolute deadline passed, by the configured
///   clock) are invisible to [`load`](Self::load), [`len`](Self::len) and the
///   owner queries even before [`purge_expired`](Self::purge_expired) runs.
/// * Stores key everything by [`SessionId::storage_key`], never the raw ID.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The timeouts and limits this store applies.
    fn config(&self) -> &SessionConfig;

    /// A new session with a fresh random ID. Nothing is stored until the
    /// first [`save`](Self::save).
    ///
    /// # Errors
    /// [`Error::Backend`] only if the OS cannot provide randomness.
    async fn create(&self) -> Result<Session> {
        Ok(Session::new(SessionId::generate()?, self.config()))
    }

    /// A new session with an ID the caller chose (for example one issued by
    /// another system). Nothing is stored until the first save.
    ///
    /// # Errors
    /// [`Error::InvalidId`] if `id` is not at least 22 canonical base64url
    /// characters (128 bits); [`Error::Conflict`] if a live session already
    /// has this ID. The insert-only first save catches the same collision if
    /// it happens after this check.
    async fn create_with_id(&self, id: &str) -> Result<Session> {
        let id = SessionId::parse(id)?;
        if self.load(&id).await?.is_some() {
            return Err(Error::Conflict);
        }
        Ok(Session::new(id, self.config()))
    }

    /// The live session with this ID, or `None` if there is none (never
    /// stored, destroyed, rotated away or expired).
    ///
    /// # Errors
    /// [`Error::Codec`] if the stored record is corrupt (only this session is
    /// affected); [`Error::Backend`] if storage fails.
    async fn load(&self, id: &SessionId) -> Result<Option<Session>>;

    /// Store the session: insert it if it is new, otherwise compare-and-set on
    /// the version it was loaded at. Slides the idle deadline. On success the
    /// session's version is updated, so it can be saved again.
    ///
    /// # Errors
    /// [`Error::Conflict`] if someone saved it since it was loaded (or a new
    /// session's ID is taken); [`Error::NotFound`] if it was destroyed or
    /// expired meanwhile (it is not recreated); [`Error::TooLarge`],
    /// [`Error::Capacity`], [`Error::TooManySessions`] per configuration.
    async fn save(&self, session: &mut Session) -> Result<()>;

    /// Slide the idle deadline without rewriting the data or bumping the
    /// version, so a concurrent request's save is not turned into a conflict.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the session is not stored and live.
    async fn touch(&self, session: &mut Session) -> Result<()>;

    /// Give the session a fresh ID, keeping its data (including unsaved
    /// changes, which are saved with it), and make the old ID dead at once,
    /// atomically. Call it whenever privilege changes, above all at login: it
    /// is the defence against session fixation, where an attacker plants a
    /// known ID in the victim's browser before they sign in. Then send the
    /// new cookie.
    ///
    /// A session that was never stored is stored under the new ID.
    ///
    /// # Errors
    /// As for [`save`](Self::save).
    async fn cycle_id(&self, session: &mut Session) -> Result<()>;

    /// End a session. Returns whether a live session was removed. A request
    /// still holding the session cannot save it back.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn destroy(&self, id: &SessionId) -> Result<bool>;

    /// Remove expired sessions from storage, returning how many were removed.
    /// Expired sessions are already invisible; this reclaims their space.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn purge_expired(&self) -> Result<u64>;

    /// Number of live (unexpired) sessions.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn len(&self) -> Result<u64>;

    /// Whether there are no live sessions.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The live sessions bound to `owner` (see [`Session::set_owner`]), oldest
    /// first, as metadata only: no session ID leaves the store. `current`
    /// marks the caller's own session in the result.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>>;

    /// How many live sessions `owner` has.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn count_owner_sessions(&self, owner: &str) -> Result<u64> {
        Ok(self.owner_sessions(owner, None).await?.len() as u64)
    }

    /// End one of `owner`'s sessions by its public handle ("sign out that
    /// device"). Returns whether a live session of this owner was ended; a
    /// handle of someone else's session ends nothing.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool>;

    /// End every session of `owner` ("sign out everywhere", or after a
    /// password change), except `keep` if given ("everywhere else"). Returns
    /// how many were ended. Requests in flight on them cannot save them back.
    ///
    /// # Errors
    /// [`Error::Backend`] if storage fails.
    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64>;
}

/// Public facts about one of an owner's sessions, for a "your sessions" page.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Stable public name of the session; pass it to
    /// [`SessionStore::destroy_owner_session`].
    pub handle: SessionHandle,
    /// When the session was created.
    pub created_at: SystemTime,
    /// Its last save or touch.
    pub last_active: SystemTime,
    /// When it expires unless used again.
    pub expires_at: SystemTime,
    /// Whether this is the session the listing was asked for.
    pub is_current: bool,
}

impl SessionInfo {
    /// Build the listing entry for the session stored under `key` from its
    /// times in Unix milliseconds (for store implementors).
    pub fn new(
        key: &StorageKey,
        created_ms: i64,
        last_active_ms: i64,
        expires_ms: i64,
        current: Option<&SessionId>,
    ) -> Self {
        Self {
            handle: key.handle(),
            created_at: from_ms(created_ms),
            last_active: from_ms(last_active_ms),
            expires_at: from_ms(expires_ms),
            is_current: current.is_some_and(|c| c.storage_key() == key),
        }
    }

    /// Build the listing entry for the session stored under `key` (for store
    /// implementors).
    pub fn from_meta(key: &StorageKey, meta: &RecordMeta, current: Option<&SessionId>) -> Self {
        Self::new(
            key,
            meta.created_ms,
            meta.last_active_ms,
            meta.expires_ms,
            current,
        )
    }
}

/// How many times [`SessionStoreExt::update`] re-applies a change that keeps
/// meeting conflicts before giving up with [`Error::Conflict`].
pub const UPDATE_ATTEMPTS: u32 = 1000;

/// Read-modify-write without lost updates; implemented for every store.
pub trait SessionStoreExt: SessionStore {
    /// Load the session, apply `change`, save; on a conflict reload and apply
    /// `change` again, so concurrent updates all take effect (N concurrent
    /// increments give exactly N). Returns what `change` returned on the
    /// attempt that was stored. If `change` leaves the session unmodified,
    /// nothing is written.
    ///
    /// `change` may run several times, so it must only change the session.
    /// Whatever it changed is saved, even if what it returns is an error:
    /// for a change that can fail part-way, use
    /// [`try_update`](SessionStoreExt::try_update).
    ///
    /// ```
    /// # use session_core::{SessionStore, SessionStoreExt, SessionId};
    /// # async fn demo(store: &dyn SessionStore, id: &SessionId) -> session_core::Result<()> {
    /// let visits = store
    ///     .update(id, |s| {
    ///         let n = s.get_as::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    ///         s.insert("visits", &n).map(|()| n)
    ///     })
    ///     .await??;
    /// # let _ = visits; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no live session; [`Error::Conflict`]
    /// only after [`UPDATE_ATTEMPTS`] consecutive conflicts; otherwise what
    /// `load` or `save` returned.
    fn update<F, R>(&self, id: &SessionId, change: F) -> impl Future<Output = Result<R>> + Send
    where
        F: FnMut(&mut Session) -> R + Send,
        R: Send;

    /// As [`update`](SessionStoreExt::update), for a change that can fail:
    /// when `change` returns `Err`, nothing is saved (whatever it changed
    /// before failing is dropped with the loaded copy) and its error comes
    /// back as `Ok(Err(e))`; the outer `Result` is the store's.
    ///
    /// ```
    /// # use session_core::{SessionStore, SessionStoreExt, SessionId};
    /// # async fn demo(store: &dyn SessionStore, id: &SessionId) -> session_core::Result<()> {
    /// let paid = store
    ///     .try_update(id, |s| {
    ///         let balance: u64 = s.get_as("balance").ok().flatten().unwrap_or(0);
    ///         s.insert("last_payment", "pending").map_err(|e| e.to_string())?;
    ///         let left = balance.checked_sub(30).ok_or("insufficient balance")?;
    ///         s.insert("balance", &left).map_err(|e| e.to_string())?;
    ///         Ok::<_, String>(left)
    ///     })
    ///     .await?;
    /// // On "insufficient balance", "last_payment" was not saved either.
    /// # let _ = paid; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`update`](SessionStoreExt::update).
    fn try_update<F, T, E>(
        &self,
        id: &SessionId,
        change: F,
    ) -> impl Future<Output = Result<std::result::Result<T, E>>> + Send
    where
        F: FnMut(&mut Session) -> std::result::Result<T, E> + Send,
        T: Send,
        E: Send;
}

impl<S: SessionStore + ?Sized> SessionStoreExt for S {
    async fn update<F, R>(&self, id: &SessionId, change: F) -> Result<R>
    where
        F: FnMut(&mut Session) -> R + Send,
        R: Send,
    {
        read_modify_write(self, id, change, |_| true).await
    }

    async fn try_update<F, T, E>(
        &self,
        id: &SessionId,
        change: F,
    ) -> Result<std::result::Result<T, E>>
    where
        F: FnMut(&mut Session) -> std::result::Result<T, E> + Send,
        T: Send,
        E: Send,
    {
        read_modify_write(self, id, change, std::result::Result::is_ok).await
    }
}

/// Load, apply `change`, and save if `keep` accepts what it returned and
/// it modified the session; on a conflict, start over.
async fn read_modify_write<S, F, R>(
    store: &S,
    id: &SessionId,
    mut change: F,
    keep: fn(&R) -> bool,
) -> Result<R>
where
    S: SessionStore + ?Sized,
    F: FnMut(&mut Session) -> R + Send,
    R: Send,
{
    for attempt in 0..UPDATE_ATTEMPTS {
        let mut session = store.load(id).await?.ok_or(Error::NotFound)?;
        let result = change(&mut session);
        if !keep(&result) || !session.is_modified() {
            return Ok(result);
        }
        match store.save(&mut session).await {
            Ok(()) => return Ok(result),
            Err(Error::Conflict) => {
                // Step aside so the writer that won can finish; more so the
                // longer this keeps losing, with jitter so losers do not
                // retry in lock-step.
                for _ in 0..backoff_yields(attempt) {
                    YieldNow(false).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict)
}

fn backoff_yields(attempt: u32) -> u32 {
    let ceiling = 1u32 << attempt.min(6);
    let mut byte = [0u8; 1];
    // Jitter is best-effort: without randomness, back off by the ceiling.
    match getrandom::fill(&mut byte) {
        Ok(()) => u32::from(byte[0]) % ceiling + 1,
        Err(_) => ceiling,
    }
}

/// Yield once to the executor.
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
