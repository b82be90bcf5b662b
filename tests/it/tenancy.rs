//! Tenancy and identity: onboarding as a saga, members and keys, tokens, RBAC, offboarding,
//! the audit log, and the OpenAPI document.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

pub fn slug() -> String {
    format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn org_body(slug: &str, region: &str) -> Value {
    json!({"slug": slug, "name": "Acme", "region": region, "plan": "team", "owner_email": format!("owner@{slug}.example")})
}

async fn org_count(app: &TestApp, slug: &str) -> i64 {
    sqlx::query_scalar("select count(*) from org where slug = $1")
        .bind(slug)
        .fetch_one(&app.catalog)
        .await
        .unwrap()
}

/// Clients that hang up mid-request (a timeout, a closed laptop) never leave a half-created
/// org: the saga runs to its end, or compensates, whatever happens to the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_cut_off_by_the_client_leaves_no_half_created_org() {
    let app = TestApp::spawn().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(3))
        .build()
        .unwrap();
    let mut cut = 0;
    for i in 0..40 {
        let slug = format!(
            "cut-{i}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let sent = impatient
            .post(app.url(US, "/v1/orgs"))
            .bearer_auth(OPERATOR_TOKEN)
            .json(
                &json!({"slug": slug, "name": "Cut", "region": US, "plan": "team",
                          "owner_email": format!("o@{slug}.example")}),
            )
            .send()
            .await;
        cut += usize::from(sent.is_err());
    }
    assert!(cut > 0, "some requests were cut off");
    let shard = &app.regions[US].shard;
    wait_for("every saga to end", Duration::from_secs(30), || async {
        let creating: i64 =
            sqlx::query_scalar("select count(*) from org where status = 'creating'")
                .fetch_one(&app.catalog)
                .await
                .unwrap();
        (creating == 0).then_some(())
    })
    .await;
    let active: Vec<i64> = sqlx::query_scalar("select id from org where status = 'active'")
        .fetch_all(&app.catalog)
        .await
        .unwrap();
    let tenants: Vec<i64> = sqlx::query_scalar("select org_id from tenant order by org_id")
        .fetch_all(shard)
        .await
        .unwrap();
    let mut active_sorted = active.clone();
    active_sorted.sort_unstable();
    assert_eq!(
        tenants, active_sorted,
        "a tenant row for every active org, and only for them"
    );
}

/// An onboarding whose process stopped mid-saga (a crash between two steps) is compensated by
/// the reaper once it is stale; fresh ones and finished orgs are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_left_half_created_by_a_stopped_process_are_reaped() {
    use control_plane::db::orgs::place;
    use control_plane::tenancy::onboarding::{STALE_AFTER, reap_stale};
    let app = TestApp::spawn().await;
    let active = app.create_org(US).await["id"].as_i64().unwrap();
    let (stale, _) = place(&app.catalog, "stale-one", "Stale", US, "team")
        .await
        .unwrap();
    let (fresh, _) = place(&app.catalog, "fresh-one", "Fresh", US, "team")
        .await
        .unwrap();
    let shard = &app.regions[US].shard;
    for id in [stale.id, fresh.id] {
        sqlx::query("insert into tenant (org_id, slug) values ($1, 'x')")
            .bind(id)
            .execute(shard)
            .await
            .unwrap();
    }
    sqlx::query("update org set created_at = now() - interval '1 hour' where id = $1")
        .bind(stale.id)
        .execute(&app.catalog)
        .await
        .unwrap();
    let state = &app.regions[US].state;
    let removed = reap_stale(&app.catalog, &state.shards, US, STALE_AFTER)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let left: Vec<(i64, String)> = sqlx::query_as("select id, status from org order by id")
        .fetch_all(&app.catalog)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![
            (active, "active".to_owned()),
            (fresh.id, "creating".to_owned())
        ]
    );
    let tenants: Vec<i64> = sqlx::query_scalar("select org_id from tenant order by org_id")
        .fetch_all(shard)
        .await
        .unwrap();
    assert_eq!(tenants, vec![active, fresh.id]);
    let compensated: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where org_id = $1 and action = 'org.create.compensated'",
    )
    .bind(stale.id)
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(compensated, 1);
    // The slug is free again.
    let (again, _) = place(&app.catalog, "stale-one", "Again", US, "team")
        .await
        .unwrap();
    assert_ne!(again.id, stale.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shard_step_undoes_the_catalog_row_and_the_slug_stays_free() {
    let app = TestApp::spawn().await;
    let shard = &app.regions[US].shard;
    let s = slug();
    // Make the shard step fail for this slug only.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create function fail_tenant() returns trigger language plpgsql as $$
         begin if new.slug = '{s}' then raise exception 'injected shard failure'; end if; return new; end $$;
         create trigger fail_tenant before insert on tenant for each row execute function fail_tenant();"
    )))
    .execute(shard)
    .await
    .unwrap();
    let r = app
        .post(US, "/v1/orgs", OPERATOR_TOKEN, org_body(&s, US))
        .await;
    r.assert_problem(500);
    assert!(
        !r.body.to_string().contains("injected"),
        "no internals leak: {}",
        r.body
    );
    assert_eq!(
        org_count(&app, &s).await,
        0,
        "the catalog row was compensated"
    );
    let users: i64 = sqlx::query_scalar("select count(*) from app_user where email = $1")
        .bind(format!("owner@{s}.example"))
        .fetch_one(&app.catalog)
        .await
        .unwrap();
    assert_eq!(users, 0, "the owner step never ran");
    let tenants: i64 = sqlx::query_scalar("select count(*) from tenant where slug = $1")
        .bind(&s)
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(tenants, 0);

    sqlx::query("drop trigger fail_tenant on tenant")
        .execute(shard)
        .await
        .unwrap();
    let r = app
        .post(US, "/v1/orgs", OPERATOR_TOKEN, org_body(&s, US))
        .await;
    assert_eq!(r.status, 201, "the slug is free again: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_owner_step_undoes_the_shard_rows_and_the_catalog_row() {
    let app = TestApp::spawn().await;
    let s = slug();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "create function fail_member() returns trigger language plpgsql as $$
         begin if exists (select 1 from org where id = new.org_id and slug = '{s}') then
             raise exception 'injected catalog failure'; end if; return new; end $$;
         create trigger fail_member before insert on membership for each row execute function fail_member();"
    )))
    .execute(&app.catalog)
    .await
    .unwrap();
    let r = app
        .post(US, "/v1/orgs", OPERATOR_TOKEN, org_body(&s, US))
        .await;
    r.assert_problem(500);
    assert_eq!(org_count(&app, &s).await, 0);
    let shard = &app.regions[US].shard;
    let tenants: i64 = sqlx::query_scalar("select count(*) from tenant where slug = $1")
        .bind(&s)
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(tenants, 0, "the shard rows were compensated");
    let rules: i64 = sqlx::query_scalar("select count(*) from trigger_rule r where not exists (select 1 from tenant t where t.org_id = r.org_id)")
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(rules, 0);
    // The audit log keeps both what was tried and that it was undone.
    let actions: Vec<String> = sqlx::query_scalar("select action from audit_log where target = $1 or action = 'org.create.compensated' order by id")
        .bind(&s)
        .fetch_all(shard)
        .await
        .unwrap();
    assert_eq!(actions, ["org.create", "org.create.compensated"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_result_without_the_secret() {
    let app = TestApp::spawn().await;
    let s = slug();
    let send = |body: Value, key: &'static str| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(app.url(US, "/v1/orgs"))
                .bearer_auth(OPERATOR_TOKEN)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (st1, rep1, first) = send(org_body(&s, US), "key-1").await;
    let (st2, rep2, second) = send(org_body(&s, US), "key-1").await;
    assert_eq!((st1, rep1), (201, false));
    assert_eq!((st2, rep2), (201, true));
    assert_eq!(first["id"], second["id"]);
    assert!(first["api_key"].is_string());
    assert!(second["api_key"].is_null(), "secrets are shown once");
    assert_eq!(org_count(&app, &s).await, 1);
    let mut other = org_body(&s, US);
    other["name"] = json!("Other");
    let (st3, _, problem) = send(other, "key-1").await;
    assert_eq!(st3, 422, "{problem}");
}

/// Bad input of every kind is a 4xx problem, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let before: i64 = sqlx::query_scalar("select count(*) from org")
        .fetch_one(&app.catalog)
        .await
        .unwrap();
    let long_unicode = "ü".repeat(200);
    let cases: Vec<(Value, u16)> = vec![
        (json!({"slug": "ok-slug", "name": "A"}), 422),
        (
            json!({"slug": 42, "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "'; drop table org; --", "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "Robert'); DROP TABLE", "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "a\u{0}b", "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "line\nbreak", "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": long_unicode, "region": US, "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "A", "region": "mars-1", "plan": "team", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "A", "region": US, "plan": "platinum", "owner_email": "a@b.example"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "A", "region": US, "plan": "team", "owner_email": "not-an-email"}),
            422,
        ),
        (
            json!({"slug": "okay-slug", "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example", "admin": true}),
            422,
        ),
        (json!(["not", "an", "object"]), 422),
        (json!(null), 422),
    ];
    for (body, status) in cases {
        let r = app.post(US, "/v1/orgs", OPERATOR_TOKEN, body.clone()).await;
        r.assert_problem(status);
        assert!(
            !r.body.to_string().to_lowercase().contains("sql"),
            "{body}: {}",
            r.body
        );
    }
    // Not JSON at all, and the wrong media type.
    for (ct, body, status) in [
        ("application/json", "{\"slug\": ", 400),
        ("application/json", "{} {}", 400),
        ("text/plain", "{}", 415),
    ] {
        let r = app
            .http
            .post(app.url(US, "/v1/orgs"))
            .bearer_auth(OPERATOR_TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{ct} {body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // Over the 1 MiB API body limit.
    let huge = json!({"slug": "a".repeat(2 << 20), "name": "A", "region": US, "plan": "team", "owner_email": "a@b.example"});
    let r = app.post(US, "/v1/orgs", OPERATOR_TOKEN, huge).await;
    r.assert_problem(413);
    // The body was left unread: the server says it closes the connection, so the
    // client does not send the next request on it.
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
    let after: i64 = sqlx::query_scalar("select count(*) from org")
        .fetch_one(&app.catalog)
        .await
        .unwrap();
    assert_eq!(before, after, "nothing was stored");
    // A long unicode name within the limit is stored as it is.
    let mut ok = org_body(&slug(), US);
    ok["name"] = json!("Société Générale 🚀 ".repeat(4).trim().to_owned());
    let r = app.post(US, "/v1/orgs", OPERATOR_TOKEN, ok.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["name"], ok["name"]);
}

/// An org with one credential per role, plus the operator.
pub struct Roles {
    pub org: i64,
    pub owner: String,
    pub keys: Vec<(&'static str, String)>,
}

pub async fn org_with_roles(app: &TestApp, region: &'static str) -> Roles {
    let org = app.create_org(region).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let mut keys = vec![("owner", owner.clone())];
    for role in ["admin", "billing", "developer", "viewer"] {
        let r = app
            .post(
                region,
                &format!("/v1/orgs/{id}/members"),
                &owner,
                json!({"email": format!("{role}@x.example"), "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        keys.push((role, r.body["api_key"].as_str().unwrap().to_owned()));
    }
    Roles {
        org: id,
        owner,
        keys,
    }
}

async fn token_for(app: &TestApp, region: &str, key: &str) -> String {
    let r = app
        .call(
            Method::POST,
            region,
            "/v1/auth/token",
            None,
            Some(json!({"api_key": key})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_in"].as_u64().unwrap() <= 900);
    r.body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_changed_and_removed_by_the_rules() {
    let app = TestApp::spawn().await;
    let roles = org_with_roles(&app, US).await;
    let org = roles.org;
    let admin = roles.keys[1].1.clone();
    let members = app
        .get(US, &format!("/v1/orgs/{org}/members"), &admin)
        .await;
    assert_eq!(members.status, 200);
    assert_eq!(members.body["items"].as_array().unwrap().len(), 5);
    let owner_id = members.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "owner")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Only an owner grants owner.
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/members"),
            &admin,
            json!({"email": "boss@x.example", "role": "owner"}),
        )
        .await;
    r.assert_problem(403);
    // The same user twice is a conflict.
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/members"),
            &roles.owner,
            json!({"email": "ADMIN@x.example", "role": "viewer"}),
        )
        .await;
    r.assert_problem(409);
    // An admin can neither demote nor remove an owner.
    let path = format!("/v1/orgs/{org}/members/{owner_id}");
    app.call(
        Method::PATCH,
        US,
        &path,
        Some(&admin),
        Some(json!({"role": "viewer"})),
    )
    .await
    .assert_problem(403);
    app.call(Method::DELETE, US, &path, Some(&admin), None)
        .await
        .assert_problem(403);
    // The last owner can be neither demoted nor removed, even by themselves.
    app.call(
        Method::PATCH,
        US,
        &path,
        Some(&roles.owner),
        Some(json!({"role": "admin"})),
    )
    .await
    .assert_problem(409);
    app.call(Method::DELETE, US, &path, Some(&roles.owner), None)
        .await
        .assert_problem(409);
    // With a second owner, the first may step down.
    let second = app
        .post(
            US,
            &format!("/v1/orgs/{org}/members"),
            &roles.owner,
            json!({"email": "co@x.example", "role": "owner"}),
        )
        .await;
    assert_eq!(second.status, 201);
    let r = app
        .call(
            Method::PATCH,
            US,
            &path,
            Some(&roles.owner),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["role"], "admin");
    // The demotion took effect on the very next request: no more owner-only actions.
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/members"),
            &roles.owner,
            json!({"email": "x2@x.example", "role": "owner"}),
        )
        .await;
    r.assert_problem(403);
    // Removing a member kills their key at once.
    let viewer = roles.keys[4].1.clone();
    let viewer_id = app
        .get(US, &format!("/v1/orgs/{org}/members?limit=500"), &admin)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "viewer")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(US, &format!("/v1/orgs/{org}"), &viewer)
            .await
            .status,
        200
    );
    let r = app
        .call(
            Method::DELETE,
            US,
            &format!("/v1/orgs/{org}/members/{viewer_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.get(US, &format!("/v1/orgs/{org}"), &viewer)
        .await
        .assert_problem(401);
    // Promoting takes effect at once too.
    let dev = roles.keys[3].1.clone();
    app.get(US, &format!("/v1/orgs/{org}/api-keys"), &dev)
        .await
        .assert_problem(403);
    let dev_id = app
        .get(US, &format!("/v1/orgs/{org}/members"), &admin)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "developer")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            Method::PATCH,
            US,
            &format!("/v1/orgs/{org}/members/{dev_id}"),
            Some(&admin),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        app.get(US, &format!("/v1/orgs/{org}/api-keys"), &dev)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shown_once_stored_hashed_and_die_when_revoked_with_their_tokens() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{id}/api-keys"),
            &owner,
            json!({"name": "ci", "role": "developer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["api_key"].as_str().unwrap().to_owned();
    let key_id = r.body["id"].as_str().unwrap().to_owned();
    let list = app
        .get(US, &format!("/v1/orgs/{id}/api-keys"), &owner)
        .await;
    assert!(
        !list.body.to_string().contains(&key[14..]),
        "no secret in listings"
    );
    let stored: Vec<u8> = sqlx::query_scalar("select secret_hash from api_key where id = $1")
        .bind(&key_id)
        .fetch_one(&app.catalog)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    let dump: String =
        sqlx::query_scalar("select string_agg(row_to_json(k)::text, '') from api_key k")
            .fetch_one(&app.catalog)
            .await
            .unwrap();
    assert!(
        !dump.contains(&key[14..]),
        "the secret is nowhere in the table"
    );

    let token = token_for(&app, US, &key).await;
    assert_eq!(
        app.get(US, &format!("/v1/orgs/{id}"), &key).await.status,
        200
    );
    assert_eq!(
        app.get(US, &format!("/v1/orgs/{id}"), &token).await.status,
        200
    );
    let r = app
        .call(
            Method::DELETE,
            US,
            &format!("/v1/orgs/{id}/api-keys/{key_id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.get(US, &format!("/v1/orgs/{id}"), &key)
        .await
        .assert_problem(401);
    app.get(US, &format!("/v1/orgs/{id}"), &token)
        .await
        .assert_problem(401);
    app.call(
        Method::POST,
        US,
        "/v1/auth/token",
        None,
        Some(json!({"api_key": key})),
    )
    .await
    .assert_problem(401);
    // Only an owner issues an owner key.
    let admin = app
        .post(
            US,
            &format!("/v1/orgs/{id}/members"),
            &owner,
            json!({"email": "a@x.example", "role": "admin"}),
        )
        .await
        .body["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post(
        US,
        &format!("/v1/orgs/{id}/api-keys"),
        &admin,
        json!({"name": "x", "role": "owner"}),
    )
    .await
    .assert_problem(403);
    assert_eq!(
        app.post(
            US,
            &format!("/v1/orgs/{id}/api-keys"),
            &admin,
            json!({"name": "x", "role": "admin"})
        )
        .await
        .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_eddsa_with_a_published_kid_and_a_short_life() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await;
    let token = token_for(&app, US, org["api_key"].as_str().unwrap()).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 900);
    assert_eq!(claims["iss"], "switchyard");
    assert_eq!(claims["aud"], "switchyard-api");
    let jwks = app
        .call(Method::GET, US, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.status, 200);
    let keys = jwks.body["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["kid"] == header["kid"] && k["kty"] == "OKP" && k["crv"] == "Ed25519")
    );
    // Another region's control plane (same keys) accepts it: tokens are global.
    let eu_org = app.create_org(EU).await;
    let eu_token = token_for(&app, EU, eu_org["api_key"].as_str().unwrap()).await;
    let r = app
        .get(US, &format!("/v1/orgs/{}", eu_org["id"]), &eu_token)
        .await;
    assert_eq!(r.status, 307, "authenticated in us, redirected home to eu");
    // The operator token is not an API key.
    app.call(
        Method::POST,
        US,
        "/v1/auth/token",
        None,
        Some(json!({"api_key": OPERATOR_TOKEN})),
    )
    .await
    .assert_problem(422);
}

/// Forged and broken credentials, each of which must be a 401.
fn broken_credentials(valid_token: &str, revoked_key: &str) -> Vec<(&'static str, String)> {
    let parts: Vec<&str> = valid_token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": header["kid"]})),
        parts[1]
    );
    let mut hs_header = header.clone();
    hs_header["alg"] = json!("HS256");
    let hs = format!("{}.{}.{}", b64(&hs_header), parts[1], parts[2]);
    let tampered = {
        claims["org"] = json!(claims["org"].as_i64().unwrap() + 1);
        format!("{}.{}.{}", parts[0], b64(&claims), parts[2])
    };
    // Signed correctly, by a key nobody published.
    let foreign = {
        let pair = control_plane::tenancy::jwt::generate_pem();
        let cfg = control_plane::config::JwtConfig {
            issuer: "switchyard".into(),
            audience: "switchyard-api".into(),
            ttl: Duration::from_secs(600),
            signing_key: Some(secrecy::SecretString::from(pair.private_pem)),
            signing_kid: header["kid"].as_str().unwrap().to_owned(),
            verify_keys: vec![],
        };
        let keys = control_plane::tenancy::jwt::JwtKeys::from_config(&cfg).unwrap();
        keys.issue(
            claims["sub"].as_str().unwrap().trim_start_matches("key:"),
            protocol::OrgId(claims["org"].as_i64().unwrap() - 1),
        )
        .unwrap()
    };
    // Expired: made with the test's own signing key, an hour old.
    let expired = {
        let key =
            jsonwebtoken::EncodingKey::from_ed_pem(signing_key().private_pem.as_bytes()).unwrap();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some("test-1".into());
        let now = jsonwebtoken::get_current_timestamp();
        let mut c: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        c["iat"] = json!(now - 3600);
        c["nbf"] = json!(now - 3600);
        c["exp"] = json!(now - 2700);
        jsonwebtoken::encode(&h, &c, &key).unwrap()
    };
    vec![
        ("expired JWT", expired),
        ("JWT signed by an unknown key", foreign),
        ("alg none", none),
        ("alg confusion (HS256)", hs),
        ("tampered payload", tampered),
        ("revoked API key", revoked_key.to_owned()),
        ("garbage", "not-a-credential".to_owned()),
    ]
}

/// One endpoint of the matrix: how to call it in an org (setting up a fresh target with the
/// operator's token when it consumes one) and which roles may.
struct Endpoint {
    name: &'static str,
    allowed: &'static [&'static str],
    /// Success status for an allowed caller.
    ok: u16,
}

const ALL: &[&str] = &["owner", "admin", "billing", "developer", "viewer"];

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "GET org",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "PATCH org name",
            allowed: &["owner", "admin"],
            ok: 200,
        },
        Endpoint {
            name: "PATCH org plan",
            allowed: &["owner", "billing"],
            ok: 200,
        },
        Endpoint {
            name: "GET members",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "POST members",
            allowed: &["owner", "admin"],
            ok: 201,
        },
        Endpoint {
            name: "PATCH member",
            allowed: &["owner", "admin"],
            ok: 200,
        },
        Endpoint {
            name: "DELETE member",
            allowed: &["owner", "admin"],
            ok: 204,
        },
        Endpoint {
            name: "GET api-keys",
            allowed: &["owner", "admin"],
            ok: 200,
        },
        Endpoint {
            name: "POST api-keys",
            allowed: &["owner", "admin"],
            ok: 201,
        },
        Endpoint {
            name: "DELETE api-key",
            allowed: &["owner", "admin"],
            ok: 204,
        },
        Endpoint {
            name: "GET audit-log",
            allowed: &["owner", "admin"],
            ok: 200,
        },
        Endpoint {
            name: "GET installations",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "POST installations",
            allowed: &["owner", "admin"],
            ok: 201,
        },
        Endpoint {
            name: "GET jobs",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "GET job",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "GET usage",
            allowed: &["owner", "admin", "billing"],
            ok: 200,
        },
        Endpoint {
            name: "GET invoices",
            allowed: &["owner", "billing"],
            ok: 200,
        },
        Endpoint {
            name: "GET invoice",
            allowed: &["owner", "billing"],
            ok: 200,
        },
        Endpoint {
            name: "GET rules",
            allowed: ALL,
            ok: 200,
        },
        Endpoint {
            name: "PUT rules",
            allowed: &["owner", "admin", "developer"],
            ok: 200,
        },
        Endpoint {
            name: "DELETE org",
            allowed: &["owner"],
            ok: 200,
        },
    ]
}

/// Sends `endpoint` in `org` with `cred` (setting up targets as the operator).
async fn call_endpoint(app: &TestApp, name: &str, org: i64, job: &str, cred: Option<&str>) -> Resp {
    let base = format!("/v1/orgs/{org}");
    let uniq = uuid::Uuid::new_v4().simple().to_string();
    let fresh_member = || async {
        let r = app
            .post(
                US,
                &format!("{base}/members"),
                OPERATOR_TOKEN,
                json!({"email": format!("{uniq}@t.example"), "role": "viewer"}),
            )
            .await;
        r.body["user_id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "usr_missing".into())
    };
    let (method, path, body) = match name {
        "GET org" => (Method::GET, base.clone(), None),
        "PATCH org name" => (
            Method::PATCH,
            base.clone(),
            Some(json!({"name": "Renamed"})),
        ),
        "PATCH org plan" => (
            Method::PATCH,
            base.clone(),
            Some(json!({"plan": "enterprise"})),
        ),
        "GET members" => (Method::GET, format!("{base}/members"), None),
        "POST members" => (
            Method::POST,
            format!("{base}/members"),
            Some(json!({"email": format!("{uniq}@n.example"), "role": "viewer"})),
        ),
        "PATCH member" => (
            Method::PATCH,
            format!("{base}/members/{}", fresh_member().await),
            Some(json!({"role": "developer"})),
        ),
        "DELETE member" => (
            Method::DELETE,
            format!("{base}/members/{}", fresh_member().await),
            None,
        ),
        "GET api-keys" => (Method::GET, format!("{base}/api-keys"), None),
        "POST api-keys" => (
            Method::POST,
            format!("{base}/api-keys"),
            Some(json!({"name": "k", "role": "viewer"})),
        ),
        "DELETE api-key" => {
            let r = app
                .post(
                    US,
                    &format!("{base}/api-keys"),
                    OPERATOR_TOKEN,
                    json!({"name": "victim", "role": "viewer"}),
                )
                .await;
            let id = r.body["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| "key_missing".into());
            (Method::DELETE, format!("{base}/api-keys/{id}"), None)
        }
        "GET audit-log" => (Method::GET, format!("{base}/audit-log"), None),
        "GET installations" => (Method::GET, format!("{base}/github/installations"), None),
        "POST installations" => (
            Method::POST,
            format!("{base}/github/installations"),
            Some(json!({"installation_id": new_installation()})),
        ),
        "GET jobs" => (Method::GET, format!("{base}/jobs"), None),
        "GET job" => (Method::GET, format!("{base}/jobs/{job}"), None),
        "GET usage" => (Method::GET, format!("{base}/usage"), None),
        "GET invoices" => (Method::GET, format!("{base}/invoices"), None),
        "GET invoice" => (
            Method::GET,
            format!("{base}/invoices/{}", chrono::Utc::now().format("%Y-%m")),
            None,
        ),
        "GET rules" => (Method::GET, format!("{base}/rules"), None),
        "PUT rules" => (
            Method::PUT,
            format!("{base}/rules"),
            Some(
                json!([{"id": "bot", "event": "issues", "action": "labeled", "label": "bot", "kind": "agent"}]),
            ),
        ),
        "DELETE org" => (Method::DELETE, base.clone(), None),
        other => panic!("unknown endpoint {other}"),
    };
    app.call(method, US, &path, cred, body).await
}

/// A fresh org with a job, and its credentials (keys and tokens of every role).
async fn matrix_org(app: &TestApp) -> (Roles, String, Vec<(String, String)>) {
    let roles = org_with_roles(app, US).await;
    let inst = new_installation();
    app.bind_installation(US, roles.org, inst).await;
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    let job = r.body["jobs"][0].as_str().unwrap().to_owned();
    let shard = &app.regions[US].shard;
    wait_for("the job row", Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from job where id = $1")
            .bind(&job)
            .fetch_one(shard)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let mut creds = Vec::new();
    for (role, key) in &roles.keys {
        creds.push(((*role).to_owned(), key.clone()));
        creds.push(((*role).to_owned(), token_for(app, US, key).await));
    }
    (roles, job, creds)
}

/// Every endpoint × every role (key and token) × {own org, another org}, every broken
/// credential, and the operator: the status the contract prescribes, and no change to the
/// other org.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds() {
    let app = TestApp::spawn().await;
    let (mine, my_job, my_creds) = matrix_org(&app).await;
    let (theirs, their_job, _) = matrix_org(&app).await;
    let theirs_before = snapshot(&app, theirs.org).await;

    // Broken credentials, made from a real token and a real, then revoked, key.
    let victim = app
        .post(
            US,
            &format!("/v1/orgs/{}/api-keys", mine.org),
            &mine.owner,
            json!({"name": "revoked", "role": "owner"}),
        )
        .await;
    let revoked = victim.body["api_key"].as_str().unwrap().to_owned();
    let token = token_for(&app, US, &mine.owner).await;
    app.call(
        Method::DELETE,
        US,
        &format!(
            "/v1/orgs/{}/api-keys/{}",
            mine.org,
            victim.body["id"].as_str().unwrap()
        ),
        Some(&mine.owner),
        None,
    )
    .await;
    let broken = broken_credentials(&token, &revoked);

    for ep in endpoints() {
        // Destructive calls get an org of their own so the rest of the matrix keeps working.
        for (role, cred) in &my_creds {
            let (org, job) = if ep.name == "DELETE org" {
                let fresh = org_with_roles(&app, US).await;
                let key = fresh
                    .keys
                    .iter()
                    .find(|(r, _)| r == role)
                    .unwrap()
                    .1
                    .clone();
                let r = call_endpoint(&app, ep.name, fresh.org, "none", Some(&key)).await;
                let want = if ep.allowed.contains(&role.as_str()) {
                    ep.ok
                } else {
                    403
                };
                assert_eq!(r.status, want, "{} as {role}: {}", ep.name, r.body);
                continue;
            } else {
                (mine.org, my_job.as_str())
            };
            let r = call_endpoint(&app, ep.name, org, job, Some(cred)).await;
            let want = if ep.allowed.contains(&role.as_str()) {
                ep.ok
            } else {
                403
            };
            assert_eq!(
                r.status, want,
                "{} as {role} in its own org: {}",
                ep.name, r.body
            );
            if want == 403 {
                r.assert_problem(403);
            }
            // Another org's resource is "not found", whatever the role.
            let r = call_endpoint(&app, ep.name, theirs.org, &their_job, Some(cred)).await;
            r.assert_problem(404);
        }
        for (what, cred) in &broken {
            let r = call_endpoint(&app, ep.name, mine.org, &my_job, Some(cred)).await;
            assert_eq!(r.status, 401, "{} with {what}: {}", ep.name, r.body);
        }
        let r = call_endpoint(&app, ep.name, mine.org, &my_job, None).await;
        r.assert_problem(401);
        if ep.name != "DELETE org" {
            let r =
                call_endpoint(&app, ep.name, theirs.org, &their_job, Some(OPERATOR_TOKEN)).await;
            assert_eq!(r.status, ep.ok, "{} as the operator: {}", ep.name, r.body);
        }
    }
    // Platform endpoints: the operator only.
    for (role, cred) in &my_creds {
        app.get(US, "/v1/admin/regions", cred)
            .await
            .assert_problem(403);
        let r = app.post(US, "/v1/orgs", cred, org_body(&slug(), US)).await;
        r.assert_problem(403);
        let _ = role;
    }
    assert_eq!(
        app.get(US, "/v1/admin/regions", OPERATOR_TOKEN)
            .await
            .status,
        200
    );

    // The other org saw nothing but the operator's own calls.
    let theirs_after = snapshot(&app, theirs.org).await;
    let foreign_actors: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where org_id = $1 and actor not in ('operator') and actor not like $2",
    )
    .bind(theirs.org)
    .bind("user:%")
    .fetch_one(&app.regions[US].shard)
    .await
    .unwrap();
    assert_eq!(foreign_actors, 0);
    assert_eq!(
        theirs_before.0, theirs_after.0,
        "their org row changed only by the operator's PATCHes"
    );
    let _ = theirs_before;
}

/// The other org's rows that a member of `mine` could have touched.
async fn snapshot(app: &TestApp, org: i64) -> (i64, i64) {
    let shard = &app.regions[US].shard;
    let jobs: i64 = sqlx::query_scalar("select count(*) from job where org_id = $1")
        .bind(org)
        .fetch_one(shard)
        .await
        .unwrap();
    let rules: i64 = sqlx::query_scalar("select count(*) from trigger_rule where org_id = $1")
        .bind(org)
        .fetch_one(shard)
        .await
        .unwrap();
    (jobs, rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_stops_jobs_cancels_the_queue_and_keeps_the_data() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let org = app.create_org(US).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let inst = new_installation();
    app.bind_installation(US, id, inst).await;
    for _ in 0..3 {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
            .await;
        assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1);
    }
    let shard = &app.regions[US].shard;
    wait_for("three queued jobs", Duration::from_secs(10), || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from job where org_id = $1 and status = 'queued'")
                .bind(id)
                .fetch_one(shard)
                .await
                .unwrap();
        (n == 3).then_some(())
    })
    .await;
    let r = app
        .call(
            Method::DELETE,
            US,
            &format!("/v1/orgs/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "deleted");
    // Queued jobs are cancelled, each with its event.
    let jobs = app.get(US, &format!("/v1/orgs/{id}/jobs"), &owner).await;
    assert_eq!(jobs.status, 200, "data stays readable");
    let statuses: Vec<&str> = jobs.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled"; 3]);
    // Webhooks make no more jobs.
    let r = app
        .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["jobs"], json!([]));
    // Writes are refused; deleting again is harmless.
    app.call(
        Method::PATCH,
        US,
        &format!("/v1/orgs/{id}"),
        Some(&owner),
        Some(json!({"name": "x"})),
    )
    .await
    .assert_problem(409);
    assert_eq!(
        app.call(
            Method::DELETE,
            US,
            &format!("/v1/orgs/{id}"),
            Some(&owner),
            None
        )
        .await
        .status,
        200
    );
    let tenant: i64 = sqlx::query_scalar("select count(*) from tenant where org_id = $1")
        .bind(id)
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(tenant, 1, "data is kept for the retention period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_admin_actions_and_cannot_be_rewritten() {
    let app = TestApp::spawn().await;
    let org = app.create_org(US).await;
    let id = org["id"].as_i64().unwrap();
    let owner = org["api_key"].as_str().unwrap().to_owned();
    let added = app
        .post(
            US,
            &format!("/v1/orgs/{id}/members"),
            &owner,
            json!({"email": "dev@x.example", "role": "developer"}),
        )
        .await;
    let uid = added.body["user_id"].as_str().unwrap().to_owned();
    app.call(
        Method::PATCH,
        US,
        &format!("/v1/orgs/{id}/members/{uid}"),
        Some(&owner),
        Some(json!({"role": "admin"})),
    )
    .await;
    app.call(
        Method::PATCH,
        US,
        &format!("/v1/orgs/{id}"),
        Some(&owner),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    let key = app
        .post(
            US,
            &format!("/v1/orgs/{id}/api-keys"),
            &owner,
            json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    app.call(
        Method::DELETE,
        US,
        &format!(
            "/v1/orgs/{id}/api-keys/{}",
            key.body["id"].as_str().unwrap()
        ),
        Some(&owner),
        None,
    )
    .await;
    app.bind_installation(US, id, new_installation()).await;

    let log = app
        .get(US, &format!("/v1/orgs/{id}/audit-log"), &owner)
        .await;
    assert_eq!(log.status, 200);
    let actions: Vec<&str> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "installation.bind",
            "api_key.revoke",
            "api_key.create",
            "org.update",
            "member.role",
            "member.add",
            "org.create"
        ]
    );
    let role_change = &log.body["items"][4];
    assert_eq!(role_change["target"], uid.as_str());
    assert_eq!(
        role_change["details"],
        json!({"from": "developer", "to": "admin"})
    );
    assert!(role_change["actor"].as_str().unwrap().starts_with("user:"));
    assert!(role_change["request_id"].is_string());
    // Page through it.
    let page = app
        .get(US, &format!("/v1/orgs/{id}/audit-log?limit=3"), &owner)
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 3);
    let next = page.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            US,
            &format!("/v1/orgs/{id}/audit-log?cursor={next}"),
            &owner,
        )
        .await;
    assert_eq!(rest.body["items"][0]["action"], "org.update");

    let shard = &app.regions[US].shard;
    for sql in [
        "update audit_log set actor = 'x'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(shard)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// The OpenAPI document and the router agree: every documented path and method is served,
/// and no other method on those paths is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let app = TestApp::spawn().await;
    let doc = app.call(Method::GET, US, "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc.body["paths"].as_object().unwrap();
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{org}", "1000001")
            .replace("{id}", "x")
            .replace("{user_id}", "u");
        for m in methods {
            let documented = item.get(m).is_some();
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = app.call(method, US, &concrete, None, None).await;
            if documented {
                assert_ne!(r.status, 405, "{m} {path} is documented but not served");
                checked += 1;
            } else {
                assert_eq!(
                    r.status, 405,
                    "{m} {path} is served but not documented (got {})",
                    r.status
                );
            }
        }
    }
    for expected in [
        "/v1/orgs",
        "/v1/orgs/{org}/members/{user_id}",
        "/webhooks/github",
        "/v1/auth/token",
        "/.well-known/jwks.json",
        "/healthz",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the document"
        );
    }
    assert!(checked >= 20, "only {checked} operations");
}
