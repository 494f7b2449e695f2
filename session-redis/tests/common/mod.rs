//! Helpers shared by the server-backed tests.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use session_core::{SessionId, SessionStore};
use session_redis::RedisSessionStore;
use session_redis::fred::prelude::{ClientLike, KeysInterface, Pool, Value};
use session_redis::fred::types::{Builder, ClusterHash, CustomCommand, config::Config};

pub const SINGLE: &str = "SESSION_TEST_REDIS_URL";
pub const CLUSTER: &str = "SESSION_TEST_REDIS_CLUSTER_URL";
pub const SENTINEL: &str = "SESSION_TEST_REDIS_SENTINEL_URL";

/// A key prefix no other test run uses.
pub fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).unwrap();
    format!(
        "sr-test:{tag}:{}:{}:{:08x}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        u32::from_be_bytes(nonce)
    )
}

/// A connected pool for `url`, as an application would make one.
pub async fn pool(url: &str, size: usize) -> Pool {
    let pool = Builder::from_config(Config::from_url(url).unwrap())
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build_pool(size)
        .unwrap();
    pool.init().await.unwrap();
    pool
}

/// Every key under `prefix`, on every node.
pub async fn keys_with_prefix(pool: &Pool, prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}*");
    let client = pool.next();
    let keys: Vec<_> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(500), None)
            .try_collect()
            .await
            .unwrap()
    } else {
        client
            .scan_buffered(pattern, Some(500), None)
            .try_collect()
            .await
            .unwrap()
    };
    keys.iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

/// Delete every key under `prefix` (one by one: they span many slots).
pub async fn delete_prefix(pool: &Pool, prefix: &str) {
    for key in keys_with_prefix(pool, prefix).await {
        let _: i64 = pool.del(key).await.unwrap();
    }
}

/// Run any command (routed by its first key) and return the raw reply.
pub async fn raw(pool: &Pool, cmd: &'static str, args: Vec<Value>) -> Value {
    pool.custom::<Value, Value>(
        CustomCommand::new_static(cmd, ClusterHash::FirstKey, false),
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Everything stored under `key`, as byte strings: its name, members,
/// fields, values and scores.
pub async fn dump(pool: &Pool, key: &str) -> Vec<Vec<u8>> {
    let kind = raw(pool, "TYPE", vec![key.into()]).await;
    let content = match kind.as_str().as_deref() {
        Some("hash") => raw(pool, "HGETALL", vec![key.into()]).await,
        Some("zset") => {
            raw(
                pool,
                "ZRANGE",
                vec![key.into(), 0.into(), (-1).into(), "WITHSCORES".into()],
            )
            .await
        }
        Some("string") => raw(pool, "GET", vec![key.into()]).await,
        Some("none") => Value::Null,
        other => panic!("unexpected type {other:?} at {key}"),
    };
    let mut out = vec![key.as_bytes().to_vec()];
    flatten(content, &mut out);
    out
}

fn flatten(v: Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Map(map) => {
            for (k, v) in map.inner() {
                out.push(k.as_bytes().to_vec());
                flatten(v, out);
            }
        }
        Value::Null => {}
        other => out.push(
            other
                .as_bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| format!("{other:?}").into_bytes()),
        ),
    }
}

/// `PEXPIRETIME` of `key` (Redis 7): -2 missing, -1 no expiry.
pub async fn pexpiretime(pool: &Pool, key: &str) -> i64 {
    raw(pool, "PEXPIRETIME", vec![key.into()])
        .await
        .as_i64()
        .unwrap()
}

/// `n` stored sessions holding a counter `n` at 0, every other one bound
/// to an owner of its own (`owner-0`, `owner-2`, …).
pub async fn counters(store: &RedisSessionStore, n: usize) -> Vec<SessionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut s = store.create().await.unwrap();
        s.insert("n", &0u64).unwrap();
        if i % 2 == 0 {
            s.set_owner(format!("owner-{i}"));
        }
        store.save(&mut s).await.unwrap();
        ids.push(s.id().clone());
    }
    ids
}

/// A `redis-server` of our own on a free port, with an fsync-always
/// append-only file so a restart keeps every acknowledged write. For tests
/// that kill, restart or disturb a server: the shared one is never touched.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// More `redis-server` arguments (configuration directives).
    extra: Vec<String>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with more `redis-server` arguments, such
    /// as `--rename-command INFO ""`.
    pub fn start_with(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port, extra)
    }

    /// As [`start_with`](Self::start_with), on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "session-redis-private-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            dir,
            child: None,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
        };
        server.spawn();
        server
    }

    /// Start (or restart) the server process on the same port and data.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run the private-server tests");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 5];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG"
    }

    /// SIGKILL: the harshest way to lose the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server keeps its sockets open and answers nothing, as a
    /// host that froze or a network that drops packets would.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: the paused server goes on where it stopped.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused server would not die of SIGKILL any later, but a
            // resumed one exits cleanly.
            let _ = self.child.as_ref().map(|c| {
                Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status()
            });
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What [`FaultyProxy`] does to the first command it sees that contains
/// every needle it was armed with.
pub enum Fault {
    /// Forward the command, then catch its reply: report `applied` (Redis
    /// has run the command), wait for `resume`, and close the client's
    /// connection without forwarding the reply. fred then re-sends the
    /// command on a new connection, as it does after any connection loss.
    LoseReply {
        applied: tokio::sync::oneshot::Sender<()>,
        resume: tokio::sync::oneshot::Receiver<()>,
    },
    /// Hold the command (and everything after it on its connection) this
    /// long before forwarding it: a slow network, or a command that reaches
    /// Redis after the client gave up on it.
    Delay(Duration),
}

type Trap = Arc<Mutex<Option<(Vec<Vec<u8>>, Fault)>>>;

/// A TCP proxy in front of a Redis server that can lose one reply or delay
/// one command on request.
pub struct FaultyProxy {
    pub port: u16,
    trap: Trap,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let trap: Trap = Arc::default();
        let shared = Arc::clone(&trap);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, Arc::clone(&shared)));
            }
        });
        Self { port, trap, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Apply `fault` to the next command containing every one of `needles`.
    pub fn arm(&self, needles: &[&[u8]], fault: Fault) {
        let needles = needles.iter().map(|n| n.to_vec()).collect();
        *self.trap.lock().unwrap() = Some((needles, fault));
    }

    /// Whether the armed fault has been applied.
    pub fn sprung(&self) -> bool {
        self.trap.lock().unwrap().is_none()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn relay(client: tokio::net::TcpStream, upstream: u16, trap: Trap) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    type Held = (
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    );
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let held: Arc<Mutex<Option<Held>>> = Arc::default();
    let lose = Arc::clone(&held);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let fault = {
                let mut slot = trap.lock().unwrap();
                let hit = slot
                    .as_ref()
                    .is_some_and(|(needles, _)| needles.iter().all(|n| contains(chunk, n)));
                if hit {
                    slot.take().map(|(_, f)| f)
                } else {
                    None
                }
            };
            match fault {
                Some(Fault::Delay(by)) => tokio::time::sleep(by).await,
                Some(Fault::LoseReply { applied, resume }) => {
                    *lose.lock().unwrap() = Some((applied, resume));
                }
                None => {}
            }
            if server_tx.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let caught = held.lock().unwrap().take();
            if let Some((applied, resume)) = caught {
                let _ = applied.send(());
                let _ = resume.await;
                // Dropping the client's half closes its connection with the
                // reply unsent.
                return;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}

/// A Redis Cluster of our own: three primaries (no replicas) on free ports,
/// for tests that reshard it. The shared Cluster is never disturbed.
pub struct PrivateCluster {
    pub ports: [u16; 3],
    nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let base = cluster_ports();
        let ports = [base, base + 1, base + 2];
        let nodes: Vec<PrivateRedis> = ports
            .iter()
            .map(|&port| {
                PrivateRedis::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--appendonly",
                        "no",
                    ],
                )
            })
            .collect();
        let cluster = Self { ports, nodes };
        let third = 16384 / 3;
        for (i, &port) in ports.iter().enumerate() {
            let first = i as i64 * third;
            let last = if i == 2 { 16383 } else { first + third - 1 };
            cluster
                .admin(port, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])
                .await;
            cluster
                .admin(
                    port,
                    &[
                        "CLUSTER",
                        "ADDSLOTSRANGE",
                        &first.to_string(),
                        &last.to_string(),
                    ],
                )
                .await;
        }
        for &port in &ports[1..] {
            cluster
                .admin(
                    ports[0],
                    &["CLUSTER", "MEET", "127.0.0.1", &port.to_string()],
                )
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &ports {
            loop {
                let info = cluster.admin(port, &["CLUSTER", "INFO"]).await;
                let slots = cluster.admin(port, &["CLUSTER", "SLOTS"]).await;
                let ready = info.as_str().unwrap().contains("cluster_state:ok")
                    && slots.into_array().len() == 3;
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "private cluster did not form");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cluster
    }

    pub fn url(&self) -> String {
        let [a, b, c] = self.ports;
        format!("redis-cluster://127.0.0.1:{a}?node=127.0.0.1:{b}&node=127.0.0.1:{c}")
    }

    /// One command to one node (not routed).
    pub async fn admin(&self, port: u16, args: &[&str]) -> Value {
        let (cmd, rest) = args.split_first().unwrap();
        let client =
            Builder::from_config(Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap())
                .build()
                .unwrap();
        client.init().await.unwrap();
        let reply = client
            .custom::<Value, Value>(
                CustomCommand::new(cmd.to_string(), ClusterHash::Random, false),
                rest.iter().map(|&a| Value::from(a)).collect(),
            )
            .await
            .unwrap_or_else(|e| panic!("{args:?} on {port}: {e}"));
        let _ = client.quit().await;
        reply
    }

    async fn node_id(&self, port: u16) -> String {
        let id = self.admin(port, &["CLUSTER", "MYID"]).await;
        id.as_str().unwrap().into_owned()
    }

    /// The port of the node that serves `slot`.
    pub async fn owner_of(&self, slot: u16) -> u16 {
        let slots = self.admin(self.ports[0], &["CLUSTER", "SLOTS"]).await;
        for range in slots.into_array() {
            let range = range.into_array();
            let (start, end) = (range[0].as_i64().unwrap(), range[1].as_i64().unwrap());
            if (start..=end).contains(&i64::from(slot)) {
                let primary = range[2].clone().into_array();
                return u16::try_from(primary[1].as_i64().unwrap()).unwrap();
            }
        }
        panic!("slot {slot} is served by no node");
    }

    /// Move `slot` from the node serving it to another, as
    /// `redis-cli --cluster reshard` does (mark it migrating and importing,
    /// `MIGRATE` its keys, hand it over), pausing `pause` before the first
    /// key, after half of them and after the last, so that commands sent
    /// meanwhile meet every stage of the move. Returns the new node's port.
    pub async fn move_slot(&self, slot: u16, pause: Duration) -> u16 {
        let from = self.owner_of(slot).await;
        let to = *self.ports.iter().find(|&&p| p != from).unwrap();
        let (from_id, to_id) = (self.node_id(from).await, self.node_id(to).await);
        let slot_text = slot.to_string();
        self.admin(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
        )
        .await;
        self.admin(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
        )
        .await;
        tokio::time::sleep(pause).await;
        let mut halfway = false;
        loop {
            let keys = self
                .admin(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
                .await
                .into_array();
            if keys.is_empty() {
                break;
            }
            let (first, rest) = keys.split_at(keys.len().div_ceil(2));
            for batch in [first, rest] {
                if batch.is_empty() {
                    continue;
                }
                let mut args = vec![
                    "MIGRATE".to_owned(),
                    "127.0.0.1".to_owned(),
                    to.to_string(),
                    String::new(),
                    "0".to_owned(),
                    "5000".to_owned(),
                    "KEYS".to_owned(),
                ];
                args.extend(batch.iter().map(|k| k.as_str().unwrap().into_owned()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.admin(from, &args).await;
                if !halfway {
                    halfway = true;
                    tokio::time::sleep(pause).await;
                }
            }
        }
        tokio::time::sleep(pause).await;
        for port in [to, from] {
            self.admin(port, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])
                .await;
        }
        let other = *self.ports.iter().find(|&&p| p != from && p != to).unwrap();
        self.admin(other, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])
            .await;
        to
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.nodes.clear();
    }
}

/// A first port of three free ones whose Cluster bus ports (10000 above)
/// are free too.
fn cluster_ports() -> u16 {
    let mut seed = [0u8; 2];
    getrandom::fill(&mut seed).unwrap();
    let start = 20_000 + u16::from_be_bytes(seed) % 20_000;
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    (start..50_000)
        .find(|&base| (base..base + 3).all(|p| free(p) && free(p + 10_000)))
        .expect("three free ports for a private cluster")
}
