//! The layer behind a real HTTP/1.1 server on a loopback port, spoken to
//! over TCP.

mod common;

use std::net::SocketAddr;

use common::{COOKIE, TestApp};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// One request over a fresh connection; returns the status line, the
/// `Set-Cookie` headers and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (String, Vec<String>, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let cookie_line = cookie
        .map(|c| format!("Cookie: theme=dark; {COOKIE}={c}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie_line}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(text.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines.next().expect("a status line").to_owned();
    let set_cookies = lines
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.to_owned())
        .collect();
    (status, set_cookies, body.to_owned())
}

fn session_id(set_cookies: &[String]) -> String {
    let cookie = set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("{COOKIE}=")))
        .expect("a session cookie");
    cookie[COOKIE.len() + 1..]
        .split(';')
        .next()
        .expect("a value")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_across_connections_to_a_real_server() {
    let app = TestApp::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app.router.clone())
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let (status, cookies, body) = request(addr, "GET", "/get/user", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(cookies.is_empty());
    assert_eq!(body, "<none>");

    let (status, cookies, _) = request(addr, "POST", "/login/ann", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let id = session_id(&cookies);
    assert!(cookies[0].contains("; HttpOnly") && cookies[0].contains("; Secure"));

    for expected in 1..=3 {
        let (status, _, body) = request(addr, "POST", "/count", Some(&id)).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, expected.to_string());
    }
    let (_, _, body) = request(addr, "GET", "/get/user", Some(&id)).await;
    assert_eq!(body, "ann");

    let (status, cookies, _) = request(addr, "POST", "/logout", Some(&id)).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(cookies[0].contains("Max-Age=0"), "{cookies:?}");
    let (_, _, body) = request(addr, "GET", "/get/user", Some(&id)).await;
    assert_eq!(body, "<none>");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
