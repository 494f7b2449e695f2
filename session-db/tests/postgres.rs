//! PostgreSQL (SESSION_TEST_POSTGRES_URL): the conformance suite, sharing
//! between processes, and recovery when the store's connections are killed.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_core::testing::service_url;
use session_core::{Error, SessionId, SessionStore};
use session_db::DbSessionStore;
use session_db::diesel::{self, Connection, PgConnection, RunQueryDsl};

const URL_ENV: &str = "SESSION_TEST_POSTGRES_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_postgres() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    common::conformance(&url, &common::Tables::new(&url)).await;
}

#[test]
fn postgres_processes_share_sessions_and_survive_restarts() {
    if common::run_child_role() {
        return;
    }
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::processes_share_sessions_and_survive_restarts(
        "postgres_processes_share_sessions_and_survive_restarts",
        &url,
        &tables.fresh("proc"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_postgres_row_is_a_codec_error_for_that_session_only() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::corrupt_row_is_a_codec_error_for_that_session_only(&url, &tables.fresh("corrupt"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_touch_with_an_unchanged_clock_is_not_a_miss() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::touch_with_an_unchanged_clock_is_not_a_miss(&url, &tables.fresh("touch")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_owners_compare_exactly() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::owners_compare_exactly(&url, &tables.fresh("owner")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_removes_expired_rows_in_batches() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::purge_removes_expired_rows_in_batches(&url, &tables.fresh("purge")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_owner_limit_holds_under_concurrent_logins() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::owner_limit_holds_under_concurrent_logins(&url, &tables.fresh("limit")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_first_starts_migrate_once() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::concurrent_first_starts_migrate_once(&url, &tables.fresh("migr")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_inserts_over_an_expired_row_conflict_cleanly() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::racing_inserts_over_an_expired_row_conflict_cleanly(&url, &tables.fresh("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_login_of_a_session_destroyed_while_it_waited_is_not_found() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::a_login_of_a_session_destroyed_while_it_waited_is_not_found(
        &url,
        &tables.fresh("gone"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_save_that_keeps_its_owner_does_not_wait_for_the_owners_lock() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::a_save_that_keeps_its_owner_does_not_wait_for_the_owners_lock(
        &url,
        &tables.fresh("nowait"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_login_that_cannot_get_the_owners_lock_in_time_fails_with_lock_timeout() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::a_login_that_cannot_get_the_owners_lock_in_time_fails_with_lock_timeout(
        &url,
        &tables.fresh("lockto"),
    )
    .await;
}

/// Drops a throwaway schema and role when the test ends, however it ends.
struct Throwaway {
    url: String,
    schema: String,
    role: String,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let mut admin = common::RawConn::open(&self.url);
        admin.batch(&format!(
            "DROP SCHEMA IF EXISTS \"{s}\" CASCADE; DROP ROLE IF EXISTS \"{r}\"",
            s = self.schema,
            r = self.role
        ));
    }
}

/// An application role that may use the session table but create nothing
/// (no CREATE on its schema) starts a store on a database that is already
/// migrated: startup only reads `__diesel_schema_migrations`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_starts_for_a_role_that_cannot_create_tables_once_migrated() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let name = common::unique_table("lp");
    let throwaway = Throwaway {
        url: url.clone(),
        schema: name.clone(),
        role: name.clone(),
    };
    let mut admin = common::RawConn::open(&url);
    admin.batch(&format!(
        "CREATE SCHEMA \"{name}\"; CREATE ROLE \"{name}\" LOGIN; \
         GRANT USAGE ON SCHEMA \"{name}\" TO \"{name}\""
    ));
    // The schema comes first in the search path, so the session table and
    // diesel's migrations table are created (and looked for) there.
    let in_schema = |url: &str| with_param(url, "options", &format!("-csearch_path%3D{name}"));
    let owner_store = DbSessionStore::builder(in_schema(&url))
        .table_name("sessions")
        .build()
        .await
        .expect("the schema owner migrates");
    admin.batch(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON \"{name}\".sessions TO \"{name}\"; \
         GRANT SELECT ON \"{name}\".__diesel_schema_migrations TO \"{name}\""
    ));
    let role_url = in_schema(&url.replacen("postgres@", &format!("{name}@"), 1));
    assert_ne!(role_url, in_schema(&url), "the URL names the role");
    let app = DbSessionStore::builder(role_url)
        .table_name("sessions")
        .build()
        .await
        .expect("a role without CREATE starts a store on a migrated database");
    let mut s = app.create().await.unwrap();
    s.set("k", "v");
    app.save(&mut s).await.unwrap();
    assert_eq!(
        owner_store.load(s.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );
    drop((app, owner_store));
    drop(throwaway);
}

/// A store whose search path puts its own schema before `public`
/// (`tenant,public`) keeps its sessions in that schema, also when `public`
/// has a session table of the same name already: it neither sees nor
/// revokes the sessions stored there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_first_in_the_search_path_gets_its_own_session_table() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    let table = tables.fresh("tenant");
    let schema = common::unique_table("schema");
    let throwaway = Throwaway {
        url: url.clone(),
        schema: schema.clone(),
        role: schema.clone(),
    };
    common::RawConn::open(&url).batch(&format!("CREATE SCHEMA \"{schema}\""));
    let public = DbSessionStore::builder(&url)
        .table_name(&table)
        .build()
        .await
        .unwrap();
    let tenant_url = with_param(&url, "options", &format!("-csearch_path%3D{schema},public"));
    let tenant = DbSessionStore::builder(tenant_url)
        .table_name(&table)
        .build()
        .await
        .unwrap();

    let mut theirs = public.create().await.unwrap();
    theirs.set_owner("user:42");
    public.save(&mut theirs).await.unwrap();
    assert_eq!(tenant.count_owner_sessions("user:42").await.unwrap(), 0);
    assert_eq!(
        tenant
            .destroy_owner_sessions("user:42", None)
            .await
            .unwrap(),
        0
    );
    assert!(public.load(theirs.id()).await.unwrap().is_some());
    let mut ours = tenant.create().await.unwrap();
    tenant.save(&mut ours).await.unwrap();
    assert!(public.load(ours.id()).await.unwrap().is_none());
    let in_schema = common::RawConn::open(&url).count(&format!(
        "SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = '{schema}' AND tablename = '{table}'"
    ));
    assert_eq!(in_schema, 1, "the table is in the tenant's schema");
    drop((public, tenant));
    drop(throwaway);
}

/// The migration lock key documented in the crate docs ("sessdbmg").
const MIGRATION_LOCK: i64 = 0x7365_7373_6462_6d67;

/// A starting store waits for another migration inside its own migration
/// transaction, on a transaction-level advisory lock (never a session-level
/// one, which a pooler such as PgBouncer could leave held on a server
/// connection), and holds no advisory lock once it has started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_waits_for_its_lock_inside_its_transaction_and_keeps_no_lock() {
    let Some(base) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&base);
    let table = tables.fresh("mlock");
    let app = common::unique_table("app");
    let url = with_param(&base, "application_name", &app);

    // Another process is migrating: it holds the lock in a transaction.
    let mut other = common::RawConn::open(&base);
    other.batch("BEGIN");
    other.count(&format!(
        "SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock({MIGRATION_LOCK})) AS l"
    ));
    let start = tokio::spawn({
        let (url, table) = (url.clone(), table.clone());
        async move {
            DbSessionStore::builder(url)
                .table_name(table)
                .pool_size(1)
                .build()
                .await
        }
    });
    let mut probe = common::RawConn::open(&base);
    let waiting_in_a_transaction = format!(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = '{app}' \
         AND wait_event_type = 'Lock' AND wait_event = 'advisory' \
         AND xact_start IS NOT NULL AND strpos(query, 'pg_advisory_xact_lock') > 0"
    );
    let started = Instant::now();
    let mut waited_in_a_transaction = false;
    while !start.is_finished() && started.elapsed() < Duration::from_secs(20) {
        if probe.count(&waiting_in_a_transaction) > 0 {
            waited_in_a_transaction = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The start finishes before any assertion, so that the table guard drops
    // what it creates even if this test fails.
    let started_early = start.is_finished();
    other.batch("ROLLBACK");
    let store = start
        .await
        .unwrap()
        .expect("the store starts once the lock is free");
    assert!(!started_early, "the store started while the lock was held");
    assert!(
        waited_in_a_transaction,
        "the starting store did not wait on pg_advisory_xact_lock in a transaction"
    );
    let mut s = store.create().await.unwrap();
    store.save(&mut s).await.unwrap();
    let held = probe.count(&format!(
        "SELECT COUNT(*) AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE a.application_name = '{app}' AND l.locktype = 'advisory'"
    ));
    assert_eq!(held, 0, "no advisory lock outlives the migration");
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Terminate the backends of connections named `application_name` (only
/// those: the server is shared) every few milliseconds for `outage`.
/// Returns how many were terminated.
fn kill_connections_for(url: &str, application_name: &str, outage: Duration) -> i64 {
    let mut admin = PgConnection::establish(url).unwrap();
    let started = Instant::now();
    let mut killed = 0;
    while started.elapsed() < outage {
        let n: Count = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()) AS t",
        )
        .bind::<diesel::sql_types::Text, _>(application_name)
        .get_result(&mut admin)
        .unwrap();
        killed += n.n;
        std::thread::sleep(Duration::from_millis(5));
    }
    killed
}

/// While a workload runs, every connection of the store is killed again and
/// again. Operations fail with clear Backend errors during the outage and
/// with nothing else; afterwards the same store value works normally, and
/// every save that returned Ok is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_recovers_after_its_connections_are_killed_and_loses_no_acknowledged_save() {
    let Some(base) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&base);
    let table = tables.fresh("outage");
    let app = common::unique_table("app"); // a unique application_name
    let store = DbSessionStore::builder(with_param(&base, "application_name", &app))
        .table_name(&table)
        .pool_size(4)
        .connection_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut acknowledged: Vec<SessionId> = Vec::new();
            let mut errors: Vec<Error> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut s = store.create().await.unwrap();
                s.set("k", "v");
                match store.save(&mut s).await {
                    Ok(()) => acknowledged.push(s.id().clone()),
                    Err(e) => errors.push(e),
                }
                if let Some(last) = acknowledged.last()
                    && let Err(e) = store.load(last).await
                {
                    errors.push(e);
                }
            }
            (acknowledged, errors)
        }));
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (kill_url, kill_app) = (base.clone(), app.clone());
    let killed = tokio::task::spawn_blocking(move || {
        kill_connections_for(&kill_url, &kill_app, Duration::from_millis(1500))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        let (a, e) = w.await.unwrap();
        acknowledged.extend(a);
        errors.extend(e);
    }
    assert!(killed > 0, "the outage terminated the store's connections");
    assert!(
        !errors.is_empty(),
        "the outage was visible to the workload ({killed} connections killed)"
    );
    for e in &errors {
        assert!(
            matches!(e, Error::Backend(_)),
            "only Backend errors during an outage, got {e:?}"
        );
    }
    println!(
        "{killed} connections killed, {} saves acknowledged, {} backend errors, e.g. {}",
        acknowledged.len(),
        errors.len(),
        errors[0]
    );

    for _ in 0..20 {
        let mut s = store.create().await.unwrap();
        s.set("after", "outage");
        store
            .save(&mut s)
            .await
            .expect("the same store works after the outage");
        assert!(store.load(s.id()).await.unwrap().is_some());
    }
    for id in &acknowledged {
        let s = store.load(id).await.unwrap();
        assert_eq!(
            s.and_then(|s| s.get("k").map(str::to_owned)).as_deref(),
            Some("v"),
            "an acknowledged save was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_owner_limit_is_checked_after_the_session_itself() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::the_owner_limit_is_checked_after_the_session_itself(&url, &tables.fresh("order")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreasonable_builder_values_are_clamped() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::unreasonable_builder_values_are_clamped(&url, &tables.fresh("clamp")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_postgres_fails_operations_after_the_operation_timeout() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::a_silent_database_fails_operations_after_the_operation_timeout(
        &url,
        5432,
        &tables.fresh("silent"),
    )
    .await;
}

/// A `statement_timeout` that cancels the wait for an owner's lock before
/// the lock timeout is reported as the statement's error, not as
/// `DbError::LockTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_while_waiting_for_the_owners_lock_is_not_a_lock_timeout() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    let table = tables.fresh("stmt");
    let (store, clock) = common::limited_store(&url, &table, 1, Duration::from_secs(5)).await;
    let (hasty, _) = common::limited_store(
        &with_param(&url, "options", "-c%20statement_timeout%3D300"),
        &table,
        1,
        Duration::from_secs(5),
    )
    .await;
    let mut oldest = store.create().await.unwrap();
    oldest.set_owner("alice");
    store.save(&mut oldest).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut login = store.create().await.unwrap();
    login.set_owner("alice");
    let blocked = common::blocked_login(&url, &store, login, oldest.id()).await;

    let mut second = hasty.create().await.unwrap();
    second.set_owner("alice");
    let started = Instant::now();
    let result = hasty.save(&mut second).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cancelled early"
    );
    match result {
        Err(Error::Backend(e)) => assert!(
            matches!(
                e.downcast_ref::<session_db::DbError>(),
                Some(session_db::DbError::Query(_))
            ),
            "expected the statement's own error, got {e}"
        ),
        other => panic!("expected a cancelled statement, got {other:?}"),
    }
    drop(blocked.lock);
    blocked
        .task
        .await
        .unwrap()
        .expect("the first login completes");
}
