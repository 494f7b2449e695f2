//! The layer's promises, checked with real HTTP requests through an axum
//! router.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use common::{COOKIE, IDLE, TOGETHER, TestApp};
use session_core::{OwnerLimitPolicy, SessionId, SessionStore};
use session_tower::SessionFailure;

#[tokio::test]
async fn reading_without_a_cookie_creates_nothing_and_sets_no_cookie() {
    let app = TestApp::new();
    let reply = app.send("GET", "/get/user", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "<none>");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert_eq!(app.store.loads(), 0, "no cookie: nothing to load");
    assert_eq!(app.store.saves(), 0);
    assert_eq!(app.store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_handler_that_ignores_the_session_costs_no_store_access() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;
    let loads = app.store.loads();
    let reply = app.send("GET", "/noop", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(
        app.store.loads(),
        loads,
        "the cookie was parsed, not looked up"
    );
}

#[tokio::test]
async fn writing_without_a_cookie_creates_a_session_and_sets_the_cookie() {
    let app = TestApp::new();
    let reply = app.send("POST", "/put/user/ann", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.session_id().expect("cookie for the new session");
    assert_eq!(
        reply.session_cookie().unwrap(),
        app.cookie.set_cookie(&id.parse().unwrap()),
        "exactly the configured attributes"
    );
    assert_eq!(app.stored(&id).await.unwrap().get("user"), Some("ann"));

    let reply = app.send("GET", "/get/user", Some(&id)).await;
    assert_eq!(reply.body, "ann");
}

#[tokio::test]
async fn a_bogus_cookie_is_never_adopted() {
    let app = TestApp::new();
    let bogus = SessionId::generate().unwrap();

    let reply = app.send("GET", "/get/user", Some(bogus.as_str())).await;
    assert_eq!(reply.body, "<none>");
    assert!(reply.set_cookies.is_empty(), "a read creates nothing");
    assert_eq!(app.store.loads(), 1, "a well-formed ID is looked up");

    let reply = app
        .send("POST", "/put/user/eve", Some(bogus.as_str()))
        .await;
    let id = reply.session_id().expect("a write starts a session");
    assert_ne!(id, bogus.as_str(), "fixation defence: a fresh ID");
    assert!(app.stored(bogus.as_str()).await.is_none());
    assert_eq!(app.stored(&id).await.unwrap().get("user"), Some("eve"));
}

#[tokio::test]
async fn a_malformed_cookie_is_ignored_without_a_lookup() {
    let app = TestApp::new();
    for junk in ["%%%", "short", "\"quoted junk\"", &"A".repeat(300)] {
        let reply = app.send("GET", "/get/user", Some(junk)).await;
        assert_eq!(reply.status, StatusCode::OK, "{junk:?}");
        assert_eq!(reply.body, "<none>");
        assert!(reply.set_cookies.is_empty());
    }
    assert_eq!(app.store.loads(), 0, "malformed IDs never reach the store");

    let reply = app.send("POST", "/put/user/bob", Some("%%%")).await;
    assert!(reply.session_id().is_some());
    assert_eq!(app.store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn an_expired_session_reads_as_none_and_a_write_starts_a_new_one() {
    let app = TestApp::new();
    let old = app.session_with("user", "ann").await;
    app.clock.advance(IDLE + Duration::from_secs(1));

    let reply = app.send("GET", "/get/user", Some(&old)).await;
    assert_eq!(reply.body, "<none>");
    assert!(reply.set_cookies.is_empty());

    let reply = app.send("POST", "/put/user/ann", Some(&old)).await;
    let new = reply.session_id().expect("a new session");
    assert_ne!(new, old);
    assert!(app.stored(&old).await.is_none());
}

#[tokio::test]
async fn login_rotates_the_id_keeps_the_data_and_kills_the_old_cookie() {
    let app = TestApp::new();
    let anonymous = app.session_with("cart", "3-books").await;

    let reply = app.send("POST", "/login/ann", Some(&anonymous)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = reply.session_id().expect("the new ID is sent");
    assert_ne!(rotated, anonymous);

    assert!(app.stored(&anonymous).await.is_none(), "old ID dead");
    let session = app.stored(&rotated).await.unwrap();
    assert_eq!(session.get("cart"), Some("3-books"), "data kept");
    assert_eq!(
        session.get("user"),
        Some("ann"),
        "pending writes stored with it"
    );
    assert_eq!(session.owner(), Some("ann"));

    assert_eq!(
        app.send("GET", "/get/cart", Some(&anonymous)).await.body,
        "<none>"
    );
    assert_eq!(
        app.send("GET", "/get/cart", Some(&rotated)).await.body,
        "3-books"
    );
}

#[tokio::test]
async fn login_without_a_session_stores_a_new_rotated_one() {
    let app = TestApp::new();
    let reply = app.send("POST", "/login/bob", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.session_id().expect("cookie");
    assert_eq!(app.stored(&id).await.unwrap().owner(), Some("bob"));
    assert_eq!(app.store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_refused_login_reaches_the_handler_and_stores_nothing() {
    let app = TestApp::with(
        |c| c.with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew),
        |l| l,
    );
    let first = app.send("POST", "/login/ann", None).await;
    assert_eq!(first.status, StatusCode::OK);

    let second = app.send("POST", "/login/ann", None).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "the handler's answer");
    assert!(second.body.contains("active sessions"), "{}", second.body);
    assert!(second.set_cookies.is_empty(), "{second:?}");
    assert_eq!(app.store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn logout_destroys_the_session_and_removes_the_cookie() {
    let app = TestApp::new();
    let id = app.session_with("user", "ann").await;

    let reply = app.send("POST", "/logout", Some(&id)).await;
    assert_eq!(reply.body, "removed: true");
    assert_eq!(
        reply.session_cookie(),
        Some(app.cookie.removal_cookie().as_str()),
        "same name, path, domain and attributes, Max-Age=0"
    );
    assert!(reply.session_cookie().unwrap().contains("Max-Age=0"));
    assert!(app.stored(&id).await.is_none());
    assert_eq!(app.send("GET", "/get/user", Some(&id)).await.body, "<none>");
}

#[tokio::test]
async fn a_server_error_response_saves_nothing() {
    let app = TestApp::new();
    let reply = app.send("POST", "/fail", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(app.store.len().await.unwrap(), 0);

    let id = app.session_with("k", "before").await;
    let saves = app.store.saves();
    let reply = app.send("POST", "/fail", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies.is_empty());
    assert_eq!(app.store.saves(), saves);
    assert_eq!(app.stored(&id).await.unwrap().get("k"), Some("before"));
}

#[tokio::test]
async fn rotation_sends_the_new_cookie_even_on_a_server_error() {
    let app = TestApp::new();
    let old = app.session_with("k", "v").await;
    let reply = app.send("POST", "/rotate-then-fail", Some(&old)).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let new = reply
        .session_id()
        .expect("the rotated ID must reach the browser");
    assert_ne!(new, old);
    assert_eq!(app.stored(&new).await.unwrap().get("k"), Some("v"));
}

#[tokio::test]
async fn an_unchanged_session_is_touched_only_after_the_throttle_interval() {
    let app = TestApp::new(); // idle 600 s: touch interval 60 s
    let id = app.session_with("k", "v").await;
    let saved = app.stored(&id).await.unwrap();

    app.clock.advance(Duration::from_secs(59));
    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(reply.body, "v");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(
        app.store.touches(),
        0,
        "within the interval nothing is written"
    );
    assert_eq!(app.stored(&id).await.unwrap().meta(), saved.meta());

    app.clock.advance(Duration::from_secs(2));
    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(app.store.touches(), 1);
    assert_eq!(
        reply.session_id().as_deref(),
        Some(id.as_str()),
        "a touch re-sends the Max-Age cookie"
    );
    let touched = app.stored(&id).await.unwrap();
    assert_eq!(touched.version(), saved.version(), "no version bump");
    assert_eq!(
        touched.meta().last_active_ms,
        saved.meta().last_active_ms + 61_000
    );
    assert_eq!(touched.meta().expires_ms, saved.meta().expires_ms + 61_000);

    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert!(reply.set_cookies.is_empty());
    assert_eq!(app.store.touches(), 1, "just touched: not again");

    // Kept alive by the touch past the original deadline.
    app.clock.advance(Duration::from_secs(590));
    assert_eq!(app.send("GET", "/get/k", Some(&id)).await.body, "v");
}

#[tokio::test]
async fn the_touch_interval_is_configurable() {
    let app = TestApp::with(|c| c, |l| l.touch_interval(Duration::ZERO));
    let id = app.session_with("k", "v").await;
    app.clock.advance(Duration::from_millis(1));
    app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(app.store.touches(), 1);
}

#[tokio::test]
async fn a_save_re_sends_the_max_age_cookie() {
    let app = TestApp::new();
    let id = app.session_with("k", "v1").await;
    let reply = app.send("POST", "/put/k/v2", Some(&id)).await;
    assert_eq!(reply.session_id().as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn without_max_age_an_existing_session_gets_no_cookie_on_save() {
    let clock = session_core::ManualClock::new();
    let store = common::TestStore::new(session_core::SessionConfig::new(IDLE).with_clock(clock));
    let cookie = session_cookie::CookieConfig::new(COOKIE).unwrap();
    let router = axum::Router::new()
        .route(
            "/put",
            axum::routing::post(|s: session_tower::Session| async move {
                s.set("k", "v").await.unwrap();
            }),
        )
        .layer(session_tower::SessionLayer::new(store, cookie));
    let first = common::send(router.clone(), "POST", "/put", None).await;
    let id = first.session_id().expect("a new session sets the cookie");
    assert!(!first.session_cookie().unwrap().contains("Max-Age"));
    let again = common::send(router, "POST", "/put", Some(&id)).await;
    assert!(again.set_cookies.is_empty(), "nothing to slide");
}

#[tokio::test]
async fn a_concurrent_change_to_a_value_read_turns_the_response_into_409() {
    let app = TestApp::new();
    let id = app.session_with("balance", "10").await;

    let held = spawn_send(&app, "POST", "/read-wait-write/balance/withdrawn", &id);
    app.gate.wait_entered().await;
    let other = app.send("POST", "/put/balance/0", Some(&id)).await;
    assert_eq!(other.status, StatusCode::OK);
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::StaleRead)
    );
    assert!(reply.body.is_empty());
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(
        stored.get("balance"),
        Some("0"),
        "the other request's write stands"
    );
    assert_eq!(
        stored.get("withdrawn"),
        None,
        "the stale decision was not stored"
    );
}

#[tokio::test]
async fn a_concurrent_change_to_other_keys_is_merged_by_replaying_the_writes() {
    let app = TestApp::new();
    let id = app.session_with("balance", "10").await;

    let held = spawn_send(&app, "POST", "/read-wait-write/balance/note", &id);
    app.gate.wait_entered().await;
    assert_eq!(
        app.send("POST", "/put/theme/dark", Some(&id)).await.status,
        StatusCode::OK
    );
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("theme"), Some("dark"));
    assert_eq!(stored.get("note"), Some("written by the held request"));
    assert_eq!(stored.get("balance"), Some("10"));
}

#[tokio::test]
async fn reading_back_a_value_the_handler_wrote_itself_is_not_a_stale_read() {
    let app = TestApp::new();
    let id = app.session_with("k", "original").await;

    let held = spawn_send(&app, "POST", "/write-read-wait/k", &id);
    app.gate.wait_entered().await;
    assert_eq!(
        app.send("POST", "/put/k/theirs", Some(&id)).await.status,
        StatusCode::OK
    );
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "mine");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(
        stored.get("k"),
        Some("mine"),
        "the later write wins, replayed"
    );
    assert_eq!(stored.get("after"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_counter_updates_lose_nothing() {
    let app = TestApp::new();
    let first = app.send("POST", "/count", None).await;
    assert_eq!(first.body, "1");
    let id = first.session_id().unwrap();
    let saves = app.store.saves();

    // Every request loads version 1 and increments to 2 before any saves:
    // all but one conflict, reload and re-run the closure.
    let tasks: Vec<_> = (0..TOGETHER)
        .map(|_| spawn_send(&app, "POST", "/count-together", &id))
        .collect();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, "2", "each closure first ran on version 1");
    }
    let stored = app.stored(&id).await.unwrap();
    let together = u64::try_from(TOGETHER).unwrap();
    assert_eq!(stored.get_as::<u64>("visits").unwrap(), Some(together + 1));
    assert!(
        app.store.saves() - saves > together,
        "the conflicts were real and resolved by replay"
    );
}

#[tokio::test]
async fn a_single_allowed_attempt_makes_a_real_conflict_a_409() {
    let app = TestApp::with(|c| c, |l| l.max_save_attempts(1));
    let id = app.send("POST", "/count", None).await.session_id().unwrap();

    let held = spawn_send(&app, "POST", "/count-wait", &id);
    app.gate.wait_entered().await;
    assert_eq!(app.send("POST", "/count", Some(&id)).await.body, "2");
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::Contention)
    );
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get_as::<u64>("visits").unwrap(), Some(2));
}

#[tokio::test]
async fn a_write_racing_a_logout_is_refused_with_409_and_the_session_stays_ended() {
    let app = TestApp::new();
    let id = app.session_with("user", "ann").await;

    let held = spawn_send(&app, "POST", "/load-wait-write/late", &id);
    app.gate.wait_entered().await;
    assert_eq!(
        app.send("POST", "/logout", Some(&id)).await.status,
        StatusCode::OK
    );
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "the write was not stored, and the response says so: {reply:?}"
    );
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::Ended)
    );
    assert!(reply.body.is_empty());
    assert!(
        reply.set_cookies.is_empty(),
        "no cookie: a removal cookie could delete a newer one ({reply:?})"
    );
    assert!(app.stored(&id).await.is_none(), "not resurrected");
    assert_eq!(app.store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_write_racing_a_rotation_is_refused_with_409_not_silently_lost() {
    let app = TestApp::new();
    let id = app.session_with("cart", "3-books").await;

    // A request changes the session; meanwhile another tab signs in on the
    // same cookie, which rotates the ID.
    let held = spawn_send(&app, "POST", "/load-wait-write/late", &id);
    app.gate.wait_entered().await;
    let login = app.send("POST", "/login/ann", Some(&id)).await;
    assert_eq!(login.status, StatusCode::OK);
    let rotated = login.session_id().expect("the new cookie");
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::Ended)
    );
    assert!(
        reply.set_cookies.is_empty(),
        "nothing that could replace or delete the browser's new cookie: {reply:?}"
    );
    assert!(app.stored(&id).await.is_none(), "the old ID stays dead");
    let stored = app.stored(&rotated).await.unwrap();
    assert_eq!(stored.get("late"), None, "not stored, and the client knows");
    assert_eq!(stored.get("user"), Some("ann"));
    assert_eq!(stored.get("cart"), Some("3-books"));

    // The retry, with the browser's new cookie, goes through.
    let retry = app.send("POST", "/put/late/write", Some(&rotated)).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        app.stored(&rotated).await.unwrap().get("late"),
        Some("write")
    );
}

#[tokio::test]
async fn a_read_racing_a_logout_answers_as_the_handler_chose() {
    let app = TestApp::new();
    let id = app.session_with("user", "ann").await;

    let held = spawn_send(&app, "GET", "/read-wait/user", &id);
    app.gate.wait_entered().await;
    app.send("POST", "/logout", Some(&id)).await;
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "nothing was lost");
    assert_eq!(reply.body, "ann");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    assert!(app.stored(&id).await.is_none());
}

/// A well-formed ID whose session has been logged out.
async fn dead_id(app: &TestApp) -> String {
    let id = app.session_with("user", "mallory").await;
    let reply = app.send("POST", "/logout", Some(&id)).await;
    assert_eq!(reply.body, "removed: true");
    id
}

#[tokio::test]
async fn a_dead_cookie_listed_first_does_not_hide_the_live_one() {
    let app = TestApp::new();
    let live = app.session_with("user", "ann").await;
    let dead = dead_id(&app).await;

    for cookies in [
        vec![format!("{COOKIE}={dead}; {COOKIE}={live}")],
        vec![format!("{COOKIE}={dead}"), format!("{COOKIE}={live}")],
        vec![format!(
            "{COOKIE}=junk; {COOKIE}={dead}; other=1; {COOKIE}={live}"
        )],
    ] {
        let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
        let loads = app.store.loads();
        let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &cookies).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ann", "{cookies:?}");
        assert_eq!(
            app.store.loads() - loads,
            2,
            "the dead one, then the live one"
        );
        assert!(
            reply.set_cookies.is_empty(),
            "no removal cookie for the dead one: it would delete the live one ({reply:?})"
        );
    }
}

#[tokio::test]
async fn a_corrupt_record_behind_an_earlier_cookie_does_not_hide_the_live_one() {
    let app = TestApp::new();
    let live = app.session_with("user", "ann").await;
    let broken = app.session_with("user", "mallory").await;
    app.store
        .corrupt
        .lock()
        .unwrap()
        .push(broken.parse().unwrap());

    let both = format!("{COOKIE}={broken}; {COOKIE}={live}");
    let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&both]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "ann");

    // Logout then ends the live session (the one this request loaded), and
    // the corrupt one stays for its own expiry.
    let reply = common::send_cookies(app.router.clone(), "POST", "/logout", &[&both]).await;
    assert_eq!(reply.body, "removed: true");
    assert!(app.stored(&live).await.is_none());

    // Alone, the corrupt record is the handler's to answer.
    let reply = app.send("GET", "/get/user", Some(&broken)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(reply.body.contains("corrupt"), "{}", reply.body);
}

#[tokio::test]
async fn a_single_cookie_or_a_live_first_one_costs_one_load() {
    let app = TestApp::new();
    let live = app.session_with("user", "ann").await;
    let dead = dead_id(&app).await;

    for cookie in [
        format!("{COOKIE}={live}"),
        format!("{COOKIE}={live}; {COOKIE}={dead}"),
    ] {
        let loads = app.store.loads();
        let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
        assert_eq!(reply.body, "ann");
        assert_eq!(app.store.loads() - loads, 1, "{cookie}");
    }
}

#[tokio::test]
async fn writes_behind_a_stale_cookie_go_to_the_live_session() {
    let app = TestApp::new();
    let live = app.session_with("user", "ann").await;
    let dead = dead_id(&app).await;
    let cookie = format!("{COOKIE}={dead}; {COOKIE}={live}");

    let reply =
        common::send_cookies(app.router.clone(), "POST", "/put/theme/dark", &[&cookie]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.session_id().as_deref(),
        Some(live.as_str()),
        "the Max-Age cookie is re-sent for the live session, and only for it"
    );
    assert_eq!(reply.set_cookies.len(), 1, "{reply:?}");
    assert_eq!(app.store.len().await.unwrap(), 1, "no new session");
    let stored = app.stored(&live).await.unwrap();
    assert_eq!(stored.get("theme"), Some("dark"));
    assert_eq!(stored.get("user"), Some("ann"));
}

#[tokio::test]
async fn login_behind_a_stale_cookie_rotates_the_live_session() {
    let app = TestApp::new();
    let live = app.session_with("cart", "3-books").await;
    let dead = dead_id(&app).await;
    let cookie = format!("{COOKIE}={dead}; {COOKIE}={live}");

    let reply = common::send_cookies(app.router.clone(), "POST", "/login/ann", &[&cookie]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let rotated = reply.session_id().expect("the new cookie");
    assert!(app.stored(&live).await.is_none(), "the old ID is dead");
    let stored = app.stored(&rotated).await.unwrap();
    assert_eq!(stored.get("cart"), Some("3-books"), "the data kept");
    assert_eq!(stored.owner(), Some("ann"));

    // The browser still sends the stale cookie first, then the new one.
    let cookie = format!("{COOKIE}={dead}; {COOKIE}={rotated}");
    let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
    assert_eq!(reply.body, "ann", "still signed in");
}

#[tokio::test]
async fn when_every_cookie_is_dead_there_is_no_session_and_none_is_adopted() {
    let app = TestApp::new();
    let (one, two) = (dead_id(&app).await, dead_id(&app).await);
    let cookie = format!("{COOKIE}={one}; {COOKIE}={two}");

    let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
    assert_eq!(reply.body, "<none>");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");

    let reply = common::send_cookies(app.router.clone(), "POST", "/put/k/v", &[&cookie]).await;
    let fresh = reply.session_id().expect("a new session");
    assert!(
        fresh != one && fresh != two,
        "a client's ID is never adopted"
    );
}

#[tokio::test]
async fn logout_ends_every_session_the_cookies_name() {
    let app = TestApp::new();
    let first = app.session_with("user", "ann").await;
    let second = app.session_with("user", "ann-elsewhere").await;
    let dead = dead_id(&app).await;
    let cookie = format!("{COOKIE}={dead}; {COOKIE}={first}; {COOKIE}={second}");

    // Without loading first, and after loading.
    for uri in ["/logout", "/cache/logout"] {
        let reply = common::send_cookies(app.router.clone(), "POST", uri, &[&cookie]).await;
        assert_eq!(reply.status, StatusCode::OK);
        if uri == "/logout" {
            assert_eq!(reply.body, "removed: true");
            assert_eq!(
                reply.set_cookies,
                [app.cookie.removal_cookie()],
                "one removal cookie, for the configured path and domain"
            );
        } else {
            assert!(reply.set_cookies.is_empty(), "nothing left to remove");
        }
        assert!(app.stored(&first).await.is_none());
        assert!(
            app.stored(&second).await.is_none(),
            "a later live cookie must not keep the browser signed in"
        );
        let after = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
        assert_eq!(after.body, "<none>");
    }

    // After loading: the loaded session and the cookies not yet looked up.
    let first = app.session_with("user", "ann").await;
    let second = app.session_with("user", "ann-elsewhere").await;
    let cookie = format!("{COOKIE}={dead}; {COOKIE}={first}; {COOKIE}={second}");
    let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
    assert_eq!(reply.body, "ann");
    let destroys = app.store.destroys();
    let reply = common::send_cookies(app.router.clone(), "POST", "/read-logout", &[&cookie]).await;
    assert_eq!(reply.body, "ann, removed: true");
    assert_eq!(
        app.store.destroys() - destroys,
        2,
        "the dead cookie, already looked up, is not destroyed again"
    );
    assert!(app.stored(&first).await.is_none());
    assert!(app.stored(&second).await.is_none());
    assert_eq!(app.store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn at_most_max_candidates_cookies_are_looked_up() {
    let app = TestApp::new();
    let live = app.session_with("user", "ann").await;
    let dead = dead_id(&app).await;
    let mut cookies = vec![format!("{COOKIE}={dead}"); session_cookie::MAX_CANDIDATES];
    cookies.push(format!("{COOKIE}={live}"));
    // Distinct dead IDs, so that none is skipped as a repeat.
    for cookie in &mut cookies[1..session_cookie::MAX_CANDIDATES] {
        *cookie = format!("{COOKIE}={}", SessionId::generate().unwrap().as_str());
    }
    let cookie = cookies.join("; ");
    let loads = app.store.loads();
    let reply = common::send_cookies(app.router.clone(), "GET", "/get/user", &[&cookie]).await;
    assert_eq!(reply.body, "<none>", "the live one is beyond the bound");
    assert_eq!(
        app.store.loads() - loads,
        u64::try_from(session_cookie::MAX_CANDIDATES).unwrap()
    );
}

#[tokio::test]
async fn a_load_failure_is_the_handlers_to_answer() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;
    app.store.down.store(true, Ordering::SeqCst);
    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.body.contains("the test store is down"),
        "{}",
        reply.body
    );
    assert!(reply.set_cookies.is_empty());
}

#[tokio::test]
async fn a_failed_save_becomes_an_empty_503_and_never_a_panic() {
    let app = TestApp::new();
    let id = app.session_with("k", "v1").await;
    app.store.saves_down.store(true, Ordering::SeqCst);

    let reply = app.send("POST", "/put/k/v2", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::Unavailable)
    );
    assert!(reply.set_cookies.is_empty());

    let reply = app.send("POST", "/put/k/v2", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.set_cookies.is_empty(),
        "no cookie for a session never stored"
    );

    app.store.saves_down.store(false, Ordering::SeqCst);
    assert_eq!(app.stored(&id).await.unwrap().get("k"), Some("v1"));
    assert_eq!(app.store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_failed_touch_does_not_fail_the_response() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;
    app.clock.advance(Duration::from_secs(61));
    app.store.saves_down.store(true, Ordering::SeqCst);
    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(app.store.touch_attempts(), 1, "a touch was due and tried");
    assert_eq!(app.store.touches(), 0, "and it failed");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "v");
    assert!(reply.set_cookies.is_empty(), "nothing was slid: {reply:?}");
}

#[tokio::test]
async fn a_route_outside_the_layer_gets_a_500_not_a_panic() {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|_: session_tower::Session| async { "unreachable" }),
    );
    let reply = common::send(router, "GET", "/", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn the_layer_works_for_any_tower_service() {
    use axum::http::{Request, Response};
    use tower::{Layer as _, ServiceExt as _};

    let store = common::TestStore::new(session_core::SessionConfig::new(IDLE));
    let service = session_tower::SessionLayer::new(store.clone(), common::cookie_config()).layer(
        tower::service_fn(|request: Request<String>| async move {
            let session = request
                .extensions()
                .get::<session_tower::Session>()
                .cloned()
                .expect("the layer inserts the session");
            session.set("body", request.into_body()).await?;
            Ok::<_, session_core::Error>(Response::new(String::from("ok")))
        }),
    );
    let response = service
        .oneshot(Request::new("hello".to_owned()))
        .await
        .unwrap();
    assert_eq!(response.body(), "ok");
    assert!(response.headers().contains_key("set-cookie"));
    assert_eq!(store.len().await.unwrap(), 1);
}

/// Send a request with a session cookie from a spawned task.
fn spawn_send(
    app: &TestApp,
    method: &'static str,
    uri: &'static str,
    cookie: &str,
) -> tokio::task::JoinHandle<common::Reply> {
    let router = app.router.clone();
    let cookie = cookie.to_owned();
    tokio::spawn(async move { common::send(router, method, uri, Some(&cookie)).await })
}

/// POST `uri` (a handler that waits at the gate) with `cookie`, and while
/// it waits, POST `meanwhile` with the same cookie; the first request's
/// reply.
async fn held_across(
    app: &TestApp,
    uri: &'static str,
    cookie: &str,
    meanwhile: &str,
) -> common::Reply {
    let held = spawn_send(app, "POST", uri, cookie);
    app.gate.wait_entered().await;
    app.send("POST", meanwhile, Some(cookie)).await;
    app.gate.release();
    held.await.expect("the held request finishes")
}

#[tokio::test]
async fn a_read_of_a_value_an_update_produced_is_checked_on_replay() {
    let app = TestApp::new();
    let id = app.session_with("price", "10").await;

    let held = spawn_send(&app, "POST", "/quote-wait-charge", &id);
    app.gate.wait_entered().await;
    assert_eq!(
        app.send("POST", "/put/price/99", Some(&id)).await.status,
        StatusCode::OK
    );
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::StaleRead)
    );
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("price"), Some("99"));
    assert_eq!(stored.get("quote"), None, "nothing of the request stored");
    assert_eq!(
        stored.get("charged"),
        None,
        "the stale charge was not stored"
    );
}

#[tokio::test]
async fn a_read_before_a_rotation_is_still_checked_by_the_final_save() {
    let app = TestApp::new();
    let id = app.session_with("price", "10").await;

    let reply = app
        .send("POST", "/read-rotate-meddle-charge", Some(&id))
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::StaleRead)
    );
    let rotated = reply
        .session_id()
        .expect("the rotation's cookie still goes out");
    let stored = app.stored(&rotated).await.unwrap();
    assert_eq!(stored.get("price"), Some("99"));
    assert_eq!(
        stored.get("charged"),
        None,
        "not charged at the stale price"
    );
}

#[tokio::test]
async fn an_update_that_changed_nothing_must_change_nothing_on_replay() {
    let app = TestApp::new();
    let id = app.session_with("balance", "5").await;

    let reply = held_across(&app, "/withdraw-wait/10", &id, "/put/balance/50").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::StaleRead)
    );
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(
        stored.get("balance"),
        Some("50"),
        "no withdrawal behind a 'declined'"
    );
    assert_eq!(stored.get("attempted"), None);
}

#[tokio::test]
async fn an_update_that_changed_something_must_change_something_on_replay() {
    let app = TestApp::new();
    let id = app.session_with("balance", "20").await;

    let reply = held_across(&app, "/withdraw-wait/10", &id, "/put/balance/5").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("balance"), Some("5"));
    assert_eq!(stored.get("attempted"), None);
}

#[tokio::test]
async fn an_update_whose_outcome_holds_is_replayed_on_the_fresh_value() {
    let app = TestApp::new();
    let id = app.session_with("balance", "20").await;

    let reply = held_across(&app, "/withdraw-wait/10", &id, "/put/balance/15").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "withdrew");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("balance"), Some("5"), "15 - 10: nothing lost");
    assert_eq!(stored.get("attempted"), Some("yes"));
}

#[tokio::test]
async fn a_try_update_that_fails_leaves_nothing_behind() {
    let app = TestApp::new();
    let id = app.session_with("balance", "5").await;

    let held = spawn_send(&app, "POST", "/try-withdraw-wait/10", &id);
    app.gate.wait_entered().await;
    app.gate.release();
    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "declined");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("balance"), Some("5"));
    assert_eq!(stored.get("pending"), None, "the failed change is dropped");
    assert_eq!(
        stored.get("attempted"),
        Some("yes"),
        "the other write is kept"
    );
}

#[tokio::test]
async fn a_try_update_that_failed_must_fail_on_replay() {
    let app = TestApp::new();
    let id = app.session_with("balance", "5").await;

    let reply = held_across(&app, "/try-withdraw-wait/10", &id, "/put/balance/50").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::StaleRead)
    );
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(
        stored.get("balance"),
        Some("50"),
        "no withdrawal behind a 'declined'"
    );
    assert_eq!(stored.get("pending"), None);
    assert_eq!(stored.get("attempted"), None);
}

#[tokio::test]
async fn a_try_update_whose_outcome_holds_is_replayed_on_the_fresh_value() {
    let app = TestApp::new();
    let id = app.session_with("balance", "20").await;

    let reply = held_across(&app, "/try-withdraw-wait/10", &id, "/put/balance/15").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "withdrew");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("balance"), Some("5"), "15 - 10: nothing lost");
    assert_eq!(stored.get("pending"), Some("yes"));
    assert_eq!(stored.get("attempted"), Some("yes"));
}

#[tokio::test]
async fn contains_key_depends_on_presence_only() {
    let app = TestApp::new();
    let id = app.session_with("flag", "one").await;

    let reply = held_across(&app, "/has-wait-write/flag", &id, "/put/flag/two").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "present: true");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("flag"), Some("two"));
    assert_eq!(stored.get("note"), Some("written"));
}

#[tokio::test]
async fn a_key_checked_for_and_removed_meanwhile_is_a_stale_read() {
    let app = TestApp::new();
    let id = app.session_with("flag", "one").await;

    let reply = held_across(&app, "/has-wait-write/flag", &id, "/remove/flag").await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    let stored = app.stored(&id).await.unwrap();
    assert!(!stored.contains_key("flag"));
    assert_eq!(stored.get("note"), None);
}

#[tokio::test]
async fn a_touch_that_finds_the_session_rotated_away_sends_no_cookie() {
    let app = TestApp::new();
    let id = app.session_with("user", "ann").await;
    app.clock.advance(Duration::from_secs(61)); // due for a touch

    // A read is in flight when a sign-in on the same cookie rotates the ID
    // and hands the browser a new cookie.
    let held = spawn_send(&app, "GET", "/read-wait/user", &id);
    app.gate.wait_entered().await;
    let login = app.send("POST", "/login/ann", Some(&id)).await;
    assert!(login.session_id().is_some());
    app.gate.release();

    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ann");
    assert_eq!(app.store.touch_attempts(), 1, "the touch was tried");
    assert!(
        reply.set_cookies.is_empty(),
        "a removal cookie would delete the browser's new cookie: {reply:?}"
    );
}

#[tokio::test]
async fn destroy_without_a_live_session_sends_no_removal_cookie() {
    let app = TestApp::new();
    let reply = app.send("POST", "/logout", None).await;
    assert_eq!(reply.body, "removed: false");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");

    let bogus = SessionId::generate().unwrap();
    let reply = app.send("POST", "/logout", Some(bogus.as_str())).await;
    assert_eq!(reply.body, "removed: false");
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
}

#[tokio::test]
async fn a_handle_used_after_its_response_refuses_everything() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;

    let reply = app.send("POST", "/late/no", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies.is_empty());
    app.gate.release();
    let report = app.gate.reports().await;
    assert_eq!(
        report,
        [
            "get: refused",
            "set: refused",
            "update: refused",
            "cycle_id: refused",
            "destroy: refused"
        ]
    );
    let stored = app.stored(&id).await.expect("not destroyed");
    assert_eq!(stored.get("k"), Some("v"), "not changed");
    assert_eq!(app.store.len().await.unwrap(), 1, "not rotated");
}

#[tokio::test]
async fn a_loaded_handle_can_still_be_read_after_its_response() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;

    app.send("POST", "/late/load", Some(&id)).await;
    app.gate.release();
    let report = app.gate.reports().await;
    assert_eq!(report[0], "get: ok Some(\"v\")");
    assert!(
        report[1..].iter().all(|line| line.ends_with(": refused")),
        "{report:?}"
    );
    assert_eq!(app.stored(&id).await.unwrap().get("k"), Some("v"));
}

#[tokio::test]
async fn a_stray_load_does_not_hold_up_the_response() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;
    app.store.hold_loads.store(true, Ordering::SeqCst);

    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        app.send("GET", "/stray-load", Some(&id)),
    )
    .await
    .expect("the response must not wait for the stray task's load");
    assert_eq!(reply.status, StatusCode::OK);
    app.gate.release();
    assert_eq!(app.gate.reports().await, ["get: refused"]);
}

#[tokio::test]
async fn a_rotation_that_meets_a_concurrent_change_replays_the_pending_writes() {
    let app = TestApp::new();
    let id = app.session_with("cart", "3-books").await;

    let reply = held_across(&app, "/login-wait/ann", &id, "/put/theme/dark").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let rotated = reply.session_id().expect("the new cookie");
    assert_ne!(rotated, id);
    assert!(app.stored(&id).await.is_none(), "the old ID is dead");
    let stored = app.stored(&rotated).await.unwrap();
    assert_eq!(
        stored.get("theme"),
        Some("dark"),
        "the concurrent write kept"
    );
    assert_eq!(
        stored.get("user"),
        Some("ann"),
        "the pending write replayed"
    );
    assert_eq!(stored.get("cart"), Some("3-books"));
    assert_eq!(stored.owner(), Some("ann"));
}

#[tokio::test]
async fn too_large_session_data_is_a_500_that_stores_nothing() {
    let app = TestApp::with(|c| c.with_max_data_size(64), |l| l);
    let big = "x".repeat(100);
    let reply = app.send("POST", &format!("/put/k/{big}"), None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::Refused)
    );
    assert!(reply.body.is_empty());
    assert!(reply.set_cookies.is_empty());
    assert_eq!(app.store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn a_non_finite_number_is_refused_by_insert_not_stored_as_null() {
    let app = TestApp::new();
    for value in ["NaN", "inf", "-inf"] {
        let reply = app
            .send("POST", &format!("/put-number/x/{value}"), None)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{value}: {reply:?}");
        assert!(reply.body.contains("finite"), "{reply:?}");
        assert!(reply.set_cookies.is_empty(), "{reply:?}");
    }
    assert_eq!(app.store.len().await.unwrap(), 0, "nothing was stored");
    let reply = app.send("POST", "/put-number/x/1.5", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply.session_id().expect("stored");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get_as::<f64>("x").unwrap(), Some(1.5));
}

#[tokio::test]
async fn a_client_error_response_still_saves() {
    let app = TestApp::new();
    let reply = app.send("POST", "/put-then-404/k/v", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "4xx is not 5xx");
    let id = reply.session_id().expect("saved, so the cookie is set");
    assert_eq!(app.stored(&id).await.unwrap().get("k"), Some("v"));
}

#[tokio::test]
async fn an_owner_limit_met_at_the_end_of_the_request_is_a_409() {
    let app = TestApp::with(
        |c| c.with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew),
        |l| l,
    );
    assert_eq!(
        app.send("POST", "/bind/ann", None).await.status,
        StatusCode::OK
    );
    let reply = app.send("POST", "/bind/ann", None).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{reply:?}");
    assert_eq!(
        reply.response_extensions.get::<SessionFailure>(),
        Some(&SessionFailure::TooManySessions)
    );
    assert!(reply.set_cookies.is_empty());
    assert_eq!(app.store.len().await.unwrap(), 1);
}

#[tokio::test]
async fn a_touch_interval_beyond_the_idle_timeout_is_clamped() {
    // Idle 600 s: an interval of an hour would never touch a live session.
    let app = TestApp::with(|c| c, |l| l.touch_interval(Duration::from_secs(3600)));
    let id = app.session_with("k", "v").await;
    app.clock.advance(Duration::from_secs(300));
    app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(app.store.touches(), 1, "clamped to half the idle timeout");
    app.clock.advance(Duration::from_secs(599));
    assert_eq!(app.send("GET", "/get/k", Some(&id)).await.body, "v");
}

#[tokio::test]
async fn an_update_closure_that_panics_leaves_nothing_half_applied() {
    let app = TestApp::new();
    let reply = app.send("POST", "/half-update", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "panicked: true, half: None");
    let id = reply.session_id().expect("the set before it is saved");
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("a"), Some("1"));
    assert_eq!(stored.get("half"), None);
}

#[tokio::test]
async fn an_update_closure_that_panics_on_replay_is_a_500_not_a_dropped_connection() {
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;

    let held = spawn_send(&app, "POST", "/update-wait-boom", &id);
    app.gate.wait_entered().await;
    app.send("POST", "/put/boom/yes", Some(&id)).await;
    app.gate.release();

    let reply = held.await.expect("the request must not panic");
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.get("updated"), None);
    assert_eq!(stored.get("boom"), Some("yes"));
}

#[tokio::test]
async fn a_response_that_sets_the_session_cookie_is_not_stored_by_shared_caches() {
    let app = TestApp::new();
    let reply = common::send_full(app.router.clone(), "POST", "/cache/default", None).await;
    assert!(reply.headers.contains_key("set-cookie"));
    assert_eq!(reply.headers["cache-control"], "private, no-store");
    assert_eq!(reply.headers["vary"], "Cookie");

    let reply = common::send_full(app.router.clone(), "POST", "/cache/own", None).await;
    assert!(reply.headers.contains_key("set-cookie"));
    assert_eq!(
        reply.headers["cache-control"], "private, max-age=60",
        "the handler's own private choice stands"
    );

    for (mode, expected) in [
        ("no-store", "no-store"),
        ("public", "private, max-age=600"),
        ("s-maxage", "private, max-age=60"),
        (
            "no-cache",
            "private, no-cache=\"Set-Cookie, X-Y\", max-age=0",
        ),
        ("qualified-private", "private, max-age=60"),
        ("two-headers", "private, max-age=600, immutable"),
    ] {
        let reply =
            common::send_full(app.router.clone(), "POST", &format!("/cache/{mode}"), None).await;
        assert!(reply.headers.contains_key("set-cookie"), "{mode}");
        let values: Vec<_> = reply.headers.get_all("cache-control").iter().collect();
        assert_eq!(values, [expected], "{mode}: no shared cache may store it");
    }

    // Fields aimed at CDNs override Cache-Control there (RFC 9213): they
    // must not let a CDN store the cookie either.
    let reply = common::send_full(app.router.clone(), "POST", "/cache/cdn", None).await;
    assert!(reply.headers.contains_key("set-cookie"));
    assert_eq!(reply.headers["cache-control"], "no-store");
    for name in [
        "cdn-cache-control",
        "cloudflare-cdn-cache-control",
        "surrogate-control",
        "edge-control",
    ] {
        let values: Vec<_> = reply.headers.get_all(name).iter().collect();
        assert_eq!(values, ["no-store"], "{name}");
    }

    // The removal cookie too: a cached one would sign out whoever got it.
    let id = app.session_with("k", "v").await;
    let reply = common::send_full(app.router.clone(), "POST", "/cache/logout", Some(&id)).await;
    assert!(reply.headers.contains_key("set-cookie"));
    assert_eq!(reply.headers["cache-control"], "private, max-age=600");

    let reply = common::send_full(app.router.clone(), "GET", "/noop", None).await;
    assert!(!reply.headers.contains_key("cache-control"));
    assert!(
        !reply.headers.contains_key("vary"),
        "did not depend on the session"
    );

    let reply = common::send_full(app.router.clone(), "GET", "/get/k", None).await;
    assert!(
        !reply.headers.contains_key("cache-control"),
        "no cookie set"
    );
    assert_eq!(reply.headers["vary"], "Cookie", "depended on the session");
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_back_off_with_growing_sleeps() {
    for attempts in [1, 7] {
        let app = TestApp::with(|c| c, |l| l.max_save_attempts(attempts));
        let id = app.session_with("k", "v").await;
        app.store.always_conflict.store(true, Ordering::SeqCst);
        let saves = app.store.saves();
        let started = tokio::time::Instant::now();

        let reply = app.send("POST", "/put/k/w", Some(&id)).await;
        assert_eq!(reply.status, StatusCode::CONFLICT);
        assert_eq!(
            reply.response_extensions.get::<SessionFailure>(),
            Some(&SessionFailure::Contention)
        );
        assert_eq!(
            app.store.saves() - saves,
            u64::from(attempts),
            "exactly the limit"
        );
        // Between attempt n and n + 1 it sleeps at least half of
        // min(2^(n-1), 50) ms: 0.5 + 1 + 2 + 4 + 8 + 16 ms for 7 attempts.
        let slept = started.elapsed();
        if attempts == 1 {
            assert_eq!(slept, Duration::ZERO, "no retry, no sleep");
        } else {
            assert!(slept >= Duration::from_micros(31_500), "{slept:?}");
            assert!(slept <= Duration::from_millis(63), "{slept:?}");
        }
        assert_eq!(app.stored(&id).await.unwrap().get("k"), Some("v"));
    }
}

#[tokio::test]
async fn an_inner_service_error_ends_the_session_handle_and_saves_nothing() {
    use axum::http::{Request, Response};
    use tower::{Layer as _, ServiceExt as _};

    let store = common::TestStore::new(session_core::SessionConfig::new(IDLE));
    let (keep, kept) = tokio::sync::oneshot::channel();
    let keep = std::sync::Arc::new(std::sync::Mutex::new(Some(keep)));
    let service = session_tower::SessionLayer::new(store.clone(), common::cookie_config()).layer(
        tower::service_fn(move |request: Request<String>| {
            let session = request
                .extensions()
                .get::<session_tower::Session>()
                .cloned()
                .expect("the layer inserts the session");
            if let Some(keep) = keep.lock().unwrap().take() {
                let _ = keep.send(session.clone());
            }
            async move {
                session.set("k", "v").await?;
                Err::<Response<String>, _>(session_core::Error::backend_msg("inner failure"))
            }
        }),
    );
    let result = service.oneshot(Request::new(String::new())).await;
    assert!(result.is_err());
    assert_eq!(store.len().await.unwrap(), 0);
    let session = kept.await.unwrap();
    assert!(matches!(
        session.set("k", "late").await,
        Err(session_core::Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_not_quoted_in_the_error() {
    use axum::routing::{get, post};
    use session_tower::{Session, SessionLayer};
    use std::sync::Arc;

    const SECRET: &str = "csrf-8KZp1x-s3cret";
    async fn plant(session: Session) -> &'static str {
        session.set("token", SECRET).await.unwrap();
        session
            .insert("nested", &serde_json::json!([[SECRET]]))
            .await
            .unwrap();
        "ok"
    }
    // Typed reads that do not fit: the errors are what a handler logs.
    async fn misread(session: Session) -> String {
        let as_number = session.get_as::<u64>("token").await.unwrap_err();
        let as_bool = session.get_as::<Vec<Vec<bool>>>("nested").await;
        let as_bool = match as_bool {
            Err(e) => e,
            Ok(_) => panic!("should not fit"),
        };
        #[derive(serde::Deserialize, Debug)]
        enum Mode {
            Light,
        }
        let as_enum = session.get_as::<Mode>("token").await.unwrap_err();
        format!("{as_number} | {as_number:?} | {as_bool} | {as_enum} | {as_enum:?}")
    }
    let store = Arc::new(session_memory::MemoryStore::new(600));
    let router = axum::Router::new()
        .route("/plant", post(plant))
        .route("/misread", get(misread))
        .layer(SessionLayer::new(store, common::cookie_config()));
    let planted = common::send(router.clone(), "POST", "/plant", None).await;
    let id = planted.session_id().expect("a session");
    let reply = common::send(router, "GET", "/misread", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.body.contains(SECRET), "{}", reply.body);
    // What was wrong is still said.
    assert!(reply.body.contains("expected u64"), "{}", reply.body);
    assert!(reply.body.contains("\"token\""), "{}", reply.body);
    assert!(reply.body.contains("expected a boolean"), "{}", reply.body);
}

#[tokio::test]
async fn absurd_stored_timestamps_do_not_panic_the_layer() {
    // Promise 7: whatever metadata a store hands back (a corrupt row, a
    // process with a wild clock), the request is answered.
    let app = TestApp::new();
    let id = app.session_with("k", "v").await;
    app.store.absurd_last_active.store(true, Ordering::SeqCst);
    let reply = app.send("GET", "/get/k", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "v");
}
