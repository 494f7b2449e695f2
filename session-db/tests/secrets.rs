//! Database passwords never reach error messages or logs, however the URL is
//! written (PostgreSQL and MySQL, SESSION_TEST_POSTGRES_URL and
//! SESSION_TEST_MYSQL_URL: only their host, port and database are used, with
//! a user that does not exist).
#![allow(clippy::unwrap_used)]
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[path = "common/capture.rs"]
mod capture;

use session_core::testing::service_url;
use session_db::{DbError, DbSessionStore};

/// Everything logged in this test binary (the global subscriber; r2d2 opens
/// connections on its own threads).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| capture::capture_logs(tracing::Level::TRACE)))
}

/// One test at a time, so the logs of one attempt are not another's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a URL with a password fails: refused before connecting, or by the
/// server (which does not know the user).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fails {
    Refused,
    Connecting,
}

/// Build a store on `url`; neither the error nor anything logged meanwhile
/// may contain `secret`.
async fn fails_without_showing(url: &str, secret: &str, how: Fails) {
    let _serial = SERIAL.lock().await;
    let logs = logs();
    let before = logs.lock().unwrap().len();
    let err = DbSessionStore::builder(url)
        .connection_timeout(Duration::from_millis(700))
        .build()
        .await
        .expect_err("a user that does not exist cannot connect");
    let shown = format!("{err} / {err:?}");
    assert!(
        !shown.contains(secret),
        "{url}: the error shows the secret: {shown}"
    );
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()[before..]).into_owned();
    assert!(
        !logged.contains(secret),
        "{url}: the logs show the secret: {logged}"
    );
    match how {
        Fails::Refused => assert!(matches!(err, DbError::InvalidUrl(_)), "{url}: {err:?}"),
        // The server's reason, at once: it names the user it refused.
        Fails::Connecting => match &err {
            DbError::Connect { reason, .. } => {
                assert!(reason.contains("sdbt_nobody"), "{url}: {reason}");
            }
            other => panic!("{url}: expected DbError::Connect, got {other:?}"),
        },
    }
}

/// The three URLs whose password libpq once quoted, for the server at
/// `base` (its host, port and database) under `scheme`.
async fn passwords_stay_secret(base: &str, scheme: &str) {
    let (_, server) = base
        .split_once('@')
        .unwrap_or_else(|| base.split_once("://").expect("a URL"));
    let upper = scheme.to_ascii_uppercase();
    for (url, secret, how) in [
        (
            format!("{upper}://sdbt_nobody:hunter2@{server}"),
            "hunter2",
            Fails::Connecting,
        ),
        (
            format!("{scheme}://sdbt_nobody:Sup3r@Secret@{server}"),
            "Secret",
            Fails::Refused,
        ),
        (
            format!("{scheme}://sdbt_nobody:pa%zzword@{server}"),
            "zzword",
            Fails::Refused,
        ),
        (
            format!("{scheme}://sdbt_nobody:pa%2Fs3cr3t@{server}"),
            "s3cr3t",
            Fails::Connecting,
        ),
    ] {
        fails_without_showing(&url, secret, how).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passwords_never_reach_errors_or_logs() {
    let Some(url) = service_url("SESSION_TEST_POSTGRES_URL") else {
        return;
    };
    passwords_stay_secret(&url, "postgres").await;
    passwords_stay_secret(&url, "postgresql").await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_passwords_never_reach_errors_or_logs() {
    let Some(url) = service_url("SESSION_TEST_MYSQL_URL") else {
        return;
    };
    passwords_stay_secret(&url, "mysql").await;
    passwords_stay_secret(&url, "mariadb").await;
}
