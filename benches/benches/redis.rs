//! `RedisSessionStore` beside plain fred `GET`/`SET` and tower-sessions'
//! fred-based `RedisStore`, all three on one fred pool to one server.
//!
//! Needs `SESSION_TEST_REDIS_URL` (`cargo xtask bench` sets it when Redis
//! answers on 127.0.0.1:6379); skipped otherwise.

use std::time::Duration;

use benches::{Contender, IDLE_TIMEOUT_SECS, Ours, Subject};
use session_core::SessionConfig;
use session_redis::RedisSessionStore;
use session_redis::fred::prelude::{ClientLike, Config, KeysInterface, Pool};
use session_redis::fred::types::{Expiration, SetOptions};

#[path = "support/tower.rs"]
mod tower;

/// Fred clients in the shared pool. fred pipelines the commands of
/// concurrent tasks on each connection, so a few connections serve 64
/// tasks; this is also `session-redis`'s default pool size.
const POOL_SIZE: usize = 4;

/// Key prefix of everything this bench writes (tower-sessions' store takes
/// no prefix: its keys are its bare session IDs).
const PREFIX: &str = "sessions-bench:";

/// The raw baseline: the payload under a key as long as ours (the prefix
/// and 64 hex digits), written with `SET … PX` and read with `GET`.
struct PlainRedis {
    pool: Pool,
}

const TTL: Expiration = Expiration::PX(IDLE_TIMEOUT_SECS as i64 * 1000);

fn random_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    let mut key = String::with_capacity(PREFIX.len() + 9 + 64);
    key.push_str(PREFIX);
    key.push_str("baseline:");
    for b in bytes {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    key
}

impl Subject for PlainRedis {
    type Handle = String;
    type Loaded = (String, Vec<u8>);

    fn unused_handle(&self) -> String {
        random_key()
    }

    fn handle_of(&self, loaded: &Self::Loaded) -> String {
        loaded.0.clone()
    }

    async fn create(&self, payload: &str) -> String {
        let key = random_key();
        let () = self
            .pool
            .set(&key, payload, Some(TTL), Some(SetOptions::NX), false)
            .await
            .expect("SET NX");
        key
    }

    async fn load(&self, handle: &String) -> Option<Self::Loaded> {
        let value: Option<Vec<u8>> = self.pool.get(handle).await.expect("GET");
        value.map(|v| (handle.clone(), v))
    }

    async fn save(&self, loaded: &mut Self::Loaded) {
        let () = self
            .pool
            .set(&loaded.0, loaded.1.as_slice(), Some(TTL), None, false)
            .await
            .expect("SET");
    }

    async fn touch(&self, loaded: &mut Self::Loaded) {
        let _: bool = self
            .pool
            .pexpire(&loaded.0, IDLE_TIMEOUT_SECS as i64 * 1000, None)
            .await
            .expect("PEXPIRE");
    }

    async fn rotate(&self, loaded: &mut Self::Loaded) {
        let new = random_key();
        let () = self.pool.rename(&loaded.0, &new).await.expect("RENAME");
        loaded.0 = new;
    }

    async fn destroy(&self, handle: &String) {
        let _: i64 = self.pool.del(handle).await.expect("DEL");
    }

    async fn update(&self, handle: &String, value: u64) {
        let loaded = self.load(handle).await.expect("a live session");
        self.change_and_save(loaded, value).await;
    }

    async fn change_and_save(&self, mut loaded: Self::Loaded, _value: u64) {
        self.save(&mut loaded).await;
    }
}

fn main() {
    let Some(url) = session_core::testing::service_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let mut c = benches::criterion();
    let rt = benches::runtime();
    let pool = rt.block_on(async {
        let config = Config::from_url(&url).expect("a Redis URL");
        let pool = session_redis::fred::prelude::Builder::from_config(config)
            .build_pool(POOL_SIZE)
            .expect("a fred pool");
        pool.init().await.expect("connect to Redis");
        pool
    });
    let store = rt
        .block_on(
            RedisSessionStore::builder_from_pool(pool.clone())
                .key_prefix(format!("{PREFIX}ours:"))
                .config(SessionConfig::new(Duration::from_secs(IDLE_TIMEOUT_SECS)))
                .build(),
        )
        .expect("the Redis session store");

    let ours = Contender::new(&rt, "ours", Ours(store));
    let baseline = Contender::new(&rt, "baseline", PlainRedis { pool: pool.clone() });
    let tower = Contender::new(
        &rt,
        "tower-sessions",
        tower::Tower(tower_sessions_redis_store::RedisStore::new(pool.clone())),
    );
    benches::run_matrix(&mut c, &rt, "redis", &[&ours, &baseline, &tower]);
    benches::clean_up(&rt, &[&ours, &baseline, &tower]);
    c.final_summary();
}
