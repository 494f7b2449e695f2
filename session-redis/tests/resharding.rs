//! A Redis Cluster moving a slot while sessions in it are written: on a
//! private three-node Cluster each test starts on free ports (the shared
//! Cluster is never resharded). Runs when `SESSION_TEST_REDIS_CLUSTER_URL`
//! is set, since it needs the same Redis installation.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::testing::service_url;
use session_core::{SessionConfig, SessionStore, SessionStoreExt};
use session_redis::RedisSessionStore;

use common::PrivateCluster;

/// What the workload saw: every error, and how many operations ended while
/// the slot was moving.
#[derive(Default)]
struct Tally {
    errors: Mutex<Vec<String>>,
    during_move: AtomicU64,
    moving: AtomicBool,
    stop: AtomicBool,
}

impl Tally {
    fn record<T>(&self, what: &str, result: session_core::Result<T>) -> Option<T> {
        if self.moving.load(Ordering::SeqCst) {
            self.during_move.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.lock().unwrap().push(format!("{what}: {e}"));
                None
            }
        }
    }
}

/// Increments, touches, login-rotate-logout cycles, counts, listings and
/// purges of sessions of one bucket (so one slot) never fail while that
/// slot moves to another node and on again: commands refused meanwhile
/// (`TRYAGAIN` for a script whose keys are split between the two nodes,
/// `ASK` that fred cannot follow) are sent again, and `MOVED` is followed.
/// No increment is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_a_cluster_moves_their_slot() {
    if service_url(common::CLUSTER).is_none() {
        return;
    }
    let cluster = PrivateCluster::start().await;
    let store = RedisSessionStore::builder(cluster.url())
        .config(SessionConfig::from_secs(3600))
        .buckets(1)
        .pool_size(2)
        .build()
        .await
        .unwrap();
    let slot = session_redis::fred::util::redis_keyslot(b"0");

    let tally = Arc::new(Tally::default());
    let ids = common::counters(&store, 4).await;
    let acked: Vec<Arc<AtomicU64>> = ids.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (id, ack) in ids.iter().zip(&acked) {
        let (store, id, ack, tally) = (
            store.clone(),
            id.clone(),
            Arc::clone(ack),
            Arc::clone(&tally),
        );
        tasks.push(tokio::spawn(async move {
            while !tally.stop.load(Ordering::SeqCst) {
                let result = store
                    .update(&id, |s| {
                        let n = s.get_as::<u64>("n").unwrap().unwrap() + 1;
                        s.insert("n", &n).unwrap();
                        n
                    })
                    .await;
                if let Some(n) = tally.record("update", result) {
                    ack.store(n, Ordering::SeqCst);
                }
                if let Some(Some(mut s)) = tally.record("load", store.load(&id).await) {
                    tally.record("touch", store.touch(&mut s).await);
                }
            }
        }));
    }
    {
        let (store, tally) = (store.clone(), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            while !tally.stop.load(Ordering::SeqCst) {
                let mut s = store.create().await.unwrap();
                s.set("step", "login");
                s.set_owner("rotating-owner");
                if tally
                    .record("login", store.cycle_id(&mut s).await)
                    .is_none()
                {
                    continue;
                }
                s.set("step", "again");
                if tally
                    .record("rotate", store.cycle_id(&mut s).await)
                    .is_none()
                {
                    continue;
                }
                tally.record("logout", store.destroy(s.id()).await);
            }
        }));
    }
    {
        let (store, tally) = (store.clone(), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            while !tally.stop.load(Ordering::SeqCst) {
                if let Some(n) = tally.record("len", store.len().await) {
                    assert!((4..=5).contains(&n), "len {n}");
                }
                let owned = store.owner_sessions("owner-0", None).await;
                if let Some(listed) = tally.record("listing", owned) {
                    assert_eq!(listed.len(), 1);
                }
                tally.record("purge", store.purge_expired().await);
            }
        }));
    }

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tally.moving.store(true, Ordering::SeqCst);
        cluster.move_slot(slot, Duration::from_millis(150)).await;
        tally.moving.store(false, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    tally.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }

    let errors = tally.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{} failures: {errors:?}", errors.len());
    assert!(
        tally.during_move.load(Ordering::Relaxed) > 0,
        "the workload ran while the slot moved"
    );
    for (id, ack) in ids.iter().zip(&acked) {
        let s = store.load(id).await.unwrap().unwrap();
        assert_eq!(
            s.get_as::<u64>("n").unwrap(),
            Some(ack.load(Ordering::SeqCst)),
            "every acknowledged increment, once"
        );
    }
    assert_eq!(
        store.count_owner_sessions("rotating-owner").await.unwrap(),
        0
    );
    assert_eq!(store.len().await.unwrap(), 4);
}
