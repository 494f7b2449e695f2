//! MySQL/MariaDB (SESSION_TEST_MYSQL_URL): the conformance suite and the
//! behaviour this database needs extra care for.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "mysql")]

mod common;

use std::time::{Duration, Instant};

use session_core::testing::service_url;
use session_core::{MAX_OWNER_LEN, SessionStore};

const URL_ENV: &str = "SESSION_TEST_MYSQL_URL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_mysql() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    common::conformance(&url, &common::Tables::new(&url)).await;
}

#[test]
fn mysql_processes_share_sessions_and_survive_restarts() {
    if common::run_child_role() {
        return;
    }
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::processes_share_sessions_and_survive_restarts(
        "mysql_processes_share_sessions_and_survive_restarts",
        &url,
        &tables.fresh("proc"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_mysql_row_is_a_codec_error_for_that_session_only() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::corrupt_row_is_a_codec_error_for_that_session_only(&url, &tables.fresh("corrupt"))
        .await;
}

/// MySQL reports changed rows unless the client asks for matched rows; a
/// touch within the same millisecond changes nothing and must still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_touch_with_an_unchanged_clock_is_not_a_miss() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::touch_with_an_unchanged_clock_is_not_a_miss(&url, &tables.fresh("touch")).await;
}

/// MySQL's default collations fold case and ignore trailing spaces; owners
/// must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_owners_compare_exactly() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::owners_compare_exactly(&url, &tables.fresh("owner")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_purge_removes_expired_rows_in_batches() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::purge_removes_expired_rows_in_batches(&url, &tables.fresh("purge")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_owner_limit_holds_under_concurrent_logins() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::owner_limit_holds_under_concurrent_logins(&url, &tables.fresh("limit")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_concurrent_first_starts_migrate_once() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::concurrent_first_starts_migrate_once(&url, &tables.fresh("migr")).await;
}

/// The owner column is as wide as the longest owner session-core accepts
/// (`MAX_OWNER_LEN` bytes), and stores such an owner byte for byte, also
/// when it is made of 4-byte characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_owner_column_stores_the_longest_owner_the_core_accepts() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    let table = tables.fresh("long");
    let (config, _clock) = common::manual();
    let store = common::store(&url, &table, config).await;

    let width = common::raw_count(
        &store,
        &format!(
            "SELECT CAST(CHARACTER_OCTET_LENGTH AS SIGNED) AS n FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME = 'owner'"
        ),
    );
    assert_eq!(width, MAX_OWNER_LEN as i64);
    for longest in [
        "é".repeat(MAX_OWNER_LEN / 2),
        "\u{1F600}".repeat(MAX_OWNER_LEN / 4),
    ] {
        assert_eq!(longest.len(), MAX_OWNER_LEN);
        let mut s = store.create().await.unwrap();
        s.set_owner(longest.as_str());
        store.save(&mut s).await.expect("the longest owner fits");
        assert_eq!(
            store.load(s.id()).await.unwrap().unwrap().owner(),
            Some(longest.as_str()),
            "read back byte for byte"
        );
        assert_eq!(store.count_owner_sessions(&longest).await.unwrap(), 1);
        assert_eq!(
            store.owner_sessions(&longest, None).await.unwrap()[0].handle,
            s.id().handle()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_racing_inserts_over_an_expired_row_conflict_cleanly() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::racing_inserts_over_an_expired_row_conflict_cleanly(&url, &tables.fresh("race")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_login_of_a_session_destroyed_while_it_waited_is_not_found() {
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
async fn mysql_save_that_keeps_its_owner_does_not_wait_for_the_owners_lock() {
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
async fn mysql_login_that_cannot_get_the_owners_lock_in_time_fails_with_lock_timeout() {
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

/// Drops a throwaway database when the test ends, however it ends.
struct ThrowawayDatabase {
    url: String,
    name: String,
}

impl Drop for ThrowawayDatabase {
    fn drop(&mut self) {
        common::RawConn::open(&self.url).batch(&format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// MySQL's named locks are server-wide. Two databases on one server with a
/// session table of the same name: a login of `alice` in one does not wait
/// for `alice`'s lock held in the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_owner_locks_of_different_databases_do_not_contend() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    let table = tables.fresh("dbs");
    let other_db = ThrowawayDatabase {
        url: url.clone(),
        name: common::unique_table("db"),
    };
    common::RawConn::open(&url).batch(&format!("CREATE DATABASE `{}`", other_db.name));
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _db) = base.rsplit_once('/').unwrap();
    let other_url = format!(
        "{server}/{}{}{query}",
        other_db.name,
        if query.is_empty() { "" } else { "?" }
    );

    let (here, clock) = common::limited_store(&url, &table, 1, Duration::from_secs(5)).await;
    let (there, _) = common::limited_store(&other_url, &table, 1, Duration::from_secs(3)).await;
    let mut oldest = here.create().await.unwrap();
    oldest.set_owner("alice");
    here.save(&mut oldest).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut login = here.create().await.unwrap();
    login.set_owner("alice");
    let blocked = common::blocked_login(&url, &here, login, oldest.id()).await;

    let started = Instant::now();
    let mut elsewhere = there.create().await.unwrap();
    elsewhere.set_owner("alice");
    there
        .save(&mut elsewhere)
        .await
        .expect("a login in another database does not wait for this one");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "it did not wait: {took:?}"
    );
    assert!(!blocked.task.is_finished());
    drop(blocked.lock);
    blocked.task.await.unwrap().unwrap();
    drop((here, there));
    drop(other_db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_owner_limit_is_checked_after_the_session_itself() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::the_owner_limit_is_checked_after_the_session_itself(&url, &tables.fresh("order")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unreasonable_builder_values_are_clamped() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::unreasonable_builder_values_are_clamped(&url, &tables.fresh("clamp")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mysql_fails_operations_after_the_operation_timeout() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    common::a_silent_database_fails_operations_after_the_operation_timeout(
        &url,
        3306,
        &tables.fresh("silent"),
    )
    .await;
}
