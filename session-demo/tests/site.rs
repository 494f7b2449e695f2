//! The demo's pages over HTTP (no browser): sign-in, the counter, "your
//! sessions", escaping, and sessions that outlive the process on SQLite.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use session_core::SessionStore;
use session_memory::MemoryStore;
use tower::ServiceExt as _;

const COOKIE: &str = "__Host-session-demo";

struct Reply {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
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
    let mut request = Request::builder().method(method).uri(uri);
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
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        location,
        set_cookie,
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
    assert!(reply.set_cookie.is_none());
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn sign_in_checks_the_demo_password_and_the_username() {
    let (app, store) = memory_app();
    let wrong = send(&app, "POST", "/login", None, "username=ann&password=nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let empty = send(&app, "POST", "/login", None, "username=+&password=demo").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(wrong.set_cookie.is_none() && empty.set_cookie.is_none());
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
