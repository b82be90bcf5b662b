//! Billing at scale: `bash loadtest/billing-bench.sh` (which runs this as
//! `cargo bench -p switchyard-control-plane --bench billing`) writes the results into
//! docs/benchmarks.md.
//!
//! On the local stack's PostgreSQL, in databases of its own (removed at the end, whatever
//! happens): a catalog and `BENCH_SHARDS` shards holding `BENCH_ORGS` orgs, then
//! `BENCH_EVENTS` usage events spread over the last 365 days, one org ("heavy") getting 1% of
//! them. Measured:
//!
//! 1. **Ingest**, three ways, on 4 shards at once:
//!    - `record`: the ingester's own path (`db::usage::record`: `unnest` insert, rollup upsert,
//!      advisory locks of the batch's orgs), in the ingester's batches of 500 mixed events split
//!      by shard — for `BENCH_SAMPLE_SECS` only;
//!    - set-based, the rest of the events up to `BENCH_EVENTS`: one statement per 20,000
//!      events of a shard (staged, then insert-select with the rollup in one CTE), the staging
//!      fed by `unnest` and by `COPY … FROM STDIN` in alternate batches, so both meet the same
//!      table sizes.
//! 2. **Closing a period** (last month) for every org: `billing::invoicing::close_shard` on
//!    every shard at once, as `POST /v1/admin/billing/close-period` runs it; then the revenue
//!    report of that month (finalized invoices) and of this month (drafts).
//! 3. **A year-long daily usage report** of one org (`db::usage::daily`, the query of
//!    `GET /v1/orgs/{org}/usage?from=…&to=…`): the heavy org and a typical one, by metric and by
//!    repository, `BENCH_REPORT_RUNS` times each.
//!
//! Prints one JSON object on stdout. Bounded: the sampled phases stop after their time, the
//! rest is a fixed amount of work; `BENCH_DEADLINE_SECS` aborts the whole run.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a benchmark program: it prints, and a failure is its report"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use control_plane::billing::invoice::Period;
use control_plane::billing::invoicing;
use control_plane::db;
use protocol::OrgId;
use protocol::service::db::{PoolSettings, ShardRouter};
use protocol::usage::{Metric, UsageEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Cfg {
    admin_url: String,
    prefix: String,
    shards: usize,
    orgs: i64,
    events: u64,
    sample: Duration,
    report_runs: usize,
}

const RANGE: i64 = 10_000_000;
const REPOS: [&str; 8] = [
    "acme/api",
    "acme/web",
    "acme/infra",
    "acme/docs",
    "acme/cli",
    "acme/sdk",
    "acme/ml",
    "acme/ops",
];

fn first_org(shard: usize) -> i64 {
    RANGE * (i64::try_from(shard).unwrap() + 1)
}

/// A random event of an org of `shard` (the heavy org, the first of shard 0, gets 1%).
fn event(rng: &mut StdRng, cfg: &Cfg, shard: usize, id: String, now: DateTime<Utc>) -> UsageEvent {
    let per_shard = cfg.orgs / i64::try_from(cfg.shards).unwrap();
    // A quarter of the events are shard 0's: 4% of those is 1% of all.
    let org = if shard == 0 && rng.random_ratio(4, 100) {
        first_org(0)
    } else {
        first_org(shard) + rng.random_range(0..per_shard)
    };
    let (metric, quantity) = match rng.random_range(0..100) {
        0..50 => (Metric::WebhookDeliveries, 1),
        50..85 => (Metric::JobSeconds, rng.random_range(1..900)),
        _ => (Metric::LlmTokens, rng.random_range(100..20_000)),
    };
    let at = now - chrono::Duration::seconds(rng.random_range(0..365 * 86_400));
    UsageEvent {
        event_id: id,
        org_id: OrgId(org),
        metric,
        quantity,
        repo: Some(REPOS[rng.random_range(0..REPOS.len())].to_owned()),
        job_id: None,
        at,
    }
}

/// The set-based write: staged events inserted once, their sums added to the rollup.
const FROM_STAGE: &str = "
with new as (
    insert into usage_event (org_id, event_id, metric, quantity, repo, job_id, at)
    select org_id, event_id, metric, quantity, repo, job_id, at from usage_stage
    on conflict (org_id, event_id) do nothing
    returning org_id, metric, quantity, repo, at
)
insert into usage_daily (org_id, day, metric, repo, quantity)
select org_id, (at at time zone 'UTC')::date, metric, coalesce(repo, ''), sum(quantity)::bigint
from new group by 1, 2, 3, 4
on conflict (org_id, day, metric, repo) do update set quantity = usage_daily.quantity + excluded.quantity";

const STAGE: &str =
    "create temp table if not exists usage_stage (org_id bigint, event_id text, metric text,
    quantity bigint, repo text, job_id text, at timestamptz) on commit delete rows";

async fn write_unnest(pool: &PgPool, events: &[UsageEvent]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(STAGE).execute(&mut *tx).await?;
    sqlx::query(
        "insert into usage_stage select * from unnest($1::bigint[], $2::text[], $3::text[],
         $4::bigint[], $5::text[], $6::text[], $7::timestamptz[])",
    )
    .bind(events.iter().map(|e| e.org_id.0).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.metric.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.quantity).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.repo.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.job_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    sqlx::query(FROM_STAGE).execute(&mut *tx).await?;
    tx.commit().await
}

async fn write_copy(pool: &PgPool, events: &[UsageEvent]) -> sqlx::Result<()> {
    let mut csv = String::with_capacity(events.len() * 96);
    for e in events {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},,{}",
            e.org_id.0,
            e.event_id,
            e.metric.as_str(),
            e.quantity,
            e.repo.as_deref().unwrap_or(""),
            e.at.to_rfc3339()
        );
    }
    let mut tx = pool.begin().await?;
    sqlx::query(STAGE).execute(&mut *tx).await?;
    let mut copy = tx
        .copy_in_raw("copy usage_stage from stdin (format csv)")
        .await?;
    copy.send(csv.into_bytes()).await?;
    copy.finish().await?;
    sqlx::query(FROM_STAGE).execute(&mut *tx).await?;
    tx.commit().await
}

#[derive(Default)]
struct Rate {
    events: u64,
    secs: f64,
}

impl Rate {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "seconds": (self.secs * 100.0).round() / 100.0,
            "events_per_second": if self.secs > 0.0 { (self.events as f64 / self.secs).round() } else { 0.0 },
        })
    }
}

/// The ingester's path: batches of 500 mixed events, each split by shard, one transaction
/// per shard, in turn (as `queue::ingester::ingest` does).
async fn phase_record(cfg: &Cfg, pools: &[PgPool], now: DateTime<Utc>) -> Rate {
    let mut rng = StdRng::seed_from_u64(1);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < cfg.sample && n < cfg.events / 3 {
        let mut by_shard: Vec<Vec<UsageEvent>> = vec![Vec::new(); cfg.shards];
        for _ in 0..500 {
            let shard = rng.random_range(0..cfg.shards);
            by_shard[shard].push(event(&mut rng, cfg, shard, format!("r:{n}"), now));
            n += 1;
        }
        for (shard, events) in by_shard.iter().enumerate() {
            let refs: Vec<&UsageEvent> = events.iter().collect();
            let mut tx = pools[shard].begin().await.unwrap();
            db::usage::record(&mut tx, &refs).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    Rate {
        events: n,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// One task per shard, each writing `per_shard` events 20,000 at a time, the batches
/// alternating between `unnest` and `COPY` so that both meet the same table sizes. Returns
/// the rate of each: its events over the time spent in its batches, the shards in parallel.
async fn phase_set(
    cfg: &Cfg,
    pools: &[PgPool],
    now: DateTime<Utc>,
    per_shard: u64,
) -> (Rate, Rate) {
    const BATCH: u64 = 20_000;
    let tasks = (0..cfg.shards).map(|shard| {
        let pool = pools[shard].clone();
        async move {
            let mut rng = StdRng::seed_from_u64(100 + shard as u64);
            let (mut unnest, mut copy) = (Rate::default(), Rate::default());
            let mut n = 0u64;
            let mut k = 0u64;
            while n < per_shard {
                let count = BATCH.min(per_shard - n);
                let events: Vec<UsageEvent> = (0..count)
                    .map(|i| event(&mut rng, cfg, shard, format!("s:{shard}:{}", n + i), now))
                    .collect();
                let started = Instant::now();
                let rate = if k % 2 == 1 {
                    write_copy(&pool, &events).await.unwrap();
                    &mut copy
                } else {
                    write_unnest(&pool, &events).await.unwrap();
                    &mut unnest
                };
                rate.secs += started.elapsed().as_secs_f64();
                rate.events += count;
                n += count;
                k += 1;
            }
            (unnest, copy)
        }
    });
    let shards = cfg.shards as f64;
    let (mut unnest, mut copy) = (Rate::default(), Rate::default());
    for (u, c) in futures::future::join_all(tasks).await {
        unnest.events += u.events;
        unnest.secs += u.secs / shards;
        copy.events += c.events;
        copy.secs += c.secs / shards;
    }
    (unnest, copy)
}

fn stats(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    serde_json::json!({
        "runs": ms.len(),
        "p50_ms": (at(0.5) * 100.0).round() / 100.0,
        "p95_ms": (at(0.95) * 100.0).round() / 100.0,
        "max_ms": (at(1.0) * 100.0).round() / 100.0,
    })
}

async fn run(cfg: &Cfg, admin: &PgPool) -> serde_json::Value {
    let url = |db: &str| format!("{}/{db}", cfg.admin_url.rsplit_once('/').unwrap().0);
    let catalog_db = format!("{}_catalog", cfg.prefix);
    for db in std::iter::once(catalog_db.clone())
        .chain((0..cfg.shards).map(|i| format!("{}_s{i}", cfg.prefix)))
    {
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {db}")))
            .execute(admin)
            .await
            .unwrap();
    }
    let catalog = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url(&catalog_db))
        .await
        .unwrap();
    db::migrate::catalog(&catalog).await.unwrap();
    db::regions::upsert(&catalog, "us-east-1", "http://127.0.0.1:1")
        .await
        .unwrap();
    let per_shard = cfg.orgs / i64::try_from(cfg.shards).unwrap();
    for i in 0..cfg.shards {
        let name = format!("us-east-1-{i}");
        db::shards::add(
            &catalog,
            &name,
            "us-east-1",
            &url(&format!("{}_s{i}", cfg.prefix)),
        )
        .await
        .unwrap();
        db::shards::add_range(&catalog, &name, first_org(i), first_org(i) + RANGE)
            .await
            .unwrap();
        // The orgs: 60% free, 30% team, 10% enterprise, all a year and more old.
        sqlx::query(
            "insert into org (id, slug, name, region, plan, status, created_at)
             select $1 + g, 'bench-' || ($1 + g), 'Bench', 'us-east-1',
                    case when g % 10 < 6 then 'free' when g % 10 < 9 then 'team' else 'enterprise' end,
                    'active', now() - interval '400 days'
             from generate_series(0, $2 - 1) g",
        )
        .bind(first_org(i))
        .bind(per_shard)
        .execute(&catalog)
        .await
        .unwrap();
    }
    let router = ShardRouter::load(
        catalog.clone(),
        PoolSettings {
            max_connections: 4,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(600),
            down_after: 1_000_000,
        },
    )
    .await
    .unwrap();
    db::migrate::shards(&router).await.unwrap();
    let now = Utc::now();
    let this = Period::of(now.date_naive());
    let last = this.previous();
    // 1% of the orgs moved from free to team in the middle of last month: prorated.
    let (last_start, last_end) = invoicing::bounds(last).unwrap();
    sqlx::query(
        "insert into org_plan_change (org_id, changed_at, from_plan, to_plan)
         select id, $1, 'free', 'team' from org where id % 100 = 7 and plan = 'team'",
    )
    .bind(last_start + (last_end - last_start) / 2)
    .execute(&catalog)
    .await
    .unwrap();
    let pools: Vec<PgPool> = (0..cfg.shards)
        .map(|i| router.route(OrgId(first_org(i))).unwrap().pool)
        .collect();

    eprintln!("billing bench: ingest (the ingester's path, sampled)");
    let record = phase_record(cfg, &pools, now).await;
    let rest = cfg.events.saturating_sub(record.events);
    eprintln!("billing bench: ingest (set-based, unnest and COPY alternating, {rest} events)");
    let started = Instant::now();
    let (unnest, copy) = phase_set(cfg, &pools, now, rest / cfg.shards as u64).await;
    let set_secs = started.elapsed().as_secs_f64();
    let mut stored = 0i64;
    for p in &pools {
        sqlx::query("analyze").execute(p).await.unwrap();
        let n: i64 = sqlx::query_scalar("select count(*) from usage_event")
            .fetch_one(p)
            .await
            .unwrap();
        stored += n;
    }

    eprintln!("billing bench: closing {last}");
    let defaults: control_plane::Config = protocol::service::config::load(
        control_plane::config::DEFAULTS,
        None,
        "SWITCHYARD_BENCH_NO_ENV_",
    )
    .unwrap();
    let plans = defaults.plans;
    let close = |period: Period| {
        let (catalog, router, plans) = (&catalog, &router, &plans);
        async move {
            let started = Instant::now();
            let (done, missing) =
                invoicing::close_period(catalog, router, plans, period, Duration::from_secs(3_600))
                    .await
                    .unwrap();
            assert!(missing.is_empty(), "{missing:?}");
            let finalized: u64 = done.iter().map(|(_, c)| c.finalized).sum();
            (started.elapsed().as_secs_f64(), finalized)
        }
    };
    let (close_secs, finalized) = close(last).await;
    let (again_secs, again) = close(last).await;
    let revenue = |period: Period| {
        let (catalog, router, plans) = (&catalog, &router, &plans);
        async move {
            let started = Instant::now();
            let (done, missing) = invoicing::period_invoices(
                catalog,
                router,
                plans,
                period,
                Duration::from_secs(3_600),
            )
            .await
            .unwrap();
            assert!(missing.is_empty(), "{missing:?}");
            let total: i64 = done.iter().flat_map(|(_, c)| c).map(|c| c.total).sum();
            (started.elapsed().as_secs_f64(), total)
        }
    };
    let (rev_closed_secs, rev_closed_total) = revenue(last).await;
    let (rev_open_secs, _) = revenue(this).await;

    eprintln!("billing bench: year-long daily usage reports");
    let to = now.date_naive().succ_opt().unwrap();
    let from = to - chrono::Duration::days(365);
    let mut reports = HashMap::new();
    for (name, org) in [
        ("heavy", first_org(0)),
        ("typical", first_org(1) + per_shard / 2),
    ] {
        let odb = db::OrgDb::for_org(&router, OrgId(org)).unwrap();
        for by_repo in [false, true] {
            let mut ms = Vec::new();
            let mut rows = 0;
            for _ in 0..cfg.report_runs {
                let started = Instant::now();
                rows = db::usage::daily(&odb, from, to, by_repo)
                    .await
                    .unwrap()
                    .len();
                ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            let mut s = stats(ms);
            s["rows"] = rows.into();
            reports.insert(
                format!("{name}_by_{}", if by_repo { "repo" } else { "metric" }),
                s,
            );
        }
    }
    let count_of = |org: i64| {
        let pool = router.route(OrgId(org)).unwrap().pool;
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from usage_event where org_id = $1")
                .bind(org)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let heavy_events = count_of(first_org(0)).await;
    let typical_events = count_of(first_org(1) + per_shard / 2).await;
    let rollup_rows: i64 = {
        let mut n = 0;
        for p in &pools {
            n += sqlx::query_scalar::<_, i64>("select count(*) from usage_daily")
                .fetch_one(p)
                .await
                .unwrap();
        }
        n
    };
    catalog.close().await;
    for h in router.all() {
        h.pool.close().await;
    }
    serde_json::json!({
        "orgs": cfg.orgs,
        "events_requested": cfg.events,
        "heavy_org_events": heavy_events,
        "typical_org_events": typical_events,
        "shards": cfg.shards,
        "events_stored": stored,
        "rollup_rows": rollup_rows,
        "ingest": {
            "record_path_batches_of_500": record.json(),
            "set_based_unnest_20k": unnest.json(),
            "set_based_copy_20k": copy.json(),
            "set_based_both": Rate { events: unnest.events + copy.events, secs: set_secs }.json(),
        },
        "close_period": {
            "period": last.to_string(),
            "seconds": (close_secs * 100.0).round() / 100.0,
            "finalized": finalized,
            "again_seconds": (again_secs * 100.0).round() / 100.0,
            "again_finalized": again,
        },
        "revenue_report": {
            "closed_month_seconds": (rev_closed_secs * 100.0).round() / 100.0,
            "closed_month_total_minor": rev_closed_total,
            "open_month_seconds": (rev_open_secs * 100.0).round() / 100.0,
        },
        "daily_report_365_days": reports,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    // `cargo bench` passes `--bench`; this program takes its settings from the environment.
    let Ok(admin_url) = std::env::var("BENCH_PG_ADMIN_URL") else {
        eprintln!(
            "billing bench: set BENCH_PG_ADMIN_URL (loadtest/billing-bench.sh does); skipped"
        );
        return;
    };
    let cfg = Cfg {
        admin_url,
        prefix: std::env::var("BENCH_DB_PREFIX").unwrap_or_else(|_| {
            format!("sybb_{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        }),
        shards: env("BENCH_SHARDS", 4),
        orgs: env("BENCH_ORGS", 100_000),
        events: env("BENCH_EVENTS", 10_000_000),
        sample: Duration::from_secs(env("BENCH_SAMPLE_SECS", 60)),
        report_runs: env("BENCH_REPORT_RUNS", 30),
    };
    let deadline = Duration::from_secs(env("BENCH_DEADLINE_SECS", 3_600));
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cfg.admin_url)
        .await
        .unwrap();
    let cfg: &'static Cfg = Box::leak(Box::new(cfg));
    let work = admin.clone();
    // A task of its own, so that a panic still reaches the clean-up below.
    let result =
        tokio::spawn(async move { tokio::time::timeout(deadline, run(cfg, &work)).await }).await;
    // The databases go, whatever happened.
    let dbs: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like $1")
            .bind(format!("{}\\_%", cfg.prefix))
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    for db in dbs {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {db} with (force)"
        )))
        .execute(&admin)
        .await;
    }
    match result {
        Ok(Ok(mut v)) => {
            let this = Utc::now();
            v["at"] = format!("{}-{:02}-{:02}", this.year(), this.month(), this.day()).into();
            println!("{v}");
        }
        Ok(Err(_)) => {
            eprintln!("billing bench: over its deadline of {deadline:?}; stopped");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("billing bench: failed: {e}");
            std::process::exit(1);
        }
    }
}
