//! SQLite: the conformance suite and the backend-specific promises, on
//! temporary database files.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{Error, SessionConfig, SessionStore, SessionStoreExt};
use session_db::diesel::r2d2::{ConnectionManager, Pool};
use session_db::diesel::{self, RunQueryDsl, SqliteConnection};
use session_db::{Database, DbError, DbPool, DbSessionStore, SqlitePool, SqliteTuning};
use tempfile::TempDir;

fn file_url(dir: &TempDir, file: &str) -> String {
    format!("sqlite://{}", dir.path().join(file).display())
}

fn sqlite_pool(store: &DbSessionStore) -> SqlitePool {
    match store.pool() {
        DbPool::Sqlite(pool) => pool.clone(),
        _ => unreachable!("a SQLite store has a SQLite pool"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir, "conformance.db");
    common::conformance(&url, &common::Tables::new(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_sqlite_in_memory() {
    // Every factory call opens a new in-memory database.
    common::conformance("sqlite::memory:", &common::Tables::new("sqlite::memory:")).await;
}

#[test]
fn sqlite_processes_share_sessions_and_survive_restarts() {
    if common::run_child_role() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    common::processes_share_sessions_and_survive_restarts(
        "sqlite_processes_share_sessions_and_survive_restarts",
        &file_url(&dir, "shared.db"),
        &common::unique_table("proc"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_sqlite_row_is_a_codec_error_for_that_session_only() {
    let dir = tempfile::tempdir().unwrap();
    common::corrupt_row_is_a_codec_error_for_that_session_only(&file_url(&dir, "c.db"), "sessions")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_touch_with_an_unchanged_clock_is_not_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    common::touch_with_an_unchanged_clock_is_not_a_miss(&file_url(&dir, "t.db"), "sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_owners_compare_exactly() {
    let dir = tempfile::tempdir().unwrap();
    common::owners_compare_exactly(&file_url(&dir, "o.db"), "sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_purge_removes_expired_rows_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    common::purge_removes_expired_rows_in_batches(&file_url(&dir, "p.db"), "sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_owner_limit_holds_under_concurrent_logins() {
    let dir = tempfile::tempdir().unwrap();
    common::owner_limit_holds_under_concurrent_logins(&file_url(&dir, "limit.db"), "sessions")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_first_starts_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    common::concurrent_first_starts_migrate_once(&file_url(&dir, "m.db"), "sessions").await;
}

/// 64 tasks on two stores (two pools, as two processes would have) hammer one
/// file: read-modify-write of one shared session, inserts, touches and loads
/// of their own. No increment is lost and no "database is locked" escapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writers_lose_no_update_and_never_see_database_is_locked() {
    const TASKS: u64 = 64;
    const INCREMENTS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir, "busy.db");
    let build = || {
        DbSessionStore::builder(&url)
            .pool_size(8)
            .connection_timeout(Duration::from_secs(30))
            .build()
    };
    let stores = [build().await.unwrap(), build().await.unwrap()];
    let mut shared = stores[0].create().await.unwrap();
    shared.insert("counter", &0u64).unwrap();
    stores[0].save(&mut shared).await.unwrap();

    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let store = stores[(n % 2) as usize].clone();
        let id = shared.id().clone();
        tasks.push(tokio::spawn(async move {
            let mut own = store.create().await?;
            own.set("task", n.to_string());
            store.save(&mut own).await?;
            for _ in 0..INCREMENTS {
                store
                    .update(&id, |s| {
                        let v: u64 = s.get_as("counter").ok().flatten().unwrap_or(0);
                        s.insert("counter", &(v + 1))
                    })
                    .await??;
                store.touch(&mut own).await?;
                assert!(store.load(own.id()).await?.is_some());
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            panic!("a writer failed: {e}");
        }
    }
    let end = stores[1].load(shared.id()).await.unwrap().unwrap();
    assert_eq!(
        end.get_as::<u64>("counter").unwrap(),
        Some(TASKS * INCREMENTS),
        "no increment is lost"
    );
    assert_eq!(end.version(), 1 + TASKS * INCREMENTS);
    assert_eq!(stores[0].len().await.unwrap(), 1 + TASKS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_fails_promptly_with_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = DbSessionStore::builder(file_url(&dir, "x.db"))
        .pool_size(1)
        .connection_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let mut s = store.create().await.unwrap();
    store.save(&mut s).await.unwrap();

    let pool = sqlite_pool(&store);
    let held = pool.get().unwrap(); // the only connection
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), store.load(s.id()))
        .await
        .expect("an exhausted pool must not hang");
    let waited = started.elapsed();
    match result {
        Err(Error::Backend(e)) => assert!(
            matches!(e.downcast_ref::<DbError>(), Some(DbError::Pool(_))),
            "the backend error says the pool had no connection: {e}"
        ),
        other => panic!("expected a Backend error, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(250),
        "it waited for the timeout: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "and no longer: {waited:?}");

    drop(held);
    assert!(
        store.load(s.id()).await.unwrap().is_some(),
        "the store works again"
    );
}

#[derive(diesel::QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = diesel::sql_types::Text)]
    journal_mode: String,
}

#[derive(diesel::QueryableByName)]
struct BusyTimeout {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    timeout: i64,
}

#[derive(diesel::QueryableByName)]
struct Synchronous {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    synchronous: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_sqlite_connection_is_tuned_for_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = DbSessionStore::builder(file_url(&dir, "tuned.db"))
        .pool_size(3)
        .connection_timeout(Duration::from_millis(1500))
        .build()
        .await
        .unwrap();
    let pool = sqlite_pool(&store);
    let mut held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    for conn in &mut held {
        let conn: &mut SqliteConnection = conn;
        let mode: JournalMode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(conn)
            .unwrap();
        assert_eq!(mode.journal_mode, "wal");
        let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
            .get_result(conn)
            .unwrap();
        assert_eq!(busy.timeout, 1500, "busy_timeout is the connection timeout");
        let sync: Synchronous = diesel::sql_query("PRAGMA synchronous")
            .get_result(conn)
            .unwrap();
        assert_eq!(sync.synchronous, 1, "synchronous = NORMAL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_an_existing_pool_shares_it_with_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db").to_string_lossy().into_owned();
    let pool = Pool::builder()
        .max_size(2)
        .connection_customizer(Box::new(SqliteTuning::default()))
        .build(ConnectionManager::<SqliteConnection>::new(&path))
        .unwrap();
    diesel::sql_query("CREATE TABLE app_users (id INTEGER PRIMARY KEY, name TEXT)")
        .execute(&mut *pool.get().unwrap())
        .unwrap();

    let (config, _clock) = common::manual();
    let store = DbSessionStore::from_pool(pool.clone())
        .table_name("app_sessions")
        .config(config)
        .build()
        .await
        .unwrap();
    assert_eq!(store.database(), Database::Sqlite);
    assert_eq!(store.table_name(), "app_sessions");
    let mut s = store.create().await.unwrap();
    s.set("k", "v");
    store.save(&mut s).await.unwrap();
    assert_eq!(
        sqlite_pool(&store).max_size(),
        2,
        "the application's pool, as it was built"
    );
    assert!(pool.state().connections <= 2);

    // The application's own tables are untouched; the sessions table is there.
    diesel::sql_query("INSERT INTO app_users (name) VALUES ('ann')")
        .execute(&mut *pool.get().unwrap())
        .unwrap();
    let reopened = DbSessionStore::builder(format!("sqlite://{path}"))
        .table_name("app_sessions")
        .build()
        .await
        .unwrap();
    assert_eq!(
        reopened.load(s.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_urls_and_plain_paths_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("same.db").to_string_lossy().into_owned();
    let first = DbSessionStore::connect(format!("sqlite://{path}"), SessionConfig::default())
        .await
        .unwrap();
    let mut s = first.create().await.unwrap();
    s.set("k", "v");
    first.save(&mut s).await.unwrap();
    for url in [
        path.clone(),
        format!("sqlite:{path}"),
        format!("file:{path}"),
    ] {
        let other = DbSessionStore::connect(&url, SessionConfig::default())
            .await
            .unwrap();
        assert_eq!(
            other.load(s.id()).await.unwrap().unwrap().get("k"),
            Some("v"),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sqlite_keeps_sessions_while_the_store_lives() {
    let store = DbSessionStore::builder("sqlite::memory:")
        .config(SessionConfig::from_secs(60))
        .pool_size(8)
        .build()
        .await
        .unwrap();
    assert_eq!(
        sqlite_pool(&store).max_size(),
        1,
        "one connection: one in-memory database"
    );
    let mut s = store.create().await.unwrap();
    s.set("k", "v");
    store.save(&mut s).await.unwrap();
    let store = Arc::new(store);
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (store, id) = (Arc::clone(&store), s.id().clone());
        readers.push(tokio::spawn(async move {
            store.load(&id).await.unwrap().is_some()
        }));
    }
    for r in readers {
        assert!(r.await.unwrap());
    }
}
