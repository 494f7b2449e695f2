//! Helpers and scenarios for the server databases (PostgreSQL, MySQL): a
//! connection of the test's own, row locks held by another transaction, and
//! the scenarios built on them.

use std::time::Duration;

use diesel::RunQueryDsl;
use session_core::{Error, ManualClock, OwnerLimitPolicy, Session, SessionId, SessionStore};
use session_db::diesel;
use session_db::{Database, DbError, DbSessionStore};

use super::{Count, bytes_literal, manual, quoted};

/// A connection of its own for tests on PostgreSQL or MySQL.
pub(crate) enum RawConn {
    #[cfg(feature = "postgres")]
    Pg(diesel::PgConnection),
    #[cfg(feature = "mysql")]
    My(diesel::MysqlConnection),
}

impl RawConn {
    pub(crate) fn open(url: &str) -> Self {
        use diesel::Connection;
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres") {
            return Self::Pg(diesel::PgConnection::establish(url).unwrap());
        }
        #[cfg(feature = "mysql")]
        if url.starts_with("mysql") {
            return Self::My(diesel::MysqlConnection::establish(url).unwrap());
        }
        unreachable!("not a server URL this build supports")
    }

    /// Run statements (text protocol, several allowed).
    pub(crate) fn batch(&mut self, sql: &str) {
        use diesel::connection::SimpleConnection;
        match self {
            #[cfg(feature = "postgres")]
            Self::Pg(c) => c.batch_execute(sql),
            #[cfg(feature = "mysql")]
            Self::My(c) => c.batch_execute(sql),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Run one statement; the rows it changed.
    pub(crate) fn exec(&mut self, sql: &str) -> usize {
        let query = diesel::sql_query(sql);
        match self {
            #[cfg(feature = "postgres")]
            Self::Pg(c) => query.execute(c),
            #[cfg(feature = "mysql")]
            Self::My(c) => query.execute(c),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Run a `SELECT COUNT(*) AS n …`.
    pub(crate) fn count(&mut self, sql: &str) -> i64 {
        let query = diesel::sql_query(sql);
        let row: Result<Count, _> = match self {
            #[cfg(feature = "postgres")]
            Self::Pg(c) => query.get_result(c),
            #[cfg(feature = "mysql")]
            Self::My(c) => query.get_result(c),
        };
        row.unwrap_or_else(|e| panic!("{sql}: {e}")).n
    }
}

/// A transaction on a connection (and thread) of its own that holds the
/// row lock of one session until dropped.
pub(crate) struct RowLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RowLock {
    pub(crate) fn hold(url: &str, store: &DbSessionStore, id: &SessionId) -> Self {
        let lock = format!(
            "UPDATE {} SET version = version WHERE id_hash = {}",
            quoted(store),
            bytes_literal(store.database(), id.storage_key().as_bytes())
        );
        let url = url.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut c = RawConn::open(&url);
            c.batch("BEGIN");
            assert_eq!(c.exec(&lock), 1, "the row to lock exists");
            ready_tx.send(()).unwrap();
            let _ = release_rx.recv(); // or the sender was dropped
            c.batch("ROLLBACK");
        });
        ready_rx.recv().expect("the row lock was taken");
        Self {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RowLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a statement deleting from `table` waits for a row lock (the only
/// `DELETE` the logins of these tests run is the one that ends the oldest
/// session). MariaDB does not reliably list such a statement as `LOCK WAIT`
/// in `INNODB_TRX`; its process list shows it running.
pub(crate) async fn a_statement_waits_for_a_lock(url: &str, table: &str) -> bool {
    let (url, table) = (url.to_owned(), table.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(&url);
        let waiting = match c {
            #[cfg(feature = "postgres")]
            RawConn::Pg(_) => format!(
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND strpos(query, 'DELETE FROM \"{table}\"') = 1"
            ),
            #[cfg(feature = "mysql")]
            RawConn::My(_) => format!(
                "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
                 WHERE ID <> CONNECTION_ID() AND INFO LIKE 'DELETE FROM `{table}` %'"
            ),
        };
        c.count(&waiting) > 0
    })
    .await
    .unwrap()
}

/// A save running in the background that waits, inside its owner-locked
/// transaction, for the row lock a [`RowLock`] holds.
pub(crate) struct BlockedSave {
    pub(crate) task: tokio::task::JoinHandle<Result<(), Error>>,
    pub(crate) lock: RowLock,
}

/// Start saving `session` (a login of its owner under the `EndOldest`
/// limit, which must end `oldest` to make room) while `oldest`'s row is
/// locked: the save takes the owner's lock, then waits for the row. Returns
/// once it waits.
pub(crate) async fn blocked_login(
    url: &str,
    store: &DbSessionStore,
    mut session: Session,
    oldest: &SessionId,
) -> BlockedSave {
    let lock = RowLock::hold(url, store, oldest);
    let saver = store.clone();
    let task = tokio::spawn(async move { saver.save(&mut session).await });
    let started = std::time::Instant::now();
    while !a_statement_waits_for_a_lock(url, store.table_name()).await {
        if task.is_finished() {
            panic!("the login did not wait: {:?}", task.await.unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the login did not start waiting for the row lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    BlockedSave { task, lock }
}

/// A store with the per-owner limit `EndOldest(max)` and the connection
/// (and lock) timeout `timeout`.
pub(crate) async fn limited_store(
    url: &str,
    table: &str,
    max: u32,
    timeout: Duration,
) -> (DbSessionStore, ManualClock) {
    let (config, clock) = manual();
    let store = DbSessionStore::builder(url)
        .table_name(table)
        .config(config.with_max_sessions_per_owner(max, OwnerLimitPolicy::EndOldest))
        .pool_size(4)
        .connection_timeout(timeout)
        .build()
        .await
        .expect("build the store");
    (store, clock)
}

/// A login binding a stored anonymous session waits (under the owner's lock)
/// while the session is destroyed and the deletion commits: the save must
/// then say the session is gone (NotFound), not that it changed (Conflict),
/// and the refused login ends nothing.
pub(crate) async fn a_login_of_a_session_destroyed_while_it_waited_is_not_found(
    url: &str,
    table: &str,
) {
    let (store, clock) = limited_store(url, table, 1, Duration::from_secs(5)).await;
    let mut oldest = store.create().await.unwrap();
    oldest.set_owner("alice");
    store.save(&mut oldest).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut anonymous = store.create().await.unwrap();
    store.save(&mut anonymous).await.unwrap();
    let mut login = store.load(anonymous.id()).await.unwrap().unwrap();
    login.set_owner("alice");

    let blocked = blocked_login(url, &store, login, oldest.id()).await;
    assert!(
        store.destroy(anonymous.id()).await.unwrap(),
        "logout commits while the login waits"
    );
    drop(blocked.lock);
    match blocked.task.await.unwrap() {
        Err(Error::NotFound) => {}
        other => panic!("saving a session destroyed meanwhile must be NotFound, got {other:?}"),
    }
    assert!(store.load(anonymous.id()).await.unwrap().is_none());
    assert!(
        store.load(oldest.id()).await.unwrap().is_some(),
        "the refused login ended no session"
    );
}

/// While a login of `alice` holds her lock (waiting for a row), a save of
/// another of her sessions that keeps its owner neither waits for the lock
/// nor fails: only writes that bind a session to an owner, or move one to
/// another key, take it. A rotation waits for the lock (the login may be
/// ending that very session by its key) and then goes through.
pub(crate) async fn a_save_that_keeps_its_owner_does_not_wait_for_the_owners_lock(
    url: &str,
    table: &str,
) {
    let (store, clock) = limited_store(url, table, 2, Duration::from_secs(3)).await;
    let mut oldest = store.create().await.unwrap();
    oldest.set_owner("alice");
    store.save(&mut oldest).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut phone = store.create().await.unwrap();
    phone.set_owner("alice");
    store.save(&mut phone).await.unwrap();
    let mut login = store.create().await.unwrap();
    login.set_owner("alice");

    let blocked = blocked_login(url, &store, login, oldest.id()).await;
    let started = std::time::Instant::now();
    phone.set("cart", "3 items");
    store
        .save(&mut phone)
        .await
        .expect("a save of an already-bound session does not need the owner's lock");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "it did not wait for the lock: {took:?}"
    );
    let rotation = tokio::spawn({
        let (store, mut phone) = (store.clone(), phone.clone());
        async move { store.cycle_id(&mut phone).await.map(|()| phone) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rotation.is_finished(), "a rotation waits for the lock");
    assert!(!blocked.task.is_finished(), "the login was still waiting");
    drop(blocked.lock);
    blocked.task.await.unwrap().expect("the login completes");
    let rotated = rotation.await.unwrap().expect("the rotation completes");
    assert!(store.load(phone.id()).await.unwrap().is_none());
    let phone = rotated;
    assert!(store.load(oldest.id()).await.unwrap().is_none());
    assert_eq!(
        store.load(phone.id()).await.unwrap().unwrap().get("cart"),
        Some("3 items")
    );
    assert_eq!(store.count_owner_sessions("alice").await.unwrap(), 2);
}

/// A login that cannot get its owner's lock within the connection timeout
/// fails with `DbError::LockTimeout` on every database, after about the
/// timeout (MariaDB honours fractions of a second), and stores nothing.
pub(crate) async fn a_login_that_cannot_get_the_owners_lock_in_time_fails_with_lock_timeout(
    url: &str,
    table: &str,
) {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let (store, clock) = limited_store(url, table, 1, Duration::from_secs(5)).await;
    let (impatient, _) = limited_store(url, table, 1, TIMEOUT).await;
    let mut oldest = store.create().await.unwrap();
    oldest.set_owner("alice");
    store.save(&mut oldest).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let mut login = store.create().await.unwrap();
    login.set_owner("alice");
    let blocked = blocked_login(url, &store, login, oldest.id()).await;

    let mut second = impatient.create().await.unwrap();
    second.set_owner("alice");
    let started = std::time::Instant::now();
    let result = impatient.save(&mut second).await;
    let waited = started.elapsed();
    match result {
        Err(Error::Backend(e)) => assert!(
            matches!(e.downcast_ref::<DbError>(), Some(DbError::LockTimeout(t)) if *t == TIMEOUT),
            "expected DbError::LockTimeout, got {e}"
        ),
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert!(waited >= TIMEOUT, "it waited for the lock: {waited:?}");
    let whole_seconds = impatient.database() == Database::Mysql && {
        let url = url.to_owned();
        tokio::task::spawn_blocking(move || {
            RawConn::open(&url).count(
                "SELECT COUNT(*) AS n FROM (SELECT VERSION() AS v) AS s WHERE v LIKE '%MariaDB%'",
            )
        })
        .await
        .unwrap()
            == 0
    };
    // MySQL proper takes GET_LOCK's wait in whole seconds (rounded up).
    let bound = Duration::from_millis(if whole_seconds { 1900 } else { 950 });
    assert!(waited < bound, "and not much longer: {waited:?}");
    assert!(impatient.load(second.id()).await.unwrap().is_none());
    drop(blocked.lock);
    blocked
        .task
        .await
        .unwrap()
        .expect("the first login completes");
}

/// A TCP proxy in front of a database server that can go silent: while
/// silent it keeps every connection open but forwards nothing (a network
/// partition that closes no socket). Dropping it resumes forwarding, so
/// operations stalled on it can finish (a tokio runtime waits for its
/// blocking threads when it shuts down).
pub(crate) struct SilentProxy {
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `url` with its host and port replaced by the proxy's.
    pub(crate) url: String,
}

impl SilentProxy {
    /// A proxy for the server of `url` (`scheme://[user@]host[:port]/…`,
    /// `default_port` if it names none).
    pub(crate) fn start(url: &str, default_port: u16) -> Self {
        use std::net::{TcpListener, TcpStream, ToSocketAddrs};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let (scheme, rest) = url.split_once("://").unwrap();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (format!("{userinfo}@"), hostport),
            None => (String::new(), authority),
        };
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:{default_port}")
        };
        let upstream = hostport.to_socket_addrs().unwrap().next().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(false));

        fn pump(mut from: TcpStream, mut to: TcpStream, silent: Arc<AtomicBool>) {
            use std::io::{Read, Write};
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                while silent.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        }

        let accepting = Arc::clone(&silent);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (a, b) = (Arc::clone(&accepting), Arc::clone(&accepting));
                std::thread::spawn(move || pump(client, server, a));
                std::thread::spawn(move || pump(s2, c2, b));
            }
        });
        Self {
            silent,
            url: format!("{scheme}://{userinfo}127.0.0.1:{port}{path}"),
        }
    }

    /// Stop (`true`) or resume (`false`) forwarding.
    pub(crate) fn set_silent(&self, silent: bool) {
        self.silent
            .store(silent, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.set_silent(false);
    }
}

/// Through a proxy that goes silent (connections stay open, nothing is
/// forwarded), every operation fails with `DbError::Timeout` after about
/// the operation timeout instead of hanging, `purge_expired` too; once the
/// network is back, the same store works again.
pub(crate) async fn a_silent_database_fails_operations_after_the_operation_timeout(
    url: &str,
    default_port: u16,
    table: &str,
) {
    const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
    let proxy = SilentProxy::start(url, default_port);
    // Without TLS: the pool's own threads (r2d2 refilling connections)
    // may still be in a TLS handshake when the test process exits, and
    // OpenSSL's clean-up at exit then crashes them.
    let tls_off = if url.starts_with("mysql") {
        "ssl_mode=disabled"
    } else {
        "sslmode=disable"
    };
    let separator = if proxy.url.contains('?') { '&' } else { '?' };
    let store = DbSessionStore::builder(format!("{}{separator}{tls_off}", proxy.url))
        .table_name(table)
        .pool_size(3)
        .connection_timeout(Duration::from_secs(1))
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
        .await
        .expect("build through the proxy");
    let mut saved = store.create().await.unwrap();
    saved.set("k", "v");
    store.save(&mut saved).await.unwrap();

    proxy.set_silent(true);
    // Past the 500 ms in which a PostgreSQL connection is used unchecked.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut fresh = store.create().await.unwrap();
    fresh.set("k", "v");
    for op in ["load", "save", "purge_expired", "len"] {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(15), async {
            match op {
                "load" => store.load(saved.id()).await.map(drop),
                "save" => store.save(&mut fresh.clone()).await,
                "purge_expired" => store.purge_expired().await.map(drop),
                _ => store.len().await.map(drop),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{op} still hangs after 15 s"));
        let took = started.elapsed();
        match &result {
            Err(Error::Backend(e)) => assert!(
                matches!(
                    e.downcast_ref::<DbError>(),
                    Some(DbError::Timeout(t)) if *t == OPERATION_TIMEOUT
                ) || matches!(e.downcast_ref::<DbError>(), Some(DbError::Pool(_))),
                "{op}: expected a timeout, got {e}"
            ),
            other => panic!("{op} on a silent database: {other:?}"),
        }
        assert!(
            took < OPERATION_TIMEOUT + Duration::from_millis(800),
            "{op} failed promptly: {took:?}"
        );
        println!("{op}: {result:?} after {took:?}");
    }

    proxy.set_silent(false);
    let started = std::time::Instant::now();
    loop {
        match store.load(saved.id()).await {
            Ok(found) => {
                assert_eq!(found.unwrap().get("k"), Some("v"));
                break;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the store did not recover: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the pool's threads finish what the outage left them before the
    // process exits.
    drop(store);
    tokio::time::sleep(Duration::from_millis(500)).await;
}
