//! Helpers and scenarios shared by the SQLite, PostgreSQL and MySQL tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use session_core::testing::run_conformance;
use session_core::{
    Error, ManualClock, OwnerLimitPolicy, SessionConfig, SessionId, SessionStore, SessionStoreExt,
};
use session_db::diesel::{self, RunQueryDsl};
use session_db::{Database, DbPool, DbSessionStore};

/// A table name no other test (in this or any other run, also one running at
/// the same time in another process) uses: `sdbt_<tag>_<pid>_<time>_<n>`,
/// with the process ID and the low 28 bits of the clock's nanoseconds in hex.
pub(crate) fn unique_table(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "sdbt_{tag}_{:x}_{:x}_{}",
        std::process::id(),
        nanos & 0xfff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= session_db::MAX_TABLE_NAME_LEN, "{name}");
    name
}

/// The migration versions recorded for `table`: a `LIKE` pattern matching
/// `…_<table>` exactly (`_` is a wildcard in `LIKE`, so it is escaped), for
/// `… WHERE version LIKE <pattern> ESCAPE '!'`.
pub(crate) fn versions_of(table: &str) -> String {
    format!("'%!_{}' ESCAPE '!'", table.replace('_', "!_"))
}

/// The tables a test creates on a server; dropped (with their migration
/// records) when this guard goes away, also when the test fails.
pub(crate) struct Tables {
    url: String,
    names: Mutex<Vec<String>>,
}

impl Tables {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn fresh(&self, tag: &str) -> String {
        let name = unique_table(tag);
        self.names.lock().unwrap().push(name.clone());
        name
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        if names.is_empty() {
            return;
        }
        if let Err(e) = drop_tables(&self.url, &names) {
            eprintln!("could not drop test tables {names:?}: {e}");
        }
    }
}

/// `DROP TABLE` and removal of the migration record, for each table.
fn cleanup_statements(names: &[String], quote: char) -> Vec<String> {
    names
        .iter()
        .flat_map(|t| {
            [
                format!("DROP TABLE IF EXISTS {quote}{t}{quote}"),
                format!(
                    "DELETE FROM __diesel_schema_migrations WHERE version LIKE {}",
                    versions_of(t)
                ),
            ]
        })
        .collect()
}

/// SQLite test databases are temporary files: nothing to drop there.
fn drop_tables(url: &str, names: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        use diesel::Connection;
        let mut c = diesel::PgConnection::establish(url)?;
        for sql in cleanup_statements(names, '"') {
            // The migrations table is missing if no store got that far.
            let _ = diesel::sql_query(sql).execute(&mut c);
        }
    }
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql") {
        use diesel::Connection;
        let mut c = diesel::MysqlConnection::establish(url)?;
        for sql in cleanup_statements(names, '`') {
            let _ = diesel::sql_query(sql).execute(&mut c);
        }
    }
    let _ = (url, names);
    Ok(())
}

/// A store on `url` and `table`.
pub(crate) async fn store(url: &str, table: &str, config: SessionConfig) -> DbSessionStore {
    DbSessionStore::builder(url)
        .table_name(table)
        .config(config)
        .pool_size(4)
        .build()
        .await
        .expect("build the store")
}

/// A config with a manual clock, and the clock.
pub(crate) fn manual() -> (SessionConfig, ManualClock) {
    let clock = ManualClock::new();
    (
        SessionConfig::from_secs(1800).with_clock(clock.clone()),
        clock,
    )
}

/// The whole conformance suite; every factory call gets a fresh table.
pub(crate) async fn conformance(url: &str, tables: &Tables) {
    run_conformance(|config| {
        let table = tables.fresh("conf");
        async move { Arc::new(store(url, &table, config).await) as Arc<dyn SessionStore> }
    })
    .await;
}

/// Run a statement directly on the store's database, bypassing the store.
pub(crate) fn raw_exec(store: &DbSessionStore, sql: &str) -> usize {
    let query = diesel::sql_query(sql);
    match store.pool() {
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(p) => query.execute(&mut *p.get().unwrap()),
        #[cfg(feature = "postgres")]
        DbPool::Postgres(p) => query.execute(&mut *p.get().unwrap()),
        #[cfg(feature = "mysql")]
        DbPool::Mysql(p) => query.execute(&mut *p.get().unwrap()),
        _ => unreachable!("a database this build does not support"),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Run a `SELECT COUNT(*) AS n …` directly on the store's database.
pub(crate) fn raw_count(store: &DbSessionStore, sql: &str) -> i64 {
    let query = diesel::sql_query(sql);
    let row: Result<Count, _> = match store.pool() {
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(p) => query.get_result(&mut *p.get().unwrap()),
        #[cfg(feature = "postgres")]
        DbPool::Postgres(p) => query.get_result(&mut *p.get().unwrap()),
        #[cfg(feature = "mysql")]
        DbPool::Mysql(p) => query.get_result(&mut *p.get().unwrap()),
        _ => unreachable!("a database this build does not support"),
    };
    row.unwrap_or_else(|e| panic!("{sql}: {e}")).n
}

/// A binary literal in the store's SQL dialect.
pub(crate) fn bytes_literal(db: Database, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match db {
        Database::Postgres => format!("'\\x{hex}'::bytea"),
        _ => format!("X'{hex}'"),
    }
}

fn quoted(store: &DbSessionStore) -> String {
    match store.database() {
        Database::Mysql => format!("`{}`", store.table_name()),
        _ => format!("\"{}\"", store.table_name()),
    }
}

/// Junk written straight into one row's data column makes that session a
/// codec error, and so does a row with version 0 (which would otherwise load
/// as a never-stored session whose every save conflicts), one with version
/// `i64::MAX` (whose next save could not be stored) and an owner that is
/// not UTF-8 (never converted lossily); every other session still loads
/// and the store keeps working.
pub(crate) async fn corrupt_row_is_a_codec_error_for_that_session_only(url: &str, table: &str) {
    let (config, _clock) = manual();
    let store = store(url, table, config).await;
    let mut sessions = Vec::new();
    for n in 0..6 {
        let mut s = store.create().await.unwrap();
        s.set("n", n.to_string());
        s.set_owner("corrupt-test");
        store.save(&mut s).await.unwrap();
        sessions.push(s);
    }
    let db = store.database();
    let mut corruptions = vec![
        (0, format!("data = {}", bytes_literal(db, b"\x00\xff"))),
        (1, format!("data = {}", bytes_literal(db, b"\x01{not json"))),
        (3, "version = 0".to_owned()),
        // The next save's version would not fit the column.
        (4, "version = 9223372036854775807".to_owned()),
    ];
    // An owner that is not UTF-8 (PostgreSQL's TEXT cannot hold one).
    match db {
        Database::Sqlite => corruptions.push((5, "owner = CAST(X'6f776eff' AS TEXT)".to_owned())),
        Database::Mysql => corruptions.push((5, "owner = X'6f776eff'".to_owned())),
        _ => {}
    }
    let owners_left = if db == Database::Postgres { 6 } else { 5 };
    for (victim, set) in corruptions {
        let key = sessions[victim].id().storage_key().as_bytes();
        let changed = raw_exec(
            &store,
            &format!(
                "UPDATE {} SET {set} WHERE id_hash = {}",
                quoted(&store),
                bytes_literal(db, key)
            ),
        );
        assert_eq!(changed, 1);
        match store.load(sessions[victim].id()).await {
            Err(Error::Codec(msg)) => assert!(!msg.is_empty()),
            other => panic!("a corrupt row ({set}) must be a Codec error, got {other:?}"),
        }
    }
    match store.update(sessions[3].id(), |s| s.set("k", "v")).await {
        Err(Error::Codec(_)) => {}
        other => panic!("updating a version-0 row must fail at once, got {other:?}"),
    }
    let healthy = store
        .load(sessions[2].id())
        .await
        .unwrap()
        .expect("the other session loads");
    assert_eq!(healthy.get("n"), Some("2"));
    assert_eq!(store.len().await.unwrap(), 6);
    assert_eq!(
        store.count_owner_sessions("corrupt-test").await.unwrap(),
        owners_left,
        "listing reads no data"
    );
    assert!(
        store.destroy(sessions[0].id()).await.unwrap(),
        "a corrupt session can still be ended"
    );
    let mut fresh = store.create().await.unwrap();
    store.save(&mut fresh).await.unwrap();
    assert!(store.load(fresh.id()).await.unwrap().is_some());
}

/// A touch that changes no column (the clock did not move) still finds its
/// row; on MySQL this depends on counting matched rather than changed rows.
pub(crate) async fn touch_with_an_unchanged_clock_is_not_a_miss(url: &str, table: &str) {
    let (config, _clock) = manual();
    let store = store(url, table, config).await;
    let mut s = store.create().await.unwrap();
    store.save(&mut s).await.unwrap();
    store.touch(&mut s).await.expect("first touch");
    store
        .touch(&mut s)
        .await
        .expect("a touch that changes nothing is still found");
    assert_eq!(s.version(), 1);
}

/// Owners match exactly: no case folding, no ignored trailing spaces.
pub(crate) async fn owners_compare_exactly(url: &str, table: &str) {
    let (config, _clock) = manual();
    let store = store(url, table, config).await;
    let owners = ["alice", "alice ", "Alice", "ålice", "alice\u{301}"];
    for owner in owners {
        let mut s = store.create().await.unwrap();
        s.set_owner(owner);
        store.save(&mut s).await.unwrap();
    }
    for owner in owners {
        assert_eq!(
            store.count_owner_sessions(owner).await.unwrap(),
            1,
            "{owner:?}"
        );
        assert_eq!(
            store.owner_sessions(owner, None).await.unwrap().len(),
            1,
            "{owner:?}"
        );
    }
    let s = store.create().await.unwrap();
    let loaded = {
        let mut s2 = store.create().await.unwrap();
        s2.set_owner("alice ");
        store.save(&mut s2).await.unwrap();
        store.load(s2.id()).await.unwrap().unwrap()
    };
    assert_eq!(
        loaded.owner(),
        Some("alice "),
        "the owner reads back byte for byte"
    );
    assert_eq!(
        store
            .destroy_owner_sessions("alice", Some(s.id()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.count_owner_sessions("alice ").await.unwrap(), 2);
}

/// The SQL text of every statement a pool's connections run (diesel's
/// instrumentation), to count what an operation sends to the database.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatementLog(Arc<Mutex<Vec<String>>>);

impl StatementLog {
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl diesel::connection::Instrumentation for StatementLog {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event {
            self.0.lock().unwrap().push(query.to_string());
        }
    }
}

/// Installs a [`StatementLog`] on every connection of a pool (and, for
/// SQLite, the tuning a store's own pool would have).
#[derive(Debug)]
struct Instrumented(StatementLog);

#[cfg(feature = "sqlite")]
impl diesel::r2d2::CustomizeConnection<diesel::SqliteConnection, diesel::r2d2::Error>
    for Instrumented
{
    fn on_acquire(&self, conn: &mut diesel::SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::Connection;
        diesel::r2d2::CustomizeConnection::on_acquire(&session_db::SqliteTuning::default(), conn)?;
        conn.set_instrumentation(self.0.clone());
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl diesel::r2d2::CustomizeConnection<diesel::PgConnection, diesel::r2d2::Error> for Instrumented {
    fn on_acquire(&self, conn: &mut diesel::PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::Connection;
        conn.set_instrumentation(self.0.clone());
        Ok(())
    }
}

#[cfg(feature = "mysql")]
impl diesel::r2d2::CustomizeConnection<diesel::MysqlConnection, diesel::r2d2::Error>
    for Instrumented
{
    fn on_acquire(&self, conn: &mut diesel::MysqlConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::Connection;
        conn.set_instrumentation(self.0.clone());
        Ok(())
    }
}

/// A store on a pool whose statements are logged.
pub(crate) async fn instrumented_store(
    url: &str,
    table: &str,
    config: SessionConfig,
) -> (DbSessionStore, StatementLog) {
    use session_db::diesel::r2d2::{ConnectionManager, Pool};
    fn builder<C>(log: &StatementLog) -> diesel::r2d2::Builder<ConnectionManager<C>>
    where
        C: diesel::r2d2::R2D2Connection + 'static,
        Instrumented: diesel::r2d2::CustomizeConnection<C, diesel::r2d2::Error>,
    {
        Pool::builder()
            .max_size(4)
            .connection_customizer(Box::new(Instrumented(log.clone())))
    }
    let log = StatementLog::default();
    let pool: DbPool = if let Some(path) = url.strip_prefix("sqlite://") {
        #[cfg(feature = "sqlite")]
        {
            builder(&log)
                .build(ConnectionManager::<diesel::SqliteConnection>::new(path))
                .unwrap()
                .into()
        }
        #[cfg(not(feature = "sqlite"))]
        unreachable!("{path}")
    } else if url.starts_with("postgres") {
        #[cfg(feature = "postgres")]
        {
            builder(&log)
                .build(ConnectionManager::<diesel::PgConnection>::new(url))
                .unwrap()
                .into()
        }
        #[cfg(not(feature = "postgres"))]
        unreachable!()
    } else {
        #[cfg(feature = "mysql")]
        {
            builder(&log)
                .build(ConnectionManager::<diesel::MysqlConnection>::new(url))
                .unwrap()
                .into()
        }
        #[cfg(not(feature = "mysql"))]
        unreachable!()
    };
    let store = DbSessionStore::from_pool(pool)
        .table_name(table)
        .config(config)
        .build()
        .await
        .expect("build the store");
    (store, log)
}

/// Purge removes every expired row however many batches that takes, and
/// nothing else, at most 1000 rows per statement (as documented): 2345
/// expired rows take exactly three statements.
pub(crate) async fn purge_removes_expired_rows_in_batches(url: &str, table: &str) {
    const EXPIRED: usize = 2345;
    const BATCH: usize = 1000;
    let (config, clock) = manual();
    let (store, log) = instrumented_store(url, table, config).await;
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (chunk..EXPIRED).step_by(8) {
                let mut s = store.create().await.unwrap();
                store.save(&mut s).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    clock.advance(Duration::from_secs(1700));
    let mut young = store.create().await.unwrap();
    store.save(&mut young).await.unwrap();
    clock.advance(Duration::from_secs(200));
    assert_eq!(store.len().await.unwrap(), 1);
    log.take();
    assert_eq!(
        store.purge_expired().await.unwrap(),
        EXPIRED as u64,
        "every batch is deleted"
    );
    let deletes: Vec<String> = log
        .take()
        .into_iter()
        .filter(|sql| sql.contains("expires_ms <="))
        .collect();
    assert_eq!(
        deletes.len(),
        EXPIRED.div_ceil(BATCH),
        "one statement per batch of at most {BATCH} rows: {deletes:#?}"
    );
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert!(store.load(young.id()).await.unwrap().is_some());
}

/// Logins of one owner from many tasks on two stores (two pools, as two
/// processes would have) at once: the per-owner limit holds exactly.
pub(crate) async fn owner_limit_holds_under_concurrent_logins(url: &str, table: &str) {
    const LOGINS: usize = 16;
    const MAX: u32 = 3;
    for policy in [OwnerLimitPolicy::RefuseNew, OwnerLimitPolicy::EndOldest] {
        let owner = format!("user-{policy:?}");
        let (config, _clock) = manual();
        let config = config.with_max_sessions_per_owner(MAX, policy);
        let stores = [
            store(url, table, config.clone()).await,
            store(url, table, config).await,
        ];
        let barrier = Arc::new(tokio::sync::Barrier::new(LOGINS));
        let mut logins = Vec::new();
        for n in 0..LOGINS {
            let (store, barrier, owner) =
                (stores[n % 2].clone(), Arc::clone(&barrier), owner.clone());
            logins.push(tokio::spawn(async move {
                let mut s = store.create().await.unwrap();
                if n % 4 == 0 {
                    // A visitor with a stored anonymous session who signs in.
                    store.save(&mut s).await.unwrap();
                }
                s.set_owner(owner);
                barrier.wait().await;
                if n % 2 == 0 {
                    store.cycle_id(&mut s).await
                } else {
                    store.save(&mut s).await
                }
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for login in logins {
            match login.await.unwrap() {
                Ok(()) => ok += 1,
                Err(Error::TooManySessions { limit: MAX }) => refused += 1,
                Err(e) => panic!("{policy:?}: unexpected {e:?}"),
            }
        }
        match policy {
            OwnerLimitPolicy::RefuseNew => {
                assert_eq!((ok, refused), (MAX as usize, LOGINS - MAX as usize))
            }
            _ => assert_eq!(
                (ok, refused),
                (LOGINS, 0),
                "{policy:?} makes room instead of refusing"
            ),
        }
        for store in &stores {
            assert_eq!(
                store.count_owner_sessions(&owner).await.unwrap(),
                u64::from(MAX),
                "{policy:?}"
            );
        }
    }
}

/// Several stores starting at once on a table that does not exist yet all
/// succeed, the migration is recorded once, and building again is a no-op.
pub(crate) async fn concurrent_first_starts_migrate_once(url: &str, table: &str) {
    let mut starts = Vec::new();
    for _ in 0..6 {
        let (url, table) = (url.to_owned(), table.to_owned());
        starts.push(tokio::spawn(async move {
            DbSessionStore::builder(url)
                .table_name(table)
                .pool_size(1)
                .build()
                .await
        }));
    }
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("a concurrent first start succeeds"));
    }
    let mut s = stores[0].create().await.unwrap();
    stores[0].save(&mut s).await.unwrap();
    for other in &stores {
        assert!(other.load(s.id()).await.unwrap().is_some());
    }
    let again = DbSessionStore::builder(url)
        .table_name(table)
        .build()
        .await
        .expect("a later start");
    assert!(
        again.load(s.id()).await.unwrap().is_some(),
        "re-running migrations keeps the data"
    );
    let recorded = raw_count(
        &again,
        &format!(
            "SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version LIKE {}",
            versions_of(table)
        ),
    );
    assert_eq!(recorded, 1, "one migration row for the table");
}

/// The word after `prefix` in the lines a child printed (libtest may print
/// other text on the same line).
fn printed(lines: &[String], prefix: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            l.split_once(prefix)
                .and_then(|(_, rest)| rest.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("the child printed no {prefix} line: {lines:?}"))
        .to_owned()
}

/// Environment of a child process started by [`spawn_child`].
pub(crate) const ROLE_ENV: &str = "SESSION_DB_TEST_CHILD_ROLE";
const URL_ENV: &str = "SESSION_DB_TEST_CHILD_URL";
const TABLE_ENV: &str = "SESSION_DB_TEST_CHILD_TABLE";
const IDS_ENV: &str = "SESSION_DB_TEST_CHILD_IDS";

/// Start this test binary again as a separate process that runs only the test
/// `test_name` in the role `role` (see [`run_child_role`]).
fn spawn_child(
    test_name: &str,
    role: &str,
    url: &str,
    table: &str,
    ids: &[String],
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(ROLE_ENV, role)
        .env(URL_ENV, url)
        .env(TABLE_ENV, table)
        .env(IDS_ENV, ids.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Wait (bounded) for a child; its stdout lines.
fn finish_child(mut child: std::process::Child) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("a child process did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = reader.join().unwrap();
    assert!(status.success(), "child failed ({status}): {lines:?}");
    lines
}

/// If this process is a child started by [`spawn_child`], do the child's job
/// and return true; the calling test then returns.
pub(crate) fn run_child_role() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return false;
    };
    let url = std::env::var(URL_ENV).unwrap();
    let table = std::env::var(TABLE_ENV).unwrap();
    let ids = std::env::var(IDS_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = DbSessionStore::builder(url)
            .table_name(table)
            .pool_size(2)
            .build()
            .await
            .unwrap();
        let me = std::process::id().to_string();
        match role.as_str() {
            "create" => {
                let mut s = store.create().await.unwrap();
                s.set("made_by", &me);
                store.save(&mut s).await.unwrap();
                println!("SESSION_ID={}", s.id().as_str());
            }
            "check" => {
                for id in ids.split(',') {
                    let id: SessionId = id.parse().unwrap();
                    let mut s = store
                        .load(&id)
                        .await
                        .unwrap()
                        .expect("a session another process saved loads");
                    assert!(s.get("made_by").is_some_and(|by| by != me));
                    s.set("checked_by", &me);
                    store.save(&mut s).await.unwrap();
                }
                println!("CHECKED_BY={me}");
            }
            other => panic!("unknown child role {other}"),
        }
    });
    true
}

/// Two processes start at once on a fresh table (both migrate) and each saves
/// a session, then exit. This process loads both (they outlived the processes
/// that wrote them) and saves its own; a third process loads and updates all
/// three, and this process sees its updates.
pub(crate) fn processes_share_sessions_and_survive_restarts(
    test_name: &str,
    url: &str,
    table: &str,
) {
    let first = spawn_child(test_name, "create", url, table, &[]);
    let second = spawn_child(test_name, "create", url, table, &[]);
    let ids: Vec<String> = [first, second]
        .into_iter()
        .map(|child| printed(&finish_child(child), "SESSION_ID="))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, mine) = runtime.block_on(async {
        let store = DbSessionStore::builder(url)
            .table_name(table)
            .build()
            .await
            .unwrap();
        for id in &ids {
            let s = store
                .load(&id.parse().unwrap())
                .await
                .unwrap()
                .expect("saved by an exited process");
            assert!(s.get("made_by").is_some());
        }
        let mut mine = store.create().await.unwrap();
        mine.set("made_by", "parent");
        store.save(&mut mine).await.unwrap();
        (store, mine)
    });
    let mut all = ids.clone();
    all.push(mine.id().as_str().to_owned());
    let checker = printed(
        &finish_child(spawn_child(test_name, "check", url, table, &all)),
        "CHECKED_BY=",
    );
    runtime.block_on(async {
        for id in &all {
            let s = store.load(&id.parse().unwrap()).await.unwrap().unwrap();
            assert_eq!(
                s.get("checked_by"),
                Some(checker.as_str()),
                "this process sees the other's writes"
            );
            assert_eq!(s.version(), 2);
        }
        assert_eq!(store.len().await.unwrap(), 3);
    });
}

/// Saves of one brand-new ID race over an expired row that still holds it,
/// each binding a different owner under a per-owner limit (so each runs in
/// its own locked transaction): exactly one wins, every other gets a
/// conflict, never a backend error (MySQL once reported deadlocks here).
pub(crate) async fn racing_inserts_over_an_expired_row_conflict_cleanly(url: &str, table: &str) {
    const ROUNDS: usize = 8;
    const RACERS: usize = 6;
    let (config, clock) = manual();
    let store = store(
        url,
        table,
        config.with_max_sessions_per_owner(100, OwnerLimitPolicy::RefuseNew),
    )
    .await;
    for round in 0..ROUNDS {
        let text = SessionId::generate().unwrap().as_str()[..24].to_owned();
        let mut old = store.create_with_id(&text).await.unwrap();
        store.save(&mut old).await.unwrap();
        clock.advance(Duration::from_secs(1801)); // expired, not purged
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut racers = Vec::new();
        for n in 0..RACERS {
            let (store, barrier, text) = (store.clone(), Arc::clone(&barrier), text.clone());
            racers.push(tokio::spawn(async move {
                let mut s = store.create_with_id(&text).await.unwrap();
                s.set_owner(format!("racer-{round}-{n}"));
                barrier.wait().await;
                store.save(&mut s).await
            }));
        }
        let (mut won, mut conflicts) = (0, 0);
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => won += 1,
                Err(Error::Conflict) => conflicts += 1,
                Err(e) => panic!("round {round}: a racer failed with {e:?}"),
            }
        }
        assert_eq!((won, conflicts), (1, RACERS - 1), "round {round}");
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod server;
// Not every test binary uses them.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[allow(unused_imports)]
pub(crate) use server::*;

/// With an owner at its limit, a write that would bind a session to it is
/// first a write of that session: one that is gone (expired, destroyed) is
/// `NotFound` and a stale version a `Conflict`, never `TooManySessions`. A
/// refused binding changes nothing, and a rotation that binds ends the
/// owner's oldest other session, never the rotated one.
pub(crate) async fn the_owner_limit_is_checked_after_the_session_itself(url: &str, table: &str) {
    let (config, clock) = manual();
    let refuse = store(
        url,
        table,
        config
            .clone()
            .with_max_sessions_per_owner(2, OwnerLimitPolicy::RefuseNew),
    )
    .await;
    // Saved now, expired once the clock moves past the idle timeout.
    let mut expiring = refuse.create().await.unwrap();
    refuse.save(&mut expiring).await.unwrap();
    let expired = refuse.load(expiring.id()).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(1801));

    let mut doomed = refuse.create().await.unwrap();
    refuse.save(&mut doomed).await.unwrap();
    let destroyed = refuse.load(doomed.id()).await.unwrap().unwrap();
    assert!(refuse.destroy(doomed.id()).await.unwrap());

    let mut moving = refuse.create().await.unwrap();
    refuse.save(&mut moving).await.unwrap();
    let stale = refuse.load(moving.id()).await.unwrap().unwrap();
    moving.set("moved", "on");
    refuse.save(&mut moving).await.unwrap();

    for _ in 0..2 {
        let mut s = refuse.create().await.unwrap();
        s.set_owner("alice");
        refuse.save(&mut s).await.unwrap();
    }

    for (what, loaded, expected) in [
        ("an expired session", &expired, "NotFound"),
        ("a destroyed session", &destroyed, "NotFound"),
        ("a stale version", &stale, "Conflict"),
    ] {
        for rotate in [false, true] {
            let mut s = loaded.clone();
            s.set_owner("alice");
            let result = if rotate {
                refuse.cycle_id(&mut s).await
            } else {
                refuse.save(&mut s).await
            };
            let got = match &result {
                Err(Error::NotFound) => "NotFound",
                Err(Error::Conflict) => "Conflict",
                _ => "other",
            };
            assert_eq!(
                got, expected,
                "binding {what} to an owner at the limit (rotate: {rotate}): {result:?}"
            );
        }
    }
    assert_eq!(refuse.count_owner_sessions("alice").await.unwrap(), 2);

    // A live session of bob's refused by alice's limit keeps bob and its data.
    let mut bobs = refuse.create().await.unwrap();
    bobs.set_owner("bob");
    bobs.set("k", "bob's");
    refuse.save(&mut bobs).await.unwrap();
    for rotate in [false, true] {
        let mut s = refuse.load(bobs.id()).await.unwrap().unwrap();
        s.set_owner("alice");
        s.set("k", "alice's");
        let result = if rotate {
            refuse.cycle_id(&mut s).await
        } else {
            refuse.save(&mut s).await
        };
        assert!(
            matches!(result, Err(Error::TooManySessions { limit: 2 })),
            "rotate: {rotate}: {result:?}"
        );
        let kept = refuse.load(bobs.id()).await.unwrap().unwrap();
        assert_eq!(
            (kept.owner(), kept.get("k")),
            (Some("bob"), Some("bob's")),
            "the refused write was rolled back"
        );
    }
    assert_eq!(refuse.count_owner_sessions("alice").await.unwrap(), 2);
    assert_eq!(refuse.count_owner_sessions("bob").await.unwrap(), 1);

    // EndOldest: the rotated session is the owner's oldest by creation, and
    // still the one that stays.
    let end = store(
        url,
        table,
        config.with_max_sessions_per_owner(2, OwnerLimitPolicy::EndOldest),
    )
    .await;
    let mut oldest = end.create().await.unwrap();
    end.save(&mut oldest).await.unwrap();
    let mut carols = Vec::new();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(1));
        let mut s = end.create().await.unwrap();
        s.set_owner("carol");
        end.save(&mut s).await.unwrap();
        carols.push(s);
    }
    let mut login = end.load(oldest.id()).await.unwrap().unwrap();
    login.set_owner("carol");
    end.cycle_id(&mut login).await.unwrap();
    assert_eq!(end.count_owner_sessions("carol").await.unwrap(), 2);
    assert!(end.load(login.id()).await.unwrap().is_some(), "kept itself");
    assert!(
        end.load(oldest.id()).await.unwrap().is_none(),
        "old ID dead"
    );
    assert!(end.load(carols[0].id()).await.unwrap().is_none(), "ended");
    assert!(end.load(carols[1].id()).await.unwrap().is_some());
}

/// Builder values far out of range are clamped to the documented maxima
/// instead of aborting or panicking in r2d2.
pub(crate) async fn unreasonable_builder_values_are_clamped(url: &str, table: &str) {
    let store = DbSessionStore::builder(url)
        .table_name(table)
        .pool_size(u32::MAX)
        .connection_timeout(Duration::MAX)
        .operation_timeout(Duration::MAX)
        .build()
        .await
        .expect("build with huge values");
    let (size, timeout) = match store.pool() {
        #[cfg(feature = "sqlite")]
        DbPool::Sqlite(p) => (p.max_size(), p.connection_timeout()),
        #[cfg(feature = "postgres")]
        DbPool::Postgres(p) => (p.max_size(), p.connection_timeout()),
        #[cfg(feature = "mysql")]
        DbPool::Mysql(p) => (p.max_size(), p.connection_timeout()),
        _ => unreachable!("a database this build does not support"),
    };
    if !url.contains("memory") {
        assert_eq!(size, session_db::MAX_POOL_SIZE);
    }
    assert_eq!(timeout, session_db::MAX_CONNECTION_TIMEOUT);
    let mut s = store.create().await.unwrap();
    s.set("k", "v");
    store.save(&mut s).await.unwrap();
    assert_eq!(
        store.load(s.id()).await.unwrap().unwrap().get("k"),
        Some("v")
    );
}
