//! Helpers shared by the server-backed tests.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use session_redis::fred::prelude::{ClientLike, KeysInterface, Pool, Value};
use session_redis::fred::types::{Builder, ClusterHash, CustomCommand, config::Config};

pub const SINGLE: &str = "SESSION_TEST_REDIS_URL";
pub const CLUSTER: &str = "SESSION_TEST_REDIS_CLUSTER_URL";
pub const SENTINEL: &str = "SESSION_TEST_REDIS_SENTINEL_URL";

/// A key prefix no other test run uses.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).unwrap();
    format!(
        "sr-test:{tag}:{}:{}:{:08x}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        u32::from_be_bytes(nonce)
    )
}

/// A connected pool for `url`, as an application would make one.
pub async fn pool(url: &str, size: usize) -> Pool {
    let pool = Builder::from_config(Config::from_url(url).unwrap())
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build_pool(size)
        .unwrap();
    pool.init().await.unwrap();
    pool
}

/// Every key under `prefix`, on every node.
pub async fn keys_with_prefix(pool: &Pool, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}*");
    let client = pool.next();
    let keys: Vec<_> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(500), None)
            .try_collect()
            .await
            .unwrap()
    } else {
        client
            .scan_buffered(pattern, Some(500), None)
            .try_collect()
            .await
            .unwrap()
    };
    keys.iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// Delete every key under `prefix` (one by one: they span many slots).
pub async fn delete_prefix(pool: &Pool, prefix: &str) {
    for key in keys_with_prefix(pool, prefix).await {
        let _: i64 = pool.del(key).await.unwrap();
    }
}

/// Run any command (routed by its first key) and return the raw reply.
pub async fn raw(pool: &Pool, cmd: &'static str, args: Vec<Value>) -> Value {
    pool.custom::<Value, Value>(
        CustomCommand::new_static(cmd, ClusterHash::FirstKey, false),
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Everything stored under `key`, as byte strings: its name, members,
/// fields, values and scores.
pub async fn dump(pool: &Pool, key: &str) -> Vec<Vec<u8>> {
    let kind = raw(pool, "TYPE", vec![key.into()]).await;
    let content = match kind.as_str().as_deref() {
        Some("hash") => raw(pool, "HGETALL", vec![key.into()]).await,
        Some("zset") => {
            raw(
                pool,
                "ZRANGE",
                vec![key.into(), 0.into(), (-1).into(), "WITHSCORES".into()],
            )
            .await
        }
        Some("string") => raw(pool, "GET", vec![key.into()]).await,
        Some("none") => Value::Null,
        other => panic!("unexpected type {other:?} at {key}"),
    };
    let mut out = vec![key.as_bytes().to_vec()];
    flatten(content, &mut out);
    out
}

fn flatten(v: Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Map(map) => {
            for (k, v) in map.inner() {
                out.push(k.as_bytes().to_vec());
                flatten(v, out);
            }
        }
        Value::Null => {}
        other => out.push(
            other
                .as_bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| format!("{other:?}").into_bytes()),
        ),
    }
}

/// `PEXPIRETIME` of `key` (Redis 7): -2 missing, -1 no expiry.
pub async fn pexpiretime(pool: &Pool, key: &str) -> i64 {
    raw(pool, "PEXPIRETIME", vec![key.into()])
        .await
        .as_i64()
        .unwrap()
}
