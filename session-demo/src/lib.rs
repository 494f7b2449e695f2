//! The session crates at work: a small axum site with sign-in (owner binding
//! and ID rotation), a visit counter, "your sessions" with remote sign-out,
//! on any store. Run it with `cargo run -p session-demo` and open
//! <http://localhost:3000>.
//!
//! The binary is a thin shell around this library: [`Options`] reads the
//! command line, [`StoreChoice::open`] opens the store, and [`app`] is the
//! router, which tests drive directly.
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryStore::with_config(session_demo::session_config()));
//! let app = session_demo::app(store, session_demo::cookie_config(true)?);
//! // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
//! # use tower::ServiceExt as _;
//! # let request = axum::http::Request::get("/profile").body(axum::body::Body::empty())?;
//! # let response = app.oneshot(request).await?;
//! # assert_eq!(response.status(), axum::http::StatusCode::UNAUTHORIZED);
//! # Ok(())
//! # }
//! ```
//!
//! # Pages
//!
//! | path | what |
//! |---|---|
//! | `GET /` | sign-in form (any username, password [`DEMO_PASSWORD`]), or links |
//! | `POST /login` | binds the session to `user:<name>` and rotates its ID |
//! | `GET /profile` | the user and their counter; `401` without a session |
//! | `GET /counter` | counts views with [`Session::update`](session_tower::Session::update) (works signed out too) |
//! | `POST /logout` | destroys the session and removes the cookie |
//! | `GET /store` | the number of live sessions in the store (counted at most once per [`COUNT_EVERY`]) |
//! | `GET /sessions` | the user's sessions (at most [`MAX_SESSIONS_PER_USER`]; signing in beyond that ends the oldest): created, last active, expires, this one marked |
//! | `POST /sessions/revoke` | signs out one of them by its public handle |
//! | `POST /sessions/revoke-others` | signs out everywhere else |
//!
//! Cross-site request forgery: `SameSite=Lax` keeps the cookie off
//! cross-site posts, but that does not stop *login* CSRF (a login needs no
//! cookie) nor posts from sibling subdomains. So every state-changing
//! request whose `Sec-Fetch-Site` is `cross-site` or `same-site` is refused
//! with `403` before it reaches the session; so is one from a browser
//! without `Sec-Fetch-Site` whose `Origin` (or, lacking that, `Referer`)
//! is not this site's origin: the scheme (`http`, or what
//! `X-Forwarded-Proto` says), the `Host` and its port. Behind a
//! TLS-terminating reverse proxy, forward `Host` and set
//! `X-Forwarded-Proto: https`.
//!
//! The counter is kept with `Session::update`; the number a page shows is
//! that request's own count, so it says "at least": views counted at the
//! same moment in other tabs are stored too.
//!
//! # The cookie
//!
//! `__Host-session-demo`: `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`,
//! and a `Max-Age` equal to the idle timeout, renewed as the session is
//! used. Browsers accept `Secure` cookies from `http://localhost` and
//! `http://127.0.0.1`; served over plain HTTP under any other host name the
//! cookie would be dropped, so put the demo behind TLS or pass
//! `--insecure-cookie` (which also drops the `__Host-` prefix).
//!
//! # Feature flags
//!
//! The default build has the memory, SQLite and Redis stores (`redis`, pure
//! Rust, is a default feature); the SQL servers need system libraries, so
//! they are opt-in. `--store memory` holds at most [`MEMORY_MAX_SESSIONS`]
//! sessions, since every first view of the counter stores one, evicting the
//! anonymous ones closest to expiry first (signed-in ones only when every
//! stored session is signed in). Every store is purged of expired sessions
//! every minute.
//!
//! * `postgres`: `--store postgres://…` (needs `libpq-dev`).
//! * `mysql`: `--store mysql://…` (needs `default-libmysqlclient-dev`).
//! * `redis` (default): `--store redis://…`, `redis-cluster://…`,
//!   `redis-sentinel://…`.
//! * `redis-tls`: `rediss://…` as well.
#![deny(missing_docs)]

mod options;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use session_cookie::{CookieConfig, CookieConfigError};
use session_core::{OwnerLimitPolicy, SessionConfig, SessionStore};
use session_tower::SessionLayer;

pub use options::{
    Command, DEFAULT_LISTEN, DEFAULT_SQLITE_FILE, MEMORY_MAX_SESSIONS, Options, StoreChoice, USAGE,
    log_filter,
};

/// How often `GET /store` asks the store for its session count; between
/// two counts it shows the last one.
///
/// Counting is not free: SQL stores count the live rows, work that grows
/// with the number of sessions, which anyone can raise (every first view of
/// the counter stores one). Asked on every request, an unauthenticated page
/// would let a visitor make the server do that much work per request.
pub const COUNT_EVERY: Duration = Duration::from_secs(1);

/// The password every demo user signs in with.
pub const DEMO_PASSWORD: &str = "demo";

/// Sessions end after this long without activity.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Sessions end this long after sign-in, however active.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// How many sessions one user may have at once; a sign-in beyond it ends
/// that user's oldest session.
///
/// Anyone can sign in as anyone here, so without a limit one script could
/// bind any number of sessions to a username, and every view of that user's
/// "your sessions" page (and every "sign out everywhere else") would then
/// read, render and send all of them: unbounded work and memory per request.
/// Ending the oldest rather than refusing the sign-in means such a script
/// cannot lock the real user out either.
pub const MAX_SESSIONS_PER_USER: u32 = 10;

/// The demo's timeouts, [`IDLE_TIMEOUT`] and [`ABSOLUTE_TIMEOUT`], and the
/// per-user limit [`MAX_SESSIONS_PER_USER`] (the oldest session ends).
pub fn session_config() -> SessionConfig {
    SessionConfig::new(IDLE_TIMEOUT)
        .with_absolute_timeout(ABSOLUTE_TIMEOUT)
        .with_max_sessions_per_owner(MAX_SESSIONS_PER_USER, OwnerLimitPolicy::EndOldest)
}

/// The session cookie: `__Host-session-demo` with `Secure` (the default),
/// or `session-demo` without it when `secure` is false. `HttpOnly`,
/// `SameSite=Lax`, `Path=/`, `Max-Age` = [`IDLE_TIMEOUT`] either way.
///
/// # Errors
/// Never in practice: the configuration is fixed and valid.
pub fn cookie_config(secure: bool) -> Result<CookieConfig, CookieConfigError> {
    let name = if secure {
        "__Host-session-demo"
    } else {
        "session-demo"
    };
    CookieConfig::builder(name)
        .secure(secure)
        .max_age(IDLE_TIMEOUT)
        .build()
}

/// The site, with sessions from `store` in the cookie `cookie` describes.
pub fn app(store: Arc<dyn SessionStore>, cookie: CookieConfig) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/profile", get(pages::profile))
        .route("/counter", get(pages::counter))
        .route("/store", get(pages::store_stats))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/revoke", post(pages::revoke))
        .route("/sessions/revoke-others", post(pages::revoke_others))
        .fallback(pages::not_found)
        .with_state(Arc::new(pages::LiveCount::default()))
        .layer(axum::middleware::from_fn(pages::end_corrupt_session))
        .layer(SessionLayer::new(store, cookie))
        .layer(axum::middleware::from_fn(pages::reject_cross_site))
        .layer(axum::middleware::map_response(pages::finish_response))
}
