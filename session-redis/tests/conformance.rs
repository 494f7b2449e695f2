//! The shared conformance suite against a single Redis, a Redis Cluster and a
//! Redis behind Sentinel.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::{Arc, Mutex};

use session_core::SessionStore;
use session_core::testing::{run_conformance, service_url};
use session_redis::RedisSessionStore;
use session_redis::fred::prelude::Pool;

/// Run the suite with one store per check, each under a fresh key prefix on
/// a shared pool, then delete everything the checks left behind.
async fn conformance_against(url: &str) {
    let pool = common::pool(url, 4).await;
    let prefixes = Arc::new(Mutex::new(Vec::new()));
    let factory = |config| {
        let pool: Pool = pool.clone();
        let prefixes = Arc::clone(&prefixes);
        async move {
            let prefix = common::unique_prefix("conformance");
            prefixes.lock().unwrap().push(prefix.clone());
            let store = RedisSessionStore::builder_from_pool(pool)
                .config(config)
                .key_prefix(prefix)
                .build()
                .await
                .expect("store over the shared pool");
            Arc::new(store) as Arc<dyn SessionStore>
        }
    };
    run_conformance(factory).await;
    let prefixes = prefixes.lock().unwrap().clone();
    for prefix in prefixes {
        common::delete_prefix(&pool, &prefix).await;
        assert!(common::keys_with_prefix(&pool, &prefix).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_single_node() {
    let Some(url) = service_url(common::SINGLE) else {
        return;
    };
    conformance_against(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cluster() {
    let Some(url) = service_url(common::CLUSTER) else {
        return;
    };
    conformance_against(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_sentinel() {
    let Some(url) = service_url(common::SENTINEL) else {
        return;
    };
    conformance_against(&url).await;
}
