//! The autoscaler live: its Kubernetes actuator against a stand-in of the Kubernetes API
//! (no cluster runs here), and a burst of webhooks making the local-process actuator start
//! real `worker` processes, then stop them once the burst is worked off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::autoscaler::Config;
use ::autoscaler::actuator::{Actuator, ActuatorError};
use ::autoscaler::config::{ActuatorKind, DEFAULTS};
use ::autoscaler::store::Store;
use axum::Json;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::Region;
use protocol::autoscale::PoolState;
use protocol::service::config::load;
use serde_json::{Value, json};
use switchyard_tests::env::TestEnv;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

fn autoscaler_defaults() -> Config {
    load(DEFAULTS, None, "SWITCHYARD_TESTS_NO_ENV_").expect("autoscaler defaults")
}

// ------------------------------------------------------------------------------------
// A stand-in of the Kubernetes API: the scale subresource of some Deployments.
// ------------------------------------------------------------------------------------

/// One request the stand-in received.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

#[derive(Clone, Default)]
struct StandIn {
    replicas: Arc<Mutex<BTreeMap<String, i32>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    fn with(deployments: &[(&str, i32)]) -> Self {
        let s = Self::default();
        s.replicas
            .lock()
            .unwrap()
            .extend(deployments.iter().map(|(n, r)| ((*n).to_owned(), *r)));
        s
    }

    fn replicas(&self) -> BTreeMap<String, i32> {
        self.replicas.lock().unwrap().clone()
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    async fn serve(self) -> String {
        let app = axum::Router::new()
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
                get(scale).patch(scale),
            )
            .with_state(self);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        url
    }
}

fn scale_object(ns: &str, name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": format!("app={name}")},
    })
}

async fn scale(
    State(st): State<StandIn>,
    method: Method,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"),
        query: query.unwrap_or_default(),
        content_type: content_type.clone(),
        body: body.clone(),
    });
    let mut replicas = st.replicas.lock().unwrap();
    let Some(current) = replicas.get_mut(&name) else {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("deployments.apps \"{name}\" not found"),
            "reason": "NotFound", "details": {"name": name, "group": "apps", "kind": "deployments"},
            "code": 404,
        });
        return (StatusCode::NOT_FOUND, Json(status)).into_response();
    };
    if method == Method::PATCH {
        // A JSON merge patch of the Scale object: only spec.replicas may change.
        if content_type != "application/merge-patch+json" {
            return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
        }
        let Some(n) = body["spec"]["replicas"].as_i64() else {
            return StatusCode::UNPROCESSABLE_ENTITY.into_response();
        };
        *current = i32::try_from(n).unwrap();
    }
    Json(scale_object(&ns, &name, *current)).into_response()
}

fn kube_config(url: &str, deployments: &[&str]) -> Config {
    let mut cfg = autoscaler_defaults();
    cfg.actuator.kind = ActuatorKind::Kubernetes;
    cfg.actuator.kubernetes.api_url = url.to_owned();
    cfg.actuator.kubernetes.namespace = "switchyard-test".into();
    cfg.actuator.kubernetes.deployments = deployments.iter().map(|d| (*d).to_owned()).collect();
    cfg.validate().expect("valid autoscaler config");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_actuator_patches_the_scale_of_each_worker_deployment_only_when_it_changes()
{
    let api = StandIn::with(&[("workers-a", 2), ("workers-b", 1)]);
    let url = api.clone().serve().await;
    let cfg = kube_config(&url, &["workers-a", "workers-b"]);
    let mut actuator = Actuator::from_config(&cfg).await.expect("actuator");
    assert_eq!(actuator.kind(), "kubernetes");

    // The pool is the sum of the Deployments' replicas, read from their scale.
    assert_eq!(actuator.current().await.unwrap(), Some(3));
    let path = |d: &str| format!("/apis/apps/v1/namespaces/switchyard-test/deployments/{d}/scale");
    let seen = api.take_seen();
    assert_eq!(
        seen.iter()
            .map(|s| (s.method.clone(), s.path.clone()))
            .collect::<Vec<_>>(),
        [
            (Method::GET, path("workers-a")),
            (Method::GET, path("workers-b"))
        ]
    );

    // Five workers: split 3 + 2, one merge patch of spec.replicas each, by our field manager.
    actuator.scale(5).await.unwrap();
    let seen = api.take_seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for (s, (d, n)) in seen.iter().zip([("workers-a", 3), ("workers-b", 2)]) {
        assert_eq!(s.method, Method::PATCH);
        assert_eq!(s.path, path(d));
        assert_eq!(s.content_type, "application/merge-patch+json");
        assert_eq!(s.body, json!({"spec": {"replicas": n}}));
        assert!(
            s.query.contains("fieldManager=switchyard-autoscaler"),
            "{}",
            s.query
        );
    }
    assert_eq!(
        api.replicas(),
        BTreeMap::from([("workers-a".into(), 3), ("workers-b".into(), 2)])
    );

    // Already there: reads, no patch.
    assert_eq!(actuator.current().await.unwrap(), Some(5));
    actuator.scale(5).await.unwrap();
    assert!(
        api.take_seen().iter().all(|s| s.method == Method::GET),
        "no patch when nothing changes"
    );

    // Down to one: only the Deployments whose share changed are patched... both here.
    actuator.scale(1).await.unwrap();
    let seen = api.take_seen();
    assert_eq!(
        seen.iter().map(|s| s.body.clone()).collect::<Vec<_>>(),
        [
            json!({"spec": {"replicas": 1}}),
            json!({"spec": {"replicas": 0}})
        ]
    );
    // Someone scaled workers-b by hand: the next read sees it and puts it back.
    api.replicas.lock().unwrap().insert("workers-b".into(), 4);
    assert_eq!(actuator.current().await.unwrap(), Some(5));
    api.take_seen();
    actuator.scale(1).await.unwrap();
    let seen = api.take_seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].path, path("workers-b"));
    assert_eq!(seen[0].body, json!({"spec": {"replicas": 0}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_deployment_is_an_error_naming_it() {
    let api = StandIn::with(&[("workers-a", 1)]);
    let url = api.clone().serve().await;
    let cfg = kube_config(&url, &["workers-a", "workers-gone"]);
    let mut actuator = Actuator::from_config(&cfg).await.expect("actuator");
    match actuator.current().await {
        Err(ActuatorError::Kubernetes { deployment, .. }) => assert_eq!(deployment, "workers-gone"),
        other => panic!("expected a Kubernetes error, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------------
// The local stack's actuator: real worker processes.
// ------------------------------------------------------------------------------------

/// Kills the workers a test started, whatever happens to the test.
struct Workers {
    run_dir: PathBuf,
    nats_url: String,
    namespace: String,
}

impl Workers {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_dir(&self.run_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|p| p.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        for pid in self.pids() {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        // The autoscaler's buckets (TestApp removes the namespace's streams and `workers`).
        let url = self.nats_url.clone();
        let ns = self.namespace.clone();
        let cleanup = async move {
            if let Ok(client) = async_nats::connect(url).await {
                let js = async_nats::jetstream::new(client);
                for bucket in ["autoscaler", "autoscaler_history"] {
                    let _ = js.delete_stream(format!("KV_{ns}_{bucket}")).await;
                }
            }
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            tokio::task::block_in_place(|| h.block_on(cleanup));
        }
    }
}

/// A worker configuration file for the test app's `us-east-1`: its catalog, NATS namespace
/// and Redis prefix, two slots, and a job that takes two seconds.
fn write_worker_config(app: &TestApp, dir: &Path) -> PathBuf {
    let env = TestEnv::get();
    let catalog = app
        .catalog
        .connect_options()
        .get_database()
        .expect("catalog database name")
        .to_owned();
    let path = dir.join("worker.toml");
    let toml = format!(
        r#"[worker]
slots = 2
heartbeat_every = "1s"
drain_grace = "10s"
backoff_base = "100ms"
workspace_root = "{ws}"
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
[telemetry]
log_format = "json"
log_filter = "info"
[executors.default]
type = "command"
command = ["sh", "-c", "sleep 2; echo ran $SWITCHYARD_JOB_ID"]
timeout = "30s"
"#,
        ws = dir.join("workspaces").display(),
        catalog = env.db_url(&catalog),
        nats = env.nats_us_url,
        ns = app.namespace,
        redis = env.redis_url,
    );
    std::fs::create_dir_all(dir.join("workspaces")).unwrap();
    std::fs::write(&path, toml).unwrap();
    path
}

async fn job_states(app: &TestApp, org: i64) -> Vec<(String, Option<String>)> {
    sqlx::query_as("select status, worker from job where org_id = $1")
        .bind(org)
        .fetch_all(&app.regions[US].shard)
        .await
        .expect("job rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_webhooks_makes_the_autoscaler_start_worker_processes_and_stop_them_after() {
    let worker = worker_binary();
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let workers = Workers {
        run_dir: run_dir.clone(),
        nats_url: TestEnv::get().nats_us_url.clone(),
        namespace: app.namespace.clone(),
    };

    let mut cfg = autoscaler_defaults();
    cfg.region.name = Region::new(US).unwrap();
    cfg.nats.url = TestEnv::get().nats_us_url.clone();
    cfg.nats.namespace = app.namespace.clone();
    cfg.sampler.every = Duration::from_millis(250);
    cfg.policy.decide_every = Duration::from_millis(500);
    cfg.policy.min_workers = 1;
    cfg.policy.max_workers = 4;
    cfg.policy.slots_per_worker = 2;
    cfg.policy.job_duration = Duration::from_secs(2);
    cfg.policy.lead_time = Duration::from_secs(5);
    cfg.policy.scale_down_window = Duration::from_secs(1);
    cfg.policy.fallback_scale_down_window = Duration::from_secs(2);
    cfg.history.save_every = Duration::from_secs(1);
    cfg.actuator.kind = ActuatorKind::Local;
    let local = &mut cfg.actuator.local;
    local.worker_binary = worker;
    local.worker_config = write_worker_config(&app, dir.path());
    local.run_dir = run_dir.clone();
    local.log_dir = dir.path().join("log");
    local.id_prefix = app.namespace.clone();
    local.ops_port_first = 0;
    cfg.validate().expect("valid autoscaler config");

    let nats = protocol::service::nats::connect(&cfg.nats, "autoscaler test")
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_url = format!("http://{}", ops.local_addr().unwrap());
    let scaler = tokio::spawn(Box::pin(::autoscaler::run(cfg, ops, stop.clone())));
    let region = Region::new(US).unwrap();
    let store = wait_for(
        "the autoscaler's buckets",
        Duration::from_secs(20),
        || async { Store::open(&nats).await.ok() },
    )
    .await;
    let state = || async { store.pool_state(&region).await.ok().flatten() };

    // The minimum: one worker process, up and beating.
    let first = wait_for("one live worker", Duration::from_secs(60), || async {
        state().await.filter(|s| s.actual == 1 && s.desired == 1)
    })
    .await;
    assert_eq!(first.actuator, "local");
    assert!(first.fallback, "no history yet: {first:?}");
    assert_eq!(first.last_decision.reason, "fallback");
    assert_eq!(workers.pids().len(), 1);

    // A burst: 16 two-second jobs for a pool of one worker with two slots.
    let org = app.create_org(US).await["id"].as_i64().unwrap();
    let inst = new_installation();
    app.bind_installation(US, org, inst).await;
    for _ in 0..16 {
        let r = app
            .send_webhook(US, "issues", &new_delivery(), &labeled_issue(inst, "bot"))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }

    // The pool grows to the maximum: more worker processes start and take jobs.
    // (desired, actual, worker processes) each time one of them changes.
    let timeline: Mutex<Vec<(u32, u32, usize)>> = Mutex::new(vec![(1, 1, 1)]);
    let record = |s: &PoolState, processes: usize| {
        let mut t = timeline.lock().unwrap();
        let point = (s.desired, s.actual, processes);
        if t.last() != Some(&point) {
            t.push(point);
        }
    };
    let grown = wait_for("the pool to grow", Duration::from_secs(60), || async {
        let s = state().await?;
        record(&s, workers.pids().len());
        (s.actual >= 3).then_some(s)
    })
    .await;
    assert!(grown.desired >= 3 && grown.desired <= 4, "{grown:?}");

    // Every job runs, on several of the started workers.
    let states = wait_for(
        "all 16 jobs to succeed",
        Duration::from_secs(90),
        || async {
            if let Some(s) = state().await {
                record(&s, workers.pids().len());
            }
            let jobs = job_states(&app, org).await;
            (jobs.len() == 16 && jobs.iter().all(|(st, _)| st == "succeeded")).then_some(jobs)
        },
    )
    .await;
    let ran_on: BTreeSet<String> = states.into_iter().filter_map(|(_, w)| w).collect();
    assert!(ran_on.len() >= 2, "jobs ran on {ran_on:?}");
    assert!(
        ran_on
            .iter()
            .all(|w| w.starts_with(&format!("{}-us-east-1-", app.namespace))),
        "{ran_on:?}"
    );

    // After the burst the extra workers are stopped (they drain and exit), down to the minimum.
    let settled = wait_for(
        "the pool to shrink to one",
        Duration::from_secs(60),
        || async {
            let s = state().await?;
            record(&s, workers.pids().len());
            (s.desired == 1 && s.actual == 1 && s.backlog == 0 && workers.pids().len() == 1)
                .then_some(s)
        },
    )
    .await;
    assert!(
        ["min", "fallback"].contains(&settled.last_decision.reason.as_str()),
        "{settled:?}"
    );
    let timeline = timeline.into_inner().unwrap();
    eprintln!("pool over the burst, (desired, actual, worker processes): {timeline:?}");
    assert!(
        timeline.iter().any(|&(_, actual, _)| actual >= 3) && timeline.last() == Some(&(1, 1, 1)),
        "{timeline:?}"
    );

    // The metrics the dashboards read.
    let text = reqwest::get(format!("{ops_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str, label: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("switchyard_autoscaler_{name}{{"))
                    && l.contains("region=\"us-east-1\"")
                    && l.contains(label)
            })
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| panic!("{name} {label} missing from\n{text}"))
    };
    assert_eq!(metric("desired_workers", ""), "1");
    assert_eq!(metric("actual_workers", ""), "1");
    assert_eq!(metric("backlog_jobs", ""), "0");
    assert_eq!(metric("oldest_wait_seconds", ""), "0");
    assert_eq!(metric("fallback", ""), "1");
    assert_eq!(metric("forecast_jobs_per_second", ""), "NaN");
    assert_eq!(metric("forecast_upper_jobs_per_second", ""), "NaN");
    assert_ne!(metric("decisions_total", "reason=\"fallback\""), "0");
    assert_eq!(metric("decisions_total", "reason=\"forecast\""), "0");

    // The autoscaler stops; its worker keeps running (a restarted autoscaler adopts it).
    stop.cancel();
    scaler.await.unwrap().expect("the autoscaler ran");
    let pids = workers.pids();
    assert_eq!(pids.len(), 1);
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), None).is_ok(),
        "the last worker outlives the autoscaler"
    );
    drop(workers);
    drop(app);
}

/// A pool state as an autoscaler would publish it.
fn pool_state(region: &str, desired: u32, reason: &str) -> PoolState {
    let now = chrono::Utc::now();
    PoolState {
        region: Region::new(region).unwrap(),
        actual: 2,
        desired,
        starting: desired.saturating_sub(2),
        actuator: "kubernetes".into(),
        min_workers: 1,
        max_workers: 50,
        arrival_jobs_per_second: 1.5,
        forecast_jobs_per_second: Some(2.0),
        forecast_upper: Some(3.25),
        backlog: 17,
        pending: 12,
        in_flight: 5,
        oldest_wait_seconds: 4.5,
        live_slots: 8,
        mean_job_seconds: 30.0,
        last_decision: protocol::autoscale::LastDecision {
            at: now,
            current: 2,
            desired,
            reason: reason.into(),
        },
        fallback: false,
        updated_at: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_every_regions_pool_through_its_jetstream_domain() {
    let app = TestApp::spawn_with(Options {
        workers: false,
        ..Options::default()
    })
    .await;
    // No autoscaler has run yet.
    let r = app.get(US, "/v1/admin/worker-pools", OPERATOR_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.body);
    assert!(
        items.iter().all(|i| i["status"] == "no_autoscaler"),
        "{}",
        r.body
    );

    // Each region's autoscaler publishes into its own region's NATS.
    let env = TestEnv::get();
    for (region, url, desired, reason) in [
        (US, &env.nats_us_url, 6, "forecast"),
        (EU, &env.nats_eu_url, 1, "min"),
    ] {
        let mut nats_cfg = app.regions[region].state.config.nats.clone();
        nats_cfg.url = url.clone();
        let nats = protocol::service::nats::connect(&nats_cfg, "test autoscaler")
            .await
            .unwrap();
        let store = Store::open(&nats).await.unwrap();
        store
            .publish(&pool_state(region, desired, reason))
            .await
            .unwrap();
    }
    // Both control planes see both pools: their own, and the other region's through the
    // leafnode to its JetStream domain.
    for from in [US, EU] {
        let r = app
            .get(from, "/v1/admin/worker-pools", OPERATOR_TOKEN)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let by_region: BTreeMap<&str, &Value> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["region"].as_str().unwrap(), i))
            .collect();
        let us = by_region[US];
        assert_eq!(us["status"], "ok", "{us}");
        assert_eq!(us["stale"], false);
        assert_eq!(us["pool"]["desired"], 6);
        assert_eq!(us["pool"]["backlog"], 17);
        assert_eq!(us["pool"]["forecast_upper"], 3.25);
        assert_eq!(us["pool"]["last_decision"]["reason"], "forecast");
        let eu = by_region[EU];
        assert_eq!(eu["status"], "ok", "{eu}");
        assert_eq!(eu["pool"]["desired"], 1);
        assert_eq!(eu["pool"]["last_decision"]["reason"], "min");
    }
    // The regions listing carries each region's pool too.
    let r = app.get(EU, "/v1/admin/regions", OPERATOR_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for item in r.body["items"].as_array().unwrap() {
        assert_eq!(item["worker_pool"]["status"], "ok", "{item}");
        assert_eq!(item["worker_pool"]["region"], item["name"], "{item}");
    }
    // Operators only.
    let org = app.create_org(US).await;
    let key = org["api_key"].as_str().unwrap();
    app.get(US, "/v1/admin/worker-pools", key)
        .await
        .assert_problem(403);
}
