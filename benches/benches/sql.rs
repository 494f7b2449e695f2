//! `DbSessionStore` on SQLite, PostgreSQL and MySQL/MariaDB, each beside
//! plain diesel statements by primary key on the same r2d2 pool, through
//! the same hand-off to tokio's blocking threads.
//!
//! SQLite (feature `sqlite`, the default) uses a database file in the
//! temporary directory. PostgreSQL (feature `postgres`) and MySQL (feature
//! `mysql`) need `SESSION_TEST_POSTGRES_URL` / `SESSION_TEST_MYSQL_URL`
//! (`cargo xtask bench` sets them when the servers answer); each is skipped
//! otherwise.

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod sql {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use benches::{Contender, IDLE_TIMEOUT_SECS, Ours, Subject};
    use criterion::Criterion;
    use diesel::prelude::*;
    use diesel::r2d2::{ConnectionManager, Pool};
    use session_core::SessionConfig;
    use session_db::{DbPool, DbSessionStore};
    use tokio::runtime::Runtime;

    /// The table our store uses; the baseline's has the same schema.
    const OURS_TABLE: &str = "bench_sessions";

    diesel::table! {
        /// The baseline's table: the same DDL as the store's
        /// (`DbSessionStore::schema_sql`), so the same column types and
        /// indexes are maintained on every write.
        bench_baseline (id_hash) {
            id_hash -> Binary,
            version -> BigInt,
            created_ms -> BigInt,
            last_active_ms -> BigInt,
            expires_ms -> BigInt,
            data -> Binary,
        }
    }

    use bench_baseline::dsl as t;

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    fn random_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("OS randomness");
        key
    }

    const TTL_MS: i64 = IDLE_TIMEOUT_SECS as i64 * 1000;

    /// The raw baseline on one kind of connection: one plain diesel
    /// statement per operation (the update helper: a select, then an
    /// update), keyed by the primary key, in autocommit, run with a pooled
    /// connection on a blocking thread.
    macro_rules! plain_diesel {
        ($name:ident, $conn:ty) => {
            struct $name {
                pool: Pool<ConnectionManager<$conn>>,
            }

            impl $name {
                async fn run<T: Send + 'static>(
                    &self,
                    query: impl FnOnce(&mut $conn) -> QueryResult<T> + Send + 'static,
                ) -> T {
                    let pool = self.pool.clone();
                    tokio::task::spawn_blocking(move || {
                        let mut conn = pool.get().expect("a pooled connection");
                        query(&mut conn)
                    })
                    .await
                    .expect("the blocking task")
                    .expect("the statement")
                }
            }

            impl Subject for $name {
                type Handle = [u8; 32];
                type Loaded = ([u8; 32], Vec<u8>);

                fn unused_handle(&self) -> [u8; 32] {
                    random_key()
                }

                fn handle_of(&self, loaded: &Self::Loaded) -> [u8; 32] {
                    loaded.0
                }

                async fn create(&self, payload: &str) -> [u8; 32] {
                    let key = random_key();
                    let data = payload.as_bytes().to_vec();
                    self.run(move |conn| {
                        let now = now_ms();
                        diesel::insert_into(t::bench_baseline)
                            .values((
                                t::id_hash.eq(&key[..]),
                                t::version.eq(1),
                                t::created_ms.eq(now),
                                t::last_active_ms.eq(now),
                                t::expires_ms.eq(now + TTL_MS),
                                t::data.eq(data),
                            ))
                            .execute(conn)
                    })
                    .await;
                    key
                }

                async fn load(&self, handle: &[u8; 32]) -> Option<Self::Loaded> {
                    let key = *handle;
                    let row: Option<(i64, i64, Vec<u8>)> = self
                        .run(move |conn| {
                            t::bench_baseline
                                .find(&key[..])
                                .select((t::version, t::expires_ms, t::data))
                                .first(conn)
                                .optional()
                        })
                        .await;
                    row.map(|(_, _, data)| (key, data))
                }

                async fn save(&self, loaded: &mut Self::Loaded) {
                    let (key, data) = (loaded.0, loaded.1.clone());
                    self.run(move |conn| {
                        let now = now_ms();
                        diesel::update(t::bench_baseline.find(&key[..]))
                            .set((
                                t::version.eq(t::version + 1),
                                t::last_active_ms.eq(now),
                                t::expires_ms.eq(now + TTL_MS),
                                t::data.eq(data),
                            ))
                            .execute(conn)
                    })
                    .await;
                }

                async fn touch(&self, loaded: &mut Self::Loaded) {
                    let key = loaded.0;
                    self.run(move |conn| {
                        let now = now_ms();
                        diesel::update(t::bench_baseline.find(&key[..]))
                            .set((t::last_active_ms.eq(now), t::expires_ms.eq(now + TTL_MS)))
                            .execute(conn)
                    })
                    .await;
                }

                async fn rotate(&self, loaded: &mut Self::Loaded) {
                    let (old, new) = (loaded.0, random_key());
                    self.run(move |conn| {
                        diesel::update(t::bench_baseline.find(&old[..]))
                            .set(t::id_hash.eq(&new[..]))
                            .execute(conn)
                    })
                    .await;
                    loaded.0 = new;
                }

                async fn destroy(&self, handle: &[u8; 32]) {
                    let key = *handle;
                    self.run(move |conn| {
                        diesel::delete(t::bench_baseline.find(&key[..])).execute(conn)
                    })
                    .await;
                }

                async fn update(&self, handle: &[u8; 32], value: u64) {
                    let loaded = self.load(handle).await.expect("a live session");
                    self.change_and_save(loaded, value).await;
                }

                async fn change_and_save(&self, mut loaded: Self::Loaded, _value: u64) {
                    self.save(&mut loaded).await;
                }
            }
        };
    }

    #[cfg(feature = "sqlite")]
    plain_diesel!(PlainSqlite, diesel::SqliteConnection);
    #[cfg(feature = "postgres")]
    plain_diesel!(PlainPostgres, diesel::PgConnection);
    #[cfg(feature = "mysql")]
    plain_diesel!(PlainMysql, diesel::MysqlConnection);

    /// Create the baseline's table if needed and empty both tables, on the
    /// store's pool (one statement per call: MySQL takes no batches).
    fn prepare_tables(rt: &Runtime, store: &DbSessionStore) {
        let ddl = DbSessionStore::schema_sql(store.database(), "bench_baseline")
            .expect("the baseline table's DDL");
        let pool = store.pool().clone();
        let task = rt.spawn_blocking(move || {
            use diesel::connection::SimpleConnection;
            fn run(conn: &mut impl SimpleConnection, ddl: &str) -> QueryResult<()> {
                conn.batch_execute(ddl)?;
                conn.batch_execute("DELETE FROM bench_baseline")?;
                conn.batch_execute(&format!("DELETE FROM {OURS_TABLE}"))
            }
            let result = match pool {
                #[cfg(feature = "sqlite")]
                DbPool::Sqlite(p) => run(&mut *p.get().expect("a connection"), &ddl),
                #[cfg(feature = "postgres")]
                DbPool::Postgres(p) => run(&mut *p.get().expect("a connection"), &ddl),
                #[cfg(feature = "mysql")]
                DbPool::Mysql(p) => run(&mut *p.get().expect("a connection"), &ddl),
                _ => unreachable!("a pool of a database this bench was built for"),
            };
            result.expect("create and empty the bench tables");
        });
        rt.block_on(task).expect("the blocking task");
    }

    fn store(rt: &Runtime, url: &str) -> DbSessionStore {
        let store = rt
            .block_on(
                DbSessionStore::builder(url)
                    .table_name(OURS_TABLE)
                    .config(SessionConfig::new(Duration::from_secs(IDLE_TIMEOUT_SECS)))
                    .build(),
            )
            .expect("the SQL session store");
        prepare_tables(rt, &store);
        store
    }

    fn run<S: Subject>(
        c: &mut Criterion,
        rt: &Runtime,
        backend: &str,
        store: DbSessionStore,
        baseline: S,
    ) {
        let ours = Contender::new(rt, "ours", Ours(store));
        let baseline = Contender::new(rt, "baseline", baseline);
        benches::run_matrix(c, rt, backend, &[&ours, &baseline]);
        benches::clean_up(rt, &[&ours, &baseline]);
    }

    pub(crate) fn main() {
        let mut c = benches::criterion();
        let rt = benches::runtime();

        #[cfg(feature = "sqlite")]
        {
            let dir = std::env::temp_dir().join(format!("sessions-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            let store = store(&rt, &url);
            let pool = match store.pool().clone() {
                DbPool::Sqlite(pool) => pool,
                _ => unreachable!("a SQLite URL gives a SQLite pool"),
            };
            run(&mut c, &rt, "sqlite", store, PlainSqlite { pool });
            let _ = std::fs::remove_dir_all(&dir);
        }

        #[cfg(feature = "postgres")]
        if let Some(url) = session_core::testing::service_url("SESSION_TEST_POSTGRES_URL") {
            let store = store(&rt, &url);
            let pool = match store.pool().clone() {
                DbPool::Postgres(pool) => pool,
                _ => unreachable!("a PostgreSQL URL gives a PostgreSQL pool"),
            };
            run(&mut c, &rt, "postgres", store, PlainPostgres { pool });
        }

        #[cfg(feature = "mysql")]
        if let Some(url) = session_core::testing::service_url("SESSION_TEST_MYSQL_URL") {
            let store = store(&rt, &url);
            let pool = match store.pool().clone() {
                DbPool::Mysql(pool) => pool,
                _ => unreachable!("a MySQL URL gives a MySQL pool"),
            };
            run(&mut c, &rt, "mysql", store, PlainMysql { pool });
        }

        c.final_summary();
    }
}

fn main() {
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    sql::main();
    #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
    println!("SKIPPED: no SQL backend feature (sqlite, postgres, mysql) is enabled");
}
