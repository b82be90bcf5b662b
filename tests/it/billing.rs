//! Usage metering: deliveries metered by the recorder, job seconds and LLM tokens ingested from
//! the USAGE stream, each event once; the daily rollup equal to its events; the usage report.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::delivery::DeliveryRecord;
use protocol::subjects::Names;
use protocol::usage::{Metric, UsageEvent, billable_seconds};
use protocol::{DeliveryId, OrgId, Region};
use serde_json::{Value, json};
use switchyard_tests::env::TestEnv;

use crate::helpers::*;

/// A job's start, end and status.
type JobTimes = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, String);

/// The org's report as `(metric, repo) → quantity`, summed over its periods.
async fn report(
    app: &TestApp,
    org: i64,
    key: &str,
    query: &str,
) -> BTreeMap<(String, String), i64> {
    let r = app
        .get(US, &format!("/v1/orgs/{org}/usage{query}"), key)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut out = BTreeMap::new();
    for item in r.body["items"].as_array().unwrap() {
        let k = (
            item["metric"].as_str().unwrap().to_owned(),
            item["repo"].as_str().unwrap_or("").to_owned(),
        );
        *out.entry(k).or_default() += item["quantity"].as_i64().unwrap();
    }
    out
}

fn quantity(r: &BTreeMap<(String, String), i64>, metric: &str) -> i64 {
    r.iter()
        .filter(|((m, _), _)| m == metric)
        .map(|(_, q)| *q)
        .sum()
}

/// Publishes a usage event as a worker would (with its own message id, so JetStream's
/// duplicate window does not hide a repeat: the ingester must).
async fn publish(app: &TestApp, event: &UsageEvent) {
    let client = async_nats::connect(&TestEnv::get().nats_us_url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let names = Names::new(&app.namespace).unwrap();
    let subject = names.usage_subject(&Region::new(US).unwrap(), event.org_id);
    js.publish(subject, serde_json::to_vec(event).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn api_key(app: &TestApp, org: i64, owner: &str, role: &str) -> String {
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/api-keys"),
            owner,
            json!({"name": role, "role": role}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["key"]
        .as_str()
        .or_else(|| r.body["api_key"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_metered_once_rolled_up_and_reported_as_json_and_csv() {
    let app = TestApp::spawn().await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;

    // Two deliveries that make jobs, one that matches no rule: three metered deliveries.
    let mut jobs = Vec::new();
    for label in ["bot", "bot", "not-a-trigger"] {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, label))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        jobs.extend(
            r.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(jobs.len(), 2);
    let shard = &app.regions[US].shard;
    let times: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        wait_for("both jobs to finish", Duration::from_secs(30), || async {
            let rows: Vec<JobTimes> =
                sqlx::query_as("select started_at, finished_at, status from job where org_id = $1")
                    .bind(org)
                    .fetch_all(shard)
                    .await
                    .unwrap();
            (rows.len() == 2 && rows.iter().all(|r| r.2 == "succeeded")).then(|| {
                rows.into_iter()
                    .map(|r| (r.0.unwrap(), r.1.unwrap()))
                    .collect()
            })
        })
        .await;
    let want_seconds: i64 = times.iter().map(|(s, f)| billable_seconds(*s, *f)).sum();
    let usage = wait_for(
        "the usage to be ingested",
        Duration::from_secs(30),
        || async {
            let r = report(&app, org, &owner, "").await;
            (quantity(&r, "webhook_deliveries") == 3 && quantity(&r, "job_seconds") == want_seconds)
                .then_some(r)
        },
    )
    .await;
    assert_eq!(quantity(&usage, "llm_tokens"), 0, "{usage:?}");

    // An event sent twice counts once; a new one counts.
    let tokens = UsageEvent {
        event_id: format!("llm-tokens:{}:1", jobs[0]),
        org_id: OrgId(org),
        metric: Metric::LlmTokens,
        quantity: 1234,
        repo: Some("Codertocat/Hello-World".into()),
        job_id: Some(jobs[0].clone()),
        at: Utc::now(),
    };
    publish(&app, &tokens).await;
    publish(&app, &tokens).await;
    let again = UsageEvent {
        event_id: format!("llm-tokens:{}:1", jobs[1]),
        quantity: 66,
        job_id: Some(jobs[1].clone()),
        ..tokens.clone()
    };
    publish(&app, &again).await;
    let by_repo = wait_for(
        "the tokens to be ingested",
        Duration::from_secs(30),
        || async {
            let r = report(&app, org, &owner, "?group_by=repo").await;
            (quantity(&r, "llm_tokens") >= 1300).then_some(r)
        },
    )
    .await;
    assert_eq!(
        by_repo.get(&("llm_tokens".to_owned(), "Codertocat/Hello-World".to_owned())),
        Some(&1300),
        "{by_repo:?}"
    );
    // Hourly, from the events, agrees with daily, from the rollup.
    let today = Utc::now().date_naive();
    let hourly = report(
        &app,
        org,
        &owner,
        &format!("?granularity=hour&from={today}"),
    )
    .await;
    let daily = report(&app, org, &owner, &format!("?from={today}")).await;
    assert_eq!(hourly, daily);

    // The rollup is the sum of its events, and rebuilding it changes nothing.
    let rollup = || async {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select metric, repo, quantity from usage_daily where org_id = $1 order by 1, 2",
        )
        .bind(org)
        .fetch_all(shard)
        .await
        .unwrap();
        rows
    };
    let before = rollup().await;
    // The events: usage_event rows, and the delivery rows for webhook deliveries (one each).
    let from_events: Vec<(String, String, i64)> = sqlx::query_as(
        "select metric, repo, sum(quantity)::bigint from (
             select metric, coalesce(repo, '') as repo, quantity from usage_event where org_id = $1
             union all
             select 'webhook_deliveries', coalesce(repo, ''), 1 from delivery where org_id = $1
         ) e group by 1, 2 order by 1, 2",
    )
    .bind(org)
    .fetch_all(shard)
    .await
    .unwrap();
    assert_eq!(before, from_events);
    let deliveries: Vec<(String, Option<String>, DateTime<Utc>)> =
        sqlx::query_as("select delivery_id, repo, received_at from delivery where org_id = $1")
            .bind(org)
            .fetch_all(shard)
            .await
            .unwrap();
    assert_eq!(
        deliveries.len(),
        3,
        "one row per delivery, the only usage record of it"
    );
    let per_delivery_events: i64 = sqlx::query_scalar(
        "select count(*) from usage_event where org_id = $1 and metric = 'webhook_deliveries'",
    )
    .bind(org)
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(per_delivery_events, 0, "no usage_event row per delivery");
    // Rebuilding the rollup from the events changes nothing.
    let db = control_plane::db::OrgDb::for_org(&app.regions[US].state.shards, OrgId(org)).unwrap();
    control_plane::db::usage::rebuild(&db, today.pred_opt().unwrap(), today.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(rollup().await, before);

    // CSV.
    let r = app
        .http
        .get(app.url(US, &format!("/v1/orgs/{org}/usage?group_by=repo")))
        .bearer_auth(&owner)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("period_start,metric,repo,quantity"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.iter()
            .any(|r| r[1] == "llm_tokens" && r[2] == "Codertocat/Hello-World" && r[3] == "1300"),
        "{text}"
    );
    assert!(
        rows.iter().all(|r| r.len() == 4 && r[0].ends_with('Z')),
        "{text}"
    );
}

/// Records a delivery as a recorder from before shard migration 0008 did: its `delivery` row,
/// then in the same transaction a `usage_event` row (`delivery:<id>`), added to the rollup
/// when that row is new.
async fn record_as_before_0008(db: &control_plane::db::OrgDb, rec: &DeliveryRecord) {
    let org = rec.org_id.unwrap();
    let mut tx = db.pool().begin().await.unwrap();
    sqlx::query(
        "insert into delivery (org_id, delivery_id, event, action, installation_id, repo, outcome,
                               job_count, received_in, received_at)
         values ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)
         on conflict (org_id, delivery_id) do nothing",
    )
    .bind(org.0)
    .bind(rec.delivery_id.as_ref())
    .bind(&rec.event)
    .bind(&rec.action)
    .bind(rec.installation_id.map(|i| i.0))
    .bind(&rec.repo)
    .bind(&rec.outcome)
    .bind(rec.received_in.as_str())
    .bind(rec.received_at)
    .execute(&mut *tx)
    .await
    .unwrap();
    let event = UsageEvent {
        event_id: format!("delivery:{}", rec.delivery_id.as_ref()),
        org_id: org,
        metric: Metric::WebhookDeliveries,
        quantity: 1,
        repo: rec.repo.clone(),
        job_id: None,
        at: rec.received_at,
    };
    control_plane::db::usage::record(&mut tx, &[&event])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Records a delivery as this version's recorder does.
async fn record_now(db: &control_plane::db::OrgDb, rec: &DeliveryRecord) {
    let mut tx = db.pool().begin().await.unwrap();
    control_plane::db::deliveries::insert_many(&mut tx, &[rec])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// What recorded a delivery, or what happened to its rows, in
/// [`recorders_of_the_version_before_0008_meter_each_delivery_once`].
#[derive(Debug)]
enum Step {
    /// A recorder from before 0008.
    Old,
    /// This version's recorder.
    New,
    /// Migration 0008's delete of the usage_event rows of deliveries.
    Delete0008,
}

/// During a rolling upgrade across shard migration 0008 (and after a rollback), recorders of
/// the version before and of this one record the same deliveries, each possibly again (a
/// redelivered record message, a delivery redelivered from GitHub): every delivery counts once
/// in the rollup, in the hourly report and in a rebuild, whichever version records it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorders_of_the_version_before_0008_meter_each_delivery_once() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org(US).await;
    let org = OrgId(created["id"].as_i64().unwrap());
    let owner = created["api_key"].as_str().unwrap().to_owned();
    let db = control_plane::db::OrgDb::for_org(&app.regions[US].state.shards, org).unwrap();
    let now = Utc::now();
    let record = |n: i64| DeliveryRecord {
        delivery_id: DeliveryId(format!("{}-{n}", new_delivery())),
        org_id: Some(org),
        event: "issues".into(),
        action: Some("opened".into()),
        installation_id: None,
        repo: Some("Codertocat/Hello-World".into()),
        received_in: Region::new(US).unwrap(),
        received_at: now,
        outcome: "ignored".into(),
        jobs: Vec::new(),
    };
    let counted = || async {
        let n: Option<i64> = sqlx::query_scalar(
            "select sum(quantity)::bigint from usage_daily
             where org_id = $1 and metric = 'webhook_deliveries'",
        )
        .bind(org.0)
        .fetch_one(db.pool())
        .await
        .unwrap();
        n.unwrap_or(0)
    };

    // Each delivery recorded by the versions in turn; the first step counts it, no other may.
    // The last one keeps its old recorder's usage_event row, which the readers that go back
    // to the events leave out, counting its delivery row instead.
    let cases: [(&str, &[Step]); 4] = [
        (
            "recorded first by an old recorder, then again by an old and a new one",
            &[Step::Old, Step::Old, Step::New],
        ),
        (
            "recorded first by a new recorder (no usage_event row), then again by old ones",
            &[Step::New, Step::Old, Step::Old],
        ),
        (
            "recorded by an old recorder before the upgrade, its usage_event row deleted by \
             0008, then read again by an old recorder during the rollout",
            &[Step::Old, Step::Delete0008, Step::Old],
        ),
        ("recorded once by an old recorder", &[Step::Old]),
    ];
    for (n, (what, steps)) in (1_i64..).zip(cases) {
        let rec = record(n);
        for step in steps {
            match step {
                Step::Old => record_as_before_0008(&db, &rec).await,
                Step::New => record_now(&db, &rec).await,
                Step::Delete0008 => {
                    sqlx::query(
                        "delete from usage_event
                         where metric = 'webhook_deliveries' and event_id like 'delivery:%'",
                    )
                    .execute(db.pool())
                    .await
                    .unwrap();
                }
            }
            assert_eq!(counted().await, n, "{what}: after {step:?}");
        }
    }
    let rows: i64 = sqlx::query_scalar(
        "select count(*) from usage_event where org_id = $1 and metric = 'webhook_deliveries'",
    )
    .bind(org.0)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 1, "the old recorder's row of the last delivery");
    let today = now.date_naive();
    let hourly = report(
        &app,
        org.0,
        &owner,
        &format!("?granularity=hour&from={today}"),
    )
    .await;
    assert_eq!(quantity(&hourly, "webhook_deliveries"), 4, "{hourly:?}");
    control_plane::db::usage::rebuild(&db, today.pred_opt().unwrap(), today.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(counted().await, 4, "rebuilt from the events");
    let daily = report(&app, org.0, &owner, &format!("?from={today}")).await;
    assert_eq!(daily, hourly);

    // Usage events of other metrics are not held back.
    let seconds = UsageEvent {
        event_id: "job-seconds:j1:1".into(),
        org_id: org,
        metric: Metric::JobSeconds,
        quantity: 30,
        repo: None,
        job_id: Some("j1".into()),
        at: now,
    };
    let mut tx = db.pool().begin().await.unwrap();
    let new = control_plane::db::usage::record(&mut tx, &[&seconds])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(new, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_report_is_for_owners_admins_and_billing_of_the_org_only() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    for (role, status) in [
        ("admin", 200),
        ("billing", 200),
        ("developer", 403),
        ("viewer", 403),
    ] {
        let key = api_key(&app, org, &owner, role).await;
        let r = app.get(US, &format!("/v1/orgs/{org}/usage"), &key).await;
        assert_eq!(r.status, status, "{role}: {}", r.body);
    }
    // Another org's owner sees nothing of it.
    let other = app.create_org(US).await;
    let other_key = other["api_key"].as_str().unwrap();
    app.get(US, &format!("/v1/orgs/{org}/usage"), other_key)
        .await
        .assert_problem(404);
    // Bad parameters are 422 problems.
    for q in [
        "?granularity=week",
        "?group_by=user",
        "?from=2026-02-01&to=2026-01-01",
        "?from=yesterday",
        "?granularity=hour&from=2026-01-01&to=2026-03-01",
        "?from=2024-01-01&to=2026-01-01",
    ] {
        app.get(US, &format!("/v1/orgs/{org}/usage{q}"), &owner)
            .await
            .assert_problem(422);
    }
    let r = app
        .get(US, &format!("/v1/orgs/{org}/usage?unknown=1"), &owner)
        .await;
    assert!(r.status == 400 || r.status == 422, "{}", r.body);
    // Empty but well formed.
    let r = app
        .get(
            US,
            &format!("/v1/orgs/{org}/usage?granularity=hour"),
            &owner,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["items"], Value::Array(Vec::new()));
    assert_eq!(r.body["granularity"], "hour");
}

/// Deliveries of the org recorded with `outcome`.
async fn deliveries_with(app: &TestApp, org: i64, outcome: &str) -> i64 {
    sqlx::query_scalar("select count(*) from delivery where org_id = $1 and outcome = $2")
        .bind(org)
        .bind(outcome)
        .fetch_one(&app.regions[US].shard)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_the_orgs_rate_are_accepted_and_recorded_but_make_no_jobs() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    // The plan `limited`: 3 at once, then 10 a minute.
    let created = app.create_org_on(US, "limited").await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let payload = labeled_issue(inst, "bot");
    let mut jobs = Vec::new();
    for _ in 0..6 {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &payload)
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        jobs.push(r.body["jobs"].as_array().unwrap().len());
    }
    assert_eq!(jobs, vec![1, 1, 1, 0, 0, 0], "the burst, then nothing");
    // Another org is not affected.
    let other = app.create_org_on(US, "limited").await["id"]
        .as_i64()
        .unwrap();
    let other_inst = new_installation();
    app.bind_installation(US, other, other_inst).await;
    let r = app
        .send_webhook(
            US,
            "issues",
            &new_delivery(),
            &labeled_issue(other_inst, "bot"),
        )
        .await;
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1, "{}", r.body);
    // The refused ones are visible: recorded, counted, metered.
    wait_for(
        "the deliveries to be recorded",
        Duration::from_secs(20),
        || async {
            (deliveries_with(&app, org, "rate_limited").await == 3
                && deliveries_with(&app, org, "queued").await == 3)
                .then_some(())
        },
    )
    .await;
    let metrics = app
        .call(reqwest::Method::GET, US, "/metrics", None, None)
        .await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("switchyard_intake_deliveries_total{outcome=\"rate_limited\"} 3"),
        "{}",
        metrics.body
    );
    let usage = wait_for(
        "the deliveries to be metered",
        Duration::from_secs(20),
        || async {
            let r = report(&app, org, &owner, "").await;
            (quantity(&r, "webhook_deliveries") == 6).then_some(r)
        },
    )
    .await;
    assert_eq!(quantity(&usage, "webhook_deliveries"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_rate_limit_is_not_applied_and_jobs_still_run() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = TestApp::spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let org = app.create_org_on(US, "limited").await["id"]
        .as_i64()
        .unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let payload = labeled_issue(inst, "bot");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &payload)
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        let jobs = r.body["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 1, "intake goes on without Redis: {}", r.body);
        ids.push(jobs[0].as_str().unwrap().to_owned());
    }
    // The workers run them too (the org's concurrency cap is not enforced meanwhile).
    let shard = &app.regions[US].shard;
    wait_for(
        "the jobs to succeed without Redis",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from job where org_id = $1 and status = 'succeeded'",
            )
            .bind(org)
            .fetch_one(shard)
            .await
            .unwrap();
            (n == 5).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_beyond_a_hard_plans_monthly_minutes_are_skipped_visibly() {
    quota_is_enforced(false).await;
}

/// With Redis down the workers read the month's seconds from the usage rollup instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_job_minute_quota_still_holds() {
    quota_is_enforced(true).await;
}

/// Leased webhook cells all come out of the org's one budget in Redis: two control planes
/// handing out leases never allow more than the burst (plus what refills meanwhile), every
/// leased cell is used while deliveries keep coming, a refusal is then answered from memory,
/// and a busy org far from its limit costs a Redis call per lease, not per delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_leases_of_two_control_planes_share_one_budget() {
    use control_plane::billing::limits::{Decision, Limit, Limiter};
    let redis = redis::Client::open(TestEnv::get().redis_url.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let prefix = format!("test-leases-{}:", uuid::Uuid::new_v4().simple());
    let planes = [
        Limiter::new(redis.clone(), &prefix),
        Limiter::new(redis.clone(), &prefix),
    ];
    // 512 at once, then one a minute: leases of up to 32 cells.
    let limit = Limit {
        per_minute: 1,
        burst: 512,
    };
    let (mut allowed, mut refused) = (0, 0);
    for i in 0..1_000 {
        match planes[i % 2].webhook(OrgId(42), limit).await {
            Decision::Allowed { .. } => allowed += 1,
            Decision::Limited { .. } => refused += 1,
            Decision::Unchecked => panic!("Redis is up"),
        }
    }
    assert!(
        (512..=513).contains(&allowed),
        "allowed {allowed}, refused {refused}"
    );
    let Decision::Limited { retry_after, .. } = planes[1].webhook(OrgId(42), limit).await else {
        panic!("the budget is spent");
    };
    assert!(retry_after > Duration::from_secs(1), "{retry_after:?}");
    // Another org's budget is its own.
    assert!(matches!(
        planes[0].webhook(OrgId(43), limit).await,
        Decision::Allowed { .. }
    ));
    // A busy org far from its limit: leases of up to 1,024 cells, not a call per delivery.
    let roomy = Limit {
        per_minute: 100_000_000,
        burst: 100_000_000,
    };
    let before = planes[0].redis_calls();
    for _ in 0..5_000 {
        assert!(matches!(
            planes[0].webhook(OrgId(44), roomy).await,
            Decision::Allowed { .. }
        ));
    }
    let calls = planes[0].redis_calls() - before;
    assert!(calls < 500, "{calls} Redis calls for 5,000 deliveries");
    let mut conn = redis.clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// The workers read the month's job seconds from the Redis mirror when it has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_check_reads_the_months_seconds_from_redis() {
    let app = TestApp::spawn().await;
    let org = app.create_org_on(US, "quota").await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    // Nothing ingested for this org, but the mirror says its minute is used.
    let mut redis = redis::Client::open(TestEnv::get().redis_url.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let prefix = format!("{}:", app.namespace);
    protocol::service::quota::raise(&mut redis, &prefix, OrgId(org), Utc::now(), 60)
        .await
        .unwrap();
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    let id = r.body["jobs"][0].as_str().unwrap().to_owned();
    let j = wait_for("the job to be skipped", Duration::from_secs(30), || async {
        let r = app
            .get(US, &format!("/v1/orgs/{org}/jobs/{id}"), OPERATOR_TOKEN)
            .await;
        (r.status == 200 && r.body["status"] == "skipped_quota").then_some(r.body)
    })
    .await;
    assert_eq!(
        j["events"].as_array().unwrap().last().unwrap()["detail"]["used_seconds"],
        60
    );
}

async fn quota_is_enforced(redis_down: bool) {
    let app = TestApp::spawn_with(Options {
        redis_url: redis_down.then(|| "redis://127.0.0.1:1".to_owned()),
        ..Options::default()
    })
    .await;
    // The plan `quota`: one included job minute, as a hard limit.
    let created = app.create_org_on(US, "quota").await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let send = || async {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        r.body["jobs"][0].as_str().unwrap().to_owned()
    };
    let job_status = |id: String| {
        let app = &app;
        async move {
            let r = app
                .get(US, &format!("/v1/orgs/{org}/jobs/{id}"), OPERATOR_TOKEN)
                .await;
            (r.status == 200).then_some(r.body)
        }
    };
    // Within the minute: it runs.
    let first = send().await;
    wait_for(
        "the first job to succeed",
        Duration::from_secs(30),
        || async {
            job_status(first.clone())
                .await
                .filter(|j| j["status"] == "succeeded")
        },
    )
    .await;
    // The rest of the minute is used (a long job's seconds, as a worker reports them).
    publish(
        &app,
        &UsageEvent {
            event_id: "job-seconds:job_elsewhere:1".into(),
            org_id: OrgId(org),
            metric: Metric::JobSeconds,
            quantity: 60,
            repo: None,
            job_id: Some("job_elsewhere".into()),
            at: Utc::now(),
        },
    )
    .await;
    wait_for("the minute to be used", Duration::from_secs(30), || async {
        (quantity(&report(&app, org, &owner, "").await, "job_seconds") >= 60).then_some(())
    })
    .await;
    if !redis_down {
        // The ingester raised the month's mirror in Redis to the rollup's total.
        let redis = redis::Client::open(TestEnv::get().redis_url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let key =
            protocol::service::quota::key(&format!("{}:", app.namespace), OrgId(org), Utc::now());
        let mirrored: Option<i64> = wait_for("the mirror", Duration::from_secs(10), || async {
            let v: Option<i64> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis.clone())
                .await
                .unwrap();
            v.filter(|v| *v >= 60).map(Some)
        })
        .await;
        assert!(
            mirrored.unwrap() >= 61,
            "the first job's seconds and the minute: {mirrored:?}"
        );
    }
    // Beyond it: skipped, with the reason, and never run.
    let second = send().await;
    let j = wait_for(
        "the second job to be skipped",
        Duration::from_secs(30),
        || async {
            job_status(second.clone())
                .await
                .filter(|j| j["status"] == "skipped_quota")
        },
    )
    .await;
    let events = j["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["status"] != "running"), "{j}");
    let last = events.last().unwrap();
    assert_eq!(last["detail"]["quota_seconds"], 60, "{j}");
    assert!(
        last["detail"]["used_seconds"].as_i64().unwrap() >= 60,
        "{j}"
    );
    let listed = app
        .get(
            US,
            &format!("/v1/orgs/{org}/jobs?status=skipped_quota"),
            &owner,
        )
        .await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
}

/// Usage `quantity` of `metric` for the org at `at`, as a worker or the recorder reports it.
fn usage_event(org: i64, id: &str, metric: Metric, quantity: i64, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        event_id: id.into(),
        org_id: OrgId(org),
        metric,
        quantity,
        repo: Some("acme/widgets".into()),
        job_id: None,
        at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_period_is_invoiced_once_numbered_and_never_changes() {
    use chrono::Datelike;
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    // The org has existed since before last month.
    sqlx::query("update org set created_at = now() - interval '70 days' where id = $1")
        .bind(org)
        .execute(&app.catalog)
        .await
        .unwrap();
    let today = Utc::now().date_naive();
    let this_month = today.with_day(1).unwrap();
    let last_month = this_month.pred_opt().unwrap().with_day(1).unwrap();
    let period = format!("{:04}-{:02}", last_month.year(), last_month.month());
    let mid_last = last_month.and_hms_opt(12, 0, 0).unwrap().and_utc() + chrono::Duration::days(10);
    // Last month: 361 job seconds (7 minutes, rounded up), 6,000,000 LLM tokens (team includes
    // 5,000,000), 100,010 deliveries (team includes 100,000).
    for (i, s) in [100, 200, 61].into_iter().enumerate() {
        publish(
            &app,
            &usage_event(org, &format!("js-{i}"), Metric::JobSeconds, s, mid_last),
        )
        .await;
    }
    publish(
        &app,
        &usage_event(org, "tok", Metric::LlmTokens, 6_000_000, mid_last),
    )
    .await;
    publish(
        &app,
        &usage_event(org, "wh", Metric::WebhookDeliveries, 100_010, mid_last),
    )
    .await;
    // This month: some job seconds, on the draft only.
    publish(
        &app,
        &usage_event(org, "now", Metric::JobSeconds, 30, Utc::now()),
    )
    .await;

    let path = format!("/v1/orgs/{org}/invoices/{period}");
    let draft = wait_for(
        "last month's usage to be ingested",
        Duration::from_secs(30),
        || async {
            let r = app.get(US, &path, &owner).await;
            (r.status == 200
                && r.body["lines"].as_array().is_some_and(|ls| {
                    ls.iter()
                        .any(|l| l["metric"] == "webhook_deliveries" && l["quantity"] == 100_010)
                }))
            .then_some(r.body)
        },
    )
    .await;
    assert_eq!(draft["status"], "draft");
    assert!(draft["number"].is_null());
    let line = |inv: &Value, metric: &str| {
        inv["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["metric"] == metric)
            .cloned()
            .unwrap()
    };
    assert_eq!(line(&draft, "job_minutes")["quantity"], 7, "{draft}");
    assert_eq!(line(&draft, "job_minutes")["billable"], 0);
    assert_eq!(line(&draft, "llm_tokens")["billable"], 1_000_000);
    // 1,000,000 tokens at 2,000 micro-cents: 2,000 cents; 10 deliveries at 100,000: 1 cent.
    assert_eq!(line(&draft, "llm_tokens")["amount"], 2_000);
    assert_eq!(line(&draft, "webhook_deliveries")["amount"], 1);
    assert_eq!(line(&draft, "base_fee")["amount"], 4_900);
    assert_eq!(draft["total"], 6_901, "{draft}");
    assert_eq!(draft["currency"], "USD");

    // Closing: operators only, ended periods only.
    app.post(
        US,
        "/v1/admin/billing/close-period",
        &owner,
        json!({"period": period}),
    )
    .await
    .assert_problem(403);
    let open = format!("{:04}-{:02}", today.year(), today.month());
    app.post(
        US,
        "/v1/admin/billing/close-period",
        OPERATOR_TOKEN,
        json!({"period": open}),
    )
    .await
    .assert_problem(409);
    app.post(
        US,
        "/v1/admin/billing/close-period",
        OPERATOR_TOKEN,
        json!({"period": "2026-13"}),
    )
    .await
    .assert_problem(422);
    let r = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["finalized"].as_u64(),
            r.body["already_finalized"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let again = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(
        (
            again.body["finalized"].as_u64(),
            again.body["already_finalized"].as_u64()
        ),
        (Some(0), Some(1))
    );

    let fin = app.get(US, &path, &owner).await.body;
    assert_eq!(fin["status"], "finalized");
    let number = format!("SY-{:04}{:02}-{org}", last_month.year(), last_month.month());
    assert_eq!(fin["number"], number.as_str());
    assert_eq!(fin["lines"], draft["lines"]);
    assert_eq!(fin["total"], 6_901);
    // Late usage of the closed month does not change it; nor can the database.
    publish(
        &app,
        &usage_event(org, "late", Metric::JobSeconds, 6_000, mid_last),
    )
    .await;
    wait_for(
        "the late usage to be ingested",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "select count(*) from usage_event where org_id = $1 and event_id = 'late'",
            )
            .bind(org)
            .fetch_one(&app.regions[US].shard)
            .await
            .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
    assert_eq!(app.get(US, &path, &owner).await.body, fin);
    let refused = sqlx::query("update invoice set total_minor = 0 where org_id = $1")
        .bind(org)
        .execute(&app.regions[US].shard)
        .await;
    assert!(refused.is_err(), "a finalized invoice cannot be rewritten");
    assert!(
        sqlx::query("delete from invoice where org_id = $1")
            .bind(org)
            .execute(&app.regions[US].shard)
            .await
            .is_err()
    );

    // The list: this month's draft, then the finalized one.
    let list = app
        .get(US, &format!("/v1/orgs/{org}/invoices"), &owner)
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items[0]["period"], open.as_str());
    assert_eq!(items[0]["status"], "draft");
    assert_eq!(line(&items[0], "job_minutes")["quantity"], 1);
    assert!(items.iter().any(|i| i["number"] == number.as_str()));

    // CSV.
    let csv = app
        .http
        .get(app.url(US, &path))
        .bearer_auth(&owner)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("period,status,number,metric,"), "{csv}");
    assert!(
        csv.contains(&format!(
            "{period},finalized,{number},llm_tokens,6000000,5000000,1000000,2000,2000,USD"
        )),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("{period},finalized,{number},total,,,,,6901,USD")),
        "{csv}"
    );

    // Who may read them: owner and billing.
    for (role, status) in [("billing", 200), ("admin", 403), ("viewer", 403)] {
        let key = api_key(&app, org, &owner, role).await;
        assert_eq!(app.get(US, &path, &key).await.status, status, "{role}");
    }
    // The platform's revenue of the closed month: this org's finalized invoice.
    let rev = app
        .get(
            US,
            &format!("/v1/admin/reports/revenue?period={period}"),
            OPERATOR_TOKEN,
        )
        .await;
    assert_eq!(rev.status, 200, "{}", rev.body);
    assert_eq!(rev.body["total"], 6_901, "{}", rev.body);
    assert_eq!(rev.body["items"][0]["finalized"], 1);
    app.get(US, &format!("/v1/orgs/{org}/invoices/2026-1"), &owner)
        .await
        .assert_problem(422);
    app.get(US, &format!("/v1/orgs/{org}/invoices/2001-01"), &owner)
        .await
        .assert_problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revenue_report_gathers_every_region_and_plan() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    app.create_org_on(US, "team").await;
    app.create_org_on(US, "team").await;
    app.create_org_on(US, "enterprise").await;
    app.create_org_on(EU, "free").await;
    let r = app
        .get(EU, "/v1/admin/reports/revenue", OPERATOR_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows: Vec<(String, String, u64, i64)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["plan"].as_str().unwrap().to_owned(),
                i["region"].as_str().unwrap().to_owned(),
                i["orgs"].as_u64().unwrap(),
                i["total"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("enterprise".into(), US.into(), 1, 99_900),
            ("free".into(), EU.into(), 1, 0),
            ("team".into(), US.into(), 2, 9_800),
        ]
    );
    assert_eq!(r.body["total"], 109_700);
    app.get(
        EU,
        "/v1/admin/reports/revenue?period=2026-13",
        OPERATOR_TOKEN,
    )
    .await
    .assert_problem(422);
}

/// The value of the metric line that starts with `series` (labels as Prometheus writes them).
fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `RateLimit-*` headers of a response as `(limit, remaining, reset)`.
fn budget(r: &Resp) -> Option<(u64, u64, u64)> {
    let n = |h: &str| r.header(h).and_then(|v| v.parse().ok());
    Some((
        n("ratelimit-limit")?,
        n("ratelimit-remaining")?,
        n("ratelimit-reset")?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_over_the_rate_limit_get_429_until_the_budget_refills() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    // The plan `api_limited`: the org 4 requests at once, one key 3; one more every 10 s.
    let created = app.create_org_on(US, "api_limited").await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    // The operator is not limited: its calls take nothing from the org.
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/api-keys"),
            OPERATOR_TOKEN,
            json!({"name": "second", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.header("ratelimit-limit").is_none(), "{:?}", r.headers);
    let second = r.body["api_key"].as_str().unwrap().to_owned();
    let path = format!("/v1/orgs/{org}");

    // The owner's key: its own 3 at once, each success saying what is left of the budget
    // nearest to running out (the key's).
    for left in [2, 1, 0] {
        let r = app.get(US, &path, &owner).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (limit, remaining, reset) = budget(&r).expect("RateLimit-* headers on success");
        assert_eq!((limit, remaining), (3, left), "{:?}", r.headers);
        assert!((1..=30).contains(&reset), "reset {reset}");
        assert_eq!(r.header("ratelimit-policy"), Some("3;w=30"));
    }
    // The request that crosses the key's limit.
    let r = app.get(US, &path, &owner).await;
    r.assert_problem(429);
    assert_eq!(
        r.body["type"],
        "https://switchyard.dev/problems/rate-limited"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(budget(&r).map(|b| (b.0, b.1)), Some((3, 0)));
    assert_eq!(
        r.header("ratelimit-reset"),
        Some(retry.to_string().as_str())
    );
    // Another key of the org has its own 3, but the org only 1 left of its 4.
    let r = app.get(US, &path, &second).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(budget(&r).map(|b| (b.0, b.1)), Some((4, 0)));
    let r = app.get(US, &path, &second).await;
    r.assert_problem(429);
    assert_eq!(r.header("ratelimit-limit"), Some("4"), "the org's limit");
    // Other orgs and the operator are not affected.
    let other = app.create_org_on(US, "api_limited").await;
    let r = app
        .get(
            US,
            &format!("/v1/orgs/{}", other["id"]),
            other["api_key"].as_str().unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.get(US, &path, OPERATOR_TOKEN).await.status, 200);

    // The first request once the budget refilled (one request's worth) is served; the next
    // is refused again. A refused request takes nothing, so polling does not push it back.
    let r = wait_for(
        "the org's budget to refill",
        Duration::from_secs(40),
        || async {
            let r = app.get(US, &path, &owner).await;
            match r.status {
                429 => None,
                _ => Some(r),
            }
        },
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(budget(&r).map(|b| b.1), Some(0), "{:?}", r.headers);
    app.get(US, &path, &owner).await.assert_problem(429);

    let metrics = app
        .call(reqwest::Method::GET, US, "/metrics", None, None)
        .await;
    let text = metrics.body.as_str().unwrap();
    let limited = metric_value(
        text,
        "switchyard_rate_limit_decisions_total{decision=\"limited\",limit=\"api\"}",
    );
    assert!(limited.is_some_and(|n| n >= 3.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_api_is_not_rate_limited_and_never_fails() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = TestApp::spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org_on(US, "api_limited").await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    // Far over the key's 3 and the org's 4: every one is served, with no budget to report.
    for _ in 0..8 {
        let r = app.get(US, &format!("/v1/orgs/{org}"), &owner).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.header("ratelimit-limit").is_none(), "{:?}", r.headers);
    }
    let metrics = app
        .call(reqwest::Method::GET, US, "/metrics", None, None)
        .await;
    let text = metrics.body.as_str().unwrap();
    assert_eq!(
        metric_value(
            text,
            "switchyard_rate_limit_decisions_total{decision=\"unchecked\",limit=\"api\"}"
        ),
        Some(8.0),
        "{text}"
    );
}

/// `value × part / whole`, rounded half up: the proration rule of docs/billing.md, written
/// out again here so that the test does not take it from the code under test.
fn prorated(value: i64, part: i64, whole: i64) -> i64 {
    (2 * value * part + whole) / (2 * whole)
}

/// The first day of last month and of this one (UTC).
fn last_and_this_month() -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::Datelike;
    let this = Utc::now().date_naive().with_day(1).unwrap();
    let last = this.pred_opt().unwrap().with_day(1).unwrap();
    (last, this)
}

fn period_of(d: chrono::NaiveDate) -> String {
    d.format("%Y-%m").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_mid_month_is_prorated_by_the_seconds_each_plan_was_in_force() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    sqlx::query("update org set created_at = now() - interval '70 days' where id = $1")
        .bind(org)
        .execute(&app.catalog)
        .await
        .unwrap();
    // The owner moves the org from team to enterprise: the change is recorded with its time,
    // once (asking for the plan it already has records nothing).
    for _ in 0..2 {
        let r = app
            .call(
                reqwest::Method::PATCH,
                US,
                &format!("/v1/orgs/{org}"),
                Some(&owner),
                Some(json!({"plan": "enterprise"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["plan"], "enterprise");
    }
    let changes: Vec<(String, String)> = sqlx::query_as(
        "select from_plan, to_plan from org_plan_change where org_id = $1 order by id",
    )
    .bind(org)
    .fetch_all(&app.catalog)
    .await
    .unwrap();
    assert_eq!(changes, vec![("team".to_owned(), "enterprise".to_owned())]);
    // Say it happened at the start of last month's 11th day, to price a closed month.
    let (last, this) = last_and_this_month();
    let changed_at = (last + chrono::Duration::days(10))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    sqlx::query("update org_plan_change set changed_at = $2 where org_id = $1")
        .bind(org)
        .bind(changed_at)
        .execute(&app.catalog)
        .await
        .unwrap();
    // Last month's usage: 5,000 job minutes, 6,000,000 LLM tokens.
    let mid_last = last.and_hms_opt(12, 0, 0).unwrap().and_utc() + chrono::Duration::days(3);
    publish(
        &app,
        &usage_event(org, "js", Metric::JobSeconds, 5_000 * 60, mid_last),
    )
    .await;
    publish(
        &app,
        &usage_event(org, "tok", Metric::LlmTokens, 6_000_000, mid_last),
    )
    .await;

    let period = period_of(last);
    let path = format!("/v1/orgs/{org}/invoices/{period}");
    let draft = wait_for(
        "last month's usage to be ingested",
        Duration::from_secs(30),
        || async {
            let r = app.get(US, &path, &owner).await;
            let tokens: i64 = r.body["lines"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter(|l| l["metric"] == "llm_tokens")
                        .map(|l| l["quantity"].as_i64().unwrap())
                        .sum()
                })
                .unwrap_or(0);
            let minutes: i64 = r.body["lines"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter(|l| l["metric"] == "job_minutes")
                        .map(|l| l["quantity"].as_i64().unwrap())
                        .sum()
                })
                .unwrap_or(0);
            (r.status == 200 && tokens == 6_000_000 && minutes == 5_000).then_some(r.body)
        },
    )
    .await;
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["plan"], "enterprise", "the plan at the month's end");
    let period_seconds = (this - last).num_days() * 86_400;
    let team_seconds = 10 * 86_400;
    let ent_seconds = period_seconds - team_seconds;
    let line = |metric: &str, plan: &str| {
        draft["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["metric"] == metric && l["proration"]["plan"] == plan)
            .cloned()
            .unwrap_or_else(|| panic!("no {metric} line for {plan}: {draft}"))
    };
    let team_fee = line("base_fee", "team");
    assert_eq!(team_fee["proration"]["seconds"], team_seconds);
    assert_eq!(team_fee["proration"]["period_seconds"], period_seconds);
    assert_eq!(
        team_fee["amount"],
        prorated(4_900, team_seconds, period_seconds)
    );
    assert_eq!(
        line("base_fee", "enterprise")["amount"],
        prorated(99_900, ent_seconds, period_seconds)
    );
    // Each plan's share of the 5,000 minutes against its prorated included minutes; team's
    // share (10 days' worth, 3,000 × share included) is billed at team's price.
    let team_minutes = line("job_minutes", "team");
    let team_share = team_minutes["quantity"].as_i64().unwrap();
    let ent_share = line("job_minutes", "enterprise")["quantity"]
        .as_i64()
        .unwrap();
    assert_eq!(team_share + ent_share, 5_000);
    assert!((team_share * period_seconds - 5_000 * team_seconds).abs() < period_seconds);
    let team_included = prorated(3_000, team_seconds, period_seconds);
    assert_eq!(team_minutes["included"], team_included);
    let billable = (team_share - team_included).max(0);
    assert_eq!(team_minutes["billable"], billable);
    assert_eq!(
        team_minutes["amount"],
        (billable * 8_000_000 + 500_000) / 1_000_000
    );
    let sum: i64 = draft["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(draft["total"], sum);
    assert_eq!(draft["subtotal"], sum);

    // Closing the month keeps exactly those lines.
    let r = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["complete"], true, "{}", r.body);
    let fin = app.get(US, &path, &owner).await.body;
    assert_eq!(fin["status"], "finalized");
    assert_eq!(fin["lines"], draft["lines"]);
    assert_eq!(fin["total"], sum);
    // CSV lines name the plan and its share.
    let csv = app
        .http
        .get(app.url(US, &path))
        .bearer_auth(&owner)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",plan,plan_seconds,period_seconds"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            ",base_fee,1,0,1,4900000000,{},USD,team,{team_seconds},{period_seconds}",
            prorated(4_900, team_seconds, period_seconds)
        )),
        "{csv}"
    );
    // The revenue report counts the org under its plan at the month's end.
    let rev = app
        .get(
            US,
            &format!("/v1/admin/reports/revenue?period={period}"),
            OPERATOR_TOKEN,
        )
        .await;
    assert_eq!(rev.status, 200, "{}", rev.body);
    assert_eq!(rev.body["items"][0]["plan"], "enterprise", "{}", rev.body);
    assert_eq!(rev.body["total"], sum, "{}", rev.body);
    // This month the org is on enterprise throughout: no proration.
    let now = app
        .get(
            US,
            &format!("/v1/orgs/{org}/invoices/{}", period_of(this)),
            &owner,
        )
        .await;
    assert_eq!(now.status, 200, "{}", now.body);
    assert!(
        now.body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l.get("proration").is_none()),
        "{}",
        now.body
    );
    assert_eq!(now.body["lines"][0]["amount"], 99_900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_does_not_answer_is_named_while_the_others_are_reported_and_closed() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    let eu = app.create_org_on(EU, "enterprise").await["id"]
        .as_i64()
        .unwrap();
    for id in [org, eu] {
        sqlx::query("update org set created_at = now() - interval '70 days' where id = $1")
            .bind(id)
            .execute(&app.catalog)
            .await
            .unwrap();
    }
    // A third shard where nothing listens, holding one org (a closed range: nothing new is
    // placed on it).
    sqlx::query(
        "insert into shard (name, region, dsn) values ('us-east-1-9', $1, 'postgres://nobody@127.0.0.1:1/gone')",
    )
    .bind(US)
    .execute(&app.catalog)
    .await
    .unwrap();
    sqlx::query(
        "insert into shard_range (range_start, range_end, shard, next_id, open)
         values (9000000, 9001000, 'us-east-1-9', 9000001, false)",
    )
    .execute(&app.catalog)
    .await
    .unwrap();
    sqlx::query(
        "insert into org (id, slug, name, region, plan, status, created_at)
         values (9000000, $1, 'Lost', $2, 'team', 'active', now() - interval '70 days')",
    )
    .bind(format!("lost-{org}"))
    .bind(US)
    .execute(&app.catalog)
    .await
    .unwrap();

    // The report, from either region: the two shards that answer, and the one that does not.
    let rev = wait_for(
        "the control plane to know the new shard",
        Duration::from_secs(60),
        || async {
            let r = app
                .get(EU, "/v1/admin/reports/revenue", OPERATOR_TOKEN)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            // Until the map is reloaded, the org is one no range holds (`unrouted`).
            (r.body["missing_shards"][0]["shard"] == "us-east-1-9").then_some(r.body)
        },
    )
    .await;
    assert_eq!(rev["complete"], false);
    assert_eq!(rev["missing_shards"].as_array().unwrap().len(), 1, "{rev}");
    let missing = &rev["missing_shards"][0];
    assert_eq!(missing["shard"], "us-east-1-9", "{rev}");
    assert_eq!(missing["orgs"], 1);
    assert!(
        ["down", "unavailable", "timeout"].contains(&missing["reason"].as_str().unwrap()),
        "{rev}"
    );
    assert_eq!(rev["total"], 4_900 + 99_900, "{rev}");

    // Closing last month: what answers is finalized, the missing shard is named.
    let period = period_of(last_and_this_month().0);
    let r = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["complete"], false, "{}", r.body);
    assert_eq!(r.body["orgs"], 3);
    assert_eq!(r.body["finalized"], 2, "{}", r.body);
    assert_eq!(r.body["missing_shards"][0]["shard"], "us-east-1-9");
    let shards: Vec<&str> = r.body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_str().unwrap())
        .collect();
    assert_eq!(shards, vec!["eu-west-1-0", "us-east-1-0"]);
    let inv = app
        .get(US, &format!("/v1/orgs/{org}/invoices/{period}"), &owner)
        .await;
    assert_eq!(inv.body["status"], "finalized", "{}", inv.body);
    // Again: nothing new where it is done, the missing shard still named.
    let again = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(
        (
            again.body["finalized"].as_u64(),
            again.body["already_finalized"].as_u64()
        ),
        (Some(0), Some(2)),
        "{}",
        again.body
    );
    assert_eq!(again.body["missing_shards"][0]["shard"], "us-east-1-9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_invoices_job_minutes_are_its_finished_jobs_seconds_over_60_rounded_up() {
    let app = TestApp::spawn().await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let owner = created["api_key"].as_str().unwrap().to_owned();
    sqlx::query("update org set created_at = now() - interval '70 days' where id = $1")
        .bind(org)
        .execute(&app.catalog)
        .await
        .unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    for _ in 0..3 {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let shard = &app.regions[US].shard;
    let finished = || async {
        let rows: Vec<JobTimes> =
            sqlx::query_as("select started_at, finished_at, status from job where org_id = $1")
                .bind(org)
                .fetch_all(shard)
                .await
                .unwrap();
        rows
    };
    wait_for("the jobs to finish", Duration::from_secs(30), || async {
        let rows = finished().await;
        (rows.len() == 3 && rows.iter().all(|r| r.2 == "succeeded")).then_some(())
    })
    .await;
    let seconds = |rows: &[JobTimes]| -> i64 {
        rows.iter()
            .map(|r| billable_seconds(r.0.unwrap(), r.1.unwrap()))
            .sum()
    };
    let want = seconds(&finished().await);
    wait_for(
        "the job seconds to be ingested",
        Duration::from_secs(30),
        || async {
            (quantity(&report(&app, org, &owner, "").await, "job_seconds") == want).then_some(())
        },
    )
    .await;
    // Move what happened into the middle of last month — the jobs and their usage together,
    // the rollup rebuilt from the events — so that the month can be closed.
    let (last, _) = last_and_this_month();
    let mid = (last + chrono::Duration::days(14))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    let base: DateTime<Utc> =
        sqlx::query_scalar("select min(at) from usage_event where org_id = $1")
            .bind(org)
            .fetch_one(shard)
            .await
            .unwrap();
    for sql in [
        "update job set started_at = $2 + (started_at - $3), finished_at = $2 + (finished_at - $3),
                        created_at = $2 + (created_at - $3) where org_id = $1",
        "update usage_event set at = $2 + (at - $3) where org_id = $1",
    ] {
        sqlx::query(sql)
            .bind(org)
            .bind(mid)
            .bind(base)
            .execute(shard)
            .await
            .unwrap();
    }
    let db = control_plane::db::OrgDb::for_org(&app.regions[US].state.shards, OrgId(org)).unwrap();
    let tomorrow = Utc::now().date_naive().succ_opt().unwrap();
    control_plane::db::usage::rebuild(&db, last, tomorrow)
        .await
        .unwrap();

    let period = period_of(last);
    let r = app
        .post(
            US,
            "/v1/admin/billing/close-period",
            OPERATOR_TOKEN,
            json!({"period": period}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let inv = app
        .get(US, &format!("/v1/orgs/{org}/invoices/{period}"), &owner)
        .await
        .body;
    assert_eq!(inv["status"], "finalized", "{inv}");
    // The finished jobs of the month, from the jobs themselves.
    let (start, end) = (
        last.and_hms_opt(0, 0, 0).unwrap().and_utc(),
        last_and_this_month()
            .1
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
    );
    let jobs: Vec<JobTimes> = sqlx::query_as(
        "select started_at, finished_at, status from job
         where org_id = $1 and finished_at >= $2 and finished_at < $3 and started_at is not null",
    )
    .bind(org)
    .bind(start)
    .bind(end)
    .fetch_all(shard)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 3);
    let minutes: i64 = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["metric"] == "job_minutes")
        .map(|l| l["quantity"].as_i64().unwrap())
        .sum();
    assert_eq!(minutes, (seconds(&jobs) + 59) / 60, "{inv}");
    assert!(minutes >= 1);
}
