//! A test application behind a `SessionLayer`, a store that counts and
//! fails on demand, and request helpers.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use session_cookie::CookieConfig;
use session_core::{
    Error, ManualClock, Result, Session as StoredSession, SessionConfig, SessionHandle, SessionId,
    SessionInfo, SessionStore, async_trait,
};
use session_memory::MemoryStore;
use session_tower::{Session, SessionLayer};
use tokio::sync::{Barrier, Notify};
use tower::ServiceExt as _;

pub const COOKIE: &str = "__Host-sid";
pub const IDLE: Duration = Duration::from_secs(600);

/// A `MemoryStore` that counts operations and can be made to fail.
#[derive(Debug)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub loads: AtomicU64,
    pub saves: AtomicU64,
    pub touches: AtomicU64,
    /// Every operation fails with `Error::Backend`.
    pub down: AtomicBool,
    /// Saves (and rotations) fail with `Error::Backend`.
    pub saves_down: AtomicBool,
}

impl TestStore {
    pub fn new(config: SessionConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::with_config(config),
            loads: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            touches: AtomicU64::new(0),
            down: AtomicBool::new(false),
            saves_down: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::backend_msg("the test store is down"))
        } else {
            Ok(())
        }
    }

    fn check_save(&self) -> Result<()> {
        self.check()?;
        if self.saves_down.load(Ordering::SeqCst) {
            Err(Error::backend_msg("the test store refuses writes"))
        } else {
            Ok(())
        }
    }

    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }

    pub fn touches(&self) -> u64 {
        self.touches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for TestStore {
    fn config(&self) -> &SessionConfig {
        self.inner.config()
    }

    async fn load(&self, id: &SessionId) -> Result<Option<StoredSession>> {
        self.check()?;
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(id).await
    }

    async fn save(&self, session: &mut StoredSession) -> Result<()> {
        self.check_save()?;
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save(session).await
    }

    async fn touch(&self, session: &mut StoredSession) -> Result<()> {
        self.check_save()?;
        self.touches.fetch_add(1, Ordering::SeqCst);
        self.inner.touch(session).await
    }

    async fn cycle_id(&self, session: &mut StoredSession) -> Result<()> {
        self.check_save()?;
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.cycle_id(session).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<bool> {
        self.check()?;
        self.inner.destroy(id).await
    }

    async fn purge_expired(&self) -> Result<u64> {
        self.check()?;
        self.inner.purge_expired().await
    }

    async fn len(&self) -> Result<u64> {
        self.check()?;
        self.inner.len().await
    }

    async fn owner_sessions(
        &self,
        owner: &str,
        current: Option<&SessionId>,
    ) -> Result<Vec<SessionInfo>> {
        self.check()?;
        self.inner.owner_sessions(owner, current).await
    }

    async fn destroy_owner_session(&self, owner: &str, handle: &SessionHandle) -> Result<bool> {
        self.check()?;
        self.inner.destroy_owner_session(owner, handle).await
    }

    async fn destroy_owner_sessions(&self, owner: &str, keep: Option<&SessionId>) -> Result<u64> {
        self.check()?;
        self.inner.destroy_owner_sessions(owner, keep).await
    }
}

/// How many `/count-together` requests meet before any of them finishes.
pub const TOGETHER: usize = 40;

/// Lets a test hold a handler in the middle of a request.
#[derive(Debug)]
pub struct Gate {
    entered: Notify,
    release: Notify,
    together: Barrier,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: Notify::new(),
            release: Notify::new(),
            together: Barrier::new(TOGETHER),
        }
    }
}

impl Gate {
    /// Called by the handler: announce arrival, wait to be let through.
    async fn pass(&self) {
        self.entered.notify_one();
        self.release.notified().await;
    }

    /// Called by the test: wait until a handler is held at the gate.
    pub async fn wait_entered(&self) {
        self.entered.notified().await;
    }

    pub fn release(&self) {
        self.release.notify_one();
    }
}

pub struct TestApp {
    pub store: Arc<TestStore>,
    pub clock: ManualClock,
    pub gate: Arc<Gate>,
    pub cookie: CookieConfig,
    pub router: Router,
}

pub fn cookie_config() -> CookieConfig {
    CookieConfig::builder(COOKIE)
        .max_age(IDLE)
        .build()
        .expect("valid cookie configuration")
}

impl TestApp {
    /// The app on a store with a 600 s idle timeout and a manual clock.
    pub fn new() -> Self {
        Self::with(|config| config, |layer| layer)
    }

    pub fn with(
        config: impl FnOnce(SessionConfig) -> SessionConfig,
        layer: impl FnOnce(SessionLayer) -> SessionLayer,
    ) -> Self {
        let clock = ManualClock::new();
        let store = TestStore::new(config(SessionConfig::new(IDLE).with_clock(clock.clone())));
        let gate = Arc::new(Gate::default());
        let cookie = cookie_config();
        let session_layer = layer(SessionLayer::new(store.clone(), cookie.clone()));
        let router = routes().with_state(gate.clone()).layer(session_layer);
        Self {
            store,
            clock,
            gate,
            cookie,
            router,
        }
    }

    pub async fn send(&self, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
        send(self.router.clone(), method, uri, cookie).await
    }

    /// Start a session holding `key` = `value`; returns its cookie value.
    pub async fn session_with(&self, key: &str, value: &str) -> String {
        let reply = self
            .send("POST", &format!("/put/{key}/{value}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.session_id().expect("a new session sets the cookie")
    }

    pub async fn stored(&self, cookie: &str) -> Option<StoredSession> {
        let id: SessionId = cookie.parse().expect("cookie holds a session ID");
        self.store.inner.load(&id).await.expect("memory store load")
    }
}

fn routes() -> Router<Arc<Gate>> {
    Router::new()
        .route("/noop", get(|| async { "no session used" }))
        .route("/get/{key}", get(get_key))
        .route("/put/{key}/{value}", post(put_key))
        .route("/count", post(count))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/fail", post(write_then_fail))
        .route("/rotate-then-fail", post(rotate_then_fail))
        .route("/read-wait-write/{read}/{write}", post(read_wait_write))
        .route("/count-wait", post(count_wait))
        .route("/count-together", post(count_together))
        .route("/write-read-wait/{key}", post(write_read_wait))
        .route("/load-wait-write/{key}", post(load_wait_write))
}

async fn get_key(session: Session, Path(key): Path<String>) -> impl IntoResponse {
    match session.get(&key).await {
        Ok(value) => (StatusCode::OK, value.unwrap_or_else(|| "<none>".into())),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("load failed: {e}")),
    }
}

async fn put_key(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> impl IntoResponse {
    match session.set(key, value).await {
        Ok(()) => (StatusCode::OK, "stored".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("load failed: {e}")),
    }
}

fn increment(s: &mut StoredSession) -> u64 {
    let n = s.get_as::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    s.insert("visits", &n).expect("a number serializes");
    n
}

async fn count(session: Session) -> impl IntoResponse {
    match session.update(increment).await {
        Ok(n) => (StatusCode::OK, n.to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn login(session: Session, Path(user): Path<String>) -> impl IntoResponse {
    let result = async {
        session.set_owner(&user).await?;
        session.set("user", &user).await?;
        session.cycle_id().await
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, format!("welcome {user}")),
        Err(e @ Error::TooManySessions { .. }) => (StatusCode::CONFLICT, e.to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn logout(session: Session) -> impl IntoResponse {
    match session.destroy().await {
        Ok(removed) => (StatusCode::OK, format!("removed: {removed}")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn write_then_fail(session: Session) -> StatusCode {
    session
        .set("k", "from a failed request")
        .await
        .expect("set");
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn rotate_then_fail(session: Session) -> StatusCode {
    session.cycle_id().await.expect("rotation");
    StatusCode::INTERNAL_SERVER_ERROR
}

/// Reads `read`, waits at the gate, then sets `write`.
async fn read_wait_write(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path((read, write)): Path<(String, String)>,
) -> &'static str {
    let _ = session.get(&read).await.expect("load");
    gate.pass().await;
    session
        .set(write, "written by the held request")
        .await
        .expect("set");
    "done"
}

/// Sets `key`, reads it back, waits at the gate, then sets `after`.
async fn write_read_wait(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(key): Path<String>,
) -> String {
    session.set(&key, "mine").await.expect("set");
    let seen = session.get(&key).await.expect("get").unwrap_or_default();
    gate.pass().await;
    session.set("after", "yes").await.expect("set");
    seen
}

/// Increments the counter, then waits at the gate.
async fn count_wait(State(gate): State<Arc<Gate>>, session: Session) -> String {
    let n = session.update(increment).await.expect("load");
    gate.pass().await;
    n.to_string()
}

/// Increments the counter once all `TOGETHER` requests have loaded the same
/// version, so all but one meet a conflict when they save.
async fn count_together(State(gate): State<Arc<Gate>>, session: Session) -> String {
    let n = session.update(increment).await.expect("load");
    gate.together.wait().await;
    n.to_string()
}

/// Loads the session (reading nothing), waits at the gate, then writes `key`.
async fn load_wait_write(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(key): Path<String>,
) -> &'static str {
    let _ = session.id().await.expect("load");
    gate.pass().await;
    session.set(key, "late write").await.expect("set");
    "handler done"
}

/// What a test needs from a response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub set_cookies: Vec<String>,
    pub body: String,
    pub response_extensions: axum::http::Extensions,
}

impl Reply {
    /// The session `Set-Cookie` header, if exactly one was sent.
    pub fn session_cookie(&self) -> Option<&str> {
        let mut found = self
            .set_cookies
            .iter()
            .filter(|c| c.starts_with(&format!("{COOKIE}=")));
        let first = found.next()?;
        assert!(found.next().is_none(), "several session cookies: {self:?}");
        Some(first)
    }

    /// The session ID the response hands to the browser, if any.
    pub fn session_id(&self) -> Option<String> {
        let cookie = self.session_cookie()?;
        let value = cookie[COOKIE.len() + 1..].split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    }
}

pub async fn send(router: Router, method: &str, uri: &str, cookie: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
    }
    let request = request.body(Body::empty()).expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    reply(response).await
}

pub async fn reply(response: Response<Body>) -> Reply {
    let (parts, body) = response.into_parts();
    let set_cookies = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ASCII Set-Cookie").to_owned())
        .collect();
    let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    Reply {
        status: parts.status,
        set_cookies,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
        response_extensions: parts.extensions,
    }
}
