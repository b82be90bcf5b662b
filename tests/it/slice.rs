//! The first slice, end to end: an org per region, an installation, a signed `issues.labeled`
//! webhook, a job run by a worker of the org's own region, visible through the API.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::env::TestEnv;
use switchyard_tests::servers::NatsServer;

use crate::helpers::*;

async fn job_rows(pool: &sqlx::PgPool, org: i64) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("select id, status, worker from job where org_id = $1 order by id")
        .bind(org)
        .fetch_all(pool)
        .await
        .expect("job rows")
}

async fn count(pool: &sqlx::PgPool, table: &str, org: i64) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {table} where org_id = $1"
    )))
    .bind(org)
    .fetch_one(pool)
    .await
    .expect("count")
}

/// Sends a labeled-issue webhook for a new org of `region` and waits for its job to succeed.
async fn run_one_job(app: &TestApp, region: &'static str) -> (i64, String) {
    let org = app.create_org(region).await;
    let org_id = org["id"].as_i64().expect("org id");
    let inst = new_installation();
    app.bind_installation(region, org_id, inst).await;
    let delivery = new_delivery();
    let r = app
        .send_webhook(region, "issues", &delivery, &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["delivery_id"], delivery.as_str());
    let jobs = r.body["jobs"].as_array().expect("jobs").clone();
    assert_eq!(jobs.len(), 1, "one rule matched: {}", r.body);
    let job_id = jobs[0].as_str().expect("job id").to_owned();

    let path = format!("/v1/orgs/{org_id}/jobs/{job_id}");
    let job = wait_for("the job to succeed", Duration::from_secs(30), || async {
        let r = app.get(region, &path, OPERATOR_TOKEN).await;
        (r.status == 200 && r.body["status"] == "succeeded").then_some(r.body)
    })
    .await;
    assert_eq!(job["kind"], "agent");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["repo"], "Codertocat/Hello-World");
    assert!(
        job["result"]["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains(&job_id),
        "{job}"
    );
    let statuses: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "running", "succeeded"]);
    let list = app
        .get(region, &format!("/v1/orgs/{org_id}/jobs"), OPERATOR_TOKEN)
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"][0]["id"], job_id.as_str());
    assert_eq!(list.body["items"][0]["status"], "succeeded");
    (org_id, job_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_orgs_job_runs_on_a_worker_of_its_own_region_and_its_rows_stay_in_that_regions_shard()
{
    let app = TestApp::spawn().await;
    let (us_org, _) = run_one_job(&app, US).await;
    let (eu_org, _) = run_one_job(&app, EU).await;
    assert!(
        (1_000_000..2_000_000).contains(&us_org),
        "us org id {us_org} from the us range"
    );
    assert!(
        (2_000_000..3_000_000).contains(&eu_org),
        "eu org id {eu_org} from the eu range"
    );

    let us = &app.regions[US];
    let eu = &app.regions[EU];
    let us_jobs = job_rows(&us.shard, us_org).await;
    let eu_jobs = job_rows(&eu.shard, eu_org).await;
    assert_eq!(us_jobs.len(), 1);
    assert_eq!(eu_jobs.len(), 1);
    assert_eq!(
        us_jobs[0].2.as_deref(),
        Some(us.worker_id.as_str()),
        "run by the us worker"
    );
    assert_eq!(
        eu_jobs[0].2.as_deref(),
        Some(eu.worker_id.as_str()),
        "run by the eu worker"
    );
    // Nothing of either org in the other region's shard.
    for (pool, org) in [(&eu.shard, us_org), (&us.shard, eu_org)] {
        for table in [
            "tenant",
            "trigger_rule",
            "delivery",
            "job",
            "job_event",
            "audit_log",
        ] {
            assert_eq!(
                count(pool, table, org).await,
                0,
                "{table} of org {org} leaked into the other region"
            );
        }
    }
    // The delivery was recorded where the org lives.
    let recorded = wait_for(
        "the delivery to be recorded",
        Duration::from_secs(10),
        || async { (count(&us.shard, "delivery", us_org).await == 1).then_some(()) },
    )
    .await;
    let () = recorded;
    // Both workers announce themselves in their region's `workers` bucket.
    for (region, url) in [
        (US, TestEnv::get().nats_us_url.clone()),
        (EU, TestEnv::get().nats_eu_url.clone()),
    ] {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let bucket = format!("{}_workers", app.namespace);
        let worker = app.regions[region].worker_id.clone();
        wait_for("the worker's heartbeat", Duration::from_secs(10), || {
            let (js, bucket, worker) = (js.clone(), bucket.clone(), worker.clone());
            async move {
                let kv = js.get_key_value(&bucket).await.ok()?;
                let hb: Value =
                    serde_json::from_slice(&kv.get(worker.replace('.', "_")).await.ok()??).ok()?;
                (hb["region"] == region && hb["slots"] == 4).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_webhook_names_the_same_job_and_runs_it_once() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let delivery = new_delivery();
    let payload = labeled_issue(inst, "bot");
    let first = app.send_webhook(US, "issues", &delivery, &payload).await;
    let second = app.send_webhook(US, "issues", &delivery, &payload).await;
    assert_eq!(first.status, 202);
    assert_eq!(second.status, 202);
    assert_eq!(first.body["jobs"], second.body["jobs"]);
    let shard = &app.regions[US].shard;
    wait_for("the job to succeed", Duration::from_secs(30), || async {
        let rows = job_rows(shard, org).await;
        (rows.len() == 1 && rows[0].1 == "succeeded").then_some(())
    })
    .await;
    let runs: i64 = sqlx::query_scalar(
        "select count(*) from job_event where org_id = $1 and status = 'running'",
    )
    .bind(org)
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(runs, 1, "the job ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_match_no_rule_and_unknown_installations_make_no_job_but_are_recorded() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;

    let d1 = new_delivery();
    let r = app
        .send_webhook(US, "issues", &d1, &labeled_issue(inst, "bug"))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["jobs"], json!([]));

    let stranger = new_installation();
    let d2 = new_delivery();
    let r = app
        .send_webhook(US, "issues", &d2, &labeled_issue(stranger, "bot"))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["jobs"], json!([]));

    let shard = &app.regions[US].shard;
    wait_for(
        "both deliveries to be recorded",
        Duration::from_secs(10),
        || async {
            let ignored: Option<String> = sqlx::query_scalar(
                "select outcome from delivery where org_id = $1 and delivery_id = $2",
            )
            .bind(org)
            .bind(&d1)
            .fetch_optional(shard)
            .await
            .unwrap();
            let unclaimed: Option<i64> = sqlx::query_scalar(
                "select installation_id from unclaimed_delivery where delivery_id = $1",
            )
            .bind(&d2)
            .fetch_optional(&app.catalog)
            .await
            .unwrap();
            (ignored.as_deref() == Some("ignored") && unclaimed == Some(stranger)).then_some(())
        },
    )
    .await;
    assert_eq!(count(shard, "job", org).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_signature_is_401_and_nothing_is_recorded() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    let payload = labeled_issue(inst, "bot");
    let r = app
        .send_webhook_signed(
            US,
            "issues",
            &new_delivery(),
            &payload,
            "not-the-secret-at-all",
        )
        .await;
    r.assert_problem(401);
    let r = app
        .http
        .post(app.url(US, "/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", new_delivery())
        .body(serde_json::to_vec(&payload).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A delivery that is accepted afterwards is recorded; the refused ones never are.
    let ok = new_delivery();
    assert_eq!(
        app.send_webhook(US, "issues", &ok, &labeled_issue(inst, "nope"))
            .await
            .status,
        202
    );
    let shard = &app.regions[US].shard;
    wait_for(
        "the accepted delivery to be recorded",
        Duration::from_secs(10),
        || async { (count(shard, "delivery", org).await >= 1).then_some(()) },
    )
    .await;
    assert_eq!(count(shard, "delivery", org).await, 1);
    assert_eq!(count(shard, "job", org).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_a_problem_document() {
    let app = TestApp::spawn().await;
    // Malformed JSON to the API.
    let r = app
        .http
        .post(app.url(US, "/v1/orgs"))
        .bearer_auth(OPERATOR_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Wrong types and unknown fields are 422 with the field named.
    let r = app
        .post(US, "/v1/orgs", OPERATOR_TOKEN, json!({"slug": 5}))
        .await;
    r.assert_problem(422);
    assert_eq!(r.body["errors"][0]["field"], "slug");
    let r = app
        .post(
            US,
            "/v1/orgs",
            OPERATOR_TOKEN,
            json!({"slug": "abc", "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example", "extra": 1}),
        )
        .await;
    r.assert_problem(422);
    assert_eq!(r.body["errors"][0]["field"], "extra");
    // A signed webhook whose body is not JSON.
    let body = b"{not json".to_vec();
    let r = app
        .http
        .post(app.url(US, "/webhooks/github"))
        .header("x-github-event", "issues")
        .header("x-github-delivery", new_delivery())
        .header(
            "x-hub-signature-256",
            control_plane::intake::signature::sign(WEBHOOK_SECRET, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A signed webhook whose body is JSON but not an object.
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &json!([]))
        .await;
    r.assert_problem(400);
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("JSON object")),
        "{}",
        r.body
    );
    // Missing delivery header.
    let payload = serde_json::to_vec(&json!({})).unwrap();
    let r = app
        .http
        .post(app.url(US, "/webhooks/github"))
        .header("x-github-event", "issues")
        .header(
            "x-hub-signature-256",
            control_plane::intake::signature::sign(WEBHOOK_SECRET, &payload),
        )
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// GitHub sends every webhook of the App to one URL; an org of another region still has its
/// job run there: the US intake publishes to the EU JetStream domain over the leafnode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eu_orgs_webhook_taken_by_the_us_intake_runs_on_an_eu_worker_and_stays_in_eu_shards() {
    let app = TestApp::spawn().await;
    let eu_org = app.create_org(EU).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(EU, eu_org, inst).await;
    let delivery = new_delivery();
    let r = app
        .send_webhook(US, "issues", &delivery, &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let job_id = r.body["jobs"][0].as_str().expect("a job").to_owned();

    let path = format!("/v1/orgs/{eu_org}/jobs/{job_id}");
    let job = wait_for("the job to succeed", Duration::from_secs(30), || async {
        let r = app.get(EU, &path, OPERATOR_TOKEN).await;
        (r.status == 200 && r.body["status"] == "succeeded").then_some(r.body)
    })
    .await;
    assert_eq!(job["attempts"], 1, "{job}");
    let eu = &app.regions[EU];
    let us = &app.regions[US];
    let rows = job_rows(&eu.shard, eu_org).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].2.as_deref(),
        Some(eu.worker_id.as_str()),
        "run in eu"
    );
    wait_for(
        "the delivery to be recorded in the eu shard",
        Duration::from_secs(10),
        || async { (count(&eu.shard, "delivery", eu_org).await == 1).then_some(()) },
    )
    .await;
    for table in [
        "tenant",
        "trigger_rule",
        "delivery",
        "job",
        "job_event",
        "usage_event",
    ] {
        assert_eq!(
            count(&us.shard, table, eu_org).await,
            0,
            "{table} of the eu org in the us shard"
        );
    }
    // Its API calls to the US control plane are sent home.
    let r = app.get(US, &path, OPERATOR_TOKEN).await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("{}{path}", eu.url).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_orgs_are_404_and_orgs_of_another_region_redirect_there() {
    let app = TestApp::spawn().await;
    let r = app
        .get(US, "/v1/orgs/987654321987/jobs", OPERATOR_TOKEN)
        .await;
    r.assert_problem(404);
    let r = app.get(US, "/v1/orgs/not-a-number", OPERATOR_TOKEN).await;
    r.assert_problem(404);
    let eu_org = app.create_org(EU).await["id"].as_i64().unwrap();
    let r = app
        .get(
            US,
            &format!("/v1/orgs/{eu_org}/jobs?limit=5"),
            OPERATOR_TOKEN,
        )
        .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/v1/orgs/{eu_org}/jobs?limit=5", app.regions[EU].url).as_str())
    );
    let r = app
        .get(EU, &format!("/v1/orgs/{eu_org}"), OPERATOR_TOKEN)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["region"], EU);
    assert_eq!(r.body["shard"], "eu-west-1-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_its_request_and_region() {
    let app = TestApp::spawn().await;
    for (path, token) in [
        ("/healthz", None),
        ("/v1/orgs/1", Some(OPERATOR_TOKEN)),
        ("/nowhere", None),
    ] {
        let r = app.call(reqwest::Method::GET, EU, path, token, None).await;
        assert_eq!(r.header("x-switchyard-region"), Some(EU), "{path}");
        assert!(
            r.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{path}"
        );
    }
    let r = app
        .http
        .get(app.url(US, "/healthz"))
        .header("x-request-id", "caller-chosen-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-chosen-id-1");
    let r = app.get(US, "/readyz", OPERATOR_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"catalog": true, "nats": true, "redis": true})
    );
    let r = app
        .call(reqwest::Method::GET, US, "/v1/orgs/1", None, None)
        .await;
    r.assert_problem(401);
}

/// GitHub declares the length of every delivery: a body declared over 25 MiB is refused
/// before it is read, and one that turns out longer than declared cannot get past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_body_over_25_mib_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let addr = app.url(US, "").trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: issues\r\nX-GitHub-Delivery: {}\r\nX-Hub-Signature-256: sha256={}\r\n\
         Content-Length: {}\r\n\r\n{{",
        new_delivery(),
        "0".repeat(64),
        25 * 1024 * 1024 + 1
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let response = String::from_utf8_lossy(&buf[..n]);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("Content-Type: application/problem+json"),
        "{response}"
    );
    assert!(response.contains("Connection: close"), "{response}");
}

/// JetStream is down: intake answers 503 with Retry-After and leaves nothing behind; once it
/// is back, deliveries are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jetstream_stopped_intake_answers_503_and_writes_nothing() {
    let mut us_nats = NatsServer::start();
    let mut opts = Options {
        publish_timeout: Duration::from_millis(500),
        ..Options::default()
    };
    opts.nats.insert(US, us_nats.url());
    let app = TestApp::spawn_with(opts).await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;

    us_nats.stop();
    wait_for(
        "the control plane to see NATS gone",
        Duration::from_secs(10),
        || async {
            let r = app.get(US, "/readyz", OPERATOR_TOKEN).await;
            (r.status == 503 && r.body["nats"] == false).then_some(())
        },
    )
    .await;
    let refused = new_delivery();
    let r = app
        .send_webhook(US, "issues", &refused, &labeled_issue(inst, "bot"))
        .await;
    r.assert_problem(503);
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{:?}",
        r.headers
    );
    let ready = app.get(US, "/readyz", OPERATOR_TOKEN).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["nats"], false);

    us_nats.restart();
    let accepted = wait_for(
        "intake to accept deliveries again",
        Duration::from_secs(20),
        || async {
            let r = app
                .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
                .await;
            (r.status == 202).then_some(r.body)
        },
    )
    .await;
    let job = accepted["jobs"][0].as_str().unwrap().to_owned();
    let shard = &app.regions[US].shard;
    wait_for(
        "the accepted job to succeed",
        Duration::from_secs(30),
        || async {
            let rows = job_rows(shard, org).await;
            rows.iter()
                .any(|r| r.0 == job && r.1 == "succeeded")
                .then_some(())
        },
    )
    .await;
    // The refused delivery left nothing: no delivery row, no job of it.
    let refused_rows: i64 =
        sqlx::query_scalar("select count(*) from delivery where org_id = $1 and delivery_id = $2")
            .bind(org)
            .bind(&refused)
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(refused_rows, 0);
    let refused_jobs: i64 =
        sqlx::query_scalar("select count(*) from job where org_id = $1 and delivery_id = $2")
            .bind(org)
            .bind(&refused)
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(refused_jobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_returns_the_org_its_owner_and_a_working_key() {
    let app = TestApp::spawn().await;
    let org: Value = app.create_org(US).await;
    assert_eq!(org["status"], "active");
    assert_eq!(org["shard"], "us-east-1-0");
    assert_eq!(org["plan"], "team");
    let key = org["api_key"].as_str().expect("the owner's key").to_owned();
    assert!(key.starts_with("sy_"));
    let id = org["id"].as_i64().unwrap();
    let r = app.get(US, &format!("/v1/orgs/{id}"), &key).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["slug"], org["slug"]);
    // The owner's key does not reach another org.
    let other = app.create_org(US).await["id"].as_i64().unwrap();
    app.get(US, &format!("/v1/orgs/{other}"), &key)
        .await
        .assert_problem(404);
}
