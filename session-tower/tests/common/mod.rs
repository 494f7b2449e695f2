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
    SessionInfo, SessionStore, SessionStoreExt as _, async_trait,
};
use session_memory::MemoryStore;
use session_tower::{Session, SessionLayer};
use std::sync::Mutex;
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
    pub destroys: AtomicU64,
    /// Every operation fails with `Error::Backend`.
    pub down: AtomicBool,
    /// Saves (and rotations) fail with `Error::Backend`.
    pub saves_down: AtomicBool,
    /// Saves of stored sessions always meet `Error::Conflict`.
    pub always_conflict: AtomicBool,
    /// Touches attempted, including those that failed.
    pub touch_attempts: AtomicU64,
    /// Loads wait at `load_gate` until the test releases them.
    pub hold_loads: AtomicBool,
    pub load_gate: Arc<Gate>,
    /// Loads report a last activity of `i64::MIN` (a corrupt or foreign
    /// record's metadata).
    pub absurd_last_active: AtomicBool,
    /// Loads of these IDs fail with `Error::Codec`, as for a corrupt record.
    pub corrupt: std::sync::Mutex<Vec<SessionId>>,
}

impl TestStore {
    pub fn new(config: SessionConfig) -> Arc<Self> {
        Self::with_gate(config, Arc::default())
    }

    /// A store whose held loads wait at `gate`.
    pub fn with_gate(config: SessionConfig, load_gate: Arc<Gate>) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::with_config(config),
            loads: AtomicU64::new(0),
            saves: AtomicU64::new(0),
            touches: AtomicU64::new(0),
            destroys: AtomicU64::new(0),
            down: AtomicBool::new(false),
            saves_down: AtomicBool::new(false),
            always_conflict: AtomicBool::new(false),
            touch_attempts: AtomicU64::new(0),
            hold_loads: AtomicBool::new(false),
            load_gate,
            absurd_last_active: AtomicBool::new(false),
            corrupt: std::sync::Mutex::default(),
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

    pub fn destroys(&self) -> u64 {
        self.destroys.load(Ordering::SeqCst)
    }

    pub fn touch_attempts(&self) -> u64 {
        self.touch_attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for TestStore {
    fn config(&self) -> &SessionConfig {
        self.inner.config()
    }

    async fn load(&self, id: &SessionId) -> Result<Option<StoredSession>> {
        self.check()?;
        if self.hold_loads.load(Ordering::SeqCst) {
            self.load_gate.pass().await;
        }
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.corrupt.lock().expect("corrupt ids").contains(id) {
            return Err(Error::Codec("the test record is corrupt".into()));
        }
        let loaded = self.inner.load(id).await?;
        if self.absurd_last_active.load(Ordering::SeqCst) {
            return Ok(loaded.map(|s| {
                let mut meta = s.meta().clone();
                meta.last_active_ms = i64::MIN;
                StoredSession::from_stored(s.id().clone(), meta, s.data().clone())
            }));
        }
        Ok(loaded)
    }

    async fn save(&self, session: &mut StoredSession) -> Result<()> {
        self.check_save()?;
        self.saves.fetch_add(1, Ordering::SeqCst);
        if self.always_conflict.load(Ordering::SeqCst) && !session.is_new() {
            return Err(Error::Conflict);
        }
        self.inner.save(session).await
    }

    async fn touch(&self, session: &mut StoredSession) -> Result<()> {
        self.touch_attempts.fetch_add(1, Ordering::SeqCst);
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
        self.destroys.fetch_add(1, Ordering::SeqCst);
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
    /// What a task that outlived its request found.
    reports: Mutex<Vec<String>>,
    reported: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: Notify::new(),
            release: Notify::new(),
            together: Barrier::new(TOGETHER),
            reports: Mutex::new(Vec::new()),
            reported: Notify::new(),
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

    fn report(&self, lines: Vec<String>) {
        self.reports.lock().expect("reports").extend(lines);
        self.reported.notify_one();
    }

    /// Wait for a late task's report.
    pub async fn reports(&self) -> Vec<String> {
        self.reported.notified().await;
        std::mem::take(&mut *self.reports.lock().expect("reports"))
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
        let gate = Arc::new(Gate::default());
        let store = TestStore::with_gate(
            config(SessionConfig::new(IDLE).with_clock(clock.clone())),
            gate.clone(),
        );
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
        .route("/put-number/{key}/{value}", post(put_number))
        .route("/count", post(count))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/read-logout", post(read_logout))
        .route("/fail", post(write_then_fail))
        .route("/rotate-then-fail", post(rotate_then_fail))
        .route("/read-wait-write/{read}/{write}", post(read_wait_write))
        .route("/count-wait", post(count_wait))
        .route("/count-together", post(count_together))
        .route("/write-read-wait/{key}", post(write_read_wait))
        .route("/load-wait-write/{key}", post(load_wait_write))
        .route("/remove/{key}", post(remove_key))
        .route("/read-wait/{key}", get(read_wait))
        .route("/quote-wait-charge", post(quote_wait_charge))
        .route("/withdraw-wait/{amount}", post(withdraw_wait))
        .route("/try-withdraw-wait/{amount}", post(try_withdraw_wait))
        .route("/has-wait-write/{key}", post(has_wait_write))
        .route("/login-wait/{user}", post(login_wait))
        .route("/put-then-404/{key}/{value}", post(put_then_404))
        .route("/bind/{owner}", post(bind))
        .route("/late/{load}", post(late))
        .route("/stray-load", get(stray_load))
        .route("/half-update", post(half_update))
        .route("/update-wait-boom", post(update_wait_boom))
        .route("/cache/{mode}", post(cache))
        .route(
            "/read-rotate-meddle-charge",
            post(read_rotate_meddle_charge),
        )
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

async fn put_number(
    session: Session,
    Path((key, value)): Path<(String, f64)>,
) -> impl IntoResponse {
    match session.insert(key, &value).await {
        Ok(()) => (StatusCode::OK, "stored".to_owned()),
        Err(e @ Error::Value { .. }) => (StatusCode::BAD_REQUEST, e.to_string()),
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

/// Reads `user`, then logs out.
async fn read_logout(session: Session) -> String {
    let user = session.get("user").await.expect("load").unwrap_or_default();
    let removed = session.destroy().await.expect("destroy");
    format!("{user}, removed: {removed}")
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

async fn remove_key(session: Session, Path(key): Path<String>) -> &'static str {
    session.remove(&key).await.expect("load");
    "removed"
}

/// Reads `key` (loading the session), waits at the gate, answers the value.
async fn read_wait(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(key): Path<String>,
) -> String {
    let value = session.get(&key).await.expect("load");
    gate.pass().await;
    value.unwrap_or_else(|| "<none>".into())
}

/// An `update` copies `price` into `quote`; the handler reads `quote`, waits
/// at the gate, and charges what it read.
async fn quote_wait_charge(State(gate): State<Arc<Gate>>, session: Session) -> String {
    session
        .update(|s| {
            let price = s.get("price").unwrap_or("0").to_owned();
            s.set("quote", price);
        })
        .await
        .expect("load");
    let quote = session.get("quote").await.expect("get").unwrap_or_default();
    gate.pass().await;
    session.set("charged", quote.clone()).await.expect("set");
    format!("charged {quote}")
}

/// Withdraws `amount` from `balance` only if it is covered, notes the
/// attempt, waits at the gate, and says what it did.
async fn withdraw_wait(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(amount): Path<u64>,
) -> &'static str {
    let done = session
        .update(move |s| {
            let balance: u64 = s.get("balance").and_then(|b| b.parse().ok()).unwrap_or(0);
            if balance >= amount {
                s.set("balance", (balance - amount).to_string());
                "withdrew"
            } else {
                "declined"
            }
        })
        .await
        .expect("load");
    session.set("attempted", "yes").await.expect("set");
    gate.pass().await;
    done
}

/// As `withdraw_wait`, through `try_update`: the closure marks the
/// payment pending before it finds out whether the balance covers it, and
/// a refusal is an `Err` (which must leave nothing behind).
async fn try_withdraw_wait(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(amount): Path<u64>,
) -> &'static str {
    let done = session
        .try_update(move |s| {
            s.set("pending", "yes");
            let balance: u64 = s.get("balance").and_then(|b| b.parse().ok()).unwrap_or(0);
            let left = balance.checked_sub(amount).ok_or("declined")?;
            s.set("balance", left.to_string());
            Ok::<_, &'static str>("withdrew")
        })
        .await
        .expect("load");
    session.set("attempted", "yes").await.expect("set");
    gate.pass().await;
    done.unwrap_or_else(|declined| declined)
}

/// Checks whether `key` is present, waits at the gate, then writes `note`.
async fn has_wait_write(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(key): Path<String>,
) -> String {
    let present = session.contains_key(&key).await.expect("load");
    gate.pass().await;
    session.set("note", "written").await.expect("set");
    format!("present: {present}")
}

/// Binds the owner and sets `user`, waits at the gate, then rotates.
async fn login_wait(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(user): Path<String>,
) -> impl IntoResponse {
    session.set_owner(&user).await.expect("load");
    session.set("user", &user).await.expect("set");
    gate.pass().await;
    match session.cycle_id().await {
        Ok(()) => (StatusCode::OK, "rotated".to_owned()),
        Err(e @ Error::Conflict) => (StatusCode::CONFLICT, e.to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn put_then_404(session: Session, Path((key, value)): Path<(String, String)>) -> StatusCode {
    session.set(key, value).await.expect("set");
    StatusCode::NOT_FOUND
}

/// Binds the session to `owner` without rotating: the end-of-request save
/// meets the owner limit.
async fn bind(session: Session, Path(owner): Path<String>) -> &'static str {
    session.set_owner(owner).await.expect("load");
    "bound"
}

fn outcome<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(Error::InvalidInput(_)) => "refused".to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

/// Loads the session if `load` is "load", then leaves a task behind that,
/// once the test releases the gate, tries every method and reports.
async fn late(
    State(gate): State<Arc<Gate>>,
    session: Session,
    Path(load): Path<String>,
) -> &'static str {
    if load == "load" {
        session.get("k").await.expect("load");
    }
    tokio::spawn(async move {
        gate.release.notified().await;
        let report = vec![
            format!("get: {}", outcome(session.get("k").await)),
            format!("set: {}", outcome(session.set("k", "late").await)),
            format!(
                "update: {}",
                outcome(session.update(|s| s.set("k", "late")).await)
            ),
            format!("cycle_id: {}", outcome(session.cycle_id().await)),
            format!("destroy: {}", outcome(session.destroy().await)),
        ];
        gate.report(report);
    });
    "left a task behind"
}

/// Leaves a task behind whose load is held by the store, and answers as soon
/// as that load has started.
async fn stray_load(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    let task_gate = gate.clone();
    tokio::spawn(async move {
        let result = session.get("k").await;
        task_gate.report(vec![format!("get: {}", outcome(result))]);
    });
    gate.wait_entered().await;
    "answered while a load was in progress"
}

/// Sets `a`, then an `update` closure sets `half` and panics (in a task, so
/// the handler survives); answers what the session holds afterwards.
async fn half_update(session: Session) -> String {
    session.set("a", "1").await.expect("set");
    let clone = session.clone();
    let panicked = tokio::spawn(async move {
        let _ = clone
            .update(|s| {
                s.set("half", "applied");
                panic!("the closure fails half-way");
            })
            .await;
    })
    .await
    .is_err();
    let half = session.get("half").await.expect("get");
    format!("panicked: {panicked}, half: {half:?}")
}

/// An `update` that works now but panics when re-run on a session holding
/// `boom`; waits at the gate in between.
async fn update_wait_boom(State(gate): State<Arc<Gate>>, session: Session) -> &'static str {
    session
        .update(|s| {
            assert!(s.get("boom").is_none(), "boom on replay");
            s.set("updated", "yes");
        })
        .await
        .expect("load");
    gate.pass().await;
    "updated"
}

/// Reads `price`, rotates, then changes `price` behind its own back through
/// the store (as a concurrent request could), and charges what it read.
async fn read_rotate_meddle_charge(session: Session) -> String {
    let price = session
        .get("price")
        .await
        .expect("load")
        .unwrap_or_default();
    session.cycle_id().await.expect("rotation");
    let id = session.id().await.expect("id").expect("a session");
    session
        .store()
        .update(&id, |s| s.set("price", "99"))
        .await
        .expect("meddling");
    session.set("charged", price.clone()).await.expect("set");
    format!("charged {price}")
}

/// Writes the session (or, for `mode` "logout", destroys it) and answers
/// with the `Cache-Control` header(s) `mode` names.
async fn cache(session: Session, Path(mode): Path<String>) -> Response<Body> {
    if mode == "logout" {
        session.destroy().await.expect("destroy");
    } else {
        session.set("k", "v").await.expect("set");
    }
    let mut response = Response::new(Body::from("cached?"));
    let values: &[&'static str] = match mode.as_str() {
        "own" => &["private, max-age=60"],
        "public" | "logout" => &["public, max-age=600"],
        "s-maxage" => &["max-age=60, s-maxage=600, proxy-revalidate"],
        "no-store" => &["no-store"],
        "no-cache" => &["no-cache=\"Set-Cookie, X-Y\", max-age=0"],
        "qualified-private" => &["private=\"X-Y\", max-age=60"],
        "two-headers" => &["PUBLIC", "max-age=600, S-MaxAge=900, immutable"],
        "cdn" => &["no-store"],
        _ => &[],
    };
    if mode == "cdn" {
        // Fields aimed at CDNs, which take precedence there over
        // Cache-Control (RFC 9213 and the vendors' own).
        for name in [
            "cdn-cache-control",
            "cloudflare-cdn-cache-control",
            "surrogate-control",
            "edge-control",
        ] {
            response.headers_mut().append(
                name,
                header::HeaderValue::from_static("public, max-age=600"),
            );
        }
    }
    for value in values {
        response.headers_mut().append(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static(value),
        );
    }
    response
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

/// Sends a request with these `Cookie` headers, as they are.
pub async fn send_cookies(router: Router, method: &str, uri: &str, cookies: &[&str]) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for cookie in cookies {
        request = request.header(header::COOKIE, *cookie);
    }
    let request = request.body(Body::empty()).expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    reply(response).await
}

/// A response's status and all its headers.
#[derive(Debug)]
pub struct FullReply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
}

pub async fn send_full(router: Router, method: &str, uri: &str, cookie: Option<&str>) -> FullReply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
    }
    let request = request.body(Body::empty()).expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    FullReply {
        status: response.status(),
        headers: response.headers().clone(),
    }
}
