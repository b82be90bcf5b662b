//! The GitHub App: the emulator and the client, installs, lifecycle events, every GitHub
//! webhook example, delivery recovery, installation tokens.

use std::time::Duration;

use protocol::service::github::Github;
use serde_json::{Value, json};

use crate::helpers::*;

fn client(app: &TestApp) -> Github {
    Github::new(
        github_app(&app.github_url),
        None,
        "t:",
        &prometheus::Registry::new(),
    )
    .expect("a GitHub client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_acts_as_the_app_against_the_emulator() {
    let app = TestApp::spawn().await;
    let gh = client(&app);
    let inst = gh.installation(777).await.expect("the App JWT is accepted");
    assert_eq!(inst.id, 777);
    let token = gh
        .token(777, Some("account-777/hello"))
        .await
        .expect("a token");
    assert!(token.token.starts_with("ghs_"));
    let again = gh.token(777, Some("account-777/hello")).await.unwrap();
    assert_eq!(token.token, again.token, "cached");
    let c = gh
        .create_issue_comment(777, "account-777/hello", 1, "hi")
        .await
        .unwrap();
    let all = gh
        .issue_comments(777, "account-777/hello", 1)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, c.id);
}

fn rules() -> Value {
    json!([
        {"id": "triage", "event": "issues", "action": "opened", "kind": "triage"},
        {"id": "bug", "event": "issues", "action": "labeled", "label": "BUG", "kind": "agent"},
        {"id": "review", "event": "pull_request", "action": "opened", "kind": "review"},
        {"id": "chat", "event": "issue_comment", "action": "created", "kind": "chat"},
        {"id": "nobody", "event": "push", "repos": ["nobody/*"], "kind": "never"}
    ])
}

/// What the rules above should make of a payload, worked out independently of intake.
fn expected_jobs(event: &str, p: &Value) -> usize {
    let action = p["action"].as_str();
    let by_bot = p["comment"]["user"]["type"] == "Bot"
        || !p["comment"]["performed_via_github_app"].is_null();
    usize::from(event == "issues" && action == Some("opened"))
        + usize::from(
            event == "issues"
                && action == Some("labeled")
                && p["label"]["name"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case("bug")),
        )
        + usize::from(event == "pull_request" && action == Some("opened"))
        + usize::from(event == "issue_comment" && action == Some("created") && !by_bot)
}

/// Every example payload GitHub publishes, signed: 2xx, never a 5xx; jobs exactly where the
/// rules say. The same payloads unsigned or wrongly signed: 401, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_github_webhook_example_is_accepted_and_makes_exactly_the_jobs_the_rules_say() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let inst = new_installation();
    app.bind_installation(US, id, inst).await;
    let r = app
        .call(
            reqwest::Method::PUT,
            US,
            &format!("/v1/orgs/{id}/rules"),
            Some(&owner),
            Some(rules()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let mut sent = 0;
    let mut expected_total = 0;
    let mut refused = Vec::new();
    for group in switchyard_tests::fixtures::all_examples() {
        for mut p in group.examples {
            // Lifecycle events go to an installation nobody claimed, so they cannot unbind ours.
            let lifecycle = matches!(
                group.name.as_str(),
                "installation" | "installation_repositories" | "installation_target"
            );
            let target = if lifecycle { new_installation() } else { inst };
            if let Some(o) = p.as_object_mut() {
                o.insert("installation".into(), json!({"id": target, "node_id": "x"}));
            }
            let delivery = new_delivery();
            let r = app.send_webhook(US, &group.name, &delivery, &p).await;
            assert!(
                r.status < 500,
                "{} {:?}: {} {}",
                group.name,
                p["action"],
                r.status,
                r.body
            );
            assert_eq!(
                r.status, 202,
                "{} {:?}: {}",
                group.name, p["action"], r.body
            );
            let want = if lifecycle {
                0
            } else {
                expected_jobs(&group.name, &p)
            };
            let got = r.body["jobs"].as_array().map_or(0, Vec::len);
            assert_eq!(got, want, "{} {:?}", group.name, p["action"]);
            expected_total += want;
            sent += 1;
            // The same payload without a signature, and with a wrong one.
            let bad = new_delivery();
            let r = app
                .send_webhook_signed(US, &group.name, &bad, &p, "not-the-webhook-secret")
                .await;
            assert_eq!(r.status, 401, "{}", group.name);
            refused.push(bad);
        }
    }
    assert!(sent >= 300, "only {sent} examples");
    let shard = &app.regions[US].shard;
    wait_for("every job row", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from job where org_id = $1")
            .bind(id)
            .fetch_one(shard)
            .await
            .unwrap();
        (n as usize == expected_total).then_some(())
    })
    .await;
    let recorded: i64 =
        sqlx::query_scalar("select count(*) from delivery where delivery_id = any($1)")
            .bind(&refused)
            .fetch_one(shard)
            .await
            .unwrap();
    let unclaimed: i64 =
        sqlx::query_scalar("select count(*) from unclaimed_delivery where delivery_id = any($1)")
            .bind(&refused)
            .fetch_one(&app.catalog)
            .await
            .unwrap();
    assert_eq!(
        (recorded, unclaimed),
        (0, 0),
        "refused deliveries left no trace"
    );
}

async fn emulator(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = app
        .http
        .request(method, format!("{}{path}", app.github_url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

async fn installations(app: &TestApp, org: i64, key: &str) -> Vec<Value> {
    let r = app
        .get(US, &format!("/v1/orgs/{org}/github/installations"), key)
        .await;
    assert_eq!(r.status, 200);
    r.body["items"].as_array().unwrap().clone()
}

/// The install flow: install link → GitHub's install page → setup callback → bound, with
/// its repositories; lifecycle events keep it true; uninstalling stops jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_installed_through_the_setup_flow_and_uninstalled_by_webhook() {
    let app = TestApp::spawn_with(Options {
        auto_provision: false,
        ..Options::default()
    })
    .await;
    let org = app.create_org(US).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let link = app
        .get(US, &format!("/v1/orgs/{id}/github/install-url"), &owner)
        .await;
    assert_eq!(link.status, 200, "{}", link.body);
    let url = link.body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{}/apps/{APP_SLUG}/installations/new?state=",
            app.github_url
        )),
        "{url}"
    );

    // The user installs the App on GitHub, which sends the browser back with the state.
    let page = app
        .http
        .get(format!("{url}&account=acme-gh"))
        .send()
        .await
        .unwrap();
    assert!(page.status().is_redirection(), "{}", page.status());
    let setup = page.headers()["location"].to_str().unwrap().to_owned();
    assert!(setup.contains("/github/setup?installation_id="), "{setup}");
    let bound = app.http.get(&setup).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    let bound: Value = bound.json().await.unwrap();
    assert_eq!(bound["org_id"], id);
    assert_eq!(bound["account"], "acme-gh");
    assert_eq!(bound["status"], "active");
    let inst = bound["installation_id"].as_i64().unwrap();
    let listed = installations(&app, id, &owner).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0]["repositories"],
        json!(["acme-gh/hello-world", "acme-gh/widgets"])
    );

    // A second org cannot claim it; a made-up installation is not this App's.
    let other = app.create_org(US).await["id"].as_i64().unwrap();
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{other}/github/installations"),
            OPERATOR_TOKEN,
            json!({"installation_id": inst}),
        )
        .await;
    r.assert_problem(409);
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{other}/github/installations"),
            OPERATOR_TOKEN,
            json!({"installation_id": 99}),
        )
        .await;
    r.assert_problem(422);
    // A forged state is refused.
    let forged = setup.replace("state=", "state=x");
    assert_eq!(app.http.get(&forged).send().await.unwrap().status(), 400);

    // Webhooks of the installation make jobs.
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1);

    // Repositories added on GitHub show up; suspending stops jobs, unsuspending resumes.
    emulator(
        &app,
        reqwest::Method::POST,
        &format!("/_emulator/installations/{inst}/repositories"),
        json!({"add": ["docs"]}),
    )
    .await;
    wait_for("the added repository", Duration::from_secs(10), || async {
        let l = installations(&app, id, &owner).await;
        l[0]["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "acme-gh/docs")
            .then_some(())
    })
    .await;
    emulator(
        &app,
        reqwest::Method::POST,
        &format!("/_emulator/installations/{inst}/suspend"),
        json!({}),
    )
    .await;
    assert_eq!(
        installations(&app, id, &owner).await[0]["status"],
        "suspended"
    );
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(
        r.body["jobs"],
        json!([]),
        "a suspended installation makes no jobs"
    );
    emulator(
        &app,
        reqwest::Method::POST,
        &format!("/_emulator/installations/{inst}/unsuspend"),
        json!({}),
    )
    .await;
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1);

    // Uninstalling removes the binding, and jobs stop.
    emulator(
        &app,
        reqwest::Method::POST,
        &format!("/_emulator/installations/{inst}/uninstall"),
        json!({}),
    )
    .await;
    assert!(installations(&app, id, &owner).await.is_empty());
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["jobs"], json!([]));
    let log = app
        .get(US, &format!("/v1/orgs/{id}/audit-log"), &owner)
        .await;
    let actions: Vec<&str> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "installation.bind",
        "installation.repositories",
        "installation.suspend",
        "installation.unsuspend",
        "installation.deleted",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

/// Deliveries refused while JetStream is down are found among GitHub's failed deliveries by
/// the reconciler, redelivered, and each becomes exactly one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_refused_during_an_outage_are_redelivered_and_run_once() {
    let mut nats = switchyard_tests::servers::NatsServer::start();
    let mut opts = Options {
        publish_timeout: Duration::from_millis(500),
        recovery_every: Duration::from_millis(500),
        ..Options::default()
    };
    opts.nats.insert(US, nats.url());
    let app = TestApp::spawn_with(opts).await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;

    nats.stop();
    wait_for("NATS to be seen down", Duration::from_secs(10), || async {
        (app.get(US, "/readyz", OPERATOR_TOKEN).await.status == 503).then_some(())
    })
    .await;
    let mut guids = Vec::new();
    for _ in 0..3 {
        let d = emulator(
            &app,
            reqwest::Method::POST,
            "/_emulator/events",
            json!({"event": "issues", "payload": labeled_issue(inst, "bot")}),
        )
        .await;
        assert_eq!(d["status_code"], 503, "{d}");
        guids.push(d["guid"].as_str().unwrap().to_owned());
    }
    nats.restart();

    let shard = &app.regions[US].shard;
    wait_for("every refused delivery to become a job that ran", Duration::from_secs(60), || async {
        let done: i64 = sqlx::query_scalar("select count(*) from job where org_id = $1 and delivery_id = any($2) and status = 'succeeded'")
            .bind(org)
            .bind(&guids)
            .fetch_one(shard)
            .await
            .unwrap();
        (done == 3).then_some(())
    })
    .await;
    let per_delivery: Vec<i64> = sqlx::query_scalar(
        "select count(*) from job where org_id = $1 and delivery_id = any($2) group by delivery_id",
    )
    .bind(org)
    .bind(&guids)
    .fetch_all(shard)
    .await
    .unwrap();
    assert_eq!(per_delivery, vec![1, 1, 1], "exactly one job per delivery");
    let visible = app
        .get(US, "/v1/admin/github/redeliveries", OPERATOR_TOKEN)
        .await;
    let asked: Vec<&str> = visible.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == "requested")
        .map(|r| r["guid"].as_str().unwrap())
        .collect();
    for g in &guids {
        assert!(asked.contains(&g.as_str()), "{g} not in {asked:?}");
    }
    // Later passes leave them alone: they are recorded now.
    let before = app
        .github
        .state
        .lock()
        .unwrap()
        .deliveries
        .iter()
        .filter(|d| d.redelivery)
        .count();
    let report = control_plane::github::recovery::pass(&app.regions[US].state)
        .await
        .unwrap();
    assert_eq!(report.requested, 0, "{report:?}");
    assert_eq!(
        app.github
            .state
            .lock()
            .unwrap()
            .deliveries
            .iter()
            .filter(|d| d.redelivery)
            .count(),
        before
    );
    // Whichever control plane held the reconciler's lock counted the requests.
    let mut requested = 0.0;
    for region in [US, EU] {
        let metrics = app
            .call(reqwest::Method::GET, region, "/metrics", None, None)
            .await;
        requested += metrics
            .body
            .as_str()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("switchyard_github_redeliveries_total{result=\"requested\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    // A redelivery that itself lands while JetStream is still coming back is refused again
    // and asked for once more, so the count is at least one per delivery and always equals
    // the redeliveries GitHub saw.
    assert!(requested >= 3.0, "{requested}");
    #[allow(clippy::cast_precision_loss)]
    let seen = before as f64;
    assert_eq!(requested, seen);
}
