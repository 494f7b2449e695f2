//! End to end in a real browser: the demo binary on a loopback port, driven
//! through headless Chromium by chromedriver (WebDriver).
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. The driver is
//! `SESSION_TEST_CHROMEDRIVER`, else `/usr/bin/chromedriver`; the browser is
//! `SESSION_TEST_CHROMIUM`, else `/usr/bin/chromium`. If either is missing
//! the test prints SKIPPED, or fails when `SESSION_TEST_REQUIRE_SERVICES` is
//! set.
//!
//! Every process it starts leads its own process group (chromedriver's
//! holds every Chromium process it launches). The groups are killed when the
//! test ends, pass or fail; on a pass the test also checks that no member of
//! them is left running. Waits are asynchronous and under timeouts, so a
//! hung demo, driver or browser fails the test instead of hanging it.
#![cfg(unix)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cookie::SameSite;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use session_core::testing::REQUIRE_SERVICES_ENV;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const COOKIE: &str = "__Host-session-demo";

/// The whole test, browser included, must finish within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// A child process leading its own process group. Dropping it kills the
/// whole group; [`Group::stop`] does too, and then checks that nothing of
/// the group survives.
struct Group {
    name: &'static str,
    child: Child,
    /// `None` once the group is known to be gone.
    pgid: Option<i32>,
}

impl Group {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        command.process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        Self { name, child, pgid }
    }

    /// SIGKILL to every process of the group.
    fn kill_group(&self) {
        let Some(pgid) = self.pgid.and_then(rustix::process::Pid::from_raw) else {
            return;
        };
        match rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => eprintln!("cannot kill {}'s process group: {e}", self.name),
        }
    }

    /// Kill the group, reap its leader, and wait (up to ten seconds) until
    /// no process of the group is left running; panic if one is.
    async fn stop(mut self) {
        self.kill_group();
        if let Err(e) = self.child.wait().await {
            panic!("cannot reap {}: {e}", self.name);
        }
        if let Some(pgid) = self.pgid.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = running_in_group(pgid);
                if left.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} left processes running in its group: {left:?}",
                    self.name
                );
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group ID is ours while its leader has not been reaped, or
        // while any member still runs; after that it could be reused.
        let leader_running = matches!(self.child.try_wait(), Ok(None));
        if leader_running || self.pgid.is_some_and(|g| !running_in_group(g).is_empty()) {
            self.kill_group();
        }
    }
}

/// The processes of group `pgid` that have not exited (zombies waiting for a
/// parent to reap them are not running).
#[cfg(target_os = "linux")]
fn running_in_group(pgid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may contain anything.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let group = fields.nth(1)?.parse::<i32>().ok()?;
            (group == pgid && !matches!(state, "Z" | "X")).then_some((pid, comm))
        })
        .collect()
}

/// Elsewhere only the kill is done; there is no cheap way to list a group.
#[cfg(not(target_os = "linux"))]
fn running_in_group(_pgid: i32) -> Vec<(i32, String)> {
    Vec::new()
}

/// Collect everything `reader` produces into `into`, in the background, so
/// the child never blocks on a full pipe.
fn drain(
    reader: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = into.lock().expect("output buffer");
            text.push_str(&line);
            text.push('\n');
        }
    })
}

/// `var`'s path, else `default` if it exists; `None` (SKIPPED) or a panic
/// under `SESSION_TEST_REQUIRE_SERVICES` when there is neither.
fn tool(var: &str, default: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os(REQUIRE_SERVICES_ENV).is_some() {
        panic!(
            "{} not found (set {var} or install the Debian package {package}), but \
             {REQUIRE_SERVICES_ENV} requires the browser test to run",
            path.display()
        );
    }
    println!(
        "SKIPPED: {} not found; set {var} or install the Debian package {package}",
        path.display()
    );
    None
}

/// The demo on a free loopback port with a SQLite file, once it listens.
async fn start_demo(db: &Path) -> (Group, SocketAddr) {
    let mut demo = Group::spawn(
        "session-demo",
        Command::new(env!("CARGO_BIN_EXE_session-demo"))
            .arg("--store")
            .arg(db)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = demo.child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = timeout(Duration::from_secs(60), async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix("session-demo: listening on http://") {
                        return rest.trim_end_matches('/').parse().expect("an address");
                    }
                }
                Ok(None) => panic!("session-demo exited before it was listening"),
                Err(e) => panic!("cannot read session-demo's output: {e}"),
            }
        }
    })
    .await;
    let addr = listening.expect("session-demo did not listen within 60 seconds");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (demo, addr)
}

/// chromedriver on a free loopback port, once it says it has started. The
/// port is found by binding port 0 and letting it go, so another process
/// may take it first: chromedriver then exits, and it is tried again on a
/// new port. Any other early exit fails at once with its output.
async fn start_chromedriver(driver: &Path) -> (Group, u16) {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut process = Group::spawn(
            "chromedriver",
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let output = Arc::new(Mutex::new(String::new()));
        let drains = [
            drain(process.child.stdout.take().expect("piped"), output.clone()),
            drain(process.child.stderr.take().expect("piped"), output.clone()),
        ];
        let started = format!("started successfully on port {port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if output.lock().expect("output").contains(&started) {
                return (process, port);
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start within 30 seconds; its output:\n{}",
                output.lock().expect("output")
            );
            sleep(Duration::from_millis(20)).await;
        };
        for drain in drains {
            let _ = timeout(Duration::from_secs(2), drain).await;
        }
        let text = output.lock().expect("output").clone();
        let port_taken =
            text.contains("Address already in use") || text.contains("port not available");
        failures.push(format!("port {port}: {status}\n{text}"));
        if !port_taken {
            break;
        }
    }
    panic!("chromedriver did not start:\n{}", failures.join("\n"));
}

async fn connect(port: u16, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), "chrome".into());
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": chromium, "args": args }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

async fn goto(client: &Client, url: &str) {
    client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
}

async fn fill(client: &Client, id: &str, value: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .send_keys(value)
        .await
        .unwrap_or_else(|e| panic!("cannot type into #{id}: {e}"));
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click #{id}: {e}"));
}

/// Wait (up to ten seconds) for the browser to be at `path` after a click.
async fn wait_for_path(client: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = client.current_url().await.expect("the current URL");
        if url.path() == path {
            return;
        }
        assert!(Instant::now() < deadline, "still at {url}, expected {path}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The text of the element `css` selects, waiting up to ten seconds for it.
async fn text(client: &Client, css: &str) -> String {
    let found = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(element) => element.text().await.expect("element text"),
        Err(e) => {
            let url = client.current_url().await.map(|u| u.to_string());
            let html = client.source().await.unwrap_or_default();
            panic!("no {css} on {url:?}: {e}\n{html}")
        }
    }
}

async fn session_cookie(client: &Client) -> Option<cookie::Cookie<'static>> {
    client
        .get_all_cookies()
        .await
        .expect("the browser's cookies")
        .into_iter()
        .find(|c| c.name() == COOKIE)
}

/// The processes the test runs, killed (with their groups) when dropped.
#[derive(Default)]
struct Processes {
    demo: Option<Group>,
    driver: Option<Group>,
}

impl Processes {
    async fn stop_all(&mut self) {
        if let Some(demo) = self.demo.take() {
            demo.stop().await;
        }
        if let Some(driver) = self.driver.take() {
            driver.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_counts_survives_a_restart_and_signs_out() {
    let Some(driver_path) = tool(
        "SESSION_TEST_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    ) else {
        return;
    };
    let Some(chromium) = tool("SESSION_TEST_CHROMIUM", "/usr/bin/chromium", "chromium") else {
        return;
    };
    // Declared first, so dropped last: after the processes that use them.
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let data = tempfile::tempdir().expect("a data directory");
    let db = data.path().join("sessions.db");
    let mut processes = Processes::default();

    let run = async {
        let (demo, addr) = start_demo(&db).await;
        processes.demo = Some(demo);
        let (driver, port) = start_chromedriver(&driver_path).await;
        processes.driver = Some(driver);
        let client = connect(port, &chromium, profile.path()).await;
        browse(&client, &mut processes, addr, &db).await;
        client.close().await.expect("closing the browser");
    };
    let finished = timeout(TEST_TIMEOUT, run).await;
    processes.stop_all().await;
    finished.expect("the browser test timed out");
}

async fn browse(client: &Client, processes: &mut Processes, addr: SocketAddr, db: &Path) {
    let base = format!("http://{addr}");

    // Signed out: the profile refuses, and reading creates no cookie.
    goto(client, &format!("{base}/profile")).await;
    assert_eq!(text(client, "h1").await, "Not signed in");
    assert!(session_cookie(client).await.is_none());

    // An anonymous visitor who counts gets a session.
    goto(client, &format!("{base}/counter")).await;
    assert_eq!(text(client, "#visits").await, "1");
    let anonymous = session_cookie(client).await.expect("a session cookie");

    // Sign in with the form: the browser sends the form post as same-origin
    // (Sec-Fetch-Site, Origin), which the cross-site guard lets through.
    goto(client, &format!("{base}/")).await;
    fill(client, "username", "alice").await;
    fill(client, "password", session_demo::DEMO_PASSWORD).await;
    click(client, "login").await;
    wait_for_path(client, "/profile").await;
    assert_eq!(text(client, "#profile-user").await, "alice");
    assert_eq!(text(client, "#profile-visits").await, "1", "data kept");

    let cookie = session_cookie(client).await.expect("the session cookie");
    assert_ne!(cookie.value(), anonymous.value(), "login rotated the ID");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        cookie.secure(),
        Some(true),
        "Secure on localhost: {cookie:?}"
    );
    assert_eq!(cookie.same_site(), Some(SameSite::Lax), "{cookie:?}");
    assert_eq!(cookie.path(), Some("/"));
    assert!(
        cookie.expires_datetime().is_some(),
        "Max-Age makes it persistent: {cookie:?}"
    );

    // Count, then reload.
    goto(client, &format!("{base}/counter")).await;
    assert_eq!(text(client, "#visits").await, "2");
    client.refresh().await.expect("reload");
    assert_eq!(text(client, "#visits").await, "3");

    // Restart the demo on the same SQLite file: still signed in.
    if let Some(demo) = processes.demo.take() {
        demo.stop().await;
    }
    let (demo, addr) = start_demo(db).await;
    processes.demo = Some(demo);
    let base = format!("http://{addr}"); // cookies are per host, not per port
    goto(client, &format!("{base}/profile")).await;
    assert_eq!(text(client, "#profile-user").await, "alice");
    assert_eq!(text(client, "#profile-visits").await, "3");
    goto(client, &format!("{base}/sessions")).await;
    assert_eq!(text(client, "#count").await, "1");
    assert!(text(client, "tr.current").await.contains("(this session)"));

    // Sign out: the browser drops the cookie, the session is gone.
    click(client, "logout").await;
    wait_for_path(client, "/").await;
    assert_eq!(text(client, "#who").await, "Not signed in");
    assert!(
        session_cookie(client).await.is_none(),
        "the removal cookie deleted it"
    );
    goto(client, &format!("{base}/profile")).await;
    assert_eq!(text(client, "h1").await, "Not signed in");
    goto(client, &format!("{base}/store")).await;
    assert_eq!(
        text(client, "#live").await,
        "0",
        "the anonymous session became the signed-in one, which is gone"
    );
}
