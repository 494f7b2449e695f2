//! Construction errors, whatever features are compiled in.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use session_core::SessionConfig;
use session_db::{Database, DbError, DbSessionStore};

/// A URL for a database whose feature is off names the feature to enable;
/// with the feature on, an unreachable server is a prompt connect error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_for_databases_not_compiled_in_name_the_feature_to_enable() {
    for (url, db) in [
        (
            "postgres://nobody:secret@127.0.0.1:1/none",
            Database::Postgres,
        ),
        (
            "postgresql://nobody:secret@127.0.0.1:1/none",
            Database::Postgres,
        ),
        ("mysql://nobody:secret@127.0.0.1:1/none", Database::Mysql),
        ("mariadb://nobody:secret@127.0.0.1:1/none", Database::Mysql),
        ("sqlite::memory:", Database::Sqlite),
    ] {
        let result = DbSessionStore::builder(url)
            .connection_timeout(Duration::from_millis(300))
            .build()
            .await;
        match (db.is_enabled(), result) {
            (true, Ok(store)) => assert_eq!(store.database(), Database::Sqlite, "{url}"),
            (true, Err(e @ DbError::Connect { .. })) => {
                assert_ne!(db, Database::Sqlite, "{url}: {e}");
                assert!(!e.to_string().contains("secret"), "{e}");
            }
            (false, Err(e @ DbError::FeatureDisabled { .. })) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("`{}`", db.feature())), "{msg}");
                assert!(!msg.contains("secret"), "the URL is not repeated: {msg}");
            }
            (_, other) => panic!("{url}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn invalid_table_names_are_refused_before_connecting() {
    for name in [
        "",
        "sessions; DROP TABLE users",
        "a\"b",
        "1st",
        "sqlite_master",
        "Sessions",
        "__diesel_schema_migrations",
        &"t".repeat(33),
    ] {
        let result = DbSessionStore::builder("postgres://127.0.0.1:1/none")
            .table_name(name)
            .build()
            .await;
        assert!(
            matches!(result, Err(DbError::InvalidTableName { .. })),
            "{name:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn unknown_schemes_are_refused_without_echoing_the_url() {
    let err = DbSessionStore::connect("redis://:hunter2@127.0.0.1/0", SessionConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, DbError::UnsupportedUrl { scheme } if scheme == "redis"));
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn schema_sql_renders_the_documented_ddl_for_a_table() {
    let ddl = DbSessionStore::schema_sql(Database::Mysql, "web_sessions").unwrap();
    assert!(ddl.contains("CREATE TABLE IF NOT EXISTS `web_sessions`"));
    assert!(ddl.contains("KEY `web_sessions_owner_idx` (owner, expires_ms)"));
    assert!(matches!(
        DbSessionStore::schema_sql(Database::Postgres, "bad name"),
        Err(DbError::InvalidTableName { .. })
    ));
}
