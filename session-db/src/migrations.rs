//! Embedded migrations, rendered for the configured table and run by diesel's
//! `MigrationHarness`.
//!
//! The table name is configurable, so the migrations cannot be fixed SQL
//! files: [`TableMigrations`] is a `MigrationSource` that renders each
//! migration's DDL for one database and table. Its versions include the table
//! name, so two session tables in one database do not collide in diesel's
//! `__diesel_schema_migrations`, and start with zeros, so they sort before
//! the application's own (timestamped) migrations and never look like "the
//! latest migration" to `diesel migration revert`.

use std::fmt;

use diesel::backend::Backend;
use diesel::connection::BoxableConnection;
use diesel::migration::{
    self, Migration, MigrationMetadata, MigrationName, MigrationSource, MigrationVersion,
};

use crate::sql::{Database, create_table_sql, drop_table_sql};
use crate::table::TableName;

/// The migrations of one session table on one database.
#[derive(Debug, Clone)]
pub(crate) struct TableMigrations {
    db: Database,
    table: TableName,
}

impl TableMigrations {
    pub(crate) fn new(db: Database, table: TableName) -> Self {
        Self { db, table }
    }

    /// The versions diesel records for these migrations.
    pub(crate) fn versions(&self) -> Vec<String> {
        self.all().into_iter().map(|m| m.version).collect()
    }

    fn all(&self) -> Vec<TableMigration> {
        vec![TableMigration {
            version: version(1, &self.table),
            title: format!("session-db: create session table {}", self.table),
            up: create_table_sql(self.db, &self.table),
            down: drop_table_sql(self.db, &self.table),
        }]
    }
}

/// The version diesel records for migration `n` of `table`.
pub(crate) fn version(n: u32, table: &TableName) -> String {
    format!("{n:014}_{table}")
}

impl<DB: Backend> MigrationSource<DB> for TableMigrations {
    fn migrations(&self) -> migration::Result<Vec<Box<dyn Migration<DB>>>> {
        Ok(self
            .all()
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn Migration<DB>>)
            .collect())
    }
}

/// One migration: DDL to apply and to revert.
#[derive(Debug)]
struct TableMigration {
    version: String,
    title: String,
    up: String,
    down: String,
}

impl<DB: Backend> Migration<DB> for TableMigration {
    fn run(&self, conn: &mut dyn BoxableConnection<DB>) -> migration::Result<()> {
        conn.batch_execute(&self.up)?;
        Ok(())
    }

    fn revert(&self, conn: &mut dyn BoxableConnection<DB>) -> migration::Result<()> {
        conn.batch_execute(&self.down)?;
        Ok(())
    }

    fn metadata(&self) -> &dyn MigrationMetadata {
        self
    }

    fn name(&self) -> &dyn MigrationName {
        self
    }
}

/// Runs in a transaction (diesel's default): all or nothing on PostgreSQL
/// and SQLite. MySQL commits DDL implicitly, which `IF NOT EXISTS` makes
/// safe to repeat.
impl MigrationMetadata for TableMigration {}

impl MigrationName for TableMigration {
    fn version(&self) -> MigrationVersion<'_> {
        MigrationVersion::from(&self.version)
    }
}

impl fmt::Display for TableMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MAX_TABLE_NAME_LEN;

    #[test]
    fn versions_fit_diesels_column_and_sort_before_timestamps() {
        let longest = TableName::parse(&"t".repeat(MAX_TABLE_NAME_LEN)).unwrap();
        let v = version(1, &longest);
        assert!(v.len() <= 50, "diesel stores versions in VARCHAR(50): {v}");
        assert!(
            v.as_str() < "20000101000000",
            "sorts before any diesel CLI timestamp"
        );
        assert!(version(1, &longest) < version(2, &longest));
        let other = TableName::parse("other").unwrap();
        assert_ne!(
            version(1, &longest),
            version(1, &other),
            "tables do not share versions"
        );
    }
}
