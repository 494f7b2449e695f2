//! Configuring and connecting a [`RedisSessionStore`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::{
    Client, ClientLike, ClientState, Config, LuaInterface, Options, Pool, ReconnectPolicy, Value,
};
use fred::types::config::ServerConfig;
use fred::types::{ClusterHash, CustomCommand};
use session_core::{Error, Result, SessionConfig, duration_ms};

use crate::keys::{DEFAULT_BUCKETS, DEFAULT_PREFIX, Layout, MAX_BUCKETS, valid_prefix};
use crate::scripts::Scripts;
use crate::store::{Inner, RedisSessionStore};

/// Default number of pooled clients.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Default bound on every Redis command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the receipt of an applied write is kept at least (see
/// "Re-sent commands" in the crate docs) ...
const RECEIPT_TTL: Duration = Duration::from_secs(15);
/// ... and at least this many command timeouts (fred re-sends a command
/// only within its timeout).
const RECEIPT_COMMANDS: u32 = 4;
/// A lock's lease must fit a login's writes: at least this many command
/// timeouts.
const LEASE_COMMANDS: u32 = 4;
/// How many Cluster redirections (`MOVED`, `ASK`) fred follows for one
/// command. fred sends a command it was told to `ASK` elsewhere back to
/// the node that said so, which answers `ASK` again; if the command ran out
/// of attempts before it ran out of redirections, fred would fail its
/// connection, and every command on it with it. So each command has more
/// attempts than redirections: one per redirection, plus the first, plus
/// [`MAX_RESENDS`]. The store sends a command refused this way again itself
/// (see `while_slot_moves`).
const MAX_REDIRECTIONS: u32 = 2;
/// How often fred sends a command again after its connection broke (fred's
/// default).
const MAX_RESENDS: u32 = 2;
/// Longest command timeout accepted. Longer ones are clamped to it, which
/// keeps every expiry derived from it in the range Redis accepts.
const LONGEST_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest owner lock lifetime accepted (clamped likewise).
const LONGEST_OWNER_LOCK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default bound on opening a connection (TCP, TLS, `AUTH`, cluster discovery).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default lifetime of a per-owner lock (see
/// [`RedisSessionStoreBuilder::owner_lock_ttl`]).
pub const DEFAULT_OWNER_LOCK_TTL: Duration = Duration::from_secs(10);

enum Source {
    Url(String),
    Config(Box<Config>),
    Pool(Pool),
}

/// Configures a [`RedisSessionStore`]; made by [`RedisSessionStore::builder`]
/// and its siblings, finished by [`build`](Self::build).
///
/// ```no_run
/// use std::time::Duration;
/// use session_core::SessionConfig;
/// use session_redis::RedisSessionStore;
///
/// # async fn demo() -> session_core::Result<()> {
/// let store = RedisSessionStore::builder("redis://127.0.0.1:6379/0")
///     .config(
///         SessionConfig::new(Duration::from_secs(30 * 60))
///             .with_absolute_timeout(Duration::from_secs(12 * 3600)),
///     )
///     .key_prefix("myapp:session:")
///     .pool_size(8)
///     .command_timeout(Duration::from_millis(500))
///     .connect_timeout(Duration::from_secs(3))
///     .build()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
pub struct RedisSessionStoreBuilder {
    source: Source,
    session: SessionConfig,
    prefix: String,
    buckets: u16,
    pool_size: usize,
    command_timeout: Duration,
    connect_timeout: Duration,
    reconnect: ReconnectPolicy,
    lock_ttl: Duration,
    lock_wait: Option<Duration>,
}

impl fmt::Debug for RedisSessionStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            // A URL may carry a password: show only its scheme.
            Source::Url(url) => format!("url({}://…)", url.split("://").next().unwrap_or("?")),
            Source::Config(_) => "fred config".into(),
            Source::Pool(pool) => format!("existing pool of {}", pool.size()),
        };
        f.debug_struct("RedisSessionStoreBuilder")
            .field("source", &source)
            .field("session", &self.session)
            .field("prefix", &self.prefix)
            .field("buckets", &self.buckets)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("lock_ttl", &self.lock_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisSessionStore {
    /// Configure a store that connects to `url`, in any form fred's
    /// [`Config::from_url`] understands:
    ///
    /// * `redis://[[user:]password@]host[:port][/db]`, or `rediss://…` for
    ///   TLS (feature `tls`);
    /// * `redis-cluster://host:port?node=host:port&node=host:port` for a
    ///   Cluster (any known nodes; the rest are discovered);
    /// * `redis-sentinel://host:26379/db?sentinelServiceName=mymaster&node=host:port`
    ///   for a primary found through Sentinel (the host and `node`s are
    ///   sentinels).
    ///
    /// The `valkey` schemes (`valkey://`, `valkeys://`, `valkey-cluster://`,
    /// …) are taken as their `redis` twins; any other scheme is an error.
    ///
    /// The URL is parsed by [`build`](RedisSessionStoreBuilder::build).
    pub fn builder(url: impl Into<String>) -> RedisSessionStoreBuilder {
        RedisSessionStoreBuilder::new(Source::Url(url.into()))
    }

    /// Configure a store that connects with a fred [`Config`] built in code
    /// (custom TLS, credentials provider, …).
    pub fn builder_from_config(config: Config) -> RedisSessionStoreBuilder {
        RedisSessionStoreBuilder::new(Source::Config(Box::new(config)))
    }

    /// Configure a store over a pool the application already connected
    /// (`pool.init().await`). The pool's own reconnect policy and connection
    /// settings apply, while the store's commands carry the builder's
    /// [`command_timeout`](RedisSessionStoreBuilder::command_timeout) and the
    /// store's own limits on re-sends and Cluster redirections (other
    /// commands on the pool keep the pool's); the builder's
    /// [`pool_size`](RedisSessionStoreBuilder::pool_size),
    /// [`connect_timeout`](RedisSessionStoreBuilder::connect_timeout) and
    /// [`reconnect_policy`](RedisSessionStoreBuilder::reconnect_policy) are
    /// ignored, and the store never closes the pool. `build` refuses a pool
    /// none of whose clients is connected or connecting.
    pub fn builder_from_pool(pool: Pool) -> RedisSessionStoreBuilder {
        RedisSessionStoreBuilder::new(Source::Pool(pool))
    }

    /// As [`builder_from_pool`](Self::builder_from_pool), for a single
    /// connected client.
    ///
    /// # Errors
    /// Never in practice: a pool of one client is always valid.
    pub fn builder_from_client(client: Client) -> Result<RedisSessionStoreBuilder> {
        let pool = Pool::from_clients(vec![client]).map_err(Error::backend)?;
        Ok(Self::builder_from_pool(pool))
    }

    /// Connect to `url` with the default settings and `config`'s timeouts.
    ///
    /// # Errors
    /// As [`RedisSessionStoreBuilder::build`].
    pub async fn connect(url: &str, config: SessionConfig) -> Result<Self> {
        Self::builder(url).config(config).build().await
    }
}

impl RedisSessionStoreBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            session: SessionConfig::default(),
            prefix: DEFAULT_PREFIX.to_owned(),
            buckets: DEFAULT_BUCKETS,
            pool_size: DEFAULT_POOL_SIZE,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect: ReconnectPolicy::new_exponential(0, 100, 2_000, 2),
            lock_ttl: DEFAULT_OWNER_LOCK_TTL,
            lock_wait: None,
        }
    }

    /// Idle and absolute timeouts, size and per-owner limits, and the clock
    /// (default: [`SessionConfig::default`], a 24-hour idle timeout).
    #[must_use]
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }

    /// The prefix of every key the store writes (default `"session:"`).
    /// Give each application (or each test) its own. It must not contain
    /// `{` or `}`, which would change the Cluster hash tags.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many buckets (hash tags) sessions are spread over (default 64,
    /// at most 1024). Each bucket is one Cluster hash slot with its own
    /// expiry index; [`len`](session_core::SessionStore::len) and
    /// [`purge_expired`](session_core::SessionStore::purge_expired) visit
    /// every bucket, and rotating a stored session draws about this many IDs
    /// to find one in the same bucket (about 30 µs at 64 buckets, 0.3 ms at
    /// 1024). More buckets spread a Cluster's load more evenly.
    /// Changing it for existing data orphans the sessions: pick it once.
    #[must_use]
    pub fn buckets(mut self, buckets: u16) -> Self {
        self.buckets = buckets.clamp(1, MAX_BUCKETS);
        self
    }

    /// Number of pooled clients (connections, or sets of connections for a
    /// Cluster) commands are spread over round-robin (default 4).
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// The longest any one Redis command may take, including waiting for a
    /// reconnection; past it the operation fails with `Error::Backend`
    /// (default 2 s). A script may take two commands (`EVALSHA`, then
    /// `EVAL` if the server lost it) and an operation a few in sequence:
    /// see "Failures and time limits" in the crate docs. It is fred's own
    /// per-command timeout, so a command that timed out is never sent
    /// later. At most an hour.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.clamp(Duration::from_millis(1), LONGEST_COMMAND_TIMEOUT);
        self
    }

    /// The longest opening a connection may take (default 5 s); `build`
    /// fails after twice this (a Cluster's discovery takes a few more round
    /// trips) if the server cannot be reached.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How lost connections are re-opened (default: forever, exponential
    /// back-off from 100 ms to 2 s). While reconnecting, commands wait at
    /// most the command timeout.
    #[must_use]
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// How long a per-owner lock lives if its holder never releases it
    /// (default 10 s). Logins under a per-owner limit, rotations of sessions
    /// already bound to an owner and
    /// [`destroy_owner_sessions`](session_core::SessionStore::destroy_owner_sessions)
    /// take the lock (and, briefly, listing and counting an owner's sessions
    /// that found a session moving to a new ID twice). It is raised to at
    /// least four command timeouts, so a holder's writes fit in it; a holder that finds less than two command
    /// timeouts of its lease left before its writes fails with
    /// `Error::Backend` instead of writing outside the lease. At most a day.
    #[must_use]
    pub fn owner_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.clamp(Duration::from_millis(10), LONGEST_OWNER_LOCK_TTL);
        self
    }

    /// How long an operation that takes an owner's lock (see
    /// [`owner_lock_ttl`](Self::owner_lock_ttl)) waits for another holder to
    /// finish before failing with `Error::Backend` (default: the lock TTL,
    /// so a crashed holder never blocks the owner for good).
    #[must_use]
    pub fn owner_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// Connect (unless built from an existing pool), load the scripts, and
    /// return the store.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (which retrying will not cure) if the URL is
    /// invalid (or needs the `tls` feature), the key prefix contains `{` or
    /// `}`, a pool given to
    /// [`builder_from_pool`](RedisSessionStore::builder_from_pool) is not
    /// connected (never `init()`ed, or closed), or the server is a Cluster
    /// node reached through a URL that is not a Cluster URL;
    /// [`Error::Backend`] if Redis cannot be reached within the connect
    /// timeout, the server says it is older than Redis 7.0, or the scripts
    /// cannot be loaded. The version is asked with `HELLO`
    /// (which every ACL user may run), or `INFO` where that is refused; a
    /// server that refuses both (renamed commands, a proxy) is assumed new
    /// enough, and a warning is logged.
    pub async fn build(self) -> Result<RedisSessionStore> {
        if !valid_prefix(&self.prefix) {
            return Err(Error::InvalidInput(
                "session-redis: the key prefix must not contain '{' or '}' (they would change the Cluster hash tags)".into(),
            ));
        }
        let (pool, owns_pool) = match self.source {
            Source::Pool(pool) => {
                // A pool never `init()`ed would only time out on the first
                // command: say what is wrong instead.
                let clients = pool.clients();
                if !clients.is_empty()
                    && clients
                        .iter()
                        .all(|c| c.state() == ClientState::Disconnected)
                {
                    return Err(Error::InvalidInput(
                        "session-redis: the fred pool is not connected; call `pool.init().await` before `builder_from_pool` (or let the store connect: `RedisSessionStore::builder(url)`)".into(),
                    ));
                }
                (pool, false)
            }
            Source::Url(ref url) => {
                let config = parse_url(url)?;
                (self.connect(config).await?, true)
            }
            Source::Config(ref config) => (self.connect((**config).clone()).await?, true),
        };
        let scripts = Scripts::new();
        let lock_ttl = self
            .lock_ttl
            .max(self.command_timeout.saturating_mul(LEASE_COMMANDS));
        if pool.clients().is_empty() {
            return Err(Error::InvalidInput(
                "session-redis: the fred pool has no clients".into(),
            ));
        }
        let clients = pool
            .clients()
            .iter()
            .map(|c| {
                c.with_options(&Options {
                    timeout: Some(self.command_timeout),
                    max_redirections: Some(MAX_REDIRECTIONS),
                    max_attempts: Some(MAX_REDIRECTIONS + MAX_RESENDS + 1),
                    ..Options::default()
                })
            })
            .collect();
        let receipt_ttl = RECEIPT_TTL.max(self.command_timeout.saturating_mul(RECEIPT_COMMANDS));
        let inner = Inner {
            pool,
            clients,
            next: AtomicUsize::new(0),
            owns_pool,
            config: self.session,
            layout: Layout::new(self.prefix, self.buckets),
            scripts,
            command_timeout: self.command_timeout,
            lock_ttl,
            lock_wait: self.lock_wait.unwrap_or(lock_ttl),
            receipt_ttl: crate::store::num(duration_ms(receipt_ttl).max(1)),
        };
        check_server(&inner).await?;
        // Load every script once up front (on every primary of a Cluster);
        // after a restart or fail-over they are sent again on demand.
        for script in inner.scripts.all() {
            let loaded = tokio::time::timeout(
                inner.command_timeout,
                inner.pool.next().script_load_cluster::<(), _>(script.lua),
            )
            .await;
            match loaded {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::backend(e)),
                Err(_) => {
                    return Err(Error::backend_msg(
                        "session-redis: timed out loading the scripts",
                    ));
                }
            }
        }
        tracing::debug!(prefix = inner.layout.prefix(), "Redis session store ready");
        Ok(RedisSessionStore {
            inner: Arc::new(inner),
        })
    }

    async fn connect(&self, config: Config) -> Result<Pool> {
        let service = match &config.server {
            ServerConfig::Sentinel { service_name, .. } => Some(service_name.clone()),
            _ => None,
        };
        let pool = fred::types::Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = self.connect_timeout;
                c.internal_command_timeout = self.connect_timeout;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = self.command_timeout;
            })
            .set_policy(self.reconnect.clone())
            .build_pool(self.pool_size)
            .map_err(|e| {
                Error::InvalidInput(format!("session-redis: invalid Redis configuration: {e}"))
            })?;
        // Cluster discovery takes a few round trips beyond the TCP connect.
        let limit = self.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(limit, pool.init()).await {
            Ok(Ok(_connection_task)) => Ok(pool),
            Ok(Err(e)) => {
                let _ = pool.quit().await;
                // A sentinel answers nil for a service it does not monitor,
                // which fred reports as a "missing primary address".
                let hint = match service {
                    Some(name)
                        if *e.kind() == ErrorKind::Sentinel
                            && e.details().contains("Missing primary") =>
                    {
                        format!(
                            " (do the sentinels monitor a primary named {name:?}? check `sentinelServiceName`)"
                        )
                    }
                    _ => String::new(),
                };
                Err(Error::backend_msg(format!(
                    "session-redis: cannot connect to Redis: {}{hint}",
                    crate::store::describe(&e)
                )))
            }
            Err(_) => {
                let _ = pool.quit().await;
                Err(Error::backend_msg(format!(
                    "session-redis: cannot connect to Redis within {limit:?}"
                )))
            }
        }
    }
}

/// Refuse a server older than Redis 7.0 (the scripts use `SET … PXAT`
/// and `PEXPIREAT … GT`; an older server would stop a script midway).
///
/// The version comes from `HELLO`, which Redis lets every client run
/// whatever its ACL (`INFO` is in `@dangerous`, which least-privilege users
/// lack), or from `INFO server` where `HELLO` is refused (renamed, or
/// before Redis 6.2, which wants arguments). A server that answers neither
/// with a version (both renamed or denied, or a proxy that hides them) is
/// given the benefit of the doubt, with a warning. Only a timeout or a lost
/// connection fails the check.
///
/// The same reply says whether the server is a Cluster node (`mode`, or
/// `redis_mode` in `INFO`): reached through a `redis://` or Sentinel URL,
/// fred would not follow its `MOVED` redirects, and most operations would
/// fail, so the build does instead, naming the URL to use.
async fn check_server(inner: &Inner) -> Result<()> {
    let mut version = None;
    let mut mode = None;
    if let Some(hello) = ask(inner, "HELLO", Vec::new()).await? {
        version = hello_version(&hello);
        mode = hello_field(&hello, "mode");
    }
    if version.is_none() || mode.is_none() {
        let info = ask(inner, "INFO", vec![Value::from_static_str("server")])
            .await?
            .and_then(|info| info.as_str().map(|info| info.into_owned()));
        if let Some(info) = info {
            version = version.or_else(|| info_version(&info));
            mode = mode.or_else(|| info_field(&info, "redis_mode").map(str::to_owned));
        }
    }
    let clustered = inner.pool.next().client_config().server.is_clustered();
    if mode.as_deref() == Some("cluster") && !clustered {
        return Err(Error::InvalidInput(
            "session-redis: the server is a Redis Cluster node, but the URL is not a Cluster \
             URL: connect with redis-cluster://HOST:PORT (rediss-cluster:// for TLS), so that \
             requests follow the Cluster's redirects"
                .into(),
        ));
    }
    match version {
        Some((major, minor)) if major < MIN_REDIS.0 => Err(Error::backend_msg(format!(
            "session-redis needs Redis {}.{} or newer (or Valkey); the server is {major}.{minor}",
            MIN_REDIS.0, MIN_REDIS.1
        ))),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(
                "session-redis: Redis did not tell its version (HELLO and INFO were refused or \
                 silent); assuming Redis {}.{} or newer, as the scripts need",
                MIN_REDIS.0,
                MIN_REDIS.1
            );
            Ok(())
        }
    }
}

/// Send `command` to any server: its reply, or `None` if the server
/// answered with an error (not permitted, unknown or renamed command, wrong
/// arguments).
async fn ask(inner: &Inner, command: &'static str, args: Vec<Value>) -> Result<Option<Value>> {
    let custom = CustomCommand::new_static(command, ClusterHash::Random, false);
    let reply = tokio::time::timeout(
        inner.command_timeout,
        inner.pool.next().custom::<Value, Value>(custom, args),
    )
    .await;
    match reply {
        Ok(Ok(value)) => Ok(Some(value)),
        Ok(Err(e)) if refused(&e) => {
            tracing::debug!(command, error = %e, "Redis refused a version query");
            Ok(None)
        }
        Ok(Err(e)) => Err(Error::backend(e)),
        Err(_) => Err(Error::backend_msg(
            "session-redis: timed out asking Redis for its version",
        )),
    }
}

/// Whether `e` is an error reply from the server (fred's kinds for `ERR`,
/// `NOPERM` and other replies), rather than a failure to get one.
fn refused(e: &FredError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Unknown | ErrorKind::InvalidCommand | ErrorKind::InvalidArgument
    )
}

/// The oldest Redis the scripts run on.
const MIN_REDIS: (u32, u32) = (7, 0);

/// `(major, minor)` from the `version` of a `HELLO` reply: pairs in an
/// array (RESP2) or a map (RESP3).
fn hello_version(reply: &Value) -> Option<(u32, u32)> {
    parse_version(&hello_field(reply, "version")?)
}

/// Field `name` of a `HELLO` reply: pairs in an array (RESP2) or a map
/// (RESP3).
fn hello_field(reply: &Value, name: &str) -> Option<String> {
    let value = match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|pair| pair[0].as_str().as_deref() == Some(name))
            .and_then(|pair| pair[1].as_str()),
        Value::Map(map) => map
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .and_then(|(_, value)| value.as_str()),
        _ => None,
    }?;
    Some(value.into_owned())
}

/// `(major, minor)` from the `redis_version:` line of `INFO server`.
fn info_version(info: &str) -> Option<(u32, u32)> {
    parse_version(info_field(info, "redis_version")?)
}

/// Field `name` of an `INFO` reply (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// `(major, minor)` from `major.minor.patch`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The URL schemes a store connects with: Redis or Valkey, plain or TLS,
/// a single node, a Cluster or a primary found through Sentinel. (fred
/// reads any other scheme as `redis://`, so `http://host` would connect.)
const SCHEMES: [&str; 12] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "valkey",
    "valkeys",
    "valkey-cluster",
    "valkeys-cluster",
    "valkey-sentinel",
    "valkeys-sentinel",
];

fn parse_url(url: &str) -> Result<Config> {
    const EXPECTED: &str = "expected redis://, rediss://, redis-cluster:// or redis-sentinel:// (rediss-… for TLS; valkey… alike)";
    let scheme = match url.split_once("://") {
        Some((scheme, _)) if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => scheme,
        // Only a scheme-like prefix is shown: anything else may hold a
        // password.
        Some((scheme, _))
            if scheme.len() <= 32
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            return Err(Error::InvalidInput(format!(
                "session-redis: unsupported URL scheme {scheme}://; {EXPECTED}"
            )));
        }
        _ => {
            return Err(Error::InvalidInput(format!(
                "session-redis: invalid Redis URL; {EXPECTED}"
            )));
        }
    };
    let lower = scheme.to_ascii_lowercase();
    let tls = lower.starts_with("rediss") || lower.starts_with("valkeys");
    if tls && !cfg!(feature = "tls") {
        return Err(Error::InvalidInput(format!(
            "session-redis: {scheme}:// needs TLS; enable the `tls` feature of session-redis"
        )));
    }
    #[cfg(feature = "tls")]
    if tls {
        // rustls needs a process-wide crypto provider; install ring unless the
        // application already chose one.
        let _ = fred::rustls::crypto::ring::default_provider().install_default();
    }
    // fred's messages say what is wrong ("Invalid or missing sentinel
    // service name query parameter."); one that quotes the URL's password
    // is cut to the kind of error.
    Config::from_url(url).map_err(|e| {
        let quotes_password = url_password(url).is_some_and(|password| {
            let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
            e.details().contains(password) || e.details().contains(&*decoded)
        });
        let detail = if quotes_password {
            format!("{:?}", e.kind())
        } else {
            e.details().to_owned()
        };
        Error::InvalidInput(format!(
            "session-redis: invalid Redis URL ({detail}); {EXPECTED}"
        ))
    })
}

/// The password in a URL's user information, if any.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_single_node_cluster_and_sentinel() {
        let single = parse_url("redis://127.0.0.1:6379/2").unwrap();
        assert!(matches!(single.server, ServerConfig::Centralized { .. }));
        assert_eq!(single.database, Some(2));

        let cluster =
            parse_url("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002")
                .unwrap();
        match cluster.server {
            ServerConfig::Clustered { hosts, .. } => assert_eq!(hosts.len(), 3),
            other => panic!("not a cluster config: {other:?}"),
        }

        let sentinel =
            parse_url("redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster").unwrap();
        match sentinel.server {
            ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "mymaster"),
            other => panic!("not a sentinel config: {other:?}"),
        }
    }

    #[test]
    fn only_redis_and_valkey_schemes_are_taken() {
        for url in [
            "http://127.0.0.1:6379",
            "https://127.0.0.1:6379",
            "unix://tmp/redis.sock",
            "redis+unix:///tmp/redis.sock",
            "postgres://postgres@127.0.0.1:5432/test",
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(err.contains("unsupported URL scheme"), "{url}: {err}");
            assert!(err.contains("redis://"), "{err}");
        }
        assert!(parse_url("REDIS://127.0.0.1:6379").is_ok());
        assert!(parse_url("valkey://127.0.0.1:6379").is_ok());
        let err = parse_url("user:hunter2@127.0.0.1:6379").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_urls_are_errors_that_do_not_echo_secrets() {
        let err = parse_url("redis-sentinel://:hunter2@127.0.0.1:26379/0").unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(!err.is_retryable(), "a bad URL stays bad");
        assert!(!err.to_string().contains("hunter2"));
        assert!(
            err.to_string().contains("sentinel service name"),
            "says what is wrong: {err}"
        );
        assert!(parse_url("not a url").is_err());
        // A message that would quote the password is cut to its kind.
        let err = parse_url("redis-cluster://:hunter2@127.0.0.1:7000?node=hunter2").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // Also where the URL holds it percent-encoded and fred quotes it
        // decoded.
        let err =
            parse_url("redis-cluster://:hunt%40er2@127.0.0.1:7000?node=hunt%40er2").unwrap_err();
        assert!(!err.to_string().contains("hunt@er2"), "{err}");
        assert_eq!(url_password("redis://u:p%40ss@h:1/0?x=y"), Some("p%40ss"));
        assert_eq!(url_password("redis://h:1/0?node=a@b"), None);
        assert_eq!(url_password("redis://u@h:1"), None);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_urls_need_the_tls_feature() {
        let err = parse_url("rediss://127.0.0.1:6380").unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_urls_configure_rustls() {
        let config = parse_url("rediss://127.0.0.1:6380").unwrap();
        assert!(config.uses_rustls());
    }

    #[tokio::test]
    async fn braces_in_the_prefix_are_refused_before_connecting() {
        let err = RedisSessionStore::builder("redis://127.0.0.1:1")
            .key_prefix("bad{tag}:")
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_the_build_within_the_connect_timeout() {
        let started = std::time::Instant::now();
        let err = RedisSessionStore::builder("redis://127.0.0.1:1")
            .connect_timeout(Duration::from_millis(300))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Backend(_)));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_pool_that_was_never_connected_is_refused_at_once() {
        let pool =
            fred::types::Builder::from_config(Config::from_url("redis://127.0.0.1:1").unwrap())
                .build_pool(2)
                .unwrap();
        let started = std::time::Instant::now();
        let err = RedisSessionStore::builder_from_pool(pool)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("init()"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(500));
        let client = fred::types::Builder::default_centralized().build().unwrap();
        let err = RedisSessionStore::builder_from_client(client)
            .unwrap()
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not connected"), "{err}");
    }

    #[test]
    fn durations_are_clamped_to_what_redis_accepts() {
        let builder = RedisSessionStore::builder("redis://127.0.0.1:1")
            .command_timeout(Duration::MAX)
            .owner_lock_ttl(Duration::MAX)
            .connect_timeout(Duration::MAX);
        assert_eq!(builder.command_timeout, LONGEST_COMMAND_TIMEOUT);
        assert_eq!(builder.lock_ttl, LONGEST_OWNER_LOCK_TTL);
        let zero = RedisSessionStore::builder("redis://127.0.0.1:1")
            .command_timeout(Duration::ZERO)
            .owner_lock_ttl(Duration::ZERO);
        assert!(zero.command_timeout > Duration::ZERO && zero.lock_ttl > Duration::ZERO);
    }

    #[test]
    fn server_versions_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(info_version(info), Some((7, 0)));
        assert_eq!(info_version("redis_version:6.2.14\n"), Some((6, 2)));
        assert_eq!(info_version("# Server\nos:Linux\n"), None);
        assert_eq!(info_version("redis_version:x.y\n"), None);
    }

    #[test]
    fn server_versions_are_read_from_hello_in_resp2_and_resp3() {
        let s = |v: &str| Value::from(v);
        let resp2 = Value::Array(vec![
            s("server"),
            s("redis"),
            s("version"),
            s("7.0.15"),
            s("proto"),
            Value::Integer(2),
            s("modules"),
            Value::Array(Vec::new()),
        ]);
        assert_eq!(hello_version(&resp2), Some((7, 0)));
        let mut map = fred::types::Map::new();
        map.insert("server".into(), s("valkey"));
        map.insert("version".into(), s("8.1.0"));
        assert_eq!(hello_version(&Value::Map(map)), Some((8, 1)));
        let old = Value::Array(vec![s("server"), s("redis"), s("version"), s("6.2.14")]);
        assert_eq!(hello_version(&old), Some((6, 2)));
        assert_eq!(
            hello_version(&Value::Array(vec![s("server"), s("redis")])),
            None
        );
        assert_eq!(hello_version(&s("OK")), None);
    }

    #[test]
    fn only_error_replies_get_the_benefit_of_the_doubt() {
        // fred's kind for `NOPERM …` and `ERR unknown command …` replies is
        // `Unknown` (the ACL test in tests/behaviour.rs sees a real one).
        for kind in [
            ErrorKind::Unknown,
            ErrorKind::InvalidCommand,
            ErrorKind::InvalidArgument,
        ] {
            assert!(refused(&FredError::new(kind, "NOPERM")));
        }
        assert!(!refused(&FredError::new(ErrorKind::Timeout, "timed out")));
        assert!(!refused(&FredError::new(ErrorKind::IO, "reset")));
        assert!(!refused(&FredError::new(ErrorKind::Canceled, "canceled")));
    }

    #[test]
    fn debug_hides_the_url() {
        let builder = RedisSessionStore::builder("redis://:hunter2@127.0.0.1:6379");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("redis://"));
    }
}
