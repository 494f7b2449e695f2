//! Connection loss, server restarts and lost scripts, on a private
//! `redis-server` each test starts on a free port (the shared server is never
//! restarted or flushed). Runs when `SESSION_TEST_REDIS_URL` is set, since it
//! needs the same Redis installation.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::testing::service_url;
use session_core::{Error, SessionConfig, SessionId, SessionStore, SessionStoreExt};
use session_redis::RedisSessionStore;
use session_redis::fred::prelude::{ReconnectPolicy, Value};

use common::PrivateRedis;

const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);

async fn store_for(server: &PrivateRedis) -> RedisSessionStore {
    RedisSessionStore::builder(server.url())
        .config(SessionConfig::from_secs(3600))
        .command_timeout(COMMAND_TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
        .pool_size(2)
        .build()
        .await
        .unwrap()
}

/// Counters incremented in a loop by one task each, remembering the highest
/// value Redis acknowledged and how long each failed call took.
struct Workload {
    ids: Vec<SessionId>,
    acked: Vec<Arc<AtomicU64>>,
    errors: Arc<AtomicU64>,
    slowest_error_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    async fn start(store: &RedisSessionStore, sessions: usize) -> Self {
        let ids = common::counters(store, sessions).await;
        let errors = Arc::new(AtomicU64::new(0));
        let slowest_error_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut acked = Vec::new();
        let mut tasks = Vec::new();
        for id in &ids {
            let ack = Arc::new(AtomicU64::new(0));
            acked.push(Arc::clone(&ack));
            let (store, id) = (store.clone(), id.clone());
            let (errors, slowest, stop) = (
                Arc::clone(&errors),
                Arc::clone(&slowest_error_ms),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = store
                        .update(&id, |s| {
                            let n = s.get_as::<u64>("n").unwrap().unwrap() + 1;
                            s.insert("n", &n).unwrap();
                            n
                        })
                        .await;
                    match result {
                        Ok(n) => ack.store(n, Ordering::SeqCst),
                        Err(Error::Backend(_)) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let ms = u64::try_from(started.elapsed().as_millis()).unwrap();
                            slowest.fetch_max(ms, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("an outage must surface as Error::Backend, got {e:?}"),
                    }
                }
            }));
        }
        Self {
            ids,
            acked,
            errors,
            slowest_error_ms,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    /// Wait until every counter moved past `than`.
    async fn progressed(&self, than: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self
            .acked()
            .iter()
            .zip(than)
            .any(|(now, before)| now <= before)
        {
            assert!(
                Instant::now() < deadline,
                "the workload did not resume: {:?} vs {than:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self, store: &RedisSessionStore) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        for (id, acked) in self.ids.iter().zip(&self.acked) {
            let stored: u64 = store
                .load(id)
                .await
                .unwrap()
                .expect("session kept")
                .get_as("n")
                .unwrap()
                .unwrap();
            let acked = acked.load(Ordering::SeqCst);
            assert!(
                stored >= acked,
                "an acknowledged save was lost: stored {stored}, acknowledged {acked}"
            );
        }
        self.errors.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gives_prompt_backend_errors_then_the_same_store_recovers() {
    if service_url(common::SINGLE).is_none() {
        return;
    }
    let mut server = PrivateRedis::start();
    let store = store_for(&server).await;
    let work = Workload::start(&store, 4).await;
    work.progressed(&[0; 4]).await;

    server.kill();
    let started = Instant::now();
    let err = store.len().await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(
        started.elapsed() < COMMAND_TIMEOUT * 3,
        "len took {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    let before = work.acked();
    server.spawn(); // same data (fsync'ed append-only file), empty script cache
    work.progressed(&before).await;
    let slowest = Duration::from_millis(work.slowest_error_ms.load(Ordering::Relaxed));
    let errors = work.stop(&store).await;
    assert!(errors > 0, "the outage was noticed");
    // An update is a load and a save; each command gives up after the
    // command timeout.
    assert!(
        slowest < COMMAND_TIMEOUT * 3,
        "a failing call took {slowest:?}"
    );

    // Everything else works again on the same store value too.
    let mut s = store.create().await.unwrap();
    s.set_owner("after-restart");
    store.cycle_id(&mut s).await.unwrap();
    store.touch(&mut s).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 5);
    assert_eq!(
        store.count_owner_sessions("after-restart").await.unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_reopened_without_losing_acknowledged_saves() {
    if service_url(common::SINGLE).is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let store = store_for(&server).await;
    let admin = common::pool(&server.url(), 1).await;
    let own_id = common::raw(&admin, "CLIENT", vec!["ID".into()])
        .await
        .as_i64()
        .unwrap();
    // The ids of the store's connections (every normal client but the admin).
    let store_connections = || async {
        let list = common::raw(
            &admin,
            "CLIENT",
            vec!["LIST".into(), "TYPE".into(), "normal".into()],
        )
        .await;
        let list = list.as_str().unwrap().into_owned();
        let ids: std::collections::BTreeSet<i64> = list
            .lines()
            .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
            .filter(|id| *id != own_id)
            .collect();
        ids
    };
    let work = Workload::start(&store, 4).await;
    for _ in 0..3 {
        work.progressed(&work.acked()).await;
        let before = store_connections().await;
        assert!(!before.is_empty());
        common::raw(
            &admin,
            "CLIENT",
            vec![
                "KILL".into(),
                "TYPE".into(),
                "normal".into(),
                "SKIPME".into(),
                "yes".into(),
            ],
        )
        .await;
        work.progressed(&work.acked()).await;
        let after = store_connections().await;
        assert!(
            before.is_disjoint(&after),
            "the store works on new connections: {before:?} {after:?}"
        );
    }
    work.stop(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_the_server_are_sent_again_transparently() {
    if service_url(common::SINGLE).is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let store = store_for(&server).await;
    let admin = common::pool(&server.url(), 1).await;
    let cached = || async {
        let info = common::raw(&admin, "INFO", vec!["memory".into()]).await;
        let info = info.as_str().unwrap().into_owned();
        let line = info
            .lines()
            .find(|l| l.starts_with("number_of_cached_scripts:"))
            .unwrap()
            .to_owned();
        line.split(':')
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        cached().await > 0,
        "the scripts were loaded when the store was built"
    );

    let mut s = store.create().await.unwrap();
    s.set_owner("mallory");
    store.save(&mut s).await.unwrap();
    common::raw(&admin, "SCRIPT", vec![Value::from("FLUSH")]).await;
    assert_eq!(cached().await, 0);

    s.set("after", "flush");
    store.save(&mut s).await.expect("save after SCRIPT FLUSH");
    store.touch(&mut s).await.expect("touch after SCRIPT FLUSH");
    store
        .cycle_id(&mut s)
        .await
        .expect("rotation after SCRIPT FLUSH");
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(
        store.destroy_owner_sessions("mallory", None).await.unwrap(),
        1
    );
    assert!(cached().await > 0, "the scripts are cached again");
}

/// A server that stops answering without closing its sockets (a frozen
/// host, a network dropping packets): every operation fails with
/// `Error::Backend` within a few command timeouts (at most its documented
/// number; those that take an owner's lock, within the lock wait too), and
/// the same store works again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_fails_every_operation_within_its_time_limit() {
    if service_url(common::SINGLE).is_none() {
        return;
    }
    let server = PrivateRedis::start();
    let lock_wait = Duration::from_millis(600);
    let store = RedisSessionStore::builder(server.url())
        .config(SessionConfig::from_secs(3600))
        .command_timeout(COMMAND_TIMEOUT)
        .owner_lock_wait(lock_wait)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_policy(ReconnectPolicy::new_constant(0, 50))
        .pool_size(2)
        .build()
        .await
        .unwrap();
    let mut owned = store.create().await.unwrap();
    owned.set_owner("sam");
    store.cycle_id(&mut owned).await.unwrap();
    let mut anon = store.create().await.unwrap();
    store.save(&mut anon).await.unwrap();

    server.pause();
    let within = |timeouts: u32, started: Instant, what: &str, result: Result<(), Error>| {
        let took = started.elapsed();
        match result {
            Err(Error::Backend(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
        // Generous slack for a loaded, shared machine: what this checks is
        // that the wait is bounded by the configured timeouts, not hung on
        // the silent socket.
        let limit = COMMAND_TIMEOUT * timeouts + Duration::from_millis(1500);
        assert!(took < limit, "{what} took {took:?}, more than {limit:?}");
    };
    let t = Instant::now();
    within(1, t, "load", store.load(anon.id()).await.map(drop));
    let t = Instant::now();
    within(1, t, "len", store.len().await.map(drop));
    anon.set("k", "v");
    let t = Instant::now();
    within(2, t, "save", store.save(&mut anon).await);
    let t = Instant::now();
    within(2, t, "touch", store.touch(&mut anon).await);
    let t = Instant::now();
    within(2, t, "destroy", store.destroy(anon.id()).await.map(drop));
    owned.set("k", "v");
    let t = Instant::now();
    within(4, t, "owned save", store.save(&mut owned).await);
    let t = Instant::now();
    let result = store.owner_sessions("sam", None).await.map(drop);
    within(2, t + lock_wait, "owner_sessions", result);
    let t = Instant::now();
    within(2, t, "purge_expired", store.purge_expired().await.map(drop));
    let t = Instant::now();
    let result = store.destroy_owner_sessions("sam", None).await.map(drop);
    within(2, t + lock_wait, "destroy_owner_sessions", result);
    let t = Instant::now();
    let result = store.cycle_id(&mut owned).await;
    within(4, t + lock_wait, "cycle_id", result);

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.load(owned.id()).await {
            Ok(Some(_)) => break,
            other => assert!(Instant::now() < deadline, "no recovery: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.count_owner_sessions("sam").await.unwrap(), 1);
    let mut fresh = store.load(owned.id()).await.unwrap().unwrap();
    fresh.set("after", "pause");
    store.save(&mut fresh).await.unwrap();
}
