//! Project automation, run as `cargo xtask <command>`.
//!
//! * `cargo xtask ci [--require-services]`: the one definition of "green":
//!   format check, the minimum Rust version of the locked dependencies,
//!   clippy with warnings denied on all targets, every test and doctest, the
//!   docs with warnings denied, and the benchmarks compiled. Tests that need a server run
//!   when that server answers on its standard loopback port (or its
//!   `SESSION_TEST_*_URL` is set) and are reported as skipped otherwise. With
//!   `--require-services` every skip is a failure.
//! * `cargo xtask services`: make sure PostgreSQL, MariaDB and Redis answer,
//!   and start the Redis Cluster and Sentinel the tests use.
//! * `cargo xtask bench [--quick]`: run the benchmarks against every server
//!   that answers and print the table of throughputs, ratios and targets.

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod bench;
mod services;

use services::{Probe, SERVICES};

const USAGE: &str = "usage: cargo xtask <command>\n\n\
    commands:\n  \
    ci [--require-services]  fmt, MSRV of Cargo.lock, clippy, tests, doctests, docs, benches compile (what CI runs)\n  \
    services                 start the databases, Redis, Redis Cluster and Sentinel for tests\n  \
    bench [--quick]          benchmarks beside raw baselines and tower-sessions, with targets";

/// The flags each command takes.
fn allowed_flags(command: &str) -> Option<&'static [&'static str]> {
    match command {
        "ci" => Some(&["--require-services"]),
        "services" => Some(&[]),
        "bench" => Some(&["--quick"]),
        _ => None,
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed<'a> {
    Help,
    /// A mistake: what to say before the usage.
    Usage(String),
    Run(&'a str, Vec<&'a str>),
}

fn parse(args: &[String]) -> Parsed<'_> {
    let command = args.first().map_or("", String::as_str);
    let flags: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if matches!(command, "help" | "-h" | "--help")
        || flags.iter().any(|f| matches!(*f, "-h" | "--help"))
    {
        return Parsed::Help;
    }
    // A mistyped flag must not start a long run that ignores it (say a full
    // benchmark run instead of `--quick`).
    let Some(allowed) = allowed_flags(command) else {
        return Parsed::Usage(if command.is_empty() {
            String::new()
        } else {
            format!("xtask: unknown command `{command}`\n\n")
        });
    };
    match flags.iter().find(|f| !allowed.contains(f)) {
        Some(unknown) => {
            Parsed::Usage(format!("xtask {command}: unknown argument `{unknown}`\n\n"))
        }
        None => Parsed::Run(command, flags),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Parsed::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Parsed::Usage(mistake) => {
            eprintln!("{mistake}{USAGE}");
            return ExitCode::from(2);
        }
        Parsed::Run("ci", flags) => ci(flags.contains(&"--require-services")),
        Parsed::Run("services", _) => services::ensure_all(),
        Parsed::Run(_, flags) => bench::run(flags.contains(&"--quick")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("\nxtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The workspace's `cargo metadata` (without dependencies), as JSON.
fn cargo_metadata() -> Result<serde_json::Value, String> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))
}

/// A `major.minor[.patch]` Rust version as a comparable triple.
fn rust_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(str::parse::<u32>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// The workspace's `rust-version` and every package in Cargo.lock, with
/// all features, that a shipped crate (not xtask, not the benches) depends
/// on, directly or not, outside dev-dependencies, and that declares a newer
/// `rust-version`. Such a lock would make the stated MSRV a claim that the
/// repository itself does not keep.
fn msrv_offenders() -> Result<(String, Vec<String>), String> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--all-features",
        ])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata --locked failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages: std::collections::HashMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let tooling = ["xtask", "benches"];
    let roots: Vec<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter(|id| {
            packages
                .get(id)
                .and_then(|p| p["name"].as_str())
                .is_some_and(|name| !tooling.contains(&name))
        })
        .collect();
    let msrv_text = roots
        .first()
        .and_then(|id| packages.get(id))
        .and_then(|p| p["rust_version"].as_str())
        .ok_or("the workspace states no rust-version")?
        .to_owned();
    let msrv = rust_version(&msrv_text).ok_or("the workspace's rust-version does not parse")?;
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut seen: std::collections::BTreeSet<&str> = roots.iter().copied().collect();
    let mut queue = roots.clone();
    while let Some(id) = queue.pop() {
        for dep in nodes
            .get(id)
            .and_then(|n| n["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let shipped = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if let Some(dep_id) = dep["pkg"].as_str()
                && shipped
                && seen.insert(dep_id)
            {
                queue.push(dep_id);
            }
        }
    }
    let offenders = seen
        .iter()
        .filter_map(|id| {
            let p = packages.get(id)?;
            let needs = p["rust_version"].as_str()?;
            (rust_version(needs)? > msrv).then(|| {
                format!(
                    "{} {} needs Rust {needs}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    Ok((msrv_text, offenders))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    on_path(program)
        && Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A system library some crate features link against.
struct NativeLib {
    /// Features whose name contains this word need the library.
    feature_word: &'static str,
    what: &'static str,
    package: &'static str,
    present: fn() -> bool,
}

const NATIVE_LIBS: &[NativeLib] = &[
    NativeLib {
        feature_word: "postgres",
        what: "libpq (PostgreSQL client library)",
        package: "libpq-dev",
        present: || {
            succeeds("pkg-config", &["--exists", "libpq"]) || succeeds("pg_config", &["--libdir"])
        },
    },
    NativeLib {
        feature_word: "mysql",
        what: "libmysqlclient (MySQL/MariaDB client library)",
        package: "default-libmysqlclient-dev",
        present: || {
            succeeds("pkg-config", &["--exists", "mysqlclient"])
                || succeeds("mysql_config", &["--libs"])
        },
    },
];

/// `--all-features`, or every feature except those needing a missing
/// library, spelled `package/feature`.
fn feature_args(missing_words: &[&str]) -> Result<Vec<String>, String> {
    if missing_words.is_empty() {
        return Ok(vec!["--all-features".into()]);
    }
    let meta = cargo_metadata()?;
    let mut features = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let name = package["name"].as_str().unwrap_or_default();
        for (feature, _) in package["features"].as_object().into_iter().flatten() {
            if !missing_words.iter().any(|w| feature.contains(w)) {
                features.push(format!("{name}/{feature}"));
            }
        }
    }
    if features.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["--features".into(), features.join(",")])
}

/// What the browser test runs: its variable, the default path, the Debian
/// package.
const BROWSER_TOOLS: [(&str, &str, &str); 2] = [
    ("SESSION_TEST_CHROMIUM", "/usr/bin/chromium", "chromium"),
    (
        "SESSION_TEST_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    ),
];

struct Step {
    name: String,
    outcome: Outcome,
    took: Duration,
}

enum Outcome {
    Passed,
    Failed,
}

fn run_step(steps: &mut Vec<Step>, name: &str, mut cmd: Command) {
    println!("\n==> {name}");
    let started = Instant::now();
    let ok = cmd.status().is_ok_and(|s| s.success());
    steps.push(Step {
        name: name.to_owned(),
        outcome: if ok { Outcome::Passed } else { Outcome::Failed },
        took: started.elapsed(),
    });
}

fn ci(require_services: bool) -> Result<(), String> {
    let mut skipped: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    // Which optional native libraries are here decides which features build.
    let mut missing_words = Vec::new();
    for lib in NATIVE_LIBS {
        if !(lib.present)() {
            missing_words.push(lib.feature_word);
            let msg = format!(
                "features needing {} (install {}): not built or tested",
                lib.what, lib.package
            );
            if require_services {
                problems.push(msg);
            } else {
                skipped.push(msg);
            }
        }
    }
    let features = feature_args(&missing_words)?;

    // Which servers answer decides which server-backed tests run.
    let mut env: Vec<(String, String)> = Vec::new();
    for service in SERVICES {
        let needs_missing_lib = service
            .feature_word
            .is_some_and(|w| missing_words.contains(&w));
        if let Ok(url) = std::env::var(service.env_var)
            && !url.trim().is_empty()
        {
            env.push((service.env_var.into(), url));
            continue;
        }
        if needs_missing_lib {
            continue; // already reported with the library
        }
        if service.probe.answers() {
            env.push((service.env_var.into(), service.default_url.into()));
        } else {
            let msg = format!(
                "{} tests: {} is not answering and {} is unset (run `cargo xtask services`)",
                service.name, service.probe, service.env_var
            );
            if require_services {
                problems.push(msg);
            } else {
                skipped.push(msg);
            }
        }
    }
    // The demo's real-browser test needs Chromium and its WebDriver; it
    // skips itself without them, and the summary says so.
    for (var, default, package) in BROWSER_TOOLS {
        let path = std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from);
        if !path.is_file() {
            let msg = format!(
                "session-demo browser test: {} not found (install {package} or set {var})",
                path.display()
            );
            if require_services {
                problems.push(msg);
            } else {
                skipped.push(msg);
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "--require-services: these would be skipped, so CI fails instead:\n  - {}",
            problems.join("\n  - ")
        ));
    }
    if require_services {
        env.push(("SESSION_TEST_REQUIRE_SERVICES".into(), "1".into()));
    }
    for (k, v) in &env {
        println!("xtask: {k}={v}");
    }

    let mut steps = Vec::new();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run_step(&mut steps, "cargo fmt --check", fmt);

    println!("\n==> MSRV of the locked dependencies");
    let started = Instant::now();
    let outcome = match msrv_offenders() {
        Ok((msrv, offenders)) if offenders.is_empty() => {
            println!("every dependency of the shipped crates builds on Rust {msrv}");
            Outcome::Passed
        }
        Ok((msrv, offenders)) => {
            eprintln!(
                "Cargo.lock holds dependencies of the shipped crates that need a newer Rust \
                 than the workspace's rust-version {msrv} (pin an older release with \
                 `cargo update -p NAME --precise VERSION`, or raise rust-version):"
            );
            for o in offenders {
                eprintln!("  {o}");
            }
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("{e}");
            Outcome::Failed
        }
    };
    steps.push(Step {
        name: "MSRV of locked dependencies".into(),
        outcome,
        took: started.elapsed(),
    });

    let mut clippy = cargo();
    clippy
        .args(["clippy", "--workspace", "--all-targets", "--locked"])
        .args(&features)
        .args(["--", "-D", "warnings"]);
    run_step(&mut steps, "cargo clippy --all-targets -D warnings", clippy);

    let nextest = succeeds("cargo-nextest", &["nextest", "--version"]);
    let mut tests = cargo();
    if nextest {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ]);
    } else {
        tests.args([
            "test",
            "--workspace",
            "--locked",
            "--no-fail-fast",
            "--lib",
            "--bins",
            "--tests",
        ]);
    }
    tests.args(&features).envs(env.iter().map(|(k, v)| (k, v)));
    run_step(
        &mut steps,
        if nextest {
            "tests (cargo nextest)"
        } else {
            "tests (cargo test)"
        },
        tests,
    );

    let mut doctests = cargo();
    doctests
        .args(["test", "--workspace", "--locked", "--doc"])
        .args(&features)
        .envs(env.iter().map(|(k, v)| (k, v)));
    run_step(&mut steps, "doctests", doctests);

    let mut docs = cargo();
    docs.args(["doc", "--workspace", "--no-deps", "--locked"])
        .args(&features)
        .env("RUSTDOCFLAGS", "-D warnings");
    run_step(&mut steps, "cargo doc -D warnings", docs);

    if root().join("benches").is_dir() {
        let mut benches = cargo();
        benches
            .args(["bench", "--workspace", "--locked", "--no-run"])
            .args(&features);
        run_step(
            &mut steps,
            "benchmarks compile (cargo bench --no-run)",
            benches,
        );
    }

    println!("\n==> summary");
    let mut failed = 0;
    for step in &steps {
        let mark = match step.outcome {
            Outcome::Passed => "passed",
            Outcome::Failed => {
                failed += 1;
                "FAILED"
            }
        };
        println!(
            "  {mark:<7} {:<45} {:>6.1}s",
            step.name,
            step.took.as_secs_f64()
        );
    }
    let ran: Vec<&str> = env
        .iter()
        .filter_map(|(k, _)| SERVICES.iter().find(|s| s.env_var == k).map(|s| s.name))
        .collect();
    if !ran.is_empty() {
        println!("  server-backed tests ran against: {}", ran.join(", "));
    }
    if skipped.is_empty() {
        println!("  skipped: nothing");
    } else {
        println!("  skipped:");
        for s in &skipped {
            println!("    - {s}");
        }
    }
    if failed > 0 {
        return Err(format!("{failed} step(s) failed"));
    }
    println!("\nxtask: ci passed");
    Ok(())
}

/// Send one RESP command to a Redis-protocol server and return its reply.
fn redis_command(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

impl Probe {
    fn answers(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port()));
        match self {
            Probe::Tcp(_) => TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok(),
            Probe::Redis(_) => {
                redis_command(addr, &["PING"]).is_some_and(|r| r.starts_with("+PONG"))
            }
            Probe::RedisCluster(_) => redis_command(addr, &["CLUSTER", "INFO"])
                .is_some_and(|r| r.contains("cluster_state:ok")),
            Probe::Sentinel(_) => redis_command(addr, &["SENTINEL", "MASTERS"])
                .is_some_and(|r| r.contains("mymaster")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Parsed, parse};

    fn parsed(line: &str) -> Parsed<'static> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(Box::leak(args.into_boxed_slice()))
    }

    #[test]
    fn known_commands_and_flags_run() {
        assert_eq!(parsed("ci"), Parsed::Run("ci", vec![]));
        assert_eq!(
            parsed("ci --require-services"),
            Parsed::Run("ci", vec!["--require-services"])
        );
        assert_eq!(
            parsed("bench --quick"),
            Parsed::Run("bench", vec!["--quick"])
        );
        assert_eq!(parsed("services"), Parsed::Run("services", vec![]));
    }

    #[test]
    fn help_runs_nothing() {
        for line in [
            "help",
            "--help",
            "bench --help",
            "ci -h",
            "bench --quick --help",
        ] {
            assert_eq!(parsed(line), Parsed::Help, "{line}");
        }
    }

    #[test]
    fn an_unknown_command_or_flag_runs_nothing() {
        for line in [
            "",
            "test",
            "bench --qiuck",
            "ci --quick",
            "services --quick",
        ] {
            assert!(matches!(parsed(line), Parsed::Usage(_)), "{line}");
        }
        let Parsed::Usage(said) = parsed("bench --qiuck") else {
            unreachable!()
        };
        assert!(said.contains("`--qiuck`"), "{said}");
    }
}
