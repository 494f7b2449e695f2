//! The conformance suite every store runs (feature `testing`).
//!
//! [`run_conformance`] takes a factory that builds an empty store from a
//! [`SessionConfig`] and checks every promise of the [`SessionStore`]
//! contract against it: insert-only first saves, compare-and-set updates,
//! deletion winning over in-flight requests, both timeouts driven by a
//! [`ManualClock`] (no sleeps), rotation, limits, and per-owner sessions. It
//! needs a multi-threaded tokio runtime, because its concurrency checks run
//! tasks in parallel.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::SessionStore;
//! use session_memory::MemoryStore;
//!
//! #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! async fn main() {
//!     session_core::testing::run_conformance(|config| async move {
//!         Arc::new(MemoryStore::with_config(config)) as Arc<dyn SessionStore>
//!     })
//!     .await;
//! }
//! ```
//!
//! Every call of the factory must return a store that shares nothing with
//! the stores it returned before (a fresh table, key prefix or map), because
//! the checks count sessions exactly.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

use crate::{
    Error, ManualClock, OwnerLimitPolicy, Session, SessionConfig, SessionHandle, SessionId,
    SessionStore, SessionStoreExt,
};

const IDLE: Duration = Duration::from_secs(30 * 60);
const MINUTE: Duration = Duration::from_secs(60);

/// Builds a fresh, empty store for one check.
pub trait StoreFactory: Sync {
    /// Build a store with this configuration.
    fn build(&self, config: SessionConfig) -> impl Future<Output = Arc<dyn SessionStore>> + Send;
}

impl<F, Fut> StoreFactory for F
where
    F: Fn(SessionConfig) -> Fut + Sync,
    Fut: Future<Output = Arc<dyn SessionStore>> + Send,
{
    fn build(&self, config: SessionConfig) -> impl Future<Output = Arc<dyn SessionStore>> + Send {
        self(config)
    }
}

/// Run every check against stores built by `factory`. Panics, naming the
/// check and the broken promise, at the first failure.
pub async fn run_conformance(factory: impl StoreFactory) {
    let f = &factory;
    macro_rules! checks {
        ($($name:ident),* $(,)?) => {$(
            println!("conformance: {} ...", stringify!($name));
            $name(f).await;
            println!("conformance: {} ok", stringify!($name));
        )*};
    }
    checks!(
        new_session_is_not_stored_until_saved,
        generated_ids_are_distinct_and_full_strength,
        data_round_trips_through_storage,
        second_save_updates_in_place,
        create_with_id_rejects_malformed_ids,
        create_with_id_accepts_a_caller_id_and_refuses_a_live_one,
        first_save_is_insert_only,
        stale_save_is_rejected,
        concurrent_plain_saves_exactly_one_wins,
        update_helper_loses_no_increment,
        destroyed_session_is_not_resurrected,
        touch_slides_idle_deadline_without_bumping_version,
        touch_rewrites_no_data,
        save_slides_idle_deadline,
        idle_timeout_expires_session,
        expired_id_can_be_reused_by_insert,
        absolute_timeout_caps_lifetime,
        absolute_deadline_survives_reload_touch_and_rotation,
        expired_sessions_are_invisible_then_purged,
        purge_counts_only_expired_records,
        purge_removes_every_expired_session_in_one_call,
        rotation_keeps_data_and_kills_old_id,
        rotation_is_never_seen_half_done,
        rotation_stores_pending_changes_and_new_sessions,
        stale_rotation_is_rejected,
        oversized_data_is_refused_and_loses_nothing,
        owner_binding_survives_save_touch_and_rotation,
        owner_sessions_lists_live_sessions_without_ids,
        destroy_owner_session_by_handle_only_ends_own_sessions,
        destroy_owner_sessions_spares_the_current_one,
        owner_queries_skip_expired_and_foreign_sessions,
        revoked_session_cannot_be_saved_back,
        rebinding_moves_a_session_between_owners,
        owner_limit_refuses_new_sessions,
        owner_limit_ends_oldest_sessions,
        owner_limit_counts_only_the_owners_live_sessions,
        owner_limit_counts_a_rotated_session_once,
        owner_limit_ends_nothing_for_a_refused_write,
        unusable_owner_keys_are_refused,
        revocation_ends_sessions_that_rotate_meanwhile,
        owner_limit_holds_while_sessions_rotate,
        a_late_write_never_shortens_the_idle_deadline,
    );
}

/// A touch, save or rotation that read the clock before another request's
/// write (a save, a touch) reached the store leaves that write's later
/// deadline in place: two requests of one visitor, the first one slow,
/// must not end the session before its idle timeout since the later one,
/// nor hide it from its owner's listings before then.
async fn a_late_write_never_shortens_the_idle_deadline(f: &impl StoreFactory) {
    let cases = ["touch", "save", "rotation"].map(|w| [(w, false), (w, true)]);
    for (late_write, owned) in cases.into_iter().flatten() {
        let clock = HookClock::default();
        let store = f
            .build(SessionConfig::new(IDLE).with_clock(clock.clone()))
            .await;
        let mut s = store.create().await.unwrap();
        if owned {
            s.set_owner("alice");
        }
        store.save(&mut s).await.unwrap();
        let mut late = store.load(s.id()).await.unwrap().unwrap();
        let (other, id, time) = (Arc::clone(&store), s.id().clone(), clock.time.clone());
        // Once the late write has read the clock: a minute later, the
        // other request writes.
        clock.arm_request(move || async move {
            time.advance(MINUTE);
            let mut s = other.load(&id).await.unwrap().unwrap();
            if late_write == "touch" {
                s.set("first", "save");
                other.save(&mut s).await.unwrap();
            } else {
                other.touch(&mut s).await.unwrap();
            }
        });
        // The touch bumped no version: a late save or rotation goes through.
        match late_write {
            "touch" => store.touch(&mut late).await.expect("the late touch"),
            "save" => {
                late.set("second", "save");
                store.save(&mut late).await.expect("the late save");
            }
            _ => store.cycle_id(&mut late).await.expect("the late rotation"),
        }
        let stored = store.load(late.id()).await.unwrap().unwrap();
        assert_eq!(
            stored.expires_at(),
            s.expires_at() + MINUTE,
            "a late {late_write} (owned: {owned}) pulled back the deadline the other request's write set"
        );
        assert_eq!(stored.last_active(), s.last_active() + MINUTE);
        // Past the late write's own deadline, before the stored one.
        clock.time.advance(IDLE - MINUTE / 2);
        assert!(store.load(late.id()).await.unwrap().is_some());
        let listed = u64::from(owned);
        assert_eq!(
            store.count_owner_sessions("alice").await.unwrap(),
            listed,
            "after a late {late_write}, the owner's index lost the session before its deadline"
        );
    }
}

/// Environment variable that turns a missing test service into a failure.
/// `cargo xtask ci --require-services` sets it.
pub const REQUIRE_SERVICES_ENV: &str = "SESSION_TEST_REQUIRE_SERVICES";

/// The URL of a test server from environment variable `var` (for example
/// `SESSION_TEST_REDIS_URL`), or `None` after printing that the test is
/// skipped. When [`REQUIRE_SERVICES_ENV`] is set, a missing URL panics
/// instead, so CI cannot pass by skipping.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os(REQUIRE_SERVICES_ENV).is_some() => {
            panic!(
                "{var} is not set, but {REQUIRE_SERVICES_ENV} requires every server-backed test to run"
            )
        }
        _ => {
            println!("SKIPPED: {var} is not set; this test needs that server");
            None
        }
    }
}

/// A one-off action for [`HookClock`].
type Hook = Box<dyn FnOnce() + Send>;

/// A [`ManualClock`] that runs a one-off action (set with
/// [`HookClock::arm`]) at its next reading, before returning the time it
/// read. It lets a test slip another request in between an operation's
/// reading of the clock and its write, deterministically.
#[derive(Clone, Default)]
pub struct HookClock {
    /// The time it tells.
    pub time: ManualClock,
    hook: Arc<std::sync::Mutex<Option<Hook>>>,
}

impl HookClock {
    /// Run `action` at the next reading of the clock (once).
    pub fn arm(&self, action: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(action));
    }

    /// At the next reading of the clock, run `request` (another request
    /// slipping in) to its end, on a thread and runtime of its own, before
    /// returning the time read.
    pub fn arm_request<F>(&self, request: impl FnOnce() -> F + Send + 'static)
    where
        F: Future<Output = ()>,
    {
        self.arm(move || {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(request());
            })
            .join()
            .unwrap();
        });
    }
}

impl std::fmt::Debug for HookClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookClock")
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl crate::Clock for HookClock {
    fn now_ms(&self) -> i64 {
        let now = self.time.now_ms();
        let action = self.hook.lock().unwrap().take();
        if let Some(action) = action {
            action();
        }
        now
    }
}

struct Ctx {
    store: Arc<dyn SessionStore>,
    clock: ManualClock,
}

async fn ctx(f: &impl StoreFactory, tweak: impl FnOnce(SessionConfig) -> SessionConfig) -> Ctx {
    let clock = ManualClock::new();
    let config = tweak(SessionConfig::new(IDLE).with_clock(clock.clone()));
    Ctx {
        store: f.build(config).await,
        clock,
    }
}

async fn plain(f: &impl StoreFactory) -> Ctx {
    ctx(f, |c| c).await
}

impl Ctx {
    async fn saved(&self, pairs: &[(&str, &str)]) -> Session {
        let mut s = self.store.create().await.expect("create");
        for (k, v) in pairs {
            s.set(*k, *v);
        }
        self.store
            .save(&mut s)
            .await
            .expect("first save of a new session");
        s
    }

    async fn saved_for(&self, owner: &str) -> Session {
        let mut s = self.store.create().await.expect("create");
        s.set_owner(owner);
        self.store
            .save(&mut s)
            .await
            .expect("save of an owned session");
        s
    }

    async fn load(&self, id: &SessionId) -> Option<Session> {
        self.store.load(id).await.expect("load")
    }

    /// Three copies of a stored session, as three requests would hold it.
    async fn copies(&self, id: &SessionId) -> [Session; 3] {
        let mut loaded = Vec::with_capacity(3);
        for _ in 0..3 {
            loaded.push(self.load(id).await.expect("the session is stored"));
        }
        loaded.try_into().expect("three copies")
    }

    async fn len(&self) -> u64 {
        self.store.len().await.expect("len")
    }
}

async fn new_session_is_not_stored_until_saved(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    assert!(s.is_new());
    assert_eq!(c.len().await, 0, "create must not store anything");
    assert!(c.store.is_empty().await.unwrap());
    assert!(
        c.load(s.id()).await.is_none(),
        "an unsaved session must not load"
    );

    s.set("user_id", "42");
    c.store.save(&mut s).await.unwrap();
    assert_eq!(s.version(), 1);
    assert!(!s.is_modified(), "a saved session is not modified");
    assert_eq!(c.len().await, 1);
    assert!(!c.store.is_empty().await.unwrap());

    let loaded = c.load(s.id()).await.expect("saved session loads");
    assert_eq!(loaded.get("user_id"), Some("42"));
    assert_eq!(loaded.version(), 1);
    assert!(!loaded.is_modified());
    assert!(!loaded.is_new());
}

async fn generated_ids_are_distinct_and_full_strength(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let s = c.store.create().await.unwrap();
        let text = s.id().as_str().to_owned();
        assert_eq!(text.len(), 43, "256-bit IDs are 43 base64url characters");
        assert!(seen.insert(text), "duplicate session ID generated");
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Profile {
    name: String,
    roles: Vec<String>,
    age: Option<u8>,
    score: f64,
}

async fn data_round_trips_through_storage(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    let profile = Profile {
        name: "Zoë \"Z\" O'Brien".into(),
        roles: vec!["admin".into(), "ñandú".into()],
        age: None,
        score: -1.5,
    };
    s.set("user_id", "42");
    s.set("ключ", "värde \u{1F600} \n\t\\");
    s.set("", "empty key");
    s.insert("profile", &profile).unwrap();
    s.insert("big", &u64::MAX).unwrap();
    s.insert("neg", &i64::MIN).unwrap();
    s.insert("flag", &true).unwrap();
    let created = s.created_at();
    c.store.save(&mut s).await.unwrap();

    let loaded = c.load(s.id()).await.expect("loads");
    assert_eq!(loaded.get("user_id"), Some("42"));
    assert_eq!(loaded.get("ключ"), Some("värde \u{1F600} \n\t\\"));
    assert_eq!(loaded.get(""), Some("empty key"));
    assert_eq!(loaded.get_as::<Profile>("profile").unwrap(), Some(profile));
    assert_eq!(loaded.get_as::<u64>("big").unwrap(), Some(u64::MAX));
    assert_eq!(loaded.get_as::<i64>("neg").unwrap(), Some(i64::MIN));
    assert_eq!(loaded.get_as::<bool>("flag").unwrap(), Some(true));
    assert_eq!(loaded.len(), 7);
    assert_eq!(loaded.created_at(), created, "creation time is stored");
    assert_eq!(loaded.expires_at(), s.expires_at(), "expiry is stored");
    assert_eq!(loaded.last_active(), s.last_active());
    assert_eq!(loaded.owner(), None);

    let mut empty = c.store.create().await.unwrap();
    c.store.save(&mut empty).await.unwrap();
    assert!(
        c.load(empty.id())
            .await
            .expect("an empty session can be stored")
            .is_empty()
    );
}

async fn second_save_updates_in_place(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("a", "1"), ("b", "2")]).await;
    let mut loaded = c.load(s.id()).await.unwrap();
    loaded.set("a", "changed");
    assert!(loaded.remove("b"));
    c.store.save(&mut loaded).await.unwrap();
    assert_eq!(loaded.version(), 2);
    let again = c.load(s.id()).await.unwrap();
    assert_eq!(again.get("a"), Some("changed"));
    assert!(!again.contains_key("b"));
    assert_eq!(again.version(), 2);
    assert_eq!(c.len().await, 1, "an update does not add a session");
}

async fn create_with_id_rejects_malformed_ids(f: &impl StoreFactory) {
    let c = plain(f).await;
    let bad = [
        String::new(),
        "short".into(),
        "A".repeat(21),
        format!("{}==", "A".repeat(22)),
        format!("{}+/", "A".repeat(22)),
        format!("{} {}", "A".repeat(12), "A".repeat(12)),
        format!("\"{}\"", "A".repeat(24)),
        format!("{}é", "A".repeat(24)),
        "A".repeat(25),
        "A".repeat(crate::MAX_ID_LEN + 1),
    ];
    for id in &bad {
        match c.store.create_with_id(id).await {
            Err(Error::InvalidId(_)) => {}
            other => panic!("create_with_id({id:?}) should be InvalidId, got {other:?}"),
        }
    }
    assert_eq!(c.len().await, 0);
}

/// A well-formed caller ID of 24 characters (144 bits): always canonical.
fn caller_id() -> String {
    SessionId::generate().unwrap().as_str()[..24].to_owned()
}

async fn create_with_id_accepts_a_caller_id_and_refuses_a_live_one(f: &impl StoreFactory) {
    let c = plain(f).await;
    let text = caller_id();
    let mut s = c.store.create_with_id(&text).await.unwrap();
    assert_eq!(s.id().as_str(), text);
    assert!(s.is_new());
    assert_eq!(
        c.len().await,
        0,
        "create_with_id stores nothing before save"
    );
    s.set("k", "v");
    c.store.save(&mut s).await.unwrap();
    let loaded = c
        .load(&text.parse().unwrap())
        .await
        .expect("loads by the caller's ID");
    assert_eq!(loaded.get("k"), Some("v"));

    match c.store.create_with_id(&text).await {
        Err(Error::Conflict) => {}
        other => panic!("create_with_id of a live ID should be Conflict, got {other:?}"),
    }
}

async fn first_save_is_insert_only(f: &impl StoreFactory) {
    let c = plain(f).await;
    let text = caller_id();
    let mut first = c.store.create_with_id(&text).await.unwrap();
    let mut second = c.store.create_with_id(&text).await.unwrap();
    first.set("who", "first");
    second.set("who", "second");
    c.store.save(&mut first).await.unwrap();
    match c.store.save(&mut second).await {
        Err(Error::Conflict) => {}
        other => panic!("a second insert under a live ID must be Conflict, got {other:?}"),
    }
    assert_eq!(c.load(first.id()).await.unwrap().get("who"), Some("first"));
    assert_eq!(c.len().await, 1);
}

async fn stale_save_is_rejected(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("x", "0")]).await;
    let mut a = c.load(s.id()).await.unwrap();
    let mut b = c.load(s.id()).await.unwrap();
    a.set("x", "a");
    c.store.save(&mut a).await.unwrap();
    b.set("x", "b");
    match c.store.save(&mut b).await {
        Err(Error::Conflict) => {}
        other => panic!("a save from a stale load must be Conflict, got {other:?}"),
    }
    assert_eq!(
        b.version(),
        1,
        "a refused save leaves the session's version alone"
    );
    assert_eq!(
        c.load(s.id()).await.unwrap().get("x"),
        Some("a"),
        "the winner's data stays"
    );

    let mut fresh = c.load(s.id()).await.unwrap();
    fresh.set("x", "b");
    c.store
        .save(&mut fresh)
        .await
        .expect("a reloaded session saves");
    assert_eq!(c.load(s.id()).await.unwrap().get("x"), Some("b"));
}

async fn concurrent_plain_saves_exactly_one_wins(f: &impl StoreFactory) {
    let c = plain(f).await;
    for round in 0..20 {
        let s = c.saved(&[]).await;
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = Vec::new();
        for racer in ["left", "right"] {
            let store = Arc::clone(&c.store);
            let barrier = Arc::clone(&barrier);
            let id = s.id().clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = store.load(&id).await.unwrap().unwrap();
                barrier.wait().await;
                mine.set("winner", racer);
                (racer, store.save(&mut mine).await)
            }));
        }
        let mut winners = Vec::new();
        let mut conflicts = 0;
        for t in tasks {
            match t.await.unwrap() {
                (racer, Ok(())) => winners.push(racer),
                (_, Err(Error::Conflict)) => conflicts += 1,
                (_, Err(e)) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one racer must win, got {winners:?}"
        );
        assert_eq!(conflicts, 1, "round {round}: the other must get a conflict");
        let stored = c.load(s.id()).await.unwrap();
        assert_eq!(
            stored.get("winner"),
            Some(winners[0]),
            "round {round}: the winner's write is stored"
        );
    }
}

async fn update_helper_loses_no_increment(f: &impl StoreFactory) {
    const TASKS: u64 = 32;
    const INCREMENTS: u64 = 50;
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    s.insert("counter", &0u64).unwrap();
    c.store.save(&mut s).await.unwrap();

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&c.store);
        let id = s.id().clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                store
                    .update(&id, |s| {
                        let n: u64 = s.get_as("counter").unwrap().unwrap();
                        s.insert("counter", &(n + 1)).unwrap();
                    })
                    .await
                    .expect("update");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = c.load(s.id()).await.unwrap();
    assert_eq!(
        end.get_as::<u64>("counter").unwrap(),
        Some(TASKS * INCREMENTS),
        "increments were lost"
    );
    assert_eq!(
        end.version(),
        1 + TASKS * INCREMENTS,
        "every increment is one stored version"
    );

    let missing = SessionId::generate().unwrap();
    match c.store.update(&missing, |s| s.set("a", "b")).await {
        Err(Error::NotFound) => {}
        other => panic!("update of a missing session must be NotFound, got {other:?}"),
    }
    assert_eq!(c.len().await, 1, "update never creates a session");
}

async fn destroyed_session_is_not_resurrected(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("user_id", "42")]).await;
    let mut in_flight = c.load(s.id()).await.unwrap();
    let mut other = c.load(s.id()).await.unwrap();
    let mut third = c.load(s.id()).await.unwrap();

    assert!(
        c.store.destroy(s.id()).await.unwrap(),
        "destroy reports a removal"
    );
    assert!(
        !c.store.destroy(s.id()).await.unwrap(),
        "a second destroy removes nothing"
    );

    in_flight.set("cart", "1 item");
    match c.store.save(&mut in_flight).await {
        Err(Error::NotFound) => {}
        other => panic!("saving a destroyed session must be NotFound, got {other:?}"),
    }
    match c.store.touch(&mut other).await {
        Err(Error::NotFound) => {}
        other => panic!("touching a destroyed session must be NotFound, got {other:?}"),
    }
    match c.store.cycle_id(&mut third).await {
        Err(Error::NotFound) => {}
        other => panic!("rotating a destroyed session must be NotFound, got {other:?}"),
    }
    assert!(
        c.load(s.id()).await.is_none(),
        "the destroyed session stays gone"
    );
    assert!(c.load(third.id()).await.is_none());
    assert_eq!(c.len().await, 0);
}

async fn touch_slides_idle_deadline_without_bumping_version(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("k", "v")]).await;
    let mut reader = c.load(s.id()).await.unwrap();
    let mut writer = c.load(s.id()).await.unwrap();
    let before = reader.expires_at();

    c.clock.advance(20 * MINUTE);
    c.store.touch(&mut reader).await.unwrap();
    assert_eq!(
        reader.expires_at(),
        before + 20 * MINUTE,
        "touch slides the idle deadline"
    );
    assert_eq!(reader.version(), 1, "touch does not bump the version");
    let stored = c.load(s.id()).await.unwrap();
    assert_eq!(
        stored.expires_at(),
        reader.expires_at(),
        "the slid deadline is stored"
    );
    assert_eq!(stored.last_active(), reader.last_active());
    assert_eq!(stored.version(), 1);

    c.clock.advance(20 * MINUTE);
    assert!(
        c.load(s.id()).await.is_some(),
        "40 minutes after the save, 20 after the touch: alive"
    );
    assert_eq!(
        c.len().await,
        1,
        "len counts a touched session past its first deadline"
    );
    writer.set("k", "w");
    c.store
        .save(&mut writer)
        .await
        .expect("a touch must not make a concurrent save conflict");
}

/// A touch stores activity and nothing else: not a request's pending
/// changes, not an old copy's data over a newer save, not a session that
/// was never stored.
async fn touch_rewrites_no_data(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    s.set("k", "v");
    s.set_owner("alice");
    c.store.save(&mut s).await.unwrap();
    let mut dirty = c.load(s.id()).await.unwrap();
    let mut stale = c.load(s.id()).await.unwrap();

    dirty.set("k", "unsaved");
    dirty.set_owner("mallory");
    c.clock.advance(MINUTE);
    c.store.touch(&mut dirty).await.unwrap();
    let stored = c.load(s.id()).await.unwrap();
    assert_eq!(
        stored.get("k"),
        Some("v"),
        "a touch does not store pending changes"
    );
    assert_eq!(stored.owner(), Some("alice"), "nor a pending owner change");
    assert_eq!(stored.version(), 1);
    assert_eq!(stored.created_at(), s.created_at());
    assert_eq!(c.store.count_owner_sessions("mallory").await.unwrap(), 0);
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);

    s.set("k", "w");
    c.store
        .save(&mut s)
        .await
        .expect("a touch does not make the next save conflict");
    c.clock.advance(MINUTE);
    c.store
        .touch(&mut stale)
        .await
        .expect("a touch needs no particular version");
    let stored = c.load(s.id()).await.unwrap();
    assert_eq!(
        stored.get("k"),
        Some("w"),
        "a touch from an old copy does not bring old data back"
    );
    assert_eq!(stored.version(), 2, "nor an old version");
    assert_eq!(
        stored.last_active(),
        stale.last_active(),
        "the old copy's touch still counts as activity"
    );
    assert_eq!(stored.expires_at(), stale.expires_at());

    let mut never_saved = c.store.create().await.unwrap();
    never_saved.set("k", "v");
    match c.store.touch(&mut never_saved).await {
        Err(Error::NotFound) => {}
        other => panic!("touching a never-saved session must be NotFound, got {other:?}"),
    }
    assert!(
        c.load(never_saved.id()).await.is_none(),
        "a touch stores no new session"
    );
    assert_eq!(c.len().await, 1);
}

async fn save_slides_idle_deadline(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.saved(&[]).await;
    c.clock.advance(20 * MINUTE);
    s.set("n", "1");
    c.store.save(&mut s).await.unwrap();
    c.clock.advance(20 * MINUTE);
    assert!(
        c.load(s.id()).await.is_some(),
        "a save slides the idle deadline"
    );
}

async fn idle_timeout_expires_session(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("k", "v")]).await;
    let mut in_flight = c.load(s.id()).await.unwrap();
    let mut toucher = c.load(s.id()).await.unwrap();
    let mut rotator = c.load(s.id()).await.unwrap();

    c.clock.advance(IDLE - Duration::from_millis(1));
    assert!(
        c.load(s.id()).await.is_some(),
        "alive until the idle deadline"
    );
    c.clock.advance(Duration::from_millis(1));
    assert!(
        c.load(s.id()).await.is_none(),
        "expired at the idle deadline"
    );
    assert_eq!(
        c.len().await,
        0,
        "len excludes expired sessions before any purge"
    );
    assert!(c.store.is_empty().await.unwrap());

    in_flight.set("k", "late");
    match c.store.save(&mut in_flight).await {
        Err(Error::NotFound) => {}
        other => panic!("saving an expired session must be NotFound, got {other:?}"),
    }
    match c.store.touch(&mut toucher).await {
        Err(Error::NotFound) => {}
        other => panic!("touching an expired session must be NotFound, got {other:?}"),
    }
    match c.store.cycle_id(&mut rotator).await {
        Err(Error::NotFound) => {}
        other => panic!("rotating an expired session must be NotFound, got {other:?}"),
    }
    assert_eq!(rotator.id(), s.id(), "a refused rotation keeps the old ID");
    assert!(
        c.load(s.id()).await.is_none(),
        "an expired session is not revived by a save, touch or rotation"
    );
    assert_eq!(c.len().await, 0, "nor under a new ID");
    assert!(
        !c.store.destroy(s.id()).await.unwrap(),
        "destroying an expired session ends no live session"
    );
}

async fn expired_id_can_be_reused_by_insert(f: &impl StoreFactory) {
    let c = plain(f).await;
    let text = caller_id();
    let mut old = c.store.create_with_id(&text).await.unwrap();
    old.set("gen", "old");
    c.store.save(&mut old).await.unwrap();
    c.clock.advance(IDLE + MINUTE);

    let mut new = c
        .store
        .create_with_id(&text)
        .await
        .expect("an expired ID is free again");
    new.set("gen", "new");
    c.store
        .save(&mut new)
        .await
        .expect("insert over an expired, unpurged record");
    let loaded = c.load(new.id()).await.unwrap();
    assert_eq!(loaded.get("gen"), Some("new"));
    assert_eq!(loaded.version(), 1);
    assert_eq!(c.len().await, 1);
}

async fn absolute_timeout_caps_lifetime(f: &impl StoreFactory) {
    let c = ctx(f, |c| c.with_absolute_timeout(Duration::from_secs(3600))).await;
    let mut s = c.saved(&[]).await;
    let created = s.created_at();
    assert_eq!(
        s.absolute_deadline(),
        Some(created + Duration::from_secs(3600))
    );

    c.clock.advance(20 * MINUTE);
    c.store.touch(&mut s).await.unwrap();
    c.clock.advance(20 * MINUTE);
    s.set("n", "1");
    c.store.save(&mut s).await.unwrap();
    assert_eq!(
        s.expires_at(),
        created + Duration::from_secs(3600),
        "expiry is capped by the absolute deadline"
    );
    c.clock.advance(19 * MINUTE);
    assert!(
        c.load(s.id()).await.is_some(),
        "alive before the absolute deadline"
    );
    c.clock.advance(MINUTE);
    assert!(
        c.load(s.id()).await.is_none(),
        "dead at the absolute deadline however active"
    );
    assert_eq!(c.len().await, 0);
    match c.store.touch(&mut s).await {
        Err(Error::NotFound) => {}
        other => panic!("touch past the absolute deadline must be NotFound, got {other:?}"),
    }
}

/// The absolute deadline is stored with the session: a later request that
/// loads it, a touch and a rotation all keep it, so no amount of activity
/// stretches a session past it.
async fn absolute_deadline_survives_reload_touch_and_rotation(f: &impl StoreFactory) {
    let c = ctx(f, |c| c.with_absolute_timeout(Duration::from_secs(3600))).await;
    let mut first = c.store.create().await.unwrap();
    first.set("k", "v");
    first.set_owner("alice");
    c.store.save(&mut first).await.unwrap();
    let deadline = first.created_at() + Duration::from_secs(3600);

    c.clock.advance(25 * MINUTE);
    let mut later = c.load(first.id()).await.unwrap();
    assert_eq!(
        later.absolute_deadline(),
        Some(deadline),
        "the absolute deadline is stored"
    );
    later.set("k", "w");
    c.store.save(&mut later).await.unwrap();

    c.clock.advance(20 * MINUTE);
    let mut touched = c.load(first.id()).await.unwrap();
    c.store.touch(&mut touched).await.unwrap();
    assert_eq!(
        touched.expires_at(),
        deadline,
        "a touch is capped by the absolute deadline"
    );
    assert_eq!(
        c.load(first.id()).await.unwrap().expires_at(),
        deadline,
        "the capped expiry is what the touch stored"
    );

    c.clock.advance(5 * MINUTE);
    let mut rotated = c.load(first.id()).await.unwrap();
    c.store.cycle_id(&mut rotated).await.unwrap();
    let loaded = c.load(rotated.id()).await.unwrap();
    assert_eq!(
        loaded.absolute_deadline(),
        Some(deadline),
        "rotation keeps the absolute deadline"
    );
    assert_eq!(loaded.expires_at(), deadline);

    c.clock.advance(10 * MINUTE - Duration::from_millis(1));
    assert!(c.load(rotated.id()).await.is_some());
    assert_eq!(c.len().await, 1);
    c.clock.advance(Duration::from_millis(1));
    assert!(
        c.load(rotated.id()).await.is_none(),
        "dead at the absolute deadline after a reload, a touch and a rotation"
    );
    assert_eq!(c.len().await, 0);
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);
}

async fn expired_sessions_are_invisible_then_purged(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(c.saved(&[("k", "v")]).await);
    }
    c.clock.advance(20 * MINUTE);
    let young = [c.saved(&[]).await, c.saved(&[]).await];
    c.clock.advance(15 * MINUTE);

    assert_eq!(
        c.len().await,
        2,
        "the three expired sessions are not counted"
    );
    for s in &old {
        assert!(c.load(s.id()).await.is_none());
    }
    assert_eq!(
        c.store.purge_expired().await.unwrap(),
        3,
        "purge removes exactly the expired sessions"
    );
    assert_eq!(
        c.store.purge_expired().await.unwrap(),
        0,
        "nothing left to purge"
    );
    assert_eq!(c.len().await, 2);
    for s in &young {
        assert!(c.load(s.id()).await.is_some(), "purge keeps live sessions");
    }
}

/// `purge_expired` counts each expired session once, and only those: not a
/// session kept alive by a touch, a later save or a rotation (nor the key
/// it was rotated away from), not a destroyed one, not an owner's index
/// entry beside a record.
async fn purge_counts_only_expired_records(f: &impl StoreFactory) {
    let c = plain(f).await;
    let expired = [c.saved(&[("k", "v")]).await, c.saved(&[]).await];
    let expired_owned = c.saved_for("alice").await;
    let mut touched = c.saved(&[]).await;
    let mut resaved = c.saved(&[]).await;
    let mut rotated = c.saved(&[("k", "v")]).await;
    let mut rotated_owned = c.saved_for("alice").await;
    let destroyed = c.saved(&[]).await;
    let destroyed_owned = c.saved_for("alice").await;

    c.clock.advance(20 * MINUTE);
    c.store.touch(&mut touched).await.unwrap();
    resaved.set("k", "v");
    c.store.save(&mut resaved).await.unwrap();
    c.store.cycle_id(&mut rotated).await.unwrap();
    c.store.cycle_id(&mut rotated_owned).await.unwrap();
    c.store.destroy(destroyed.id()).await.unwrap();
    c.store.destroy(destroyed_owned.id()).await.unwrap();
    c.clock.advance(15 * MINUTE);

    assert_eq!(c.len().await, 4);
    assert_eq!(
        c.store.purge_expired().await.unwrap(),
        3,
        "purge counts each expired session once, and nothing else"
    );
    assert_eq!(c.store.purge_expired().await.unwrap(), 0);
    assert_eq!(c.len().await, 4, "purge keeps every live session");
    for s in [&touched, &resaved, &rotated, &rotated_owned] {
        assert!(c.load(s.id()).await.is_some(), "purge keeps live sessions");
    }
    for s in expired.iter().chain([&expired_owned]) {
        assert!(c.load(s.id()).await.is_none());
    }
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);
}

/// One call of `purge_expired` removes every expired session, however many
/// (more than any backend deletes in one batch), and counts them exactly.
async fn purge_removes_every_expired_session_in_one_call(f: &impl StoreFactory) {
    const EXPIRED: usize = 1100;
    const WRITERS: usize = 8;
    let c = plain(f).await;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&c.store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..EXPIRED / WRITERS {
                let mut s = store.create().await.unwrap();
                store.save(&mut s).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = (EXPIRED / WRITERS * WRITERS) as u64;
    assert_eq!(c.len().await, stored);
    c.clock.advance(IDLE);
    let live = c.saved(&[]).await;
    assert_eq!(c.len().await, 1);
    assert_eq!(
        c.store.purge_expired().await.unwrap(),
        stored,
        "one purge removes every expired session and counts each once"
    );
    assert_eq!(c.store.purge_expired().await.unwrap(), 0);
    assert!(c.load(live.id()).await.is_some());
    assert_eq!(c.len().await, 1);
}

async fn rotation_keeps_data_and_kills_old_id(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.saved(&[("user_id", "42")]).await;
    let old = s.id().clone();
    let mut stale = c.load(&old).await.unwrap();
    let created = s.created_at();

    c.store.cycle_id(&mut s).await.unwrap();
    assert_ne!(*s.id(), old, "rotation gives a new ID");
    assert_eq!(s.id().as_str().len(), 43);
    assert!(c.load(&old).await.is_none(), "the old ID is dead at once");
    let loaded = c.load(s.id()).await.expect("the new ID loads");
    assert_eq!(loaded.get("user_id"), Some("42"), "rotation keeps the data");
    assert_eq!(
        loaded.created_at(),
        created,
        "rotation keeps the creation time"
    );
    assert_eq!(c.len().await, 1, "rotation does not duplicate the session");

    stale.set("user_id", "attacker");
    match c.store.save(&mut stale).await {
        Err(Error::NotFound) => {}
        other => panic!("a save under the rotated-away ID must be NotFound, got {other:?}"),
    }
    assert!(
        !c.store.destroy(&old).await.unwrap(),
        "nothing is left under the old ID"
    );
    s.set("after", "rotation");
    c.store
        .save(&mut s)
        .await
        .expect("the rotated session saves normally");
    assert_eq!(c.load(s.id()).await.unwrap().get("user_id"), Some("42"));
}

/// A rotation is one step as every other request sees it: while a session
/// rotates again and again, `len`, the owner's count and the owner's listing
/// see it exactly once (never under both IDs, never under neither), and
/// each old ID is dead when its rotation returns, for good.
async fn rotation_is_never_seen_half_done(f: &impl StoreFactory) {
    const ROTATIONS: usize = 40;
    const WATCHERS: usize = 2;
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    s.set("user_id", "42");
    s.set_owner("alice");
    c.store.save(&mut s).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let (store, done) = (Arc::clone(&c.store), Arc::clone(&done));
        watchers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                assert_eq!(
                    store.len().await.unwrap(),
                    1,
                    "len saw a rotation half done"
                );
                assert_eq!(
                    store.count_owner_sessions("alice").await.unwrap(),
                    1,
                    "the owner's count saw a rotation half done"
                );
                assert_eq!(
                    store.owner_sessions("alice", None).await.unwrap().len(),
                    1,
                    "the owner's listing saw a rotation half done"
                );
            }
        }));
    }
    let mut old_ids = Vec::with_capacity(ROTATIONS);
    for _ in 0..ROTATIONS {
        let old = s.id().clone();
        c.store.cycle_id(&mut s).await.unwrap();
        assert!(c.load(&old).await.is_none(), "the old ID is dead at once");
        old_ids.push(old);
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);
    for w in watchers {
        w.await.unwrap();
    }
    for old in &old_ids {
        assert!(c.load(old).await.is_none(), "an old ID stays dead");
    }
    let loaded = c.load(s.id()).await.unwrap();
    assert_eq!(loaded.get("user_id"), Some("42"));
    assert_eq!(c.len().await, 1);
}

async fn rotation_stores_pending_changes_and_new_sessions(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut fresh = c.store.create().await.unwrap();
    let unsaved_id = fresh.id().clone();
    fresh.set("cart", "3 items");
    c.store.cycle_id(&mut fresh).await.unwrap();
    assert_ne!(*fresh.id(), unsaved_id);
    assert!(c.load(&unsaved_id).await.is_none());
    assert_eq!(
        c.load(fresh.id())
            .await
            .expect("stored by rotation")
            .get("cart"),
        Some("3 items")
    );

    let mut s = c.load(fresh.id()).await.unwrap();
    s.set("user_id", "7");
    c.store.cycle_id(&mut s).await.unwrap();
    assert!(!s.is_modified(), "rotation saved the pending change");
    let loaded = c.load(s.id()).await.unwrap();
    assert_eq!(loaded.get("user_id"), Some("7"));
    assert_eq!(loaded.get("cart"), Some("3 items"));
    assert_eq!(c.len().await, 1);
}

async fn stale_rotation_is_rejected(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("x", "0")]).await;
    let mut a = c.load(s.id()).await.unwrap();
    let mut b = c.load(s.id()).await.unwrap();
    a.set("x", "a");
    c.store.save(&mut a).await.unwrap();
    match c.store.cycle_id(&mut b).await {
        Err(Error::Conflict) => {}
        other => panic!("rotating a stale session must be Conflict, got {other:?}"),
    }
    assert_eq!(b.id(), s.id(), "a refused rotation keeps the old ID");
    assert_eq!(
        c.load(s.id()).await.unwrap().get("x"),
        Some("a"),
        "the stored session is untouched"
    );
    assert_eq!(c.len().await, 1, "a refused rotation stores nothing new");
}

async fn oversized_data_is_refused_and_loses_nothing(f: &impl StoreFactory) {
    let c = ctx(f, |c| c.with_max_data_size(1024)).await;
    let s = c.saved(&[("small", "ok")]).await;
    let mut loaded = c.load(s.id()).await.unwrap();
    loaded.set("big", "x".repeat(2048));
    match c.store.save(&mut loaded).await {
        Err(Error::TooLarge { limit: 1024, size }) => assert!(size > 1024),
        other => panic!("oversized data must be TooLarge, got {other:?}"),
    }
    let stored = c.load(s.id()).await.unwrap();
    assert_eq!(stored.get("small"), Some("ok"));
    assert!(!stored.contains_key("big"));

    let mut big = c.store.create().await.unwrap();
    big.set("big", "x".repeat(2048));
    assert!(matches!(
        c.store.save(&mut big).await,
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        c.store.cycle_id(&mut big).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(c.len().await, 1, "nothing oversized was stored");
}

async fn owner_binding_survives_save_touch_and_rotation(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.store.create().await.unwrap();
    s.set("user_id", "1");
    c.store.save(&mut s).await.unwrap();
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);

    s.set_owner("alice");
    c.store.cycle_id(&mut s).await.unwrap();
    assert_eq!(
        c.load(s.id()).await.unwrap().owner(),
        Some("alice"),
        "binding is stored"
    );
    c.store.touch(&mut s).await.unwrap();
    s.set("n", "2");
    c.store.save(&mut s).await.unwrap();
    let before_rotation = s.id().clone();
    c.store.cycle_id(&mut s).await.unwrap();
    assert_eq!(
        c.load(s.id()).await.unwrap().owner(),
        Some("alice"),
        "binding survives save, touch, rotation"
    );
    let listed = c.store.owner_sessions("alice", Some(s.id())).await.unwrap();
    assert_eq!(listed.len(), 1, "a rotated session is listed once");
    assert!(
        !c.store
            .destroy_owner_session("alice", &before_rotation.handle())
            .await
            .unwrap(),
        "the handle of a rotated-away ID ends nothing"
    );
    assert!(c.load(s.id()).await.is_some());
    assert_eq!(
        listed[0].handle,
        s.id().handle(),
        "the listing follows the rotation"
    );
    assert!(listed[0].is_current);
}

async fn owner_sessions_lists_live_sessions_without_ids(f: &impl StoreFactory) {
    let c = plain(f).await;
    let first = c.saved_for("alice").await;
    c.clock.advance(MINUTE);
    let mut second = c.saved_for("alice").await;
    c.clock.advance(MINUTE);
    let third = c.saved_for("alice").await;
    let bobs = c.saved_for("bob").await;
    let _anonymous = c.saved(&[]).await;

    let listed = c
        .store
        .owner_sessions("alice", Some(second.id()))
        .await
        .unwrap();
    let handles: Vec<SessionHandle> = listed.iter().map(|i| i.handle).collect();
    assert_eq!(
        handles,
        [
            first.id().handle(),
            second.id().handle(),
            third.id().handle()
        ],
        "alice's sessions, oldest first"
    );
    assert_eq!(listed.iter().filter(|i| i.is_current).count(), 1);
    assert!(listed[1].is_current, "the caller's session is marked");
    assert_eq!(listed[0].created_at, first.created_at());
    assert_eq!(listed[0].last_active, first.last_active());
    assert_eq!(listed[0].expires_at, first.expires_at());
    for info in &listed {
        let shown = format!("{info:?} {}", info.handle);
        for s in [&first, &second, &third] {
            assert!(
                !shown.contains(s.id().as_str()),
                "a listing must not reveal session IDs"
            );
            let key = s.id().storage_key();
            assert!(
                !shown.contains(&key.to_hex()[..32]) && !shown.contains(&key_prefix_text(key)),
                "a listing must not reveal storage keys"
            );
        }
    }
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 3);
    assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 1);
    assert_eq!(c.store.count_owner_sessions("nobody").await.unwrap(), 0);
    assert!(
        c.store
            .owner_sessions("nobody", None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c.store.owner_sessions("bob", None).await.unwrap()[0].handle,
        bobs.id().handle()
    );

    // Activity and rotation do not reorder the listing: it is by creation.
    let mut first = first;
    c.store.cycle_id(&mut first).await.unwrap();
    c.store.touch(&mut first).await.unwrap();
    let listed = c.store.owner_sessions("alice", None).await.unwrap();
    let handles: Vec<SessionHandle> = listed.iter().map(|i| i.handle).collect();
    assert_eq!(
        handles,
        [
            first.id().handle(),
            second.id().handle(),
            third.id().handle()
        ],
        "still oldest first after the oldest was rotated and touched"
    );
    assert_eq!(
        listed[0].last_active,
        first.last_active(),
        "the listing shows the latest activity"
    );
    assert_eq!(listed[0].expires_at, first.expires_at());
    assert_eq!(
        listed[0].created_at,
        first.created_at(),
        "rotation keeps the creation time"
    );

    // Keep only `second` active; the others pass their idle deadline.
    c.clock.advance(20 * MINUTE);
    c.store.touch(&mut second).await.unwrap();
    c.clock.advance(15 * MINUTE);
    let listed = c.store.owner_sessions("alice", None).await.unwrap();
    assert_eq!(listed.len(), 1, "expired sessions are not listed");
    assert_eq!(listed[0].handle, second.id().handle());
    assert!(!listed[0].is_current);
    assert_eq!(
        c.store.count_owner_sessions("alice").await.unwrap(),
        1,
        "nor counted"
    );
    assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 0);
}

/// The first 16 bytes of a storage key in the text form of a handle (what
/// a handle that merely truncated the key would show).
fn key_prefix_text(key: &crate::StorageKey) -> String {
    URL_SAFE_NO_PAD.encode(&key.as_bytes()[..16])
}

async fn destroy_owner_session_by_handle_only_ends_own_sessions(f: &impl StoreFactory) {
    let c = plain(f).await;
    let laptop = c.saved_for("alice").await;
    let phone = c.saved_for("alice").await;
    let bobs = c.saved_for("bob").await;

    assert!(
        !c.store
            .destroy_owner_session("alice", &bobs.id().handle())
            .await
            .unwrap(),
        "alice cannot end bob's session"
    );
    assert!(c.load(bobs.id()).await.is_some());
    let unknown = SessionId::generate().unwrap().handle();
    assert!(
        !c.store
            .destroy_owner_session("alice", &unknown)
            .await
            .unwrap()
    );

    assert!(
        c.store
            .destroy_owner_session("alice", &phone.id().handle())
            .await
            .unwrap()
    );
    assert!(
        c.load(phone.id()).await.is_none(),
        "the chosen session ended"
    );
    assert!(c.load(laptop.id()).await.is_some(), "the others did not");
    assert!(
        !c.store
            .destroy_owner_session("alice", &phone.id().handle())
            .await
            .unwrap()
    );
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);
    assert_eq!(c.len().await, 2);
}

async fn destroy_owner_sessions_spares_the_current_one(f: &impl StoreFactory) {
    let c = plain(f).await;
    let here = c.saved_for("alice").await;
    let a = c.saved_for("alice").await;
    let b = c.saved_for("alice").await;
    let bobs = c.saved_for("bob").await;

    assert_eq!(
        c.store
            .destroy_owner_sessions("alice", Some(here.id()))
            .await
            .unwrap(),
        2
    );
    assert!(
        c.load(here.id()).await.is_some(),
        "the current session is kept"
    );
    assert!(c.load(a.id()).await.is_none() && c.load(b.id()).await.is_none());
    assert!(
        c.load(bobs.id()).await.is_some(),
        "other owners are untouched"
    );
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);

    assert_eq!(
        c.store.destroy_owner_sessions("alice", None).await.unwrap(),
        1
    );
    assert!(c.load(here.id()).await.is_none());
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);
    assert_eq!(
        c.store.destroy_owner_sessions("alice", None).await.unwrap(),
        0
    );
    assert_eq!(c.len().await, 1);
}

/// Owner queries act on the owner's live sessions only: an expired session
/// is not ended again or counted as ended, an anonymous or another owner's
/// session is not the owner's to end, and `is_current` marks only the
/// owner's own live session.
async fn owner_queries_skip_expired_and_foreign_sessions(f: &impl StoreFactory) {
    let c = plain(f).await;
    let expired = c.saved_for("alice").await;
    c.clock.advance(20 * MINUTE);
    let a = c.saved_for("alice").await;
    let b = c.saved_for("alice").await;
    let anon = c.saved(&[]).await;
    let bobs = c.saved_for("bob").await;
    c.clock.advance(15 * MINUTE);

    assert!(
        !c.store
            .destroy_owner_session("alice", &expired.id().handle())
            .await
            .unwrap(),
        "an expired session is not ended again"
    );
    assert!(
        !c.store
            .destroy_owner_session("alice", &anon.id().handle())
            .await
            .unwrap(),
        "an anonymous session is no owner's to end"
    );
    assert!(c.load(anon.id()).await.is_some());
    for current in [bobs.id(), expired.id(), anon.id()] {
        let listed = c
            .store
            .owner_sessions("alice", Some(current))
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed.iter().all(|i| !i.is_current),
            "only the owner's own live session is marked current"
        );
    }
    assert_eq!(
        c.store
            .destroy_owner_sessions("alice", Some(bobs.id()))
            .await
            .unwrap(),
        2,
        "revocation counts the live sessions it ended, not expired ones"
    );
    assert!(c.load(a.id()).await.is_none() && c.load(b.id()).await.is_none());
    assert!(
        c.load(bobs.id()).await.is_some(),
        "keeping another owner's session does not spare or end it"
    );
    assert!(c.load(anon.id()).await.is_some());
    assert_eq!(c.len().await, 2);
}

async fn revoked_session_cannot_be_saved_back(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved_for("alice").await;
    let copies = c.copies(s.id()).await;
    assert_eq!(
        c.store.destroy_owner_sessions("alice", None).await.unwrap(),
        1
    );
    cannot_write_back(&c, copies, "a revoked session").await;
    assert!(c.load(s.id()).await.is_none());
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);

    // The same for one device signed out by its handle.
    let device = c.saved_for("alice").await;
    let copies = c.copies(device.id()).await;
    assert!(
        c.store
            .destroy_owner_session("alice", &device.id().handle())
            .await
            .unwrap()
    );
    cannot_write_back(&c, copies, "a session ended by handle").await;
    assert!(c.load(device.id()).await.is_none());
    assert_eq!(c.len().await, 0, "nothing came back under any ID");
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);
}

/// Saving (with a change), touching and rotating copies of `what`, loaded
/// before it ended, are each `NotFound`.
async fn cannot_write_back(
    c: &Ctx,
    [mut saver, mut toucher, mut rotator]: [Session; 3],
    what: &str,
) {
    saver.set("late", "write");
    match c.store.save(&mut saver).await {
        Err(Error::NotFound) => {}
        other => panic!("saving {what} must be NotFound, got {other:?}"),
    }
    match c.store.touch(&mut toucher).await {
        Err(Error::NotFound) => {}
        other => panic!("touching {what} must be NotFound, got {other:?}"),
    }
    match c.store.cycle_id(&mut rotator).await {
        Err(Error::NotFound) => {}
        other => panic!("rotating {what} must be NotFound, got {other:?}"),
    }
}

async fn rebinding_moves_a_session_between_owners(f: &impl StoreFactory) {
    let c = plain(f).await;
    let mut s = c.saved_for("alice").await;
    s.set_owner("bob");
    c.store.save(&mut s).await.unwrap();
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 0);
    assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 1);
    assert_eq!(
        c.store.destroy_owner_sessions("alice", None).await.unwrap(),
        0
    );
    assert!(
        c.load(s.id()).await.is_some(),
        "revoking the old owner does not end it"
    );

    s.clear_owner();
    c.store.save(&mut s).await.unwrap();
    assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 0);
    assert_eq!(c.load(s.id()).await.unwrap().owner(), None);
}

async fn owner_limit_refuses_new_sessions(f: &impl StoreFactory) {
    let c = ctx(f, |c| {
        c.with_max_sessions_per_owner(2, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    let mut one = c.saved_for("alice").await;
    let _two = c.saved_for("alice").await;
    let _bobs = c.saved_for("bob").await;

    let mut three = c.store.create().await.unwrap();
    three.set_owner("alice");
    match c.store.save(&mut three).await {
        Err(Error::TooManySessions { limit: 2 }) => {}
        other => panic!("a third session must be refused, got {other:?}"),
    }
    assert!(
        c.load(three.id()).await.is_none(),
        "the refused session is not stored"
    );
    let mut anon = c.saved(&[]).await;
    anon.set_owner("alice");
    match c.store.cycle_id(&mut anon).await {
        Err(Error::TooManySessions { limit: 2 }) => {}
        other => panic!("binding at login must be refused too, got {other:?}"),
    }
    assert_eq!(
        c.load(anon.id()).await.unwrap().owner(),
        None,
        "the refused binding is not stored"
    );
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);

    one.set("still", "fine");
    c.store
        .save(&mut one)
        .await
        .expect("saving an already-bound session is not a new session");
    c.store
        .cycle_id(&mut one)
        .await
        .expect("nor is rotating it");

    c.clock.advance(IDLE + MINUTE);
    let _fresh = c.saved_for("alice").await; // the old ones expired: room again
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);
}

async fn owner_limit_ends_oldest_sessions(f: &impl StoreFactory) {
    let c = ctx(f, |c| {
        c.with_max_sessions_per_owner(2, OwnerLimitPolicy::EndOldest)
    })
    .await;
    let mut oldest = c.saved_for("alice").await;
    c.clock.advance(MINUTE);
    let middle = c.saved_for("alice").await;
    c.clock.advance(MINUTE);
    // The oldest is also the most recently active: "oldest" is by creation.
    c.store.touch(&mut oldest).await.unwrap();
    let mut in_flight = c.load(oldest.id()).await.unwrap();
    c.clock.advance(MINUTE);
    let newest = c.saved_for("alice").await;

    assert!(
        c.load(oldest.id()).await.is_none(),
        "the earliest created session was ended, however recently active"
    );
    in_flight.set("late", "write");
    match c.store.save(&mut in_flight).await {
        Err(Error::NotFound) => {}
        other => panic!("saving a session the limit ended must be NotFound, got {other:?}"),
    }
    assert!(c.load(middle.id()).await.is_some());
    assert!(c.load(newest.id()).await.is_some());
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);

    c.clock.advance(MINUTE);
    let mut anon = c.saved(&[]).await;
    anon.set_owner("alice");
    c.store.cycle_id(&mut anon).await.unwrap();
    assert!(
        c.load(middle.id()).await.is_none(),
        "login through rotation also ends the oldest"
    );
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);
}

/// A per-owner limit counts that owner's live sessions only: not another
/// owner's, not anonymous ones, not expired ones. Under `RefuseNew` it also
/// refuses binding an existing session by a plain save, or moving another
/// owner's session over; under `EndOldest` it never ends a live session to
/// make room an expired one was taking.
async fn owner_limit_counts_only_the_owners_live_sessions(f: &impl StoreFactory) {
    for policy in [OwnerLimitPolicy::RefuseNew, OwnerLimitPolicy::EndOldest] {
        let c = ctx(f, |c| c.with_max_sessions_per_owner(2, policy)).await;
        let _expired = c.saved_for("alice").await;
        c.clock.advance(20 * MINUTE);
        let bob_one = c.saved_for("bob").await;
        let _bob_two = c.saved_for("bob").await;
        let anon = c.saved(&[]).await;
        c.clock.advance(15 * MINUTE);

        let one = c.saved_for("alice").await;
        c.clock.advance(MINUTE);
        let two = c.saved_for("alice").await;
        assert!(
            c.load(one.id()).await.is_some() && c.load(two.id()).await.is_some(),
            "{policy:?}: two live sessions fit a limit of two"
        );
        assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);
        assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 2);

        let mut bound = c.load(anon.id()).await.unwrap();
        bound.set_owner("alice");
        let mut moved = c.load(bob_one.id()).await.unwrap();
        moved.set_owner("alice");
        match policy {
            OwnerLimitPolicy::RefuseNew => {
                for (what, s) in [("binding", &mut bound), ("moving", &mut moved)] {
                    match c.store.save(s).await {
                        Err(Error::TooManySessions { limit: 2 }) => {}
                        other => panic!(
                            "{what} a third session to alice by a save must be refused, got {other:?}"
                        ),
                    }
                }
                assert_eq!(c.load(anon.id()).await.unwrap().owner(), None);
                assert_eq!(c.load(bob_one.id()).await.unwrap().owner(), Some("bob"));
                assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 2);
                assert!(c.load(one.id()).await.is_some());
            }
            _ => {
                c.store.save(&mut moved).await.unwrap();
                assert!(
                    c.load(one.id()).await.is_none(),
                    "moving a session over ends the new owner's oldest"
                );
                assert_eq!(c.store.count_owner_sessions("bob").await.unwrap(), 1);
            }
        }
        assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);
        assert!(c.load(two.id()).await.is_some());
    }
}

async fn owner_limit_counts_a_rotated_session_once(f: &impl StoreFactory) {
    let c = ctx(f, |c| {
        c.with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    let mut s = c.store.create().await.unwrap();
    s.set("cart", "1");
    c.store.save(&mut s).await.unwrap();
    s.set_owner("alice");
    c.store
        .cycle_id(&mut s)
        .await
        .expect("the first binding fits the limit of one");
    for _ in 0..3 {
        c.store
            .cycle_id(&mut s)
            .await
            .expect("rotating the bound session never trips the limit");
    }
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 1);
    assert_eq!(c.len().await, 1);
}

async fn unusable_owner_keys_are_refused(f: &impl StoreFactory) {
    let c = plain(f).await;
    let s = c.saved(&[("k", "v")]).await;
    for owner in [
        String::new(),
        "x".repeat(crate::MAX_OWNER_LEN + 1),
        "x\0y".to_owned(),
        "line\nbreak".to_owned(),
    ] {
        let mut bad = c.load(s.id()).await.unwrap();
        bad.set_owner(owner.clone());
        match c.store.save(&mut bad).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!(
                "an owner of {} bytes must be InvalidInput, got {other:?}",
                owner.len()
            ),
        }
        match c.store.cycle_id(&mut bad).await {
            Err(Error::InvalidInput(_)) => {}
            other => panic!(
                "rotating with an owner of {} bytes must be InvalidInput, got {other:?}",
                owner.len()
            ),
        }
    }
    for owner in ["", "x\0y", "line\nbreak"] {
        assert_eq!(
            c.store.count_owner_sessions(owner).await.unwrap(),
            0,
            "{owner:?}"
        );
        assert!(
            c.store
                .owner_sessions(owner, None)
                .await
                .unwrap()
                .is_empty(),
            "{owner:?}"
        );
        assert_eq!(
            c.store.destroy_owner_sessions(owner, None).await.unwrap(),
            0,
            "{owner:?}"
        );
        let handle = s.id().handle();
        assert!(
            !c.store.destroy_owner_session(owner, &handle).await.unwrap(),
            "{owner:?}"
        );
    }
    let longest = "é".repeat(crate::MAX_OWNER_LEN / 2);
    let mut ok = c.load(s.id()).await.unwrap();
    ok.set_owner(longest.clone());
    c.store
        .save(&mut ok)
        .await
        .expect("an owner of exactly MAX_OWNER_LEN bytes is accepted");
    assert_eq!(c.store.count_owner_sessions(&longest).await.unwrap(), 1);
    assert_eq!(
        c.load(s.id()).await.unwrap().owner(),
        Some(longest.as_str())
    );
}

async fn owner_limit_ends_nothing_for_a_refused_write(f: &impl StoreFactory) {
    let c = ctx(f, |c| {
        c.with_max_sessions_per_owner(2, OwnerLimitPolicy::EndOldest)
    })
    .await;
    let phone = c.saved_for("alice").await;
    c.clock.advance(MINUTE);
    let laptop = c.saved_for("alice").await;
    c.clock.advance(MINUTE);

    // A login form submitted twice: both requests loaded the same anonymous
    // session; the first binds it (ending the oldest, the phone), the second
    // is stale and must be refused without ending anything else.
    let anon = c.saved(&[]).await;
    let mut first = c.load(anon.id()).await.unwrap();
    let mut second = c.load(anon.id()).await.unwrap();
    first.set_owner("alice");
    c.store.save(&mut first).await.unwrap();
    assert!(
        c.load(phone.id()).await.is_none(),
        "binding a third session ends the oldest"
    );
    second.set_owner("alice");
    second.set("twice", "yes");
    match c.store.cycle_id(&mut second).await {
        Err(Error::Conflict) => {}
        other => panic!("the stale second login must be Conflict, got {other:?}"),
    }
    assert!(
        c.load(laptop.id()).await.is_some(),
        "a refused rotation must not end another session"
    );
    assert!(c.load(first.id()).await.is_some());

    // Same for a plain save that is refused because the session was ended.
    let gone = c.saved(&[]).await;
    let mut late = c.load(gone.id()).await.unwrap();
    c.store.destroy(gone.id()).await.unwrap();
    late.set_owner("alice");
    match c.store.save(&mut late).await {
        Err(Error::NotFound) => {}
        other => panic!("saving a destroyed session must be NotFound, got {other:?}"),
    }
    // And for an insert that collides with a live session.
    let text = caller_id();
    let mut taken = c.store.create_with_id(&text).await.unwrap();
    let mut dup = c.store.create_with_id(&text).await.unwrap();
    c.store.save(&mut taken).await.unwrap();
    dup.set_owner("alice");
    match c.store.save(&mut dup).await {
        Err(Error::Conflict) => {}
        other => panic!("a colliding insert must be Conflict, got {other:?}"),
    }
    assert!(
        c.load(laptop.id()).await.is_some(),
        "refused writes end no session"
    );
    assert_eq!(c.store.count_owner_sessions("alice").await.unwrap(), 2);
}

/// Rounds of each race below. Each round races several sessions at once,
/// so a store that lets one slip through is caught within a few rounds;
/// a store that keeps the promise passes every time.
const RACE_ROUNDS: usize = 16;
/// Sessions of one owner that rotate during each round of a race.
const RACERS: usize = 6;

/// Stagger the start of one side of a race by a few scheduler turns, so the
/// rounds meet at different points of each other's work.
async fn stagger(round: usize) {
    for _ in 0..round % 5 {
        tokio::task::yield_now().await;
    }
}

/// A rotation racer: the session's old ID, the result, and the session
/// (under its new ID if the rotation was applied).
type Rotating = tokio::task::JoinHandle<(SessionId, crate::Result<()>, Session)>;

/// [`RACERS`] stored sessions of `owner`, each rotating once the returned
/// barrier (for them and one more party) lets every racer go.
async fn rotating_sessions(c: &Ctx, owner: &str) -> (Arc<Barrier>, Vec<Rotating>) {
    let barrier = Arc::new(Barrier::new(RACERS + 1));
    let mut rotations = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        let mut session = c.saved_for(owner).await;
        let (store, barrier) = (Arc::clone(&c.store), Arc::clone(&barrier));
        rotations.push(tokio::spawn(async move {
            let old = session.id().clone();
            barrier.wait().await;
            let result = store.cycle_id(&mut session).await;
            (old, result, session)
        }));
    }
    (barrier, rotations)
}

/// "Sign out everywhere" (and "everywhere else") while the owner's sessions
/// rotate (a login on another device, a privilege change): every one of
/// them ends. A rotation either lands first, and the revocation ends the
/// session under its new ID, or finds the session ended (`NotFound`).
async fn revocation_ends_sessions_that_rotate_meanwhile(f: &impl StoreFactory) {
    let c = plain(f).await;
    for round in 0..RACE_ROUNDS {
        let owner = format!("revoked-{round}");
        let everywhere_else = round % 2 == 1;
        let current = c.saved_for(&owner).await;
        let (barrier, rotations) = rotating_sessions(&c, &owner).await;
        let revocation = {
            let (store, barrier, owner) =
                (Arc::clone(&c.store), Arc::clone(&barrier), owner.clone());
            let keep = everywhere_else.then(|| current.id().clone());
            tokio::spawn(async move {
                barrier.wait().await;
                stagger(round).await;
                store.destroy_owner_sessions(&owner, keep.as_ref()).await
            })
        };
        let ended = revocation.await.unwrap().expect("revocation");
        for task in rotations {
            let (old, result, session) = task.await.unwrap();
            match result {
                Ok(()) | Err(Error::NotFound) => {}
                Err(e) => panic!("round {round}: a rotation racing a revocation failed: {e}"),
            }
            assert!(
                c.load(&old).await.is_none() && c.load(session.id()).await.is_none(),
                "round {round}: a session rotated while its owner was signed out everywhere survived"
            );
        }
        assert_eq!(
            ended,
            (RACERS + usize::from(!everywhere_else)) as u64,
            "round {round}: the revocation counts each session it ended once"
        );
        assert_eq!(
            c.load(current.id()).await.is_some(),
            everywhere_else,
            "round {round}: only the kept session survives"
        );
        assert_eq!(
            c.store.count_owner_sessions(&owner).await.unwrap(),
            u64::from(everywhere_else),
            "round {round}: the owner has no other session left"
        );
    }
}

/// A login under a per-owner limit while the owner's sessions rotate counts
/// each of them once, under either policy: `EndOldest` leaves exactly the
/// limit, `RefuseNew` refuses the login and ends nothing.
async fn owner_limit_holds_while_sessions_rotate(f: &impl StoreFactory) {
    for policy in [OwnerLimitPolicy::EndOldest, OwnerLimitPolicy::RefuseNew] {
        let c = ctx(f, |c| c.with_max_sessions_per_owner(RACERS as u32, policy)).await;
        for round in 0..RACE_ROUNDS {
            let owner = format!("limited-{round}");
            let (barrier, rotations) = rotating_sessions(&c, &owner).await;
            let login = {
                let (store, barrier, owner) =
                    (Arc::clone(&c.store), Arc::clone(&barrier), owner.clone());
                tokio::spawn(async move {
                    let mut s = store.create().await.unwrap();
                    s.set_owner(&owner);
                    barrier.wait().await;
                    stagger(round).await;
                    // Half the logins bind a new session by saving it, half
                    // by rotating it.
                    let result = if round % 2 == 0 {
                        store.save(&mut s).await
                    } else {
                        store.cycle_id(&mut s).await
                    };
                    (result, s)
                })
            };
            let (result, login) = login.await.unwrap();
            let mut rotated = Vec::new();
            for task in rotations {
                let (_, result, session) = task.await.unwrap();
                match (policy, result) {
                    (_, Ok(())) => rotated.push(session),
                    // Ended by the login before it could rotate.
                    (OwnerLimitPolicy::EndOldest, Err(Error::NotFound)) => {}
                    (_, Err(e)) => {
                        panic!("round {round}, {policy:?}: a rotation racing a login failed: {e}")
                    }
                }
            }
            match (policy, result) {
                (OwnerLimitPolicy::EndOldest, Ok(())) => {
                    assert!(
                        c.load(login.id()).await.is_some(),
                        "round {round}: the login's session is stored"
                    );
                }
                (OwnerLimitPolicy::RefuseNew, Err(Error::TooManySessions { .. })) => {
                    assert_eq!(
                        rotated.len(),
                        RACERS,
                        "round {round}: a refused login ends nothing"
                    );
                    for s in &rotated {
                        assert!(
                            c.load(s.id()).await.is_some(),
                            "round {round}: a refused login ends nothing"
                        );
                    }
                }
                (_, other) => panic!(
                    "round {round}, {policy:?}: a login over the limit while sessions rotate got {other:?}"
                ),
            }
            assert_eq!(
                c.store.count_owner_sessions(&owner).await.unwrap(),
                RACERS as u64,
                "round {round}, {policy:?}: the owner has exactly the limit of sessions"
            );
        }
    }
}
