//! The layer in the shapes real axum applications take: nested and merged
//! routers, state, `route_layer`, other middleware, extractors in any
//! order, redirects, HEAD and preflight requests, streamed bodies, upgrades,
//! panics and cancelled requests.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Json, Path, Request as AxumRequest, State};
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use common::{COOKIE, IDLE, Reply, TestStore, cookie_config};
use futures_util::FutureExt as _;
use session_cookie::CookieConfig;
use session_core::{Error, ManualClock, SessionConfig, SessionId, SessionStore};
use session_tower::{Session, SessionFailure, SessionLayer};
use tower::ServiceExt as _;

/// A store with the usual idle timeout on a manual clock, and a layer on it.
fn setup(cookie: CookieConfig) -> (Arc<TestStore>, ManualClock, SessionLayer) {
    let clock = ManualClock::new();
    let store = TestStore::new(SessionConfig::new(IDLE).with_clock(clock.clone()));
    let layer = SessionLayer::new(store.clone(), cookie);
    (store, clock, layer)
}

fn request(method: &str, uri: &str, cookie: Option<&str>) -> axum::http::request::Builder {
    let builder = Request::builder().method(method).uri(uri);
    match cookie {
        Some(id) => builder.header(header::COOKIE, format!("{COOKIE}={id}")),
        None => builder,
    }
}

async fn call(router: &Router, request: Request<Body>) -> Response<Body> {
    router.clone().oneshot(request).await.expect("infallible")
}

async fn send(router: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
    let request = request(method, uri, cookie)
        .body(Body::empty())
        .expect("request");
    common::reply(call(router, request).await).await
}

/// Start a session holding `key` = `value` through the router's
/// `/put/{key}/{value}` route; its ID.
async fn start(router: &Router, key: &str, value: &str) -> String {
    let reply = send(router, "POST", &format!("/put/{key}/{value}"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.session_id().expect("a new session sets the cookie")
}

async fn stored(store: &TestStore, id: &str) -> Option<session_core::Session> {
    let id: SessionId = id.parse().expect("a session ID");
    store.inner.load(&id).await.expect("memory store")
}

async fn put(session: Session, Path((key, value)): Path<(String, String)>) -> &'static str {
    session.set(key, value).await.expect("set");
    "stored"
}

async fn get_key(session: Session, Path(key): Path<String>) -> String {
    let value = session.get(&key).await.expect("get");
    value.unwrap_or_else(|| "<none>".into())
}

#[tokio::test]
async fn nested_and_merged_routers_with_state_share_the_session() {
    #[derive(Clone)]
    struct AppState {
        greeting: &'static str,
    }
    let (store, _, layer) = setup(cookie_config());
    let api = Router::new().route("/put/{key}/{value}", post(put));
    let pages = Router::new().route(
        "/hello",
        get(
            |State(state): State<AppState>, session: Session| async move {
                let user = session.get("user").await.expect("get").unwrap_or_default();
                format!("{} {user}", state.greeting)
            },
        ),
    );
    let router = Router::new()
        .nest("/api", api)
        .merge(pages)
        .layer(layer)
        .with_state(AppState { greeting: "hello" });

    let reply = send(&router, "POST", "/api/put/user/ann", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.session_id().expect("a new session sets the cookie");
    let reply = send(&router, "GET", "/hello", Some(&id)).await;
    assert_eq!(reply.body, "hello ann");
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_layer_on_a_nested_router_leaves_the_other_routes_a_clear_500() {
    let (_, _, layer) = setup(cookie_config());
    let router = Router::new()
        .nest(
            "/app",
            Router::new()
                .route("/put/{key}/{value}", post(put))
                .layer(layer),
        )
        .route("/get/{key}", get(get_key));

    let reply = send(&router, "POST", "/app/put/k/v", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.session_id().is_some());

    let reply = send(&router, "GET", "/get/k", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.body,
        "Session unavailable: the server is misconfigured."
    );
}

#[tokio::test]
async fn route_layer_runs_only_for_matched_routes() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route("/get/{key}", get(get_key))
        .route_layer(layer);
    let id = start(&router, "k", "v").await;
    assert_eq!(send(&router, "GET", "/get/k", Some(&id)).await.body, "v");
    let loads = store.loads();
    let reply = send(&router, "GET", "/missing", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(store.loads(), loads);
}

#[derive(serde::Deserialize)]
struct Item {
    name: String,
}

impl Item {
    /// Store the item in `list`, its name after `prefix`.
    async fn add_to(self, session: Session, list: String, prefix: &str) {
        let value = format!("{prefix}{}", self.name);
        session.set(list, value).await.expect("set");
    }
}

#[tokio::test]
async fn session_takes_any_place_among_the_other_extractors() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route(
            "/json/{list}",
            post(
                |State(prefix): State<&'static str>,
                 Path(list): Path<String>,
                 session: Session,
                 Json(item): Json<Item>| item.add_to(session, list, prefix),
            ),
        )
        .route(
            "/form/{list}",
            post(
                |session: Session,
                 Path(list): Path<String>,
                 State(prefix): State<&'static str>,
                 Form(item): Form<Item>| item.add_to(session, list, prefix),
            ),
        )
        .route(
            "/headers",
            get(
                |headers: HeaderMap, session: Session, request: AxumRequest| async move {
                    let agent = headers.get(header::USER_AGENT).is_some();
                    let json = session.get("a").await.expect("get").unwrap_or_default();
                    format!("{agent} {json} {}", request.uri())
                },
            ),
        )
        .layer(layer)
        .with_state("item:");

    let json = request("POST", "/json/a", None)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name":"apple"}"#))
        .unwrap();
    let reply = common::reply(call(&router, json).await).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let id = reply.session_id().expect("cookie");

    let form = request("POST", "/form/b", Some(&id))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("name=pear"))
        .unwrap();
    let reply = common::reply(call(&router, form).await).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let reply = send(&router, "GET", "/headers", Some(&id)).await;
    assert_eq!(reply.body, "false item:apple /headers");
    let session = stored(&store, &id).await.expect("stored");
    assert_eq!(session.get("b"), Some("item:pear"));
}

#[tokio::test]
async fn head_requests_get_the_cookie_without_a_body() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route(
            "/visit",
            get(|session: Session| async move {
                session.set("seen", "yes").await.expect("set");
                "a body HEAD must not send"
            }),
        )
        .layer(layer);
    let reply = send(&router, "HEAD", "/visit", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "");
    let id = reply.session_id().expect("HEAD still gets the cookie");
    assert!(stored(&store, &id).await.is_some());
}

/// Answers CORS preflights itself, as a CORS layer does.
async fn preflight(request: AxumRequest, next: Next) -> Response<Body> {
    if request.method() == "OPTIONS" {
        return (
            StatusCode::NO_CONTENT,
            [(header::ACCESS_CONTROL_ALLOW_METHODS, "POST")],
        )
            .into_response();
    }
    next.run(request).await
}

#[tokio::test]
async fn a_preflight_costs_no_store_access_and_carries_no_session_headers() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .layer(middleware::from_fn(preflight))
        .layer(layer);
    let id = start(&router, "k", "v").await;
    let loads = store.loads();
    let response = call(
        &router,
        request("OPTIONS", "/put/k/w", Some(&id))
            .header(header::ORIGIN, "https://other.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!response.headers().contains_key(header::SET_COOKIE));
    assert!(!response.headers().contains_key(header::VARY));
    assert!(!response.headers().contains_key(header::CACHE_CONTROL));
    assert_eq!(store.loads(), loads);
}

#[tokio::test]
async fn a_303_after_login_carries_the_new_cookie_and_is_not_cached() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route(
            "/login",
            post(|session: Session| async move {
                session.set_owner("ann").await.expect("owner");
                session.cycle_id().await.expect("rotation");
                Redirect::to("/home")
            }),
        )
        .layer(layer);
    let before = start(&router, "cart", "1").await;
    let response = call(
        &router,
        request("POST", "/login", Some(&before))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/home");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "private, no-store"
    );
    let reply = common::reply(response).await;
    let after = reply.session_id().expect("the redirect carries the cookie");
    assert_ne!(after, before);
    assert!(stored(&store, &before).await.is_none());
    let session = stored(&store, &after).await.expect("rotated");
    assert_eq!(session.get("cart"), Some("1"));
    assert_eq!(session.owner(), Some("ann"));
}

/// Sends visitors without a user to the login page.
async fn require_user(session: Session, request: AxumRequest, next: Next) -> Response<Body> {
    match session.get("user").await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => Redirect::to("/login").into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Renders the layer's empty failure responses, as the docs suggest.
async fn render_failure(mut response: Response<Body>) -> Response<Body> {
    if let Some(failure) = response.extensions().get::<SessionFailure>().copied() {
        *response.body_mut() = Body::from(failure.message());
    }
    response
}

#[tokio::test]
async fn middleware_inside_the_layer_uses_the_session_and_outside_renders_failures() {
    let (store, _, layer) = setup(cookie_config());
    let protected = Router::new()
        .route(
            "/account/{key}/{value}",
            post(
                |session: Session, Path((key, value)): Path<(String, String)>| async move {
                    session.set(key, value).await.expect("set");
                    "saved"
                },
            ),
        )
        .route_layer(middleware::from_fn(require_user));
    let router = Router::new()
        .merge(protected)
        .route("/put/{key}/{value}", post(put))
        .layer(layer)
        .layer(middleware::map_response(render_failure));

    let reply = send(&router, "POST", "/account/k/v", None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(reply.set_cookies.is_empty());

    let id = start(&router, "user", "ann").await;
    let reply = send(&router, "POST", "/account/k/v", Some(&id)).await;
    assert_eq!(reply.body, "saved");
    assert_eq!(
        stored(&store, &id).await.expect("stored").get("k"),
        Some("v")
    );

    store
        .saves_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reply = send(&router, "POST", "/account/k/w", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, SessionFailure::Unavailable.message());
}

/// Writes `k`, then answers with a body streamed after the handler
/// returned; the stream tries to write to the session and reports what
/// happened.
async fn stream_after_write(session: Session) -> Body {
    session.set("k", "before the body").await.expect("set");
    Body::from_stream(futures_util::stream::once(async move {
        let late = match session.set("late", "during the body").await {
            Ok(()) => "stored".to_owned(),
            Err(e @ Error::InvalidInput(_)) => format!("refused: {e}"),
            Err(e) => format!("unexpected: {e}"),
        };
        Ok::<_, std::convert::Infallible>(late)
    }))
}

#[tokio::test]
async fn a_streamed_body_comes_after_the_save_which_can_still_change_the_status() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/stream", get(stream_after_write))
        .layer(layer);
    let reply = send(&router, "GET", "/stream", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.starts_with("refused: "), "{}", reply.body);
    let id = reply.session_id().expect("cookie");
    let session = stored(&store, &id).await.expect("saved before the body");
    assert_eq!(session.get("k"), Some("before the body"));
    assert_eq!(session.get("late"), None);

    store
        .saves_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reply = send(&router, "GET", "/stream", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "", "the stream is never sent");
}

#[tokio::test]
async fn a_101_switching_protocols_response_carries_the_cookie() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route(
            "/ws",
            get(|session: Session| async move {
                session.set("ws", "joined").await.expect("set");
                (
                    StatusCode::SWITCHING_PROTOCOLS,
                    [
                        (header::CONNECTION, "upgrade"),
                        (header::UPGRADE, "websocket"),
                    ],
                )
            }),
        )
        .layer(layer);
    let reply = send(&router, "GET", "/ws", None).await;
    assert_eq!(reply.status, StatusCode::SWITCHING_PROTOCOLS);
    let id = reply.session_id().expect("the handshake sets the cookie");
    assert_eq!(
        stored(&store, &id).await.expect("stored").get("ws"),
        Some("joined")
    );
}

/// A minimal catch-panic layer: a handler's panic becomes a `500`.
#[derive(Clone)]
struct CatchPanic<S>(S);

impl<S> tower::Service<Request<Body>> for CatchPanic<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(result) => result,
                Err(_) => Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            }
        })
    }
}

fn catch_panic<S>(inner: S) -> CatchPanic<S> {
    CatchPanic(inner)
}

fn panicking_routes() -> Router {
    Router::new()
        .route(
            "/write-then-panic",
            post(|session: Session| async move {
                session
                    .set("k", "from a panicking handler")
                    .await
                    .expect("set");
                if session.id().await.is_ok() {
                    panic!("the handler fails");
                }
            }),
        )
        .route(
            "/rotate-then-panic",
            post(|session: Session| async move {
                session.set("user", "ann").await.expect("set");
                session.cycle_id().await.expect("rotation");
                if session.id().await.is_ok() {
                    panic!("the handler fails after the login");
                }
            }),
        )
        .route("/put/{key}/{value}", post(put))
}

#[tokio::test]
async fn a_panicking_handler_stores_nothing() {
    // Without a catch-panic layer the panic unwinds through the layer (a
    // server drops the connection).
    let (store, _, layer) = setup(cookie_config());
    let router = panicking_routes().layer(layer.clone());
    let id = start(&router, "k", "v").await;
    let task = tokio::spawn({
        let router = router.clone();
        let id = id.clone();
        async move { send(&router, "POST", "/write-then-panic", Some(&id)).await }
    });
    assert!(task.await.expect_err("the panic propagates").is_panic());
    assert_eq!(stored(&store, &id).await.unwrap().get("k"), Some("v"));

    // Caught outside the layer: a 500 without any session header.
    let router = panicking_routes()
        .layer(layer.clone())
        .layer(tower::layer::layer_fn(catch_panic));
    let reply = send(&router, "POST", "/write-then-panic", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(stored(&store, &id).await.unwrap().get("k"), Some("v"));

    // Caught inside the layer: an ordinary 500, so the pending write is not
    // stored, but the login's rotation happened and its cookie is sent.
    let router = panicking_routes()
        .layer(tower::layer::layer_fn(catch_panic))
        .layer(layer);
    let reply = send(&router, "POST", "/rotate-then-panic", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let rotated = reply.session_id().expect("the rotation's cookie");
    assert!(stored(&store, &id).await.is_none());
    assert_eq!(
        stored(&store, &rotated).await.unwrap().get("user"),
        Some("ann")
    );
}

#[tokio::test]
async fn a_cancelled_request_stores_its_rotation_but_not_its_later_writes() {
    /// Told the rotated ID once the handler hangs.
    type Hung = Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<String>>>>;
    let (store, _, layer) = setup(cookie_config());
    let (tell, told) = tokio::sync::oneshot::channel();
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route(
            "/login-then-hang",
            post(|State(hung): State<Hung>, session: Session| async move {
                session.cycle_id().await.expect("rotation");
                session.set("after", "rotation").await.expect("set");
                let id = session.id().await.expect("id").expect("a session");
                let tell = hung.lock().await.take().expect("once");
                tell.send(id.as_str().to_owned()).expect("told");
                std::future::pending::<()>().await;
            }),
        )
        .layer(layer)
        .with_state(Hung::new(tokio::sync::Mutex::new(Some(tell))));
    let id = start(&router, "k", "v").await;
    let task = tokio::spawn({
        let router = router.clone();
        let id = id.clone();
        async move { send(&router, "POST", "/login-then-hang", Some(&id)).await }
    });
    let rotated = told.await.expect("the handler hangs");
    task.abort(); // the client went away
    assert!(task.await.expect_err("cancelled").is_cancelled());
    assert!(stored(&store, &id).await.is_none(), "the rotation stands");
    let session = stored(&store, &rotated).await.expect("rotated");
    assert_eq!(session.get("k"), Some("v"));
    assert_eq!(session.get("after"), None, "the pending write is lost");
}

#[tokio::test]
async fn a_plain_tower_service_with_a_string_body_gets_an_empty_failure_response() {
    use tower::Layer as _;
    let (store, _, layer) = setup(cookie_config());
    let service = layer.layer(tower::service_fn(|request: Request<()>| async move {
        let session = request.extensions().get::<Session>().cloned().unwrap();
        session.set("k", "v").await?;
        Ok::<_, Error>(Response::new(String::from("handler body")))
    }));
    store
        .saves_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.body(), "");
    assert_eq!(
        response.extensions().get::<SessionFailure>(),
        Some(&SessionFailure::Unavailable)
    );
}

// ---- semantics ----

#[tokio::test]
async fn read_rotate_write_keeps_everything_under_the_new_id() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route(
            "/checkout",
            post(|session: Session| async move {
                let cart = session.get("cart").await.expect("get").unwrap_or_default();
                session.cycle_id().await.expect("rotation");
                session.set("ordered", cart).await.expect("set");
            }),
        )
        .layer(layer);
    let id = start(&router, "cart", "3").await;
    let reply = send(&router, "POST", "/checkout", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let new = reply.session_id().expect("one cookie, with the new ID");
    assert_ne!(new, id);
    assert!(stored(&store, &id).await.is_none());
    let session = stored(&store, &new).await.expect("stored");
    assert_eq!(session.get("cart"), Some("3"));
    assert_eq!(session.get("ordered"), Some("3"));
}

#[tokio::test]
async fn destroy_then_write_starts_a_new_session_under_a_new_cookie() {
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route(
            "/logout-with-flash/{status}",
            post(|session: Session, Path(status): Path<u16>| async move {
                assert!(session.destroy().await.expect("destroy"));
                session.set("flash", "signed out").await.expect("set");
                StatusCode::from_u16(status).unwrap()
            }),
        )
        .layer(layer);
    let id = start(&router, "user", "ann").await;
    let reply = send(&router, "POST", "/logout-with-flash/200", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let new = reply
        .session_id()
        .expect("exactly one session cookie: the new one, not the removal");
    assert_ne!(new, id);
    assert!(stored(&store, &id).await.is_none());
    let session = stored(&store, &new).await.expect("the new session");
    assert_eq!(session.get("flash"), Some("signed out"));
    assert_eq!(session.get("user"), None);

    // On a 5xx the new session is not stored: the browser only gets the
    // removal cookie.
    let reply = send(&router, "POST", "/logout-with-flash/500", Some(&new)).await;
    assert_eq!(reply.session_id(), None);
    assert!(reply.session_cookie().unwrap().contains("Max-Age=0"));
    assert!(store.is_empty().await.unwrap());
}

#[tokio::test]
async fn clones_used_by_tasks_within_the_request_lose_nothing() {
    const TASKS: usize = 16;
    let (store, _, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route(
            "/fan-out",
            post(|session: Session| async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|i| {
                        let session = session.clone();
                        tokio::spawn(async move {
                            session.set(format!("task{i}"), "done").await?;
                            session
                                .update(|s| {
                                    let n = s.get_as::<u64>("n").ok().flatten().unwrap_or(0);
                                    s.insert("n", &(n + 1)).expect("a number");
                                })
                                .await
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task").expect("session");
                }
            }),
        )
        .layer(layer);
    let id = start(&router, "k", "v").await;
    let reply = send(&router, "POST", "/fan-out", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let session = stored(&store, &id).await.expect("stored");
    assert_eq!(session.get_as::<u64>("n").unwrap(), Some(TASKS as u64));
    assert!((0..TASKS).all(|i| session.get(&format!("task{i}")) == Some("done")));
    assert_eq!(store.loads(), 1, "one load shared by every clone");
}

fn max_age(cookie: &str) -> u64 {
    cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("a Max-Age")
        .parse()
        .expect("seconds")
}

#[tokio::test]
async fn the_touch_interval_is_capped_by_a_shorter_cookie_max_age() {
    // The cookie lives 120 s, the session 600 s idle. A visitor active
    // every 100 s must keep the session: each visit must renew the cookie
    // before the browser drops it.
    let cookie = CookieConfig::builder(COOKIE)
        .max_age(Duration::from_secs(120))
        .build()
        .unwrap();
    let (store, clock, layer) = setup(cookie);
    let layer = layer.touch_interval(Duration::from_secs(200));
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route("/get/{key}", get(get_key))
        .layer(layer);
    let id = start(&router, "k", "v").await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(100));
        let reply = send(&router, "GET", "/get/k", Some(&id)).await;
        assert_eq!(reply.body, "v");
        assert_eq!(
            reply.session_id().as_deref(),
            Some(id.as_str()),
            "the cookie must be renewed before its Max-Age runs out"
        );
    }
    assert!(store.touches() >= 3);
}

#[tokio::test]
async fn near_the_absolute_deadline_the_cookie_does_not_outlive_the_session() {
    let clock = ManualClock::new();
    let store = TestStore::new(
        SessionConfig::new(IDLE)
            .with_absolute_timeout(Duration::from_secs(1000))
            .with_clock(clock.clone()),
    );
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route("/get/{key}", get(get_key))
        .layer(SessionLayer::new(store.clone(), cookie_config()));
    let reply = send(&router, "POST", "/put/k/v", None).await;
    assert_eq!(max_age(reply.session_cookie().unwrap()), IDLE.as_secs());
    let id = reply.session_id().expect("cookie");

    clock.advance(Duration::from_secs(500));
    let reply = send(&router, "GET", "/get/k", Some(&id)).await;
    assert_eq!(max_age(reply.session_cookie().expect("touched")), 500);

    clock.advance(Duration::from_secs(470));
    let reply = send(&router, "POST", "/put/k/w", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(max_age(reply.session_cookie().expect("saved")), 30);

    clock.advance(Duration::from_secs(30));
    let reply = send(&router, "GET", "/get/k", Some(&id)).await;
    assert_eq!(reply.body, "<none>");
    assert!(reply.set_cookies.is_empty());
    assert!(store.is_empty().await.unwrap());
}

#[tokio::test]
async fn a_cookie_with_domain_and_path_is_removed_with_the_same_attributes() {
    let cookie = CookieConfig::builder("__Secure-sid")
        .domain("example.com")
        .path("/app")
        .max_age(IDLE)
        .build()
        .unwrap();
    let (_, _, layer) = setup(cookie);
    let router = Router::new()
        .nest(
            "/app",
            Router::new().route("/put/{key}/{value}", post(put)).route(
                "/logout",
                post(|session: Session| async move {
                    session.destroy().await.expect("destroy").to_string()
                }),
            ),
        )
        .layer(layer);
    let attributes = |cookie: &str| -> Vec<String> {
        let mut attributes: Vec<String> = cookie
            .split("; ")
            .skip(1)
            .filter(|a| !a.starts_with("Max-Age=") && !a.starts_with("Expires="))
            .map(str::to_owned)
            .collect();
        attributes.sort();
        attributes
    };
    let reply = send(&router, "POST", "/app/put/k/v", None).await;
    let set = reply.set_cookies[0].clone();
    let id = set["__Secure-sid=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("; Domain=example.com") && set.contains("; Path=/app"),
        "{set}"
    );

    let response = call(
        &router,
        Request::post("/app/logout")
            .header(header::COOKIE, format!("__Secure-sid={id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let reply = common::reply(response).await;
    assert_eq!(reply.body, "true");
    let removal = &reply.set_cookies[0];
    assert!(removal.starts_with("__Secure-sid=;"), "{removal}");
    assert!(removal.contains("; Max-Age=0"), "{removal}");
    assert_eq!(attributes(removal), attributes(&set));
}

/// A handler that answers store errors with `?`: `SessionFailure` is the
/// response the layer itself would give.
async fn profile(session: Session) -> Result<String, SessionFailure> {
    let user = session.get("user").await?;
    Ok(format!("hello, {}", user.as_deref().unwrap_or("stranger")))
}

#[tokio::test]
async fn a_handler_answers_a_store_error_with_session_failure_and_question_mark() {
    let (store, _clock, layer) = setup(cookie_config());
    let router = Router::new()
        .route("/put/{key}/{value}", post(put))
        .route("/profile", get(profile))
        .layer(layer);
    let id = start(&router, "user", "ann").await;
    let reply = send(&router, "GET", "/profile", Some(&id)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "hello, ann")
    );

    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let response = call(
        &router,
        request("GET", "/profile", Some(&id))
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        response.extensions().get::<SessionFailure>(),
        Some(&SessionFailure::Unavailable)
    );
    let reply = common::reply(response).await;
    assert_eq!(reply.body, SessionFailure::Unavailable.message());
}

#[test]
fn store_errors_map_to_the_failures_the_layer_answers_with() {
    let cases = [
        (Error::backend_msg("down"), SessionFailure::Unavailable),
        (Error::Capacity { limit: 1 }, SessionFailure::Unavailable),
        (
            Error::TooManySessions { limit: 1 },
            SessionFailure::TooManySessions,
        ),
        (Error::Conflict, SessionFailure::Contention),
        (Error::NotFound, SessionFailure::Ended),
        (Error::Codec("corrupt".into()), SessionFailure::Refused),
        (Error::InvalidInput("bad".into()), SessionFailure::Refused),
    ];
    for (error, failure) in cases {
        assert_eq!(SessionFailure::from(error), failure);
    }
}
