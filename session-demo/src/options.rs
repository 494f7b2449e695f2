//! Command-line options and the choice of store.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use session_core::{SessionConfig, SessionStore};
use session_memory::MemoryStore;

/// The SQLite file used when `--store` is not given, in the current
/// directory.
pub const DEFAULT_SQLITE_FILE: &str = "session-demo.db";

/// The address used when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// The `--help` text.
pub const USAGE: &str = "\
session-demo: a small web site on the session crates

USAGE:
    session-demo [--store STORE] [--listen ADDR] [--insecure-cookie]

OPTIONS:
    --store STORE       where sessions live (default: session-demo.db, a SQLite
                        file in the current directory):
                          memory                      in this process; lost on exit
                          PATH, sqlite://PATH         SQLite file (created if missing)
                          postgres://USER@HOST/DB     PostgreSQL (feature `postgres`)
                          mysql://USER@HOST/DB        MySQL/MariaDB (feature `mysql`)
                          redis://HOST:PORT           Redis (feature `redis`; also
                                                      redis-cluster://, redis-sentinel://,
                                                      and rediss:// with `redis-tls`)
    --listen ADDR       address to listen on (default: 127.0.0.1:3000; port 0
                        picks a free port)
    --insecure-cookie   send the session cookie without `Secure`; only for plain
                        HTTP on a host other than localhost/127.0.0.1 (browsers
                        already treat those as secure)
    -h, --help          print this help
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
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value; see --help"))
            };
            match flag.as_str() {
                "--store" => store = Some(StoreChoice::parse(&value("--store")?)?),
                "--listen" => {
                    let text = value("--listen")?;
                    listen = Some(text.parse().map_err(|_| {
                        format!("--listen {text:?} is not an address like 127.0.0.1:3000")
                    })?);
                }
                "--insecure-cookie" => secure_cookie = false,
                "-h" | "--help" => return Ok(Command::Help),
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

/// Which store `--store` names.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// `memory`: a [`MemoryStore`].
    Memory,
    /// A SQLite file path or `sqlite:` / `file:` URL.
    Sqlite(String),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
    /// A `mysql://` or `mariadb://` URL.
    Mysql(String),
    /// A `redis://`, `rediss://`, `redis-cluster://` or `redis-sentinel://`
    /// URL (and their `rediss-` forms).
    Redis(String),
}

impl StoreChoice {
    /// Classify a `--store` value.
    ///
    /// ```
    /// use session_demo::StoreChoice;
    ///
    /// assert_eq!(StoreChoice::parse("memory")?, StoreChoice::Memory);
    /// assert_eq!(StoreChoice::parse("data/s.db")?, StoreChoice::Sqlite("data/s.db".into()));
    /// assert!(matches!(StoreChoice::parse("redis://127.0.0.1:6379")?, StoreChoice::Redis(_)));
    /// assert!(StoreChoice::parse("ftp://example.com").is_err());
    /// # Ok::<(), String>(())
    /// ```
    ///
    /// # Errors
    /// A message for an empty value or a URL scheme no store handles.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme = text.split_once("://").map(|(scheme, _)| scheme);
        Ok(match scheme {
            _ if text == "memory" => Self::Memory,
            _ if text.is_empty() => return Err("--store needs a value; see --help".into()),
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
            None => Self::Sqlite(text.into()),
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
            Self::Memory => Ok(Arc::new(MemoryStore::with_config(config))),
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
            Self::Memory => f.write_str("in-process memory (lost on exit)"),
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

/// `url` with any `user:password@` replaced by `***@`.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
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
    let store = session_redis::RedisSessionStore::builder(url)
        .session_config(config)
        .key_prefix("session-demo:")
        .build()
        .await
        .map_err(|e| format!("could not connect to Redis: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str, _config: SessionConfig) -> Result<Arc<dyn SessionStore>, String> {
    Err(missing_feature("Redis", "redis"))
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
    fn urls_are_classified_by_scheme() {
        for (text, expected) in [
            ("postgres://u@h/db", "PostgreSQL"),
            ("postgresql://u@h/db", "PostgreSQL"),
            ("mysql://root@h/db", "MySQL/MariaDB"),
            ("mariadb://root@h/db", "MySQL/MariaDB"),
            ("redis://h:6379", "Redis"),
            ("redis-cluster://h:7000", "Redis"),
            ("redis-sentinel://h:26379/0?sentinelServiceName=m", "Redis"),
            ("sqlite://x.db", "SQLite"),
            ("x.db", "SQLite"),
        ] {
            let shown = StoreChoice::parse(text).unwrap().to_string();
            assert!(shown.starts_with(expected), "{text}: {shown}");
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
