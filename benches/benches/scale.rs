//! `MemoryStore` at scale: 1,000,000 sessions.
//!
//! * Heap bytes per session beyond the payload, counted by a counting global
//!   allocator (so allocator bookkeeping is not included; the RSS delta,
//!   which includes it, is reported beside it).
//! * Load latency percentiles on an idle store, and while `purge_expired`
//!   removes 10% of the sessions (100,000) on another thread.
//!
//! A custom measurement rather than criterion: one pass is the experiment.
//! The results are printed and, if `SESSION_BENCH_OUT` names a directory,
//! written to `scale.json` there for `cargo xtask bench`.

use std::alloc::System;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use session_core::{ManualClock, Session, SessionConfig, SessionId, SessionStore};
use session_memory::MemoryStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SESSIONS: usize = 1_000_000;
const EXPIRING: usize = 100_000;
const PAYLOAD_BYTES: usize = 100;
const IDLE: Duration = Duration::from_secs(3600);

/// Heap bytes currently allocated. (`stats_alloc` already adds a
/// reallocation's growth to `bytes_allocated` and its shrinkage to
/// `bytes_deallocated`; `bytes_reallocated` is the same change again.)
fn heap_bytes() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Resident set size in bytes, from /proc (0 where there is none).
fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Drive a future that never waits (every `MemoryStore` operation) to
/// completion on this thread, without a runtime's scheduling in the timing.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn save_new(store: &MemoryStore, id: &SessionId, payload: &str) {
    let mut session = Session::new(id.clone(), store.config());
    session.set("payload", payload);
    now(store.save(&mut session)).expect("save");
}

struct Latencies(Vec<u32>);

impl Latencies {
    fn percentile_us(&mut self, p: f64) -> f64 {
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        f64::from(self.0[i]) / 1000.0
    }
}

/// Load random live sessions until `stop` is set (or `max` loads).
fn load_until(store: &MemoryStore, live: &[SessionId], stop: &AtomicBool, max: usize) -> Latencies {
    let mut out = Vec::with_capacity(max.min(4_000_000));
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    while out.len() < max && !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = &live[(x % live.len() as u64) as usize];
        let start = Instant::now();
        let loaded = now(store.load(id)).expect("load");
        let took = start.elapsed();
        assert!(loaded.is_some(), "a live session was not found");
        out.push(u32::try_from(took.as_nanos()).unwrap_or(u32::MAX));
    }
    Latencies(out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // nothing for `cargo bench -- --list` to list
    }
    let clock = ManualClock::new();
    let store = MemoryStore::with_config(SessionConfig::new(IDLE).with_clock(clock.clone()));
    let payload: String = "p".repeat(PAYLOAD_BYTES - 15);
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|_| SessionId::generate().expect("OS randomness"))
        .collect();

    // The payload: the session's data as the store keeps it, encoded.
    let mut probe = Session::new(ids[0].clone(), store.config());
    probe.set("payload", payload.as_str());
    let payload_bytes = probe.data().encode().len();
    drop(probe);

    // The store's footprint: every session saved, every Session value
    // dropped; what remains allocated is the store's.
    let heap0 = heap_bytes();
    let rss0 = rss_bytes();
    let filled = Instant::now();
    for id in &ids[..EXPIRING] {
        save_new(&store, id, &payload);
    }
    clock.advance(IDLE / 2);
    for id in &ids[EXPIRING..] {
        save_new(&store, id, &payload);
    }
    let fill_secs = filled.elapsed().as_secs_f64();
    let per_session = (heap_bytes() - heap0) as f64 / SESSIONS as f64;
    let rss_per_session = (rss_bytes() - rss0) as f64 / SESSIONS as f64;
    let beyond = per_session - payload_bytes as f64;

    // The first 100,000 expire; the rest stay live.
    clock.advance(IDLE / 2 + Duration::from_secs(60));
    let live = &ids[EXPIRING..];
    let never = AtomicBool::new(false);
    let mut idle = load_until(&store, live, &never, 500_000);

    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(2));
    let purger = {
        let store = store.clone();
        let done = Arc::clone(&done);
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            barrier.wait();
            // Let the loads get going first.
            std::thread::sleep(Duration::from_millis(5));
            let start = Instant::now();
            let purged = now(store.purge_expired()).expect("purge");
            let took = start.elapsed();
            done.store(true, Ordering::Relaxed);
            (purged, took)
        })
    };
    barrier.wait();
    let mut during = load_until(&store, live, &done, usize::MAX);
    let (purged, purge_took) = purger.join().expect("the purge thread panicked");
    assert_eq!(purged, EXPIRING as u64);

    let report = serde_json::json!({
        "sessions": SESSIONS,
        "payload_bytes": payload_bytes,
        "bytes_per_session": per_session,
        "bytes_beyond_payload": beyond,
        "rss_bytes_per_session": rss_per_session,
        "fill_secs": fill_secs,
        "p50_load_idle_us": idle.percentile_us(0.50),
        "p99_load_idle_us": idle.percentile_us(0.99),
        "purged": purged,
        "purge_ms": purge_took.as_secs_f64() * 1e3,
        "loads_during_purge": during.0.len(),
        "p50_load_during_purge_us": during.percentile_us(0.50),
        "p99_load_during_purge_us": during.percentile_us(0.99),
        "max_load_during_purge_us": during.percentile_us(1.0),
    });
    println!(
        "MemoryStore with {SESSIONS} sessions, payload {payload_bytes} B encoded:\n  \
         heap per session {per_session:.1} B ({beyond:.1} B beyond the payload), \
         RSS per session {rss_per_session:.1} B, filled in {fill_secs:.2} s\n  \
         load p50/p99 idle: {:.2}/{:.2} µs\n  \
         purge of {purged} took {:.1} ms; {} loads meanwhile, p50/p99/max {:.2}/{:.2}/{:.1} µs",
        report["p50_load_idle_us"].as_f64().unwrap_or_default(),
        report["p99_load_idle_us"].as_f64().unwrap_or_default(),
        purge_took.as_secs_f64() * 1e3,
        during.0.len(),
        report["p50_load_during_purge_us"]
            .as_f64()
            .unwrap_or_default(),
        report["p99_load_during_purge_us"]
            .as_f64()
            .unwrap_or_default(),
        report["max_load_during_purge_us"]
            .as_f64()
            .unwrap_or_default(),
    );
    if let Some(dir) = std::env::var_os("SESSION_BENCH_OUT") {
        let path = std::path::Path::new(&dir).join("scale.json");
        std::fs::write(&path, report.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
