//! Database URLs: what they point at, checks that keep a password from being
//! misread as another part of the URL, and redaction of whatever in an error
//! message could be a secret from the URL.

use std::fmt;

use crate::DbError;
use crate::sql::Database;

/// What a URL points at, in the form the driver is given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file: a plain path, or a `file:` URI (with its query).
    SqliteFile(String),
    /// A SQLite in-memory database: each connection to it would be its own
    /// database unless it is a named shared-cache one, so the pool keeps one.
    SqliteMemory(String),
    /// A PostgreSQL URI for libpq, scheme in lower case.
    Postgres(String),
    /// A MySQL URL for diesel, scheme `mysql`.
    Mysql(String),
}

impl Target {
    pub(crate) fn database(&self) -> Database {
        match self {
            Self::SqliteFile(_) | Self::SqliteMemory(_) => Database::Sqlite,
            Self::Postgres(_) => Database::Postgres,
            Self::Mysql(_) => Database::Mysql,
        }
    }
}

/// Recognise the URL forms this crate accepts (see the crate docs).
pub(crate) fn parse_url(url: &str) -> Result<Target, DbError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(DbError::InvalidUrl("the database URL is empty"));
    }
    if matches!(url, "sqlite::memory:" | "sqlite://:memory:" | ":memory:") {
        return Ok(Target::SqliteMemory(":memory:".to_owned()));
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() || path.starts_with('?') {
            return Err(DbError::InvalidUrl(
                "a sqlite:// URL needs a file path, e.g. sqlite://data/sessions.db",
            ));
        }
        // With a query (`?mode=rwc`), the URL is a SQLite URI filename;
        // without one, the path is taken literally.
        return Ok(if path.contains('?') {
            sqlite_uri(format!("file:{path}"))
        } else {
            Target::SqliteFile(path.to_owned())
        });
    }
    if url.starts_with("file:") {
        return Ok(sqlite_uri(url.to_owned()));
    }
    if !url.contains("://") {
        refuse_server_url_without_slashes(url)?;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let target = match scheme.to_ascii_lowercase().as_str() {
            // libpq only knows the scheme in lower case.
            "postgres" => Target::Postgres(format!("postgres://{rest}")),
            "postgresql" => Target::Postgres(format!("postgresql://{rest}")),
            "mysql" | "mariadb" => Target::Mysql(format!("mysql://{rest}")),
            _ => {
                return Err(DbError::UnsupportedUrl {
                    scheme: scheme.to_owned(),
                });
            }
        };
        check_authority(rest)?;
        if matches!(target, Target::Mysql(_)) && database_name(rest).is_empty() {
            // MySQL would connect, and every statement then fail with "No
            // database selected" (PostgreSQL defaults to the user's name).
            return Err(DbError::InvalidUrl(
                "a MySQL URL needs a database name after the host: \
                 mysql://user:password@host:3306/database",
            ));
        }
        return Ok(target);
    }
    Ok(Target::SqliteFile(url.to_owned()))
}

/// `url` (a PostgreSQL URI) with each of `params` appended to its query
/// unless the query sets that key already.
pub(crate) fn with_default_params(url: &str, params: &[(&str, String)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let query = base.split_once('?').map_or("", |(_, query)| query);
    let given: Vec<&str> = query
        .split('&')
        .filter_map(|param| param.split('=').next())
        .collect();
    let mut out = base.to_owned();
    let mut separator = if base.contains('?') {
        if base.ends_with(['?', '&']) { "" } else { "&" }
    } else {
        "?"
    };
    for (key, value) in params {
        if !given.contains(key) {
            out.push_str(separator);
            out.push_str(key);
            out.push('=');
            out.push_str(value);
            separator = "&";
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// libpq connection-string keywords: text starting `keyword=` is a
/// `key=value` connection string, not a file name.
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "service",
    "sslmode",
    "options",
    "application_name",
    "connect_timeout",
];

/// Refuse what would otherwise be taken for a SQLite file name but is meant
/// for a server: a known scheme without `//` (`postgresql:test`,
/// `mysql:/root@host/db`), or a libpq `key=value` connection string. The
/// errors never repeat the text, which may hold a password.
fn refuse_server_url_without_slashes(url: &str) -> Result<(), DbError> {
    if let Some((scheme, _)) = url.split_once(':') {
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => {
                return Err(DbError::InvalidUrl(
                    "a PostgreSQL URL needs '//' after the scheme: \
                     postgres://user:password@host:5432/database",
                ));
            }
            "mysql" | "mariadb" => {
                return Err(DbError::InvalidUrl(
                    "a MySQL URL needs '//' after the scheme: \
                     mysql://user:password@host:3306/database",
                ));
            }
            "redis" | "rediss" | "mongodb" | "mssql" | "sqlserver" | "http" | "https" => {
                return Err(DbError::UnsupportedUrl {
                    scheme: scheme.to_owned(),
                });
            }
            _ => {}
        }
    }
    let first = url.split_whitespace().next().unwrap_or_default();
    if let Some((key, _)) = first.split_once('=')
        && LIBPQ_KEYWORDS.contains(&key.to_ascii_lowercase().as_str())
    {
        return Err(DbError::InvalidUrl(
            "key=value connection strings are not supported; write the PostgreSQL \
             connection as a URL: postgres://user:password@host:5432/database?sslmode=require",
        ));
    }
    Ok(())
}

/// A SQLite URI filename (`file:…`): in memory if its path is `:memory:` or
/// its query says `mode=memory`.
fn sqlite_uri(uri: String) -> Target {
    let rest = uri.strip_prefix("file:").unwrap_or(&uri);
    let rest = rest.split('#').next().unwrap_or_default();
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path == ":memory:" || query.split('&').any(|param| param == "mode=memory");
    if memory {
        Target::SqliteMemory(uri)
    } else {
        Target::SqliteFile(uri)
    }
}

/// Refuse a server URL whose password the drivers would misread as another
/// part of the URL (and then quote in an error message): an unescaped `@`,
/// `/`, `?` or `#` in it, or a `%` that starts no percent-encoded byte. The
/// errors name the problem, never the text.
fn check_authority(rest: &str) -> Result<(), DbError> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            if userinfo.contains('@') {
                return Err(DbError::InvalidUrl(
                    "the user name or password in the URL contains an unescaped '@'; \
                     percent-encode it as %40",
                ));
            }
            if !valid_percent_escapes(userinfo) {
                return Err(DbError::InvalidUrl(
                    "the user name or password in the URL contains a '%' that starts no \
                     percent-encoded byte; encode '%' as %25",
                ));
            }
            hosts
        }
        None => {
            // `user:pa/ss@host`: the authority ended inside the password.
            let path = after.split(['?', '#']).next().unwrap_or_default();
            if path.contains('@') {
                return Err(DbError::InvalidUrl(
                    "the URL has an '@' after the host; if the password contains '/', '?' \
                     or '#', percent-encode them (%2F, %3F, %23)",
                ));
            }
            authority
        }
    };
    // `host:port[,host:port…]`, IPv6 hosts in brackets: a port that is not a
    // number is a password cut short by '/', '?' or '#'.
    for host in hosts.split(',') {
        let port = match host.rsplit_once(']') {
            Some((_, after_bracket)) => after_bracket.strip_prefix(':'),
            None => host.rsplit_once(':').map(|(_, port)| port),
        };
        if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(DbError::InvalidUrl(
                "the port in the URL is not a number; if the password contains '/', '?' or \
                 '#', percent-encode them (%2F, %3F, %23)",
            ));
        }
    }
    Ok(())
}

/// The database of a server URL (after `scheme://`): its path without the
/// leading `/`, empty if it has none.
fn database_name(rest: &str) -> &str {
    let before_query = rest.split(['?', '#']).next().unwrap_or_default();
    before_query
        .split_once('/')
        .map_or("", |(_, path)| path.trim_matches('/'))
}

fn valid_percent_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of a database URL that must not appear in messages: the URL
/// itself, its password (as written and percent-decoded) and the pieces a
/// driver could quote if it misread the password as another part of the URL,
/// and the value of any `password` query parameter.
///
/// Those are replaced wherever they occur, except a password (or piece)
/// shorter than [`MIN_PIECE`] characters: replacing every `a` of a message
/// for the password `a` would garble it. Such a password is removed where a
/// URL in the message carries it (its user information and `password`
/// query parameters are blanked whatever the password), which is the only
/// place a driver quotes a password of a URL that passed the checks above.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

/// Secrets shorter than this (in characters) are not replaced on their own:
/// they would blank out ordinary words, or letters, of the message.
const MIN_PIECE: usize = 3;

impl Secrets {
    /// No secrets (a pool the application built).
    pub(crate) fn none() -> Self {
        Self::default()
    }

    pub(crate) fn from_url(url: &str) -> Self {
        let url = url.trim();
        let mut secrets = vec![url.to_owned()];
        if let Some((scheme, rest)) = url.split_once("://") {
            secrets.push(format!("{}://{rest}", scheme.to_ascii_lowercase()));
            // Whatever a driver may take for user information: up to the
            // last '@' of the URL before its query.
            let before_query = rest.split('?').next().unwrap_or_default();
            if let Some((userinfo, _)) = before_query.rsplit_once('@')
                && let Some((_, password)) = userinfo.split_once(':')
            {
                Self::add_password(&mut secrets, password);
            }
            if let Some((_, query)) = rest.split_once('?') {
                for param in query.split('&') {
                    if let Some((key, value)) = param.split_once('=')
                        && key.to_ascii_lowercase().contains("password")
                    {
                        Self::add_password(&mut secrets, value);
                    }
                }
            }
        }
        Self(secrets).normalized()
    }

    /// Also redact the secrets of `url` (the form the driver was given).
    pub(crate) fn and_url(mut self, url: &str) -> Self {
        self.0.extend(Self::from_url(url).0);
        self.normalized()
    }

    /// Without empty strings and duplicates, longest first, so a piece never
    /// blanks out part of a longer secret that is then left half visible.
    fn normalized(mut self) -> Self {
        self.0.retain(|s| s.chars().count() >= MIN_PIECE);
        self.0.sort();
        self.0.dedup();
        self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    fn add_password(secrets: &mut Vec<String>, password: &str) {
        let decoded = percent_decode(password);
        for whole in [password, decoded.as_str()] {
            secrets.push(whole.to_owned());
            secrets.extend(
                whole
                    .split(['@', ':', '/', '?', '#', '%', '&', '='])
                    .filter(|piece| piece.len() >= MIN_PIECE)
                    .map(str::to_owned),
            );
        }
    }

    /// `message` with every secret replaced by `***`, and the password of
    /// any URL in it too.
    pub(crate) fn redact(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        if self.0.is_empty() {
            // No URL of ours (an application's pool, a SQLite path).
            return out;
        }
        redact_url_passwords(&out)
    }
}

/// `text` with the password of every `scheme://user:password@host` in it,
/// and the value of every query parameter whose name contains `password`,
/// replaced by `***`. A URL ends at white space or a quote.
fn redact_url_passwords(text: &str) -> String {
    let ends_url = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, url) = rest.split_at(at + 3);
        out.push_str(before);
        let len = url.find(ends_url).unwrap_or(url.len());
        let (url, after) = url.split_at(len);
        let authority_len = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_len);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push_str(":***@");
                    }
                    None => {
                        out.push_str(userinfo);
                        out.push('@');
                    }
                }
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        match path.split_once('?') {
            Some((path, query)) => {
                out.push_str(path);
                out.push('?');
                let (query, fragment) = match query.split_once('#') {
                    Some((query, fragment)) => (query, Some(fragment)),
                    None => (query, None),
                };
                for (i, param) in query.split('&').enumerate() {
                    if i > 0 {
                        out.push('&');
                    }
                    match param.split_once('=') {
                        Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                            out.push_str(key);
                            out.push_str("=***");
                        }
                        _ => out.push_str(param),
                    }
                }
                if let Some(fragment) = fragment {
                    out.push('#');
                    out.push_str(fragment);
                }
            }
            None => out.push_str(path),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_and_plain_paths_name_a_file() {
        for (url, path) in [
            ("sqlite://data/sessions.db", "data/sessions.db"),
            (
                "sqlite:///var/lib/app/sessions.db",
                "/var/lib/app/sessions.db",
            ),
            ("sqlite:sessions.db", "sessions.db"),
            ("sessions.db", "sessions.db"),
            ("/tmp/x/sessions.db", "/tmp/x/sessions.db"),
            (" ./s.db ", "./s.db"),
            ("file:s.db?mode=rwc", "file:s.db?mode=rwc"),
            // A query makes the sqlite: URL a SQLite URI filename.
            ("sqlite://dir/q.db?mode=rwc", "file:dir/q.db?mode=rwc"),
            ("sqlite:///abs/q.db?mode=rwc", "file:/abs/q.db?mode=rwc"),
            ("sqlite:q.db?cache=private", "file:q.db?cache=private"),
        ] {
            assert_eq!(
                parse_url(url).unwrap(),
                Target::SqliteFile(path.into()),
                "{url}"
            );
        }
    }

    #[test]
    fn server_urls_without_slashes_are_refused_not_taken_for_files() {
        for url in [
            "postgresql:test",
            "postgres:user:secret@host/db",
            "PostgreSQL:db",
            "mysql:/root@127.0.0.1/test",
            "mariadb:root:secret@db/app",
            "host=db user=app password=secret dbname=app",
            "dbname=app",
            "user=app password=secret",
        ] {
            match parse_url(url) {
                Err(e @ DbError::InvalidUrl(_)) => {
                    assert!(!e.to_string().contains("secret"), "{url}: {e}");
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_url("redis:host"),
            Err(DbError::UnsupportedUrl { scheme }) if scheme == "redis"
        ));
        // Still files: names that merely contain ':' or '='.
        for path in ["data/a=b.db", "sessions:2.db", "C:\\data\\s.db", "x=1.db"] {
            assert_eq!(
                parse_url(path).unwrap(),
                Target::SqliteFile(path.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn default_params_are_added_only_where_the_url_sets_none() {
        let params = [("a", "1".to_owned()), ("b", "2".to_owned())];
        for (url, expected) in [
            ("postgres://h/db", "postgres://h/db?a=1&b=2"),
            ("postgres://h/db?", "postgres://h/db?a=1&b=2"),
            ("postgres://h/db?x=y", "postgres://h/db?x=y&a=1&b=2"),
            ("postgres://h/db?b=9", "postgres://h/db?b=9&a=1"),
            ("postgres://h/db?a=0&b=9", "postgres://h/db?a=0&b=9"),
            ("postgres://h/db?ab=0", "postgres://h/db?ab=0&a=1&b=2"),
        ] {
            assert_eq!(with_default_params(url, &params), expected, "{url}");
        }
    }

    #[test]
    fn every_in_memory_form_is_recognised() {
        for (url, target) in [
            ("sqlite::memory:", ":memory:"),
            ("sqlite://:memory:", ":memory:"),
            (":memory:", ":memory:"),
            ("file::memory:", "file::memory:"),
            ("file::memory:?cache=shared", "file::memory:?cache=shared"),
            (
                "file:sessions?mode=memory&cache=shared",
                "file:sessions?mode=memory&cache=shared",
            ),
            (
                "sqlite://:memory:?cache=shared",
                "file::memory:?cache=shared",
            ),
            ("sqlite://mem?mode=memory", "file:mem?mode=memory"),
        ] {
            assert_eq!(
                parse_url(url).unwrap(),
                Target::SqliteMemory(target.into()),
                "{url}"
            );
        }
    }

    #[test]
    fn server_urls_are_recognised_with_the_scheme_in_lower_case() {
        let pg = "postgres://u:p@db:5432/app?application_name=x";
        assert_eq!(parse_url(pg).unwrap(), Target::Postgres(pg.into()));
        let pg = "postgresql://db/app";
        assert_eq!(parse_url(pg).unwrap(), Target::Postgres(pg.into()));
        assert_eq!(
            parse_url("POSTGRES://app:hunter2@127.0.0.1:5432/test").unwrap(),
            Target::Postgres("postgres://app:hunter2@127.0.0.1:5432/test".into())
        );
        assert_eq!(
            parse_url("PostgreSQL://h1:5432,[::1]:5433/app").unwrap(),
            Target::Postgres("postgresql://h1:5432,[::1]:5433/app".into())
        );
        let my = "mysql://root@127.0.0.1:3306/test";
        assert_eq!(parse_url(my).unwrap(), Target::Mysql(my.into()));
        assert_eq!(
            parse_url("MariaDB://root@127.0.0.1/test").unwrap(),
            Target::Mysql("mysql://root@127.0.0.1/test".into())
        );
        assert_eq!(
            parse_url("mysql://app:p%40ss%25@db/app?ssl_mode=required").unwrap(),
            Target::Mysql("mysql://app:p%40ss%25@db/app?ssl_mode=required".into())
        );
    }

    #[test]
    fn passwords_a_driver_would_misread_are_refused_without_quoting_them() {
        for url in [
            "postgres://app:Sup3r@Secret@127.0.0.1:5432/test",
            "mysql://app:Sup3r@Secret@127.0.0.1:3306/test",
            "postgres://app:pa%zzword@127.0.0.1:5432/test",
            "mysql://app:pa%zzword@127.0.0.1:3306/test",
            "postgres://app:pass%2@127.0.0.1/test",
            "postgres://app:pa/s3cr3t@127.0.0.1/test",
            "postgres://app:pa?s3cr3t@127.0.0.1/test",
            "mysql://app:pa#s3cr3t@127.0.0.1/test",
            "postgres://app:1234/s3cr3t@127.0.0.1/test",
        ] {
            match parse_url(url) {
                Err(e @ DbError::InvalidUrl(_)) => {
                    let msg = e.to_string();
                    for secret in ["Secret", "zzword", "s3cr3t", "pass%2"] {
                        assert!(!msg.contains(secret), "{url}: {msg}");
                    }
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }

    /// Without a database MySQL connects, and then every statement fails
    /// with "No database selected": refused up front instead.
    #[test]
    fn a_mysql_url_without_a_database_is_refused() {
        for url in [
            "mysql://root@127.0.0.1",
            "mysql://root@127.0.0.1/",
            "mariadb://root:secret@127.0.0.1:3306/?ssl_mode=disabled",
            "mysql://root@127.0.0.1?ssl_mode=disabled",
        ] {
            match parse_url(url) {
                Err(e @ DbError::InvalidUrl(_)) => {
                    let msg = e.to_string();
                    assert!(msg.contains("database name"), "{url}: {msg}");
                    assert!(!msg.contains("secret"), "{url}: {msg}");
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
        for url in [
            "mysql://root@127.0.0.1/test",
            "mysql://root@127.0.0.1:3306/test?ssl_mode=disabled",
        ] {
            assert!(matches!(parse_url(url), Ok(Target::Mysql(_))), "{url}");
        }
        // PostgreSQL takes the user's name for a missing database.
        assert!(matches!(
            parse_url("postgres://app@127.0.0.1"),
            Ok(Target::Postgres(_))
        ));
    }

    #[test]
    fn unknown_schemes_and_empty_urls_are_clear_errors_without_the_url() {
        let err = parse_url("redis://:secret@host/0").unwrap_err();
        assert!(matches!(&err, DbError::UnsupportedUrl { scheme } if scheme == "redis"));
        assert!(!err.to_string().contains("secret"));
        assert!(matches!(parse_url("  "), Err(DbError::InvalidUrl(_))));
        for url in ["sqlite://", "sqlite:", "sqlite://?mode=rwc"] {
            assert!(
                matches!(parse_url(url), Err(DbError::InvalidUrl(_))),
                "{url}"
            );
        }
    }

    /// The messages libpq gave for these URLs before they were checked: the
    /// redaction removes every part of the password, also from messages the
    /// checks now prevent.
    #[test]
    fn redaction_removes_the_url_the_password_and_its_pieces() {
        for (url, message, secret_parts) in [
            (
                "POSTGRES://app:hunter2@127.0.0.1:5432/test",
                "missing \"=\" after \"POSTGRES://app:hunter2@127.0.0.1:5432/test\" in \
                 connection info string",
                &["hunter2", "POSTGRES://"][..],
            ),
            (
                "postgres://app:Sup3r@Secret@127.0.0.1:5432/test",
                "could not translate host name \"Secret@127.0.0.1\" to address",
                &["Secret"][..],
            ),
            (
                "postgres://app:pa%zzword@127.0.0.1:5432/test",
                "invalid percent-encoded token: \"pa%zzword\"",
                &["zzword"][..],
            ),
            (
                "postgres://app:p%40ssw0rd@127.0.0.1/test",
                "password p@ssw0rd p%40ssw0rd ssw0rd",
                &["ssw0rd"][..],
            ),
            (
                "postgres://127.0.0.1/test?user=app&password=t0psecret",
                "bad password t0psecret",
                &["t0psecret"][..],
            ),
        ] {
            let redacted = Secrets::from_url(url).redact(message);
            for part in secret_parts {
                assert!(!redacted.contains(part), "{url}: {redacted}");
            }
            assert!(redacted.contains("***"), "{redacted}");
        }
        let both =
            Secrets::from_url("MariaDB://u:t0psecret@h/d").and_url("mysql://u:t0psecret@h/d");
        assert_eq!(both.redact("mysql://u:t0psecret@h/d t0psecret"), "*** ***");
        let none = Secrets::none();
        assert_eq!(
            none.redact("role \"app\" does not exist"),
            "role \"app\" does not exist"
        );
        assert!(
            !format!("{:?}", Secrets::from_url("postgres://a:hunter2@h/d")).contains("hunter2")
        );
    }

    /// A password of one or two characters is no reason to blank out every
    /// such letter of the driver's message; where a URL in the message
    /// carries it, it is still removed.
    #[test]
    fn a_short_password_leaves_the_message_readable_and_is_removed_from_urls() {
        let reason = "FATAL:  password authentication failed for user \"app\"";
        for url in [
            "postgres://app:a@127.0.0.1:5432/test",
            "postgres://app:ap@127.0.0.1:5432/test",
            "mysql://app:%61@127.0.0.1/test",
            "postgres://127.0.0.1/test?user=app&password=a",
        ] {
            let secrets = Secrets::from_url(url);
            assert_eq!(secrets.redact(reason), reason, "{url}");
            // The URL as the driver was given it, or as another layer
            // rewrote it: its password goes, the rest stays readable.
            let rewritten = format!("could not connect to {}", url.replacen("://", "x://", 1));
            let redacted = secrets.redact(&rewritten);
            assert!(
                redacted.contains("127.0.0.1") && redacted.contains("***"),
                "{url}: {redacted}"
            );
            for leaked in [":a@", ":ap@", ":%61@", "password=a"] {
                assert!(!redacted.contains(leaked), "{url}: {redacted}");
            }
        }
        let secrets = Secrets::from_url("postgres://app:pw@db/test");
        assert_eq!(
            secrets.redact("at \"postgresql://app:pw@db/test?a=1&PGPASSWORD=pw#f\" and pw"),
            "at \"postgresql://app:***@db/test?a=1&PGPASSWORD=***#f\" and pw"
        );
        assert_eq!(
            secrets.redact("mysql://app@db/x and //app:pw@db"),
            "mysql://app@db/x and //app:pw@db",
            "only URLs are taken apart"
        );
    }
}
