//! End to end in a real browser: the demo binary on a loopback port, driven
//! through headless Chromium by chromedriver (WebDriver).
//!
//! Needs the Debian packages `chromium` and `chromium-driver`. The driver is
//! `SESSION_TEST_CHROMEDRIVER`, else `/usr/bin/chromedriver`; the browser is
//! `SESSION_TEST_CHROMIUM`, else `/usr/bin/chromium`. If either is missing
//! the test prints SKIPPED, or fails when `SESSION_TEST_REQUIRE_SERVICES` is
//! set. Every process it starts is killed when it ends, pass or fail.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cookie::SameSite;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use session_core::testing::REQUIRE_SERVICES_ENV;

const COOKIE: &str = "__Host-session-demo";

/// A child process killed (with its whole process group, so a browser
/// started by chromedriver goes too) and reaped on drop.
struct Reaped {
    name: &'static str,
    child: Child,
}

impl Reaped {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            // The child leads its own process group: end all of it.
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        if self.child.wait().is_err() {
            eprintln!("could not reap {}", self.name);
        }
    }
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

/// The demo on a free loopback port with a SQLite file.
fn start_demo(db: &Path) -> (Reaped, SocketAddr) {
    let mut demo = Reaped::spawn(
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
    let addr = loop {
        let line = lines
            .next()
            .expect("session-demo exited before it was listening")
            .expect("session-demo's output");
        if let Some(rest) = line.strip_prefix("session-demo: listening on http://") {
            break rest.trim_end_matches('/').parse().expect("an address");
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (demo, addr)
}

/// chromedriver on a free loopback port, once it accepts connections.
fn start_chromedriver(driver: &Path) -> (Reaped, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let process = Reaped::spawn(
        "chromedriver",
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (process, port)
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
        tokio::time::sleep(Duration::from_millis(20)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_counts_survives_a_restart_and_signs_out() {
    let Some(driver) = tool(
        "SESSION_TEST_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    ) else {
        return;
    };
    let Some(chromium) = tool("SESSION_TEST_CHROMIUM", "/usr/bin/chromium", "chromium") else {
        return;
    };
    // Dropped last: after the processes that use them.
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let data = tempfile::tempdir().expect("a data directory");
    let db = data.path().join("sessions.db");

    let (demo, addr) = start_demo(&db);
    let (_driver, port) = start_chromedriver(&driver);
    let client = connect(port, &chromium, profile.path()).await;
    let result =
        tokio::time::timeout(Duration::from_secs(120), browse(&client, demo, addr, &db)).await;
    let _ = client.close().await;
    result.expect("the browser test took over two minutes");
}

async fn browse(client: &Client, demo: Reaped, addr: SocketAddr, db: &Path) {
    let base = format!("http://{addr}");

    // Signed out: the profile refuses, and reading creates no cookie.
    goto(client, &format!("{base}/profile")).await;
    assert_eq!(text(client, "h1").await, "Not signed in");
    assert!(session_cookie(client).await.is_none());

    // An anonymous visitor who counts gets a session.
    goto(client, &format!("{base}/counter")).await;
    assert_eq!(text(client, "#visits").await, "1");
    let anonymous = session_cookie(client).await.expect("a session cookie");

    // Sign in with the form.
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
    drop(demo);
    let (demo, addr) = start_demo(db);
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
    drop(demo);
}
