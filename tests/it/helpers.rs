//! `TestApp`: two regions (`us-east-1`, `eu-west-1`), each with a control plane and a
//! worker, one shard each, a fresh catalog — all in databases and a NATS namespace of the
//! test's own, removed when the test ends.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use control_plane::AppState;
use protocol::Region;
use protocol::service::config::load;
use protocol::service::db::{PoolSettings, ShardRouter};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use switchyard_tests::env::TestEnv;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

pub const US: &str = "us-east-1";
pub const EU: &str = "eu-west-1";

/// Options of a test app.
#[derive(Clone, Debug)]
pub struct Options {
    /// NATS URL of each region (default: the shared test servers).
    pub nats: HashMap<&'static str, String>,
    /// The command the workers run for every job.
    pub command: Vec<String>,
    /// Whether to start workers.
    pub workers: bool,
    /// How long intake waits for JetStream.
    pub publish_timeout: Duration,
    /// Whether the GitHub emulator creates installations on first use.
    pub auto_provision: bool,
    /// How often the delivery reconciler runs.
    pub recovery_every: Duration,
    /// The emulator's hourly rate limit per caller.
    pub github_rate_limit: u64,
    /// Whether the workers act as the GitHub App (tokens, clones, comments).
    pub worker_github: bool,
    /// Life of the emulator's installation tokens.
    pub token_ttl: Duration,
    /// How long before expiry tokens are renewed.
    pub token_refresh_margin: Duration,
    /// Executors of other job kinds, beside `default` (which runs `command`).
    pub executors: Vec<(String, worker::config::ExecutorConfig)>,
    /// Slots of each worker.
    pub slots: usize,
    /// Attempts before a failing job is dead.
    pub max_attempts: i32,
    /// How long each job may run.
    pub job_timeout: Duration,
    /// Redis of the control planes and workers (default: the shared test server).
    pub redis_url: Option<String>,
    /// Most delivery records the recorder writes at a time.
    pub recorder_batch: usize,
    /// How long a delivery the recorder is writing may go unacknowledged.
    pub recorder_ack_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let env = TestEnv::get();
        Self {
            nats: HashMap::from([(US, env.nats_us_url.clone()), (EU, env.nats_eu_url.clone())]),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo ran $SWITCHYARD_JOB_ID".into(),
            ],
            workers: true,
            publish_timeout: Duration::from_secs(3),
            auto_provision: true,
            recovery_every: Duration::from_secs(3600),
            github_rate_limit: 5000,
            worker_github: false,
            token_ttl: Duration::from_secs(3600),
            token_refresh_margin: Duration::from_secs(300),
            executors: Vec::new(),
            slots: 4,
            max_attempts: 3,
            job_timeout: Duration::from_secs(30),
            redis_url: None,
            recorder_batch: 256,
            recorder_ack_wait: Duration::from_secs(30),
        }
    }
}

/// One region of the test app.
#[derive(Debug)]
pub struct RegionApp {
    pub url: String,
    pub shard: PgPool,
    pub worker_id: String,
    pub state: AppState,
}

pub struct TestApp {
    pub regions: HashMap<&'static str, RegionApp>,
    /// The GitHub emulator the apps talk to, and its URL.
    pub github: switchyard_tests::emulator::Emulator,
    pub github_url: String,
    pub catalog: PgPool,
    pub namespace: String,
    pub http: reqwest::Client,
    databases: Vec<String>,
    nats_urls: Vec<String>,
    shutdown: CancellationToken,
    _tasks: Vec<JoinHandle<()>>,
}

static INIT: std::sync::Once = std::sync::Once::new();

/// The test process's token signing key (every control plane of a test shares it).
pub fn signing_key() -> &'static control_plane::tenancy::jwt::KeyPair {
    static KEY: std::sync::OnceLock<control_plane::tenancy::jwt::KeyPair> =
        std::sync::OnceLock::new();
    KEY.get_or_init(control_plane::tenancy::jwt::generate_pem)
}

fn init_logging() {
    INIT.call_once(|| {
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Creates `name` from a template holding `kind`'s migrations (made once per migration set).
async fn create_db(admin: &PgPool, name: &str, kind: &str) {
    let template = template(admin, kind).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create database {name} template {template}"
    )))
    .execute(admin)
    .await
    .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

async fn template(admin: &PgPool, kind: &str) -> String {
    let migrator = match kind {
        "catalog" => &control_plane::db::migrate::CATALOG,
        _ => &control_plane::db::migrate::SHARD,
    };
    let mut h: u64 = 1469598103934665603;
    for m in migrator.iter() {
        for b in m.checksum.iter() {
            h = (h ^ u64::from(*b)).wrapping_mul(1099511628211);
        }
    }
    let name = format!("syt_template_{kind}_{:x}", h & 0xffff_ffff_ffff);
    // One test process makes the template; the others wait on the lock.
    let mut conn = admin.acquire().await.expect("admin connection");
    sqlx::query("select pg_advisory_lock(7421)")
        .execute(&mut *conn)
        .await
        .expect("lock");
    let exists: Option<i32> = sqlx::query_scalar("select 1 from pg_database where datname = $1")
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await
        .expect("pg_database");
    if exists.is_none() {
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut *conn)
            .await
            .expect("create template");
        let url = TestEnv::get().db_url(&name);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("template connection");
        migrator.run(&pool).await.expect("migrate template");
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {name} is_template true"
        )))
        .execute(&mut *conn)
        .await
        .expect("mark template");
    }
    sqlx::query("select pg_advisory_unlock(7421)")
        .execute(&mut *conn)
        .await
        .expect("unlock");
    name
}

pub async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub const APP_ID: u64 = 424_242;
pub const APP_SLUG: &str = "switchyard-test";

/// A file of `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        switchyard_tests::env::workspace_root()
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// The tests' GitHub App, as the control planes and workers see it.
pub fn github_app(api_url: &str) -> protocol::service::github::GithubAppConfig {
    github_app_with(api_url, Duration::from_secs(300))
}

/// The tests' GitHub App, renewing tokens `margin` before they expire.
pub fn github_app_with(
    api_url: &str,
    margin: Duration,
) -> protocol::service::github::GithubAppConfig {
    protocol::service::github::GithubAppConfig {
        app_id: APP_ID,
        private_key: Some(SecretString::from(fixture("github-app-test-key.pem"))),
        private_key_file: None,
        api_url: api_url.to_owned(),
        request_timeout: Duration::from_secs(10),
        token_refresh_margin: margin,
        rate_reserve: 0.05,
        rate_max_wait: Duration::from_secs(2),
    }
}

/// A GitHub emulator on a port of its own, sending webhooks to the us-east-1 intake.
async fn start_emulator(
    opts: &Options,
    us_url: &str,
    shutdown: CancellationToken,
) -> (switchyard_tests::emulator::Emulator, String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let emulator =
        switchyard_tests::emulator::Emulator::new(switchyard_tests::emulator::EmulatorConfig {
            app_id: APP_ID,
            app_slug: APP_SLUG.into(),
            app_public_key_pem: fixture("github-app-test-key.pub.pem"),
            webhook_url: Some(format!("{us_url}/webhooks/github")),
            webhook_secret: WEBHOOK_SECRET.into(),
            auto_provision: opts.auto_provision,
            rate_limit: opts.github_rate_limit,
            token_ttl_secs: i64::try_from(opts.token_ttl.as_secs()).unwrap_or(3600),
            base_url: url.clone(),
        });
    emulator.state.lock().expect("emulator state").setup_url =
        Some(format!("{us_url}/github/setup"));
    let serving = emulator.clone();
    let task = tokio::spawn(async move {
        let _ = serving.serve_until(listener, shutdown).await;
    });
    (emulator, url, task)
}

fn cp_config(
    region: &str,
    catalog_url: &str,
    nats_url: &str,
    namespace: &str,
    opts: &Options,
    github_url: &str,
) -> control_plane::Config {
    let mut c: control_plane::Config = load(
        control_plane::config::DEFAULTS,
        None,
        "SWITCHYARD_TESTS_NO_ENV_",
    )
    .expect("defaults");
    c.region.name = Region::new(region).expect("region");
    c.database.catalog_url = SecretString::from(catalog_url.to_owned());
    c.database.max_connections = 5;
    c.database.shard_max_connections = 5;
    // Tests share two cores: a connection may be slow to come back, which is not what they test.
    c.database.acquire_timeout = Duration::from_secs(10);
    c.database.shard_map_refresh = Duration::from_secs(1);
    c.nats.url = nats_url.to_owned();
    c.nats.namespace = namespace.to_owned();
    c.nats.connect_timeout = Duration::from_secs(2);
    c.redis.url = SecretString::from(
        opts.redis_url
            .clone()
            .unwrap_or_else(|| TestEnv::get().redis_url.clone()),
    );
    c.redis.key_prefix = format!("{namespace}:");
    c.auth.operator_tokens = vec![SecretString::from(OPERATOR_TOKEN)];
    c.github.webhook_secrets = vec![SecretString::from(WEBHOOK_SECRET)];
    c.auth.jwt.signing_key = Some(SecretString::from(signing_key().private_pem.clone()));
    c.auth.jwt.signing_kid = "test-1".into();
    c.github.publish_timeout = opts.publish_timeout;
    c.recorder.batch_size = opts.recorder_batch;
    c.recorder.ack_wait = opts.recorder_ack_wait;
    c.github.app = github_app_with(github_url, opts.token_refresh_margin);
    c.github.install.app_slug = APP_SLUG.into();
    c.github.install.web_url = github_url.to_owned();
    c.github.recovery.every = opts.recovery_every;
    // Tests send webhooks far faster than the plans allow: the rate limits stay out of their
    // way, but for the plan `limited` (10 a minute, 3 at once) that tests them.
    for plan in c.plans.values_mut() {
        plan.webhook_rate_per_minute = plan.webhook_rate_per_minute.max(1_000_000);
        plan.webhook_burst = plan.webhook_burst.max(100_000);
        plan.api_rate_per_minute = plan.api_rate_per_minute.max(1_000_000);
        plan.api_burst = plan.api_burst.max(100_000);
        plan.api_key_rate_per_minute = plan.api_key_rate_per_minute.max(1_000_000);
        plan.api_key_burst = plan.api_key_burst.max(100_000);
    }
    // The API rate limit's plan: the org 4 requests at once, one key 3, each refilled one
    // per 10 s — slow enough that a loaded machine sends a burst well within one refill.
    let mut api_limited = c.plans["team"].clone();
    api_limited.api_rate_per_minute = 6;
    api_limited.api_burst = 4;
    api_limited.api_key_rate_per_minute = 6;
    api_limited.api_key_burst = 3;
    c.plans.insert("api_limited".into(), api_limited);
    let mut limited = c.plans["team"].clone();
    limited.webhook_rate_per_minute = 10;
    limited.webhook_burst = 3;
    c.plans.insert("limited".into(), limited);
    // A plan whose included job minutes (one) are a hard limit, for the quota tests.
    let mut quota = c.plans["team"].clone();
    quota.hard_job_minutes = true;
    quota.included.job_minutes = 1;
    c.plans.insert("quota".into(), quota);
    // A plan whose orgs may run two jobs at once, for the fairness tests.
    let mut capped = c.plans["team"].clone();
    capped.max_concurrent_jobs = 2;
    c.plans.insert("capped".into(), capped);
    c.intake.cache_ttl = Duration::from_secs(2);
    c.recorder.max_wait = Duration::from_millis(10);
    c.validate().expect("valid test config");
    c
}

fn worker_config(
    region: &str,
    id: &str,
    catalog_url: &str,
    nats_url: &str,
    namespace: &str,
    opts: &Options,
    github_url: &str,
) -> worker::Config {
    let mut c: worker::Config =
        load(worker::config::DEFAULTS, None, "SWITCHYARD_TESTS_NO_ENV_").expect("defaults");
    c.worker.region = Region::new(region).expect("region");
    c.worker.id = id.to_owned();
    c.worker.ops_listen = "127.0.0.1:0".parse().expect("addr");
    c.worker.heartbeat_every = Duration::from_secs(1);
    c.worker.backoff_base = Duration::from_millis(100);
    c.worker.drain_grace = Duration::from_secs(5);
    c.worker.slots = opts.slots;
    c.worker.max_attempts = opts.max_attempts;
    c.worker.progress_every = Duration::from_secs(2);
    c.worker.org_lease = Duration::from_secs(10);
    c.worker.cap_retry = Duration::from_millis(200);
    c.redis.url = SecretString::from(
        opts.redis_url
            .clone()
            .unwrap_or_else(|| TestEnv::get().redis_url.clone()),
    );
    c.redis.key_prefix = format!("{namespace}:");
    if opts.worker_github {
        c.github.app = github_app_with(github_url, opts.token_refresh_margin);
        c.github.web_url = github_url.to_owned();
        c.github.clone_depth = 0;
    }
    c.database.catalog_url = SecretString::from(catalog_url.to_owned());
    c.database.max_connections = 3;
    c.database.shard_max_connections = 4;
    c.nats.url = nats_url.to_owned();
    c.nats.namespace = namespace.to_owned();
    c.executors.insert(
        "default".into(),
        worker::config::ExecutorConfig::Command {
            command: opts.command.clone(),
            timeout: opts.job_timeout,
        },
    );
    for (kind, exec) in &opts.executors {
        c.executors.insert(kind.clone(), exec.clone());
    }
    c.validate().expect("valid worker config");
    c
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> TestApp {
        init_logging();
        let env = TestEnv::get();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = &id[..12];
        let namespace = format!("t{token}");
        let admin = pool(&env.pg_admin_url).await;

        let catalog_db = format!("syt_{token}_catalog");
        let us_db = format!("syt_{token}_us");
        let eu_db = format!("syt_{token}_eu");
        create_db(&admin, &catalog_db, "catalog").await;
        create_db(&admin, &us_db, "shard").await;
        create_db(&admin, &eu_db, "shard").await;
        admin.close().await;
        let catalog_url = env.db_url(&catalog_db);
        let catalog = pool(&catalog_url).await;

        let us_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let eu_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let us_url = format!("http://{}", us_listener.local_addr().expect("addr"));
        let eu_url = format!("http://{}", eu_listener.local_addr().expect("addr"));
        use control_plane::db::{regions, shards};
        regions::upsert(&catalog, US, &us_url)
            .await
            .expect("region");
        regions::upsert(&catalog, EU, &eu_url)
            .await
            .expect("region");
        shards::add(&catalog, "us-east-1-0", US, &env.db_url(&us_db))
            .await
            .expect("shard");
        shards::add(&catalog, "eu-west-1-0", EU, &env.db_url(&eu_db))
            .await
            .expect("shard");
        shards::add_range(&catalog, "us-east-1-0", 1_000_000, 2_000_000)
            .await
            .expect("range");
        shards::add_range(&catalog, "eu-west-1-0", 2_000_000, 3_000_000)
            .await
            .expect("range");
        let router = ShardRouter::load(
            catalog.clone(),
            PoolSettings {
                max_connections: 2,
                min_connections: 0,
                acquire_timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(30),
                down_after: 2,
            },
        )
        .await
        .expect("router");
        control_plane::db::migrate::shards(&router)
            .await
            .expect("migrate shards");

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let (github, github_url, github_task) =
            start_emulator(&opts, &us_url, shutdown.clone()).await;
        tasks.push(github_task);
        let mut regions = HashMap::new();
        for (region, listener, url, db) in [
            (US, us_listener, us_url, us_db.clone()),
            (EU, eu_listener, eu_url, eu_db.clone()),
        ] {
            let nats_url = opts.nats[region].clone();
            let state: AppState = control_plane::build(cp_config(
                region,
                &catalog_url,
                &nats_url,
                &namespace,
                &opts,
                &github_url,
            ))
            .await
            .expect("control plane starts");
            let s = state.clone();
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                control_plane::run(s, listener, sd)
                    .await
                    .expect("control plane runs");
            }));
            let worker_id = format!("test-{region}-1");
            if opts.workers {
                let w = worker::build(worker_config(
                    region,
                    &worker_id,
                    &catalog_url,
                    &nats_url,
                    &namespace,
                    &opts,
                    &github_url,
                ))
                .await
                .expect("worker starts");
                let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let sd = shutdown.clone();
                tasks.push(tokio::spawn(async move {
                    worker::run(w, ops, sd).await.expect("worker runs");
                }));
            }
            let shard = pool(&env.db_url(&db)).await;
            regions.insert(
                region,
                RegionApp {
                    url,
                    shard,
                    worker_id,
                    state,
                },
            );
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let nats_urls = opts.nats.values().cloned().collect();
        TestApp {
            regions,
            catalog,
            namespace,
            http,
            github,
            github_url,
            databases: vec![catalog_db, us_db, eu_db],
            nats_urls,
            shutdown,
            _tasks: tasks,
        }
    }

    pub fn url(&self, region: &str, path: &str) -> String {
        format!("{}{path}", self.regions[region].url)
    }

    /// Sends a request; returns status, headers and the body as JSON (`Null` when empty,
    /// a string when not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        region: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(region, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, region: &str, path: &str, token: &str) -> Resp {
        self.call(reqwest::Method::GET, region, path, Some(token), None)
            .await
    }

    pub async fn post(&self, region: &str, path: &str, token: &str, body: Value) -> Resp {
        self.call(reqwest::Method::POST, region, path, Some(token), Some(body))
            .await
    }

    /// A new empty database on the test server, dropped with the app; returns its URL.
    pub async fn create_empty_db(&mut self, suffix: &str) -> String {
        let env = TestEnv::get();
        let name = format!(
            "{}_{suffix}",
            self.databases[0].trim_end_matches("_catalog")
        );
        let admin = pool(&env.pg_admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        admin.close().await;
        self.databases.push(name.clone());
        env.db_url(&name)
    }

    /// Creates an org in `region` as the operator; returns the 201 body.
    pub async fn create_org(&self, region: &str) -> Value {
        self.create_org_on(region, "team").await
    }

    /// Creates an org on `plan` in `region` as the operator; returns the 201 body.
    pub async fn create_org_on(&self, region: &str, plan: &str) -> Value {
        let slug = format!("org-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let r = self
            .post(
                region,
                "/v1/orgs",
                OPERATOR_TOKEN,
                json!({"slug": slug, "name": "Test Org", "region": region, "plan": plan,
                       "owner_email": format!("owner@{slug}.example")}),
            )
            .await;
        assert_eq!(r.status, 201, "create org: {}", r.body);
        r.body
    }

    /// Binds installation `id` to `org` (in the org's region) as the operator.
    pub async fn bind_installation(&self, region: &str, org: i64, id: i64) {
        let r = self
            .post(
                region,
                &format!("/v1/orgs/{org}/github/installations"),
                OPERATOR_TOKEN,
                json!({"installation_id": id}),
            )
            .await;
        assert_eq!(r.status, 201, "bind installation: {}", r.body);
    }

    /// Sends a webhook signed with the app's secret.
    pub async fn send_webhook(
        &self,
        region: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> Resp {
        self.send_webhook_signed(region, event, delivery, payload, WEBHOOK_SECRET)
            .await
    }

    pub async fn send_webhook_signed(
        &self,
        region: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
        secret: &str,
    ) -> Resp {
        let body = serde_json::to_vec(payload).expect("payload");
        let sig = control_plane::intake::signature::sign(secret, &body);
        let r = self
            .http
            .post(self.url(region, "/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .expect("webhook sent");
        Resp::from(r).await
    }
}

/// An `issues.labeled` payload from GitHub's examples, for `installation` and `label`.
pub fn labeled_issue(installation: i64, label: &str) -> Value {
    let mut p = switchyard_tests::fixtures::example("issues", Some("labeled"));
    p["installation"] =
        json!({"id": installation, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u"});
    p["label"]["name"] = json!(label);
    p
}

pub fn new_delivery() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn new_installation() -> i64 {
    i64::from(rand::random::<u32>() >> 1) + 1
}

/// The `worker` executable of this build, built when missing or stale, as `make up` builds
/// it (`cargo build --workspace`, so it shares the workspace's compiled dependencies).
pub fn worker_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/it-<hash> → target/<profile>/worker
            let exe = std::env::current_exe().expect("test executable");
            let profile_dir = exe
                .parent()
                .and_then(std::path::Path::parent)
                .expect("the test executable lives in target/<profile>/deps");
            let target_dir = profile_dir.parent().expect("target directory");
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "--workspace",
                    "--bin",
                    "worker",
                    "--target-dir",
                ])
                .arg(target_dir)
                .current_dir(switchyard_tests::env::workspace_root())
                .env("SQLX_OFFLINE", "true")
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the worker binary failed");
            let binary = profile_dir.join("worker");
            assert!(
                binary.exists(),
                "{} missing after the build",
                binary.display()
            );
            binary
        })
        .clone()
}

/// Waits until `check` returns `Some`, polling every 50 ms; panics with `what` at the
/// deadline.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts this is a problem document with `status`.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{:?}",
            self.headers
        );
        assert_eq!(self.body["status"], status, "{}", self.body);
        assert!(
            self.body["title"].is_string() && self.body["detail"].is_string(),
            "{}",
            self.body
        );
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self._tasks);
        let databases = std::mem::take(&mut self.databases);
        let namespace = self.namespace.clone();
        let nats_urls = std::mem::take(&mut self.nats_urls);
        let admin_url = TestEnv::get().pg_admin_url.clone();
        // Every pool this test holds, to close before the databases go.
        let mut pools: Vec<PgPool> = vec![self.catalog.clone()];
        for r in self.regions.values() {
            pools.push(r.shard.clone());
            pools.push(r.state.catalog.clone());
            pools.extend(r.state.shards.all().into_iter().map(|h| h.pool));
        }
        let cleanup = async move {
            // Let the apps finish and close their connections first, so that dropping the
            // databases never waits on a session of theirs.
            let _ = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(tasks))
                .await;
            if let Ok(admin) = PgPoolOptions::new()
                .max_connections(1)
                .connect(&admin_url)
                .await
            {
                for db in databases {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {db} with (force)"
                    )))
                    .execute(&admin)
                    .await;
                }
            }
            for url in nats_urls {
                delete_namespace_streams(&url, &namespace).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            // Block this worker thread only: the apps' tasks keep running on the others.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(cleanup));
            }
            _ => panic!(
                "integration tests run on the multi-thread runtime (#[tokio::test(flavor = \"multi_thread\")])"
            ),
        }
    }
}

async fn delete_namespace_streams(url: &str, namespace: &str) {
    use futures::TryStreamExt;
    let Ok(Ok(client)) =
        tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url)).await
    else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let prefix = namespace.to_ascii_uppercase();
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
    for name in names {
        if name.starts_with(&format!("{prefix}_")) || name.starts_with(&format!("KV_{namespace}_"))
        {
            let _ = js.delete_stream(&name).await;
        }
    }
}
