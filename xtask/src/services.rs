//! The servers the tests use, how to tell they answer, and how to start them.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{on_path, redis_command, root, succeeds};

/// How to tell a server is up.
pub(crate) enum Probe {
    /// Something accepts TCP connections on this port.
    Tcp(u16),
    /// A Redis answers PING.
    Redis(u16),
    /// A Redis Cluster node reports `cluster_state:ok`.
    RedisCluster(u16),
    /// A Redis Sentinel monitors `mymaster`.
    Sentinel(u16),
}

impl Probe {
    pub(crate) fn port(&self) -> u16 {
        match *self {
            Probe::Tcp(p) | Probe::Redis(p) | Probe::RedisCluster(p) | Probe::Sentinel(p) => p,
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "127.0.0.1:{}", self.port())
    }
}

/// A server that some tests need.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) env_var: &'static str,
    pub(crate) default_url: &'static str,
    pub(crate) probe: Probe,
    /// Tests for this service exist only when features with this word in
    /// their name are built (see `NATIVE_LIBS`).
    pub(crate) feature_word: Option<&'static str>,
}

pub(crate) const SERVICES: &[Service] = &[
    Service {
        name: "PostgreSQL",
        env_var: "SESSION_TEST_POSTGRES_URL",
        default_url: "postgres://postgres@127.0.0.1:5432/test",
        probe: Probe::Tcp(5432),
        feature_word: Some("postgres"),
    },
    Service {
        name: "MariaDB/MySQL",
        env_var: "SESSION_TEST_MYSQL_URL",
        default_url: "mysql://root@127.0.0.1:3306/test",
        probe: Probe::Tcp(3306),
        feature_word: Some("mysql"),
    },
    Service {
        name: "Redis",
        env_var: "SESSION_TEST_REDIS_URL",
        default_url: "redis://127.0.0.1:6379",
        probe: Probe::Redis(6379),
        feature_word: None,
    },
    Service {
        name: "Redis Cluster",
        env_var: "SESSION_TEST_REDIS_CLUSTER_URL",
        default_url: "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
        probe: Probe::RedisCluster(7000),
        feature_word: None,
    },
    Service {
        name: "Redis Sentinel",
        env_var: "SESSION_TEST_REDIS_SENTINEL_URL",
        default_url: "redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster",
        probe: Probe::Sentinel(26379),
        feature_word: None,
    },
];

const CLUSTER_PORTS: [u16; 3] = [7000, 7001, 7002];

fn wait_for(what: &str, within: Duration, ok: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ok() {
            println!("xtask: {what} answers");
            return Ok(());
        }
        sleep(Duration::from_millis(250));
    }
    Err(format!(
        "{what} did not come up within {}s",
        within.as_secs()
    ))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    if !on_path(program) {
        return Err(format!(
            "`{program}` is not installed (see .ci/run for the packages)"
        ));
    }
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed with {status}",
            args.join(" ")
        ))
    }
}

fn service(name: &str) -> &'static Service {
    SERVICES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| unreachable!("service {name} is in the table"))
}

/// Start whatever is not answering; leave running servers alone.
pub(crate) fn ensure_all() -> Result<(), String> {
    ensure_postgres()?;
    ensure_mariadb()?;
    ensure_redis()?;
    ensure_cluster()?;
    ensure_sentinel()?;
    println!(
        "\nxtask: every test service answers. `cargo xtask ci` finds them on their standard ports:"
    );
    for s in SERVICES {
        println!("  {}={}", s.env_var, s.default_url);
    }
    Ok(())
}

fn ensure_postgres() -> Result<(), String> {
    let pg = service("PostgreSQL");
    if !pg.probe.answers() {
        let versions = std::fs::read_dir("/etc/postgresql").map_err(|e| {
            format!("PostgreSQL is not answering and not installed here (/etc/postgresql: {e})")
        })?;
        for version in versions.flatten() {
            let version = version.file_name().to_string_lossy().into_owned();
            run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, "main", "start"],
            )?;
        }
        wait_for("PostgreSQL", Duration::from_secs(60), || pg.probe.answers())?;
    }
    // The tests use database `test`.
    let has_test_db = succeeds(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            "select 1",
        ],
    );
    if !has_test_db && on_path("psql") {
        run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE test",
            ],
        )?;
    }
    Ok(())
}

fn ensure_mariadb() -> Result<(), String> {
    let db = service("MariaDB/MySQL");
    if !db.probe.answers() {
        run(
            "start-stop-daemon",
            &[
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ],
        )?;
        wait_for("MariaDB", Duration::from_secs(60), || db.probe.answers())?;
    }
    if on_path("mysql") {
        // The server may accept TCP a moment before it accepts logins.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !succeeds(
            "mysql",
            &[
                "-h127.0.0.1",
                "-uroot",
                "-e",
                "CREATE DATABASE IF NOT EXISTS test",
            ],
        ) {
            if Instant::now() > deadline {
                return Err("MariaDB accepts connections but `CREATE DATABASE test` fails".into());
            }
            sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

fn ensure_redis() -> Result<(), String> {
    let redis = service("Redis");
    if !redis.probe.answers() {
        run(
            "redis-server",
            &[
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )?;
        wait_for("Redis", Duration::from_secs(30), || redis.probe.answers())?;
    }
    Ok(())
}

fn cluster_reply(port: u16, args: &[&str]) -> Option<String> {
    redis_command(SocketAddr::from(([127, 0, 0, 1], port)), args)
}

fn ensure_cluster() -> Result<(), String> {
    let cluster = service("Redis Cluster");
    if cluster.probe.answers() {
        return Ok(());
    }
    let dir = root().join("target/services/redis-cluster");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir_str = dir.to_string_lossy().into_owned();
    for port in CLUSTER_PORTS {
        if cluster_reply(port, &["PING"]).is_some_and(|r| r.starts_with("+PONG")) {
            continue;
        }
        let port_s = port.to_string();
        let conf = format!("nodes-{port}.conf");
        run(
            "redis-server",
            &[
                "--port",
                &port_s,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "5000",
                "--dir",
                &dir_str,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--logfile",
                &format!("{dir_str}/redis-{port}.log"),
            ],
        )?;
    }
    for port in CLUSTER_PORTS {
        wait_for(
            &format!("Redis Cluster node {port}"),
            Duration::from_secs(30),
            || cluster_reply(port, &["PING"]).is_some_and(|r| r.starts_with("+PONG")),
        )?;
    }
    // Nodes restarted from their saved config rejoin by themselves; give
    // them a moment before deciding the cluster must be (re)created.
    if wait_for("Redis Cluster", Duration::from_secs(8), || {
        cluster.probe.answers()
    })
    .is_ok()
    {
        return Ok(());
    }
    // Start from a clean slate: nodes that know stale peers or hold slots of
    // a cluster that no longer exists cannot be joined into a new one.
    for port in CLUSTER_PORTS {
        cluster_reply(port, &["FLUSHALL"]);
        cluster_reply(port, &["CLUSTER", "RESET", "HARD"]);
    }
    let nodes: Vec<String> = CLUSTER_PORTS
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let mut args: Vec<&str> = vec!["--cluster", "create"];
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    run("redis-cli", &args)?;
    wait_for("Redis Cluster", Duration::from_secs(60), || {
        cluster.probe.answers()
    })
}

fn ensure_sentinel() -> Result<(), String> {
    let sentinel = service("Redis Sentinel");
    if sentinel.probe.answers() {
        return Ok(());
    }
    let dir = root().join("target/services/redis-sentinel");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = dir.join("sentinel.conf");
    write_sentinel_conf(&conf, &dir)?;
    run("redis-server", &[&conf.to_string_lossy(), "--sentinel"])?;
    wait_for("Redis Sentinel", Duration::from_secs(30), || {
        sentinel.probe.answers()
    })
}

fn write_sentinel_conf(conf: &Path, dir: &Path) -> Result<(), String> {
    // Sentinel rewrites its config file as it learns; start from a known one.
    let text = format!(
        "port 26379\n\
         bind 127.0.0.1\n\
         daemonize yes\n\
         dir {dir}\n\
         logfile {dir}/sentinel.log\n\
         sentinel monitor mymaster 127.0.0.1 6379 1\n\
         sentinel down-after-milliseconds mymaster 5000\n",
        dir = dir.display()
    );
    std::fs::write(conf, text).map_err(|e| format!("{}: {e}", conf.display()))
}
