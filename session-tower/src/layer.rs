//! [`SessionLayer`] and the [`SessionService`] it wraps services in.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use session_cookie::CookieConfig;
use session_core::{Error, SessionStore};
use tower_layer::Layer;
use tower_service::Service;

use crate::Session;

/// Default for [`SessionLayer::max_save_attempts`].
pub const DEFAULT_SAVE_ATTEMPTS: u32 = 100;

/// What every request's [`Session`] shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) cookie: CookieConfig,
    pub(crate) touch_interval: Duration,
    pub(crate) save_attempts: u32,
}

/// Tower middleware that gives every request a lazily loaded [`Session`].
///
/// For each request it reads the session cookie (without touching the
/// store; every well-formed candidate, in order, when the browser sent
/// several of that name), puts a [`Session`] into the request extensions,
/// runs the inner service, and then:
///
/// * stores the session if the handler changed it, unless the response is a
///   server error (5xx: then nothing is stored or touched); rotation ([`Session::cycle_id`]) and logout
///   ([`Session::destroy`]) happen inside the handler, so their cookies are
///   sent whatever the status;
/// * otherwise, if the handler loaded it and its last activity is older than
///   the [touch interval](Self::touch_interval), slides its idle deadline
///   with a cheap [`SessionStore::touch`];
/// * sends `Set-Cookie` when a new session is first stored, after rotation,
///   and (when the cookie has a `Max-Age`) whenever the session was saved or
///   touched, so the browser's deadline slides with the server's (its
///   `Max-Age` cut to the session's remaining life where that is shorter,
///   say near the absolute deadline); after a
///   [`Session::destroy`] that ended a live session it sends the removal
///   cookie. A session found ended meanwhile (NotFound when saving or
///   touching) gets no cookie at all: the browser's cookie names nothing,
///   which is harmless, whereas a removal cookie could delete the newer
///   cookie a concurrent sign-in just sent. Nor does a stale cookie that
///   named no live session get one: the `Cookie` header does not say which
///   path or domain it belongs to, so a removal cookie (which has the
///   configured name, path and domain) would delete the live cookie of the
///   same name instead;
/// * makes a response that carries a session `Set-Cookie` (or the removal
///   cookie) uncacheable by shared caches, since a shared cache must never
///   store, let alone replay, a `Set-Cookie`: without `Cache-Control` it
///   gets `private, no-store`; a handler's `no-store` or `private` stands;
///   any other `Cache-Control` (say `public, max-age=600`) is rewritten to
///   `private` without `public` and `s-maxage` (here `private,
///   max-age=600`), so the browser may still cache it but no CDN or proxy
///   will; fields that CDNs obey instead of `Cache-Control`
///   (`CDN-Cache-Control`, `Surrogate-Control` and the like) become
///   `no-store`. It adds `Vary: Cookie` to every response of a handler that
///   consulted the session;
/// * if storing fails, replaces the response with an empty-bodied error
///   response carrying a [`SessionFailure`] extension: `409` when a
///   concurrent change makes the handler's decision stale, a concurrent
///   request ended or rotated the session the handler changed, or the owner
///   has too many sessions; `503` when the store is down or full; `500`
///   otherwise.
///
/// The inner service's response body must implement [`Default`] for those
/// replacement responses. If the inner service returns an error instead of
/// a response (axum's never do), nothing is stored and the error is passed
/// on; a rotation or logout the handler already did has then happened in
/// the store, but its cookie is lost with the response.
///
/// Retries after a conflict sleep briefly with `tokio::time`, so the
/// runtime needs its time driver (as `#[tokio::main]` and `axum::serve`
/// setups have).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use session_cookie::CookieConfig;
/// use session_memory::MemoryStore;
/// use session_tower::SessionLayer;
///
/// let layer = SessionLayer::new(
///     Arc::new(MemoryStore::new(30 * 60)),
///     CookieConfig::builder("__Host-sid").max_age(Duration::from_secs(30 * 60)).build()?,
/// )
/// .touch_interval(Duration::from_secs(30));
/// # let _ = layer;
/// # Ok::<(), session_cookie::CookieConfigError>(())
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl SessionLayer {
    /// Sessions from `store`, carried in the cookie `cookie` describes.
    ///
    /// The touch interval defaults to a tenth of the store's idle timeout
    /// (or of the cookie's `Max-Age`, if that is shorter), at most 60
    /// seconds.
    pub fn new(store: Arc<dyn SessionStore>, cookie: CookieConfig) -> Self {
        let touch_interval = (lifetime(&*store, &cookie) / 10).min(Duration::from_secs(60));
        Self {
            shared: Arc::new(Shared {
                store,
                cookie,
                touch_interval,
                save_attempts: DEFAULT_SAVE_ATTEMPTS,
            }),
        }
    }

    /// Touch a session the handler read but did not change only when its
    /// last activity is at least this old, so a busy visitor does not cost a
    /// write per request. Zero touches on every such request.
    ///
    /// A visitor active at least every `idle timeout − interval` keeps the
    /// session, so the interval is capped at half the store's idle timeout:
    /// a longer one would let sessions in use expire. A touch also renews a
    /// cookie with a `Max-Age` (see [`CookieConfig::max_age`]), so when that
    /// is shorter than the idle timeout the cap is half of it instead: the
    /// browser must not drop the cookie of a visitor who keeps coming back.
    #[must_use]
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        let cap = lifetime(&*self.shared.store, &self.shared.cookie) / 2;
        Arc::make_mut(&mut self.shared).touch_interval = interval.min(cap);
        self
    }

    /// How many times the end-of-request save (or a rotation) is tried when
    /// it keeps meeting concurrent changes, before the response becomes a
    /// `409` ([`SessionFailure::Contention`]). Default
    /// [`DEFAULT_SAVE_ATTEMPTS`]; at least 1.
    #[must_use]
    pub fn max_save_attempts(mut self, attempts: u32) -> Self {
        Arc::make_mut(&mut self.shared).save_attempts = attempts.max(1);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// The cookie configuration.
    pub fn cookie(&self) -> &CookieConfig {
        &self.shared.cookie
    }
}

/// How long an idle visitor keeps the session: the store's idle timeout, or
/// the cookie's `Max-Age` if that is shorter (the browser then forgets the
/// cookie first).
fn lifetime(store: &dyn SessionStore, cookie: &CookieConfig) -> Duration {
    let idle = store.config().idle_timeout();
    cookie.max_age().map_or(idle, |max_age| max_age.min(idle))
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", &self.shared.store)
            .field("cookie", &self.shared.cookie)
            .field("touch_interval", &self.shared.touch_interval)
            .field("save_attempts", &self.shared.save_attempts)
            .finish()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Every well-formed candidate: a stale cookie of the same name (for
        // an old path or a parent domain) may come before the live one.
        let cookie_ids = self
            .shared
            .cookie
            .session_ids_from_headers(request.headers());
        let session = Session::new(Arc::clone(&self.shared), cookie_ids);
        request.extensions_mut().insert(session.clone());
        // The clone is ready only if `self.inner` was: take the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            // However this ends (an inner error, or the request dropped), the
            // handle must not outlive it.
            let _end = EndRequest(session.clone());
            let mut response = inner.call(request).await?;
            let finish = session.finish(response.status().is_server_error()).await;
            if let Some(failure) = finish.failure {
                response = failure.into_response();
            }
            let headers = response.headers_mut();
            if let Some(cookie) = finish.set_cookie {
                headers.append(header::SET_COOKIE, cookie);
                keep_out_of_shared_caches(headers);
            }
            if finish.used && !varies_by_cookie(headers) {
                headers.append(header::VARY, HeaderValue::from_static("Cookie"));
            }
            Ok(response)
        })
    }
}

/// Ends the request's session handle when dropped.
struct EndRequest(Session);

impl Drop for EndRequest {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Make a response that carries a session `Set-Cookie` one that no shared
/// cache (CDN, proxy) may store, for a stored `Set-Cookie` could be replayed
/// to other visitors, handing them this session or deleting theirs.
///
/// * No `Cache-Control`: `private, no-store`. The response starts, changes or
///   ends a session, so it is personal; the handler expressed no wish, and
///   storing it nowhere is the safe default.
/// * `no-store` or an unqualified `private` already: left alone.
/// * Otherwise (say `public, max-age=600`): the handler wanted it cached, so
///   it stays cacheable by the browser but by no one else: `private` is put
///   first, the shared-cache-only directives `public`, `s-maxage` and
///   `proxy-revalidate` and any qualified `private="…"` are dropped, and
///   the rest (`max-age`, `no-cache`, …) is kept. Browsers do not keep
///   `Set-Cookie` in their cache, so nothing is replayed from it.
/// * A `Cache-Control` that is not visible ASCII: `private, no-store`.
/// * Fields aimed at CDNs, which such a CDN obeys *instead of*
///   `Cache-Control` (`CDN-Cache-Control` of RFC 9213 and vendor forms
///   such as `Cloudflare-CDN-Cache-Control`, `Surrogate-Control`,
///   `Edge-Control`): each becomes `no-store`. Left alone, a handler's (or
///   an inner layer's) `CDN-Cache-Control: max-age=600` would let the CDN
///   store the cookie and hand it to other visitors.
fn keep_out_of_shared_caches(headers: &mut http::HeaderMap) {
    const SAFE_DEFAULT: HeaderValue = HeaderValue::from_static("private, no-store");
    let targeted: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| is_cdn_targeted(name.as_str()))
        .cloned()
        .collect();
    for name in targeted {
        headers.insert(name, HeaderValue::from_static("no-store"));
    }
    let mut directives = Vec::new();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else {
            headers.insert(header::CACHE_CONTROL, SAFE_DEFAULT);
            return;
        };
        directives.extend(split_list(text));
    }
    if directives.is_empty() {
        headers.insert(header::CACHE_CONTROL, SAFE_DEFAULT);
        return;
    }
    let name = |directive: &str| {
        let name = directive.split('=').next().unwrap_or_default();
        name.trim().to_ascii_lowercase()
    };
    let safe = directives.iter().any(|d| match name(d).as_str() {
        "no-store" => true,
        "private" => !d.contains('='),
        _ => false,
    });
    if safe {
        return;
    }
    let kept = directives.into_iter().filter(|d| {
        !matches!(
            name(d).as_str(),
            "public" | "s-maxage" | "proxy-revalidate" | "private"
        )
    });
    let rewritten = std::iter::once("private")
        .chain(kept)
        .collect::<Vec<_>>()
        .join(", ");
    let value = HeaderValue::try_from(rewritten).unwrap_or(SAFE_DEFAULT);
    headers.insert(header::CACHE_CONTROL, value);
}

/// Whether `name` (lower case, as `http` keeps it) is a cache-control field
/// that CDNs obey in place of `Cache-Control`: RFC 9213's `CDN-Cache-Control`
/// and its vendor-specific forms (`<vendor>-CDN-Cache-Control`), and the older
/// `Surrogate-Control` (Fastly, Varnish, Akamai) and `Edge-Control` (Akamai).
fn is_cdn_targeted(name: &str) -> bool {
    name.ends_with("cdn-cache-control") || name == "surrogate-control" || name == "edge-control"
}

/// The non-empty, trimmed elements of a comma-separated header list; a comma
/// inside a quoted string (`no-cache="Set-Cookie, X"`) does not split.
fn split_list(text: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                elements.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    elements.push(&text[start..]);
    elements
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Whether the `Vary` headers already name `Cookie` (or `*`).
fn varies_by_cookie(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("cookie"))
}

/// Why the [`SessionLayer`] replaced a handler's response: found in the
/// extensions of that response, whose body is empty, so an outer layer can
/// render it, for example with axum's `middleware::map_response`:
///
/// ```
/// use axum::{Router, body::Body, http::Response, middleware, routing::get};
/// use session_tower::SessionFailure;
///
/// async fn render(mut response: Response<Body>) -> Response<Body> {
///     if let Some(failure) = response.extensions().get::<SessionFailure>().copied() {
///         *response.body_mut() = Body::from(failure.message());
///     }
///     response
/// }
///
/// # fn app(sessions: session_tower::SessionLayer) -> Router {
/// Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(sessions)
///     .layer(middleware::map_response(render)) // outside the SessionLayer
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionFailure {
    /// `409 Conflict`: a concurrent request changed a session value this
    /// handler had read, so its decision may rest on stale data; nothing was
    /// saved. The client may retry the request.
    StaleRead,
    /// `409 Conflict`: the session kept being changed concurrently and the
    /// save could not get through in
    /// [`max_save_attempts`](SessionLayer::max_save_attempts); nothing was
    /// saved.
    Contention,
    /// `409 Conflict`: the handler bound the session to an owner (without
    /// [`Session::cycle_id`], which would have reported it) who already has
    /// as many sessions as the store's per-owner limit allows; nothing was
    /// saved. Signing out elsewhere first helps.
    TooManySessions,
    /// `409 Conflict`: the handler changed the session, but meanwhile a
    /// concurrent request ended it (logout, revocation) or gave it a new ID
    /// ([`Session::cycle_id`], say a sign-in in another tab), or it expired.
    /// The ended session is not brought back and the changes were not
    /// saved. After a rotation the browser holds the new cookie (from the
    /// other response), so a retry acts on the renewed session; after a
    /// logout a retry starts anew.
    Ended,
    /// `503 Service Unavailable`: the store is unreachable or full; nothing
    /// was saved.
    Unavailable,
    /// `500 Internal Server Error`: the session could not be stored as it
    /// is (data too large, an invalid owner key, a corrupt record, an
    /// [`update`](Session::update) closure that panicked when re-run);
    /// nothing was saved. A bug to fix in the application.
    Refused,
}

impl SessionFailure {
    /// The status code of the replacement response.
    pub fn status(self) -> StatusCode {
        match self {
            Self::StaleRead | Self::Contention | Self::TooManySessions | Self::Ended => {
                StatusCode::CONFLICT
            }
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A sentence for the user.
    pub fn message(self) -> &'static str {
        match self {
            Self::StaleRead => {
                "Your session was changed by another request while this one was \
                 being handled, so this request's changes were not saved. Please try again."
            }
            Self::Contention => {
                "Your session is being changed by many requests at once, so this \
                 request's changes were not saved. Please try again."
            }
            Self::TooManySessions => {
                "This account already has as many active sessions as it may have, so this \
                 request's changes were not saved. Sign out of another session and try again."
            }
            Self::Ended => {
                "Your session was ended or renewed by another request (a sign-out or a \
                 sign-in) while this one was being handled, so this request's changes were \
                 not saved. Please try again."
            }
            Self::Unavailable => {
                "The session store is unavailable, so this request's changes were not \
                 saved. Please try again later."
            }
            Self::Refused => "The session could not be saved.",
        }
    }

    /// The failure that stands for a store error a handler met, so that a
    /// handler can answer as the layer does (with the `axum` feature,
    /// `SessionFailure` is an `IntoResponse`, and `?` converts):
    /// [`Error::Backend`] and [`Error::Capacity`] are
    /// [`Unavailable`](Self::Unavailable) (503);
    /// [`Error::TooManySessions`] is [`TooManySessions`](Self::TooManySessions),
    /// [`Error::Conflict`] is [`Contention`](Self::Contention) and
    /// [`Error::NotFound`] is [`Ended`](Self::Ended) (409); anything else (a
    /// corrupt record, data too large, invalid input) is
    /// [`Refused`](Self::Refused) (500). Log the error itself first if you
    /// want its detail: the failure carries only its kind.
    pub fn from_store_error(error: &Error) -> Self {
        match error {
            Error::Backend(_) | Error::Capacity { .. } => Self::Unavailable,
            Error::TooManySessions { .. } => Self::TooManySessions,
            Error::Conflict => Self::Contention,
            Error::NotFound => Self::Ended,
            _ => Self::Refused,
        }
    }

    fn into_response<B: Default>(self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(self);
        response
    }
}

impl From<Error> for SessionFailure {
    /// As [`SessionFailure::from_store_error`].
    fn from(error: Error) -> Self {
        Self::from_store_error(&error)
    }
}

impl fmt::Display for SessionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(values: &[&[u8]]) -> Vec<String> {
        let mut headers = http::HeaderMap::new();
        for value in values {
            headers.append(
                header::CACHE_CONTROL,
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        keep_out_of_shared_caches(&mut headers);
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn responses_with_a_set_cookie_are_kept_out_of_shared_caches() {
        for (given, expected) in [
            (&[][..], "private, no-store"),
            (&[&b""[..]][..], "private, no-store"),
            (&[&b" , "[..]][..], "private, no-store"),
            (&[&b"no-store"[..]][..], "no-store"),
            (&[&b"public, No-Store"[..]][..], "public, No-Store"),
            (&[&b"Private, max-age=5"[..]][..], "Private, max-age=5"),
            (&[&b"public, max-age=600"[..]][..], "private, max-age=600"),
            (&[&b"max-age=600"[..]][..], "private, max-age=600"),
            (&[&b"s-maxage=600"[..]][..], "private"),
            (
                &[&b"private=\"a, b\", max-age=1"[..]][..],
                "private, max-age=1",
            ),
            (
                &[&b"no-cache=\"x, private\""[..], &b"public"[..]][..],
                "private, no-cache=\"x, private\"",
            ),
            (&[&b"max-age=1, \xff"[..]][..], "private, no-store"),
        ] {
            assert_eq!(rewritten(given), [expected], "{given:?}");
        }
    }

    #[test]
    fn list_elements_split_on_commas_outside_quotes_only() {
        assert_eq!(
            split_list(r#" a , b="x, \"y, z", c,, "#),
            ["a", r#"b="x, \"y, z""#, "c"]
        );
        assert!(split_list("").is_empty());
    }
}
