//! `cargo xtask bench [--quick]`: run the benchmarks against every server
//! that answers and print one table.
//!
//! The benches (crate `benches`) write criterion's results under
//! `target/criterion` (with its HTML report and plots) and the scale bench's
//! results to `target/bench/scale.json`. This reads back the results of
//! this run only (older files are ignored, so a skipped backend never shows
//! stale numbers), prints the table with each target met or missed, and
//! writes it as Markdown to `target/bench/report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::services::SERVICES;
use crate::{NATIVE_LIBS, cargo};

/// Backends in table order, with the service and the bench feature each
/// needs. Memory needs neither.
const BACKENDS: &[Backend] = &[
    Backend {
        name: "memory",
        service: None,
        feature: None,
    },
    Backend {
        name: "redis",
        service: Some("Redis"),
        feature: None,
    },
    Backend {
        name: "sqlite",
        service: None,
        feature: Some("sqlite"),
    },
    Backend {
        name: "postgres",
        service: Some("PostgreSQL"),
        feature: Some("postgres"),
    },
    Backend {
        name: "mysql",
        service: Some("MariaDB/MySQL"),
        feature: Some("mysql"),
    },
];

struct Backend {
    name: &'static str,
    service: Option<&'static str>,
    feature: Option<&'static str>,
}

/// Operations in table order (the names the benches use).
const OPS: &[(&str, &str)] = &[
    ("new_save", "new session, first save"),
    ("load_hit", "load (hit)"),
    ("load_miss", "load (miss)"),
    ("save", "save of a loaded session"),
    ("touch", "touch"),
    ("rotate", "rotate (cycle_id)"),
    ("destroy", "destroy"),
    ("update", "update helper"),
    ("mixed", "mixed: 90% load, 10% load+save"),
];

const PAYLOAD_ORDER: &[&str] = &["-", "100B", "4KiB"];

/// A target from the issue: the ratio of our throughput to a contender's.
struct Target {
    against: &'static str,
    min_ratio: f64,
}

impl Target {
    fn describe(&self) -> String {
        let who = if self.against == "baseline" {
            "baseline"
        } else {
            "tower"
        };
        format!("≥ {}× {who}", self.min_ratio)
    }
}

fn target(backend: &str, op: &str, tasks: u32) -> Option<Target> {
    let t = |against, min_ratio| Some(Target { against, min_ratio });
    match (backend, op, tasks) {
        ("memory", "load_hit", _) => t("baseline", 0.5),
        ("memory", "mixed", 64) => t("tower-sessions", 2.0),
        ("redis", "load_hit", 64) => t("baseline", 0.9),
        ("redis", "save", 64) => t("baseline", 0.7),
        ("redis", "mixed", _) => t("tower-sessions", 1.0),
        // "Within 1.25x of the plain statement": at most 1.25 times its
        // time, so at least 0.8 times its throughput.
        ("sqlite" | "postgres" | "mysql", "load_hit" | "save", _) => t("baseline", 0.8),
        _ => None,
    }
}

/// Bytes per session beyond the payload, at most.
const MAX_BYTES_PER_SESSION: f64 = 250.0;
/// The 99th percentile of load latency during a purge, below this.
const MAX_P99_DURING_PURGE_US: f64 = 1000.0;

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let target_dir = target_dir()?;
    let out_dir = target_dir.join("bench");
    let criterion_dir = target_dir.join("criterion");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;

    // Which backends can run: a server that answers (or its URL set) and,
    // for PostgreSQL and MySQL, the client library their feature links.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut features: Vec<&str> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for backend in BACKENDS {
        if let Some(feature) = backend.feature
            && let Some(lib) = NATIVE_LIBS
                .iter()
                .find(|l| feature.contains(l.feature_word))
            && !(lib.present)()
        {
            skipped.push(format!(
                "{}: needs {} (install {})",
                backend.name, lib.what, lib.package
            ));
            continue;
        }
        if let Some(service) = backend.service {
            let Some(service) = SERVICES.iter().find(|s| s.name == service) else {
                continue;
            };
            match std::env::var(service.env_var) {
                Ok(url) if !url.trim().is_empty() => env.push((service.env_var.into(), url)),
                _ if service.probe.answers() => {
                    env.push((service.env_var.into(), service.default_url.into()));
                }
                _ => {
                    skipped.push(format!(
                        "{}: {} is not answering and {} is unset (run `cargo xtask services`)",
                        backend.name, service.probe, service.env_var
                    ));
                    continue;
                }
            }
        }
        if let Some(feature) = backend.feature {
            features.push(feature);
        }
    }
    if quick {
        env.push(("SESSION_BENCH_QUICK".into(), "1".into()));
    }
    env.push((
        "CRITERION_HOME".into(),
        criterion_dir.to_string_lossy().into_owned(),
    ));
    env.push((
        "SESSION_BENCH_OUT".into(),
        out_dir.to_string_lossy().into_owned(),
    ));
    for (k, v) in &env {
        println!("xtask: {k}={v}");
    }
    for s in &skipped {
        println!("xtask: skipping {s}");
    }

    let started = SystemTime::now();
    let mut bench = cargo();
    // Every bench binary runs even if one fails, so the table shows what
    // could be measured.
    bench.args(["bench", "-p", "benches", "--no-fail-fast"]);
    if !features.is_empty() {
        bench.args(["--features", &features.join(",")]);
    }
    bench.envs(env.iter().map(|(k, v)| (k, v)));
    println!("\n==> cargo bench -p benches");
    let status = bench.status().map_err(|e| format!("cargo bench: {e}"))?;

    let results = read_criterion(&criterion_dir, started)?;
    let scale = read_scale(&out_dir.join("scale.json"), started);
    let report = render(&results, scale.as_ref(), &skipped, quick);
    println!("\n{report}");
    let path = out_dir.join("report.md");
    std::fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "xtask: table written to {}\nxtask: criterion's report: {}",
        path.display(),
        criterion_dir.join("report/index.html").display()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo bench failed with {status}: a bench binary stopped early (see above); \
             the table holds what was measured"
        ))
    }
}

fn target_dir() -> Result<PathBuf, String> {
    let meta = crate::cargo_metadata()?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata names no target directory".into())
}

/// One row of the table: an operation of a backend at a payload and task
/// count, with nanoseconds per operation for each contender.
#[derive(Debug, Default)]
struct Row {
    ns: BTreeMap<String, f64>,
}

/// `(backend, op, payload, tasks)` in table order.
type RowKey = (usize, usize, usize, u32);

fn read_criterion(dir: &Path, since: SystemTime) -> Result<BTreeMap<RowKey, Row>, String> {
    let mut rows: BTreeMap<RowKey, Row> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some((key, contender, ns)) = read_one(&path, since) {
                        rows.entry(key).or_default().ns.insert(contender, ns);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    Ok(rows)
}

/// Read one benchmark's `new/` directory if it was written by this run.
fn read_one(dir: &Path, since: SystemTime) -> Option<(RowKey, String, f64)> {
    let estimates_path = dir.join("estimates.json");
    let written = std::fs::metadata(&estimates_path).ok()?.modified().ok()?;
    if written < since {
        return None;
    }
    let bench: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let estimates: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&estimates_path).ok()?).ok()?;
    let (backend, op) = bench["group_id"].as_str()?.split_once('/')?;
    let contender = bench["function_id"].as_str()?.to_owned();
    let (payload, tasks) = bench["value_str"].as_str()?.split_once("/x")?;
    // The slope of time against iterations is criterion's headline figure;
    // the mean per iteration when it sampled flat.
    let ns = estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())?;
    let key = (
        BACKENDS.iter().position(|b| b.name == backend)?,
        OPS.iter().position(|(name, _)| *name == op)?,
        PAYLOAD_ORDER.iter().position(|p| *p == payload)?,
        tasks.parse().ok()?,
    );
    Some((key, contender, ns))
}

/// What the scale bench measured.
struct Scale {
    json: serde_json::Value,
}

fn read_scale(path: &Path, since: SystemTime) -> Option<Scale> {
    let written = std::fs::metadata(path).ok()?.modified().ok()?;
    if written < since {
        return None;
    }
    let json = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(Scale { json })
}

fn ops_per_sec(ns: Option<f64>) -> Option<f64> {
    ns.filter(|ns| *ns > 0.0).map(|ns| 1e9 / ns)
}

fn fmt_rate(rate: Option<f64>) -> String {
    match rate {
        None => "–".into(),
        Some(r) if r >= 1e6 => format!("{:.2}M", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

fn render(
    rows: &BTreeMap<RowKey, Row>,
    scale: Option<&Scale>,
    skipped: &[String],
    quick: bool,
) -> String {
    let mut md = String::new();
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        md,
        "## Benchmarks\n\n`{command}` on {cores} cores. Throughput in operations per second \
         (the mixed workload: requests per second) over 10,000 live sessions; \
         ratio = ours ÷ the raw baseline on the same storage, vs tower = ours ÷ \
         tower-sessions on the same storage. Ratios compare figures of the same run.\n"
    );
    let header = [
        "operation",
        "backend",
        "payload",
        "tasks",
        "ours (ops/s)",
        "baseline (ops/s)",
        "ratio",
        "tower-sessions (ops/s)",
        "vs tower",
        "target",
        "met?",
    ];
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut met = 0;
    let mut missed = 0;
    for (&(backend, op, payload, tasks), row) in rows {
        let ours = ops_per_sec(row.ns.get("ours").copied());
        let baseline = ops_per_sec(row.ns.get("baseline").copied());
        let tower = ops_per_sec(row.ns.get("tower-sessions").copied());
        let ratio = |other: Option<f64>| Some(ours? / other?);
        let backend_name = BACKENDS[backend].name;
        let (target_text, verdict) = match target(backend_name, OPS[op].0, tasks) {
            None => (String::new(), String::new()),
            Some(t) => {
                let achieved = if t.against == "baseline" {
                    ratio(baseline)
                } else {
                    ratio(tower)
                };
                let verdict = match achieved {
                    None => "n/a".to_owned(),
                    Some(r) if r >= t.min_ratio => {
                        met += 1;
                        "met".to_owned()
                    }
                    Some(r) => {
                        missed += 1;
                        let short = (1.0 - r / t.min_ratio) * 100.0;
                        // A miss by a hair must not read as "0% short".
                        if short < 1.0 {
                            "MISSED (<1% short)".to_owned()
                        } else {
                            format!("MISSED ({short:.0}% short)")
                        }
                    }
                };
                (t.describe(), verdict)
            }
        };
        table.push(vec![
            OPS[op].1.to_owned(),
            backend_name.to_owned(),
            PAYLOAD_ORDER[payload].to_owned(),
            tasks.to_string(),
            fmt_rate(ours),
            fmt_rate(baseline),
            fmt_ratio(ratio(baseline)),
            fmt_rate(tower),
            fmt_ratio(ratio(tower)),
            target_text,
            verdict,
        ]);
    }
    push_table(&mut md, &header, &table);

    if let Some(scale) = scale {
        let j = &scale.json;
        let beyond = j["bytes_beyond_payload"].as_f64();
        let p99 = j["p99_load_during_purge_us"].as_f64();
        let mut verdict = |value: Option<f64>, ok: fn(f64) -> bool| match value {
            Some(v) if ok(v) => {
                met += 1;
                "met".to_owned()
            }
            Some(_) => {
                missed += 1;
                "MISSED".to_owned()
            }
            None => "n/a".to_owned(),
        };
        let beyond_verdict = verdict(beyond, |v| v <= MAX_BYTES_PER_SESSION);
        let p99_verdict = verdict(p99, |v| v < MAX_P99_DURING_PURGE_US);
        let num = |key: &str, digits: usize| {
            j[key]
                .as_f64()
                .map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(
            md,
            "\n### MemoryStore at scale: {} sessions, payload {} bytes encoded\n",
            num("sessions", 0),
            num("payload_bytes", 0)
        );
        let rows = vec![
            vec![
                "heap bytes per session, total (counting allocator)".into(),
                num("bytes_per_session", 1),
                String::new(),
                String::new(),
            ],
            vec![
                "heap bytes per session beyond the payload".into(),
                num("bytes_beyond_payload", 1),
                format!("≤ {MAX_BYTES_PER_SESSION}"),
                beyond_verdict,
            ],
            vec![
                "… of which the payload (the session's data, encoded, as the store keeps it)"
                    .into(),
                num("payload_bytes", 0),
                String::new(),
                String::new(),
            ],
            vec![
                "resident memory per session (RSS delta)".into(),
                num("rss_bytes_per_session", 1),
                String::new(),
                String::new(),
            ],
            vec![
                "load p99 (µs), idle store".into(),
                num("p99_load_idle_us", 2),
                String::new(),
                String::new(),
            ],
            vec![
                format!(
                    "load p99 (µs) while purge_expired removes {}",
                    num("purged", 0)
                ),
                num("p99_load_during_purge_us", 2),
                format!("< {MAX_P99_DURING_PURGE_US}"),
                p99_verdict,
            ],
            vec![
                "load max (µs) during the purge".into(),
                num("max_load_during_purge_us", 1),
                String::new(),
                String::new(),
            ],
            vec![
                "purge_expired duration (ms)".into(),
                num("purge_ms", 1),
                String::new(),
                String::new(),
            ],
        ];
        push_table(&mut md, &["measure", "value", "target", "met?"], &rows);
    }

    let _ = writeln!(md, "\nTargets: {met} met, {missed} missed.");
    if !skipped.is_empty() {
        let _ = writeln!(md, "\nSkipped backends:\n");
        for s in skipped {
            let _ = writeln!(md, "* {s}");
        }
    }
    md
}

/// A Markdown table, padded so it also reads as plain text.
fn push_table(md: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    md.push_str(&line(&mut header.iter().map(|h| (*h).to_owned())));
    md.push_str(&line(&mut widths.iter().map(|w| "-".repeat(*w))));
    for row in rows {
        md.push_str(&line(&mut row.iter().cloned()));
    }
}
