//! Shards as operators run them: registering shards and ranges through the API, the per-shard
//! circuit breaker against a PostgreSQL cluster the test stops itself, and online range moves
//! under continuous writes — including one whose verification fails and rolls back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use switchyard_tests::servers::PostgresServer;
use tokio::sync::Mutex;

use crate::helpers::*;

async fn count(pool: &PgPool, table: &str, orgs: &[i64]) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from {table} where org_id = any($1)"
    )))
    .bind(orgs)
    .fetch_one(pool)
    .await
    .expect("count")
}

/// The one rule the tests' webhooks match.
fn bot_rule() -> Value {
    json!([{"id": "bot", "event": "issues", "action": "labeled", "label": "bot", "kind": "agent"}])
}

/// Replaces `org`'s trigger rules (a write to its shard: rules and an audit row).
async fn put_rules(app: &TestApp, org: i64, token: &str, rules: &Value) -> Resp {
    app.call(
        reqwest::Method::PUT,
        US,
        &format!("/v1/orgs/{org}/rules"),
        Some(token),
        Some(rules.clone()),
    )
    .await
}

/// Registers `name` in `region` through the API.
async fn add_shard(app: &TestApp, name: &str, region: &str, dsn: &str) -> Value {
    let r = app
        .post(
            US,
            "/v1/admin/shards",
            OPERATOR_TOKEN,
            json!({"name": name, "region": region, "dsn": dsn}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

/// Opens `[start, end)` on `shard` through the API.
async fn add_range(app: &TestApp, shard: &str, start: i64, end: i64) {
    let r = app
        .post(
            US,
            "/v1/admin/shards/ranges",
            OPERATOR_TOKEN,
            json!({"shard": shard, "start": start, "end": end}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Waits until the US control plane routes `org` to `shard`.
async fn wait_routed(app: &TestApp, org: i64, shard: &str) {
    wait_for(
        "the map to reach the control plane",
        Duration::from_secs(20),
        || async {
            let h = app.regions[US].state.shards.route(protocol::OrgId(org))?;
            (h.name == shard).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_and_ranges_are_registered_listed_and_checked_through_the_api() {
    let mut app = TestApp::spawn().await;
    let first = app.create_org(US).await;
    assert_eq!(first["shard"], "us-east-1-0");
    let dsn = app.create_empty_db("us1").await;
    // A database that does not answer is refused, and nothing is registered.
    let r = app
        .post(
            US,
            "/v1/admin/shards",
            OPERATOR_TOKEN,
            json!({"name": "us-east-1-9", "region": US, "dsn": "postgres://nobody@127.0.0.1:9/none"}),
        )
        .await;
    r.assert_problem(422);
    for (body, status) in [
        (json!({"name": "Bad_Name", "region": US, "dsn": dsn}), 422),
        (
            json!({"name": "us-east-1-1", "region": "mars-1", "dsn": dsn}),
            422,
        ),
    ] {
        app.post(US, "/v1/admin/shards", OPERATOR_TOKEN, body)
            .await
            .assert_problem(status);
    }
    let shard = add_shard(&app, "us-east-1-1", US, &dsn).await;
    assert_eq!(shard["region"], US);
    assert_eq!(shard["health"], "up");
    assert!(
        shard.get("dsn").is_none(),
        "the DSN is never shown: {shard}"
    );
    // Registered means migrated: the shard holds this build's schema.
    let migrated = pool(&dsn).await;
    let n: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&migrated)
        .await
        .unwrap();
    assert_eq!(n, control_plane::db::migrate::SHARD.iter().count() as i64);
    // The same again is a no-op; another DSN under that name is a conflict.
    add_shard(&app, "us-east-1-1", US, &dsn).await;
    app.post(
        US,
        "/v1/admin/shards",
        OPERATOR_TOKEN,
        json!({"name": "us-east-1-1", "region": US, "dsn": format!("{dsn}?x=1")}),
    )
    .await
    .assert_problem(409);

    // Ranges: opened, never overlapping.
    add_range(&app, "us-east-1-1", 5_000_000, 6_000_000).await;
    for (body, status) in [
        (
            json!({"shard": "us-east-1-1", "start": 5_500_000, "end": 7_000_000}),
            409,
        ),
        (
            json!({"shard": "us-east-1-0", "start": 1_500_000, "end": 1_600_000}),
            409,
        ),
        (json!({"shard": "us-east-1-1", "start": 9, "end": 9}), 422),
        (
            json!({"shard": "nope", "start": 8_000_000, "end": 9_000_000}),
            422,
        ),
    ] {
        app.post(US, "/v1/admin/shards/ranges", OPERATOR_TOKEN, body)
            .await
            .assert_problem(status);
    }
    // The new shard is the least loaded: the next org lands there.
    wait_routed(&app, 5_000_000, "us-east-1-1").await;
    let org = app.create_org(US).await;
    assert_eq!(org["shard"], "us-east-1-1", "{org}");
    assert_eq!(org["id"], 5_000_000);

    let list = app.get(US, "/v1/admin/shards", OPERATOR_TOKEN).await;
    assert_eq!(list.status, 200);
    let items = list.body["items"].as_array().unwrap();
    let new = items.iter().find(|s| s["name"] == "us-east-1-1").unwrap();
    assert_eq!(new["orgs"], 1);
    assert_eq!(new["ranges"][0]["start"], 5_000_000);
    assert_eq!(new["ranges"][0]["next_id"], 5_000_001);
    // Only the operator manages shards.
    let key = org["api_key"].as_str().unwrap();
    app.get(US, "/v1/admin/shards", key)
        .await
        .assert_problem(403);

    // verify: no drift; then a shard missing a migration is reported.
    let report = control_plane::sharding::verify(&app.catalog).await.unwrap();
    assert!(report.ok(), "{report:?}");
    let last = control_plane::db::migrate::SHARD
        .iter()
        .last()
        .unwrap()
        .version;
    sqlx::query("delete from _sqlx_migrations where version = $1")
        .bind(last)
        .execute(&migrated)
        .await
        .unwrap();
    let report = control_plane::sharding::verify(&app.catalog).await.unwrap();
    assert!(!report.ok());
    let drifted = report
        .shards
        .iter()
        .find(|s| s.shard == "us-east-1-1")
        .unwrap();
    assert_eq!(drifted.missing, vec![last]);
    migrated.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_shard_refuses_only_its_own_orgs_at_once_and_recovers_by_itself() {
    let app = TestApp::spawn().await;
    let mut pg = PostgresServer::start();
    let admin = pool(&pg.url("postgres")).await;
    sqlx::query("create database shard")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let other = app.create_org(US).await["id"].as_i64().unwrap();
    // A second org on the first shard, so that new orgs go to the emptier new one.
    app.create_org(US).await;
    add_shard(&app, "us-east-1-1", US, &pg.url("shard")).await;
    add_range(&app, "us-east-1-1", 5_000_000, 6_000_000).await;
    wait_routed(&app, 5_000_000, "us-east-1-1").await;
    let org = app.create_org(US).await;
    assert_eq!(org["shard"], "us-east-1-1");
    let victim = org["id"].as_i64().unwrap();
    let jobs = |org: i64| format!("/v1/orgs/{org}/jobs");
    assert_eq!(app.get(US, &jobs(victim), OPERATOR_TOKEN).await.status, 200);

    pg.stop();
    // Once its probes fail, the shard's orgs are refused by the breaker, without I/O.
    let refused = wait_for("the breaker to open", Duration::from_secs(20), || async {
        let r = app.get(US, &jobs(victim), OPERATOR_TOKEN).await;
        (r.status == 503
            && r.body["type"]
                .as_str()
                .unwrap_or("")
                .ends_with("/shard-unavailable"))
        .then_some(r)
    })
    .await;
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("us-east-1-1"),
        "{}",
        refused.body
    );
    // An org placed on it meanwhile is refused the same way, and undone: its slug stays free.
    let slug = format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let new_org = json!({"slug": slug, "name": "Test Org", "region": US, "plan": "team",
                         "owner_email": format!("owner@{slug}.example")});
    let r = app
        .post(US, "/v1/orgs", OPERATOR_TOKEN, new_org.clone())
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    // Meanwhile every other org is served as before, and the victim keeps being refused.
    for _ in 0..20 {
        let r = app.get(US, &jobs(other), OPERATOR_TOKEN).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = app.get(US, &jobs(victim), OPERATOR_TOKEN).await;
        assert_eq!(r.status, 503, "{}", r.body);
    }
    let list = app.get(US, "/v1/admin/shards", OPERATOR_TOKEN).await;
    let down = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "us-east-1-1")
        .unwrap()
        .clone();
    assert_eq!(down["health"], "down", "{down}");
    let metrics = app.get(US, "/metrics", OPERATOR_TOKEN).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("switchyard_shard_up{shard=\"us-east-1-1\"} 0"),
        "{text}"
    );

    // The shard returns: its orgs are served again, with no one's help.
    pg.restart();
    wait_for(
        "the shard's orgs to be served again",
        Duration::from_secs(30),
        || async { (app.get(US, &jobs(victim), OPERATOR_TOKEN).await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(app.get(US, &jobs(other), OPERATOR_TOKEN).await.status, 200);
    let r = app.post(US, "/v1/orgs", OPERATOR_TOKEN, new_org).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Writes to two orgs until told to stop: webhooks (deliveries, jobs, usage via the workers)
/// and rule changes (rules and audit rows). A `503` is sent again, as its `Retry-After` asks.
#[derive(Default)]
struct Writes {
    deliveries: Vec<(i64, String, String)>,
    rule_puts: Vec<i64>,
    refused: usize,
}

async fn write_until(
    app: &TestApp,
    orgs: &[(i64, i64, String)],
    stop: &AtomicBool,
    out: &Mutex<Writes>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (org, inst, key) in orgs {
            n += 1;
            let delivery = new_delivery();
            let mut p = labeled_issue(*inst, "bot");
            p["issue"]["number"] = json!(n);
            let r = wait_for("a webhook to be taken", Duration::from_secs(30), || async {
                let r = app.send_webhook(US, "issues", &delivery, &p).await;
                (r.status != 503).then_some(r)
            })
            .await;
            assert_eq!(r.status, 202, "{}", r.body);
            let job = r.body["jobs"][0].as_str().unwrap().to_owned();
            out.lock().await.deliveries.push((*org, delivery, job));

            let mut rules = bot_rule();
            rules.as_array_mut().unwrap().push(json!(
                {"id": format!("r{n}"), "event": "issues", "action": "labeled", "label": format!("l{n}"), "kind": "agent"}
            ));
            let r = wait_for(
                "a rules change to be taken",
                Duration::from_secs(30),
                || async {
                    let r = put_rules(app, *org, key, &rules).await;
                    if r.status != 503 {
                        return Some(r);
                    }
                    assert!(r.header("retry-after").is_some());
                    out.lock().await.refused += 1;
                    None
                },
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            out.lock().await.rule_puts.push(*org);
        }
    }
}

async fn wait_move(app: &TestApp, id: &str) -> Value {
    wait_for("the move to finish", Duration::from_secs(120), || async {
        let r = app
            .get(US, &format!("/v1/admin/shard-moves/{id}"), OPERATOR_TOKEN)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        matches!(
            r.body["phase"].as_str(),
            Some("done" | "rolled_back" | "failed")
        )
        .then_some(r.body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_moves_online_under_continuous_writes_losing_and_doubling_nothing() {
    let mut app = TestApp::spawn().await;
    let mut movers = Vec::new();
    for _ in 0..2 {
        let o = app.create_org(US).await;
        let id = o["id"].as_i64().unwrap();
        let inst = new_installation();
        app.bind_installation(US, id, inst).await;
        movers.push((id, inst, o["api_key"].as_str().unwrap().to_owned()));
    }
    let stays = app.create_org(US).await["id"].as_i64().unwrap();
    let (start, end) = (movers[0].0, movers[1].0 + 1);
    assert_eq!(stays, end, "ids are handed out in order");
    let dsn = app.create_empty_db("us1").await;
    add_shard(&app, "us-east-1-1", US, &dsn).await;
    let target = pool(&dsn).await;
    let source = app.regions[US].shard.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Writes::default()));
    let app = Arc::new(app);
    let writer = {
        let (app, stop, writes, orgs) = (app.clone(), stop.clone(), writes.clone(), movers.clone());
        tokio::spawn(async move { write_until(&app, &orgs, &stop, &writes).await })
    };
    wait_for(
        "writes before the move",
        Duration::from_secs(30),
        || async { (writes.lock().await.rule_puts.len() >= 6).then_some(()) },
    )
    .await;

    // Bad moves are refused up front.
    for (body, status) in [
        (
            json!({"start": start, "end": end, "to_shard": "us-east-1-0"}),
            422,
        ),
        (
            json!({"start": start, "end": end, "to_shard": "eu-west-1-0"}),
            422,
        ),
        (
            json!({"start": start, "end": 9_000_000_000_i64, "to_shard": "us-east-1-1"}),
            422,
        ),
    ] {
        app.post(US, "/v1/admin/shard-moves", OPERATOR_TOKEN, body)
            .await
            .assert_problem(status);
    }
    let r = app
        .post(
            US,
            "/v1/admin/shard-moves",
            OPERATOR_TOKEN,
            json!({"start": start, "end": end, "to_shard": "us-east-1-1"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/admin/shard-moves/{id}").as_str())
    );
    let done = wait_move(&app, &id).await;
    assert_eq!(done["phase"], "done", "{done}");
    assert_eq!(done["verification"]["ok"], true, "{done}");
    assert!(done["rows_copied"].as_i64().unwrap() > 0, "{done}");
    assert_eq!(done["lag_rows"], 0);
    let pause_ms = done["pause_ms"].as_i64().expect("the pause is measured");
    assert!(pause_ms >= 0);

    // Writes go on after the switch, now on the new shard.
    let before = writes.lock().await.rule_puts.len();
    wait_for("writes after the move", Duration::from_secs(60), || async {
        (writes.lock().await.rule_puts.len() >= before + 6).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let writes = writes.lock().await;
    let moved: Vec<i64> = movers.iter().map(|m| m.0).collect();
    for org in &moved {
        wait_routed(&app, *org, "us-east-1-1").await;
    }

    // Every job of every accepted webhook ran to the end, once, and is read from the new shard.
    for (org, _, job) in &writes.deliveries {
        let path = format!("/v1/orgs/{org}/jobs/{job}");
        wait_for("the job to succeed", Duration::from_secs(60), || async {
            let r = app.get(US, &path, OPERATOR_TOKEN).await;
            (r.status == 200 && r.body["status"] == "succeeded").then_some(())
        })
        .await;
    }
    let want: BTreeSet<String> = writes.deliveries.iter().map(|d| d.1.clone()).collect();
    let recorded = wait_for(
        "every delivery to be recorded",
        Duration::from_secs(30),
        || async {
            let got: Vec<String> =
                sqlx::query_scalar("select delivery_id from delivery where org_id = any($1)")
                    .bind(&moved)
                    .fetch_all(&target)
                    .await
                    .unwrap();
            (got.len() == want.len()).then_some(got)
        },
    )
    .await;
    assert_eq!(
        recorded.into_iter().collect::<BTreeSet<_>>(),
        want,
        "no delivery lost or doubled"
    );
    let jobs: Vec<(String, String, i32)> =
        sqlx::query_as("select id, status, attempts from job where org_id = any($1)")
            .bind(&moved)
            .fetch_all(&target)
            .await
            .unwrap();
    assert_eq!(jobs.len(), writes.deliveries.len(), "one job per webhook");
    assert!(jobs.iter().all(|j| j.1 == "succeeded"), "{jobs:?}");
    // One audit row per rule change that was answered 200.
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where org_id = any($1) and action = 'rules.replace'",
    )
    .bind(&moved)
    .fetch_one(&target)
    .await
    .unwrap();
    assert_eq!(
        audited,
        writes.rule_puts.len() as i64,
        "refused (503) then retried: {}",
        writes.refused
    );
    assert_eq!(count(&target, "tenant", &moved).await, 2);
    assert_eq!(count(&target, "tenant", &[stays]).await, 0);

    // The org that stayed works; the source keeps its copy until the operator drops it.
    assert_eq!(
        app.get(US, &format!("/v1/orgs/{stays}/jobs"), OPERATOR_TOKEN)
            .await
            .status,
        200
    );
    assert_eq!(count(&source, "tenant", &moved).await, 2);
    let dropped = control_plane::sharding::moves::drop_source(&app.catalog, &id)
        .await
        .unwrap();
    assert!(dropped > 0);
    for table in ["tenant", "trigger_rule", "job", "delivery", "audit_log"] {
        assert_eq!(count(&source, table, &moved).await, 0, "{table}");
    }
    assert_eq!(count(&source, "tenant", &[stays]).await, 1);
    let fences: i64 = sqlx::query_scalar("select count(*) from range_fence")
        .fetch_one(&source)
        .await
        .unwrap();
    assert_eq!(fences, 0);
    // The moved orgs still work, and write, after the drop.
    let (org, _, key) = &movers[0];
    let r = put_rules(&app, *org, key, &bot_rule()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    target.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_verification_fails_rolls_back_and_changes_nothing() {
    let mut app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let dsn = app.create_empty_db("us1").await;
    add_shard(&app, "us-east-1-1", US, &dsn).await;
    let target = pool(&dsn).await;
    // The target alters what it is given: the copy no longer matches its source.
    sqlx::query(
        "create function corrupt() returns trigger language plpgsql as
         $$ begin new.created_at := new.created_at + interval '1 day'; return new; end $$",
    )
    .execute(&target)
    .await
    .unwrap();
    sqlx::query(
        "create trigger corrupt before insert on tenant for each row execute function corrupt()",
    )
    .execute(&target)
    .await
    .unwrap();

    let r = app
        .post(
            US,
            "/v1/admin/shard-moves",
            OPERATOR_TOKEN,
            json!({"start": org, "end": org + 1, "to_shard": "us-east-1-1"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let done = wait_move(&app, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["phase"], "rolled_back", "{done}");
    assert_eq!(done["verification"]["ok"], false);
    assert_eq!(
        done["verification"]["tables"]["tenant"]["match"], false,
        "{done}"
    );
    assert_eq!(
        done["verification"]["tables"]["trigger_rule"]["match"], true,
        "{done}"
    );
    // Nothing of the org on the target, no fence or trigger left on the source, map unchanged.
    for table in ["tenant", "trigger_rule", "audit_log"] {
        assert_eq!(count(&target, table, &[org]).await, 0, "{table}");
    }
    let source = &app.regions[US].shard;
    let left: (i64, i64) = sqlx::query_as(
        "select (select count(*) from range_fence),
                (select count(*) from pg_trigger where tgname = 'range_fence_guard')",
    )
    .fetch_one(source)
    .await
    .unwrap();
    assert_eq!(left, (0, 0));
    assert_eq!(
        app.regions[US]
            .state
            .shards
            .route(protocol::OrgId(org))
            .unwrap()
            .name,
        "us-east-1-0"
    );
    let r = put_rules(&app, org, OPERATOR_TOKEN, &bot_rule()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A second move of the same range may start again.
    let again = app
        .post(
            US,
            "/v1/admin/shard-moves",
            OPERATOR_TOKEN,
            json!({"start": org, "end": org + 1, "to_shard": "us-east-1-1"}),
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.body);
    wait_move(&app, again.body["id"].as_str().unwrap()).await;
    target.close().await;
}

/// The shard the catalog's ranges give `org` to.
async fn range_owner(app: &TestApp, org: i64) -> String {
    sqlx::query_scalar("select shard from shard_range where range_start <= $1 and range_end > $1")
        .bind(org)
        .fetch_one(&app.catalog)
        .await
        .unwrap()
}

/// An app with an org on `us-east-1-0`, a second shard `us-east-1-1`, and a move of the org
/// there that is planned and not run.
async fn a_planned_move() -> (TestApp, i64, control_plane::sharding::moves::MoveStatus) {
    let mut app = TestApp::spawn().await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let dsn = app.create_empty_db("us1").await;
    add_shard(&app, "us-east-1-1", US, &dsn).await;
    let planned = control_plane::sharding::moves::plan(&app.catalog, org, org + 1, "us-east-1-1")
        .await
        .unwrap();
    (app, org, planned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_runner_died_is_rolled_back_by_recover_and_the_range_can_move_again() {
    use control_plane::sharding::moves::{self, MoveError, Recovered};
    // Planned, never run: as if the process died right after the `202`.
    let (app, org, planned) = a_planned_move().await;
    assert!(matches!(
        moves::plan(&app.catalog, org, org + 1, "us-east-1-1").await,
        Err(MoveError::Busy(_))
    ));
    // Fresh progress means it may still be running: left alone unless forced.
    assert!(matches!(
        moves::recover(&app.catalog, &planned.id, Duration::from_secs(60), false).await,
        Err(MoveError::Busy(_))
    ));
    let done = moves::recover(&app.catalog, &planned.id, Duration::from_secs(60), true)
        .await
        .unwrap();
    assert_eq!(done, Recovered::RolledBack);
    let status = moves::get(&app.catalog, &planned.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.phase, "failed");
    assert!(status.error.unwrap().contains("recover"));
    assert!(matches!(
        moves::recover(&app.catalog, &planned.id, Duration::ZERO, true).await,
        Err(MoveError::Finished(_))
    ));
    // The range is free to move again, and the org is where it was.
    let again = moves::plan(&app.catalog, org, org + 1, "us-east-1-1")
        .await
        .unwrap();
    let ended = moves::run(&app.catalog, &again.id, &|_| {}).await.unwrap();
    assert_eq!(ended.phase, "done", "{ended:?}");
    assert_eq!(range_owner(&app, org).await, "us-east-1-1");
}

/// A runner that lost its lock while verifying (its session ended, and a recovery ended the
/// move meanwhile) must not switch the ranges when it gets to them: the switch re-reads the
/// move's phase in its own transaction and refuses an ended move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_ended_by_another_process_before_its_switch_does_not_switch() {
    use control_plane::sharding::moves;
    let (app, org, planned) = a_planned_move().await;
    let catalog = app.catalog.clone();
    let id = planned.id.clone();
    let ended_by_other = std::sync::atomic::AtomicBool::new(false);
    let progress = |s: &moves::MoveStatus| {
        if s.phase == "verifying" && !ended_by_other.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            // What a recovery that took the move over writes when it is done.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    sqlx::query(
                        "update shard_move set phase = 'failed', finished_at = now() where id = $1",
                    )
                    .bind(&id)
                    .execute(&catalog)
                    .await
                    .unwrap();
                });
            });
        }
    };
    let ended = moves::run(&app.catalog, &planned.id, &progress)
        .await
        .unwrap();
    assert!(
        ended_by_other.load(std::sync::atomic::Ordering::SeqCst),
        "reached verifying"
    );
    assert_eq!(ended.phase, "failed", "{ended:?}");
    assert!(
        ended
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("already ended"),
        "{ended:?}"
    );
    assert_eq!(range_owner(&app, org).await, "us-east-1-0");
    // The org is served from where it was.
    let r = app
        .get(US, &format!("/v1/orgs/{org}"), OPERATOR_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_runner_died_is_rolled_back_by_the_control_plane_on_its_own() {
    use control_plane::sharding::moves::{self, MoveError};
    use sqlx::Connection;
    let (app, org, planned) = a_planned_move().await;
    // A runner that is alive holds the move's runner lock in a session of its own.
    let mut runner = app.catalog.acquire().await.unwrap().detach();
    sqlx::query("select pg_advisory_lock(hashtextextended('shard_move_runner:' || $1, 0))")
        .bind(&planned.id)
        .execute(&mut runner)
        .await
        .unwrap();
    assert!(matches!(
        moves::run(&app.catalog, &planned.id, &|_| {}).await,
        Err(MoveError::Busy(_))
    ));
    // However long it has been quiet, and even when forced, a live runner's move is left alone.
    sqlx::query("update shard_move set updated_at = now() - interval '10 minutes' where id = $1")
        .bind(&planned.id)
        .execute(&app.catalog)
        .await
        .unwrap();
    assert!(matches!(
        moves::recover(&app.catalog, &planned.id, Duration::ZERO, true).await,
        Err(MoveError::Busy(_))
    ));
    assert!(
        moves::recover_abandoned(&app.catalog)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        moves::get(&app.catalog, &planned.id)
            .await
            .unwrap()
            .unwrap()
            .phase,
        "pending"
    );

    // The runner dies: its session ends, and the control planes take the move over.
    runner.close().await.unwrap();
    let status = wait_for(
        "the control plane to roll the move back",
        Duration::from_secs(30),
        || async {
            let s = moves::get(&app.catalog, &planned.id)
                .await
                .unwrap()
                .unwrap();
            s.finished().then_some(s)
        },
    )
    .await;
    assert_eq!(status.phase, "failed");
    assert!(status.error.unwrap().contains("recover"));
    assert_eq!(range_owner(&app, org).await, "us-east-1-0");
}

/// A migration that runs longer than the pools' statement timeout (a delete from a large
/// table, say) still completes: migrations are bounded by the migrate Job's deadline, not by
/// the timeout meant for requests, and the pool keeps its timeout for everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_not_cut_short_by_the_pools_statement_timeout() {
    let mut app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let url = app.create_empty_db("slow_migration").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("0001_slow.sql"),
        "create table slow (id int); select pg_sleep(0.5);",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .options([("statement_timeout", "100")]);
    let timed = || async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .unwrap()
    };

    // Run as the pools' other statements are, the migration is cancelled (its pool is closed
    // then: the migrator leaves its lock held on a connection when a migration fails).
    let plain = timed().await;
    let cut = migrator.run(&plain).await;
    assert!(
        cut.as_ref()
            .is_err_and(|e| e.to_string().contains("statement timeout")),
        "{cut:?}"
    );
    plain.close().await;
    let timed = timed().await;
    control_plane::db::migrate::run(&migrator, &timed)
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&timed)
        .await
        .unwrap();
    assert_eq!(applied, 1);
    let timeout: String = sqlx::query_scalar("show statement_timeout")
        .fetch_one(&timed)
        .await
        .unwrap();
    assert_eq!(
        timeout, "100ms",
        "the pool's connections keep their timeout"
    );
    timed.close().await;
}
