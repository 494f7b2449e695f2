//! [`CookieConfig`]: a checked, secure-by-default session cookie.

use std::time::Duration;

use cookie::time::{self, OffsetDateTime};
use cookie::{Cookie, Expiration};
use http::{HeaderMap, HeaderValue, Request};
use session_core::{MAX_ID_LEN, SessionId};

use crate::CookieConfigError;
use crate::parse;

/// Longest cookie name a [`CookieConfig`] accepts: browsers ignore a cookie
/// whose name and value together exceed 4096 bytes (RFC 6265bis §5.7), and a
/// session ID may be up to [`MAX_ID_LEN`] bytes.
pub const MAX_NAME_LEN: usize = 4096 - MAX_ID_LEN;

/// Longest `Path` or `Domain` value accepted: browsers ignore attribute values
/// over 1024 bytes (RFC 6265bis §5.6).
const MAX_ATTRIBUTE_LEN: usize = 1024;

const SECURE_PREFIX: &str = "__Secure-";
const HOST_PREFIX: &str = "__Host-";
const HTTP_PREFIX: &str = "__Http-";
const HOST_HTTP_PREFIX: &str = "__Host-Http-";

/// The cookie-name prefixes browsers enforce, most specific first (a
/// `__Host-Http-` name also starts with `__Host-`), with their rules.
const PREFIXES: [Prefix; 4] = [
    Prefix {
        name: HOST_HTTP_PREFIX,
        host: true,
        http_only: true,
    },
    Prefix {
        name: HOST_PREFIX,
        host: true,
        http_only: false,
    },
    Prefix {
        name: SECURE_PREFIX,
        host: false,
        http_only: false,
    },
    Prefix {
        name: HTTP_PREFIX,
        host: false,
        http_only: true,
    },
];

/// An RFC 6265bis cookie-name prefix and what it requires beyond `Secure`,
/// which every prefix requires.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    /// As the RFC spells it.
    pub(crate) name: &'static str,
    /// `Path=/` and no `Domain` (the `__Host-` rules).
    host: bool,
    /// `HttpOnly`.
    http_only: bool,
}

/// The `SameSite` attribute: when the browser sends the cookie on cross-site
/// requests.
///
/// ```
/// use session_cookie::SameSite;
///
/// assert_eq!(SameSite::default(), SameSite::Lax);
/// assert_eq!(SameSite::Strict.as_str(), "Strict");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SameSite {
    /// Sent only on same-site requests: following a link from another site to
    /// yours arrives without the session.
    Strict,
    /// Sent on same-site requests and on top-level navigations (following a
    /// link) from other sites, but not on cross-site subresource requests or
    /// form POSTs. The default, and the browsers' own default.
    #[default]
    Lax,
    /// Sent on every request, including cross-site ones (embedded content,
    /// third-party contexts). Requires `Secure`; consider
    /// [`CookieConfigBuilder::partitioned`] too.
    None,
}

impl SameSite {
    /// The attribute value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }

    fn to_cookie(self) -> cookie::SameSite {
        match self {
            Self::Strict => cookie::SameSite::Strict,
            Self::Lax => cookie::SameSite::Lax,
            Self::None => cookie::SameSite::None,
        }
    }
}

impl std::fmt::Display for SameSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the session cookie is named and which attributes it carries: the
/// secure-by-default way to set, clear and read it.
///
/// Made by [`CookieConfig::builder`] (or [`CookieConfig::new`] for the
/// defaults), which checks the rules below once, so a `CookieConfig` can
/// only produce well-formed `Set-Cookie` headers:
///
/// | attribute | default | builder method |
/// |---|---|---|
/// | `Secure` | **on** | [`secure`](CookieConfigBuilder::secure) |
/// | `HttpOnly` | on | [`http_only`](CookieConfigBuilder::http_only) |
/// | `SameSite` | `Lax` | [`same_site`](CookieConfigBuilder::same_site) |
/// | `Path` | `/` | [`path`](CookieConfigBuilder::path) |
/// | `Domain` | none (host only) | [`domain`](CookieConfigBuilder::domain) |
/// | `Max-Age` | none (ends with the browser session) | [`max_age`](CookieConfigBuilder::max_age), [`browser_session`](CookieConfigBuilder::browser_session) |
/// | `Partitioned` | off | [`partitioned`](CookieConfigBuilder::partitioned) |
///
/// The rules ([`CookieConfigError`] says which one failed):
///
/// * the name is a non-empty token (RFC 9110) of at most [`MAX_NAME_LEN`]
///   bytes;
/// * the name prefixes of RFC 6265bis §4.1.3, matched case-insensitively as
///   browsers do: a name starting with `__Secure-` requires `Secure`; with
///   `__Host-`, `Secure`, `Path=/` and no `Domain`; with `__Http-`, `Secure`
///   and `HttpOnly`; with `__Host-Http-`, all of these (`Secure`,
///   `HttpOnly`, `Path=/`, no `Domain`). (`__Http-` and `__Host-Http-` are
///   from recent drafts of RFC 6265bis: a browser that enforces them also
///   refuses such a cookie from a script, so it can only have come from the
///   server; one that does not know them treats them as ordinary names, so
///   the cookie works there too);
/// * `SameSite=None` and `Partitioned` each require `Secure`;
/// * `Path` starts with `/`; `Path` and `Domain` are at most 1024 bytes and
///   contain no `;`, whitespace or control characters (percent-encode a
///   space in a path, as the URL does);
/// * `Domain` is an ASCII host name (use the punycode form of international
///   names) of at least two labels, each of at most 63 letters, digits,
///   `-` or `_`, not starting or ending with `-`; not an IP address, nor a
///   single label such as `com` or `localhost` (leave it unset for a
///   host-only cookie);
/// * `Max-Age`, when set, is at least one second.
///
/// What cannot be checked here: whether a `Domain` is a public suffix beyond
/// its last label (say `co.uk` or `github.io`; browsers consult the Public
/// Suffix List, which this crate does not ship, and then refuse the
/// cookie), and whether it domain-matches the host the response comes
/// from (browsers ignore a cookie whose `Domain` does not).
///
/// The `__Host-` prefix is the strong choice: the cookie is then bound to
/// exactly this host over HTTPS and cannot be planted by a sibling subdomain.
/// `__Host-Http-` adds that no script of the page can have planted it either,
/// where browsers enforce it.
///
/// ```
/// use std::time::Duration;
/// use session_cookie::{CookieConfig, SameSite};
/// use session_core::SessionId;
///
/// let config = CookieConfig::builder("__Host-sid")
///     .same_site(SameSite::Strict)
///     .max_age(Duration::from_secs(8 * 3600))
///     .build()?;
///
/// let id = SessionId::generate()?;
/// assert_eq!(
///     config.set_cookie(&id),
///     format!("__Host-sid={}; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=28800", id.as_str()),
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    name: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    path: String,
    domain: Option<String>,
    max_age: Option<Duration>,
    partitioned: bool,
}

impl CookieConfig {
    /// Start configuring a session cookie called `name`, with the defaults
    /// listed on [`CookieConfig`]: `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// `Path=/`, no `Domain`, no `Max-Age`, not `Partitioned`.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("__Host-sid").build()?;
    /// assert!(config.secure() && config.http_only());
    /// assert_eq!(config.path(), "/");
    /// assert_eq!(config.max_age(), None);
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn builder(name: impl Into<String>) -> CookieConfigBuilder {
        CookieConfigBuilder {
            config: Self {
                name: name.into(),
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
                path: "/".to_owned(),
                domain: None,
                max_age: None,
                partitioned: false,
            },
        }
    }

    /// A cookie called `name` with every default; short for
    /// `CookieConfig::builder(name).build()`.
    ///
    /// # Errors
    /// [`CookieConfigError`] if `name` is not a valid cookie name.
    ///
    /// ```
    /// use session_cookie::{CookieConfig, CookieConfigError};
    ///
    /// assert!(CookieConfig::new("__Host-sid").is_ok());
    /// assert_eq!(CookieConfig::new("my session"), Err(CookieConfigError::InvalidName { position: 2 }));
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, CookieConfigError> {
        Self::builder(name).build()
    }

    /// Turn this configuration back into a builder, to derive a variant.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let base = CookieConfig::new("__Secure-sid")?;
    /// let admin = base.to_builder().path("/admin").build()?;
    /// assert_eq!(admin.path(), "/admin");
    /// assert_eq!(admin.name(), "__Secure-sid");
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn to_builder(&self) -> CookieConfigBuilder {
        CookieConfigBuilder {
            config: self.clone(),
        }
    }

    /// The `Set-Cookie` header value that hands `id` to the browser.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("__Host-sid")?;
    /// let id = SessionId::generate()?;
    /// assert_eq!(
    ///     config.set_cookie(&id),
    ///     format!("__Host-sid={}; HttpOnly; SameSite=Lax; Secure; Path=/", id.as_str()),
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_cookie(&self, id: &SessionId) -> String {
        self.set_cookie_within(id, Duration::MAX)
    }

    /// As [`set_cookie`](Self::set_cookie), for a session with `remaining`
    /// life left: a configured `Max-Age` is cut to `remaining` (whole
    /// seconds, rounded up) where that is shorter, so the cookie does not
    /// outlive the session. A browser-session cookie stays one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::builder("sid").max_age(Duration::from_secs(3600)).build()?;
    /// let id = SessionId::generate()?;
    /// let near_the_end = config.set_cookie_within(&id, Duration::from_millis(59_001));
    /// assert!(near_the_end.contains("Max-Age=60"), "{near_the_end}");
    /// let early = config.set_cookie_within(&id, Duration::from_secs(7200));
    /// assert_eq!(early, config.set_cookie(&id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_cookie_within(&self, id: &SessionId, remaining: Duration) -> String {
        let mut cookie = self.cookie(id.as_str());
        if let Some(max_age) = self.max_age {
            let remaining_secs = remaining
                .as_secs()
                .saturating_add(u64::from(remaining.subsec_nanos() > 0));
            cookie.set_max_age(max_age_from_secs(max_age.as_secs().min(remaining_secs)));
        }
        cookie.to_string()
    }

    /// [`set_cookie`](Self::set_cookie) as an [`http::HeaderValue`], ready to
    /// append under [`http::header::SET_COOKIE`].
    ///
    /// ```
    /// use http::{Response, header::SET_COOKIE};
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("__Host-sid")?;
    /// let id = SessionId::generate()?;
    /// let response = Response::builder()
    ///     .header(SET_COOKIE, config.set_cookie_header(&id))
    ///     .body(())?;
    /// assert_eq!(response.headers()[SET_COOKIE], config.set_cookie(&id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_cookie_header(&self, id: &SessionId) -> HeaderValue {
        header_value(self.set_cookie(id))
    }

    /// [`set_cookie_within`](Self::set_cookie_within) as an
    /// [`http::HeaderValue`].
    pub fn set_cookie_header_within(&self, id: &SessionId, remaining: Duration) -> HeaderValue {
        header_value(self.set_cookie_within(id, remaining))
    }

    /// The `Set-Cookie` header value that deletes the session cookie (on
    /// logout): the same name, `Path`, `Domain` and attributes (browsers only
    /// replace a cookie whose name, path, domain and partition match), an
    /// empty value, `Max-Age=0` and an `Expires` date in the past for old
    /// clients.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("__Secure-sid").path("/app").build()?;
    /// assert_eq!(
    ///     config.removal_cookie(),
    ///     "__Secure-sid=; HttpOnly; SameSite=Lax; Secure; Path=/app; Max-Age=0; \
    ///      Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    /// );
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn removal_cookie(&self) -> String {
        let mut cookie = self.cookie("");
        make_removal(&mut cookie);
        cookie.to_string()
    }

    /// [`removal_cookie`](Self::removal_cookie) as an [`http::HeaderValue`].
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::new("__Host-sid")?;
    /// assert_eq!(config.removal_header(), config.removal_cookie());
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn removal_header(&self) -> HeaderValue {
        header_value(self.removal_cookie())
    }

    /// The first session ID the request carries in this cookie, if any: see
    /// [`session_id_from_headers`](Self::session_id_from_headers), and
    /// [`session_ids_from_request`](Self::session_ids_from_request) for
    /// every candidate.
    ///
    /// ```
    /// use http::{Request, header::COOKIE};
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("__Host-sid")?;
    /// let id = SessionId::generate()?;
    /// let request = Request::builder()
    ///     .header(COOKIE, format!("lang=en; __Host-sid={}", id.as_str()))
    ///     .body(())?;
    /// assert_eq!(config.session_id_from_request(&request), Some(id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn session_id_from_request<B>(&self, request: &Request<B>) -> Option<SessionId> {
        self.session_id_from_headers(request.headers())
    }

    /// The first session ID in the `Cookie` header(s) under this cookie's
    /// name, if any, parsed exactly as the free function
    /// [`session_id_from_headers`](crate::session_id_from_headers) does: every
    /// `Cookie` header is read, and the first cookie with this name whose
    /// value is a well-formed [`SessionId`] wins.
    ///
    /// Well-formed is not live: if the browser may hold several cookies of
    /// this name (see [Several cookies with the same
    /// name](crate#several-cookies-with-the-same-name)), load each of
    /// [`session_ids_from_headers`](Self::session_ids_from_headers) in turn
    /// instead.
    ///
    /// ```
    /// use http::{HeaderMap, HeaderValue, header::COOKIE};
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("sid")?;
    /// let id = SessionId::generate()?;
    /// let mut headers = HeaderMap::new();
    /// headers.append(COOKIE, HeaderValue::from_static("sid=stale-junk"));
    /// headers.append(COOKIE, format!("sid={}", id.as_str()).parse()?);
    /// assert_eq!(config.session_id_from_headers(&headers), Some(id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn session_id_from_headers(&self, headers: &HeaderMap) -> Option<SessionId> {
        parse::session_id_in(headers, self.name.as_bytes())
    }

    /// Every session ID the request carries in this cookie, in order: see
    /// [`session_ids_from_headers`](Self::session_ids_from_headers).
    ///
    /// ```
    /// use http::{Request, header::COOKIE};
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("__Secure-sid")?;
    /// let (stale, live) = (SessionId::generate()?, SessionId::generate()?);
    /// let request = Request::builder()
    ///     .header(COOKIE, format!("__Secure-sid={}; __Secure-sid={}", stale.as_str(), live.as_str()))
    ///     .body(())?;
    /// assert_eq!(config.session_ids_from_request(&request), [stale, live]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn session_ids_from_request<B>(&self, request: &Request<B>) -> Vec<SessionId> {
        self.session_ids_from_headers(request.headers())
    }

    /// Every session ID in the `Cookie` header(s) under this cookie's name:
    /// each well-formed one, in the order the browser sent them, each
    /// distinct ID once, at most [`MAX_CANDIDATES`](crate::MAX_CANDIDATES);
    /// exactly as the free function
    /// [`session_ids_from_headers`](crate::session_ids_from_headers). Load
    /// them in turn and use the first that names a live session: a stale
    /// cookie for an old path or a parent domain may come first.
    ///
    /// ```
    /// use http::{HeaderMap, header::COOKIE};
    /// use session_cookie::CookieConfig;
    /// use session_core::SessionId;
    ///
    /// let config = CookieConfig::new("sid")?;
    /// let (stale, live) = (SessionId::generate()?, SessionId::generate()?);
    /// let mut headers = HeaderMap::new();
    /// headers.append(COOKIE, format!("sid={}", stale.as_str()).parse()?);
    /// headers.append(COOKIE, format!("sid={}", live.as_str()).parse()?);
    /// assert_eq!(config.session_ids_from_headers(&headers), [stale, live]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn session_ids_from_headers(&self, headers: &HeaderMap) -> Vec<SessionId> {
        parse::session_ids_in(headers, self.name.as_bytes())
    }

    /// The cookie name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the `Secure` attribute is set (the cookie is only sent over
    /// HTTPS).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Whether the `HttpOnly` attribute is set (scripts cannot read the
    /// cookie).
    pub fn http_only(&self) -> bool {
        self.http_only
    }

    /// The `SameSite` attribute.
    pub fn same_site(&self) -> SameSite {
        self.same_site
    }

    /// The `Path` attribute.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Domain` attribute, if any (without a leading dot).
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The `Max-Age` attribute, or `None` for a cookie that ends with the
    /// browser session. Only whole seconds are sent.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether the `Partitioned` (CHIPS) attribute is set.
    pub fn partitioned(&self) -> bool {
        self.partitioned
    }

    /// The cookie with this configuration's attributes, without `Max-Age`.
    fn cookie<'a>(&'a self, value: &'a str) -> Cookie<'a> {
        let mut builder = Cookie::build((self.name.as_str(), value))
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(self.same_site.to_cookie())
            .path(self.path.as_str())
            .partitioned(self.partitioned);
        if let Some(domain) = &self.domain {
            builder = builder.domain(domain.as_str());
        }
        builder.build()
    }
}

/// Builds a [`CookieConfig`]; made by [`CookieConfig::builder`]. Nothing is
/// checked until [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct CookieConfigBuilder {
    config: CookieConfig,
}

impl CookieConfigBuilder {
    /// Whether to set `Secure` (default: **on**). Turn it off only for local
    /// development over plain HTTP; it cannot be turned off for prefixed
    /// names (`__Secure-`, `__Host-`, `__Http-`, `__Host-Http-`),
    /// `SameSite=None` or `Partitioned`.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let dev = CookieConfig::builder("sid").secure(false).build()?;
    /// assert!(!dev.secure());
    /// assert!(CookieConfig::builder("__Host-sid").secure(false).build().is_err());
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn secure(mut self, secure: bool) -> Self {
        self.config.secure = secure;
        self
    }

    /// Whether to set `HttpOnly` (default: on), which hides the cookie from
    /// JavaScript. There is rarely a reason to turn it off for a session ID,
    /// and it cannot be turned off for `__Http-` and `__Host-Http-` names.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("sid").http_only(false).build()?;
    /// assert!(!config.set_cookie_header(&session_core::SessionId::generate()?)
    ///     .to_str()?
    ///     .contains("HttpOnly"));
    /// assert!(CookieConfig::builder("__Host-Http-sid").http_only(false).build().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.config.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default: [`SameSite::Lax`]).
    /// [`SameSite::None`] requires `Secure`.
    ///
    /// ```
    /// use session_cookie::{CookieConfig, CookieConfigError, SameSite};
    ///
    /// let config = CookieConfig::builder("sid").same_site(SameSite::Strict).build()?;
    /// assert_eq!(config.same_site(), SameSite::Strict);
    /// assert_eq!(
    ///     CookieConfig::builder("sid").same_site(SameSite::None).secure(false).build(),
    ///     Err(CookieConfigError::SameSiteNoneRequiresSecure),
    /// );
    /// # Ok::<(), CookieConfigError>(())
    /// ```
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.config.same_site = same_site;
        self
    }

    /// The `Path` attribute (default: `/`). It must start with `/`, and a
    /// `__Host-` cookie must keep `/`.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("__Secure-sid").path("/app").build()?;
    /// assert_eq!(config.path(), "/app");
    /// assert!(CookieConfig::builder("sid").path("app").build().is_err());
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// The `Domain` attribute (default: none, so the cookie goes only to the
    /// host that set it). Setting it shares the cookie with every subdomain;
    /// a leading dot is accepted and dropped. Not allowed with `__Host-`.
    ///
    /// ```
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("__Secure-sid").domain(".example.com").build()?;
    /// assert_eq!(config.domain(), Some("example.com"));
    /// assert!(CookieConfig::builder("sid").domain("example.com; Secure").build().is_err());
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.config.domain = Some(domain.into());
        self
    }

    /// Keep the cookie for `max_age` (sent as `Max-Age` in whole seconds; at
    /// least one second). Match it to the store's idle or absolute timeout.
    /// Browsers cap it at 400 days.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("sid").max_age(Duration::from_secs(3600)).build()?;
    /// assert_eq!(config.max_age(), Some(Duration::from_secs(3600)));
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.config.max_age = Some(max_age);
        self
    }

    /// Make it a browser-session cookie (the default): no `Max-Age`, so the
    /// browser drops it when it ends its session. The server-side timeouts
    /// still apply.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_cookie::CookieConfig;
    ///
    /// let config = CookieConfig::builder("sid")
    ///     .max_age(Duration::from_secs(60))
    ///     .browser_session()
    ///     .build()?;
    /// assert_eq!(config.max_age(), None);
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn browser_session(mut self) -> Self {
        self.config.max_age = None;
        self
    }

    /// Whether to set `Partitioned` (CHIPS; default: off), for a session
    /// cookie used inside third-party iframes: the browser keeps a separate
    /// cookie per top-level site. Requires `Secure`; usually paired with
    /// [`SameSite::None`].
    ///
    /// ```
    /// use session_cookie::{CookieConfig, SameSite};
    ///
    /// let config = CookieConfig::builder("__Host-sid")
    ///     .same_site(SameSite::None)
    ///     .partitioned(true)
    ///     .build()?;
    /// assert!(config.removal_cookie().contains("; Partitioned"));
    /// # Ok::<(), session_cookie::CookieConfigError>(())
    /// ```
    pub fn partitioned(mut self, partitioned: bool) -> Self {
        self.config.partitioned = partitioned;
        self
    }

    /// Check every rule (listed on [`CookieConfig`]) and return the
    /// configuration.
    ///
    /// # Errors
    /// The first [`CookieConfigError`] found, checked in this order: name,
    /// path, domain, max-age, name prefix rules, `SameSite=None`,
    /// `Partitioned`.
    ///
    /// ```
    /// use session_cookie::{CookieConfig, CookieConfigError};
    ///
    /// let err = CookieConfig::builder("__Host-sid").domain("example.com").build().unwrap_err();
    /// assert_eq!(err, CookieConfigError::HostPrefixForbidsDomain);
    /// ```
    pub fn build(self) -> Result<CookieConfig, CookieConfigError> {
        let mut config = self.config;
        check_name(&config.name)?;
        check_path(&config.path)?;
        if let Some(domain) = config.domain.take() {
            config.domain = Some(check_domain(&domain)?.to_owned());
        }
        if config.max_age.is_some_and(|d| d.as_secs() == 0) {
            return Err(CookieConfigError::MaxAgeTooShort);
        }
        if let Some(prefix) = name_prefix(&config.name) {
            if !config.secure {
                return Err(CookieConfigError::PrefixRequiresSecure {
                    prefix: prefix.name,
                });
            }
            if prefix.http_only && !config.http_only {
                return Err(CookieConfigError::PrefixRequiresHttpOnly {
                    prefix: prefix.name,
                });
            }
            if prefix.host && config.path != "/" {
                return Err(CookieConfigError::HostPrefixRequiresRootPath);
            }
            if prefix.host && config.domain.is_some() {
                return Err(CookieConfigError::HostPrefixForbidsDomain);
            }
        }
        if config.same_site == SameSite::None && !config.secure {
            return Err(CookieConfigError::SameSiteNoneRequiresSecure);
        }
        if config.partitioned && !config.secure {
            return Err(CookieConfigError::PartitionedRequiresSecure);
        }
        Ok(config)
    }
}

/// Whether `byte` is a `tchar` (RFC 9110 §5.6.2), the characters of a
/// cookie name.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Check that `name` is a token of acceptable length.
pub(crate) fn check_name(name: &str) -> Result<(), CookieConfigError> {
    if name.is_empty() {
        return Err(CookieConfigError::EmptyName);
    }
    if let Some(position) = name.bytes().position(|b| !is_tchar(b)) {
        return Err(CookieConfigError::InvalidName { position });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(CookieConfigError::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// The RFC 6265bis cookie-name prefix `name` starts with (the most specific
/// one), matched case-insensitively as browsers do.
pub(crate) fn name_prefix(name: &str) -> Option<Prefix> {
    PREFIXES.into_iter().find(|prefix| {
        name.as_bytes()
            .get(..prefix.name.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix.name.as_bytes()))
    })
}

fn check_path(path: &str) -> Result<(), CookieConfigError> {
    let invalid = |reason| Err(CookieConfigError::InvalidPath { reason });
    if !path.starts_with('/') {
        return invalid("it must start with '/'");
    }
    if path.len() > MAX_ATTRIBUTE_LEN {
        return invalid("it is longer than 1024 bytes, which browsers ignore");
    }
    // av-octet (RFC 6265bis §4.1.1) is visible ASCII and space, except ';'.
    // A space is allowed there but useless (a request path never holds a
    // raw space, so the cookie would never be sent; browsers also trim a
    // trailing one): write it percent-encoded, as the URL does.
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
        return invalid(
            "it may only contain visible ASCII characters other than ';' (no spaces or control \
             characters; percent-encode them as in the URL, e.g. %20)",
        );
    }
    Ok(())
}

/// Check `domain` and return it without its leading dot.
fn check_domain(domain: &str) -> Result<&str, CookieConfigError> {
    let invalid = |reason| Err(CookieConfigError::InvalidDomain { reason });
    let domain = domain.strip_prefix('.').unwrap_or(domain);
    if domain.is_empty() {
        return invalid("it is empty; leave it unset for a host-only cookie");
    }
    if domain.len() > MAX_ATTRIBUTE_LEN {
        return invalid("it is longer than 1024 bytes, which browsers ignore");
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return invalid(
            "it may only contain ASCII letters, digits, '-', '_' and '.' (a host name, \
             without scheme, port or path; use the punycode form of international names)",
        );
    }
    if domain.split('.').any(str::is_empty) {
        return invalid("it has an empty label (\"..\" or a trailing '.')");
    }
    if domain
        .split('.')
        .any(|label| label.starts_with('-') || label.ends_with('-'))
    {
        return invalid("a label starts or ends with '-', which no host name does");
    }
    if domain.split('.').any(|label| label.len() > 63) {
        return invalid("a label is longer than 63 characters, which no host name is");
    }
    let last = domain.rsplit('.').next().unwrap_or(domain);
    if is_ipv4_number(last) {
        // Browsers parse a host whose last label is a number as IPv4, and an
        // IP address has no subdomains to share the cookie with.
        return invalid(
            "it is an IP address; leave it unset for a host-only cookie (a cookie for an IP \
             address cannot be shared with other hosts)",
        );
    }
    if !domain.contains('.') {
        // "com", "localhost": a top-level domain (browsers refuse a Domain
        // that is a public suffix) or a bare host name.
        return invalid(
            "it is a single label (a top-level domain such as \"com\", which browsers refuse, \
             or a bare host name such as \"localhost\"); leave it unset for a host-only cookie",
        );
    }
    Ok(domain)
}

/// Whether `label` is a number as the WHATWG URL parser reads the last
/// label of an IPv4 host: decimal digits, or `0x` followed by hex digits.
fn is_ipv4_number(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `Max-Age` from whole seconds, saturating where `time` would overflow.
pub(crate) fn max_age_from_secs(secs: u64) -> time::Duration {
    time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Turn `cookie` into one that deletes itself: empty value, `Max-Age=0` and a
/// fixed `Expires` in the past (the Unix epoch; unlike
/// [`Cookie::make_removal`] this reads no clock, so the header is
/// deterministic).
pub(crate) fn make_removal(cookie: &mut Cookie<'_>) {
    cookie.set_value("");
    cookie.set_max_age(time::Duration::ZERO);
    cookie.set_expires(Expiration::DateTime(OffsetDateTime::UNIX_EPOCH));
}

/// A header value from text built only from checked parts.
fn header_value(text: String) -> HeaderValue {
    // Every byte is printable ASCII: the name is a token, the ID base64url,
    // Path and Domain were checked by `build`, and the attributes are fixed
    // ASCII. Were that ever violated, send an empty header (no cookie set)
    // rather than panic; the tests check the two forms always agree.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::generate().unwrap()
    }

    fn parsed(set_cookie: &str) -> Cookie<'static> {
        Cookie::parse(set_cookie.to_owned()).unwrap()
    }

    #[test]
    fn secure_and_http_only_are_on_by_default() {
        let config = CookieConfig::new("sid").unwrap();
        assert!(config.secure());
        assert!(config.http_only());
        assert_eq!(config.same_site(), SameSite::Lax);
        assert_eq!(config.path(), "/");
        assert_eq!(config.domain(), None);
        assert_eq!(config.max_age(), None);
        assert!(!config.partitioned());

        let id = id();
        let cookie = parsed(&config.set_cookie(&id));
        assert_eq!(cookie.name_value(), ("sid", id.as_str()));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.partitioned(), None);
    }

    #[test]
    fn default_is_a_browser_session_cookie_without_max_age_or_expires() {
        let config = CookieConfig::new("sid").unwrap();
        let text = config.set_cookie(&id());
        assert!(!text.contains("Max-Age"), "{text}");
        assert!(!text.contains("Expires"), "{text}");
        let cookie = parsed(&text);
        assert_eq!(cookie.max_age(), None);
        assert_eq!(cookie.expires(), None);

        let reverted = config
            .to_builder()
            .max_age(Duration::from_secs(5))
            .browser_session()
            .build()
            .unwrap();
        assert!(!reverted.set_cookie(&id()).contains("Max-Age"));
    }

    #[test]
    fn max_age_is_sent_in_whole_seconds() {
        let config = CookieConfig::builder("sid")
            .max_age(Duration::from_millis(90_500))
            .build()
            .unwrap();
        assert_eq!(
            parsed(&config.set_cookie(&id())).max_age(),
            Some(time::Duration::seconds(90))
        );
    }

    #[test]
    fn max_age_below_one_second_is_rejected() {
        for short in [Duration::ZERO, Duration::from_millis(999)] {
            assert_eq!(
                CookieConfig::builder("sid").max_age(short).build(),
                Err(CookieConfigError::MaxAgeTooShort)
            );
        }
    }

    #[test]
    fn huge_max_age_saturates_instead_of_overflowing() {
        let config = CookieConfig::builder("sid")
            .max_age(Duration::MAX)
            .build()
            .unwrap();
        let text = config.set_cookie(&id());
        assert!(text.ends_with(&format!("Max-Age={}", i64::MAX)), "{text}");
    }

    #[test]
    fn secure_prefix_requires_secure() {
        assert_eq!(
            CookieConfig::builder("__Secure-sid").secure(false).build(),
            Err(CookieConfigError::PrefixRequiresSecure {
                prefix: "__Secure-"
            })
        );
        let ok = CookieConfig::builder("__Secure-sid")
            .path("/app")
            .domain("example.com")
            .build()
            .unwrap();
        assert_eq!(parsed(&ok.set_cookie(&id())).secure(), Some(true));
    }

    #[test]
    fn host_prefix_requires_secure() {
        assert_eq!(
            CookieConfig::builder("__Host-sid").secure(false).build(),
            Err(CookieConfigError::PrefixRequiresSecure { prefix: "__Host-" })
        );
    }

    #[test]
    fn host_prefix_requires_root_path() {
        assert_eq!(
            CookieConfig::builder("__Host-sid").path("/app").build(),
            Err(CookieConfigError::HostPrefixRequiresRootPath)
        );
        assert!(
            CookieConfig::builder("__Host-sid")
                .path("/")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn host_prefix_forbids_domain() {
        assert_eq!(
            CookieConfig::builder("__Host-sid")
                .domain("example.com")
                .build(),
            Err(CookieConfigError::HostPrefixForbidsDomain)
        );
    }

    #[test]
    fn prefixes_are_matched_case_insensitively() {
        assert_eq!(
            CookieConfig::builder("__secure-sid").secure(false).build(),
            Err(CookieConfigError::PrefixRequiresSecure {
                prefix: "__Secure-"
            })
        );
        assert_eq!(
            CookieConfig::builder("__HOST-sid").path("/x").build(),
            Err(CookieConfigError::HostPrefixRequiresRootPath)
        );
        // Not a prefix: the dash is part of it.
        assert!(
            CookieConfig::builder("__Host_sid")
                .secure(false)
                .path("/x")
                .build()
                .is_ok()
        );
        assert!(
            CookieConfig::builder("__Secure")
                .secure(false)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn http_prefix_requires_secure_and_http_only() {
        assert_eq!(
            CookieConfig::builder("__Http-sid").secure(false).build(),
            Err(CookieConfigError::PrefixRequiresSecure { prefix: "__Http-" })
        );
        assert_eq!(
            CookieConfig::builder("__Http-sid").http_only(false).build(),
            Err(CookieConfigError::PrefixRequiresHttpOnly { prefix: "__Http-" })
        );
        // No `__Host-` rules: any path, a Domain.
        let ok = CookieConfig::builder("__Http-sid")
            .path("/app")
            .domain("example.com")
            .build()
            .unwrap();
        let cookie = parsed(&ok.set_cookie(&id()));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        // The other prefixes do not require HttpOnly.
        for name in ["__Secure-sid", "__Host-sid"] {
            assert!(
                CookieConfig::builder(name).http_only(false).build().is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn host_http_prefix_requires_the_host_rules_and_http_only() {
        assert_eq!(
            CookieConfig::builder("__Host-Http-sid")
                .secure(false)
                .build(),
            Err(CookieConfigError::PrefixRequiresSecure {
                prefix: "__Host-Http-"
            })
        );
        assert_eq!(
            CookieConfig::builder("__Host-Http-sid")
                .http_only(false)
                .build(),
            Err(CookieConfigError::PrefixRequiresHttpOnly {
                prefix: "__Host-Http-"
            })
        );
        assert_eq!(
            CookieConfig::builder("__Host-Http-sid")
                .path("/app")
                .build(),
            Err(CookieConfigError::HostPrefixRequiresRootPath)
        );
        assert_eq!(
            CookieConfig::builder("__Host-Http-sid")
                .domain("example.com")
                .build(),
            Err(CookieConfigError::HostPrefixForbidsDomain)
        );
        let ok = CookieConfig::new("__Host-Http-sid").unwrap();
        let cookie = parsed(&ok.set_cookie(&id()));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.domain(), None);
    }

    #[test]
    fn http_prefixes_are_matched_case_insensitively_and_only_whole() {
        assert_eq!(
            CookieConfig::builder("__http-sid").http_only(false).build(),
            Err(CookieConfigError::PrefixRequiresHttpOnly { prefix: "__Http-" })
        );
        assert_eq!(
            CookieConfig::builder("__HOST-HTTP-sid")
                .http_only(false)
                .build(),
            Err(CookieConfigError::PrefixRequiresHttpOnly {
                prefix: "__Host-Http-"
            })
        );
        assert_eq!(
            CookieConfig::builder("__host-http-sid").path("/x").build(),
            Err(CookieConfigError::HostPrefixRequiresRootPath)
        );
        // Without the dash, "Http" is part of the name: only `__Host-` applies.
        assert!(
            CookieConfig::builder("__Host-Httpsid")
                .http_only(false)
                .build()
                .is_ok()
        );
        assert!(
            CookieConfig::builder("__Http")
                .secure(false)
                .http_only(false)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn same_site_none_requires_secure() {
        assert_eq!(
            CookieConfig::builder("sid")
                .same_site(SameSite::None)
                .secure(false)
                .build(),
            Err(CookieConfigError::SameSiteNoneRequiresSecure)
        );
        let ok = CookieConfig::builder("sid")
            .same_site(SameSite::None)
            .build()
            .unwrap();
        let cookie = parsed(&ok.set_cookie(&id()));
        assert_eq!(cookie.same_site(), Some(cookie::SameSite::None));
        assert_eq!(cookie.secure(), Some(true));
    }

    #[test]
    fn partitioned_requires_secure() {
        assert_eq!(
            CookieConfig::builder("sid")
                .partitioned(true)
                .secure(false)
                .build(),
            Err(CookieConfigError::PartitionedRequiresSecure)
        );
        let ok = CookieConfig::builder("sid")
            .partitioned(true)
            .build()
            .unwrap();
        let cookie = parsed(&ok.set_cookie(&id()));
        assert_eq!(cookie.partitioned(), Some(true));
        assert_eq!(cookie.secure(), Some(true));
    }

    #[test]
    fn insecure_cookie_is_allowed_without_prefix_none_or_partitioned() {
        let dev = CookieConfig::builder("sid").secure(false).build().unwrap();
        let text = dev.set_cookie(&id());
        assert!(!text.contains("Secure"), "{text}");
    }

    #[test]
    fn bad_names_are_rejected() {
        assert_eq!(CookieConfig::new(""), Err(CookieConfigError::EmptyName));
        for (name, position) in [
            ("my sid", 2),
            ("sid=", 3),
            ("sid;", 3),
            ("s\"id", 1),
            ("sid,x", 3),
            ("s(id)", 1),
            ("sid\t", 3),
            ("sid\r\nX-Evil: 1", 3),
            ("s\u{0}", 1),
            ("séance", 1),
            ("a/b", 1),
            ("a:b", 1),
            ("a@b", 1),
            ("[sid]", 0),
            ("{sid}", 0),
            ("a\u{7f}", 1),
        ] {
            assert_eq!(
                CookieConfig::new(name),
                Err(CookieConfigError::InvalidName { position }),
                "{name:?}"
            );
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            CookieConfig::new(long),
            Err(CookieConfigError::NameTooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
        assert!(CookieConfig::new("n".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn every_token_character_is_a_valid_name() {
        let name = "azAZ09!#$%&'*+-.^_`|~";
        let config = CookieConfig::new(name).unwrap();
        let id = id();
        assert_eq!(parsed(&config.set_cookie(&id)).name(), name);
        let headers = crate::parse::tests::headers(&[&format!("{name}={}", id.as_str())]);
        assert_eq!(config.session_id_from_headers(&headers), Some(id));
    }

    #[test]
    fn bad_paths_are_rejected() {
        for path in [
            "", "app", "/a;b", "/a\nb", "/a\u{0}", "/a\u{7f}", "/é", "/a\tb", "/a b", "/a ",
            "/a b ", " /a",
        ] {
            assert!(
                matches!(
                    CookieConfig::builder("sid").path(path).build(),
                    Err(CookieConfigError::InvalidPath { .. })
                ),
                "{path:?}"
            );
        }
        let long = format!("/{}", "a".repeat(MAX_ATTRIBUTE_LEN));
        assert!(matches!(
            CookieConfig::builder("sid").path(long).build(),
            Err(CookieConfigError::InvalidPath { .. })
        ));
        let ok = CookieConfig::builder("sid")
            .path("/a%20b/~x-y_z.html,!$&'()*+=:@")
            .build()
            .unwrap();
        assert_eq!(
            parsed(&ok.set_cookie(&id())).path(),
            Some("/a%20b/~x-y_z.html,!$&'()*+=:@")
        );
    }

    #[test]
    fn bad_domains_are_rejected() {
        for domain in [
            "",
            ".",
            "example.com;",
            "example.com; Secure",
            "exa mple.com",
            "example.com\r\n",
            "\u{0}",
            "https://example.com",
            "example.com:8080",
            "example.com/",
            "exämple.com",
            "a..b",
            "example.com.",
            // Single labels: a top-level domain, a bare host.
            "com",
            ".com",
            "localhost",
            // IP addresses, as browsers read them.
            "127.0.0.1",
            "10.0.0.1",
            "1.2.3.0x4",
            "example.123",
            // Invalid labels.
            "-x.com",
            "x-.com",
            "a.-b.com",
            "a.b-",
        ] {
            assert!(
                matches!(
                    CookieConfig::builder("sid").domain(domain).build(),
                    Err(CookieConfigError::InvalidDomain { .. })
                ),
                "{domain:?}"
            );
        }
        let long = "a".repeat(MAX_ATTRIBUTE_LEN + 1);
        assert!(CookieConfig::builder("sid").domain(long).build().is_err());
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(
            CookieConfig::builder("sid")
                .domain(long_label)
                .build()
                .is_err()
        );
        for ok in [
            "example.com",
            "a-b.example.com",
            "_dmarc.example.com",
            "xn--bcher-kva.example",
            "1.example.com",
            "example.com1",
            "0xg.example",
            &format!("{}.com", "a".repeat(63)),
        ] {
            assert!(
                CookieConfig::builder("sid").domain(ok).build().is_ok(),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn domain_is_set_without_its_leading_dot() {
        let config = CookieConfig::builder("sid")
            .domain(".Example.com")
            .build()
            .unwrap();
        assert_eq!(config.domain(), Some("Example.com"));
        let text = config.set_cookie(&id());
        assert!(text.contains("; Domain=Example.com"), "{text}");
        assert_eq!(parsed(&text).domain(), Some("Example.com"));
    }

    #[test]
    fn removal_cookie_mirrors_name_path_domain_and_attributes() {
        let config = CookieConfig::builder("__Secure-sid")
            .path("/app")
            .domain("example.com")
            .same_site(SameSite::None)
            .partitioned(true)
            .http_only(true)
            .max_age(Duration::from_secs(3600))
            .build()
            .unwrap();
        let set = parsed(&config.set_cookie(&id()));
        let removal = parsed(&config.removal_cookie());
        assert_eq!(removal.name(), set.name());
        assert_eq!(removal.value(), "");
        assert_eq!(removal.path(), set.path());
        assert_eq!(removal.domain(), set.domain());
        assert_eq!(removal.secure(), set.secure());
        assert_eq!(removal.http_only(), set.http_only());
        assert_eq!(removal.same_site(), set.same_site());
        assert_eq!(removal.partitioned(), Some(true));
        assert_eq!(removal.max_age(), Some(time::Duration::ZERO));
        assert_eq!(removal.expires_datetime(), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(config.removal_header(), config.removal_cookie().as_str());
    }

    #[test]
    fn removal_cookie_of_an_insecure_config_is_insecure_too() {
        let config = CookieConfig::builder("sid")
            .secure(false)
            .http_only(false)
            .build()
            .unwrap();
        let removal = config.removal_cookie();
        assert!(
            !removal.contains("Secure") && !removal.contains("HttpOnly"),
            "{removal}"
        );
        assert_eq!(parsed(&removal).max_age(), Some(time::Duration::ZERO));
    }

    #[test]
    fn header_value_matches_the_string_form() {
        let config = CookieConfig::builder("__Secure-sid")
            .path("/a%20b")
            .domain("example.com")
            .max_age(Duration::from_secs(10))
            .build()
            .unwrap();
        let id = id();
        let header = config.set_cookie_header(&id);
        assert!(!header.is_empty());
        assert_eq!(header, config.set_cookie(&id).as_str());
    }

    #[test]
    fn errors_say_how_to_fix_them() {
        let message = CookieConfigError::HostPrefixForbidsDomain.to_string();
        assert!(message.contains("remove `.domain(..)`"), "{message}");
        let message = CookieConfig::new("a b").unwrap_err().to_string();
        assert!(message.contains("byte 1"), "{message}");
    }
}
