//! Validated table names: they end up in SQL text, so only plain identifiers
//! pass.

use std::fmt;

use crate::DbError;

/// The default table name.
pub const DEFAULT_TABLE_NAME: &str = "sessions";

/// Longest accepted table name. The migration version recorded by diesel
/// (`00000000000001_<table>`) must fit diesel's `VARCHAR(50)` version column,
/// and index names (`<table>_owner_idx`) PostgreSQL's 63-byte identifiers.
pub const MAX_TABLE_NAME_LEN: usize = 32;

/// A table name that is safe to put into SQL: lower-case ASCII letters,
/// digits and `_`, not starting with a digit, at most [`MAX_TABLE_NAME_LEN`]
/// characters. It is always quoted in statements, so SQL keywords are fine.
///
/// Upper case is refused because the databases disagree about it: SQLite
/// (and MySQL on some platforms, and the case-insensitive `version` column
/// of MySQL's `__diesel_schema_migrations`) treat `Sessions` and `sessions`
/// as one name, PostgreSQL as two. Accepting both would let two stores
/// share one table on one database, or find each other's migration record
/// on another and never create their table.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TableName(String);

impl TableName {
    pub(crate) fn parse(name: &str) -> Result<Self, DbError> {
        let invalid = |reason| DbError::InvalidTableName {
            name: name.to_owned(),
            reason,
        };
        let Some(first) = name.chars().next() else {
            return Err(invalid("it is empty"));
        };
        if name.len() > MAX_TABLE_NAME_LEN {
            return Err(invalid("it is longer than 32 characters"));
        }
        if !(first.is_ascii_alphabetic() || first == '_') {
            return Err(invalid("it must start with an ASCII letter or '_'"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "upper-case letters are not allowed (databases disagree on whether case \
                 matters in table names); use lower case, e.g. \"user_sessions\"",
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "only lower-case ASCII letters, digits and '_' are allowed",
            ));
        }
        if name.starts_with("sqlite_") {
            return Err(invalid(
                "names starting with 'sqlite_' are reserved by SQLite",
            ));
        }
        if name.starts_with("__diesel") {
            return Err(invalid(
                "names starting with '__diesel' are reserved for diesel's migration records",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_accepted() {
        for ok in [
            "sessions",
            "_s",
            "sessions2",
            "app_user_sessions",
            "select",
            &"a".repeat(32),
        ] {
            assert_eq!(TableName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn anything_that_could_alter_sql_is_rejected() {
        for bad in [
            "",
            "1sessions",
            "sessions; DROP TABLE users",
            "a\"b",
            "a`b",
            "a'b",
            "a b",
            "a-b",
            "public.sessions",
            "sessions\0",
            "sessiöns",
            "sqlite_master",
            "SQLITE_x",
            "Sessions",
            "sessionS",
            "__diesel_schema_migrations",
            "__diesel_x",
            &"a".repeat(33),
        ] {
            assert!(
                matches!(TableName::parse(bad), Err(DbError::InvalidTableName { .. })),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn the_error_names_the_problem() {
        let err = TableName::parse("a-b").unwrap_err().to_string();
        assert!(
            err.contains("\"a-b\"") && err.contains("letters, digits"),
            "{err}"
        );
        let err = TableName::parse("Sessions").unwrap_err().to_string();
        assert!(err.contains("upper-case"), "{err}");
        let err = TableName::parse("__diesel_schema_migrations")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserved"), "{err}");
    }
}
