//! What a store says in its logs about an application's SQLite pool.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "sqlite")]

#[path = "common/capture.rs"]
mod capture;

use session_db::DbSessionStore;
use session_db::diesel::SqliteConnection;
use session_db::diesel::r2d2::{ConnectionManager, Pool};
use session_db::{SqlitePool, SqliteTuning};

/// A pool without [`SqliteTuning`] leaves the database in rollback-journal
/// mode, where session reads and writes block each other: building a store
/// on it says so, and how to fix it; on a tuned pool it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_pool_not_in_wal_mode_warns_how_to_tune_it() {
    let logs = capture::capture_logs(tracing::Level::WARN);
    let logged = || String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db").to_string_lossy().into_owned();
    let plain: SqlitePool = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<SqliteConnection>::new(&path))
        .unwrap();
    DbSessionStore::from_pool(plain).build().await.unwrap();
    let warning = logged();
    assert!(warning.contains("not in WAL mode"), "{warning:?}");
    assert!(warning.contains("journal_mode=\"delete\""), "{warning:?}");
    assert!(warning.contains("SqliteTuning"), "{warning:?}");

    logs.lock().unwrap().clear();
    let tuned: SqlitePool = Pool::builder()
        .max_size(1)
        .connection_customizer(Box::new(SqliteTuning::default()))
        .build(ConnectionManager::<SqliteConnection>::new(&path))
        .unwrap();
    DbSessionStore::from_pool(tuned).build().await.unwrap();
    assert_eq!(logged(), "", "a tuned pool is not warned about");
}
