//! The demo's pages over HTTP (no browser): sign-in, the counter, "your
//! sessions", escaping, and sessions that outlive the process on SQLite.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use session_core::{
    Error, Session, SessionConfig, SessionHandle, SessionId, SessionInfo, SessionStore, async_trait,
};
use session_memory::MemoryStore;
use tower::ServiceExt as _;

const COOKIE: &str = "__Host-session-demo";

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

impl Reply {
    /// The session ID the response gives the browser.
    fn session(&self) -> String {
        let cookie = self.set_cookie.as_deref().expect("a Set-Cookie header");
        let value = cookie
            .strip_prefix(&format!("{COOKIE}="))
            .and_then(|rest| rest.split(';').next())
            .expect("the session cookie");
        value.to_owned()
    }
}

async fn send(app: &Router, method: &str, uri: &str, session: Option<&str>, form: &str) -> Reply {
    send_with(app, method, uri, session, form, &[]).await
}

/// As [`send`], with more request headers (those a browser adds).
async fn send_with(
    app: &Router,
    method: &str,
    uri: &str,
    session: Option<&str>,
    form: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(id) = session {
        request = request.header(header::COOKIE, format!("{COOKIE}={id}"));
    }
    if method == "POST" {
        request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(form.to_owned())).expect("request"))
        .await
        .expect("infallible");
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().expect("ASCII").to_owned())
    };
    let location = header(header::LOCATION);
    let set_cookie = header(header::SET_COOKIE);
    let www_authenticate = header(header::WWW_AUTHENTICATE);
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        location,
        set_cookie,
        www_authenticate,
        body: String::from_utf8(body.to_vec()).expect("UTF-8"),
    }
}

fn memory_app() -> (Router, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::with_config(session_demo::session_config()));
    let app = session_demo::app(
        store.clone(),
        session_demo::cookie_config(true).expect("valid"),
    );
    (app, store)
}

async fn login(app: &Router, user: &str) -> String {
    let reply = send(
        app,
        "POST",
        "/login",
        None,
        &format!("username={user}&password=demo"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.location.as_deref(), Some("/profile"));
    reply.session()
}

/// The value of `id="{id}"`'s element text.
fn element<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no #{id} in {body}"))
        + id.len()
        + 6;
    let end = body[start..].find('<').expect("closing tag") + start;
    &body[start..end]
}

#[tokio::test]
async fn the_profile_needs_a_session() {
    let (app, store) = memory_app();
    let reply = send(&app, "GET", "/profile", None, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .www_authenticate
            .as_deref()
            .is_some_and(|c| c.starts_with("Cookie ")),
        "a 401 carries a challenge (RFC 9110): {reply:?}"
    );
    assert!(reply.set_cookie.is_none());
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn sign_in_checks_the_demo_password_and_the_username() {
    let (app, store) = memory_app();
    let wrong = send(&app, "POST", "/login", None, "username=ann&password=nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.www_authenticate.is_some());
    let empty = send(&app, "POST", "/login", None, "username=+&password=demo").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(wrong.set_cookie.is_none() && empty.set_cookie.is_none());
    // A control character is bad input (400), not a server error (500).
    for name in ["a%0Ab", "%01", "a%00"] {
        let body = format!("username={name}&password=demo");
        let odd = send(&app, "POST", "/login", None, &body).await;
        assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(odd.set_cookie.is_none(), "{name}");
    }
    assert_eq!(store.len().await.unwrap(), 0);

    let id = login(&app, "ann").await;
    let profile = send(&app, "GET", "/profile", Some(&id), "").await;
    assert_eq!(profile.status, StatusCode::OK);
    assert_eq!(element(&profile.body, "profile-user"), "ann");
}

#[tokio::test]
async fn signing_in_rotates_the_anonymous_session_and_keeps_its_counter() {
    let (app, _store) = memory_app();
    let first = send(&app, "GET", "/counter", None, "").await;
    assert_eq!(element(&first.body, "visits"), "1");
    assert!(
        first.body.contains("at least"),
        "the count shown is this request's own: {}",
        first.body
    );
    let anonymous = first.session();
    let second = send(&app, "GET", "/counter", Some(&anonymous), "").await;
    assert_eq!(element(&second.body, "visits"), "2");

    let reply = send(
        &app,
        "POST",
        "/login",
        Some(&anonymous),
        "username=ann&password=demo",
    )
    .await;
    let signed_in = reply.session();
    assert_ne!(signed_in, anonymous);
    let old = send(&app, "GET", "/profile", Some(&anonymous), "").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "the old ID is dead");
    let profile = send(&app, "GET", "/profile", Some(&signed_in), "").await;
    assert_eq!(element(&profile.body, "profile-visits"), "2");
}

#[tokio::test]
async fn user_input_is_escaped() {
    let (app, _store) = memory_app();
    let id = login(&app, "%3Cscript%3Ealert(1)%3C%2Fscript%3E").await;
    let profile = send(&app, "GET", "/profile", Some(&id), "").await;
    assert!(!profile.body.contains("<script>"));
    assert!(
        profile
            .body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
}

#[tokio::test]
async fn your_sessions_lists_them_and_signs_out_one_or_all_others() {
    let (app, store) = memory_app();
    let laptop = login(&app, "ann").await;
    let phone = login(&app, "ann").await;
    let tablet = login(&app, "ann").await;
    let _other_user = login(&app, "bob").await;

    let page = send(&app, "GET", "/sessions", Some(&laptop), "").await;
    assert_eq!(element(&page.body, "count"), "3");
    assert_eq!(page.body.matches("(this session)").count(), 1);

    // Sign out the phone by its handle.
    let phone_handle = phone.parse::<session_core::SessionId>().unwrap().handle();
    let reply = send(
        &app,
        "POST",
        "/sessions/revoke",
        Some(&laptop),
        &format!("handle={phone_handle}"),
    )
    .await;
    assert_eq!(reply.location.as_deref(), Some("/sessions"));
    let phone_now = send(&app, "GET", "/profile", Some(&phone), "").await;
    assert_eq!(phone_now.status, StatusCode::UNAUTHORIZED);

    let junk = send(
        &app,
        "POST",
        "/sessions/revoke",
        Some(&laptop),
        "handle=junk",
    )
    .await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);

    // Everywhere else: the tablet goes, the laptop and bob stay.
    send(&app, "POST", "/sessions/revoke-others", Some(&laptop), "").await;
    let tablet_now = send(&app, "GET", "/profile", Some(&tablet), "").await;
    assert_eq!(tablet_now.status, StatusCode::UNAUTHORIZED);
    let page = send(&app, "GET", "/sessions", Some(&laptop), "").await;
    assert_eq!(element(&page.body, "count"), "1");
    assert_eq!(store.len().await.unwrap(), 2);
    let stats = send(&app, "GET", "/store", Some(&laptop), "").await;
    assert_eq!(element(&stats.body, "live"), "2");
}

#[tokio::test]
async fn one_user_has_a_bounded_number_of_sessions_and_the_oldest_make_room() {
    // Anyone can sign in as anyone: a script signing in as "ann" over and
    // over must not make her "your sessions" page (or anyone's store) grow
    // without bound, nor lock her out.
    let (app, store) = memory_app();
    let limit = usize::try_from(session_demo::MAX_SESSIONS_PER_USER).unwrap();
    let mut cookies = Vec::new();
    for _ in 0..limit + 5 {
        cookies.push(login(&app, "ann").await);
    }
    let newest = cookies.last().unwrap();
    let page = send(&app, "GET", "/sessions", Some(newest), "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(element(&page.body, "count"), limit.to_string());
    assert_eq!(page.body.matches("<tr").count(), limit + 1, "header + rows");
    assert_eq!(store.len().await.unwrap(), u64::try_from(limit).unwrap());
    // Five ended to make room (the oldest; here they were all created in
    // the same millisecond, so which five is the store's choice); the one
    // that signed in last is signed in.
    let mut signed_out = 0;
    for cookie in &cookies {
        let profile = send(&app, "GET", "/profile", Some(cookie), "").await;
        if profile.status == StatusCode::UNAUTHORIZED {
            signed_out += 1;
        } else {
            assert_eq!(profile.status, StatusCode::OK);
        }
    }
    assert_eq!(signed_out, 5);
    let last = send(&app, "GET", "/profile", Some(newest), "").await;
    assert_eq!(last.status, StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_current_session_by_handle_signs_it_out() {
    let (app, store) = memory_app();
    let id = login(&app, "ann").await;
    let handle = id.parse::<session_core::SessionId>().unwrap().handle();
    let reply = send(
        &app,
        "POST",
        "/sessions/revoke",
        Some(&id),
        &format!("handle={handle}"),
    )
    .await;
    assert!(reply.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn logout_removes_the_cookie_and_the_session() {
    let (app, store) = memory_app();
    let id = login(&app, "ann").await;
    let reply = send(&app, "POST", "/logout", Some(&id), "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.set_cookie.as_deref(),
        Some(
            session_demo::cookie_config(true)
                .unwrap()
                .removal_cookie()
                .as_str()
        )
    );
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn sessions_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let choice =
        session_demo::StoreChoice::parse(dir.path().join("demo.db").to_str().unwrap()).unwrap();
    let cookie = session_demo::cookie_config(true).unwrap();

    let first = session_demo::app(
        choice.open(session_demo::session_config()).await.unwrap(),
        cookie.clone(),
    );
    let id = login(&first, "ann").await;
    send(&first, "GET", "/counter", Some(&id), "").await;
    drop(first);

    let second = session_demo::app(
        choice.open(session_demo::session_config()).await.unwrap(),
        cookie,
    );
    let profile = send(&second, "GET", "/profile", Some(&id), "").await;
    assert_eq!(profile.status, StatusCode::OK);
    assert_eq!(element(&profile.body, "profile-user"), "ann");
    assert_eq!(element(&profile.body, "profile-visits"), "1");
}

#[tokio::test]
async fn pages_are_never_cached_and_unknown_paths_are_404() {
    let (app, _store) = memory_app();
    let request = Request::get("/nowhere").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert!(
        response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    );
}

/// Headers Chromium sends with a form post that another site's page made.
const CROSS_SITE: &[(&str, &str)] = &[
    ("host", "demo.test"),
    ("origin", "https://evil.example"),
    ("sec-fetch-site", "cross-site"),
    ("sec-fetch-mode", "navigate"),
];

/// Headers Chromium sends with a form post from the demo's own page.
const SAME_ORIGIN: &[(&str, &str)] = &[
    ("host", "demo.test"),
    ("origin", "http://demo.test"),
    ("sec-fetch-site", "same-origin"),
    ("sec-fetch-mode", "navigate"),
];

#[tokio::test]
async fn cross_site_sign_in_and_sign_out_are_refused() {
    let (app, store) = memory_app();
    let forged = send_with(
        &app,
        "POST",
        "/login",
        None,
        "username=mallory&password=demo",
        CROSS_SITE,
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "login CSRF");
    assert!(forged.body.contains("another web site"), "{}", forged.body);
    assert!(forged.set_cookie.is_none());
    assert_eq!(store.len().await.unwrap(), 0);

    let id = login(&app, "ann").await;
    for path in ["/logout", "/sessions/revoke-others"] {
        let forged = send_with(&app, "POST", path, Some(&id), "", CROSS_SITE).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{path}");
        assert!(forged.set_cookie.is_none(), "{path}");
    }
    let profile = send(&app, "GET", "/profile", Some(&id), "").await;
    assert_eq!(profile.status, StatusCode::OK, "still signed in");
}

#[tokio::test]
async fn sibling_subdomains_and_foreign_origins_are_refused_too() {
    let (app, store) = memory_app();
    for headers in [
        // Another subdomain of the same site.
        &[
            ("host", "demo.test"),
            ("origin", "https://evil.demo.test"),
            ("sec-fetch-site", "same-site"),
        ][..],
        // A browser without Fetch Metadata: only the Origin tells.
        &[("host", "demo.test"), ("origin", "https://evil.example")],
        // An opaque origin (sandboxed frame, data: URL).
        &[("host", "demo.test"), ("origin", "null")],
        // Same host name, another port: another origin.
        &[("host", "demo.test"), ("origin", "http://demo.test:8080")],
    ] {
        let reply = send_with(
            &app,
            "POST",
            "/login",
            None,
            "username=mallory&password=demo",
            headers,
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    assert_eq!(store.len().await.unwrap(), 0);
}

/// POST /login with `headers`: the status.
async fn login_with(app: &Router, headers: &[(&str, &str)]) -> StatusCode {
    send_with(
        app,
        "POST",
        "/login",
        None,
        "username=ann&password=demo",
        headers,
    )
    .await
    .status
}

#[tokio::test]
async fn another_scheme_is_another_origin() {
    let (app, store) = memory_app();
    for headers in [
        // The site is served over HTTPS (a proxy says so); a page on its
        // plain-HTTP twin (which anyone on the network can forge) posts.
        &[
            ("host", "demo.test"),
            ("x-forwarded-proto", "https"),
            ("origin", "http://demo.test"),
        ][..],
        // The reverse: the site is plain HTTP, the page claims HTTPS.
        &[("host", "demo.test"), ("origin", "https://demo.test")],
        // The same with only a Referer to tell.
        &[
            ("host", "demo.test"),
            ("x-forwarded-proto", "https"),
            ("referer", "http://demo.test/"),
        ],
        // A scheme that is no web origin at all.
        &[("host", "demo.test"), ("origin", "ftp://demo.test")],
        // Another IPv6 address.
        &[("host", "[::1]:3000"), ("origin", "http://[::2]:3000")],
    ] {
        assert_eq!(
            login_with(&app, headers).await,
            StatusCode::FORBIDDEN,
            "{headers:?}"
        );
    }
    assert_eq!(store.len().await.unwrap(), 0);

    for headers in [
        &[
            ("host", "demo.test"),
            ("x-forwarded-proto", "https"),
            ("origin", "https://demo.test"),
        ][..],
        // Case, and a default port written out on one side only.
        &[
            ("host", "Demo.Test:443"),
            ("x-forwarded-proto", "HTTPS"),
            ("origin", "https://demo.test"),
        ],
        &[("host", "demo.test"), ("origin", "http://demo.test:80")],
        // A site reached by its IPv6 address.
        &[("host", "[::1]:3000"), ("origin", "http://[::1]:3000")],
        // Proxies that append their own hop: the first element is the client's.
        &[
            ("host", "demo.test"),
            ("x-forwarded-proto", "https, http"),
            ("origin", "https://demo.test"),
        ],
    ] {
        assert_eq!(
            login_with(&app, headers).await,
            StatusCode::SEE_OTHER,
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn without_origin_the_referer_tells() {
    let (app, store) = memory_app();
    for referer in [
        "https://evil.example/page",
        "http://demo.test:8080/",
        "http://evil.example/?next=http://demo.test/",
        "http://user@demo.test/",
        "/relative",
        "not a url",
    ] {
        let headers = [("host", "demo.test"), ("referer", referer)];
        assert_eq!(
            login_with(&app, &headers).await,
            StatusCode::FORBIDDEN,
            "{referer}"
        );
    }
    assert_eq!(store.len().await.unwrap(), 0);
    for referer in ["http://demo.test/", "http://DEMO.test/sessions?x=1#top"] {
        let headers = [("host", "demo.test"), ("referer", referer)];
        assert_eq!(
            login_with(&app, &headers).await,
            StatusCode::SEE_OTHER,
            "{referer}"
        );
    }
    // An Origin, when there is one, decides: a same-site Referer cannot
    // vouch for a foreign Origin.
    let headers = [
        ("host", "demo.test"),
        ("origin", "https://evil.example"),
        ("referer", "http://demo.test/"),
    ];
    assert_eq!(login_with(&app, &headers).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn fetch_metadata_is_the_browsers_word() {
    let (app, _store) = memory_app();
    // A proxy that forwards neither Host nor the scheme: the browser still
    // says the post came from the site's own page, and it knows.
    let headers = [
        ("host", "127.0.0.1:3000"),
        ("origin", "https://demo.example"),
        ("sec-fetch-site", "same-origin"),
    ];
    assert_eq!(login_with(&app, &headers).await, StatusCode::SEE_OTHER);
    // And when it says cross-site, a matching Origin does not overrule it.
    let headers = [
        ("host", "demo.test"),
        ("origin", "http://demo.test"),
        ("sec-fetch-site", "cross-site"),
    ];
    assert_eq!(login_with(&app, &headers).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn same_origin_posts_and_cross_site_links_pass() {
    let (app, _store) = memory_app();
    let reply = send_with(
        &app,
        "POST",
        "/login",
        None,
        "username=ann&password=demo",
        SAME_ORIGIN,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let id = reply.session();

    // Following a link from another site is a GET: it reads, changes nothing.
    let followed = send_with(&app, "GET", "/profile", Some(&id), "", CROSS_SITE).await;
    assert_eq!(followed.status, StatusCode::OK);

    let reply = send_with(&app, "POST", "/logout", Some(&id), "", SAME_ORIGIN).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(reply.set_cookie.unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn signing_in_as_someone_else_drops_their_data() {
    let (app, _store) = memory_app();
    let ann = login(&app, "ann").await;
    send(&app, "GET", "/counter", Some(&ann), "").await;

    let reply = send(
        &app,
        "POST",
        "/login",
        Some(&ann),
        "username=bob&password=demo",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let bob = reply.session();
    let profile = send(&app, "GET", "/profile", Some(&bob), "").await;
    assert_eq!(element(&profile.body, "profile-user"), "bob");
    assert_eq!(
        element(&profile.body, "profile-visits"),
        "0",
        "not ann's count"
    );
}

#[tokio::test]
async fn signing_in_again_as_the_same_user_keeps_the_data() {
    let (app, _store) = memory_app();
    let first = login(&app, "ann").await;
    send(&app, "GET", "/counter", Some(&first), "").await;
    let reply = send(
        &app,
        "POST",
        "/login",
        Some(&first),
        "username=ann&password=demo",
    )
    .await;
    let again = reply.session();
    assert_ne!(again, first, "rotated all the same");
    let profile = send(&app, "GET", "/profile", Some(&again), "").await;
    assert_eq!(element(&profile.body, "profile-visits"), "1");
}

/// What [`Meddling`] does just before the first rotation, as a concurrent
/// request would.
#[derive(Debug, Clone, Copy)]
enum Meddle {
    /// Sign the session out.
    End,
    /// Bind the session to someone else.
    Rebind,
}

/// A memory store that meddles with the first rotation, and whose loads can
/// be made to fail with a revealing message.
#[derive(Debug)]
struct Meddling {
    inner: MemoryStore,
    meddle: Mutex<Option<Meddle>>,
    loads_fail: AtomicBool,
    /// Stored sessions load as corrupt records.
    corrupt: AtomicBool,
    /// How many times `len` was asked.
    lens: AtomicU64,
}

impl Meddling {
    fn new(meddle: Option<Meddle>) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::with_config(session_demo::session_config()),
            meddle: Mutex::new(meddle),
            loads_fail: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            lens: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl SessionStore for Meddling {
    fn config(&self) -> &SessionConfig {
        self.inner.config()
    }
    async fn load(&self, id: &SessionId) -> session_core::Result<Option<Session>> {
        if self.loads_fail.load(Ordering::SeqCst) {
            return Err(Error::backend_msg(
                "password authentication failed for user app at 10.1.2.3",
            ));
        }
        let loaded = self.inner.load(id).await?;
        if loaded.is_some() && self.corrupt.load(Ordering::SeqCst) {
            return Err(Error::Codec("planted by the test".into()));
        }
        Ok(loaded)
    }
    async fn save(&self, session: &mut Session) -> session_core::Result<()> {
        self.inner.save(session).await
    }
    async fn touch(&self, session: &mut Session) -> session_core::Result<()> {
        self.inner.touch(session).await
    }
    async fn cycle_id(&self, session: &mut Session) -> session_core::Result<()> {
        let meddle = self.meddle.lock().expect("meddle").take();
        match meddle {
            Some(Meddle::End) => {
                self.inner.destroy(session.id()).await?;
            }
            Some(Meddle::Rebind) => {
                let mut stored = self.inner.load(session.id()).await?.expect("stored");
                stored.set_owner("user:mallory");
                self.inner.save(&mut stored).await?;
            }
            None => {}
        }
        self.inner.cycle_id(session).await
    }
    async fn destroy(&self, id: &SessionId) -> session_core::Result<bool> {
        self.inner.destroy(id).await
    }
    async fn purge_expired(&self) -> session_core::Result<u64> {
        self.inner.purge_expired().await
    }
    async fn len(&self) -> session_core::Result<u64> {
        self.lens.fetch_add(1, Ordering::SeqCst);
        self.inner.len().await
    }
    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> session_core::Result<Vec<SessionInfo>> {
        self.inner.owner_sessions(owner, current).await
    }
    async fn destroy_owner_session(
        &self,
        owner: &str,
        handle: &SessionHandle,
    ) -> session_core::Result<bool> {
        self.inner.destroy_owner_session(owner, handle).await
    }
    async fn destroy_owner_sessions(
        &self,
        owner: &str,
        keep: Option<&SessionId>,
    ) -> session_core::Result<u64> {
        self.inner.destroy_owner_sessions(owner, keep).await
    }
}

fn meddling_app(meddle: Option<Meddle>) -> (Router, Arc<Meddling>) {
    let store = Meddling::new(meddle);
    let app = session_demo::app(
        store.clone(),
        session_demo::cookie_config(true).expect("valid"),
    );
    (app, store)
}

#[tokio::test]
async fn a_session_ended_while_signing_in_starts_over_on_a_fresh_one() {
    let (app, store) = meddling_app(Some(Meddle::End));
    let anonymous = send(&app, "GET", "/counter", None, "").await.session();

    let reply = send(
        &app,
        "POST",
        "/login",
        Some(&anonymous),
        "username=ann&password=demo",
    )
    .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let fresh = reply.session();
    assert_ne!(fresh, anonymous);
    let profile = send(&app, "GET", "/profile", Some(&fresh), "").await;
    assert_eq!(element(&profile.body, "profile-user"), "ann");
    assert_eq!(
        element(&profile.body, "profile-visits"),
        "0",
        "a fresh session: the ended one's data is gone with it"
    );
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_session_changed_while_signing_in_is_a_409_to_retry() {
    let (app, store) = meddling_app(Some(Meddle::Rebind));
    let anonymous = send(&app, "GET", "/counter", None, "").await.session();

    let reply = send(
        &app,
        "POST",
        "/login",
        Some(&anonymous),
        "username=ann&password=demo",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert!(reply.body.contains("Please try again"), "{}", reply.body);
    assert!(
        reply.body.contains("id=\"login\""),
        "the form to retry with"
    );
    assert!(reply.set_cookie.is_none());
    let id: SessionId = anonymous.parse().unwrap();
    let stored = store.inner.load(&id).await.unwrap().unwrap();
    assert_eq!(stored.owner(), Some("user:mallory"), "not signed in as ann");
    assert_eq!(stored.get("user"), None);
}

#[tokio::test]
async fn store_failures_are_not_shown_to_visitors() {
    let (app, store) = meddling_app(None);
    let id = login(&app, "ann").await;
    store.loads_fail.store(true, Ordering::SeqCst);
    let reply = send(&app, "GET", "/", Some(&id), "").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.contains("unavailable"), "{}", reply.body);
    assert!(
        !reply.body.contains("10.1.2.3") && !reply.body.contains("password"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_corrupt_session_is_ended_and_the_visitor_carries_on_signed_out() {
    let (app, store) = meddling_app(None);
    let id = login(&app, "ann").await;
    store.corrupt.store(true, Ordering::SeqCst);

    let reply = send(&app, "GET", "/profile", Some(&id), "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    let removal = reply.set_cookie.expect("the removal cookie");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(store.inner.len().await.unwrap(), 0, "the record is gone");

    store.corrupt.store(false, Ordering::SeqCst);
    let again = login(&app, "ann").await;
    let profile = send(&app, "GET", "/profile", Some(&again), "").await;
    assert_eq!(element(&profile.body, "profile-user"), "ann");
}

#[tokio::test(start_paused = true)]
async fn the_store_page_counts_at_most_once_a_second_however_often_it_is_asked() {
    // Counting costs work that grows with the store (SQL counts the live
    // rows), and the page is open to anyone.
    let (app, store) = meddling_app(None);
    for _ in 0..20 {
        let page = send(&app, "GET", "/store", None, "").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(element(&page.body, "live"), "0");
    }
    assert_eq!(store.lens.load(Ordering::SeqCst), 1);

    // A second later the count is fresh again.
    let id = login(&app, "ann").await;
    tokio::time::advance(session_demo::COUNT_EVERY).await;
    let page = send(&app, "GET", "/store", Some(&id), "").await;
    assert_eq!(element(&page.body, "live"), "1");
    assert_eq!(store.lens.load(Ordering::SeqCst), 2);
}
