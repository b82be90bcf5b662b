//! Regional workers: GitHub effects (scoped tokens, clones, one comment per job), the `llm`
//! executor, retries into the dead-letter stream and back by API, cancellation, the per-org
//! cap, and worker processes that are killed or drained.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use protocol::Region;
use protocol::subjects::Names;
use serde_json::{Value, json};
use switchyard_tests::env::TestEnv;
use tokio::net::TcpListener;

use crate::helpers::*;

/// An `issues.labeled` "bot" webhook on issue `number` of `Codertocat/Hello-World`; returns
/// the job's id.
async fn job_on_issue(app: &TestApp, inst: i64, number: i64) -> String {
    let mut p = labeled_issue(inst, "bot");
    p["issue"]["number"] = json!(number);
    let r = app.send_webhook(US, "issues", &new_delivery(), &p).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let jobs = r.body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1, "{}", r.body);
    jobs[0].as_str().unwrap().to_owned()
}

/// Installs the App on `Codertocat`, the owner of the example payloads' repository, and binds
/// the installation to `org`.
async fn install_for(app: &TestApp, org: i64) -> i64 {
    let inst = new_installation();
    app.github.state.lock().unwrap().install(
        inst,
        "Codertocat",
        "Organization",
        Some(vec!["Codertocat/Hello-World".into()]),
    );
    app.bind_installation(US, org, inst).await;
    inst
}

async fn job(app: &TestApp, org: i64, id: &str) -> Value {
    let r = app
        .get(US, &format!("/v1/orgs/{org}/jobs/{id}"), OPERATOR_TOKEN)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Waits for the job to reach `status` (it may not be recorded yet at first: 404).
async fn wait_status(app: &TestApp, org: i64, id: &str, status: &str, within: Duration) -> Value {
    wait_for(&format!("job {id} to be {status}"), within, || async {
        let r = app
            .get(US, &format!("/v1/orgs/{org}/jobs/{id}"), OPERATOR_TOKEN)
            .await;
        (r.status == 200 && r.body["status"] == status).then_some(r.body)
    })
    .await
}

/// Rows of `org`'s jobs: id, status, started_at, finished_at.
async fn job_rows(
    app: &TestApp,
    org: i64,
) -> Vec<(String, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    sqlx::query_as("select id, status, started_at, finished_at from job where org_id = $1")
        .bind(org)
        .fetch_all(&app.regions[US].shard)
        .await
        .unwrap()
}

/// Comments on issue `number` of the test repository, as the emulator holds them.
fn comments(app: &TestApp, number: i64) -> Vec<String> {
    let st = app.github.state.lock().unwrap();
    st.comments
        .get(&("codertocat/hello-world".to_owned(), number))
        .map(|cs| cs.iter().map(|c| c.body.clone()).collect())
        .unwrap_or_default()
}

fn marker(job: &str) -> String {
    format!("<!-- switchyard:job={job} -->")
}

/// Every message of a stream of the test's namespace (read without acknowledging).
async fn stream_messages(app: &TestApp, stream: &str) -> Vec<jetstream::Message> {
    let client = async_nats::connect(&TestEnv::get().nats_us_url)
        .await
        .unwrap();
    let js = jetstream::new(client);
    let Ok(s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let consumer = s
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(m)) = batch.next().await {
        out.push(m);
    }
    let _ = app;
    out
}

fn names(app: &TestApp) -> (Names, Region) {
    (
        Names::new(&app.namespace).unwrap(),
        Region::new(US).unwrap(),
    )
}

/// Usage events of `metric` in the region's USAGE stream, by job id.
async fn usage(app: &TestApp, metric: &str) -> BTreeMap<String, Vec<i64>> {
    let (names, region) = names(app);
    let mut by_job: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in stream_messages(app, &names.usage_stream(&region)).await {
        let e: Value = serde_json::from_slice(&m.payload).unwrap();
        if e["metric"] == metric {
            by_job
                .entry(e["job_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["quantity"].as_i64().unwrap());
        }
    }
    by_job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_clone_their_repository_with_a_scoped_token_and_comment_exactly_once() {
    let opts = Options {
        worker_github: true,
        // The agent: the token works for the clone, which is there with its history.
        command: vec![
            "sh".into(),
            "-c".into(),
            r#"set -e
test "$(cat "$SWITCHYARD_GITHUB_TOKEN_FILE")" = "$GITHUB_TOKEN"
test "$PWD" = "$SWITCHYARD_REPO_DIR"
echo "commits: $(git log --oneline | wc -l) in $SWITCHYARD_REPO for issue $SWITCHYARD_TARGET_NUMBER"
git fetch --quiet origin"#
                .into(),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = install_for(&app, org).await;
    let minted_before = app.github.state.lock().unwrap().tokens_minted.clone();

    let mut jobs = Vec::new();
    for n in 1..=5 {
        jobs.push((n, job_on_issue(&app, inst, n).await));
    }
    for (n, id) in &jobs {
        let j = wait_status(&app, org, id, "succeeded", Duration::from_secs(60)).await;
        let out = j["result"].to_string();
        assert!(
            out.contains(&format!(
                "commits: 1 in Codertocat/Hello-World for issue {n}"
            )),
            "{j}"
        );
        let cs = comments(&app, *n);
        assert_eq!(cs.len(), 1, "one comment on issue {n}: {cs:?}");
        assert!(cs[0].contains(&marker(id)), "{cs:?}");
        assert!(cs[0].contains("commits: 1"), "{cs:?}");
    }
    // Five jobs of one repository: one repository-scoped token, from the cache after the
    // first.
    let minted = app.github.state.lock().unwrap().tokens_minted.clone();
    let new =
        minted.get(&inst).copied().unwrap_or(0) - minted_before.get(&inst).copied().unwrap_or(0);
    assert_eq!(new, 1, "{minted:?}");
    // The jobs' token is scoped to their repository (an installation-wide one, if any, is the
    // control plane's, from binding the installation, before `minted_before`).
    let scoped: Vec<Vec<String>> = app
        .github
        .state
        .lock()
        .unwrap()
        .tokens
        .values()
        .filter(|t| t.installation == inst)
        .filter_map(|t| t.repos.clone())
        .collect();
    assert_eq!(
        scoped,
        vec![vec!["Codertocat/Hello-World".to_owned()]],
        "job tokens are scoped to the job's repository"
    );
    // Each job reported its seconds once.
    let seconds = usage(&app, "job_seconds").await;
    for (_, id) in &jobs {
        assert_eq!(seconds.get(id).map(Vec::len), Some(1), "{seconds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_gets_a_fresh_token_before_the_first_expires() {
    let opts = Options {
        worker_github: true,
        token_ttl: Duration::from_secs(6),
        token_refresh_margin: Duration::from_secs(3),
        // Keep the first token, outlive it, then use the file's token for git.
        command: vec![
            "sh".into(),
            "-c".into(),
            r#"set -e
first="$GITHUB_TOKEN"
sleep 8
now="$(cat "$SWITCHYARD_GITHUB_TOKEN_FILE")"
test "$first" != "$now"
git fetch --quiet origin
echo "token renewed and still working""#
                .into(),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = install_for(&app, org).await;
    let id = job_on_issue(&app, inst, 7).await;
    let j = wait_status(&app, org, &id, "succeeded", Duration::from_secs(60)).await;
    assert!(j["result"].to_string().contains("token renewed"), "{j}");
    assert_eq!(comments(&app, 7).len(), 1);
}

/// A small stand-in of an OpenAI-compatible chat endpoint: answers every request and keeps
/// what it was asked.
async fn fake_llm() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    async fn chat(
        State(seen): State<Arc<Mutex<Vec<Value>>>>,
        Json(req): Json<Value>,
    ) -> Json<Value> {
        seen.lock().unwrap().push(req.clone());
        let question = req["messages"][1]["content"].as_str().unwrap_or_default();
        let first = question.lines().next().unwrap_or_default();
        Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": req["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": format!("Looked at: {first}")}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
        }))
    }
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_jobs_post_the_models_answer_and_report_its_tokens() {
    let (llm_url, seen) = fake_llm().await;
    let opts = Options {
        worker_github: true,
        executors: vec![(
            "review".into(),
            worker::config::ExecutorConfig::Llm {
                base_url: llm_url,
                model: "fake-model".into(),
                api_key: Some(secrecy::SecretString::from("sk-test")),
                timeout: Duration::from_secs(5),
                max_tokens: 256,
                system_prompt: "You review.".into(),
            },
        )],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let inst = install_for(&app, org).await;
    let r = app
        .call(
            reqwest::Method::PUT,
            US,
            &format!("/v1/orgs/{org}/rules"),
            Some(&key),
            Some(json!([{"id": "review", "event": "issues", "action": "labeled", "label": "review", "kind": "review"}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut p = labeled_issue(inst, "review");
    p["issue"]["number"] = json!(3);
    let r = app.send_webhook(US, "issues", &new_delivery(), &p).await;
    let id = r.body["jobs"][0].as_str().unwrap().to_owned();
    let j = wait_status(&app, org, &id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(j["kind"], "review");
    assert_eq!(j["result"]["usage"]["total_tokens"], 42, "{j}");
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["model"], "fake-model");
    assert_eq!(asked[0]["messages"][0]["content"], "You review.");
    let title = p["issue"]["title"].as_str().unwrap();
    assert!(
        asked[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains(title),
        "{asked:?}"
    );
    let cs = comments(&app, 3);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert!(
        cs[0].contains("Looked at:") && cs[0].contains(&marker(&id)),
        "{cs:?}"
    );
    let tokens = wait_for(
        "the LLM tokens in the USAGE stream",
        Duration::from_secs(10),
        || async { usage(&app, "llm_tokens").await.get(&id).cloned() },
    )
    .await;
    assert_eq!(tokens, vec![42]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_backs_off_dies_into_the_dead_letter_stream_and_is_retried_by_api() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("fixed");
    let opts = Options {
        worker_github: true,
        max_attempts: 3,
        command: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "test -f '{}' || {{ echo 'the agent crashed: exit 3' >&2; exit 3; }}; echo fixed",
                flag.display()
            ),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let inst = install_for(&app, org).await;
    let id = job_on_issue(&app, inst, 11).await;

    let j = wait_status(&app, org, &id, "dead", Duration::from_secs(30)).await;
    assert_eq!(j["attempts"], 3, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("the agent crashed"),
        "dead with its last error: {j}"
    );
    // Retries waited a growing, jittered delay (base 100 ms, doubling, ±25 %).
    let events = j["events"].as_array().unwrap();
    let delays: Vec<u64> = events
        .iter()
        .filter_map(|e| e["detail"]["retry_in_ms"].as_u64())
        .collect();
    assert_eq!(delays.len(), 2, "{events:?}");
    assert!(
        (75..=125).contains(&delays[0]) && (150..=250).contains(&delays[1]),
        "{delays:?}"
    );
    let starts: Vec<DateTime<Utc>> = events
        .iter()
        .filter(|e| e["status"] == "running")
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 3, "{events:?}");
    for (gap, delay) in starts.windows(2).zip(&delays) {
        let waited = (gap[1] - gap[0]).num_milliseconds();
        assert!(
            waited >= i64::try_from(*delay).unwrap() - 5,
            "waited {waited} ms, backoff {delay} ms"
        );
    }
    // In the dead-letter stream, with its error.
    let (names, region) = names(&app);
    let dead = stream_messages(&app, &names.dead_stream(&region)).await;
    assert_eq!(dead.len(), 1);
    let headers = dead[0].headers.as_ref().unwrap();
    assert_eq!(headers.get("Switchyard-Job-Id").unwrap().as_str(), id);
    assert!(
        headers
            .get("Switchyard-Error")
            .unwrap()
            .as_str()
            .contains("the agent crashed")
    );
    // Its failure was posted once.
    let cs = comments(&app, 11);
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert!(
        cs[0].contains("could not finish") && cs[0].contains(&marker(&id)),
        "{cs:?}"
    );

    // Fixed: a retry by API runs it again, to success; a second retry is refused.
    std::fs::write(&flag, "").unwrap();
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/jobs/{id}/retry"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = wait_status(&app, org, &id, "succeeded", Duration::from_secs(30)).await;
    assert!(j["result"].to_string().contains("fixed"), "{j}");
    app.post(
        US,
        &format!("/v1/orgs/{org}/jobs/{id}/retry"),
        &key,
        json!({}),
    )
    .await
    .assert_problem(409);
    // The retry's comment is its own: the job's marker is already there, so it is not
    // posted again — one comment per job, whatever happens to it.
    assert_eq!(comments(&app, 11).len(), 1);
    let audit = app
        .get(US, &format!("/v1/orgs/{org}/audit-log"), &key)
        .await;
    assert!(
        audit.body.to_string().contains("job.retry"),
        "{}",
        audit.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_a_running_job_and_a_queued_one_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        slots: 1,
        command: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "touch '{}/$SWITCHYARD_JOB_ID'; sleep 30",
                dir.path().display()
            ),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    let created = app.create_org(US).await;
    let org = created["id"].as_i64().unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let inst = install_for(&app, org).await;
    let running = job_on_issue(&app, inst, 1).await;
    wait_status(&app, org, &running, "running", Duration::from_secs(20)).await;
    // One slot: the second waits in the queue.
    let queued = job_on_issue(&app, inst, 2).await;
    wait_status(&app, org, &queued, "queued", Duration::from_secs(10)).await;

    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/jobs/{queued}/cancel"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = Instant::now();
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/jobs/{running}/cancel"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    // The worker stops it (its 30 s sleep is killed) and its slot takes the next message:
    // the cancelled queued job, which it acknowledges without running.
    let third = job_on_issue(&app, inst, 3).await;
    wait_status(&app, org, &third, "running", Duration::from_secs(20)).await;
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "the running job was stopped"
    );
    assert!(
        !dir.path().join(&queued).exists(),
        "the cancelled queued job never ran"
    );
    assert_eq!(job(&app, org, &queued).await["status"], "cancelled");
    assert_eq!(job(&app, org, &running).await["status"], "cancelled");
    app.post(
        US,
        &format!("/v1/orgs/{org}/jobs/{running}/cancel"),
        &key,
        json!({}),
    )
    .await
    .assert_problem(409);
    // A cancelled job can be retried.
    let r = app
        .post(
            US,
            &format!("/v1/orgs/{org}/jobs/{queued}/retry"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orgs_flood_does_not_starve_another() {
    const FLOOD: usize = 1000;
    let opts = Options {
        slots: 8,
        command: vec!["sh".into(), "-c".into(), "sleep 0.3".into()],
        ..Options::default()
    };
    let app = TestApp::spawn_with(opts).await;
    // The flooding org's plan lets it run two jobs at once across the pool.
    let flooder = app.create_org_on(US, "capped").await["id"]
        .as_i64()
        .unwrap();
    let other = app.create_org(US).await["id"].as_i64().unwrap();
    let inst_a = install_for(&app, flooder).await;
    let inst_b = new_installation();
    app.bind_installation(US, other, inst_b).await;

    let app_ref = &app;
    let accepted = futures::stream::iter(0..FLOOD)
        .map(|i| async move {
            let mut p = labeled_issue(inst_a, "bot");
            p["issue"]["number"] = json!(i + 1);
            let delivery = new_delivery();
            // A 503 (the test machine's cores all busy) is sent again, as its Retry-After asks;
            // the same delivery id makes a repeat harmless.
            wait_for(
                "the webhook to be taken",
                Duration::from_secs(30),
                || async {
                    let r = app_ref.send_webhook(US, "issues", &delivery, &p).await;
                    (r.status != 503).then_some(r.status)
                },
            )
            .await
        })
        .buffer_unordered(8)
        .filter(|s| std::future::ready(*s == 202))
        .count()
        .await;
    assert_eq!(accepted, FLOOD);
    let single = job_on_issue(&app, inst_b, 1).await;
    let j = wait_status(&app, other, &single, "succeeded", Duration::from_secs(60)).await;
    let started: DateTime<Utc> = j["started_at"].as_str().unwrap().parse().unwrap();

    let rows = job_rows(&app, flooder).await;
    let before = rows
        .iter()
        .filter(|r| r.2.is_some_and(|s| s < started))
        .count();
    assert!(
        before < 50,
        "{before} of the flood's jobs started before the other org's single job"
    );
    // And the flood never ran more than its cap at once.
    let mut edges: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for (_, _, s, f) in &rows {
        if let (Some(s), Some(f)) = (s, f) {
            edges.push((*s, 1));
            edges.push((*f, -1));
        }
    }
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 2, "{most} of the capped org's jobs ran at once");
}

// ------------------------------------------------------------------------------------
// Worker processes: kill -9 and SIGTERM.
// ------------------------------------------------------------------------------------

/// A `worker` process of the test app's us-east-1, killed when dropped.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    fn start(app: &TestApp, dir: &Path, id: &str, command: &str, extra: &str) -> Self {
        let env = TestEnv::get();
        let catalog = app
            .catalog
            .connect_options()
            .get_database()
            .unwrap()
            .to_owned();
        let key = std::fs::read_to_string(
            switchyard_tests::env::workspace_root().join("tests/fixtures/github-app-test-key.pem"),
        )
        .unwrap();
        let ws = dir.join(format!("ws-{id}"));
        std::fs::create_dir_all(&ws).unwrap();
        let toml = format!(
            r#"[worker]
region = "us-east-1"
id = "{id}"
slots = 4
ops_listen = "127.0.0.1:0"
heartbeat_every = "1s"
ack_wait = "3s"
progress_every = "1s"
backoff_base = "100ms"
org_lease = "4s"
cap_retry = "200ms"
workspace_root = "{ws}"
{extra}
[database]
catalog_url = "{catalog}"
max_connections = 2
shard_max_connections = 3
[nats]
url = "{nats}"
namespace = "{ns}"
connect_timeout = "2s"
[redis]
url = "{redis}"
key_prefix = "{ns}:"
[github]
web_url = "{gh}"
clone = false
[github.app]
app_id = {app_id}
api_url = "{gh}"
private_key = '''
{key}'''
[telemetry]
log_format = "json"
log_filter = "info"
[executors.default]
type = "command"
command = ["sh", "-c", {command:?}]
timeout = "60s"
"#,
            ws = ws.display(),
            catalog = env.db_url(&catalog),
            nats = env.nats_us_url,
            ns = app.namespace,
            redis = env.redis_url,
            gh = app.github_url,
            app_id = APP_ID,
        );
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{id}.log"));
        let child = Command::new(worker_binary())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("SWITCHYARD_WORKER_CONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker binary starts");
        WorkerProcess { child, log }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits for a line of the process's log to contain `needle`.
    async fn wait_log(&self, needle: &str, within: Duration) {
        wait_for(
            &format!("{needle} in {}", self.log.display()),
            within,
            || {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                std::future::ready(log.contains(needle).then_some(()))
            },
        )
        .await;
    }

    /// Waits for the process to exit; fails the test with `what` at the deadline.
    async fn wait_exit(&mut self, what: &str, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for(what, within, || {
            let status = child.try_wait().unwrap();
            std::future::ready(status)
        })
        .await
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Jobs of `org` as (id, status, worker of its `running` events, succeeded events).
async fn job_histories(app: &TestApp, org: i64) -> HashMap<String, (String, Vec<String>, i64)> {
    let rows: Vec<(String, String, Vec<String>, i64)> = sqlx::query_as(
        "select j.id, j.status,
                coalesce(array_agg(e.worker order by e.seq) filter (where e.status = 'running'), '{}'),
                count(*) filter (where e.status = 'succeeded')
         from job j left join job_event e on e.org_id = j.org_id and e.job_id = j.id
         where j.org_id = $1 group by j.id, j.status",
    )
    .bind(org)
    .fetch_all(&app.regions[US].shard)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, status, workers, succeeded)| (id, (status, workers, succeeded)))
        .collect()
}

/// The process tests: an app whose us-east-1 jobs are run only by worker processes.
async fn app_without_workers() -> TestApp {
    TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_busy_worker_ends_every_job_once_with_one_comment_each() {
    const JOBS: i64 = 24;
    let app = app_without_workers().await;
    let dir = tempfile::tempdir().unwrap();
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = install_for(&app, org).await;
    // Every third job is held until the release file exists, so the doomed worker's slots fill
    // with jobs that cannot finish before the kill however slow the machine is; the others take
    // a second, so some may be killed past their comment.
    let release = dir.path().join("release");
    let command = format!(
        "if [ $((SWITCHYARD_TARGET_NUMBER % 3)) -eq 0 ]; then \
         while [ ! -e {release} ]; do sleep 0.1; done; else sleep 1; fi; \
         echo done $SWITCHYARD_JOB_ID",
        release = release.display()
    );
    let command = command.as_str();
    let mut doomed = WorkerProcess::start(&app, dir.path(), "doomed", command, "");
    let mut ids = HashSet::new();
    for n in 1..=JOBS {
        ids.insert(job_on_issue(&app, inst, n).await);
    }
    wait_for(
        "the worker to run jobs",
        Duration::from_secs(60),
        || async {
            let h = job_histories(&app, org).await;
            let done = h.values().filter(|v| v.0 == "succeeded").count();
            let running = h.values().filter(|v| v.0 == "running").count();
            (done >= 2 && running >= 2).then_some(())
        },
    )
    .await;
    doomed.signal(nix::sys::signal::Signal::SIGKILL);
    doomed
        .wait_exit("the killed worker to exit", Duration::from_secs(5))
        .await;
    let at_kill: Vec<String> = job_histories(&app, org)
        .await
        .into_iter()
        .filter(|(_, v)| v.0 == "running")
        .map(|(id, _)| id)
        .collect();
    assert!(!at_kill.is_empty());

    std::fs::write(&release, b"").unwrap();
    let _survivor = WorkerProcess::start(&app, dir.path(), "survivor", command, "");
    let histories = wait_for("every job to succeed", Duration::from_secs(120), || async {
        let h = job_histories(&app, org).await;
        (h.len() == ids.len() && h.values().all(|v| v.0 == "succeeded")).then_some(h)
    })
    .await;
    for (id, (_, workers, succeeded)) in &histories {
        assert_eq!(*succeeded, 1, "{id} ended once: {workers:?}");
    }
    for id in &at_kill {
        let workers = &histories[id].1;
        assert_eq!(
            workers.first().map(String::as_str),
            Some("doomed"),
            "{workers:?}"
        );
        assert_eq!(
            workers.last().map(String::as_str),
            Some("survivor"),
            "{workers:?}"
        );
    }
    // Exactly one comment per job, with its marker, on its issue.
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for n in 1..=JOBS {
        for body in comments(&app, n) {
            for id in &ids {
                if body.contains(&marker(id)) {
                    *per_job.entry(id.clone()).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(per_job.len(), ids.len(), "{per_job:?}");
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
    // And one usage event per job.
    let seconds = usage(&app, "job_seconds").await;
    for id in &ids {
        assert_eq!(seconds.get(id).map(Vec::len), Some(1), "{id}: {seconds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs_hands_back_the_rest_and_exits_in_the_grace_period() {
    let app = app_without_workers().await;
    let dir = tempfile::tempdir().unwrap();
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = install_for(&app, org).await;
    // Issue 1's job takes 2 s, issue 9's 20 s: longer than the 5 s grace.
    let command = "sleep $((SWITCHYARD_TARGET_NUMBER == 9 ? 20 : 2)); echo done";
    let grace = Duration::from_secs(5);
    let mut draining = WorkerProcess::start(
        &app,
        dir.path(),
        "draining",
        command,
        "drain_grace = \"5s\"",
    );
    let short = job_on_issue(&app, inst, 1).await;
    let long = job_on_issue(&app, inst, 9).await;
    wait_status(&app, org, &short, "running", Duration::from_secs(60)).await;
    wait_status(&app, org, &long, "running", Duration::from_secs(10)).await;

    let t = Instant::now();
    draining.signal(nix::sys::signal::Signal::SIGTERM);
    // Jobs sent during the drain are left for other workers. The signal arrives when it does:
    // a job sent before the worker has taken it in would rightly still be run, so the job is
    // sent once the worker says it has stopped pulling.
    draining.wait_log(r#""message":"draining""#, grace).await;
    let later = job_on_issue(&app, inst, 2).await;
    let status = draining
        .wait_exit(
            "the worker to exit within its grace period",
            grace + Duration::from_secs(5),
        )
        .await;
    assert!(status.success(), "{status:?}");
    let took = t.elapsed();
    assert!(took < grace + Duration::from_secs(3), "drained in {took:?}");

    let h = job_histories(&app, org).await;
    assert_eq!(
        h[&short].0, "succeeded",
        "the in-flight short job finished: {h:?}"
    );
    assert_eq!(h[&long].0, "queued", "the long job was handed back: {h:?}");
    assert_eq!(h[&later].0, "queued", "nothing new was taken: {h:?}");
    assert!(h[&later].1.is_empty(), "{h:?}");

    // Another worker runs what was handed back.
    let _next = WorkerProcess::start(&app, dir.path(), "next", command, "");
    for id in [&long, &later] {
        wait_status(&app, org, id, "succeeded", Duration::from_secs(60)).await;
    }
    let h = job_histories(&app, org).await;
    assert_eq!(h[&long].1, vec!["draining".to_owned(), "next".to_owned()]);
    assert!(h.values().all(|v| v.2 == 1), "{h:?}");
    let log = std::fs::read_to_string(&draining.log).unwrap();
    assert!(log.contains("worker stopped"), "{log}");
}
