//! Logs captured from the global `tracing` subscriber, for tests of what a
//! store says in its logs.

use std::sync::{Arc, Mutex};

/// Install a global subscriber at `level` that writes into the returned
/// buffer (r2d2 opens connections on its own threads, so a per-thread
/// subscriber would miss their logs). Call once per test binary.
pub(crate) fn capture_logs(level: tracing::Level) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&buffer);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || Capture(Arc::clone(&writer)))
        .init();
    buffer
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
