//! Server-side sessions for tower and axum: a [`SessionLayer`] that gives
//! every request a lazily loaded [`Session`] from any
//! [`SessionStore`](session_core::SessionStore), stores what the handler
//! changed without losing concurrent updates, and manages the cookie.
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use session_cookie::CookieConfig;
//! use session_memory::MemoryStore;
//! use session_tower::{Session, SessionFailure, SessionLayer};
//!
//! // A store error becomes the answer the layer itself gives (503 when the
//! // store is down, 409 when a concurrent logout ended the session, ...).
//! async fn count(session: Session) -> Result<String, SessionFailure> {
//!     let visits = session
//!         .update(|s| {
//!             let n = s.get_as::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
//!             s.insert("visits", &n).map(|()| n)
//!         })
//!         .await??;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryStore::new(3600)); // one hour idle timeout
//! // Secure, HttpOnly, SameSite=Lax: browsers keep a Secure cookie over
//! // HTTPS, or over plain HTTP on localhost only.
//! let cookie = CookieConfig::new("__Host-sid")?;
//! let app = Router::new()
//!     .route("/", get(count))
//!     .layer(SessionLayer::new(store, cookie));
//! // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
//! # use tower::ServiceExt as _;
//! # let request = axum::http::Request::get("/").body(axum::body::Body::empty())?;
//! # let response = app.oneshot(request).await?;
//! # assert_eq!(response.status(), axum::http::StatusCode::OK);
//! # let cookie = response.headers()["set-cookie"].to_str()?;
//! # assert!(cookie.starts_with("__Host-sid=") && cookie.contains("; Secure"));
//! # Ok(())
//! # }
//! ```
//!
//! # What happens on a request
//!
//! 1. **Lazy.** The layer parses the session cookie, which costs no store
//!    access. The store is read only when the handler first asks the
//!    [`Session`] for something. No cookie, or a bogus, malformed or expired
//!    one, means no session: reading it finds nothing and creates nothing;
//!    the first write creates a new session under a fresh random ID (the ID
//!    the client sent is never adopted, which defeats session fixation).
//!    When the browser sends several cookies of that name (a stale one for
//!    an old `Path` or a parent domain comes first), they are looked up in
//!    order and the first live one is the session: one lookup for the usual
//!    single cookie, one more per dead cookie before the live one, and
//!    never more than [`session_cookie::MAX_CANDIDATES`] (16), whatever the
//!    request carries (a client sending that many dead IDs costs that many
//!    lookups per request that reads the session). The layer never tries to
//!    delete such a stale cookie (see 4.).
//! 2. **Saved only if changed, never on a 5xx.** When the handler is done,
//!    a changed session is stored (after any status below 500); a response
//!    with a server-error status stores (and touches) nothing.
//!    [`Session::cycle_id`] (login) and [`Session::destroy`] (logout) act on
//!    the store at once, so their cookies are sent whatever the status.
//! 3. **No lost updates, no stale decisions.** Saves compare-and-set on the
//!    version loaded. On a conflict the layer reloads and replays the
//!    handler's log of writes and reads in order: writes are applied again,
//!    [`Session::update`] closures re-run, and every read is checked at its
//!    place against the replayed session. If all hold, the result is saved;
//!    if a value the handler read has changed (or an `update` closure now
//!    has a different outcome), nothing is saved and the response becomes
//!    `409 Conflict` ([`SessionFailure`]). Counters belong in
//!    [`Session::update`], whose closure re-runs instead of being judged
//!    stale.
//! 4. **Cookie.** `Set-Cookie` goes out on a new session's first save and
//!    after rotation, and again on each save or touch when the cookie has a
//!    `Max-Age`, so the browser's deadline slides with the server's. That
//!    `Max-Age` is cut to what is left of the session's life where that is
//!    shorter (near its absolute deadline), so the cookie never outlives the
//!    session; give the cookie the store's idle timeout as its `Max-Age`
//!    (a shorter one ends a visit when the browser drops the cookie, however
//!    long the store would keep the session). The
//!    removal cookie (same name, path, domain and attributes) goes out only
//!    after a [`Session::destroy`] that ended a live session. A session
//!    found ended by someone else mid-request stays ended and gets no cookie
//!    at all: removing the browser's cookie could delete a newer one that a
//!    concurrent sign-in sent. A stale cookie that names no live session
//!    gets none either: a removal cookie can only carry the configured path
//!    and domain, so it would delete the live cookie of the same name, not
//!    the stale one; the stale one expires on its own.
//!    A response with a session `Set-Cookie` is kept out of shared caches:
//!    `Cache-Control: private, no-store` if the handler set none; a
//!    handler's `no-store` or `private` stands; any other (say `public,
//!    max-age=600`) becomes `private` without `public` and `s-maxage`
//!    (`private, max-age=600`); a `CDN-Cache-Control`, `Surrogate-Control`
//!    or similar field, which a CDN obeys instead, becomes `no-store`.
//!    Responses of handlers that consulted the
//!    session carry `Vary: Cookie`.
//! 5. **Touch.** A session the handler loaded but did not change is touched
//!    (idle deadline slid, data not rewritten, version unchanged) when its
//!    last activity is older than [`SessionLayer::touch_interval`].
//! 6. **Failures.** A load failure is the handler's to answer (the
//!    [`Session`] methods return [`session_core::Error`]); a failed
//!    end-of-request save replaces the response with an empty `503`
//!    (store down or full), `409` (owner limit) or `500` (data too large and
//!    the like) and logs an error. **Deletion wins, and says so:** if the
//!    handler changed the session but a concurrent request ended it (logout,
//!    revocation), rotated its ID ([`Session::cycle_id`] at a sign-in in
//!    another tab) or it expired, the session is not brought back, the
//!    changes are not stored, and the response becomes an empty `409`
//!    ([`SessionFailure::Ended`]) rather than a success that hides a lost
//!    write. A handler that only read such a session answers as it chose.
//! 7. **One request.** The [`Session`] handle lives as long as its request:
//!    once the response is ready, changing it (or loading it for the first
//!    time) returns [`session_core::Error::InvalidInput`] instead of being
//!    silently lost. A request cancelled before its response (the client
//!    went away, a timeout layer gave up) stores none of its pending
//!    writes; a rotation or logout it already did stands in the store, but
//!    its cookie is never sent. A handler that panics is such a request,
//!    unless a catch-panic layer *inside* the `SessionLayer` turns the panic
//!    into a `500`, which stores nothing but does send a rotation's or
//!    logout's cookie. The session is stored before the response goes out,
//!    so a failed save can still replace its status; a body streamed after
//!    the handler returned, or the connection of a WebSocket upgrade,
//!    comes after the request: there, use [`Session::store`] directly.
//!
//! Each store operation runs in a `session` tracing span (debug level) that
//! records the operation and the first eight hex digits of the storage key,
//! never the session ID. Retries after a conflict sleep with `tokio::time`
//! (1 to 50 ms, jittered), so the tokio runtime needs its time driver, as
//! `#[tokio::main]` provides.
//!
//! # Feature flags
//!
//! * `axum` (default): [`Session`] is an axum extractor
//!   (`FromRequestParts`, through `axum-core`), with the
//!   `MissingSessionLayer` rejection. Without it the crate does not depend
//!   on axum: it needs `session-core`, `session-cookie`, `http`,
//!   `tower-layer`/`tower-service`, `tokio` (`sync` and `time` only),
//!   `serde`/`serde_json` and `tracing`, and handlers of any tower service
//!   find the [`Session`] in the request extensions.
#![deny(missing_docs)]

#[cfg(feature = "axum")]
mod axum;
mod layer;
mod session;

#[cfg(feature = "axum")]
pub use crate::axum::MissingSessionLayer;
pub use layer::{DEFAULT_SAVE_ATTEMPTS, SessionFailure, SessionLayer, SessionService};
pub use session::Session;
