//! TLS (feature `tls`) against a private `redis-server` with a throw-away
//! certificate authority made by the `openssl` command. Runs when
//! `SESSION_TEST_REDIS_URL` is set, since it needs the same Redis
//! installation.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use session_core::SessionStore;
use session_core::testing::service_url;
use session_redis::RedisSessionStore;
use session_redis::fred::prelude::{Config, TlsConnector};
use session_redis::fred::rustls::pki_types::CertificateDer;
use session_redis::fred::rustls::pki_types::pem::PemObject;
use session_redis::fred::rustls::{ClientConfig, RootCertStore};

struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command must be installed for the TLS test");
    assert!(status.success(), "openssl {args:?} failed");
}

fn start() -> TlsRedis {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("session-redis-tls-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=session-redis test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&dir, &ca);
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    csr.extend(ec);
    openssl(&dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for the TLS test");
    let server = TlsRedis { port, dir, child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the TLS redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_travel_over_tls() {
    if service_url(common::SINGLE).is_none() {
        return;
    }
    let server = start();
    let url = format!("rediss://127.0.0.1:{}", server.port);

    // The URL alone trusts the platform's roots, which do not know this CA.
    let untrusted = RedisSessionStore::builder(url.as_str())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA must be refused"
    );

    // Trusting the test CA through a fred Config.
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(server.dir.join("ca.crt")).unwrap())
        .unwrap();
    let tls = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = Config::from_url(&url).unwrap();
    config.tls = Some(TlsConnector::from(tls).into());
    let store = RedisSessionStore::builder_from_config(config)
        .pool_size(1)
        .build()
        .await
        .expect("TLS connection with the test CA");
    let mut s = store.create().await.unwrap();
    s.set("over", "tls");
    store.save(&mut s).await.unwrap();
    assert_eq!(
        store.load(s.id()).await.unwrap().unwrap().get("over"),
        Some("tls")
    );
    assert_eq!(store.len().await.unwrap(), 1);
}
