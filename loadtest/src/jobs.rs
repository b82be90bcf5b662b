//! `loadtest jobs`: how long a job waits between its webhook's `202` and the moment a worker
//! starts it, and what the worker spends on each job besides its executor.
//!
//! For each rate in turn, signed `issues.labeled` webhooks (label `bot`: the default trigger
//! rule makes one `agent` job each) are sent open-loop at that constant rate; the instant
//! each `202` arrives is recorded (wall clock) with the job ids it names. Once the phase's
//! jobs have all ended (or `--settle` has passed), their rows are read from the org's shard
//! database — `started_at`, `finished_at` (both the database's `now()` on the same machine),
//! `result->>'duration_ms'` (the executor's own time around the command) and `status` — and
//! the report gives, per rate:
//!
//! * **queue wait** `started_at − 202`: p50, p95, p99, max;
//! * **worker overhead** `(finished_at − started_at) − duration_ms`: p50, p95 — the job's
//!   claim, workspace, job file, child process management and its final update;
//! * **worker CPU per job**: the worker process's user + system CPU seconds over the phase
//!   (from `/proc/<pid>/stat`, see [`crate::procstat`]) divided by the jobs it ran; the
//!   executor's own children (`true`) are not in it once they have exited;
//! * how many jobs succeeded (a clean run: all of them).
//!
//! The phases run one after the other, each from an idle worker (the previous phase's jobs
//! all ended), so that one rate's backlog is not measured at the next.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use crate::cli::OutputArgs;
use crate::engine::Scenario;
use crate::procstat::{CpuUse, Meter, Watched};
use crate::scenario::ScenarioArgs;
use crate::scenario::setup::Api;
use crate::scenario::webhooks::Webhooks;
use crate::target::{Target, loopback};

/// Statuses a job does not leave.
const ENDED: &[&str] = &["succeeded", "failed", "dead", "skipped_quota", "cancelled"];
/// At most this many webhooks in one phase.
const MAX_PHASE_REQUESTS: u64 = 100_000;

#[derive(Args, Clone, Debug)]
pub struct JobsCmd {
    #[command(flatten)]
    pub target: ScenarioArgs,
    /// The shard database the org's jobs are written to (loopback only), to read the job rows.
    #[arg(long, env = "SHARD_DATABASE_URL", hide_env_values = true)]
    pub shard_db: String,
    /// The constant rates (webhooks per second, one job each), one phase each, in order.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
    pub rates: Vec<f64>,
    /// How long each phase sends.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long after a phase's last webhook its jobs may take to end.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Unmeasured jobs before the first phase (at 10/s), to warm connections and caches.
    #[arg(long, default_value_t = 20)]
    pub warmup_jobs: u64,
    /// How long the idle worker's CPU is sampled before the first phase.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// The worker process (its CPU per job).
    #[arg(long)]
    pub worker_pid: u32,
    /// Other processes whose CPU is reported per phase: name=pid. Repeatable.
    #[arg(long = "watch", value_name = "NAME=PID")]
    pub watch: Vec<Watched>,
    /// A webhook without an answer after this long is an error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Percentiles of a set of values, in milliseconds (nearest rank).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Dist {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a rank within the values' count"
            )]
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            values[i]
        };
        #[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Self {
            count: values.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            max_ms: values[values.len() - 1],
            mean_ms: mean,
        }
    }
}

/// One phase: a constant rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phase {
    pub rate: f64,
    pub duration_s: f64,
    /// Webhooks sent.
    pub sent: u64,
    /// `202`s.
    pub accepted: u64,
    /// Other answers and webhooks without an answer, by status or cause.
    pub errors: BTreeMap<String, u64>,
    /// Job ids named in the `202`s.
    pub jobs: u64,
    /// Job rows by status once the phase settled.
    pub statuses: BTreeMap<String, u64>,
    /// Job ids named in a `202` but without a row in the shard.
    pub missing_rows: u64,
    /// Jobs that took more than one attempt.
    pub retried: u64,
    /// Whether every job had ended before `--settle` passed.
    pub settled: bool,
    /// Webhook: from its due time to its `202`.
    pub intake: Dist,
    /// `started_at − 202`.
    pub queue_wait: Dist,
    /// `finished_at − 202`.
    pub to_finished: Dist,
    /// `finished_at − started_at`.
    pub run: Dist,
    /// `result.duration_ms`: the executor's own time.
    pub executor: Dist,
    /// `(finished_at − started_at) − duration_ms`.
    pub overhead: Dist,
    /// From the phase's first due time until its last job ended (or it gave up).
    pub window_s: f64,
    /// CPU over the window, per watched process (`worker` is the worker), and the machine.
    pub cpu: BTreeMap<String, CpuUse>,
    /// The worker's CPU milliseconds per job run in the window.
    pub worker_cpu_ms_per_job: f64,
    /// The same, less what the idle worker uses over as long a window.
    pub worker_cpu_ms_per_job_less_idle: f64,
}

impl Phase {
    pub fn succeeded(&self) -> u64 {
        self.statuses.get("succeeded").copied().unwrap_or(0)
    }

    /// Every webhook accepted, every job had a row, ended, and succeeded at its first try.
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
            && self.accepted == self.sent
            && self.jobs == self.accepted
            && self.missing_rows == 0
            && self.settled
            && self.succeeded() == self.jobs
    }
}

/// The report of `loadtest jobs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobsReport {
    pub target: String,
    pub org_id: i64,
    pub job_payload: String,
    /// The idle worker's CPU, in cores, sampled before the first phase.
    pub worker_idle_cores: f64,
    pub phases: Vec<Phase>,
}

impl JobsReport {
    pub fn human(&self) -> String {
        let mut out = format!(
            "jobs → {} (org {}): idle worker {:.4} cores\n",
            self.target, self.org_id, self.worker_idle_cores
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "  {}/s for {:.0}s: sent {} accepted {} jobs {} succeeded {}{} (errors {:?}, statuses {:?})",
                p.rate,
                p.duration_s,
                p.sent,
                p.accepted,
                p.jobs,
                p.succeeded(),
                if p.clean() { "" } else { " — NOT CLEAN" },
                p.errors,
                p.statuses,
            );
            let _ = writeln!(
                out,
                "    202 → running ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
                p.queue_wait.p50_ms, p.queue_wait.p95_ms, p.queue_wait.p99_ms, p.queue_wait.max_ms
            );
            let _ = writeln!(
                out,
                "    worker overhead ms (run − executor): p50 {:.2}  p95 {:.2};  executor p50 {:.2};  worker CPU {:.2} ms/job ({:.2} less idle)",
                p.overhead.p50_ms,
                p.overhead.p95_ms,
                p.executor.p50_ms,
                p.worker_cpu_ms_per_job,
                p.worker_cpu_ms_per_job_less_idle
            );
        }
        out
    }
}

/// A webhook's answer.
struct Answer {
    status: Result<u16, String>,
    jobs: Vec<String>,
    /// Wall clock when the answer arrived.
    at: SystemTime,
    /// From the due time.
    latency: Duration,
}

#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    jobs: Vec<String>,
}

struct Sender {
    client: reqwest::Client,
    base: String,
    scenario: Webhooks,
}

impl Sender {
    async fn send(&self, seq: u64, due: Instant) -> Answer {
        let prepared = self.scenario.request(seq);
        let (parts, body) = prepared.request.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        let url = format!("{}{}", self.base, parts.uri.path());
        let result = self
            .client
            .post(url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await;
        let (status, jobs) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(bytes) if status == 202 => (
                        Ok(status),
                        serde_json::from_slice::<Accepted>(&bytes)
                            .map(|a| a.jobs)
                            .unwrap_or_default(),
                    ),
                    Ok(_) => (Ok(status), Vec::new()),
                    Err(e) => (Err(cause(&e)), Vec::new()),
                }
            }
            Err(e) => (Err(cause(&e)), Vec::new()),
        };
        Answer {
            status,
            jobs,
            at: SystemTime::now(),
            latency: due.elapsed(),
        }
    }
}

fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

/// Sends `count` webhooks at `rate` per second, open loop (each on its own task at its due
/// time, so a slow answer delays no other); the answers in order of sending.
async fn send_phase(sender: &Arc<Sender>, first_seq: u64, rate: f64, count: u64) -> Vec<Answer> {
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for i in 0..count {
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let s = Arc::clone(sender);
        tasks.push(tokio::spawn(
            async move { s.send(first_seq + i, due).await },
        ));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(a) = t.await {
            answers.push(a);
        }
    }
    answers
}

/// A job row, as the worker left it.
struct JobRow {
    status: String,
    attempts: i32,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<f64>,
}

async fn ended_count(db: &PgPool, org: i64, ids: &[String]) -> anyhow::Result<usize> {
    let n: i64 = sqlx::query_scalar(
        "select count(*) from job where org_id = $1 and id = any($2) and status = any($3)",
    )
    .bind(org)
    .bind(ids)
    .bind(ENDED)
    .fetch_one(db)
    .await
    .context("counting the ended jobs")?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Waits until all of `ids` have ended, or `deadline`; whether they all did.
async fn wait_ended(
    db: &PgPool,
    org: i64,
    ids: &[String],
    deadline: Instant,
) -> anyhow::Result<bool> {
    loop {
        if ended_count(db, org, ids).await? >= ids.len() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rows(db: &PgPool, org: i64, ids: &[String]) -> anyhow::Result<BTreeMap<String, JobRow>> {
    let rows = sqlx::query(
        "select id, status, attempts, started_at, finished_at,
                (result->>'duration_ms')::float8 as duration_ms
           from job where org_id = $1 and id = any($2)",
    )
    .bind(org)
    .bind(ids)
    .fetch_all(db)
    .await
    .context("reading the job rows")?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>("id")?,
                JobRow {
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    duration_ms: r.try_get("duration_ms")?,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("reading the job rows")
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "microseconds between two instants of one run stay far below 2^52"
    )]
    let us = (to - from).num_microseconds().unwrap_or(i64::MAX) as f64;
    us / 1000.0
}

/// The phase's figures from its answers and its job rows.
fn summarize(
    rate: f64,
    duration: Duration,
    answers: &[Answer],
    rows: &BTreeMap<String, JobRow>,
) -> Phase {
    let mut p = Phase {
        rate,
        duration_s: duration.as_secs_f64(),
        sent: answers.len() as u64,
        ..Phase::default()
    };
    let (mut intake, mut wait, mut to_fin, mut run, mut exec, mut over) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for a in answers {
        match &a.status {
            Ok(202) => {
                p.accepted += 1;
                intake.push(a.latency.as_secs_f64() * 1000.0);
            }
            Ok(s) => *p.errors.entry(s.to_string()).or_default() += 1,
            Err(c) => *p.errors.entry(c.clone()).or_default() += 1,
        }
        let accepted_at: DateTime<Utc> = a.at.into();
        for id in &a.jobs {
            p.jobs += 1;
            let Some(r) = rows.get(id) else {
                p.missing_rows += 1;
                continue;
            };
            *p.statuses.entry(r.status.clone()).or_default() += 1;
            if r.attempts > 1 {
                p.retried += 1;
            }
            if let Some(s) = r.started_at {
                wait.push(ms_between(accepted_at, s));
                if let Some(f) = r.finished_at {
                    let ran = ms_between(s, f);
                    run.push(ran);
                    to_fin.push(ms_between(accepted_at, f));
                    if let Some(d) = r.duration_ms {
                        exec.push(d);
                        over.push(ran - d);
                    }
                }
            }
        }
    }
    p.intake = Dist::of(intake);
    p.queue_wait = Dist::of(wait);
    p.to_finished = Dist::of(to_fin);
    p.run = Dist::of(run);
    p.executor = Dist::of(exec);
    p.overhead = Dist::of(over);
    p
}

/// Checks that a `postgres://[user[:password]@]host:port/db` URL is on this machine, without
/// ever printing its credentials.
pub fn local_postgres(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("--shard-db must be a postgres:// URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    loopback(&format!("postgres://{host_port}/"), "postgres")
        .context("--shard-db must be a database on this machine")?;
    Ok(())
}

/// `loadtest jobs`.
#[allow(
    clippy::print_stderr,
    reason = "progress notices of a command-line run, on stderr"
)]
pub async fn measure(cmd: &JobsCmd) -> anyhow::Result<String> {
    let target = Target::parse(&cmd.target.target)?;
    local_postgres(&cmd.shard_db)?;
    if cmd.rates.is_empty() || cmd.rates.iter().any(|r| !(0.1..=2000.0).contains(r)) {
        bail!("--rates must be between 0.1 and 2000 per second");
    }
    if cmd.duration > Duration::from_secs(120) || cmd.settle > Duration::from_secs(600) {
        bail!("a phase sends for at most 120 s and settles for at most 600 s");
    }
    let token = cmd
        .target
        .operator_token
        .as_deref()
        .context("give --operator-token (or OPERATOR_TOKEN)")?;
    let secret = cmd
        .target
        .webhook_secret
        .as_deref()
        .context("give --webhook-secret (or WEBHOOK_SECRET)")?;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&cmd.shard_db)
        .await
        .context("connecting to the shard database")?;

    let api = Api::new(&target.base_url)?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let fixture = api.org_fixture(token, &run_id, &cmd.target.region).await?;
    // Every webhook is the labeled-issue payload: one job each.
    let scenario = Webhooks::load(
        &cmd.target.examples,
        secret,
        fixture.installation_id,
        &cmd.target.webhook_path,
        1.0,
    )?;
    let job_payload = scenario.name();
    let sender = Arc::new(Sender {
        client: reqwest::Client::builder()
            .timeout(cmd.timeout)
            .pool_max_idle_per_host(256)
            .build()?,
        base: target.base_url.clone(),
        scenario,
    });
    let mut seq = 0;

    if cmd.warmup_jobs > 0 {
        eprintln!("warm-up: {} jobs at 10/s", cmd.warmup_jobs);
        let answers = send_phase(&sender, seq, 10.0, cmd.warmup_jobs).await;
        seq += cmd.warmup_jobs;
        let ids: Vec<String> = answers.iter().flat_map(|a| a.jobs.clone()).collect();
        wait_ended(&db, fixture.org_id, &ids, Instant::now() + cmd.settle).await?;
    }

    let worker = Watched {
        name: "worker".into(),
        pid: cmd.worker_pid,
    };
    let mut watched = vec![worker.clone()];
    watched.extend(cmd.watch.iter().cloned());
    let idle_cores = if cmd.idle.is_zero() {
        0.0
    } else {
        eprintln!("sampling the idle worker for {:?}", cmd.idle);
        let m = Meter::start(std::slice::from_ref(&worker));
        tokio::time::sleep(cmd.idle).await;
        m.finish().get("worker").map_or(0.0, |c| c.cores)
    };

    let mut report = JobsReport {
        target: target.base_url.clone(),
        org_id: fixture.org_id,
        job_payload,
        worker_idle_cores: idle_cores,
        phases: Vec::new(),
    };
    for &rate in &cmd.rates {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a bounded rate times a bounded duration"
        )]
        let count = ((rate * cmd.duration.as_secs_f64()).round() as u64).max(1);
        if count > MAX_PHASE_REQUESTS {
            bail!("{count} webhooks in one phase is more than {MAX_PHASE_REQUESTS}");
        }
        eprintln!("phase: {rate}/s for {:?} ({count} jobs)", cmd.duration);
        let started = Instant::now();
        let meter = Meter::start(&watched);
        let answers = send_phase(&sender, seq, rate, count).await;
        seq += count;
        let ids: Vec<String> = answers.iter().flat_map(|a| a.jobs.clone()).collect();
        let settled = wait_ended(&db, fixture.org_id, &ids, Instant::now() + cmd.settle).await?;
        let cpu = meter.finish();
        let window = started.elapsed().as_secs_f64();
        let rows = rows(&db, fixture.org_id, &ids).await?;
        let mut phase = summarize(rate, cmd.duration, &answers, &rows);
        phase.settled = settled;
        phase.window_s = window;
        let ran = rows.values().filter(|r| r.finished_at.is_some()).count();
        if let Some(w) = cpu.get("worker")
            && ran > 0
        {
            #[allow(clippy::cast_precision_loss, reason = "job counts stay far below 2^52")]
            let n = ran as f64;
            phase.worker_cpu_ms_per_job = w.cpu_s * 1000.0 / n;
            phase.worker_cpu_ms_per_job_less_idle =
                (w.cpu_s - idle_cores * window).max(0.0) * 1000.0 / n;
        }
        phase.cpu = cpu;
        eprintln!(
            "  {} accepted, {} jobs, {} succeeded; 202 → running p50 {:.2} ms p95 {:.2} ms",
            phase.accepted,
            phase.jobs,
            phase.succeeded(),
            phase.queue_wait.p50_ms,
            phase.queue_wait.p95_ms
        );
        report.phases.push(phase);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    cmd.output.render(&report, || report.human())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!(d.count, 100);
        assert!((d.p50_ms - 50.0).abs() < f64::EPSILON);
        assert!((d.p95_ms - 95.0).abs() < f64::EPSILON);
        assert!((d.p99_ms - 99.0).abs() < f64::EPSILON);
        assert!((d.max_ms - 100.0).abs() < f64::EPSILON);
        assert!((d.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(Dist::of(vec![]), Dist::default());
        let one = Dist::of(vec![3.0, f64::NAN]);
        assert_eq!(one.count, 1);
        assert!((one.p99_ms - 3.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_phase_joins_answers_and_rows() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let answers = vec![
            Answer {
                status: Ok(202),
                jobs: vec!["a".into()],
                at: (t0).into(),
                latency: Duration::from_millis(2),
            },
            Answer {
                status: Ok(202),
                jobs: vec!["b".into()],
                at: t0.into(),
                latency: Duration::from_millis(4),
            },
            Answer {
                status: Err("timeout".into()),
                jobs: vec![],
                at: t0.into(),
                latency: Duration::from_secs(10),
            },
        ];
        let ms = |n| t0 + chrono::Duration::milliseconds(n);
        let mut rows = BTreeMap::new();
        rows.insert(
            "a".to_owned(),
            JobRow {
                status: "succeeded".into(),
                attempts: 1,
                started_at: Some(ms(10)),
                finished_at: Some(ms(25)),
                duration_ms: Some(5.0),
            },
        );
        let p = summarize(10.0, Duration::from_secs(1), &answers, &rows);
        assert_eq!((p.sent, p.accepted, p.jobs, p.missing_rows), (3, 2, 2, 1));
        assert_eq!(p.errors["timeout"], 1);
        assert_eq!(p.succeeded(), 1);
        assert!((p.queue_wait.p50_ms - 10.0).abs() < 1e-9);
        assert!((p.overhead.p50_ms - 10.0).abs() < 1e-9);
        assert!((p.to_finished.max_ms - 25.0).abs() < 1e-9);
        assert!(!p.clean());
    }

    #[test]
    fn the_shard_database_must_be_local() {
        assert!(local_postgres("postgres://u:p@127.0.0.1:18432/db").is_ok());
        assert!(local_postgres("postgresql://127.0.0.1:18432/db?sslmode=disable").is_ok());
        assert!(local_postgres("postgres://u:p@db.example.com:5432/db").is_err());
        assert!(local_postgres("mysql://127.0.0.1:3306/db").is_err());
        let e = local_postgres("postgres://u:secret@db.example.com:5432/db").unwrap_err();
        assert!(!format!("{e:#}").contains("secret"));
    }
}
