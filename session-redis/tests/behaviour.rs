//! What the Redis store does beyond the shared contract, checked on a real
//! single node and a real Cluster: what lands in Redis, native expiry,
//! the per-owner limit under concurrent logins, purge, construction.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{HookClock, service_url};
use session_core::{
    Error, ManualClock, OwnerLimitPolicy, Session, SessionConfig, SessionId, SessionStore,
    SystemClock,
};
use session_redis::fred::bytes::Bytes;
use session_redis::fred::prelude::{KeysInterface, Pool, Value};
use session_redis::{RedisSessionStore, RedisSessionStoreBuilder};

const MINUTE: Duration = Duration::from_secs(60);

struct Env {
    pool: Pool,
    store: RedisSessionStore,
    clock: ManualClock,
    prefix: String,
}

impl Env {
    async fn new(url: &str, tweak: impl FnOnce(SessionConfig) -> SessionConfig) -> Self {
        Self::with(url, tweak, |b| b).await
    }

    async fn with(
        url: &str,
        tweak: impl FnOnce(SessionConfig) -> SessionConfig,
        build: impl FnOnce(RedisSessionStoreBuilder) -> RedisSessionStoreBuilder,
    ) -> Self {
        Self::with_config(
            url,
            |clock| tweak(SessionConfig::new(30 * MINUTE).with_clock(clock)),
            build,
        )
        .await
    }

    /// A store whose whole configuration `config` makes, around the test's
    /// clock.
    async fn with_config(
        url: &str,
        config: impl FnOnce(ManualClock) -> SessionConfig,
        build: impl FnOnce(RedisSessionStoreBuilder) -> RedisSessionStoreBuilder,
    ) -> Self {
        let clock = ManualClock::new();
        let pool = common::pool(url, 2).await;
        let prefix = common::unique_prefix("behaviour");
        let builder = RedisSessionStore::builder_from_pool(pool.clone())
            .config(config(clock.clone()))
            .key_prefix(prefix.clone());
        let store = build(builder).build().await.unwrap();
        Self {
            pool,
            store,
            clock,
            prefix,
        }
    }

    async fn keys(&self) -> Vec<String> {
        common::keys_with_prefix(&self.pool, &self.prefix).await
    }

    /// Every key but the receipts of applied writes (which live 15 s).
    async fn data_keys(&self) -> Vec<String> {
        let (receipts, data): (Vec<String>, Vec<String>) =
            self.keys().await.into_iter().partition(|k| is_receipt(k));
        assert_receipts_expire(&self.pool, &receipts).await;
        data
    }

    /// The one stored key whose name ends with `suffix`.
    async fn key_ending(&self, suffix: &str) -> String {
        let found: Vec<String> = self
            .keys()
            .await
            .into_iter()
            .filter(|k| k.ends_with(suffix))
            .collect();
        assert_eq!(found.len(), 1, "keys ending in {suffix}: {found:?}");
        found.into_iter().next().unwrap()
    }

    async fn record_key(&self, s: &Session) -> String {
        self.key_ending(&format!(":r:{}", s.id().storage_key().to_hex()))
            .await
    }

    async fn saved(&self, owner: Option<&str>) -> Session {
        let mut s = self.store.create().await.unwrap();
        s.set("k", "v");
        if let Some(o) = owner {
            s.set_owner(o);
        }
        self.store.save(&mut s).await.unwrap();
        s
    }

    async fn cleanup(self) {
        common::delete_prefix(&self.pool, &self.prefix).await;
    }
}

fn ms(t: std::time::SystemTime) -> i64 {
    session_core::to_ms(t)
}

/// Where a record's fields start (see "Key layout" in the crate docs).
const VERSION_AT: usize = 1;
const LAST_ACTIVE_AT: usize = 21;
const EXPIRES_AT: usize = 41;
const CREATED_AT: usize = 61;
const ABSOLUTE_AT: usize = 81;
const OWNER_LEN_AT: usize = 101;
const RECORD_HEADER_LEN: usize = 105;

/// The latest deadline the store gives Redis: the end of the year 9999.
const LATEST_DEADLINE_MS: i64 = 253_402_300_799_999;

/// Overwrite part of a stored record in place (its expiry stays).
async fn overwrite(pool: &Pool, key: &str, at: usize, with: &str) {
    common::raw(
        pool,
        "SETRANGE",
        vec![key.into(), (at as i64).into(), with.into()],
    )
    .await;
}

fn is_receipt(key: &str) -> bool {
    key.contains("}:w:")
}

/// Receipts of applied writes expire by themselves within 15 s.
async fn assert_receipts_expire(pool: &Pool, receipts: &[String]) {
    for key in receipts {
        let ttl = common::raw(pool, "PTTL", vec![key.as_str().into()])
            .await
            .as_i64()
            .unwrap();
        assert!(
            ttl == -2 || (0..=15_000).contains(&ttl),
            "receipt {key} lives {ttl} ms"
        );
    }
}

async fn stored_keys_and_values_never_contain_the_session_id(url: &str) {
    let env = Env::new(url, |c| c.with_absolute_timeout(12 * 60 * MINUTE)).await;
    let mut secrets = Vec::new();
    for i in 0..12 {
        let owner = format!("user-{}", i % 3);
        let mut s = env.saved((i % 2 == 0).then_some(owner.as_str())).await;
        secrets.push(s.id().as_str().to_owned());
        if i % 3 == 0 {
            s.set_owner(owner.as_str());
            env.store.cycle_id(&mut s).await.unwrap();
            secrets.push(s.id().as_str().to_owned());
        }
        env.store.touch(&mut s).await.unwrap();
    }
    let keys = env.keys().await;
    assert!(
        keys.len() > 12,
        "records, bucket indexes and owner indexes: {keys:?}"
    );
    for key in &keys {
        for item in common::dump(&env.pool, key).await {
            let text = String::from_utf8_lossy(&item);
            for id in &secrets {
                assert!(!text.contains(id.as_str()), "{key} holds a raw session ID");
                assert!(
                    !text.contains(&id[..16]),
                    "{key} holds a fragment of a session ID"
                );
            }
        }
        assert!(
            !key.contains("user-"),
            "owner names stay out of key names: {key}"
        );
    }
    env.cleanup().await;
}

async fn records_and_indexes_expire_natively_at_the_session_deadline(url: &str) {
    // One bucket, so the bucket index holds exactly these sessions.
    let env = Env::with(
        url,
        |c| c.with_absolute_timeout(60 * MINUTE),
        |b| b.buckets(1),
    )
    .await;
    let mut anon = env.saved(None).await;
    env.clock.advance(MINUTE);
    let mut owned = env.saved(Some("erin")).await;

    let anon_key = env.record_key(&anon).await;
    let owned_key = env.record_key(&owned).await;
    let index = env.key_ending(":idx").await;
    let owner_index = env.key_ending(":owner").await;
    assert_eq!(
        common::pexpiretime(&env.pool, &anon_key).await,
        ms(anon.expires_at())
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &owned_key).await,
        ms(owned.expires_at())
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(owned.expires_at()),
        "latest deadline"
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &owner_index).await,
        ms(owned.expires_at())
    );

    // Touch and save slide every deadline that covers the session.
    env.clock.advance(10 * MINUTE);
    env.store.touch(&mut anon).await.unwrap();
    assert_eq!(
        common::pexpiretime(&env.pool, &anon_key).await,
        ms(anon.expires_at())
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(anon.expires_at())
    );
    env.clock.advance(MINUTE);
    owned.set("n", "1");
    env.store.save(&mut owned).await.unwrap();
    assert_eq!(
        common::pexpiretime(&env.pool, &owned_key).await,
        ms(owned.expires_at())
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &owner_index).await,
        ms(owned.expires_at())
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(owned.expires_at())
    );

    // Near the end of its life the absolute deadline caps the key.
    env.clock.advance(25 * MINUTE);
    env.store.touch(&mut owned).await.unwrap();
    assert_eq!(owned.expires_at(), owned.absolute_deadline().unwrap());
    assert_eq!(
        common::pexpiretime(&env.pool, &owned_key).await,
        ms(owned.expires_at())
    );

    // Rotation moves the deadline to the new key; the old one is gone.
    env.store.cycle_id(&mut owned).await.unwrap();
    let rotated_key = env.record_key(&owned).await;
    assert_eq!(common::pexpiretime(&env.pool, &owned_key).await, -2);
    assert_eq!(
        common::pexpiretime(&env.pool, &rotated_key).await,
        ms(owned.expires_at())
    );
    env.cleanup().await;
}

async fn redis_removes_an_idle_session_by_itself(url: &str) {
    let pool = common::pool(url, 1).await;
    let prefix = common::unique_prefix("realtime");
    let store = RedisSessionStore::builder_from_pool(pool.clone())
        .config(SessionConfig::new(Duration::from_secs(1)).with_clock(SystemClock))
        .key_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let mut s = store.create().await.unwrap();
    s.set_owner("frank");
    store.save(&mut s).await.unwrap();
    assert!(!common::keys_with_prefix(&pool, &prefix).await.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (receipts, left): (Vec<String>, Vec<String>) = common::keys_with_prefix(&pool, &prefix)
            .await
            .into_iter()
            .partition(|k| is_receipt(k));
        assert_receipts_expire(&pool, &receipts).await;
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis kept {left:?} past the deadline"
        );
    }
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(store.load(s.id()).await.unwrap().is_none());
    common::delete_prefix(&pool, &prefix).await;
}

async fn concurrent_logins_cannot_exceed_a_refusing_owner_limit(url: &str) {
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(3, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    let store = Arc::new(env.store.clone());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut s = store.create().await.unwrap();
            s.set_owner("grace");
            if i % 2 == 0 {
                store.save(&mut s).await
            } else {
                store.cycle_id(&mut s).await
            }
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::TooManySessions { limit: 3 }) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, refused), (3, 13));
    assert_eq!(env.store.count_owner_sessions("grace").await.unwrap(), 3);
    assert_eq!(env.store.len().await.unwrap(), 3);
    env.cleanup().await;
}

async fn concurrent_logins_end_the_oldest_sessions_to_keep_the_limit(url: &str) {
    const LIMIT: usize = 3;
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(LIMIT as u32, OwnerLimitPolicy::EndOldest)
    })
    .await;
    let store = Arc::new(env.store.clone());
    let mut survivors: Vec<Session> = Vec::new();
    for round in 0..4 {
        // LIMIT new sessions, each created a minute after the last, so each
        // is younger than every session of the rounds before.
        let mut fresh = Vec::new();
        for _ in 0..LIMIT {
            env.clock.advance(MINUTE);
            let mut s = store.create().await.unwrap();
            s.set_owner("heidi");
            fresh.push(s);
        }
        let tasks: Vec<_> = fresh
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        store.save(&mut s).await.map(|()| s)
                    } else {
                        store.cycle_id(&mut s).await.map(|()| s)
                    }
                })
            })
            .collect();
        let mut logged_in = Vec::new();
        for t in tasks {
            logged_in.push(t.await.unwrap().expect("EndOldest never refuses"));
        }
        // Whatever order the logins ran in, each ended the oldest session
        // there was: every session of the earlier rounds, none of this one.
        for old in &survivors {
            assert!(
                env.store.load(old.id()).await.unwrap().is_none(),
                "round {round}: an older session survived"
            );
        }
        let mut listed: Vec<_> = env
            .store
            .owner_sessions("heidi", None)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.handle)
            .collect();
        let mut expected: Vec<_> = logged_in.iter().map(|s| s.id().handle()).collect();
        listed.sort_unstable_by_key(ToString::to_string);
        expected.sort_unstable_by_key(ToString::to_string);
        assert_eq!(
            listed, expected,
            "round {round}: this round's logins remain"
        );
        assert_eq!(
            env.store.len().await.unwrap(),
            LIMIT as u64,
            "round {round}: the ended sessions are deleted"
        );
        survivors = logged_in;
    }
    env.cleanup().await;
}

async fn a_stale_login_at_the_limit_is_refused_as_stale(url: &str) {
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(1, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    // A login form submitted twice: the first request logs in (filling the
    // limit of one), the second is stale and must say so.
    let anon = env.saved(None).await;
    let mut first = env.store.load(anon.id()).await.unwrap().unwrap();
    let mut second = env.store.load(anon.id()).await.unwrap().unwrap();
    first.set_owner("uma");
    env.store.cycle_id(&mut first).await.unwrap();
    second.set_owner("uma");
    match env.store.cycle_id(&mut second).await {
        Err(Error::NotFound) => {}
        other => panic!("the stale login's session was rotated away: NotFound, got {other:?}"),
    }
    // A new session colliding with a live one is a conflict, not a breach
    // of the limit.
    let text = anon.id().as_str()[..24].to_owned();
    let mut taken = env.store.create_with_id(&text).await.unwrap();
    let mut dup = env.store.create_with_id(&text).await.unwrap();
    env.store.save(&mut taken).await.unwrap();
    dup.set_owner("uma");
    match env.store.save(&mut dup).await {
        Err(Error::Conflict) => {}
        other => panic!("a colliding insert is a Conflict, got {other:?}"),
    }
    assert_eq!(env.store.count_owner_sessions("uma").await.unwrap(), 1);
    let index = env.key_ending(":owner").await;
    let entries = common::raw(&env.pool, "ZCARD", vec![index.as_str().into()]).await;
    assert_eq!(
        entries.as_i64(),
        Some(1),
        "the refused logins claimed nothing in the owner's index"
    );
    env.cleanup().await;
}

async fn purge_removes_expired_records_and_leaves_no_key_behind(url: &str) {
    let env = Env::new(url, |c| c).await;
    let mut owned = Vec::new();
    for _ in 0..5 {
        owned.push(env.saved(Some("ivan")).await);
    }
    for _ in 0..3 {
        env.saved(None).await;
    }
    env.clock.advance(31 * MINUTE);
    // Redis expiring two records on its own (its clock is hours behind the
    // manual one here) is simulated by deleting them.
    for s in &owned[..2] {
        let key = env.record_key(s).await;
        let _: i64 = env.pool.del(key).await.unwrap();
    }
    assert_eq!(env.store.len().await.unwrap(), 0);
    assert_eq!(
        env.store.purge_expired().await.unwrap(),
        6,
        "the records it deleted"
    );
    assert_eq!(env.store.purge_expired().await.unwrap(), 0);
    assert_eq!(
        env.data_keys().await,
        Vec::<String>::new(),
        "no record, index or owner key is left"
    );
    env.cleanup().await;
}

/// Entries in a bucket's index, whatever their deadline.
async fn index_entries(env: &Env) -> usize {
    let index = env.key_ending(":idx").await;
    let n = common::raw(&env.pool, "ZCARD", vec![index.as_str().into()]).await;
    usize::try_from(n.as_i64().unwrap()).unwrap()
}

async fn bucket_indexes_stay_bounded_without_a_purge(url: &str) {
    // The real clock, so Redis expires the records by itself; one bucket,
    // so every session lands in the same index.
    const SESSIONS: usize = 400;
    let env = Env::with_config(
        url,
        |_| SessionConfig::new(Duration::from_millis(150)),
        |b| b.buckets(1),
    )
    .await;
    for _ in 0..SESSIONS {
        env.saved(None).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let entries = index_entries(&env).await;
    let live = usize::try_from(env.store.len().await.unwrap()).unwrap();
    // Each session lives 150 ms, so a few dozen are live at a time; every
    // first save drops up to two entries of sessions Redis has expired, so
    // the rest is a small backlog, not the hundreds of sessions gone by.
    assert!(
        entries <= live + SESSIONS / 8 && entries < SESSIONS / 2,
        "{entries} index entries for {live} live sessions after {SESSIONS} short ones"
    );
    env.cleanup().await;
}

async fn an_entry_whose_record_redis_still_holds_is_left_for_purge(url: &str) {
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let _old = env.saved(None).await;
    env.clock.advance(31 * MINUTE);
    // Expired by the store's clock, still held by Redis (whose clock is
    // half an hour behind here): a new session's save must not drop the
    // old entry, which purge deletes and counts.
    env.saved(None).await;
    env.saved(None).await;
    assert_eq!(env.store.purge_expired().await.unwrap(), 1);
    assert_eq!(env.store.len().await.unwrap(), 2);
    env.cleanup().await;
}

async fn len_counts_only_this_stores_live_sessions(url: &str) {
    let env = Env::new(url, |c| c).await;
    let other = Env::new(url, |c| c).await;
    for _ in 0..3 {
        env.saved(None).await;
    }
    for _ in 0..5 {
        other.saved(Some("judy")).await;
    }
    // Keys that are not sessions: inside this store's prefix (one even
    // shaped like a record of a bucket, one like a bucket index of a bucket
    // that does not exist) and just outside it.
    let outside = env.prefix.trim_end_matches(':');
    let mut unrelated: Vec<String> = Vec::new();
    for i in 0..20 {
        unrelated.push(format!("{}{{7}}:r:{i}", env.prefix));
        unrelated.push(format!("{}other:{i}", env.prefix));
        unrelated.push(format!("{outside}{{7}}:r:{i}"));
    }
    unrelated.push(format!("{}{{99999}}:idx", env.prefix));
    for k in &unrelated {
        let _: () = env
            .pool
            .set(k.as_str(), "x", None, None, false)
            .await
            .unwrap();
    }
    assert!(unrelated[0].starts_with(&env.prefix) && !unrelated[2].starts_with(&env.prefix));
    assert_eq!(env.store.len().await.unwrap(), 3);
    assert_eq!(other.store.len().await.unwrap(), 5);
    env.clock.advance(31 * MINUTE);
    assert_eq!(env.store.len().await.unwrap(), 0);
    assert_eq!(
        other.store.len().await.unwrap(),
        5,
        "another store's clock and keys are its own"
    );
    for k in &unrelated {
        let _: i64 = env.pool.del(k.as_str()).await.unwrap();
    }
    env.cleanup().await;
    other.cleanup().await;
}

async fn a_corrupt_record_is_a_codec_error_and_harms_no_other_session(url: &str) {
    let env = Env::new(url, |c| c).await;
    let broken = env.saved(Some("pat")).await;
    let fine = env.saved(Some("pat")).await;
    let key = env.record_key(&broken).await;
    // The data follows the header and the owner.
    let data_at = RECORD_HEADER_LEN + "pat".len();
    overwrite(&env.pool, &key, data_at, "not a record").await;
    assert!(matches!(
        env.store.load(broken.id()).await,
        Err(Error::Codec(_))
    ));
    assert_eq!(
        env.store.load(fine.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );
    overwrite(&env.pool, &key, VERSION_AT, "many").await;
    assert!(matches!(
        env.store.load(broken.id()).await,
        Err(Error::Codec(_))
    ));
    let listed = env.store.owner_sessions("pat", None).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the owner's readable session is still listed"
    );
    assert_eq!(listed[0].handle, fine.id().handle());
    assert!(
        env.store.destroy(broken.id()).await.unwrap(),
        "a corrupt session can still be ended"
    );
    assert_eq!(env.store.len().await.unwrap(), 1);
    env.cleanup().await;
}

async fn a_corrupt_or_missing_expiry_harms_no_other_session(url: &str) {
    // One bucket, so the broken records share their expiry index with the
    // sound ones.
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let fine = env.saved(Some("val")).await;
    let garbled = env.saved(Some("val")).await;
    let missing = env.saved(Some("val")).await;
    let corrupt = |s: &Session, how: &'static str| {
        let env = &env;
        let s = s.clone();
        async move {
            let key = env.record_key(&s).await;
            let field = if how == "garble" {
                "soon".to_owned()
            } else {
                " ".repeat(20)
            };
            overwrite(&env.pool, &key, EXPIRES_AT, &field).await;
            key
        }
    };
    let garbled_key = corrupt(&garbled, "garble").await;
    let missing_key = corrupt(&missing, "drop").await;

    for broken in [&garbled, &missing] {
        assert!(matches!(
            env.store.load(broken.id()).await,
            Err(Error::Codec(_))
        ));
    }
    let listed = env.store.owner_sessions("val", None).await.unwrap();
    assert_eq!(listed.len(), 1, "unreadable sessions are not listed");
    assert_eq!(listed[0].handle, fine.id().handle());

    assert!(
        env.store.destroy(garbled.id()).await.unwrap(),
        "a record with a garbled expiry can be ended, and says so"
    );
    assert_eq!(
        env.store
            .destroy_owner_sessions("val", Some(fine.id()))
            .await
            .unwrap(),
        1,
        "a record without an expiry is ended by revocation"
    );
    for key in [&garbled_key, &missing_key] {
        assert_eq!(
            common::pexpiretime(&env.pool, key).await,
            -2,
            "{key} is gone"
        );
    }

    // Purging still works for everything behind broken records in the
    // same index.
    let doomed = [
        env.saved(None).await,
        env.saved(None).await,
        env.saved(None).await,
    ];
    corrupt(&doomed[0], "garble").await;
    corrupt(&doomed[1], "drop").await;
    env.clock.advance(31 * MINUTE);
    assert_eq!(
        env.store
            .purge_expired()
            .await
            .expect("a corrupt expiry must not break purging"),
        4,
        "the three expired sessions and the sound one"
    );
    assert!(
        env.data_keys().await.iter().all(|k| !k.contains(":r:")),
        "no record is left"
    );
    env.cleanup().await;
}

/// Fields garbled into what Lua's `tonumber` would read as a number (and
/// so did the scripts, once), or into a number out of range: where, what.
const GARBLED: &[(usize, &str)] = &[
    (OWNER_LEN_AT, "1.5 "),
    (OWNER_LEN_AT, "9e99"),
    (OWNER_LEN_AT, " inf"),
    (OWNER_LEN_AT, "nan "),
    (OWNER_LEN_AT, "0x1f"),
    (OWNER_LEN_AT, " 12 "),
    (OWNER_LEN_AT, "2000"),
    // More owner than the value holds.
    (OWNER_LEN_AT, "0999"),
    (EXPIRES_AT, "                 1e5"),
    (EXPIRES_AT, "+1e15               "),
    (EXPIRES_AT, "                 inf"),
    (EXPIRES_AT, "0x1f                "),
    (EXPIRES_AT, " 1732000000000000000"),
    (EXPIRES_AT, "+9999999999999999999"),
    (LAST_ACTIVE_AT, "+1e5                "),
    (CREATED_AT, "                 nan"),
    (ABSOLUTE_AT, "                 inf"),
    (VERSION_AT, "                 1e5"),
];

/// Load, save (of a changed copy), touch and rotation of `s`, whose stored
/// record is corrupt, are each a codec error for that session.
async fn assert_corrupt_everywhere(store: &RedisSessionStore, s: &Session, what: &str) {
    match store.load(s.id()).await {
        Err(Error::Codec(_)) => {}
        other => panic!("load of {what}: {other:?}"),
    }
    let mut changed = s.clone();
    changed.set("k", "w");
    match store.save(&mut changed).await {
        Err(Error::Codec(_)) => {}
        other => panic!("save of {what}: {other:?}"),
    }
    match store.touch(&mut s.clone()).await {
        Err(Error::Codec(_)) => {}
        other => panic!("touch of {what}: {other:?}"),
    }
    match store.cycle_id(&mut s.clone()).await {
        Err(Error::Codec(_)) => {}
        other => panic!("cycle_id of {what}: {other:?}"),
    }
}

async fn garbled_numbers_make_a_record_corrupt_and_fail_no_script(url: &str) {
    // One bucket, so the garbled records share their expiry index (and
    // purge script) with the sound ones.
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let garble = |owner: Option<&'static str>, at: usize, junk: &'static str| {
        let env = &env;
        async move {
            let s = env.saved(owner).await;
            let key = env.record_key(&s).await;
            overwrite(&env.pool, &key, at, junk).await;
            s
        }
    };
    let fine = env.saved(Some("quin")).await;
    let mut broken = Vec::new();
    for &(at, junk) in GARBLED {
        broken.push(garble(Some("quin"), at, junk).await);
    }
    for (s, (at, junk)) in broken.iter().zip(GARBLED) {
        assert_corrupt_everywhere(&env.store, s, &format!("{junk:?} at {at}")).await;
    }
    assert_eq!(
        env.store.load(fine.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );
    let listed = env.store.owner_sessions("quin", None).await.unwrap();
    assert_eq!(listed.len(), 1, "only the sound session is listed");
    assert_eq!(listed[0].handle, fine.id().handle());

    // Every one can be ended: by ID, or by revoking the owner.
    let (by_id, by_owner) = broken.split_at(broken.len() / 2);
    for s in by_id {
        assert!(env.store.destroy(s.id()).await.unwrap());
    }
    assert_eq!(
        env.store
            .destroy_owner_sessions("quin", Some(fine.id()))
            .await
            .expect("revocation ends garbled records"),
        by_owner.len() as u64
    );
    let records: Vec<String> = env
        .data_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(":r:"))
        .collect();
    assert_eq!(
        records,
        vec![env.record_key(&fine).await],
        "only the sound record is left"
    );

    // Purging works through garbled records of every kind, owned or not.
    let mut doomed = 0;
    for (i, &(at, junk)) in GARBLED.iter().enumerate() {
        garble((i % 2 == 0).then_some("quin"), at, junk).await;
        doomed += 1;
    }
    let expired = env.saved(Some("quin")).await;
    env.clock.advance(31 * MINUTE);
    let live = env.saved(Some("quin")).await;
    // A record that has not expired, whose owner is not UTF-8, and whose
    // index entry is due: corrupt, so purged too.
    let not_utf8 = env.saved(Some("quin")).await;
    let key = env.record_key(&not_utf8).await;
    let bad = Value::Bytes(Bytes::from_static(b"\xff"));
    common::raw(
        &env.pool,
        "SETRANGE",
        vec![key.as_str().into(), (RECORD_HEADER_LEN as i64).into(), bad],
    )
    .await;
    let index = env.key_ending(":idx").await;
    let due = ms(not_utf8.last_active()) - 1_000;
    let args = vec![
        index.as_str().into(),
        due.into(),
        not_utf8.id().storage_key().to_hex().into(),
    ];
    common::raw(&env.pool, "ZADD", args).await;
    assert!(matches!(
        env.store.load(not_utf8.id()).await,
        Err(Error::Codec(_))
    ));
    assert_eq!(
        env.store
            .purge_expired()
            .await
            .expect("garbled records must not break purging"),
        doomed + 3,
        "the garbled records, and the sound ones that expired"
    );
    assert!(env.store.load(expired.id()).await.unwrap().is_none());
    assert!(env.store.load(live.id()).await.unwrap().is_some());
    let records: Vec<String> = env
        .data_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(":r:"))
        .collect();
    assert_eq!(records, vec![env.record_key(&live).await]);
    env.cleanup().await;
}

async fn a_key_of_another_type_under_a_record_name_is_a_corrupt_record(url: &str) {
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let fine = env.saved(Some("rex")).await;
    // A hash where the record is, as the format before kept sessions.
    let planted = [
        env.saved(Some("rex")).await,
        env.saved(Some("rex")).await,
        env.saved(None).await,
    ];
    let mut keys = Vec::new();
    for s in &planted {
        let key = env.record_key(s).await;
        let _: i64 = env.pool.del(key.as_str()).await.unwrap();
        let args = vec![key.as_str().into(), "version".into(), "1".into()];
        common::raw(&env.pool, "HSET", args).await;
        keys.push(key);
    }
    // A hash of the format before, named as its records were, disturbs
    // nothing.
    let old_name = format!("{}{{0}}:s:{}", env.prefix, fine.id().storage_key().to_hex());
    let args = vec![old_name.as_str().into(), "version".into(), "1".into()];
    common::raw(&env.pool, "HSET", args).await;
    assert_eq!(
        env.store.load(fine.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );

    for s in &planted {
        assert_corrupt_everywhere(&env.store, s, "a hash").await;
    }
    assert_eq!(env.store.count_owner_sessions("rex").await.unwrap(), 1);
    assert!(
        env.store.destroy(planted[0].id()).await.unwrap(),
        "destroy ends it"
    );
    assert_eq!(
        env.store
            .destroy_owner_sessions("rex", Some(fine.id()))
            .await
            .unwrap(),
        1
    );
    env.clock.advance(31 * MINUTE);
    assert_eq!(
        env.store.purge_expired().await.unwrap(),
        2,
        "the expired session and the hash"
    );
    for key in &keys {
        let kind = common::raw(&env.pool, "TYPE", vec![key.as_str().into()]).await;
        assert_eq!(kind.as_str().as_deref(), Some("none"), "{key} is gone");
    }
    let _: i64 = env.pool.del(old_name.as_str()).await.unwrap();
    env.cleanup().await;
}

async fn deadlines_at_the_end_of_time_work(url: &str) {
    // Both timeouts as long as a `Duration` goes: deadlines saturate at
    // `i64::MAX`.
    let env = Env::with_config(
        url,
        |clock| {
            SessionConfig::new(Duration::MAX)
                .with_absolute_timeout(Duration::MAX)
                .with_max_sessions_per_owner(5, OwnerLimitPolicy::RefuseNew)
                .with_clock(clock)
        },
        |b| b.buckets(1),
    )
    .await;
    let mut s = env.store.create().await.unwrap();
    s.set("k", "v");
    s.set_owner("zed");
    env.store.save(&mut s).await.expect("a login");
    assert_eq!(ms(s.expires_at()), i64::MAX);
    let key = env.record_key(&s).await;
    assert_eq!(
        common::pexpiretime(&env.pool, &key).await,
        LATEST_DEADLINE_MS,
        "Redis is given the end of 9999"
    );
    let mut loaded = env.store.load(s.id()).await.unwrap().unwrap();
    assert_eq!(loaded.get("k"), Some("v"));
    env.clock.advance(MINUTE);
    loaded.set("n", "1");
    env.store.save(&mut loaded).await.expect("an update");
    env.clock.advance(MINUTE);
    env.store.touch(&mut loaded).await.expect("a touch");
    let old = loaded.id().clone();
    env.store.cycle_id(&mut loaded).await.expect("a rotation");
    assert!(env.store.load(&old).await.unwrap().is_none());
    assert_eq!(
        env.store.load(loaded.id()).await.unwrap().unwrap().get("n"),
        Some("1")
    );
    let mut anon = env.store.create().await.unwrap();
    env.store.save(&mut anon).await.unwrap();
    env.store.cycle_id(&mut anon).await.unwrap();
    env.store.touch(&mut anon).await.unwrap();

    // Purge repairs a lagging index entry of such a session.
    let index = env.key_ending(":idx").await;
    let now = ms(loaded.last_active());
    let args = vec![
        index.as_str().into(),
        (now - 1_000).into(),
        loaded.id().storage_key().to_hex().into(),
    ];
    common::raw(&env.pool, "ZADD", args).await;
    assert_eq!(env.store.purge_expired().await.expect("a purge"), 0);
    assert_eq!(env.store.len().await.unwrap(), 2);
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        LATEST_DEADLINE_MS
    );

    let listed = env.store.owner_sessions("zed", None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, loaded.id().handle());
    assert_eq!(
        env.store
            .destroy_owner_sessions("zed", None)
            .await
            .expect("a revocation"),
        1
    );
    assert!(env.store.load(loaded.id()).await.unwrap().is_none());
    assert!(env.store.destroy(anon.id()).await.unwrap());
    env.cleanup().await;
}

async fn purge_repairs_an_index_entry_and_the_index_expiry(url: &str) {
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let s = env.saved(None).await;
    let index = env.key_ending(":idx").await;
    // An entry whose score fell behind its live record, and an index that
    // would expire before the record (what a write cut short between its
    // steps could leave).
    let now = ms(s.last_active());
    common::raw(
        &env.pool,
        "ZADD",
        vec![
            index.as_str().into(),
            (now - 1_000).into(),
            s.id().storage_key().to_hex().into(),
        ],
    )
    .await;
    common::raw(
        &env.pool,
        "PEXPIREAT",
        vec![index.as_str().into(), (now + 60_000).into()],
    )
    .await;
    assert_eq!(env.store.len().await.unwrap(), 0);

    assert_eq!(
        env.store.purge_expired().await.unwrap(),
        0,
        "the live session stays"
    );
    assert_eq!(
        env.store.len().await.unwrap(),
        1,
        "its index entry is repaired"
    );
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(s.expires_at()),
        "and the index lives as long as the session again"
    );
    env.cleanup().await;
}

async fn a_clock_at_the_end_of_time_is_no_panic(url: &str) {
    let env = Env::new(url, |c| c).await;
    let s = env.saved(Some("wim")).await;
    env.clock.set(session_core::from_ms(i64::MAX));
    assert_eq!(env.store.len().await.unwrap(), 0);
    assert!(env.store.load(s.id()).await.unwrap().is_none());
    assert_eq!(env.store.count_owner_sessions("wim").await.unwrap(), 0);
    assert_eq!(env.store.purge_expired().await.unwrap(), 1);
    env.cleanup().await;
}

async fn owner_index_entries_are_checked_against_the_record(url: &str) {
    let env = Env::new(url, |c| c).await;
    let mine = env.saved(Some("nina")).await;
    let index = env.key_ending(":owner").await;
    let theirs = env.saved(Some("oscar")).await;
    let ghost = session_core::SessionId::generate().unwrap();
    // Entries no record backs: a session of someone else, and one that never
    // existed (as an interrupted login would leave).
    let far = ms(mine.expires_at()) + 60_000;
    for key in [theirs.id().storage_key(), ghost.storage_key()] {
        let args = vec![index.as_str().into(), far.into(), key.to_hex().into()];
        common::raw(&env.pool, "ZADD", args).await;
    }
    let listed = env.store.owner_sessions("nina", None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].handle, mine.id().handle());
    assert_eq!(env.store.count_owner_sessions("nina").await.unwrap(), 1);
    assert!(
        !env.store
            .destroy_owner_session("nina", &theirs.id().handle())
            .await
            .unwrap()
    );
    assert_eq!(
        env.store
            .destroy_owner_sessions("nina", None)
            .await
            .unwrap(),
        1
    );
    assert!(
        env.store.load(theirs.id()).await.unwrap().is_some(),
        "another owner's session survives"
    );
    // The revoked session's entry goes with it; entries no record of the
    // owner's backs stay until their deadline passes (a login may have
    // claimed one and not written yet), and are dropped after it.
    assert_eq!(zcard(&env.pool, &index).await, 2);
    env.clock.advance(32 * MINUTE);
    let fresh = env.saved(Some("nina")).await;
    assert_eq!(
        zcard(&env.pool, &index).await,
        1,
        "only the new login's entry is left"
    );

    // Rebinding: the new owner lists the session, the old one neither lists
    // nor revokes it, and the old owner's entry goes.
    let mut moved = env.saved(Some("oscar")).await;
    env.clock.advance(MINUTE);
    moved.set_owner("nina");
    env.store.save(&mut moved).await.unwrap();
    assert_eq!(env.store.count_owner_sessions("oscar").await.unwrap(), 0);
    assert_eq!(env.store.count_owner_sessions("nina").await.unwrap(), 2);
    assert_eq!(
        env.store
            .destroy_owner_sessions("oscar", None)
            .await
            .unwrap(),
        0
    );
    assert!(env.store.load(moved.id()).await.unwrap().is_some());
    let owner_indexes: Vec<String> = env
        .keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(":owner"))
        .collect();
    assert_eq!(
        owner_indexes,
        std::slice::from_ref(&index),
        "oscar has no session left"
    );
    assert!(env.store.load(fresh.id()).await.unwrap().is_some());
    env.cleanup().await;
}

async fn index_members_that_name_no_session_fail_nothing(url: &str) {
    let env = Env::with(url, |c| c, |b| b.buckets(1)).await;
    let mine = env.saved(Some("pia")).await;
    let other = env.saved(Some("pia")).await;
    let (owner_index, bucket_index) =
        (env.key_ending(":owner").await, env.key_ending(":idx").await);
    let junk: [&[u8]; 3] = [b"\xff\xfe not utf-8", b"short", &[b'g'; 64]];
    let far = ms(mine.expires_at()) + 60_000;
    for member in junk {
        for (index, score) in [(&owner_index, far), (&bucket_index, 1)] {
            let args = vec![
                index.as_str().into(),
                score.into(),
                Value::Bytes(Bytes::copy_from_slice(member)),
            ];
            common::raw(&env.pool, "ZADD", args).await;
        }
    }
    // Far more junk than one purge batch takes, all due.
    let mut args: Vec<Value> = vec![bucket_index.as_str().into()];
    for i in 0..600 {
        args.push(1.into());
        args.push(Value::Bytes(Bytes::from(
            format!("junk-\u{e9}-{i}\u{ff}").into_bytes(),
        )));
    }
    common::raw(&env.pool, "ZADD", args).await;

    assert_eq!(env.store.count_owner_sessions("pia").await.unwrap(), 2);
    let listed = env
        .store
        .owner_sessions("pia", Some(mine.id()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    env.store.destroy(other.id()).await.unwrap();
    assert_eq!(env.store.purge_expired().await.unwrap(), 0);
    let left = common::raw(&env.pool, "ZCARD", vec![bucket_index.as_str().into()]).await;
    assert_eq!(left.as_i64(), Some(1), "the purge dropped the junk it met");
    assert_eq!(
        env.store.destroy_owner_sessions("pia", None).await.unwrap(),
        1
    );
    assert!(env.store.load(mine.id()).await.unwrap().is_none());
    env.cleanup().await;
}

async fn a_lock_key_of_another_type_fails_a_login_at_once(url: &str) {
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(5, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    let first = env.saved(Some("quinn")).await;
    let lock = env.key_ending(":owner").await.replace(":owner", ":lock");
    let args = vec![lock.as_str().into(), "field".into(), "value".into()];
    common::raw(&env.pool, "HSET", args).await;
    let started = std::time::Instant::now();
    let mut login = env.store.create().await.unwrap();
    login.set_owner("quinn");
    let err = env.store.save(&mut login).await.unwrap_err();
    assert!(
        matches!(err, Error::Backend(_)) && err.to_string().contains("WRONGTYPE"),
        "{err}"
    );
    let err = env
        .store
        .destroy_owner_sessions("quinn", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no waiting for a lock that cannot be taken: {:?}",
        started.elapsed()
    );
    assert!(env.store.load(first.id()).await.unwrap().is_some());
    env.cleanup().await;
}

/// Listing and counting an owner's sessions read without the owner's lock:
/// a lock held elsewhere (a login of that owner under way, or a crashed
/// holder whose lease has not run out) does not hold them up.
async fn listing_and_counting_do_not_wait_for_the_owners_lock(url: &str) {
    let env = Env::with(
        url,
        |c| c,
        |b| b.owner_lock_wait(Duration::from_millis(100)),
    )
    .await;
    let first = env.saved(Some("nia")).await;
    env.saved(Some("nia")).await;
    let lock = env.key_ending(":owner").await.replace(":owner", ":lock");
    let args = vec![
        lock.as_str().into(),
        "another-holder".into(),
        "PX".into(),
        60_000.into(),
    ];
    common::raw(&env.pool, "SET", args).await;
    let listed = env
        .store
        .owner_sessions("nia", Some(first.id()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|i| i.is_current).count(), 1);
    assert_eq!(env.store.count_owner_sessions("nia").await.unwrap(), 2);
    assert!(
        env.store.destroy_owner_sessions("nia", None).await.is_err(),
        "revocation still waits for the lock"
    );
    env.cleanup().await;
}

/// While one of an owner's sessions rotates over and over, every listing
/// and count made meanwhile (without the lock) sees each session exactly
/// once: never the rotating one under both IDs, never under neither.
async fn listings_see_a_rotating_session_exactly_once(url: &str) {
    let env = Env::new(url, |c| c).await;
    let mut rotating = env.saved(Some("rio")).await;
    env.saved(Some("rio")).await;
    env.saved(Some("rio")).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rotations = {
        let (store, done) = (env.store.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            for _ in 0..150 {
                store.cycle_id(&mut rotating).await.unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut reads = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let (listed, counted) = tokio::join!(
            env.store.owner_sessions("rio", None),
            env.store.count_owner_sessions("rio")
        );
        let listed = listed.unwrap();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert_eq!(counted.unwrap(), 3);
        reads += 1;
    }
    rotations.await.unwrap();
    assert!(reads > 1, "the listings ran while the session rotated");
    env.cleanup().await;
}

async fn owner_locks_are_released_after_each_login(url: &str) {
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(5, OwnerLimitPolicy::RefuseNew)
    })
    .await;
    let mut s = env.saved(Some("kim")).await;
    env.store.cycle_id(&mut s).await.unwrap();
    env.store.destroy_owner_sessions("kim", None).await.unwrap();
    assert!(
        env.keys().await.iter().all(|k| !k.ends_with(":lock")),
        "no lock key is left"
    );
    env.cleanup().await;
}

/// Every per-owner key under the prefix (owner indexes and locks).
async fn owner_keys(env: &Env) -> Vec<String> {
    env.keys()
        .await
        .into_iter()
        .filter(|k| k.ends_with(":owner") || k.ends_with(":lock"))
        .collect()
}

async fn zcard(pool: &Pool, key: &str) -> i64 {
    common::raw(pool, "ZCARD", vec![key.into()])
        .await
        .as_i64()
        .unwrap()
}

async fn login(env: &Env, owner: &str) -> Session {
    let mut s = env.store.create().await.unwrap();
    s.set("k", "v");
    s.set_owner(owner);
    env.store.cycle_id(&mut s).await.unwrap();
    s
}

/// Once an owner has no session left (revoked, logged out, ended over the
/// limit, purged), nothing is left in Redis under the owner's name; while
/// some are left, the owner's index names only those and lives no longer
/// than the latest of them.
async fn owner_keys_do_not_outlive_the_owners_sessions(url: &str) {
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(2, OwnerLimitPolicy::EndOldest)
    })
    .await;

    // Sign out everywhere.
    login(&env, "pia").await;
    env.clock.advance(MINUTE);
    login(&env, "pia").await;
    assert_eq!(
        env.store.destroy_owner_sessions("pia", None).await.unwrap(),
        2
    );
    assert_eq!(
        owner_keys(&env).await,
        Vec::<String>::new(),
        "after revoking all"
    );

    // Sign out everywhere else, then log out.
    let first = login(&env, "pia").await;
    env.clock.advance(MINUTE);
    let second = login(&env, "pia").await;
    assert_eq!(
        env.store
            .destroy_owner_sessions("pia", Some(second.id()))
            .await
            .unwrap(),
        1
    );
    let index = env.key_ending(":owner").await;
    assert_eq!(zcard(&env.pool, &index).await, 1, "only the kept session");
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(second.expires_at())
    );
    assert!(env.store.load(first.id()).await.unwrap().is_none());
    assert!(env.store.destroy(second.id()).await.unwrap());
    assert_eq!(owner_keys(&env).await, Vec::<String>::new(), "after logout");

    // Sign out one device by its handle.
    let s = login(&env, "pia").await;
    assert!(
        env.store
            .destroy_owner_session("pia", &s.id().handle())
            .await
            .unwrap()
    );
    assert_eq!(
        owner_keys(&env).await,
        Vec::<String>::new(),
        "after ending by handle"
    );

    // Logins over the limit end the oldest sessions: their entries go too.
    let mut last = Vec::new();
    for _ in 0..4 {
        env.clock.advance(MINUTE);
        last.push(login(&env, "pia").await);
    }
    let index = env.key_ending(":owner").await;
    assert_eq!(zcard(&env.pool, &index).await, 2, "the two live sessions");
    assert_eq!(
        common::pexpiretime(&env.pool, &index).await,
        ms(last[3].expires_at())
    );

    // A rotation (privilege change) moves a session to a new key: the old
    // key's entry goes with the old key.
    let mut rotated = last.pop().unwrap();
    env.store.cycle_id(&mut rotated).await.unwrap();
    assert_eq!(zcard(&env.pool, &index).await, 2, "no entry for the old ID");

    // Rebinding to another owner, or clearing the owner, ends the binding.
    let mut other = last.pop().unwrap();
    other.set_owner("rui");
    env.store.save(&mut other).await.unwrap();
    rotated.clear_owner();
    env.store.save(&mut rotated).await.unwrap();
    assert_eq!(env.store.count_owner_sessions("pia").await.unwrap(), 0);
    assert_eq!(
        owner_keys(&env).await,
        [env.key_ending(":owner").await],
        "only rui's index is left"
    );
    assert_eq!(env.store.count_owner_sessions("rui").await.unwrap(), 1);
    other.clear_owner();
    env.store.save(&mut other).await.unwrap();
    assert_eq!(
        owner_keys(&env).await,
        Vec::<String>::new(),
        "after unbinding"
    );

    // A request still holding a session that was revoked meanwhile: its
    // save or touch is refused and leaves nothing under the owner's name.
    let mut stale = login(&env, "pia").await;
    let mut stale_too = env.store.load(stale.id()).await.unwrap().unwrap();
    env.store.destroy_owner_sessions("pia", None).await.unwrap();
    env.clock.advance(MINUTE);
    assert!(matches!(
        env.store.touch(&mut stale).await,
        Err(Error::NotFound)
    ));
    stale_too.set("late", "write");
    assert!(matches!(
        env.store.save(&mut stale_too).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        owner_keys(&env).await,
        Vec::<String>::new(),
        "after stale writes"
    );

    // Expiry and purge.
    let mut owned = login(&env, "pia").await;
    env.clock.advance(MINUTE);
    env.store.touch(&mut owned).await.unwrap();
    env.clock.advance(31 * MINUTE);
    assert_eq!(env.store.purge_expired().await.unwrap(), 3);
    assert_eq!(owner_keys(&env).await, Vec::<String>::new(), "after purge");
    assert_eq!(env.data_keys().await, Vec::<String>::new());
    env.cleanup().await;
}

/// With the real clock, Redis removes every key of an owner whose sessions
/// expired, by itself, without a purge.
async fn an_owners_keys_expire_with_the_owners_sessions(url: &str) {
    let pool = common::pool(url, 1).await;
    let prefix = common::unique_prefix("owner-expiry");
    let store = RedisSessionStore::builder_from_pool(pool.clone())
        .config(
            SessionConfig::new(Duration::from_millis(400))
                .with_clock(SystemClock)
                .with_max_sessions_per_owner(1, OwnerLimitPolicy::EndOldest),
        )
        .key_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let mut s = store.create().await.unwrap();
    s.set_owner("quinn");
    store.cycle_id(&mut s).await.unwrap();
    store.touch(&mut s).await.unwrap();
    let owner_keys: Vec<String> = common::keys_with_prefix(&pool, &prefix)
        .await
        .into_iter()
        .filter(|k| k.ends_with(":owner") || k.ends_with(":lock"))
        .collect();
    assert!(!owner_keys.is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for key in owner_keys {
        let exists: i64 = pool.exists(key.as_str()).await.unwrap();
        assert_eq!(exists, 0, "{key} outlived the owner's sessions");
    }
    common::delete_prefix(&pool, &prefix).await;
}

async fn builds_from_a_url_and_round_trips(url: &str) {
    let prefix = common::unique_prefix("url");
    let store = RedisSessionStore::builder(url)
        .key_prefix(prefix.clone())
        .pool_size(2)
        .buckets(16)
        .command_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_eq!((store.key_prefix(), store.buckets()), (prefix.as_str(), 16));
    let mut s = store.create().await.unwrap();
    s.set("via", "url");
    s.set_owner("leo");
    store.cycle_id(&mut s).await.unwrap();
    assert_eq!(
        store.load(s.id()).await.unwrap().unwrap().get("via"),
        Some("url")
    );
    assert_eq!(store.len().await.unwrap(), 1);
    assert_eq!(store.count_owner_sessions("leo").await.unwrap(), 1);
    assert!(store.destroy(s.id()).await.unwrap());
    let pool = common::pool(url, 1).await;
    common::delete_prefix(&pool, &prefix).await;
}

/// A login under `EndOldest` whose request is dropped once its session is
/// stored still ends the oldest session: the owner is never left over the
/// limit (a revocation, which takes the owner's lock, finds exactly the
/// limit). Found by a randomized stress run.
async fn a_dropped_login_never_leaves_the_owner_over_the_limit(url: &str) {
    const LIMIT: u64 = 2;
    let env = Env::new(url, |c| {
        c.with_max_sessions_per_owner(LIMIT as u32, OwnerLimitPolicy::EndOldest)
    })
    .await;
    for round in 0..3 {
        let owner = format!("ivan-{round}");
        for _ in 0..LIMIT {
            let mut s = env.store.create().await.unwrap();
            s.set_owner(&owner);
            env.store.save(&mut s).await.unwrap();
        }
        let mut login = env.store.create().await.unwrap();
        login.set_owner(&owner);
        let id = login.id().clone();
        // Poll the login one step at a time (it makes no progress between
        // polls) and drop it as soon as its session is stored.
        let mut save = Box::pin(env.store.save(&mut login));
        loop {
            let step = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(save.as_mut().poll(cx).is_ready())
            });
            assert!(!step.await, "round {round}: the login finished undisturbed");
            if env.store.load(&id).await.unwrap().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(save);
        let ended = env
            .store
            .destroy_owner_sessions(&owner, None)
            .await
            .unwrap();
        assert_eq!(
            ended, LIMIT,
            "round {round}: a login dropped once stored left the owner over the limit"
        );
    }
    env.cleanup().await;
}

/// A store on `url` (one bucket) whose clock is `clock`, as an [`Env`].
async fn hooked(url: &str, clock: &HookClock) -> Env {
    let pool = common::pool(url, 2).await;
    let prefix = common::unique_prefix("behaviour");
    let store = RedisSessionStore::builder_from_pool(pool.clone())
        .config(SessionConfig::new(30 * MINUTE).with_clock(clock.clone()))
        .key_prefix(prefix.clone())
        .buckets(1)
        .build()
        .await
        .unwrap();
    Env {
        pool,
        store,
        clock: clock.time.clone(),
        prefix,
    }
}

/// At the next reading of `clock` (or the one after, with `second`), a
/// minute passes and another request touches the session `id` of `store`.
fn touch_after(clock: &HookClock, second: bool, store: &RedisSessionStore, id: &SessionId) {
    let (other, id, time) = (store.clone(), id.clone(), clock.time.clone());
    let touch = move || async move {
        time.advance(MINUTE);
        let mut s = other.load(&id).await.unwrap().unwrap();
        other.touch(&mut s).await.unwrap();
    };
    if second {
        let again = clock.clone();
        clock.arm(move || again.arm_request(touch));
    } else {
        clock.arm_request(touch);
    }
}

/// A save or rotation whose clock reading came before a touch of the same
/// session reached Redis keeps the touch's later deadline: in the record,
/// its native expiry, its bucket index entry, its owner's index (a session
/// stays listed until its deadline), and in the caller's session.
async fn a_late_write_keeps_the_later_deadline_everywhere(url: &str) {
    for (owner, rotate) in [(None, false), (None, true), (Some("ann"), true)] {
        let clock = HookClock::default();
        let env = hooked(url, &clock).await;
        let first = env.saved(owner).await;
        let mut late = env.store.load(first.id()).await.unwrap().unwrap();
        // An owned session's rotation reads the clock again under the
        // owner's lock: the touch comes after that reading.
        touch_after(&clock, owner.is_some(), &env.store, first.id());
        late.set("late", "write");
        if rotate {
            env.store.cycle_id(&mut late).await.unwrap();
        } else {
            env.store.save(&mut late).await.unwrap();
        }
        let case = format!("owner {owner:?}, rotate {rotate}");
        let stored = env.store.load(late.id()).await.unwrap().unwrap();
        assert_eq!(stored.get("late"), Some("write"), "{case}");
        assert_eq!(stored.expires_at(), first.expires_at() + MINUTE, "{case}");
        assert_eq!(stored.last_active(), first.last_active() + MINUTE, "{case}");
        assert_eq!(late.expires_at(), stored.expires_at(), "{case}");
        assert_eq!(late.last_active(), stored.last_active(), "{case}");
        let deadline = ms(stored.expires_at());
        let record = env.record_key(&late).await;
        assert_eq!(
            common::pexpiretime(&env.pool, &record).await,
            deadline,
            "{case}"
        );
        let index = env.key_ending(":idx").await;
        let score = common::raw(
            &env.pool,
            "ZSCORE",
            vec![index.into(), record[record.len() - 64..].into()],
        )
        .await;
        assert_eq!(score.as_f64(), Some(deadline as f64), "{case}");
        if let Some(owner) = owner {
            // Past the late write's own deadline, before the stored one.
            env.clock.advance(30 * MINUTE - MINUTE / 2);
            assert_eq!(
                env.store.count_owner_sessions(owner).await.unwrap(),
                1,
                "{case}"
            );
        }
        env.cleanup().await;
    }
}

macro_rules! against {
    ($module:ident, $var:expr, [$($check:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(url) = session_core::testing::service_url($var) else { return };
                    super::$check(&url).await;
                }
            )*
        }
    };
}

against!(
    single_node,
    crate::common::SINGLE,
    [
        stored_keys_and_values_never_contain_the_session_id,
        records_and_indexes_expire_natively_at_the_session_deadline,
        redis_removes_an_idle_session_by_itself,
        concurrent_logins_cannot_exceed_a_refusing_owner_limit,
        concurrent_logins_end_the_oldest_sessions_to_keep_the_limit,
        a_dropped_login_never_leaves_the_owner_over_the_limit,
        a_stale_login_at_the_limit_is_refused_as_stale,
        purge_removes_expired_records_and_leaves_no_key_behind,
        purge_repairs_an_index_entry_and_the_index_expiry,
        bucket_indexes_stay_bounded_without_a_purge,
        an_entry_whose_record_redis_still_holds_is_left_for_purge,
        len_counts_only_this_stores_live_sessions,
        a_corrupt_record_is_a_codec_error_and_harms_no_other_session,
        a_corrupt_or_missing_expiry_harms_no_other_session,
        garbled_numbers_make_a_record_corrupt_and_fail_no_script,
        a_key_of_another_type_under_a_record_name_is_a_corrupt_record,
        deadlines_at_the_end_of_time_work,
        a_clock_at_the_end_of_time_is_no_panic,
        owner_index_entries_are_checked_against_the_record,
        index_members_that_name_no_session_fail_nothing,
        owner_locks_are_released_after_each_login,
        listing_and_counting_do_not_wait_for_the_owners_lock,
        listings_see_a_rotating_session_exactly_once,
        owner_keys_do_not_outlive_the_owners_sessions,
        an_owners_keys_expire_with_the_owners_sessions,
        a_lock_key_of_another_type_fails_a_login_at_once,
        builds_from_a_url_and_round_trips,
        a_late_write_keeps_the_later_deadline_everywhere,
    ]
);

against!(
    cluster,
    crate::common::CLUSTER,
    [
        stored_keys_and_values_never_contain_the_session_id,
        records_and_indexes_expire_natively_at_the_session_deadline,
        redis_removes_an_idle_session_by_itself,
        concurrent_logins_cannot_exceed_a_refusing_owner_limit,
        concurrent_logins_end_the_oldest_sessions_to_keep_the_limit,
        a_dropped_login_never_leaves_the_owner_over_the_limit,
        a_stale_login_at_the_limit_is_refused_as_stale,
        purge_removes_expired_records_and_leaves_no_key_behind,
        purge_repairs_an_index_entry_and_the_index_expiry,
        bucket_indexes_stay_bounded_without_a_purge,
        an_entry_whose_record_redis_still_holds_is_left_for_purge,
        len_counts_only_this_stores_live_sessions,
        a_corrupt_record_is_a_codec_error_and_harms_no_other_session,
        a_corrupt_or_missing_expiry_harms_no_other_session,
        garbled_numbers_make_a_record_corrupt_and_fail_no_script,
        a_key_of_another_type_under_a_record_name_is_a_corrupt_record,
        deadlines_at_the_end_of_time_work,
        a_clock_at_the_end_of_time_is_no_panic,
        owner_index_entries_are_checked_against_the_record,
        index_members_that_name_no_session_fail_nothing,
        owner_locks_are_released_after_each_login,
        listing_and_counting_do_not_wait_for_the_owners_lock,
        listings_see_a_rotating_session_exactly_once,
        owner_keys_do_not_outlive_the_owners_sessions,
        an_owners_keys_expire_with_the_owners_sessions,
        a_lock_key_of_another_type_fails_a_login_at_once,
        builds_from_a_url_and_round_trips,
        a_late_write_keeps_the_later_deadline_everywhere,
    ]
);

against!(
    sentinel,
    crate::common::SENTINEL,
    [
        builds_from_a_url_and_round_trips,
        owner_keys_do_not_outlive_the_owners_sessions
    ]
);

/// A Sentinel URL naming a service the sentinels do not monitor fails the
/// build with a message that names the service and the URL parameter.
#[tokio::test]
async fn an_unknown_sentinel_service_is_named_in_the_error() {
    let Some(url) = service_url(common::SENTINEL) else {
        return;
    };
    let (head, query) = url.split_once('?').unwrap();
    let other: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with("sentinelServiceName="))
        .collect();
    let url = format!(
        "{head}?sentinelServiceName=no-such-primary&{}",
        other.join("&")
    );
    let err = RedisSessionStore::builder(url.trim_end_matches('&'))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(
        shown.contains("\"no-such-primary\"") && shown.contains("sentinelServiceName"),
        "{shown}"
    );
}

#[tokio::test]
async fn builds_around_an_existing_client() {
    let Some(url) = service_url(common::SINGLE) else {
        return;
    };
    use session_redis::fred::prelude::{Builder, ClientLike, Config};
    let client = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let prefix = common::unique_prefix("client");
    let store = RedisSessionStore::builder_from_client(client.clone())
        .unwrap()
        .key_prefix(prefix.clone())
        .build()
        .await
        .unwrap();
    let mut s = store.create().await.unwrap();
    store.save(&mut s).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 1);
    assert!(store.destroy(s.id()).await.unwrap());
    drop(store);
    assert!(
        client.is_connected(),
        "the store leaves a client it did not make open"
    );
    let pool = common::pool(&url, 1).await;
    common::delete_prefix(&pool, &prefix).await;
}

/// A least-privilege ACL user without `INFO` (in `@dangerous`) can build a
/// store: the version comes from `HELLO`, which Redis lets every client run.
#[tokio::test]
async fn a_user_denied_info_can_build_a_store() {
    let Some(url) = service_url(common::SINGLE) else {
        return;
    };
    use session_redis::fred::prelude::{ClientLike, Config, Value};
    use session_redis::fred::types::{ClusterHash, CustomCommand};
    let admin = common::pool(&url, 1).await;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).unwrap();
    let nonce = u64::from_be_bytes(nonce);
    let (user, password) = (format!("sr-test-noinfo-{nonce:016x}"), format!("{nonce:x}"));
    let setuser = ["SETUSER", &user, "on", &format!(">{password}")];
    let rights = ["~*", "&*", "+@all", "-info"];
    let args = setuser.iter().chain(&rights).map(|&a| Value::from(a));
    common::raw(&admin, "ACL", args.collect()).await;
    let run = {
        let (url, user) = (url.clone(), user.clone());
        tokio::spawn(async move {
            let mut config = Config::from_url(&url).unwrap();
            config.username = Some(user.clone());
            config.password = Some(password);
            let prefix = common::unique_prefix("acl");
            let store = RedisSessionStore::builder_from_config(config)
                .key_prefix(prefix.clone())
                .build()
                .await
                .expect("a store, for a user without INFO");
            let ask = |cmd: &'static str, args: Vec<Value>| {
                let pool = store.pool().clone();
                async move {
                    let cmd = CustomCommand::new_static(cmd, ClusterHash::Random, false);
                    pool.custom::<Value, Value>(cmd, args).await
                }
            };
            let whoami = ask("ACL", vec!["WHOAMI".into()]).await.unwrap();
            assert_eq!(whoami.as_str().as_deref(), Some(user.as_str()));
            let info = ask("INFO", vec!["server".into()]).await.unwrap_err();
            assert!(info.details().starts_with("NOPERM"), "{info}");

            let mut s = store.create().await.unwrap();
            s.set("as", "least privilege");
            s.set_owner("acl");
            store.save(&mut s).await.unwrap();
            store.cycle_id(&mut s).await.unwrap();
            let loaded = store.load(s.id()).await.unwrap().unwrap();
            assert_eq!(loaded.get("as"), Some("least privilege"));
            assert_eq!(store.destroy_owner_sessions("acl", None).await.unwrap(), 1);
            drop(store);
            let pool = common::pool(&url, 1).await;
            common::delete_prefix(&pool, &prefix).await;
        })
        .await
    };
    common::raw(&admin, "ACL", vec!["DELUSER".into(), user.as_str().into()]).await;
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A server that will not tell its version (`HELLO` and `INFO` renamed
/// away, as some hosted offerings and proxies do) is given the benefit of
/// the doubt; one without `HELLO` only is asked with `INFO`.
#[tokio::test]
async fn a_server_that_hides_its_version_is_given_the_benefit_of_the_doubt() {
    // The private servers need the same installation as the shared one.
    if service_url(common::SINGLE).is_none() {
        return;
    }
    for renamed in [&["HELLO"][..], &["HELLO", "INFO"]] {
        let args: Vec<&str> = renamed
            .iter()
            .flat_map(|&c| ["--rename-command", c, ""])
            .collect();
        let server = common::PrivateRedis::start_with(&args);
        let store = RedisSessionStore::builder(server.url())
            .build()
            .await
            .unwrap_or_else(|e| panic!("without {renamed:?}: {e}"));
        let mut s = store.create().await.unwrap();
        store.save(&mut s).await.unwrap();
        assert!(store.load(s.id()).await.unwrap().is_some());
    }
}

/// A password the server refuses is not echoed back in the error, from a
/// single node or through Sentinel (to the sentinels or to the primary).
#[tokio::test]
async fn refused_credentials_are_not_echoed_in_errors() {
    let secret = "hunter2-sr-test";
    let mut urls = Vec::new();
    if let Some(url) = service_url(common::SINGLE) {
        let host = url.trim_start_matches("redis://");
        urls.push(format!("redis://:{secret}@{host}"));
        urls.push(format!("redis://nobody-sr-test:{secret}@{host}"));
    }
    if let Some(url) = service_url(common::SENTINEL) {
        let rest = url.trim_start_matches("redis-sentinel://");
        urls.push(format!("redis-sentinel://:{secret}@{rest}"));
        urls.push(format!("redis-sentinel://{rest}&sentinelPassword={secret}"));
    }
    for url in urls {
        // A server without a password may let a password pass: only the
        // refusals have something to show.
        if let Err(err) = RedisSessionStore::builder(url.as_str())
            .connect_timeout(Duration::from_secs(2))
            .build()
            .await
        {
            let shown = format!("{err} / {err:?}");
            eprintln!("{url}: {shown}");
            assert!(!shown.contains(secret), "{url}: {shown}");
        } else {
            eprintln!("{url}: accepted");
        }
    }
}

/// A Cluster node reached through a plain `redis://` URL would answer most
/// requests with `MOVED`, which fred follows only in Cluster mode: the
/// build refuses it at once, naming the URL to use, instead of a store that
/// fails two requests in three.
#[tokio::test]
async fn a_cluster_node_behind_a_plain_url_is_refused_naming_the_cluster_url() {
    let Some(url) = service_url(common::CLUSTER) else {
        return;
    };
    let rest = url.split_once("://").unwrap().1;
    let node = rest.split(['/', '?']).next().unwrap();
    let err = RedisSessionStore::builder(format!("redis://{node}"))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("redis-cluster://"), "{err}");
}
