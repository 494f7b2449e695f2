//! SQLite: the conformance suite and the backend-specific promises, on
//! temporary database files.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::{Error, OwnerLimitPolicy, SessionConfig, SessionStore, SessionStoreExt};
use session_db::diesel::r2d2::{ConnectionManager, Pool};
use session_db::diesel::{self, Connection, RunQueryDsl, SqliteConnection};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_inserts_over_an_expired_row_conflict_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    common::racing_inserts_over_an_expired_row_conflict_cleanly(
        &file_url(&dir, "r.db"),
        "sessions",
    )
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

/// Writes that bind a session to an owner under a per-owner limit are
/// read-then-write transactions: they count the owner's sessions, then
/// write. Many of them at once from two pools on one file all succeed, and
/// the limit holds: `BEGIN IMMEDIATE` makes each wait for the write lock up
/// front. A deferred transaction would read first and then fail with
/// "database is locked" when it tried to write after another connection
/// committed (a WAL read snapshot that is no longer the latest cannot be
/// upgraded; `busy_timeout` does not help there); no transaction at all
/// would let two logins both squeeze under the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_then_write_transactions_wait_for_the_write_lock_instead_of_failing() {
    const TASKS: usize = 32;
    const ROUNDS: usize = 25;
    const OWNERS: usize = 4;
    const MAX: u32 = 2;
    let dir = tempfile::tempdir().unwrap();
    let url = file_url(&dir, "logins.db");
    let stores = async |table: &str, max: u32, policy| {
        let (config, _clock) = common::manual();
        let config = config.with_max_sessions_per_owner(max, policy);
        let build = || {
            DbSessionStore::builder(&url)
                .table_name(table)
                .config(config.clone())
                .pool_size(8)
                .connection_timeout(Duration::from_secs(30))
                .build()
        };
        [build().await.unwrap(), build().await.unwrap()]
    };
    let run = async |stores: &[DbSessionStore; 2], rounds: usize, prefix: &str| {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for n in 0..TASKS {
            let (store, barrier) = (stores[n % 2].clone(), Arc::clone(&barrier));
            let prefix = prefix.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut s = store.create().await?;
                s.set("cart", n.to_string());
                store.save(&mut s).await?;
                barrier.wait().await;
                // Each round binds the session to another owner.
                for round in 0..rounds {
                    s.set_owner(format!("{prefix}-{}", (n + round) % OWNERS));
                    if round % 2 == 0 {
                        store.cycle_id(&mut s).await?;
                    } else {
                        store.save(&mut s).await?;
                    }
                }
                Ok::<_, Error>(())
            }));
        }
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                panic!("a login failed: {e}");
            }
        }
    };

    // Contention: every write is a read-then-write transaction.
    let unlimited = stores("contention", u32::MAX, OwnerLimitPolicy::RefuseNew).await;
    run(&unlimited, ROUNDS, "user").await;
    let mut bound = 0;
    for owner in 0..OWNERS {
        bound += unlimited[0]
            .count_owner_sessions(&format!("user-{owner}"))
            .await
            .unwrap();
    }
    assert_eq!(bound, TASKS as u64, "every session is bound once");

    // The limit: one login per session, all at once, several times over.
    let limited = stores("limited", MAX, OwnerLimitPolicy::EndOldest).await;
    for wave in 0..8 {
        let prefix = format!("wave{wave}");
        run(&limited, 1, &prefix).await;
        for owner in 0..OWNERS {
            assert_eq!(
                limited[0]
                    .count_owner_sessions(&format!("{prefix}-{owner}"))
                    .await
                    .unwrap(),
                u64::from(MAX),
                "{prefix}-{owner}"
            );
        }
    }
}

/// Owner keys session-core refuses can have no sessions: the owner queries
/// answer at once, without a database connection (the pool's only
/// connection is held here, so any query would time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_queries_for_unusable_owner_keys_do_not_touch_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = DbSessionStore::builder(file_url(&dir, "owners.db"))
        .pool_size(1)
        .connection_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let s = store.create().await.unwrap();
    let held = sqlite_pool(&store).get().unwrap();
    for owner in [
        String::new(),
        "x\0y".to_owned(),
        "line\nbreak".to_owned(),
        "x".repeat(session_core::MAX_OWNER_LEN + 1),
    ] {
        assert_eq!(
            store.count_owner_sessions(&owner).await.unwrap(),
            0,
            "{owner:?}"
        );
        assert!(store.owner_sessions(&owner, None).await.unwrap().is_empty());
        assert_eq!(store.destroy_owner_sessions(&owner, None).await.unwrap(), 0);
        assert!(
            !store
                .destroy_owner_session(&owner, &s.id().handle())
                .await
                .unwrap()
        );
    }
    assert!(
        store.count_owner_sessions("alice").await.is_err(),
        "a valid owner does need the database"
    );
    drop(held);
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

/// Writers of one store queue at its writer gate without holding
/// connections: while another process holds the write lock, a read still
/// finds a connection, and every queued write fails within its timeouts
/// instead of waiting in line for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writers_hold_no_connection_and_fail_promptly_behind_a_foreign_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = DbSessionStore::builder(file_url(&dir, "x.db"))
        .pool_size(2)
        .connection_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let mut s = store.create().await.unwrap();
        s.set("n", "0");
        store.save(&mut s).await.unwrap();
        sessions.push(s);
    }

    // Another process's writer: a transaction holding the write lock.
    let path = dir.path().join("x.db");
    let mut foreign = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query("BEGIN IMMEDIATE")
        .execute(&mut foreign)
        .unwrap();

    let writers: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|mut s| {
            let store = store.clone();
            tokio::spawn(async move {
                s.set("n", "1");
                store.save(&mut s).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store
            .load(sessions[0].id())
            .await
            .expect("a read finds a connection: queued writers hold none")
            .unwrap()
            .get("n"),
        Some("0")
    );
    assert!(
        writers.iter().all(|w| !w.is_finished()),
        "the read did not wait for a writer to give up its connection"
    );
    for writer in writers {
        let result = tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("a queued write must not wait in line for ever")
            .unwrap();
        assert!(
            matches!(result, Err(Error::Backend(_))),
            "a write behind a foreign write lock fails as a backend error: {result:?}"
        );
    }

    diesel::sql_query("ROLLBACK").execute(&mut foreign).unwrap();
    let mut s = sessions[0].clone();
    s.set("n", "2");
    store.save(&mut s).await.unwrap();
    assert_eq!(
        store.load(s.id()).await.unwrap().unwrap().get("n"),
        Some("2"),
        "writes work again once the lock is gone"
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

/// An application's pool built without [`SqliteTuning`] (no busy timeout,
/// the default rollback journal): while the application holds the
/// database's lock for a moment, the store's reads and writes wait for it
/// instead of failing at once with "database is locked"; the store gave
/// each of the pool's connections a busy timeout (the pool's connection
/// timeout), and keeps one the application set itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_an_untuned_pool_waits_for_locks_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db").to_string_lossy().into_owned();
    let pool: SqlitePool = Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::from_secs(4))
        .build(ConnectionManager::<SqliteConnection>::new(&path))
        .unwrap();
    let store = DbSessionStore::from_pool(pool.clone())
        .build()
        .await
        .unwrap();
    let mut s = store.create().await.unwrap();
    s.set("n", "0");
    store.save(&mut s).await.unwrap();

    // The application: an exclusive lock (as a commit in rollback-journal
    // mode takes), held for 300 ms on a connection of its own.
    for op in ["load", "save"] {
        let (locked, release) = (
            std::sync::mpsc::channel::<()>(),
            std::sync::mpsc::channel::<()>(),
        );
        let app = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut c = SqliteConnection::establish(&path).unwrap();
                diesel::sql_query("BEGIN EXCLUSIVE")
                    .execute(&mut c)
                    .unwrap();
                locked.0.send(()).unwrap();
                let _ = release.1.recv_timeout(Duration::from_millis(300));
                diesel::sql_query("COMMIT").execute(&mut c).unwrap();
            })
        };
        locked.1.recv().unwrap();
        let started = Instant::now();
        let result = match op {
            "load" => store
                .load(s.id())
                .await
                .map(|found| assert!(found.is_some())),
            _ => {
                s.set("n", "1");
                store.save(&mut s).await
            }
        };
        assert!(
            result.is_ok(),
            "{op} under the application's lock: {result:?} after {:?}",
            started.elapsed()
        );
        drop(release.0);
        app.join().unwrap();
    }
    assert_eq!(
        store.load(s.id()).await.unwrap().unwrap().get("n"),
        Some("1")
    );

    // The connection the store used got the pool's connection timeout as
    // its busy timeout; one the application set is kept.
    let mut c = pool.get().unwrap();
    let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
        .get_result(&mut *c)
        .unwrap();
    assert_eq!(busy.timeout, 4000);
    drop(c);

    let own = Pool::builder()
        .max_size(1)
        .connection_customizer(Box::new(SqliteTuning::new(Duration::from_millis(1234))))
        .build(ConnectionManager::<SqliteConnection>::new(&path))
        .unwrap();
    let store = DbSessionStore::from_pool(own.clone())
        .build()
        .await
        .unwrap();
    assert!(store.load(s.id()).await.unwrap().is_some());
    let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
        .get_result(&mut *own.get().unwrap())
        .unwrap();
    assert_eq!(busy.timeout, 1234, "the application's own busy timeout");
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

/// A `sqlite:` URL with a query is a SQLite URI filename: the query sets
/// options and is not part of the file's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_with_a_query_opens_the_file_it_names() {
    let dir = tempfile::tempdir().unwrap();
    for (file, url) in [
        (
            "q.db",
            format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display()),
        ),
        (
            "r.db",
            format!("sqlite:{}?cache=private", dir.path().join("r.db").display()),
        ),
    ] {
        let store = DbSessionStore::connect(&url, SessionConfig::default())
            .await
            .unwrap();
        let mut s = store.create().await.unwrap();
        s.set("k", "v");
        store.save(&mut s).await.unwrap();
        drop(store);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&file.to_owned()), "{url}: {names:?}");
        assert!(!names.iter().any(|n| n.contains('?')), "{url}: {names:?}");
        let reopened = DbSessionStore::connect(
            format!("sqlite://{}", dir.path().join(file).display()),
            SessionConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            reopened.load(s.id()).await.unwrap().unwrap().get("k"),
            Some("v"),
            "{url}"
        );
    }
}

/// Every SQLite URI form of an in-memory database gets a pool of one
/// connection, so every operation sees the same database (a pool of several
/// would give each connection its own, empty one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_uris_are_one_database_shared_by_every_operation() {
    for url in [
        "file::memory:",
        "file::memory:?cache=shared",
        "file:sdb_mem_test?mode=memory&cache=shared",
        "sqlite://:memory:?cache=private",
    ] {
        let store = DbSessionStore::builder(url)
            .pool_size(10)
            .build()
            .await
            .unwrap();
        assert_eq!(sqlite_pool(&store).max_size(), 1, "{url}");
        let store = Arc::new(store);
        let mut savers = Vec::new();
        for n in 0..16 {
            let store = Arc::clone(&store);
            savers.push(tokio::spawn(async move {
                let mut s = store.create().await?;
                s.set("n", n.to_string());
                store.save(&mut s).await?;
                Ok::<_, Error>(store.load(s.id()).await?.is_some())
            }));
        }
        for saver in savers {
            assert!(saver.await.unwrap().unwrap(), "{url}");
        }
        assert_eq!(store.len().await.unwrap(), 16, "{url}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_owner_limit_is_checked_after_the_session_itself() {
    let dir = tempfile::tempdir().unwrap();
    common::the_owner_limit_is_checked_after_the_session_itself(
        &file_url(&dir, "s.db"),
        "sessions",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unreasonable_builder_values_are_clamped() {
    let dir = tempfile::tempdir().unwrap();
    common::unreasonable_builder_values_are_clamped(&file_url(&dir, "s.db"), "sessions").await;
    common::unreasonable_builder_values_are_clamped("sqlite::memory:", "sessions").await;
}
