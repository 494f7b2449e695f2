//! Lost replies and late commands, made on purpose by a proxy between one
//! store and a private `redis-server` (see `common::FaultyProxy`); a second
//! store talks to the same server directly, playing another process. Runs
//! when `SESSION_TEST_REDIS_URL` is set, since it needs the same Redis
//! installation.
//!
//! fred re-sends a command whose connection broke before the reply came,
//! and a command it gave up on may still reach Redis later. These tests
//! check that neither applies a write twice, undoes a later write, loses a
//! session from revocation, or leaves an owner locked.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use session_core::testing::service_url;
use session_core::{
    Clock, Error, ManualClock, OwnerLimitPolicy, Session, SessionConfig, SessionStore,
    SessionStoreExt,
};
use session_redis::fred::prelude::ReconnectPolicy;
use session_redis::{RedisSessionStore, RedisSessionStoreBuilder};
use tokio::sync::oneshot;

use common::{Fault, FaultyProxy, PrivateRedis};

const MINUTE: Duration = Duration::from_secs(60);

struct Rig {
    proxy: FaultyProxy,
    /// Talks to Redis through the proxy.
    faulty: RedisSessionStore,
    /// Talks to Redis directly: another process of the same application.
    direct: RedisSessionStore,
    clock: ManualClock,
    _server: PrivateRedis,
}

impl Rig {
    async fn start(
        tweak: impl Fn(SessionConfig) -> SessionConfig,
        faulty: impl FnOnce(RedisSessionStoreBuilder) -> RedisSessionStoreBuilder,
        direct: impl FnOnce(RedisSessionStoreBuilder) -> RedisSessionStoreBuilder,
    ) -> Option<Self> {
        service_url(common::SINGLE)?;
        let server = PrivateRedis::start();
        let proxy = FaultyProxy::start(server.port).await;
        let clock = ManualClock::new();
        let config = tweak(SessionConfig::new(30 * MINUTE).with_clock(clock.clone()));
        let faulty = faulty(
            RedisSessionStore::builder(proxy.url())
                .config(config.clone())
                .buckets(1)
                .pool_size(1)
                .connect_timeout(Duration::from_secs(1))
                .reconnect_policy(ReconnectPolicy::new_constant(0, 50)),
        )
        .build()
        .await
        .unwrap();
        let direct = direct(
            RedisSessionStore::builder(server.url())
                .config(config)
                .buckets(1),
        )
        .build()
        .await
        .unwrap();
        Some(Self {
            proxy,
            faulty,
            direct,
            clock,
            _server: server,
        })
    }

    /// Lose the reply to the next script run on `s`'s record; returns the
    /// signal that Redis applied it and the switch that lets fred re-send.
    fn lose_reply(&self, needles: &[&[u8]]) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (applied_tx, applied) = oneshot::channel();
        let (resume, resume_rx) = oneshot::channel();
        self.proxy.arm(
            needles,
            Fault::LoseReply {
                applied: applied_tx,
                resume: resume_rx,
            },
        );
        (applied, resume)
    }
}

/// The record key's tail: present in every script that writes the record.
fn record_of(s: &Session) -> Vec<u8> {
    format!(":r:{}", s.id().storage_key().to_hex()).into_bytes()
}

fn increment(s: &mut Session) -> u64 {
    let n = s.get_as::<u64>("n").unwrap().unwrap_or(0) + 1;
    s.insert("n", &n).unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_applies_a_change_once_when_the_reply_to_its_save_is_lost() {
    let Some(rig) = Rig::start(|c| c, |b| b, |b| b).await else {
        return;
    };
    let mut s = rig.direct.create().await.unwrap();
    s.insert("n", &0u64).unwrap();
    rig.direct.save(&mut s).await.unwrap();

    let (applied, resume) = rig.lose_reply(&[b"EVALSHA", &record_of(&s)]);
    let (faulty, id) = (rig.faulty.clone(), s.id().clone());
    let first = tokio::spawn(async move { faulty.update(&id, increment).await });
    applied.await.unwrap();
    // Another process increments after the first save was applied and
    // before fred re-sends it.
    assert_eq!(rig.direct.update(s.id(), increment).await.unwrap(), 2);
    resume.send(()).unwrap();

    assert_eq!(
        first.await.unwrap().unwrap(),
        1,
        "the re-sent save is recognised as applied, not re-run as a conflict"
    );
    let stored = rig.direct.load(s.id()).await.unwrap().unwrap();
    assert_eq!(
        stored.get_as::<u64>("n").unwrap(),
        Some(2),
        "two increments, each applied once"
    );
    assert_eq!(stored.version(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_touch_does_not_undo_a_later_save() {
    let Some(rig) = Rig::start(|c| c, |b| b, |b| b).await else {
        return;
    };
    let mut s = rig.direct.create().await.unwrap();
    rig.direct.save(&mut s).await.unwrap();

    let (applied, resume) = rig.lose_reply(&[b"EVALSHA", &record_of(&s)]);
    let (faulty, mut touched) = (rig.faulty.clone(), s.clone());
    let touch = tokio::spawn(async move { faulty.touch(&mut touched).await });
    applied.await.unwrap();
    rig.clock.advance(MINUTE);
    let mut later = rig.direct.load(s.id()).await.unwrap().unwrap();
    later.set("k", "v");
    rig.direct.save(&mut later).await.unwrap();
    resume.send(()).unwrap();

    touch.await.unwrap().unwrap();
    let stored = rig.direct.load(s.id()).await.unwrap().unwrap();
    assert_eq!(
        stored.expires_at(),
        later.expires_at(),
        "the re-sent touch must not move the later save's deadline back"
    );
    assert_eq!(stored.get("k"), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_destroy_reports_the_session_it_ended() {
    let Some(rig) = Rig::start(|c| c, |b| b, |b| b).await else {
        return;
    };
    let mut s = rig.direct.create().await.unwrap();
    s.set_owner("rosa");
    rig.direct.save(&mut s).await.unwrap();

    let (applied, resume) = rig.lose_reply(&[b"EVALSHA", &record_of(&s)]);
    let (faulty, id) = (rig.faulty.clone(), s.id().clone());
    let destroy = tokio::spawn(async move { faulty.destroy(&id).await });
    applied.await.unwrap();
    resume.send(()).unwrap();
    assert!(
        destroy.await.unwrap().unwrap(),
        "a destroy re-sent after it was applied still reports the session it ended"
    );
    assert!(rig.direct.load(s.id()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_purge_counts_what_it_removed() {
    let Some(rig) = Rig::start(|c| c, |b| b, |b| b).await else {
        return;
    };
    for i in 0..3 {
        let mut s = rig.direct.create().await.unwrap();
        if i == 0 {
            s.set_owner("sam");
        }
        rig.direct.save(&mut s).await.unwrap();
    }
    rig.clock.advance(31 * MINUTE);

    let (applied, resume) = rig.lose_reply(&[b"EVALSHA", b":r:"]);
    let faulty = rig.faulty.clone();
    let purge = tokio::spawn(async move { faulty.purge_expired().await });
    applied.await.unwrap();
    resume.send(()).unwrap();
    assert_eq!(purge.await.unwrap().unwrap(), 3);
    assert_eq!(rig.direct.purge_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_that_reaches_redis_after_its_lock_expired_is_still_revoked() {
    let limited = |c: SessionConfig| c.with_max_sessions_per_owner(5, OwnerLimitPolicy::RefuseNew);
    let Some(rig) = Rig::start(
        limited,
        |b| {
            b.command_timeout(Duration::from_millis(300))
                .owner_lock_ttl(Duration::from_millis(1200))
        },
        |b| b,
    )
    .await
    else {
        return;
    };
    // A login whose write is held on the network past the client's timeout
    // and past the owner lock's lease: the client gives up, Redis runs it
    // anyway, later.
    let mut late = rig.faulty.create().await.unwrap();
    late.set_owner("olga");
    rig.proxy.arm(
        &[b"EVALSHA", &record_of(&late)],
        Fault::Delay(Duration::from_millis(2500)),
    );
    match rig.faulty.save(&mut late).await {
        Err(Error::Backend(_)) => {}
        other => panic!("the held write must time out, got {other:?}"),
    }
    // Meanwhile another login of the same owner takes the expired lock.
    let mut other = rig.direct.create().await.unwrap();
    other.set_owner("olga");
    rig.direct.save(&mut other).await.unwrap();
    // The held write lands.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.direct.load(late.id()).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the held write never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        rig.direct
            .destroy_owner_sessions("olga", None)
            .await
            .unwrap(),
        2,
        "sign-out-everywhere ends both sessions"
    );
    assert!(
        rig.direct.load(late.id()).await.unwrap().is_none(),
        "the session bound by the late write is revoked too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_that_timed_out_on_the_client_but_ran_is_released() {
    let limited = |c: SessionConfig| c.with_max_sessions_per_owner(5, OwnerLimitPolicy::RefuseNew);
    let Some(rig) = Rig::start(
        limited,
        |b| {
            b.command_timeout(Duration::from_millis(300))
                .owner_lock_wait(Duration::from_millis(600))
        },
        |b| b.owner_lock_wait(Duration::from_secs(1)),
    )
    .await
    else {
        return;
    };
    let held = Duration::from_millis(1500);
    let mut first = rig.faulty.create().await.unwrap();
    first.set_owner("piet");
    rig.proxy.arm(&[b"EVALSHA", b":lock"], Fault::Delay(held));
    let started = Instant::now();
    match rig.faulty.save(&mut first).await {
        Err(Error::Backend(_)) => {}
        other => panic!("a login whose lock command times out fails, got {other:?}"),
    }
    // Redis runs the held lock command (and what followed it on that
    // connection) once the proxy lets it through.
    tokio::time::sleep(
        (started + held + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    )
    .await;

    // The owner's lock lives 10 s (the default) if nobody releases it; the
    // next login waits at most 1 s.
    let mut next = rig.direct.create().await.unwrap();
    next.set_owner("piet");
    rig.direct
        .save(&mut next)
        .await
        .expect("the lock taken by the timed-out command was released");
    assert!(rig.direct.load(first.id()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_waited_for_the_owner_lock_is_dated_after_the_wait() {
    let limited = |c: SessionConfig| c.with_max_sessions_per_owner(5, OwnerLimitPolicy::EndOldest);
    let Some(rig) = Rig::start(
        limited,
        |b| b.command_timeout(Duration::from_secs(5)),
        |b| b,
    )
    .await
    else {
        return;
    };
    // The first login holds the owner lock while its write is held for 1 s.
    let mut first = rig.faulty.create().await.unwrap();
    first.set_owner("quinn");
    rig.proxy.arm(
        &[b"EVALSHA", &record_of(&first)],
        Fault::Delay(Duration::from_secs(1)),
    );
    let faulty = rig.faulty.clone();
    let first = tokio::spawn(async move { faulty.save(&mut first).await.map(|()| first) });
    while !rig.proxy.sprung() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second waits for the lock; time passes meanwhile.
    let mut second = rig.direct.create().await.unwrap();
    second.set_owner("quinn");
    let direct = rig.direct.clone();
    let second = tokio::spawn(async move { direct.save(&mut second).await.map(|()| second) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.clock.advance(5 * MINUTE);
    let waited_until = session_core::from_ms(rig.clock.now_ms());

    first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(
        second.last_active(),
        waited_until,
        "the write is dated when it was made, after the lock wait"
    );
    let stored = rig.direct.load(second.id()).await.unwrap().unwrap();
    assert_eq!(stored.expires_at(), second.expires_at());
}
