//! Usage metering: deliveries metered by the recorder, job seconds and LLM tokens ingested from
//! the USAGE stream, each event once; the daily rollup equal to its events; the usage report.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::subjects::Names;
use protocol::usage::{Metric, UsageEvent, billable_seconds};
use protocol::{OrgId, Region};
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
    let from_events: Vec<(String, String, i64)> = sqlx::query_as(
        "select metric, coalesce(repo, ''), sum(quantity)::bigint from usage_event
         where org_id = $1 group by 1, 2 order by 1, 2",
    )
    .bind(org)
    .fetch_all(shard)
    .await
    .unwrap();
    assert_eq!(before, from_events);
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
    let app = TestApp::spawn().await;
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
