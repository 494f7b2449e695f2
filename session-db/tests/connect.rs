//! Building a store on a database it cannot connect to fails at once with
//! [`DbError::Connect`], saying what the driver said (an unknown database or
//! user, a refused connection, a missing directory), not after the whole
//! connection timeout with a generic timeout; and never shows the password.
//! The server tests use SESSION_TEST_POSTGRES_URL and SESSION_TEST_MYSQL_URL
//! for their host and port only.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use session_db::{DbError, DbSessionStore};

/// The connection timeout the failing builds are given: far longer than
/// any of them may take.
const PATIENT: Duration = Duration::from_secs(10);

/// How long a failure that the database reports may take.
const PROMPT: Duration = Duration::from_secs(3);

/// Build a store on `url` with `timeout`; it must fail with
/// [`DbError::Connect`] within `within`. Returns the reason.
async fn connect_fails(url: &str, timeout: Duration, within: Duration) -> String {
    let started = Instant::now();
    let err = DbSessionStore::builder(url)
        .connection_timeout(timeout)
        .build()
        .await
        .expect_err("cannot connect");
    let took = started.elapsed();
    assert!(took < within, "{url}: failed only after {took:?}: {err}");
    let shown = err.to_string();
    match err {
        DbError::Connect { reason, .. } => {
            assert!(shown.contains(&reason), "{shown}");
            reason
        }
        other => panic!("{url}: expected DbError::Connect, got {other:?} ({other})"),
    }
}

/// `host:port` of a server URL (`scheme://[user@]host:port/db`).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split(['/', '?']).next().unwrap();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_in_a_missing_directory_fails_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no").join("such");
    let path = missing.join("sessions.db");
    let reason = connect_fails(&format!("sqlite://{}", path.display()), PATIENT, PROMPT).await;
    assert!(
        reason.contains("unable to open database file"),
        "SQLite's reason: {reason}"
    );
    assert!(
        reason.contains(&path.display().to_string()),
        "the path: {reason}"
    );
    assert!(
        reason.contains(&format!(
            "the directory {} does not exist",
            missing.display()
        )),
        "what to fix: {reason}"
    );
}

/// A path whose "directory" is a file, or that names a directory, is not
/// reported as a missing directory: the reason says what is there.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_path_through_a_file_or_to_a_directory_says_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "text").unwrap();
    let reason = connect_fails(
        &format!("sqlite://{}", file.join("sessions.db").display()),
        PATIENT,
        PROMPT,
    )
    .await;
    assert!(
        reason.contains(&format!("{} is not a directory", file.display())),
        "{reason}"
    );
    assert!(!reason.contains("does not exist"), "{reason}");

    let reason = connect_fails(&dir.path().display().to_string(), PATIENT, PROMPT).await;
    assert!(
        reason.contains(&format!("{} is a directory", dir.path().display())),
        "{reason}"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_sqlite_database_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a database, just text\n".repeat(200)).unwrap();
    let reason = connect_fails(&path.display().to_string(), PATIENT, PROMPT).await;
    assert!(reason.contains("not a database"), "{reason}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connection_failures_fail_at_once_saying_why() {
    let Some(url) = session_core::testing::service_url("SESSION_TEST_POSTGRES_URL") else {
        return;
    };
    let host = host_of(&url);
    let reason = connect_fails(
        &format!("postgres://postgres@{host}/sdbt_no_such_db"),
        PATIENT,
        PROMPT,
    )
    .await;
    assert!(
        reason.contains("database \"sdbt_no_such_db\" does not exist"),
        "{reason}"
    );

    // With trust authentication an unknown role is what a wrong password
    // is elsewhere: the server refuses the login.
    let reason = connect_fails(
        &format!("postgres://sdbt_nobody:hunter2@{host}/test"),
        PATIENT,
        PROMPT,
    )
    .await;
    assert!(reason.contains("\"sdbt_nobody\""), "{reason}");
    assert!(
        reason.contains("does not exist") || reason.contains("authentication failed"),
        "{reason}"
    );
    assert!(!reason.contains("hunter2"), "{reason}");

    // Nothing listens on port 1.
    let reason = connect_fails("postgres://postgres@127.0.0.1:1/test", PATIENT, PROMPT).await;
    assert!(reason.contains("refused"), "{reason}");
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connection_failures_fail_at_once_saying_why() {
    let Some(url) = session_core::testing::service_url("SESSION_TEST_MYSQL_URL") else {
        return;
    };
    let host = host_of(&url);
    let reason = connect_fails(
        &format!("mysql://root@{host}/sdbt_no_such_db"),
        PATIENT,
        PROMPT,
    )
    .await;
    assert!(
        reason.contains("Unknown database 'sdbt_no_such_db'"),
        "{reason}"
    );

    let reason = connect_fails(
        &format!("mariadb://sdbt_nobody:hunter2@{host}/test"),
        PATIENT,
        PROMPT,
    )
    .await;
    assert!(
        reason.contains("Access denied for user 'sdbt_nobody'"),
        "{reason}"
    );
    assert!(!reason.contains("hunter2"), "{reason}");

    let reason = connect_fails("mysql://root@127.0.0.1:1/test", PATIENT, PROMPT).await;
    assert!(reason.contains("Can't connect"), "{reason}");
}

/// A server that accepts TCP connections and never says a word: diesel
/// gives libmysqlclient no connect timeout, so only the store's own bound
/// ends the wait for its greeting.
#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_server_that_never_answers_fails_after_the_connection_timeout() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let silent = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Dropping the connections ends the client's wait.
        })
    };
    let timeout = Duration::from_secs(1);
    let reason = connect_fails(
        &format!("mysql://root@127.0.0.1:{port}/test?ssl_mode=disabled"),
        timeout,
        timeout + Duration::from_secs(2),
    )
    .await;
    assert!(reason.contains("no answer within 1s"), "{reason}");
    stop.store(true, Ordering::Relaxed);
    silent.join().unwrap();
    // Let the abandoned attempt see its connection closed before exit.
    tokio::time::sleep(Duration::from_millis(200)).await;
}
