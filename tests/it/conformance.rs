//! The GitHub emulator against GitHub's own REST description (npm `@octokit/openapi`, the
//! api.github.com document): every REST route the emulator serves is an operation there, and
//! every answer it gives in a run through all of them — status, JSON body, documented and
//! rate-limit headers — is one the description documents for that operation. Every mismatch
//! is reported at once.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value, json};
use switchyard_tests::emulator::{Emulator, EmulatorConfig};
use switchyard_tests::fixtures::rest_description;
use tokio::net::TcpListener;

use crate::helpers::*;

/// Rate-limit headers GitHub sends that the REST description does not list (docs.github.com
/// documents them on its rate-limit page): allowed beside the documented ones.
const UNLISTED_RATE_HEADERS: &[&str] = &["x-ratelimit-used", "x-ratelimit-resource"];

/// Documented response headers GitHub sends only sometimes: `Link` when there is another page.
const CONDITIONAL_HEADERS: &[&str] = &["link"];

/// The schema conversion itself: GitHub's own examples of the answers the emulator gives pass
/// it, and answers that break the description do not.
#[test]
fn githubs_examples_pass_the_converted_schemas_and_broken_answers_do_not() {
    let doc = rest_description();
    let mut mismatches = Vec::new();
    let mut examples = 0;
    for (method, path) in Emulator::rest_routes() {
        let Some(op) = operation(doc, &method, path) else {
            continue;
        };
        for (status, resp) in op["responses"].as_object().into_iter().flatten() {
            let media = &deref(doc, resp)["content"]["application/json"];
            let Some(schema) = media.get("schema") else {
                continue;
            };
            for (name, example) in media["examples"].as_object().into_iter().flatten() {
                let Some(value) = deref(doc, example).get("value") else {
                    continue;
                };
                // `null` stands for "no body" in GitHub's examples of bodiless answers.
                if value.is_null() && schema.get("nullable").is_none() {
                    continue;
                }
                examples += 1;
                let what = format!("{method} {path} → {status}: GitHub's example {name}");
                validate(doc, schema, value, &what, &mut mismatches);
            }
        }
    }
    assert!(examples >= 5, "only {examples} examples found");
    assert!(
        mismatches.is_empty(),
        "{} of GitHub's examples fail:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let errors = |name: &str, v: &Value| {
        let mut out = Vec::new();
        validate(doc, &schema(name), v, name, &mut out);
        out
    };
    assert!(errors("nullable-simple-user", &Value::Null).is_empty());
    assert!(!errors("simple-user", &Value::Null).is_empty());
    let example = |name: &str| doc["components"]["examples"][name]["value"].clone();
    let mut run = example("check-run");
    assert!(errors("check-run", &run).is_empty());
    run["status"] = json!("bogus");
    run.as_object_mut().unwrap().remove("output");
    run["id"] = json!("21");
    let found = errors("check-run", &run);
    assert_eq!(found.len(), 3, "{found:#?}");
    let mut installation = example("base-installation");
    assert!(errors("installation", &installation).is_empty());
    installation["account"]["html_url"] = json!("not a URL");
    installation["suspended_at"] = json!(null);
    let found = errors("installation", &installation);
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn every_rest_route_of_the_emulator_is_an_operation_of_githubs_rest_description() {
    let doc = rest_description();
    let mut mismatches = Vec::new();
    let routes = Emulator::rest_routes();
    assert!(!routes.is_empty(), "the emulator lists its REST routes");
    for (method, path) in routes {
        if path.starts_with("/_emulator") {
            mismatches.push(format!("{method} {path}: a control route listed as REST"));
        } else if operation(doc, &method, path).is_none() {
            mismatches.push(format!(
                "{method} {path}: no such operation in GitHub's REST description"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_emulator_answer_is_one_githubs_rest_description_documents() {
    let doc = rest_description();
    let mut run = Run::start().await;
    let acct = format!(
        "conformance-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let inst = run.install(&acct).await;
    let suspended = run.install(&acct).await;
    run.control(&format!("/_emulator/installations/{suspended}/suspend"))
        .await;
    let unknown = new_installation();
    let jwt = app_jwt();

    // The App.
    run.call(Method::GET, "/app", "/app", Auth::Jwt(&jwt), None)
        .await;
    let installation = "/app/installations/{installation_id}";
    run.call(
        Method::GET,
        installation,
        &format!("/app/installations/{inst}"),
        Auth::Jwt(&jwt),
        None,
    )
    .await;
    run.call(
        Method::GET,
        installation,
        &format!("/app/installations/{unknown}"),
        Auth::Jwt(&jwt),
        None,
    )
    .await;

    // Installation tokens.
    let tokens = "/app/installations/{installation_id}/access_tokens";
    let at = |id: i64| format!("/app/installations/{id}/access_tokens");
    run.call(Method::POST, tokens, &at(inst), Auth::None, Some(json!({})))
        .await;
    let all = run
        .call(
            Method::POST,
            tokens,
            &at(inst),
            Auth::Jwt(&jwt),
            Some(json!({})),
        )
        .await;
    let one = run
        .call(
            Method::POST,
            tokens,
            &at(inst),
            Auth::Jwt(&jwt),
            Some(json!({"repositories": ["one"]})),
        )
        .await;
    run.call(
        Method::POST,
        tokens,
        &at(inst),
        Auth::Jwt(&jwt),
        Some(json!({"repositories": ["elsewhere"]})),
    )
    .await;
    run.call(Method::POST, tokens, &at(unknown), Auth::Jwt(&jwt), None)
        .await;
    run.call(Method::POST, tokens, &at(suspended), Auth::Jwt(&jwt), None)
        .await;
    let all = all["token"].as_str().unwrap_or_default().to_owned();
    let one = one["token"].as_str().unwrap_or_default().to_owned();

    // What installation tokens reach.
    let repos = "/installation/repositories";
    for token in [all.as_str(), one.as_str(), "ghs_not_a_token"] {
        run.call(Method::GET, repos, repos, Auth::Token(token), None)
            .await;
    }
    let comments = "/repos/{owner}/{repo}/issues/{issue_number}/comments";
    let on = |repo: &str| format!("/repos/{acct}/{repo}/issues/1/comments");
    run.call(
        Method::POST,
        comments,
        &on("one"),
        Auth::Token(&one),
        Some(json!({"body": "conformance"})),
    )
    .await;
    run.call(Method::GET, comments, &on("one"), Auth::Token(&one), None)
        .await;
    run.call(Method::GET, comments, &on("two"), Auth::Token(&one), None)
        .await;
    run.call(
        Method::POST,
        comments,
        &on("two"),
        Auth::Token(&one),
        Some(json!({"body": "not here"})),
    )
    .await;
    let check_runs = format!("/repos/{acct}/one/check-runs");
    let sha = "009b8a3a9ccbb128af87f9b1c0f4c62e8a304f6d";
    let queued = run
        .call(
            Method::POST,
            "/repos/{owner}/{repo}/check-runs",
            &check_runs,
            Auth::Token(&one),
            Some(json!({"name": "conformance", "head_sha": sha, "external_id": "x-1"})),
        )
        .await;
    run.call(
        Method::POST,
        "/repos/{owner}/{repo}/check-runs",
        &check_runs,
        Auth::Token(&one),
        Some(json!({"name": "done", "head_sha": sha, "status": "completed", "conclusion": "success"})),
    )
    .await;
    let check_run = format!("{check_runs}/{}", queued["id"]);
    for change in [
        json!({"status": "in_progress"}),
        json!({"conclusion": "neutral"}),
    ] {
        run.call(
            Method::PATCH,
            "/repos/{owner}/{repo}/check-runs/{check_run_id}",
            &check_run,
            Auth::Token(&one),
            Some(change),
        )
        .await;
    }

    // The App's webhook deliveries (installing and suspending sent some).
    let deliveries = "/app/hook/deliveries";
    let listed = run
        .call(Method::GET, deliveries, deliveries, Auth::Jwt(&jwt), None)
        .await;
    run.call(
        Method::GET,
        deliveries,
        "/app/hook/deliveries?per_page=1",
        Auth::Jwt(&jwt),
        None,
    )
    .await;
    let delivery = &listed[0]["id"];
    run.call(
        Method::GET,
        "/app/hook/deliveries/{delivery_id}",
        &format!("/app/hook/deliveries/{delivery}"),
        Auth::Jwt(&jwt),
        None,
    )
    .await;
    run.call(
        Method::POST,
        "/app/hook/deliveries/{delivery_id}/attempts",
        &format!("/app/hook/deliveries/{delivery}/attempts"),
        Auth::Jwt(&jwt),
        None,
    )
    .await;

    let mut mismatches = Vec::new();
    let served: BTreeSet<(String, &str)> = Emulator::rest_routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let exercised: BTreeSet<(String, &str)> = run
        .exchanges
        .iter()
        .map(|e| (e.method.to_string(), e.route))
        .collect();
    for (m, p) in served.difference(&exercised) {
        mismatches.push(format!("{m} {p}: served but not exercised by this test"));
    }
    for (m, p) in exercised.difference(&served) {
        mismatches.push(format!(
            "{m} {p}: exercised but not a REST route the emulator lists"
        ));
    }
    // The run meant to draw each of these answers (successes and documented errors).
    let statuses: BTreeSet<u16> = run.exchanges.iter().map(|e| e.status).collect();
    for want in [200, 201, 202, 401, 403, 404, 422] {
        if !statuses.contains(&want) {
            mismatches.push(format!("no answer with status {want} (got {statuses:?})"));
        }
    }
    let rate = documented_rate_headers(doc);
    if rate.is_empty() {
        mismatches.push("the description documents no X-RateLimit-* response header".into());
    }
    for e in &run.exchanges {
        check(doc, e, &rate, &mut mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches with GitHub's REST description ({} answers checked):\n{}",
        mismatches.len(),
        run.exchanges.len(),
        mismatches.join("\n")
    );
}

/// One request to the emulator and its answer.
struct Exchange {
    method: Method,
    route: &'static str,
    path: String,
    status: u16,
    headers: HeaderMap,
    text: String,
}

enum Auth<'a> {
    None,
    Jwt(&'a str),
    Token(&'a str),
}

/// An emulator of the test's own (webhooks go to a receiver that accepts them) and the
/// exchanges made with it.
struct Run {
    base: String,
    http: reqwest::Client,
    exchanges: Vec<Exchange>,
}

impl Run {
    async fn start() -> Run {
        let receiver = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hooks = format!("http://{}/webhooks", receiver.local_addr().expect("addr"));
        tokio::spawn(async move {
            let accept = axum::Router::new().route(
                "/webhooks",
                axum::routing::post(|| async { (axum::http::StatusCode::ACCEPTED, "{}") }),
            );
            let _ = axum::serve(receiver, accept).await;
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let emulator = Emulator::new(EmulatorConfig {
            app_id: APP_ID,
            app_slug: APP_SLUG.into(),
            app_public_key_pem: fixture("github-app-test-key.pub.pem"),
            webhook_url: Some(hooks),
            webhook_secret: WEBHOOK_SECRET.into(),
            auto_provision: false,
            rate_limit: 5000,
            token_ttl_secs: 3600,
            base_url: base.clone(),
        });
        tokio::spawn(async move {
            let _ = emulator.serve(listener).await;
        });
        Run {
            base,
            http: reqwest::Client::new(),
            exchanges: Vec::new(),
        }
    }

    /// Installs the App on `account`'s repositories `one` and `two`; returns the installation id.
    async fn install(&self, account: &str) -> i64 {
        let r = self
            .http
            .post(format!("{}/_emulator/installations", self.base))
            .json(&json!({"account": account, "repositories": ["one", "two"]}))
            .send()
            .await
            .expect("the emulator answers");
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.expect("JSON");
        body["id"].as_i64().expect("an installation id")
    }

    async fn control(&self, path: &str) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the emulator answers");
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    /// Sends a request to the REST route `route`; records the exchange, returns the JSON body
    /// (`null` when there is none).
    async fn call(
        &mut self,
        method: Method,
        route: &'static str,
        path: &str,
        auth: Auth<'_>,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        req = match auth {
            Auth::None => req,
            Auth::Jwt(t) | Auth::Token(t) => req.bearer_auth(t),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the emulator answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.exchanges.push(Exchange {
            method,
            route,
            path: path.to_owned(),
            status,
            headers,
            text,
        });
        value
    }
}

fn app_jwt() -> String {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(fixture("github-app-test-key.pem").as_bytes())
            .expect("the App's key");
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now - 60, "exp": now + 540, "iss": APP_ID}),
        &key,
    )
    .expect("an App JWT")
}

/// The operation `method` `path` (a path template) of the description.
fn operation<'a>(doc: &'a Value, method: &Method, path: &str) -> Option<&'a Value> {
    doc["paths"]
        .get(path)?
        .get(method.as_str().to_ascii_lowercase())
}

/// `v`, or what its `$ref` (a local reference, followed to the end) points at.
fn deref<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or(r);
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{r} does not resolve in the description"));
    }
    v
}

/// The `X-RateLimit-*` response headers the description documents anywhere, by lowercase
/// name, with their schemas.
fn documented_rate_headers(doc: &Value) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    let paths = doc["paths"].as_object().into_iter().flatten();
    for (_, item) in paths {
        for (_, op) in item.as_object().into_iter().flatten() {
            let responses = op.get("responses").and_then(Value::as_object);
            for (_, resp) in responses.into_iter().flatten() {
                let headers = deref(doc, resp).get("headers").and_then(Value::as_object);
                for (name, h) in headers.into_iter().flatten() {
                    let name = name.to_ascii_lowercase();
                    if name.starts_with("x-ratelimit-") {
                        let schema = deref(doc, h).get("schema").cloned().unwrap_or(json!({}));
                        found.insert(name, schema);
                    }
                }
            }
        }
    }
    found
}

/// Checks one exchange against the description; adds what does not conform to `out`.
fn check(doc: &Value, e: &Exchange, rate: &BTreeMap<String, Value>, out: &mut Vec<String>) {
    let what = format!("{} {} [{}] → {}", e.method, e.path, e.route, e.status);
    let Some(op) = operation(doc, &e.method, e.route) else {
        out.push(format!("{what}: no such operation in the description"));
        return;
    };
    let responses = &op["responses"];
    let documented = responses
        .get(e.status.to_string())
        .or_else(|| responses.get(format!("{}XX", e.status / 100)))
        .or_else(|| responses.get("default"));
    let Some(resp) = documented else {
        let listed: Vec<&String> = responses
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        out.push(format!(
            "{what}: status not documented for {} (documented: {listed:?})",
            op["operationId"]
        ));
        return;
    };
    let resp = deref(doc, resp);

    // The body.
    let content_type = e
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match resp.get("content") {
        Some(content) => match content.get("application/json") {
            None => out.push(format!(
                "{what}: the description documents no application/json body (only {:?})",
                content.as_object().map(|c| c.keys().collect::<Vec<_>>())
            )),
            Some(media) => {
                if !content_type.starts_with("application/json") {
                    out.push(format!(
                        "{what}: content type {content_type:?}, not application/json"
                    ));
                }
                match serde_json::from_str::<Value>(&e.text) {
                    Err(err) => out.push(format!("{what}: the body is not JSON ({err})")),
                    Ok(body) => {
                        if let Some(schema) = media.get("schema") {
                            validate(doc, schema, &body, &format!("{what}: body"), out);
                        }
                    }
                }
            }
        },
        None => {
            if !e.text.trim().is_empty() {
                out.push(format!(
                    "{what}: a body where the description documents none: {}",
                    clip(&e.text)
                ));
            }
        }
    }

    // Headers the operation's answer documents.
    let headers = resp.get("headers").and_then(Value::as_object);
    for (name, h) in headers.into_iter().flatten() {
        let h = deref(doc, h);
        match e.headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            Some(value) => {
                let schema = h.get("schema").cloned().unwrap_or(json!({}));
                let value = header_value(&schema, value);
                validate(doc, &schema, &value, &format!("{what}: header {name}"), out);
            }
            None if CONDITIONAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) => {}
            None => out.push(format!("{what}: documented header {name} missing")),
        }
    }

    // Rate-limit headers: the documented ones on every answer that spends the caller's budget
    // (every success), valid for their schemas; no others but those GitHub sends unlisted.
    let sent: Vec<&str> = e
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-ratelimit-"))
        .collect();
    if (200..300).contains(&e.status) || !sent.is_empty() {
        for (name, schema) in rate {
            match e.headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                None => out.push(format!("{what}: rate-limit header {name} missing")),
                Some(value) => {
                    let value = header_value(schema, value);
                    validate(doc, schema, &value, &format!("{what}: header {name}"), out);
                }
            }
        }
    }
    for name in sent {
        if !rate.contains_key(name) && !UNLISTED_RATE_HEADERS.contains(&name) {
            out.push(format!(
                "{what}: rate-limit header {name} is neither documented nor one GitHub sends"
            ));
        }
    }
}

/// A header's text as the JSON value its schema describes (numbers for numeric schemas).
fn header_value(schema: &Value, text: &str) -> Value {
    match schema["type"].as_str() {
        Some("integer" | "number") => serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        _ => Value::String(text.to_owned()),
    }
}

/// Validates `instance` against the description's OpenAPI schema `schema`.
fn validate(doc: &Value, schema: &Value, instance: &Value, what: &str, out: &mut Vec<String>) {
    let schema = json_schema(doc, schema);
    let validator = match jsonschema::draft4::options()
        .should_validate_formats(true)
        .should_ignore_unknown_formats(true)
        .build(&schema)
    {
        Ok(v) => v,
        Err(err) => {
            out.push(format!("{what}: the schema does not compile: {err}"));
            return;
        }
    };
    for err in validator.iter_errors(instance) {
        describe(&err, what, out);
    }
}

/// One line per failure; an `anyOf`/`oneOf` that fails is described by the failures of its
/// closest branches, leaving out those that only say "not of this type here" (such as the
/// `null` branch of a nullable schema).
fn describe(err: &jsonschema::ValidationError<'_>, what: &str, out: &mut Vec<String>) {
    use jsonschema::error::ValidationErrorKind as Kind;
    let here = err.instance_path();
    let line = || {
        format!(
            "{what} at {:?}: {} (schema {})",
            here.to_string(),
            clip(&err.masked().to_string()),
            err.schema_path()
        )
    };
    let (Kind::AnyOf { context: branches } | Kind::OneOfNotValid { context: branches }) =
        err.kind()
    else {
        out.push(line());
        return;
    };
    let mut telling: Vec<_> = branches
        .iter()
        .filter(|b| {
            !b.iter()
                .all(|e| matches!(e.kind(), Kind::Type { .. }) && e.instance_path() == here)
        })
        .collect();
    // The closest branches: those with the fewest failures.
    let fewest = telling.iter().map(|b| b.len()).min().unwrap_or(0);
    telling.retain(|b| b.len() == fewest);
    if telling.is_empty() {
        out.push(line());
    }
    for e in telling.into_iter().flatten() {
        describe(e, what, out);
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A JSON Schema (draft 4, the draft OpenAPI 3.0's schema objects extend) for an OpenAPI 3.0
/// schema of the description: `nullable: true` becomes "or null"; `$ref`s to
/// `#/components/schemas/…` point at `definitions` holding every schema reachable from it
/// (recursive schemas stay references).
fn json_schema(doc: &Value, schema: &Value) -> Value {
    let mut pending = Vec::new();
    let root = convert(schema, &mut pending);
    let mut definitions = Map::new();
    while let Some(name) = pending.pop() {
        if definitions.contains_key(&name) {
            continue;
        }
        let component = doc["components"]["schemas"]
            .get(&name)
            .unwrap_or_else(|| panic!("component schema {name} is missing"));
        definitions.insert(name.clone(), Value::Null);
        let converted = convert(component, &mut pending);
        definitions.insert(name, converted);
    }
    json!({"definitions": definitions, "allOf": [root]})
}

/// Converts one schema; names of the components it refers to go to `pending`.
fn convert(v: &Value, pending: &mut Vec<String>) -> Value {
    let Value::Object(m) = v else {
        // `true`/`false` schemas (e.g. `additionalProperties: true`) stay as they are.
        return v.clone();
    };
    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
        // OpenAPI 3.0 ignores a `$ref`'s siblings, as draft 4 does.
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a schema $ref outside components/schemas: {r}"));
        pending.push(name.to_owned());
        let escaped = name.replace('~', "~0").replace('/', "~1");
        return json!({"$ref": format!("#/definitions/{escaped}")});
    }
    let mut out = Map::new();
    for (k, x) in m {
        let converted = match k.as_str() {
            "properties" | "patternProperties" => Value::Object(
                x.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), convert(s, pending)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => match x {
                Value::Array(a) => Value::Array(a.iter().map(|s| convert(s, pending)).collect()),
                s => convert(s, pending),
            },
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                x.as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| convert(s, pending))
                    .collect(),
            ),
            // OpenAPI-only keywords; `nullable` is applied below.
            "nullable" | "discriminator" | "readOnly" | "writeOnly" | "xml" | "externalDocs"
            | "example" | "deprecated" => continue,
            _ => x.clone(),
        };
        out.insert(k.clone(), converted);
    }
    if m.get("nullable") == Some(&Value::Bool(true)) {
        return json!({"anyOf": [{"type": "null"}, Value::Object(out)]});
    }
    Value::Object(out)
}
