//! `session-demo`: see `--help` and the library documentation.

use std::process::ExitCode;
use std::time::Duration;

use session_demo::{Command, Options, USAGE};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How often expired sessions are purged from the store.
const PURGE_EVERY: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    let filter = match session_demo::log_filter(std::env::var("RUST_LOG").ok().as_deref()) {
        Ok(filter) => filter,
        Err(message) => {
            eprintln!("session-demo: {message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(filter)
        .init();

    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("session-demo: {message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("session-demo: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let cookie = session_demo::cookie_config(options.secure_cookie)
        .map_err(|e| format!("cookie configuration: {e}"))?;
    let store = options.store.open(session_demo::session_config()).await?;
    println!("session-demo: sessions are kept in {}", options.store);

    let purger = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            loop {
                every.tick().await;
                match store.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "purged expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    println!("session-demo: listening on http://{addr}/");
    if addr.ip().is_loopback() {
        println!("session-demo: open http://localhost:{}/", addr.port());
    } else if options.secure_cookie {
        println!(
            "session-demo: note: the session cookie is Secure, so browsers send it over \
             plain HTTP only to localhost/127.0.0.1; serve this through TLS (a reverse \
             proxy that forwards Host and sets X-Forwarded-Proto: https) or pass \
             --insecure-cookie"
        );
    }

    let app = session_demo::app(store, cookie);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    purger.abort();
    println!("session-demo: stopped");
    served.map_err(|e| format!("server error: {e}"))
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    println!("session-demo: shutting down");
}
