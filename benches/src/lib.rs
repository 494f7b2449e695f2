//! Shared machinery for the session-store benchmarks.
//!
//! Every backend is measured beside a raw baseline on the same storage, in
//! the same run, and where one exists beside the most used peer,
//! tower-sessions, on the same storage. The figure that matters is the
//! ratio: what the session layer costs over the storage it sits on.
//!
//! # Running
//!
//! `cargo xtask bench [--quick]` points the benches at every server that
//! answers (it starts none: `cargo xtask services` does), runs them all and
//! prints one table with the targets met or missed, also written to
//! `target/bench/report.md`; criterion's HTML report with its plots is in
//! `target/criterion/report/index.html`. One bench binary runs as usual,
//! with criterion's filters: `cargo bench -p benches --bench memory --
//! load_hit`. The binaries: `memory`, `redis`, `sql` and `scale` (a
//! `MemoryStore` with 1,000,000 sessions, measured without criterion).
//!
//! # What is measured
//!
//! Each contender implements [`Subject`]: our store through the
//! [`SessionStore`] API ([`Ours`]), the raw baseline and tower-sessions
//! (both in the bench binaries: `benches/support/tower.rs` for the latter,
//! a dev-dependency only). [`run_matrix`] runs every [`Op`] for
//! every contender with payloads of about 100 bytes and 4 KiB
//! ([`PAYLOADS`]), from 1 task and from 64 concurrent tasks ([`TASKS`]) on a
//! multi-thread runtime, over [`LIVE_SESSIONS`] live sessions.
//!
//! One criterion iteration is one operation (one request, for the mixed
//! workload): with 64 tasks, `iters` operations are shared among the tasks
//! and the wall time of the whole batch is reported, so criterion's time
//! per iteration is the inverse of the throughput. Setup an operation
//! needs (sessions to destroy, to rotate, loaded sessions to save) happens
//! before the clock starts and cleanup after it stops.
//!
//! Benchmark names are `{backend}/{op}` for the group, the contender
//! (`ours`, `baseline`, `tower-sessions`) for the function and
//! `{payload}/x{tasks}` for the parameter; `cargo xtask bench` reads them
//! back from criterion's output.
//!
//! # Feature flags
//!
//! * `sqlite` (default): the `sql` bench on a SQLite file.
//! * `postgres`, `mysql`: the `sql` bench also on PostgreSQL and MySQL
//!   (they link libpq and libmysqlclient; `cargo xtask bench` turns on those
//!   whose library is installed).
//!
//! # Environment
//!
//! * `SESSION_BENCH_QUICK=1`: short warm-up and measurement (what
//!   `cargo xtask bench --quick` sets).
//! * `SESSION_TEST_REDIS_URL`, `SESSION_TEST_POSTGRES_URL`,
//!   `SESSION_TEST_MYSQL_URL`: the servers, as for the tests; a backend
//!   whose URL is unset is skipped.
//! * `SESSION_BENCH_OUT`: a directory where the scale bench writes its
//!   results as JSON for the table.
#![deny(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use session_core::{Error, Session, SessionId, SessionStore, SessionStoreExt};
use tokio::runtime::Runtime;

/// Live sessions every operation runs over.
pub const LIVE_SESSIONS: usize = 10_000;

/// Payload sizes: the label used in benchmark names and the approximate
/// encoded size in bytes.
pub const PAYLOADS: [(&str, usize); 2] = [("100B", 100), ("4KiB", 4096)];

/// Concurrent task counts.
pub const TASKS: [usize; 2] = [1, 64];

/// Idle timeout of every store, long enough that nothing expires during a
/// run.
pub const IDLE_TIMEOUT_SECS: u64 = 3600;

/// Loaded sessions each task keeps for save, touch and rotate.
const LOADED_PER_TASK: u64 = 4;

/// Most sessions created (and then destroyed) at once by the operations that
/// consume or produce sessions.
const CHUNK: u64 = 20_000;

/// Whether `SESSION_BENCH_QUICK` asks for a quick run.
pub fn quick() -> bool {
    std::env::var("SESSION_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Criterion configured for this suite (short in quick mode), then from the
/// command line.
pub fn criterion() -> Criterion {
    let c = Criterion::default();
    let c = if quick() {
        c.warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10)
            .nresamples(2_000)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(30)
    };
    c.configure_from_args()
}

/// The multi-thread runtime every benchmark runs on (one worker per core).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A deterministic string value whose session encodes to about `bytes`
/// bytes (`{"payload":"…"}` after the codec's format byte).
pub fn payload(bytes: usize) -> Arc<str> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let len = bytes.saturating_sub(15).max(1);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state = splitmix(state);
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect::<String>()
        .into()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A pseudo-random index below `n` for operation `i` of task `task`: the
/// same sequence in every run, spread over all sessions.
pub fn pick(task: usize, i: u64, n: usize) -> usize {
    (splitmix(i ^ ((task as u64) << 40)) % n as u64) as usize
}

/// The operations of task `task` when `iters` are shared among `tasks`.
pub fn share(iters: u64, tasks: usize, task: usize) -> Range<u64> {
    let tasks = tasks as u64;
    let task = task as u64;
    let per = iters / tasks;
    let extra = iters % tasks;
    let start = task * per + task.min(extra);
    let len = per + u64::from(task < extra);
    start..start + len
}

/// Run one future per task on the runtime's workers and collect their
/// outputs in task order.
pub async fn join_tasks<T, F, Fut>(tasks: usize, make: F) -> Vec<T>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    timed_tasks(tasks, make).await.1
}

/// As [`join_tasks`], and how long the tasks took from the first spawn to
/// the last completion. The futures are built before the clock starts.
pub async fn timed_tasks<T, F, Fut>(tasks: usize, make: F) -> (Duration, Vec<T>)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let futures: Vec<Fut> = (0..tasks).map(make).collect();
    let start = Instant::now();
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a benchmark task panicked"));
    }
    (start.elapsed(), out)
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A new session's first save (create, set the payload, save).
    NewSave,
    /// Load of a live session.
    LoadHit,
    /// Load of a well-formed ID that names no session.
    LoadMiss,
    /// Save of a loaded session (its whole record is written again).
    Save,
    /// Slide the idle deadline of a loaded session.
    Touch,
    /// Give a loaded session a fresh ID.
    Rotate,
    /// End a session.
    Destroy,
    /// The read-modify-write helper: load, change one key, save.
    Update,
    /// Requests over the live sessions: 90% load only, 10% load, change
    /// one key and save.
    Mixed,
}

impl Op {
    /// Every operation, in table order.
    pub const ALL: [Op; 9] = [
        Op::NewSave,
        Op::LoadHit,
        Op::LoadMiss,
        Op::Save,
        Op::Touch,
        Op::Rotate,
        Op::Destroy,
        Op::Update,
        Op::Mixed,
    ];

    /// The name used in benchmark IDs.
    pub fn name(self) -> &'static str {
        match self {
            Op::NewSave => "new_save",
            Op::LoadHit => "load_hit",
            Op::LoadMiss => "load_miss",
            Op::Save => "save",
            Op::Touch => "touch",
            Op::Rotate => "rotate",
            Op::Destroy => "destroy",
            Op::Update => "update",
            Op::Mixed => "mixed",
        }
    }
}

/// Something that stores sessions: our store, a raw baseline, or a peer.
///
/// Every method panics on an unexpected failure: a benchmark that silently
/// measured errors would be worse than one that stops.
pub trait Subject: Send + Sync + 'static {
    /// What names a stored session (what the cookie carries).
    type Handle: Clone + Send + Sync + 'static;
    /// A session as a request holds it after loading.
    type Loaded: Send + 'static;

    /// A well-formed handle under which nothing is stored.
    fn unused_handle(&self) -> Self::Handle;

    /// The handle of a loaded session.
    fn handle_of(&self, loaded: &Self::Loaded) -> Self::Handle;

    /// Store a new session holding `payload`; returns its handle.
    fn create(&self, payload: &str) -> impl Future<Output = Self::Handle> + Send;

    /// Load a session.
    fn load(&self, handle: &Self::Handle) -> impl Future<Output = Option<Self::Loaded>> + Send;

    /// Write a loaded session back.
    fn save(&self, loaded: &mut Self::Loaded) -> impl Future<Output = ()> + Send;

    /// Slide a loaded session's expiry.
    fn touch(&self, loaded: &mut Self::Loaded) -> impl Future<Output = ()> + Send;

    /// Move a loaded session to a fresh handle.
    fn rotate(&self, loaded: &mut Self::Loaded) -> impl Future<Output = ()> + Send;

    /// Remove a session.
    fn destroy(&self, handle: &Self::Handle) -> impl Future<Output = ()> + Send;

    /// Read-modify-write: set key `n` of the session to `value`.
    fn update(&self, handle: &Self::Handle, value: u64) -> impl Future<Output = ()> + Send;

    /// Set key `n` of a loaded session to `value` and save it. A concurrent
    /// writer may win (our stores then report a conflict, which is the
    /// request's answer and is not an error here).
    fn change_and_save(&self, loaded: Self::Loaded, value: u64) -> impl Future<Output = ()> + Send;
}

/// Operations of ours retried after a backend error (reported by
/// [`run_matrix`]).
static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Our store, used through the [`SessionStore`] API as an application would.
#[derive(Debug)]
pub struct Ours<S>(pub S);

impl<S: SessionStore + 'static> Subject for Ours<S> {
    type Handle = SessionId;
    type Loaded = Session;

    fn unused_handle(&self) -> SessionId {
        SessionId::generate().expect("OS randomness")
    }

    fn handle_of(&self, loaded: &Session) -> SessionId {
        loaded.id().clone()
    }

    async fn create(&self, payload: &str) -> SessionId {
        let mut session = self.0.create().await.expect("create");
        session.set("payload", payload);
        self.0.save(&mut session).await.expect("first save");
        session.id().clone()
    }

    async fn load(&self, handle: &SessionId) -> Option<Session> {
        self.0.load(handle).await.expect("load")
    }

    async fn save(&self, loaded: &mut Session) {
        self.0.save(loaded).await.expect("save");
    }

    async fn touch(&self, loaded: &mut Session) {
        self.0.touch(loaded).await.expect("touch");
    }

    async fn rotate(&self, loaded: &mut Session) {
        self.0.cycle_id(loaded).await.expect("cycle_id");
    }

    async fn destroy(&self, handle: &SessionId) {
        // MySQL/InnoDB can report a deadlock between concurrent deletes of
        // different rows; the statement is then retried, and counted.
        for attempt in 1.. {
            match self.0.destroy(handle).await {
                Ok(_) => return,
                Err(Error::Backend(e)) if attempt < 10 => {
                    if RETRIED.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("note: destroy failed ({e}); retrying");
                    }
                }
                Err(e) => panic!("destroy: {e}"),
            }
        }
    }

    async fn update(&self, handle: &SessionId, value: u64) {
        self.0
            .update(handle, |s| s.set("n", value.to_string()))
            .await
            .expect("update");
    }

    async fn change_and_save(&self, mut loaded: Session, value: u64) {
        loaded.set("n", value.to_string());
        match self.0.save(&mut loaded).await {
            Ok(()) | Err(Error::Conflict) => {}
            Err(e) => panic!("save: {e}"),
        }
    }
}

/// One contender of a backend's matrix: a subject, its name in the table,
/// and its populations of live sessions (one per payload).
pub struct Contender<S: Subject> {
    name: &'static str,
    subject: Arc<S>,
    populations: Vec<Population<S>>,
}

struct Population<S: Subject> {
    payload_label: &'static str,
    payload: Arc<str>,
    live: Arc<Vec<S::Handle>>,
    unused: Arc<Vec<S::Handle>>,
}

impl<S: Subject> Clone for Population<S> {
    fn clone(&self) -> Self {
        Self {
            payload_label: self.payload_label,
            payload: Arc::clone(&self.payload),
            live: Arc::clone(&self.live),
            unused: Arc::clone(&self.unused),
        }
    }
}

impl<S: Subject> Contender<S> {
    /// Name `subject` (`ours`, `baseline`, `tower-sessions`) and store its
    /// [`LIVE_SESSIONS`] sessions for each payload.
    pub fn new(rt: &Runtime, name: &'static str, subject: S) -> Self {
        let subject = Arc::new(subject);
        let populations = PAYLOADS
            .iter()
            .map(|&(label, bytes)| {
                let payload = payload(bytes);
                let live = rt.block_on(join_tasks(64, |t| {
                    let subject = Arc::clone(&subject);
                    let payload = Arc::clone(&payload);
                    async move {
                        let mut handles = Vec::new();
                        for _ in share(LIVE_SESSIONS as u64, 64, t) {
                            handles.push(subject.create(&payload).await);
                        }
                        handles
                    }
                }));
                let unused = (0..LIVE_SESSIONS)
                    .map(|_| subject.unused_handle())
                    .collect();
                Population {
                    payload_label: label,
                    payload,
                    live: Arc::new(live.into_iter().flatten().collect()),
                    unused: Arc::new(unused),
                }
            })
            .collect();
        Self {
            name,
            subject,
            populations,
        }
    }

    fn remove_populations(&self, rt: &Runtime) {
        for population in &self.populations {
            let live = Arc::clone(&population.live);
            rt.block_on(join_tasks(64, |t| {
                let subject = Arc::clone(&self.subject);
                let live = Arc::clone(&live);
                async move {
                    for i in share(live.len() as u64, 64, t) {
                        subject.destroy(&live[i as usize]).await;
                    }
                }
            }));
        }
    }
}

/// A [`Contender`] with its types erased, so one backend's contenders can be
/// listed together.
pub trait Runner {
    /// Benchmark `op` from `tasks` tasks with payload number `payload`,
    /// into `group`.
    fn bench(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        rt: &Runtime,
        op: Op,
        payload: usize,
        tasks: usize,
    );

    /// Remove the sessions stored for the benchmarks.
    fn clean_up(&self, rt: &Runtime);
}

impl<S: Subject> Runner for Contender<S> {
    fn bench(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        rt: &Runtime,
        op: Op,
        payload: usize,
        tasks: usize,
    ) {
        let pop = &self.populations[payload];
        let label = if op == Op::LoadMiss {
            "-"
        } else {
            pop.payload_label
        };
        group.bench_function(
            BenchmarkId::new(self.name, format!("{label}/x{tasks}")),
            |b| {
                b.iter_custom(|iters| rt.block_on(run_op(op, tasks, iters, &self.subject, pop)));
            },
        );
    }

    fn clean_up(&self, rt: &Runtime) {
        self.remove_populations(rt);
    }
}

/// Remove what the contenders stored (for servers, which outlive the run).
pub fn clean_up(rt: &Runtime, contenders: &[&dyn Runner]) {
    for contender in contenders {
        contender.clean_up(rt);
    }
}

/// Run every operation for every contender: one criterion group per
/// operation (`{backend}/{op}`), so the report plots the contenders side by
/// side. The miss is measured once, with the first payload's population.
pub fn run_matrix(c: &mut Criterion, rt: &Runtime, backend: &str, contenders: &[&dyn Runner]) {
    for op in Op::ALL {
        let mut group = c.benchmark_group(format!("{backend}/{}", op.name()));
        let payloads = if op == Op::LoadMiss {
            1
        } else {
            PAYLOADS.len()
        };
        for payload in 0..payloads {
            for tasks in TASKS {
                for contender in contenders {
                    contender.bench(&mut group, rt, op, payload, tasks);
                }
            }
        }
        group.finish();
    }
    let retried = RETRIED.swap(0, Ordering::Relaxed);
    if retried > 0 {
        println!(
            "{backend}: {retried} operations of ours failed with a backend error and were retried"
        );
    }
}

/// Per task: `n` fresh sessions, stored and loaded (untimed setup).
async fn fresh_loaded<S: Subject>(
    subject: &Arc<S>,
    pop: &Population<S>,
    tasks: usize,
    n: impl Fn(usize) -> u64,
) -> Vec<Vec<S::Loaded>> {
    join_tasks(tasks, |t| {
        let subject = Arc::clone(subject);
        let payload = Arc::clone(&pop.payload);
        let n = n(t);
        async move {
            let mut loaded = Vec::new();
            for _ in 0..n {
                let handle = subject.create(&payload).await;
                loaded.push(subject.load(&handle).await.expect("just stored"));
            }
            loaded
        }
    })
    .await
}

/// Per task: [`LOADED_PER_TASK`] sessions of the live population, loaded;
/// the tasks' slices are disjoint, so their saves do not conflict.
async fn live_loaded<S: Subject>(
    subject: &Arc<S>,
    pop: &Population<S>,
    tasks: usize,
) -> Vec<Vec<S::Loaded>> {
    join_tasks(tasks, |t| {
        let subject = Arc::clone(subject);
        let live = Arc::clone(&pop.live);
        async move {
            let start = t as u64 * LOADED_PER_TASK;
            let mut loaded = Vec::new();
            for i in start..start + LOADED_PER_TASK {
                let handle = &live[i as usize % live.len()];
                loaded.push(subject.load(handle).await.expect("a live session"));
            }
            loaded
        }
    })
    .await
}

async fn destroy_all<S: Subject>(subject: &Arc<S>, handles: Vec<Vec<S::Handle>>) {
    let mut handles = handles.into_iter();
    join_tasks(handles.len(), |_| {
        let subject = Arc::clone(subject);
        let handles = handles.next().unwrap_or_default();
        async move {
            for handle in &handles {
                subject.destroy(handle).await;
            }
        }
    })
    .await;
}

/// Create one session holding `payload` per iteration of `range`.
async fn create_range<S: Subject>(
    subject: Arc<S>,
    payload: Arc<str>,
    range: Range<u64>,
) -> Vec<S::Handle> {
    let mut created = Vec::with_capacity(range.clone().count());
    for _ in range {
        created.push(subject.create(&payload).await);
    }
    created
}

async fn new_save_chunk<S: Subject>(
    subject: &Arc<S>,
    pop: &Population<S>,
    tasks: usize,
    iters: u64,
) -> Duration {
    let (took, created) = timed_tasks(tasks, |t| {
        create_range(
            Arc::clone(subject),
            Arc::clone(&pop.payload),
            share(iters, tasks, t),
        )
    })
    .await;
    destroy_all(subject, created).await;
    took
}

async fn destroy_chunk<S: Subject>(
    subject: &Arc<S>,
    pop: &Population<S>,
    tasks: usize,
    iters: u64,
) -> Duration {
    let mut handles = join_tasks(tasks, |t| {
        create_range(
            Arc::clone(subject),
            Arc::clone(&pop.payload),
            share(iters, tasks, t),
        )
    })
    .await
    .into_iter();
    timed_tasks(tasks, |_| {
        let subject = Arc::clone(subject);
        let handles = handles.next().unwrap_or_default();
        async move {
            for handle in &handles {
                subject.destroy(handle).await;
            }
        }
    })
    .await
    .0
}

/// Time `iters` operations `op` shared among `tasks` tasks.
async fn run_op<S: Subject>(
    op: Op,
    tasks: usize,
    iters: u64,
    subject: &Arc<S>,
    pop: &Population<S>,
) -> Duration {
    match op {
        Op::NewSave | Op::Destroy => {
            // In chunks, so the sessions made for (or by) the operation do
            // not pile up in memory or on the server.
            let mut took = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                took += if op == Op::NewSave {
                    new_save_chunk(subject, pop, tasks, n).await
                } else {
                    destroy_chunk(subject, pop, tasks, n).await
                };
            }
            took
        }
        Op::LoadHit | Op::LoadMiss => {
            let handles = if op == Op::LoadHit {
                Arc::clone(&pop.live)
            } else {
                Arc::clone(&pop.unused)
            };
            let hit = op == Op::LoadHit;
            timed_tasks(tasks, |t| {
                let subject = Arc::clone(subject);
                let handles = Arc::clone(&handles);
                let range = share(iters, tasks, t);
                async move {
                    for i in range {
                        let loaded = subject.load(&handles[pick(t, i, handles.len())]).await;
                        assert_eq!(loaded.is_some(), hit, "load found the wrong thing");
                        black_box(loaded);
                    }
                }
            })
            .await
            .0
        }
        Op::Save | Op::Touch => {
            let mut loaded = live_loaded(subject, pop, tasks).await.into_iter();
            timed_tasks(tasks, |t| {
                let subject = Arc::clone(subject);
                let mut loaded = loaded.next().unwrap_or_default();
                let range = share(iters, tasks, t);
                async move {
                    let n = loaded.len();
                    for i in range {
                        let session = &mut loaded[i as usize % n];
                        if op == Op::Save {
                            subject.save(session).await;
                        } else {
                            subject.touch(session).await;
                        }
                    }
                }
            })
            .await
            .0
        }
        Op::Rotate => {
            let counts = |t| share(iters, tasks, t).count().min(LOADED_PER_TASK as usize) as u64;
            let mut loaded = fresh_loaded(subject, pop, tasks, counts).await.into_iter();
            let (took, rotated) = timed_tasks(tasks, |t| {
                let subject = Arc::clone(subject);
                let mut loaded = loaded.next().unwrap_or_default();
                let range = share(iters, tasks, t);
                async move {
                    let n = loaded.len();
                    for i in range {
                        subject.rotate(&mut loaded[i as usize % n]).await;
                    }
                    loaded
                        .iter()
                        .map(|l| subject.handle_of(l))
                        .collect::<Vec<_>>()
                }
            })
            .await;
            destroy_all(subject, rotated).await;
            took
        }
        Op::Update | Op::Mixed => {
            timed_tasks(tasks, |t| {
                let subject = Arc::clone(subject);
                let live = Arc::clone(&pop.live);
                let range = share(iters, tasks, t);
                async move {
                    for i in range {
                        let handle = &live[pick(t, i, live.len())];
                        if op == Op::Update {
                            subject.update(handle, i).await;
                        } else {
                            let loaded = subject.load(handle).await.expect("a live session");
                            if splitmix(i ^ 0x5eed).is_multiple_of(10) {
                                subject.change_and_save(loaded, i).await;
                            } else {
                                black_box(loaded);
                            }
                        }
                    }
                }
            })
            .await
            .0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_operation_exactly_once() {
        for (iters, tasks) in [(0, 1), (1, 64), (63, 64), (64, 64), (1000, 64), (7, 3)] {
            let mut next = 0;
            for task in 0..tasks {
                let range = share(iters, tasks, task);
                assert_eq!(range.start, next, "{iters} over {tasks}");
                next = range.end;
            }
            assert_eq!(next, iters);
        }
    }

    #[test]
    fn picks_stay_in_range_and_differ_between_tasks() {
        let a: Vec<usize> = (0..100).map(|i| pick(0, i, 10_000)).collect();
        let b: Vec<usize> = (0..100).map(|i| pick(1, i, 10_000)).collect();
        assert!(a.iter().chain(&b).all(|&i| i < 10_000));
        assert_ne!(a, b);
        assert_eq!(a, (0..100).map(|i| pick(0, i, 10_000)).collect::<Vec<_>>());
    }

    #[test]
    fn payloads_encode_to_about_their_nominal_size() {
        for (_, bytes) in PAYLOADS {
            let mut session = Session::new(
                SessionId::generate().expect("randomness"),
                &session_core::SessionConfig::from_secs(60),
            );
            session.set("payload", &*payload(bytes));
            assert_eq!(session.data().encode().len(), bytes);
        }
    }
}
