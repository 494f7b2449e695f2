//! `MemoryStore` beside a plain concurrent map and tower-sessions'
//! `MemoryStore`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use benches::{Contender, IDLE_TIMEOUT_SECS, Ours, Subject};
use dashmap::DashMap;
use session_memory::MemoryStore;

#[path = "support/tower.rs"]
mod tower;

/// The raw baseline: a sharded concurrent map from a 32-byte key to the
/// payload bytes and an expiry, the least any in-process session map holds.
/// Loads clone the shared bytes (as our store shares its decoded data);
/// writes copy the payload once.
#[derive(Default)]
struct PlainMap {
    map: DashMap<[u8; 32], Entry>,
}

#[derive(Clone)]
struct Entry {
    expires_ms: i64,
    data: Arc<[u8]>,
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("OS randomness");
    key
}

fn expiry() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    now + IDLE_TIMEOUT_SECS as i64 * 1000
}

impl Subject for PlainMap {
    type Handle = [u8; 32];
    type Loaded = ([u8; 32], Entry);

    fn unused_handle(&self) -> [u8; 32] {
        random_key()
    }

    fn handle_of(&self, loaded: &Self::Loaded) -> [u8; 32] {
        loaded.0
    }

    async fn create(&self, payload: &str) -> [u8; 32] {
        let key = random_key();
        let entry = Entry {
            expires_ms: expiry(),
            data: Arc::from(payload.as_bytes()),
        };
        self.map.insert(key, entry);
        key
    }

    async fn load(&self, handle: &[u8; 32]) -> Option<Self::Loaded> {
        self.map.get(handle).map(|e| (*handle, e.clone()))
    }

    async fn save(&self, loaded: &mut Self::Loaded) {
        let entry = Entry {
            expires_ms: expiry(),
            data: Arc::from(&*loaded.1.data),
        };
        self.map.insert(loaded.0, entry);
    }

    async fn touch(&self, loaded: &mut Self::Loaded) {
        if let Some(mut entry) = self.map.get_mut(&loaded.0) {
            entry.expires_ms = expiry();
        }
    }

    async fn rotate(&self, loaded: &mut Self::Loaded) {
        if let Some((_, entry)) = self.map.remove(&loaded.0) {
            loaded.0 = random_key();
            self.map.insert(loaded.0, entry);
        }
    }

    async fn destroy(&self, handle: &[u8; 32]) {
        self.map.remove(handle);
    }

    async fn update(&self, handle: &[u8; 32], value: u64) {
        if let Some(loaded) = self.load(handle).await {
            self.change_and_save(loaded, value).await;
        }
    }

    async fn change_and_save(&self, mut loaded: Self::Loaded, _value: u64) {
        self.save(&mut loaded).await;
    }
}

fn main() {
    let mut c = benches::criterion();
    let rt = benches::runtime();
    let ours = Contender::new(&rt, "ours", Ours(MemoryStore::new(IDLE_TIMEOUT_SECS)));
    let baseline = Contender::new(&rt, "baseline", PlainMap::default());
    let tower = Contender::new(
        &rt,
        "tower-sessions",
        tower::Tower(tower_sessions_memory_store::MemoryStore::default()),
    );
    benches::run_matrix(&mut c, &rt, "memory", &[&ours, &baseline, &tower]);
    c.final_summary();
}
