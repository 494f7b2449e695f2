//! Session cookies: read the session ID from a request's `Cookie` headers and
//! build the `Set-Cookie` headers that give it to the browser and take it
//! away again.
//!
//! The browser holds only the unguessable [`SessionId`]; this crate moves it
//! between the HTTP headers ([`http`] types) and your session store. It
//! depends on `session-core` alone, not on any store.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, header};
//! use session_cookie::CookieConfig;
//! use session_core::SessionId;
//!
//! // Once, at start-up: a checked, secure-by-default configuration.
//! let cookies = CookieConfig::builder("__Host-sid")
//!     .max_age(Duration::from_secs(3600))
//!     .build()?;
//!
//! // Login: hand a fresh session ID to the browser.
//! let id = SessionId::generate()?;
//! let response = Response::builder()
//!     .header(header::SET_COOKIE, cookies.set_cookie_header(&id))
//!     .body(())?;
//! assert_eq!(
//!     response.headers()[header::SET_COOKIE],
//!     format!("__Host-sid={}; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=3600", id.as_str()),
//! );
//!
//! // The next request brings it back, among other cookies.
//! let request = Request::builder()
//!     .header(header::COOKIE, format!("theme=dark; __Host-sid={}", id.as_str()))
//!     .body(())?;
//! assert_eq!(cookies.session_id_from_request(&request), Some(id));
//!
//! // Logout: a Set-Cookie that deletes it.
//! assert!(cookies.removal_cookie().starts_with("__Host-sid=; "));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Two ways in
//!
//! * [`CookieConfig`] is the recommended, **secure-by-default** path:
//!   `Secure`, `HttpOnly`, `SameSite=Lax` and `Path=/` unless you say
//!   otherwise, the `__Host-`, `__Secure-`, `__Http-` and `__Host-Http-`
//!   name prefixes, `Domain`, `Max-Age` or a browser-session cookie, and
//!   `Partitioned` (CHIPS). The rules browsers apply to these are checked
//!   once when it is built (name, prefixes, `Secure` and `HttpOnly`
//!   requirements, `Path` and `Domain` syntax, IP
//!   addresses and single-label domains), so an invalid combination is a
//!   [`CookieConfigError`] at start-up, not a malformed or silently ignored
//!   header later. Two things need knowledge this crate does not have and
//!   stay yours to get right: a `Domain` that is a multi-label public suffix
//!   (`co.uk`), and one that does not match your host.
//! * The free functions [`session_cookie`], [`destroy_cookie`],
//!   [`session_id_from_request`] and [`session_id_from_headers`] keep the
//!   original (seed) API and its meaning (beside them,
//!   [`session_ids_from_request`] and [`session_ids_from_headers`] list
//!   every candidate): `HttpOnly; SameSite=Lax; Path=/`
//!   with a `Max-Age`, and **no `Secure`**. Prefer `CookieConfig` for
//!   anything served over HTTPS.
//!
//! # Reading cookies
//!
//! [`session_id_from_headers`] follows RFC 6265bis: it reads every `Cookie`
//! header (HTTP/2 clients may send several), splits each on `;`, trims
//! spaces and tabs, splits each pair at its first `=`, compares names
//! case-sensitively, and unwraps one pair of double quotes around a value.
//! Values that are oversized, malformed, quoted junk or not ASCII are
//! skipped before any hashing, so they never reach a store. Parsing is
//! byte-level, so a non-UTF-8 byte in some *other* cookie does not hide the
//! session cookie, and bounded (at most [`MAX_COOKIE_PAIRS`] pairs and
//! [`MAX_CANDIDATES`] same-name cookies per request). It never panics.
//!
//! ## Several cookies with the same name
//!
//! A browser may send several cookies called `sid`: one per path and domain
//! it holds, longer paths first and, among equal paths, older ones first.
//! After an application changes its cookie's `Path` or `Domain`, or when a
//! sibling subdomain sets one for the parent domain, the *first* cookie can
//! be a stale one that names a session which has ended, while a later one
//! names the live session. Well-formed is not live, and only the store can
//! tell which is: so to find the session, use [`session_ids_from_headers`]
//! (or [`CookieConfig::session_ids_from_headers`]), which lists every
//! well-formed candidate in order, and load them in turn until one is live
//! (`session-tower` does this). [`session_id_from_headers`] returns only the
//! first candidate, which is enough when at most one cookie can exist (a
//! `__Host-` cookie with the one path it allows, say).
//!
//! A server cannot delete such a stale cookie: the `Cookie` header does not
//! say which path or domain it was set for, and a removal `Set-Cookie` with
//! the configured path and domain would delete the *live* cookie of the same
//! name instead. It expires on its own; until then it costs a lookup.
//!
//! # Feature flags
//!
//! This crate has no feature flags. It uses the `cookie` crate without its
//! optional features (session IDs are base64url and need no
//! percent-encoding) and `http` with `std` only.
#![deny(missing_docs)]

mod config;
mod error;
mod parse;

use cookie::{Cookie, SameSite as CookieSameSite};
use http::{HeaderMap, Request};
use session_core::SessionId;

pub use config::{CookieConfig, CookieConfigBuilder, MAX_NAME_LEN, SameSite};
pub use error::CookieConfigError;
pub use parse::{MAX_CANDIDATES, MAX_COOKIE_PAIRS};

/// The `Set-Cookie` header value that hands `id` to the browser under `name`
/// for `max_age_secs` seconds, with the seed's attributes exactly:
/// `HttpOnly; SameSite=Lax; Path=/; Max-Age=<max_age_secs>`.
///
/// There is **no `Secure`** attribute, as in the original API; for cookies
/// served over HTTPS use [`CookieConfig`], which is secure by default.
///
/// If `name` is not a valid cookie name (an RFC 9110 token), or starts with
/// `__Secure-`, `__Host-`, `__Http-` or `__Host-Http-` (in any case:
/// prefixes that require `Secure`, so browsers would drop the cookie), the
/// result is an **empty string**, which sets no cookie, rather than a header
/// that browsers misread or ignore. [`CookieConfig`]
/// reports such a name as an error instead.
///
/// ```
/// use session_cookie::session_cookie;
/// use session_core::SessionId;
///
/// let id = SessionId::generate()?;
/// assert_eq!(
///     session_cookie(&id, "sid", 3600),
///     format!("sid={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600", id.as_str()),
/// );
/// assert_eq!(session_cookie(&id, "bad name", 3600), "");
/// # Ok::<(), session_core::Error>(())
/// ```
pub fn session_cookie(id: &SessionId, name: &str, max_age_secs: u64) -> String {
    match seed_cookie(name, id.as_str()) {
        Some(mut cookie) => {
            cookie.set_max_age(config::max_age_from_secs(max_age_secs));
            cookie.to_string()
        }
        None => String::new(),
    }
}

/// The `Set-Cookie` header value that deletes the cookie `name` set by
/// [`session_cookie`]: the same attributes (`HttpOnly; SameSite=Lax;
/// Path=/`), an empty value, `Max-Age=0`, and an `Expires` date in the past
/// for old clients.
///
/// Like [`session_cookie`], it returns an empty string if `name` is not a
/// valid cookie name or has one of those prefixes.
///
/// ```
/// use session_cookie::destroy_cookie;
///
/// assert_eq!(
///     destroy_cookie("sid"),
///     "sid=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
/// );
/// ```
pub fn destroy_cookie(name: &str) -> String {
    match seed_cookie(name, "") {
        Some(mut cookie) => {
            config::make_removal(&mut cookie);
            cookie.to_string()
        }
        None => String::new(),
    }
}

/// The first session ID the request carries in cookie `name`, if any; see
/// [`session_id_from_headers`], and [`session_ids_from_request`] for every
/// candidate.
///
/// ```
/// use http::{Request, header::COOKIE};
/// use session_cookie::session_id_from_request;
/// use session_core::SessionId;
///
/// let id = SessionId::generate()?;
/// let request = Request::builder()
///     .header(COOKIE, format!("lang=en; sid={}", id.as_str()))
///     .body(())?;
/// assert_eq!(session_id_from_request(&request, "sid"), Some(id));
/// assert_eq!(session_id_from_request(&request, "other"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn session_id_from_request<B>(request: &Request<B>, name: &str) -> Option<SessionId> {
    session_id_from_headers(request.headers(), name)
}

/// The first session ID in the `Cookie` header(s) under cookie `name`, if
/// any: the first element of [`session_ids_from_headers`].
///
/// Every `Cookie` header is read, in order. Each is split on `;`; each pair
/// is split at its first `=`, and spaces and tabs around name and value are
/// ignored. Names are compared exactly (case-sensitively). A value wrapped in
/// one pair of double quotes is unwrapped. The first cookie called `name`
/// whose value is a well-formed [`SessionId`] is returned; cookies whose
/// value is longer than [`session_core::MAX_ID_LEN`], contains anything but
/// base64url characters (other quotes, spaces, `=`, non-ASCII bytes) or is
/// otherwise not an ID are skipped without any hashing.
///
/// Well-formed is not live: when the browser holds several cookies called
/// `name` (see [Several cookies with the same
/// name](crate#several-cookies-with-the-same-name)), the first may name an
/// ended session while a later one names the live one. To find the session,
/// load each of [`session_ids_from_headers`] in turn instead.
///
/// Returns `None` when no such cookie is found, when `name` is not a valid
/// cookie name, and once [`MAX_COOKIE_PAIRS`] pairs or [`MAX_CANDIDATES`]
/// cookies called `name` have been examined without success. It never panics.
///
/// ```
/// use http::{HeaderMap, header::COOKIE};
/// use session_cookie::session_id_from_headers;
/// use session_core::SessionId;
///
/// let id = SessionId::generate()?;
/// let mut headers = HeaderMap::new();
/// // A stale cookie for a narrower path comes first; it is skipped.
/// headers.append(COOKIE, "sid=\"not an id\"; theme=dark".parse()?);
/// headers.append(COOKIE, format!("sid=\"{}\"", id.as_str()).parse()?);
/// assert_eq!(session_id_from_headers(&headers, "sid"), Some(id));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn session_id_from_headers(headers: &HeaderMap, name: &str) -> Option<SessionId> {
    if config::check_name(name).is_err() {
        return None;
    }
    parse::session_id_in(headers, name.as_bytes())
}

/// Every session ID the request carries in cookie `name`, in order; see
/// [`session_ids_from_headers`].
///
/// ```
/// use http::{Request, header::COOKIE};
/// use session_cookie::session_ids_from_request;
/// use session_core::SessionId;
///
/// let (stale, live) = (SessionId::generate()?, SessionId::generate()?);
/// let request = Request::builder()
///     .header(COOKIE, format!("sid={}; lang=en; sid={}", stale.as_str(), live.as_str()))
///     .body(())?;
/// assert_eq!(session_ids_from_request(&request, "sid"), [stale, live]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn session_ids_from_request<B>(request: &Request<B>, name: &str) -> Vec<SessionId> {
    session_ids_from_headers(request.headers(), name)
}

/// Every session ID in the `Cookie` header(s) under cookie `name`: each
/// cookie called `name` whose value is a well-formed [`SessionId`], in the
/// order the browser sent them, each distinct ID once (at its first place).
///
/// Cookies are read exactly as by [`session_id_from_headers`], whose result
/// is the first element of this list, and within the same bounds: at most
/// [`MAX_COOKIE_PAIRS`] pairs and [`MAX_CANDIDATES`] cookies called `name`
/// (well-formed or not) are examined, so the list has at most
/// [`MAX_CANDIDATES`] IDs. It is empty when `name` is not a valid cookie
/// name. It never panics.
///
/// Load the candidates in order and use the first that names a live session:
/// a stale cookie (for an old path or a parent domain) may come before the
/// current one. In the common case of one cookie, that is one lookup.
///
/// ```
/// use http::{HeaderMap, header::COOKIE};
/// use session_cookie::session_ids_from_headers;
/// use session_core::SessionId;
///
/// let (stale, live) = (SessionId::generate()?, SessionId::generate()?);
/// let mut headers = HeaderMap::new();
/// // A browser sends the cookie for the longer path, or the older one, first.
/// headers.append(COOKIE, format!("sid={}; theme=dark", stale.as_str()).parse()?);
/// headers.append(COOKIE, format!("sid={}; sid=junk", live.as_str()).parse()?);
/// let candidates = session_ids_from_headers(&headers, "sid");
/// assert_eq!(candidates, [stale, live]);
/// // With a store: the first candidate that loads is the session.
/// // for id in &candidates { if let Some(s) = store.load(id).await? { … break } }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn session_ids_from_headers(headers: &HeaderMap, name: &str) -> Vec<SessionId> {
    if config::check_name(name).is_err() {
        return Vec::new();
    }
    parse::session_ids_in(headers, name.as_bytes())
}

/// The seed's cookie (`HttpOnly; SameSite=Lax; Path=/`), or `None` if `name`
/// cannot be used without `Secure`.
fn seed_cookie<'a>(name: &'a str, value: &'a str) -> Option<Cookie<'a>> {
    if config::check_name(name).is_err() || config::name_prefix(name).is_some() {
        return None;
    }
    Some(
        Cookie::build((name, value))
            .http_only(true)
            .same_site(CookieSameSite::Lax)
            .path("/")
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie::time::{Duration, OffsetDateTime};

    #[test]
    fn session_cookie_has_exactly_the_seed_attributes() {
        let id = SessionId::generate().unwrap();
        let text = session_cookie(&id, "sid", 3600);
        assert_eq!(
            text,
            format!(
                "sid={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600",
                id.as_str()
            )
        );
        let cookie = Cookie::parse(text).unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(CookieSameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.max_age(), Some(Duration::seconds(3600)));
        assert_eq!(cookie.secure(), None);
        assert_eq!(cookie.domain(), None);
        assert_eq!(cookie.expires(), None);
        assert_eq!(cookie.partitioned(), None);
    }

    #[test]
    fn session_cookie_max_age_saturates() {
        let id = SessionId::generate().unwrap();
        assert!(session_cookie(&id, "sid", u64::MAX).ends_with(&format!("; Max-Age={}", i64::MAX)));
        assert!(session_cookie(&id, "sid", 0).ends_with("; Max-Age=0"));
    }

    #[test]
    fn destroy_cookie_has_the_seed_attributes_and_max_age_zero() {
        let text = destroy_cookie("sid");
        let cookie = Cookie::parse(text).unwrap();
        assert_eq!(cookie.name_value(), ("sid", ""));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(CookieSameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.secure(), None);
        assert_eq!(cookie.max_age(), Some(Duration::ZERO));
        assert_eq!(cookie.expires_datetime(), Some(OffsetDateTime::UNIX_EPOCH));
    }

    #[test]
    fn seed_functions_set_no_cookie_for_names_they_cannot_use() {
        let id = SessionId::generate().unwrap();
        for name in [
            "",
            "a b",
            "sid; Domain=evil.example",
            "sid\r\nX: y",
            "__Host-sid",
            "__secure-sid",
            "__Http-sid",
            "__host-http-sid",
        ] {
            assert_eq!(session_cookie(&id, name, 60), "", "{name:?}");
            assert_eq!(destroy_cookie(name), "", "{name:?}");
        }
    }

    #[test]
    fn session_id_from_request_reads_the_request_headers() {
        let id = SessionId::generate().unwrap();
        let request = Request::builder()
            .header(http::header::COOKIE, "a=b")
            .header(http::header::COOKIE, format!("sid={}", id.as_str()))
            .body(())
            .unwrap();
        assert_eq!(session_id_from_request(&request, "sid"), Some(id));
        assert_eq!(session_id_from_request(&request, "a"), None);
    }
}
