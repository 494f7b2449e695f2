//! MySQL/MariaDB (SESSION_TEST_MYSQL_URL): the conformance suite and the
//! behaviour this database needs extra care for.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "mysql")]

mod common;

use session_core::testing::service_url;
use session_core::{Error, SessionStore};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_too_long_for_the_mysql_column_is_refused_and_nothing_is_stored() {
    let Some(url) = service_url(URL_ENV) else {
        return;
    };
    let tables = common::Tables::new(&url);
    let (config, _clock) = common::manual();
    let store = common::store(&url, &tables.fresh("long"), config).await;

    let mut fits = store.create().await.unwrap();
    fits.set_owner("é".repeat(512)); // 1024 bytes
    store
        .save(&mut fits)
        .await
        .expect("an owner of 1024 bytes fits");
    assert_eq!(
        store.count_owner_sessions(&"é".repeat(512)).await.unwrap(),
        1
    );

    let long = "x".repeat(1025);
    let mut s = store.create().await.unwrap();
    s.set_owner(long.as_str());
    match store.save(&mut s).await {
        Err(Error::InvalidInput(_)) => {}
        other => panic!("an overlong owner must be refused, got {other:?}"),
    }
    assert!(store.load(s.id()).await.unwrap().is_none());
    assert_eq!(store.count_owner_sessions(&long).await.unwrap(), 0);
    assert!(store.owner_sessions(&long, None).await.unwrap().is_empty());
    assert_eq!(store.len().await.unwrap(), 1);
}
