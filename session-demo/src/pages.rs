//! The site: handlers and their HTML.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use session_core::{Error, SessionHandle};
use session_tower::{Session, SessionFailure};

use crate::DEMO_PASSWORD;

/// Longest username accepted.
const MAX_USERNAME_CHARS: usize = 64;

/// A session error as a page: the store is down (503) or something else
/// went wrong (500). The details go to the log, never to the visitor.
#[derive(Debug)]
pub(crate) struct AppError(Error);

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "request failed");
        let (status, message) = match self.0 {
            Error::Backend(_) | Error::Capacity { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The session store is unavailable right now. Please try again in a moment.",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong with your session.",
            ),
        };
        let body = format!("<p>{message}</p><p><a href=\"/\">Back to the start</a></p>");
        (status, page("Error", None, &body)).into_response()
    }
}

type Result<T, E = AppError> = std::result::Result<T, E>;

/// The owner key a user's sessions are bound to.
fn owner_key(username: &str) -> String {
    format!("user:{username}")
}

pub(crate) async fn home(session: Session) -> Result<Html<String>> {
    let user = session.get("user").await?;
    let body = match &user {
        Some(user) => format!(
            "<p>You are signed in as <strong>{}</strong>.</p>\
             <ul><li><a href=\"/profile\">Your profile</a></li>\
             <li><a href=\"/counter\">The visit counter</a></li>\
             <li><a href=\"/sessions\">Your sessions</a></li></ul>",
            escape(user)
        ),
        None => login_form(None),
    };
    Ok(page("Home", user.as_deref(), &body))
}

fn login_form(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\">{}</p>", escape(p)))
        .unwrap_or_default();
    format!(
        "<h2>Sign in</h2>{problem}\
         <p>This is a demo: there are no accounts. Any username works with the \
         password <code>{DEMO_PASSWORD}</code>. Signing in binds your session to the \
         username and gives it a fresh ID.</p>\
         <form method=\"post\" action=\"/login\">\
         <label>Username <input name=\"username\" id=\"username\" autocomplete=\"username\" \
         required maxlength=\"{MAX_USERNAME_CHARS}\"></label> \
         <label>Password <input name=\"password\" id=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required></label> \
         <button type=\"submit\" id=\"login\">Sign in</button></form>"
    )
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

pub(crate) async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response> {
    let username = form.username.trim();
    if username.is_empty()
        || username.chars().count() > MAX_USERNAME_CHARS
        || username.chars().any(char::is_control)
    {
        let body = login_form(Some(&format!(
            "A username has 1 to {MAX_USERNAME_CHARS} characters, none of them control \
             characters."
        )));
        return Ok((StatusCode::BAD_REQUEST, page("Sign in", None, &body)).into_response());
    }
    if form.password != DEMO_PASSWORD {
        let body = login_form(Some("Wrong password."));
        return Ok(unauthorized(page("Sign in", None, &body)));
    }
    let mut signed_in = sign_in(&session, username).await;
    if matches!(signed_in, Err(Error::NotFound)) {
        // The session ended while this request was signing in (signed out
        // elsewhere, revoked, expired): the handle now has none, so this
        // starts over on a fresh one.
        signed_in = sign_in(&session, username).await;
    }
    let problem = match signed_in {
        Ok(()) => return Ok(Redirect::to("/profile").into_response()),
        Err(e @ Error::TooManySessions { .. }) => e.to_string(),
        Err(Error::Conflict | Error::NotFound) => "Your session changed while you were signing \
            in (perhaps in another tab), so you were not signed in. Please try again."
            .to_owned(),
        Err(e) => return Err(e.into()),
    };
    let body = login_form(Some(&problem));
    Ok((StatusCode::CONFLICT, page("Sign in", None, &body)).into_response())
}

/// Bind the session to `username` and rotate its ID. A session that belongs
/// to someone else is emptied first: nothing of theirs may carry over. An
/// anonymous session keeps its data (the counter).
async fn sign_in(session: &Session, username: &str) -> Result<(), Error> {
    let owner = owner_key(username);
    if session
        .owner()
        .await?
        .is_some_and(|current| current != owner)
    {
        session.clear().await?;
    }
    session.set_owner(owner).await?;
    session.set("user", username).await?;
    // Privilege changes: new ID, old one dead (session fixation defence).
    session.cycle_id().await
}

pub(crate) async fn logout(session: Session) -> Result<Redirect> {
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

fn not_signed_in() -> Response {
    let body = "<p>You are not signed in.</p><p><a href=\"/\">Sign in</a></p>";
    unauthorized(page("Not signed in", None, body))
}

/// A `401` with the challenge RFC 9110 requires of one. The scheme is the
/// form-and-cookie one of draft-broyer-http-cookie-auth: it names the form
/// that signs in, and browsers, which know no such scheme, show the page
/// instead of a password prompt.
fn unauthorized(page: impl IntoResponse) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Cookie realm=\"session-demo\", form-action=\"/\"",
        )],
        page,
    )
        .into_response()
}

pub(crate) async fn profile(session: Session) -> Result<Response> {
    let Some(user) = session.get("user").await? else {
        return Ok(not_signed_in());
    };
    let visits = session.get_as::<u64>("visits").await?.unwrap_or(0);
    let body = format!(
        "<p>Username: <strong id=\"profile-user\">{}</strong></p>\
         <p>Counter page views in this session: <span id=\"profile-visits\">{visits}</span></p>",
        escape(&user)
    );
    Ok(page("Profile", Some(&user), &body).into_response())
}

pub(crate) async fn counter(session: Session) -> Result<Html<String>> {
    // A read-modify-write: the closure re-runs if a concurrent request
    // changed the session, so no view is lost. Its result is this request's
    // own count; views counted at the same moment (other tabs) may already
    // have moved the stored count on, hence "at least".
    let visits = session
        .update(|s| {
            let n = s.get_as::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
            s.insert("visits", &n).map(|()| n)
        })
        .await??;
    let user = session.get("user").await?;
    let body = format!(
        "<p>You have viewed this page at least <strong id=\"visits\">{visits}</strong> \
         time{} in this session.</p><p><a href=\"/counter\">Count again</a></p>",
        if visits == 1 { "" } else { "s" }
    );
    Ok(page("Visit counter", user.as_deref(), &body))
}

/// The store's session count, as last counted, shared by the requests of
/// one [`app`](crate::app).
#[derive(Debug, Default)]
pub(crate) struct LiveCount {
    /// When it was counted, and the count. The lock is held while counting,
    /// so requests that find the count out of date wait for one count
    /// rather than each starting their own.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, u64)>>,
}

impl LiveCount {
    /// The store's count, asked of the store at most once per
    /// [`COUNT_EVERY`](crate::COUNT_EVERY).
    async fn get(&self, session: &Session) -> Result<u64, Error> {
        let mut last = self.last.lock().await;
        if let Some((at, live)) = *last
            && at.elapsed() < crate::COUNT_EVERY
        {
            return Ok(live);
        }
        let live = session.store().len().await?;
        *last = Some((tokio::time::Instant::now(), live));
        Ok(live)
    }
}

pub(crate) async fn store_stats(
    State(count): State<Arc<LiveCount>>,
    session: Session,
) -> Result<Html<String>> {
    let live = count.get(&session).await?;
    let config = session.store().config();
    let user = session.get("user").await?;
    let absolute = config
        .absolute_timeout()
        .map_or_else(|| "none".to_owned(), |d| format!("{} s", d.as_secs()));
    let body = format!(
        "<p>Live sessions in the store: <strong id=\"live\">{live}</strong></p>\
         <p>Idle timeout: {} s; absolute timeout: {absolute}.</p>",
        config.idle_timeout().as_secs()
    );
    Ok(page("Store", user.as_deref(), &body))
}

pub(crate) async fn sessions(session: Session) -> Result<Response> {
    let (Some(owner), Some(user)) = (session.owner().await?, session.get("user").await?) else {
        return Ok(not_signed_in());
    };
    let current = session.id().await?;
    let list = session
        .store()
        .owner_sessions(&owner, current.as_ref())
        .await?;
    let mut rows = String::new();
    for info in &list {
        let action = if info.is_current {
            "<form method=\"post\" action=\"/logout\"><button>Sign out</button></form>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/sessions/revoke\">\
                 <input type=\"hidden\" name=\"handle\" value=\"{}\">\
                 <button>Sign out that session</button></form>",
                escape(&info.handle.to_string())
            )
        };
        let _ = write!(
            rows,
            "<tr{}><td>{}{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            if info.is_current {
                " class=\"current\""
            } else {
                ""
            },
            format_time(info.created_at),
            if info.is_current {
                " (this session)"
            } else {
                ""
            },
            format_time(info.last_active),
            format_time(info.expires_at),
        );
    }
    let body = format!(
        "<p>Sessions signed in as <strong>{}</strong>: <span id=\"count\">{}</span></p>\
         <table><tr><th>Created</th><th>Last active</th><th>Expires</th><th></th></tr>{rows}</table>\
         <form method=\"post\" action=\"/sessions/revoke-others\">\
         <button id=\"revoke-others\">Sign out everywhere else</button></form>",
        escape(&user),
        list.len()
    );
    Ok(page("Your sessions", Some(&user), &body).into_response())
}

/// The "sign out that session" form.
#[derive(Debug, Deserialize)]
pub(crate) struct RevokeForm {
    handle: String,
}

pub(crate) async fn revoke(session: Session, Form(form): Form<RevokeForm>) -> Result<Response> {
    let Some(owner) = session.owner().await? else {
        return Ok(not_signed_in());
    };
    let Ok(handle) = SessionHandle::parse(&form.handle) else {
        let body = "<p>That is not a session handle.</p>";
        return Ok((StatusCode::BAD_REQUEST, page("Your sessions", None, body)).into_response());
    };
    if session.id().await?.is_some_and(|id| id.handle() == handle) {
        // This very session: a logout, so the cookie goes too.
        session.destroy().await?;
        return Ok(Redirect::to("/").into_response());
    }
    session
        .store()
        .destroy_owner_session(&owner, &handle)
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}

pub(crate) async fn revoke_others(session: Session) -> Result<Response> {
    let Some(owner) = session.owner().await? else {
        return Ok(not_signed_in());
    };
    let current = session.id().await?;
    session
        .store()
        .destroy_owner_sessions(&owner, current.as_ref())
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}

pub(crate) async fn not_found() -> (StatusCode, Html<String>) {
    (
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            None,
            "<p>No such page. <a href=\"/\">Home</a></p>",
        ),
    )
}

/// Ends a session whose stored record is corrupt, so the visitor carries on
/// signed out (and can sign in again) instead of meeting an error on every
/// page until the record expires. The store reports such a record as
/// [`Error::Codec`] for that session only; destroying it removes the record
/// and sends the removal cookie. Any other error is left to the page, which
/// reports it.
pub(crate) async fn end_corrupt_session(
    session: Session,
    request: Request,
    next: Next,
) -> Response {
    if let Err(Error::Codec(reason)) = session.get("user").await {
        tracing::warn!(%reason, "ended a session whose stored record is corrupt");
        if let Err(e) = session.destroy().await {
            return AppError(e).into_response();
        }
    }
    next.run(request).await
}

/// Refuses state-changing requests (anything but GET, HEAD, OPTIONS and
/// TRACE) that another site made the browser send: login CSRF (signing the
/// visitor in as the attacker) and logout or revoke CSRF. `SameSite=Lax`
/// alone does not stop them: a cross-site form post carries no cookie, but a
/// login needs none, and sibling subdomains are "same-site".
///
/// The browser's own word comes first: with `Sec-Fetch-Site` (every current
/// browser sends it), `same-origin` and `none` pass and anything else is
/// refused (`cross-site`, and `same-site` too, since another subdomain of
/// the site may be run by someone else and this site's forms only ever post
/// to itself). Without it, the request's origin must be this site's: the
/// `Origin` header, or else the `Referer`'s scheme, host and port, compared
/// with the scheme this site is served over and its `Host` (default ports
/// made explicit). An opaque `Origin` (`null`) is refused. Clients that send
/// none of these headers (curl, very old browsers) are not browsers an
/// attacker can drive and pass.
///
/// This site speaks plain HTTP; behind a TLS-terminating reverse proxy,
/// forward the `Host` header and set `X-Forwarded-Proto: https`, or
/// browsers without `Sec-Fetch-Site` are refused. (A page cannot make a
/// browser add that header to a cross-site form post, so trusting it here
/// lets no attacker in.)
pub(crate) async fn reject_cross_site(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return next.run(request).await;
    }
    if let Some(reason) = cross_site(request.headers(), request.uri()) {
        tracing::warn!(
            method = %request.method(),
            path = request.uri().path(),
            reason,
            "refused a cross-site request"
        );
        let body = "<p>This request was refused because it came from another web site. \
                    If you meant to do this, go to this site and try again from its own \
                    pages.</p><p><a href=\"/\">Home</a></p>";
        return (StatusCode::FORBIDDEN, page("Refused", None, body)).into_response();
    }
    next.run(request).await
}

/// Why a request looks cross-site, if it does.
fn cross_site(headers: &HeaderMap, uri: &Uri) -> Option<&'static str> {
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None => {}
        Some(b"same-origin" | b"none") => return None,
        Some(b"cross-site") => return Some("Sec-Fetch-Site: cross-site"),
        Some(b"same-site") => return Some("Sec-Fetch-Site: same-site (another subdomain)"),
        Some(_) => return Some("an unknown Sec-Fetch-Site value"),
    }
    let (claimed, reason) = if let Some(origin) = headers.get(header::ORIGIN) {
        // `scheme://host[:port]`, or `null` for an opaque origin.
        (origin, "Origin is not this site")
    } else if let Some(referer) = headers.get(header::REFERER) {
        (referer, "Referer is not this site")
    } else {
        return None;
    };
    let claimed = claimed.to_str().ok().and_then(SiteOrigin::of_url);
    match (claimed, SiteOrigin::of_request(headers, uri)) {
        (Some(claimed), Some(ours)) if claimed == ours => None,
        _ => Some(reason),
    }
}

/// An origin as the cross-site check compares it: scheme and host in lower
/// case, and the port, the scheme's default when none is written.
#[derive(Debug, PartialEq, Eq)]
struct SiteOrigin {
    scheme: String,
    host: String,
    port: u16,
}

impl SiteOrigin {
    /// The origin of a URL (an `Origin` or `Referer` value): its scheme and
    /// authority; any path, query or fragment is ignored. `None` for
    /// `null` and anything else that is not `scheme://authority…`.
    fn of_url(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Self::new(scheme, &rest[..end])
    }

    /// This site's origin as the request reached it: the scheme a proxy
    /// reports in `X-Forwarded-Proto` (its first element), or else `http`,
    /// which is what this server speaks; and the `Host` header (or the
    /// request target's authority).
    fn of_request(headers: &HeaderMap, uri: &Uri) -> Option<Self> {
        let scheme = match headers.get("x-forwarded-proto") {
            Some(proto) => proto.to_str().ok()?.split(',').next()?.trim(),
            None => "http",
        };
        let host = match headers.get(header::HOST) {
            Some(host) => host.to_str().ok()?,
            None => uri.authority()?.as_str(),
        };
        Self::new(scheme, host)
    }

    fn new(scheme: &str, authority: &str) -> Option<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let authority: Authority = authority.parse().ok()?;
        if authority.as_str().contains('@') {
            return None; // no origin carries user information
        }
        let port = match (authority.port_u16(), scheme.as_str()) {
            (Some(port), _) => port,
            (None, "http") => 80,
            (None, "https") => 443,
            (None, _) => return None,
        };
        Some(Self {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port,
        })
    }
}

/// Outermost: renders the empty error responses of the session layer and
/// adds headers every page wants (they are per-user: never cached).
pub(crate) async fn finish_response(mut response: Response) -> Response {
    if let Some(failure) = response.extensions().get::<SessionFailure>().copied() {
        let body = format!(
            "<p>{}</p><p><a href=\"/\">Back to the start</a></p>",
            escape(failure.message())
        );
        let html = page("Not saved", None, &body).0;
        *response.body_mut() = Body::from(html);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A whole page around `body` (which must already be escaped HTML).
fn page(title: &str, user: Option<&str>, body: &str) -> Html<String> {
    let who = match user {
        Some(user) => format!(
            "<span id=\"who\">Signed in as {}</span> \
             <form method=\"post\" action=\"/logout\" class=\"inline\">\
             <button id=\"logout\">Sign out</button></form>",
            escape(user)
        ),
        None => "<span id=\"who\">Not signed in</span>".to_owned(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · session demo</title><style>{STYLE}</style></head><body>\
         <header><nav><a href=\"/\">Home</a> <a href=\"/profile\">Profile</a> \
         <a href=\"/counter\">Counter</a> <a href=\"/sessions\">Your sessions</a> \
         <a href=\"/store\">Store</a></nav>{who}</header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title),
    ))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;\
padding:0 1rem;line-height:1.5}header{display:flex;justify-content:space-between;\
align-items:center;border-bottom:1px solid #ccc;padding-bottom:.5rem}nav a{margin-right:1rem}\
.inline{display:inline}table{border-collapse:collapse}td,th{padding:.3rem .8rem;\
border-bottom:1px solid #ddd;text-align:left}tr.current{background:#eef6ee}\
.problem{color:#a00}code{background:#f3f3f3;padding:0 .2rem}";

/// Escape text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn format_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // a leap day
        assert_eq!(format_time(t), "2024-02-29 12:34:56 UTC");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_time(before), "1969-12-31 23:59:59 UTC");
    }
}
