//! Command-line options and the choice of store.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_core::{SessionConfig, SessionStore};
use session_memory::{CapacityPolicy, MemoryStore};
use tracing_subscriber::filter::{LevelFilter, Targets};

/// The SQLite file used when `--store` is not given, in the current
/// directory.
pub const DEFAULT_SQLITE_FILE: &str = "session-demo.db";

/// The address used when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// How many sessions `--store memory` keeps at most. When it is full, the
/// anonymous session that would expire soonest makes room (a signed-in one
/// only when every stored session is signed in), so a flood of cookie-less
/// visitors (every first `GET /counter` stores a session) cannot exhaust
/// memory. The other stores rely on the purge of expired sessions that runs
/// every minute.
pub const MEMORY_MAX_SESSIONS: u64 = 100_000;

/// The `--help` text.
pub const USAGE: &str = "\
session-demo: a small web site on the session crates

USAGE:
    session-demo [--store STORE] [--listen ADDR] [--insecure-cookie]

OPTIONS:
    --store STORE       where sessions live (default: session-demo.db, a SQLite
                        file in the current directory):
                          memory                      in this process, at most 100000
                                                      sessions (the anonymous ones
                                                      soonest to expire make room);
                                                      lost on exit
                          PATH, sqlite://PATH, file:URI
                                                      SQLite file (created if missing)
                          sqlite::memory:             SQLite in memory; lost on exit
                          postgres://USER@HOST/DB     PostgreSQL (feature `postgres`)
                          mysql://USER@HOST/DB        MySQL/MariaDB (feature `mysql`)
                          redis://HOST:PORT           Redis (also redis-cluster://,
                                                      redis-sentinel://, and rediss://
                                                      with feature `redis-tls`)
                        Expired sessions are purged every minute.
    --listen ADDR       address to listen on (default: 127.0.0.1:3000; port 0
                        picks a free port)
    --insecure-cookie   send the session cookie without `Secure`; only for plain
                        HTTP on a host other than localhost/127.0.0.1 (browsers
                        already treat those as secure)
    -h, --help          print this help

ENVIRONMENT:
    RUST_LOG            log filter: a level (info, debug, ...) and/or
                        target=level pairs, comma-separated, for example
                        RUST_LOG=session_tower=debug or warn,session_demo=debug;
                        targets not named log at info unless a level is given
";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where sessions live.
    pub store: StoreChoice,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Whether the cookie carries `Secure` (true unless `--insecure-cookie`).
    pub secure_cookie: bool,
}

/// The result of parsing the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the site.
    Run(Options),
    /// Print [`USAGE`] and exit.
    Help,
}

impl Options {
    /// Parse the arguments (without the program name).
    ///
    /// ```
    /// use session_demo::{Command, StoreChoice};
    ///
    /// let Command::Run(options) = session_demo::Options::parse(["--store", "memory"])? else {
    ///     unreachable!()
    /// };
    /// assert_eq!(options.store, StoreChoice::Memory);
    /// assert_eq!(options.listen.to_string(), "127.0.0.1:3000");
    /// assert!(options.secure_cookie);
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// # Errors
    /// A message saying which argument is wrong.
    pub fn parse<I, S>(args: I) -> Result<Command, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut store = None;
        let mut listen = None;
        let mut secure_cookie = true;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (arg, None),
            };
            let mut value = |name: &str| match inline.clone().or_else(|| args.next()) {
                None => Err(format!("{name} needs a value; see --help")),
                // `--store --listen x` is a forgotten value, not a file
                // called "--listen".
                Some(v) if v.starts_with("--") => Err(format!(
                    "{name} needs a value, not the option {v:?}; see --help"
                )),
                Some(v) => Ok(v),
            };
            let no_value = |name: &str| match &inline {
                // `--insecure-cookie=false` must not mean "insecure".
                Some(v) => Err(format!("{name} takes no value (got {v:?}); see --help")),
                None => Ok(()),
            };
            match flag.as_str() {
                "--store" => store = Some(StoreChoice::parse(&value("--store")?)?),
                "--listen" => {
                    let text = value("--listen")?;
                    listen = Some(text.parse().map_err(|_| {
                        format!("--listen {text:?} is not an address like 127.0.0.1:3000")
                    })?);
                }
                "--insecure-cookie" => {
                    no_value("--insecure-cookie")?;
                    secure_cookie = false;
                }
                "-h" | "--help" => {
                    no_value("--help")?;
                    return Ok(Command::Help);
                }
                other => return Err(format!("unknown argument {other:?}; see --help")),
            }
        }
        let default_listen = DEFAULT_LISTEN
            .parse()
            .map_err(|_| "the default address is invalid".to_owned())?;
        Ok(Command::Run(Self {
            store: store.unwrap_or_else(|| StoreChoice::Sqlite(DEFAULT_SQLITE_FILE.into())),
            listen: listen.unwrap_or(default_listen),
            secure_cookie,
        }))
    }
}

/// The log filter for a `RUST_LOG` value: a level (`debug`), `target=level`
/// pairs (`session_tower=debug`), or both, comma-separated. Targets not
/// named log at `info` unless the value gives a level of its own; no value
/// means `info` for everything.
///
/// ```
/// use tracing::Level;
///
/// let filter = session_demo::log_filter(Some("session_tower=debug"))?;
/// assert!(filter.would_enable("session_tower::session", &Level::DEBUG));
/// assert!(!filter.would_enable("hyper", &Level::DEBUG));
/// assert!(filter.would_enable("session_demo", &Level::INFO));
/// # Ok::<(), String>(())
/// ```
///
/// # Errors
/// A message naming the part of `spec` that is not a filter.
pub fn log_filter(spec: Option<&str>) -> Result<Targets, String> {
    let spec = spec.map(str::trim).unwrap_or_default();
    if spec.is_empty() {
        return Ok(Targets::new().with_default(LevelFilter::INFO));
    }
    let targets: Targets = spec
        .parse()
        .map_err(|e| format!("RUST_LOG={spec:?} is not a log filter: {e}"))?;
    Ok(if targets.default_level().is_some() {
        targets
    } else {
        targets.with_default(LevelFilter::INFO)
    })
}

/// Which store `--store` names.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `memory`: a [`MemoryStore`] of at most [`MEMORY_MAX_SESSIONS`].
    Memory,
    /// A SQLite file path, `sqlite:` URL or `file:` URI, or
    /// `sqlite::memory:`.
    Sqlite(String),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A `mysql://` or `mariadb://` URL.
    Mysql(String),
    /// A `redis://`, `rediss://`, `redis-cluster://` or `redis-sentinel://`
    /// URL (and their `rediss-` forms).
    Redis(String),
}

/// Refuses a `--store` value taken for a SQLite path that is more likely a
/// typo: SQLite would silently create a file of that name.
fn check_sqlite_path(text: &str) -> Result<(), String> {
    let hint = |what: &str| {
        Err(format!(
            "--store {text:?}: {what}; for a SQLite file of that name, write ./{text}"
        ))
    };
    if text.starts_with("./")
        || text.starts_with('/')
        || text.starts_with("sqlite:")
        || is_sqlite_memory(text)
    {
        return Ok(());
    }
    if let Some((head, _)) = text.split_once(':')
        && head.len() > 1
        && head
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return hint(&format!(
            "looks like a {head}: URL without \"//\" (URLs are written {head}://…)"
        ));
    }
    if text.contains('=') {
        return hint(
            "looks like connection parameters, which --store does not take; \
             give a URL such as postgres://user@host/db",
        );
    }
    if !text.contains(['/', '.', '\\']) {
        return hint(
            "is not a store: use memory, a SQLite file path (such as sessions.db), \
             or a postgres://, mysql:// or redis:// URL",
        );
    }
    Ok(())
}

impl StoreChoice {
    /// Classify a `--store` value.
    ///
    /// ```
    /// use session_demo::StoreChoice;
    ///
    /// assert_eq!(StoreChoice::parse("memory")?, StoreChoice::Memory);
    /// assert_eq!(StoreChoice::parse("data/s.db")?, StoreChoice::Sqlite("data/s.db".into()));
    /// assert!(matches!(StoreChoice::parse("file:///tmp/s.db?mode=rwc")?, StoreChoice::Sqlite(_)));
    /// assert!(matches!(StoreChoice::parse("redis://127.0.0.1:6379")?, StoreChoice::Redis(_)));
    /// assert!(StoreChoice::parse("ftp://example.com").is_err());
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// # Errors
    /// A message for an empty value, a URL scheme no store handles, and a
    /// value that is more likely a mistyped store than a SQLite path: a bare
    /// word (`memroy`), a URL without `//` (`redis:/host`), or connection
    /// parameters (`host=db user=app`). A SQLite file with such a name can
    /// still be given as `./name`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme = text.split_once("://").map(|(scheme, _)| scheme);
        Ok(match scheme {
            _ if text == "memory" => Self::Memory,
            _ if text.is_empty() => return Err("--store needs a value; see --help".into()),
            // SQLite URI filenames, `file:data.db` as well as `file:///…`.
            _ if text.starts_with("file:") => Self::Sqlite(text.into()),
            Some("postgres" | "postgresql") => Self::Postgres(text.into()),
            Some("mysql" | "mariadb") => Self::Mysql(text.into()),
            Some(
                "redis" | "rediss" | "redis-cluster" | "rediss-cluster" | "redis-sentinel"
                | "rediss-sentinel",
            ) => Self::Redis(text.into()),
            Some("sqlite") => Self::Sqlite(text.into()),
            Some(other) => {
                return Err(format!(
                    "--store: no store handles {other}:// URLs; use memory, a SQLite path, \
                     postgres://, mysql://, redis://, redis-cluster:// or redis-sentinel://"
                ));
            }
            None => {
                check_sqlite_path(text)?;
                Self::Sqlite(text.into())
            }
        })
    }

    /// Open the store with `config`'s timeouts.
    ///
    /// # Errors
    /// A message saying why: the database is unreachable, or the URL is for a
    /// backend this binary was built without (naming the cargo feature to
    /// enable).
    pub async fn open(&self, config: SessionConfig) -> Result<Arc<dyn SessionStore>, String> {
        match self {
            Self::Memory => Ok(Arc::new(memory_store(config, MEMORY_MAX_SESSIONS))),
            Self::Sqlite(url) => open_db(url, config).await,
            Self::Postgres(url) => {
                if cfg!(feature = "postgres") {
                    open_db(url, config).await
                } else {
                    Err(missing_feature("PostgreSQL", "postgres"))
                }
            }
            Self::Mysql(url) => {
                if cfg!(feature = "mysql") {
                    open_db(url, config).await
                } else {
                    Err(missing_feature("MySQL/MariaDB", "mysql"))
                }
            }
            Self::Redis(url) => open_redis(url, config).await,
        }
    }
}

/// Shows the choice without any password a URL carries.
impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => write!(
                f,
                "in-process memory (at most {MEMORY_MAX_SESSIONS} sessions; lost on exit)"
            ),
            Self::Sqlite(path) if is_sqlite_memory(path) => {
                f.write_str("SQLite in memory (lost on exit)")
            }
            Self::Sqlite(uri) if uri.starts_with("file:") => {
                write!(f, "SQLite URI {}", redact(uri))
            }
            Self::Sqlite(path) => {
                let file = path
                    .strip_prefix("sqlite://")
                    .or_else(|| path.strip_prefix("sqlite:"))
                    .unwrap_or(path);
                let shown = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
                write!(f, "SQLite file {}", shown.display())
            }
            Self::Postgres(url) => write!(f, "PostgreSQL at {}", redact(url)),
            Self::Mysql(url) => write!(f, "MySQL/MariaDB at {}", redact(url)),
            Self::Redis(url) => write!(f, "Redis at {}", redact(url)),
        }
    }
}

impl fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreChoice({self})")
    }
}

/// The spellings session-db takes for an in-memory SQLite database.
fn is_sqlite_memory(text: &str) -> bool {
    matches!(text, "sqlite::memory:" | "sqlite://:memory:" | ":memory:")
}

/// `url` with any `user:password@` replaced by `***@`, and the value of every
/// query parameter whose name suggests a secret (containing `pass`, `pwd`,
/// `secret`, `token`, `key` or `auth`, in any case) replaced by `***`.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => {
                    out.push_str(name);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

/// A memory store of at most `max` sessions, the anonymous ones soonest to
/// expire making room.
fn memory_store(config: SessionConfig, max: u64) -> MemoryStore {
    MemoryStore::builder(config)
        .max_sessions(max, CapacityPolicy::EvictSoonestExpiring)
        .build()
}

fn missing_feature(database: &str, feature: &str) -> String {
    format!(
        "--store: {database} support is not compiled into this binary; rebuild with \
         `cargo run -p session-demo --features {feature} -- --store ...`"
    )
}

async fn open_db(url: &str, config: SessionConfig) -> Result<Arc<dyn SessionStore>, String> {
    let store = session_db::DbSessionStore::builder(url)
        .config(config)
        .connection_timeout(Duration::from_secs(5))
        .build()
        .await
        .map_err(|e| format!("could not open the session database: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, config: SessionConfig) -> Result<Arc<dyn SessionStore>, String> {
    if !cfg!(feature = "redis-tls") && url.starts_with("rediss") {
        return Err(missing_feature("Redis over TLS (rediss://)", "redis-tls"));
    }
    let store = session_redis::RedisSessionStore::builder(url)
        .config(config)
        .key_prefix("session-demo:")
        .build()
        .await
        .map_err(|e| format!("could not connect to Redis: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str, _config: SessionConfig) -> Result<Arc<dyn SessionStore>, String> {
    if url.starts_with("rediss") {
        // `redis-tls` implies `redis`: name the one feature that is needed.
        Err(missing_feature("Redis over TLS (rediss://)", "redis-tls"))
    } else {
        Err(missing_feature("Redis", "redis"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match Options::parse(args.iter().copied()).unwrap() {
            Command::Run(options) => options,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_are_a_sqlite_file_on_loopback_with_secure_cookies() {
        let options = run(&[]);
        assert_eq!(
            options.store,
            StoreChoice::Sqlite(DEFAULT_SQLITE_FILE.into())
        );
        assert_eq!(options.listen, "127.0.0.1:3000".parse().unwrap());
        assert!(options.secure_cookie);
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let options = run(&[
            "--store=memory",
            "--listen",
            "0.0.0.0:8080",
            "--insecure-cookie",
        ]);
        assert_eq!(options.store, StoreChoice::Memory);
        assert_eq!(options.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(!options.secure_cookie);
        assert_eq!(Options::parse(["-h"]), Ok(Command::Help));
    }

    #[test]
    fn bad_arguments_are_explained() {
        for (args, needle) in [
            (&["--store"][..], "needs a value"),
            (&["--listen", "nowhere"], "not an address"),
            (&["--verbose"], "unknown argument"),
            (&["--store", "ftp://x"], "ftp://"),
        ] {
            let err = Options::parse(args.iter().copied()).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn rust_log_takes_levels_and_targets() {
        use tracing::Level;
        let default = log_filter(None).unwrap();
        assert!(default.would_enable("anything", &Level::INFO));
        assert!(!default.would_enable("anything", &Level::DEBUG));

        let targeted = log_filter(Some("session_tower=debug")).unwrap();
        assert!(targeted.would_enable("session_tower", &Level::DEBUG));
        assert!(targeted.would_enable("session_demo", &Level::INFO));
        assert!(!targeted.would_enable("session_demo", &Level::DEBUG));

        let quiet = log_filter(Some("warn,session_demo=trace")).unwrap();
        assert!(!quiet.would_enable("hyper", &Level::INFO));
        assert!(quiet.would_enable("session_demo::pages", &Level::TRACE));

        let err = log_filter(Some("session_tower=loud")).unwrap_err();
        assert!(err.contains("RUST_LOG"), "{err}");
    }

    #[test]
    fn on_off_flags_refuse_a_value() {
        for args in [
            &["--insecure-cookie=false"][..],
            &["--insecure-cookie=true"],
            &["--insecure-cookie="],
            &["--help=me"],
        ] {
            let err = Options::parse(args.iter().copied()).unwrap_err();
            assert!(err.contains("takes no value"), "{args:?}: {err}");
        }
    }

    #[test]
    fn an_option_is_not_taken_as_the_value_of_the_one_before() {
        for args in [
            &["--store", "--listen", "127.0.0.1:1"][..],
            &["--listen", "--insecure-cookie"],
            &["--store=--listen"],
        ] {
            let err = Options::parse(args.iter().copied()).unwrap_err();
            assert!(
                err.contains("needs a value, not the option"),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn urls_are_classified_by_scheme() {
        for (text, expected) in [
            ("postgres://u@h/db", "PostgreSQL"),
            ("postgresql://u@h/db", "PostgreSQL"),
            ("mysql://root@h/db", "MySQL/MariaDB"),
            ("mariadb://root@h/db", "MySQL/MariaDB"),
            ("redis://h:6379", "Redis"),
            ("redis-cluster://h:7000", "Redis"),
            ("redis-sentinel://h:26379/0?sentinelServiceName=m", "Redis"),
            ("sqlite://x.db", "SQLite file"),
            ("x.db", "SQLite file"),
            ("file:x.db?mode=rwc", "SQLite URI file:x.db?mode=rwc"),
            ("file:///tmp/x.db", "SQLite URI file:///tmp/x.db"),
            ("sqlite::memory:", "SQLite in memory"),
            ("sqlite://:memory:", "SQLite in memory"),
            (":memory:", "SQLite in memory"),
            ("memory", "in-process memory (at most 100000 sessions"),
        ] {
            let shown = StoreChoice::parse(text).unwrap().to_string();
            assert!(shown.starts_with(expected), "{text}: {shown}");
        }
    }

    #[test]
    fn likely_typos_are_refused_rather_than_made_sqlite_files() {
        for typo in [
            "memroy",
            "postgres",
            "redis:/127.0.0.1:6379",
            "postgresql:test",
            "mysql:/root@127.0.0.1/test",
            "host=db user=app password=x",
        ] {
            let err = StoreChoice::parse(typo).unwrap_err();
            assert!(err.contains(&format!("./{typo}")), "{typo}: {err}");
        }
        for path in [
            "./memroy",
            "sessions.db",
            "data/s",
            "/tmp/x",
            "sqlite:x.db",
            "C:\\x.db",
        ] {
            assert!(
                matches!(StoreChoice::parse(path), Ok(StoreChoice::Sqlite(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        let shown = StoreChoice::parse("postgres://app:s3cret@db:5432/app")
            .unwrap()
            .to_string();
        assert_eq!(shown, "PostgreSQL at postgres://***@db:5432/app");
        assert_eq!(redact("redis://h:6379/0"), "redis://h:6379/0");
    }

    #[test]
    fn secrets_in_query_strings_are_not_shown() {
        for (url, shown) in [
            (
                "postgres://h/app?password=s3cret",
                "PostgreSQL at postgres://h/app?password=***",
            ),
            (
                "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=s3cret",
                "Redis at redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=***",
            ),
            (
                "mysql://u:pw@h/db?ssl-mode=REQUIRED&auth_token=t0k&ApiKey=k",
                "MySQL/MariaDB at mysql://***@h/db?ssl-mode=REQUIRED&auth_token=***&ApiKey=***",
            ),
            (
                "postgresql://h/db?sslmode=require&PGPASSWORD=x&passfile",
                "PostgreSQL at postgresql://h/db?sslmode=require&PGPASSWORD=***&passfile",
            ),
        ] {
            let text = StoreChoice::parse(url).unwrap().to_string();
            assert_eq!(text, shown);
            assert!(!text.contains("s3cret") && !text.contains("t0k"), "{text}");
        }
    }

    #[tokio::test]
    async fn the_memory_store_is_capped_and_evicts_the_soonest_to_expire() {
        let clock = session_core::ManualClock::new();
        let store = memory_store(SessionConfig::from_secs(60).with_clock(clock.clone()), 3);
        let mut first = None;
        for i in 0..4 {
            let mut session = store.create().await.unwrap();
            session.set("n", i.to_string());
            store.save(&mut session).await.unwrap();
            first.get_or_insert_with(|| session.id().clone());
            clock.advance(std::time::Duration::from_secs(1));
        }
        assert_eq!(store.len().await.unwrap(), 3, "capped");
        let first = first.unwrap();
        assert!(
            store.load(&first).await.unwrap().is_none(),
            "the oldest made room"
        );
    }

    /// Only built when `redis-tls` is left out, so it always checks one.
    #[cfg(not(feature = "redis-tls"))]
    #[tokio::test]
    async fn a_tls_redis_url_names_the_demos_redis_tls_feature() {
        let err = StoreChoice::parse("rediss://127.0.0.1:6380")
            .unwrap()
            .open(SessionConfig::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(err.contains("--features redis-tls"), "{err}");
    }

    /// Only built when some backend is left out, so it always checks one.
    #[cfg(not(all(feature = "postgres", feature = "mysql", feature = "redis")))]
    #[tokio::test]
    async fn a_url_for_a_backend_not_compiled_in_names_the_feature() {
        let missing = [
            (
                "postgres://u@127.0.0.1/db",
                "postgres",
                cfg!(feature = "postgres"),
            ),
            ("mysql://u@127.0.0.1/db", "mysql", cfg!(feature = "mysql")),
            ("redis://127.0.0.1:6379", "redis", cfg!(feature = "redis")),
        ];
        for (url, feature, _) in missing.iter().filter(|(_, _, built)| !built) {
            let err = StoreChoice::parse(url)
                .unwrap()
                .open(SessionConfig::from_secs(60))
                .await
                .err()
                .unwrap();
            assert!(err.contains(&format!("--features {feature}")), "{err}");
        }
    }
}
