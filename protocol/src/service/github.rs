//! GitHub, as the App.
//!
//! * App-level calls (installations, hook deliveries) are signed with the App's JWT
//!   (octocrab makes and renews it).
//! * Installation tokens are minted per installation and repository (a job's token can touch
//!   only its repository), cached in Redis until shortly before they expire, and minted once
//!   however many callers ask at the same time (a lock per token in this process and in Redis).
//!   Without Redis, tokens are cached in this process only.
//! * Every response's rate-limit headers are remembered per installation (and for the App);
//!   when the remaining budget falls under a reserve, calls wait for the reset, or fail as
//!   transient when the reset is too far off. The remaining budget is exported as a metric.
//! * Idempotent calls are retried on transient failures with jittered exponential backoff;
//!   after repeated transient failures a circuit breaker fails calls fast for a while.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, StatusCode};
use octocrab::Octocrab;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::config::redact_opt;

/// The GitHub App a service acts as.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAppConfig {
    /// The App's id; 0 means no App is configured (GitHub calls then fail). Default 0.
    pub app_id: u64,
    /// The App's private key (RSA PEM). Either this or `private_key_file`.
    #[serde(default, serialize_with = "redact_opt")]
    pub private_key: Option<SecretString>,
    /// A file holding the App's private key. Default: unset.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// REST API base URL: `https://api.github.com`, `https://HOST/api/v3` for GitHub
    /// Enterprise Server, or an emulator. Default `https://api.github.com`.
    pub api_url: String,
    /// Longest one call may take. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Installation tokens are renewed when less than this is left of their life.
    /// Default `5m`.
    #[serde(with = "humantime_serde")]
    pub token_refresh_margin: Duration,
    /// Share of the hourly rate limit kept in reserve: below it, calls wait for the reset.
    /// Default 0.05.
    pub rate_reserve: f64,
    /// Longest a call waits for the rate limit to reset before failing as transient.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub rate_max_wait: Duration,
}

impl GithubAppConfig {
    pub fn is_configured(&self) -> bool {
        self.app_id != 0
    }

    fn key_pem(&self) -> Result<String, GithubError> {
        match (&self.private_key, &self.private_key_file) {
            (Some(k), _) => Ok(k.expose_secret().to_owned()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| GithubError::Config(format!("cannot read {}: {e}", path.display()))),
            (None, None) => Err(GithubError::Config(
                "github.app needs private_key or private_key_file".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    #[error("no GitHub App is configured")]
    NotConfigured,
    #[error("GitHub App configuration: {0}")]
    Config(String),
    #[error("not found on GitHub")]
    NotFound,
    #[error("GitHub refused: {0}")]
    Denied(String),
    #[error("GitHub rate limit; retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("GitHub unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected answer from GitHub: {0}")]
    Invalid(String),
}

impl GithubError {
    /// Worth trying again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GithubError::RateLimited { .. } | GithubError::Unavailable(_)
        )
    }
}

/// Whose budget a call spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    App,
    Installation(i64),
}

#[derive(Clone, Copy, Debug)]
struct Limit {
    limit: u64,
    remaining: u64,
    reset: Instant,
}

/// Rate-limit budgets seen in responses.
#[derive(Debug, Default)]
struct Budget {
    seen: Mutex<HashMap<Caller, Limit>>,
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

impl Budget {
    fn observe(&self, caller: Caller, h: &HeaderMap) {
        let (Some(limit), Some(remaining), Some(reset)) = (
            header_u64(h, "x-ratelimit-limit"),
            header_u64(h, "x-ratelimit-remaining"),
            header_u64(h, "x-ratelimit-reset"),
        ) else {
            return;
        };
        let now_unix = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let reset = Instant::now() + Duration::from_secs(reset.saturating_sub(now_unix));
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(
                caller,
                Limit {
                    limit,
                    remaining,
                    reset,
                },
            );
        }
    }

    /// How long `caller` should wait before its next call, if at all.
    fn wait_for(&self, caller: Caller, reserve: f64) -> Option<Duration> {
        let seen = self.seen.lock().ok()?;
        let l = seen.get(&caller)?;
        let now = Instant::now();
        let floor = (l.limit as f64 * reserve).ceil() as u64;
        (l.remaining <= floor && l.reset > now).then(|| l.reset - now)
    }

    /// The lowest remaining budget (App, and across installations).
    fn lowest(&self) -> (Option<u64>, Option<u64>) {
        let Ok(seen) = self.seen.lock() else {
            return (None, None);
        };
        let now = Instant::now();
        let app = seen
            .get(&Caller::App)
            .filter(|l| l.reset > now)
            .map(|l| l.remaining);
        let inst = seen
            .iter()
            .filter(|(c, l)| matches!(c, Caller::Installation(_)) && l.reset > now)
            .map(|(_, l)| l.remaining)
            .min();
        (app, inst)
    }
}

/// Fails fast after repeated transient failures, then lets one call through to probe.
#[derive(Debug, Default)]
struct Breaker {
    state: Mutex<(u32, Option<Instant>)>,
}

const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(10);

impl Breaker {
    fn check(&self) -> Result<(), GithubError> {
        let Ok(mut s) = self.state.lock() else {
            return Ok(());
        };
        match s.1 {
            Some(until) if Instant::now() < until => Err(GithubError::Unavailable(
                "circuit open after repeated failures".into(),
            )),
            Some(_) => {
                // Half open: this call probes; keep the breaker open for the others.
                s.1 = Some(Instant::now() + BREAKER_OPEN_FOR);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn record(&self, ok: bool) {
        if let Ok(mut s) = self.state.lock() {
            if ok {
                *s = (0, None);
            } else {
                s.0 += 1;
                if s.0 >= BREAKER_THRESHOLD {
                    s.1 = Some(Instant::now() + BREAKER_OPEN_FOR);
                }
            }
        }
    }
}

/// An installation token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// The metrics of GitHub calls.
#[derive(Clone, Debug)]
pub struct GithubMetrics {
    pub calls: prometheus::IntCounterVec,
    pub rate_remaining: prometheus::IntGaugeVec,
    pub tokens_minted: prometheus::IntCounter,
    pub throttled: prometheus::IntCounter,
}

impl GithubMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let calls = prometheus::IntCounterVec::new(
            prometheus::Opts::new("github_calls_total", "GitHub API calls by outcome"),
            &["outcome"],
        )?;
        let rate_remaining = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "github_rate_limit_remaining",
                "Remaining GitHub API budget: the App's, and the lowest of any installation's",
            ),
            &["scope"],
        )?;
        let tokens_minted = prometheus::IntCounter::new(
            "github_tokens_minted_total",
            "Installation tokens minted",
        )?;
        let throttled = prometheus::IntCounter::new(
            "github_throttled_total",
            "Calls delayed or refused to stay within the GitHub rate limit",
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(rate_remaining.clone()))?;
        registry.register(Box::new(tokens_minted.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        Ok(Self {
            calls,
            rate_remaining,
            tokens_minted,
            throttled,
        })
    }
}

/// The GitHub App client. Cheap to share (`Arc`).
pub struct Github {
    cfg: GithubAppConfig,
    app: Option<Octocrab>,
    plain: Octocrab,
    redis: Option<redis::aio::ConnectionManager>,
    redis_prefix: String,
    budget: Budget,
    breaker: Breaker,
    local_tokens: Mutex<HashMap<String, Token>>,
    mint_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: GithubMetrics,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github")
            .field("app_id", &self.cfg.app_id)
            .field("api_url", &self.cfg.api_url)
            .finish_non_exhaustive()
    }
}

/// A repository, as GitHub lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub id: i64,
    pub full_name: String,
}

/// An installation, as GitHub describes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Installation {
    pub id: i64,
    pub account: Account,
    #[serde(default)]
    pub suspended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub repository_selection: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// An issue or pull request comment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comment {
    pub id: i64,
    #[serde(default)]
    pub body: Option<String>,
}

/// A webhook delivery of the App, as `GET /app/hook/deliveries` lists them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    pub redelivery: bool,
    pub status: String,
    pub status_code: i64,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation_id: Option<i64>,
}

impl Github {
    /// A client for the configured App. Without an App (`app_id` 0) every call fails with
    /// [`GithubError::NotConfigured`].
    pub fn new(
        cfg: GithubAppConfig,
        redis: Option<redis::aio::ConnectionManager>,
        redis_prefix: &str,
        registry: &prometheus::Registry,
    ) -> Result<Self, GithubError> {
        let builder = || {
            Octocrab::builder()
                .base_uri(cfg.api_url.as_str())
                .map(|b| {
                    b.set_connect_timeout(Some(cfg.request_timeout))
                        .set_read_timeout(Some(cfg.request_timeout))
                })
                .map_err(|e| GithubError::Config(format!("github.app.api_url: {e}")))
        };
        let app = if cfg.is_configured() {
            let key = octocrab::EncodingKey::from_rsa_pem(cfg.key_pem()?.as_bytes())
                .map_err(|e| GithubError::Config(format!("the App's private key: {e}")))?;
            Some(
                builder()?
                    .app(octocrab::models::AppId(cfg.app_id), key)
                    .build()
                    .map_err(|e| GithubError::Config(e.to_string()))?,
            )
        } else {
            None
        };
        let plain = builder()?
            .build()
            .map_err(|e| GithubError::Config(e.to_string()))?;
        let metrics =
            GithubMetrics::new(registry).map_err(|e| GithubError::Config(e.to_string()))?;
        Ok(Self {
            cfg,
            app,
            plain,
            redis,
            redis_prefix: redis_prefix.to_owned(),
            budget: Budget::default(),
            breaker: Breaker::default(),
            local_tokens: Mutex::new(HashMap::new()),
            mint_locks: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn is_configured(&self) -> bool {
        self.app.is_some()
    }

    /// One HTTP call, with budget, breaker, timeout and (for `retry`) retries.
    async fn call<B: Serialize + ?Sized>(
        &self,
        caller: Caller,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&B>,
        retry: bool,
    ) -> Result<(StatusCode, HeaderMap, Bytes), GithubError> {
        let client = match token {
            Some(_) => &self.plain,
            None => self.app.as_ref().ok_or(GithubError::NotConfigured)?,
        };
        let attempts = if retry { 3 } else { 1 };
        let mut delay = Duration::from_millis(100);
        let mut last = GithubError::Unavailable("no attempt made".into());
        for attempt in 1..=attempts {
            if let Some(wait) = self.budget.wait_for(caller, self.cfg.rate_reserve) {
                self.metrics.throttled.inc();
                if wait > self.cfg.rate_max_wait {
                    return Err(GithubError::RateLimited { retry_after: wait });
                }
                tracing::info!(?caller, ?wait, "waiting for the GitHub rate limit to reset");
                tokio::time::sleep(wait).await;
            }
            self.breaker.check()?;
            let result = self.send(client, token, method.clone(), path, body).await;
            let outcome = match &result {
                Ok((status, headers, _)) => {
                    self.budget.observe(caller, headers);
                    classify(*status, headers)
                }
                Err(e) => Err(e.clone()),
            };
            self.breaker
                .record(!matches!(&outcome, Err(GithubError::Unavailable(_))));
            self.export_budget();
            match outcome {
                Ok(()) => {
                    self.metrics.calls.with_label_values(&["ok"]).inc();
                    return result;
                }
                Err(e) => {
                    self.metrics
                        .calls
                        .with_label_values(&[if e.is_transient() {
                            "transient"
                        } else {
                            "error"
                        }])
                        .inc();
                    if !e.is_transient() || attempt == attempts {
                        return Err(e);
                    }
                    last = e;
                }
            }
            let jitter = rand::rng().random_range(0.5..1.5);
            tokio::time::sleep(delay.mul_f64(jitter)).await;
            delay *= 2;
        }
        Err(last)
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        client: &Octocrab,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), GithubError> {
        // A relative URI: octocrab completes it with the base URI, and attaches credentials
        // only to requests it completed so (or to api.github.com itself).
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(t) = token {
            builder = builder.header("authorization", format!("token {t}"));
        }
        let req = client
            .build_request(builder, body)
            .map_err(|e| GithubError::Invalid(e.to_string()))?;
        let work = async {
            let resp = client
                .execute(req)
                .await
                .map_err(|e| GithubError::Unavailable(e.to_string()))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = client
                .body_to_string(resp)
                .await
                .map_err(|e| GithubError::Unavailable(e.to_string()))?;
            Ok((status, headers, Bytes::from(text)))
        };
        tokio::time::timeout(self.cfg.request_timeout, work)
            .await
            .map_err(|_| GithubError::Unavailable("timed out".into()))?
    }

    fn export_budget(&self) {
        let (app, inst) = self.budget.lowest();
        if let Some(v) = app {
            self.metrics
                .rate_remaining
                .with_label_values(&["app"])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        if let Some(v) = inst {
            self.metrics
                .rate_remaining
                .with_label_values(&["installation_min"])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        caller: Caller,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&B>,
        retry: bool,
    ) -> Result<(T, HeaderMap), GithubError> {
        let (_, headers, bytes) = self.call(caller, token, method, path, body, retry).await?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| GithubError::Invalid(format!("{path}: {e}")))?;
        Ok((value, headers))
    }

    /// `GET /app/installations/{id}`: the installation, if it is one of this App's.
    pub async fn installation(&self, id: i64) -> Result<Installation, GithubError> {
        Ok(self
            .json(
                Caller::App,
                None,
                Method::GET,
                &format!("/app/installations/{id}"),
                None::<&()>,
                true,
            )
            .await?
            .0)
    }

    /// The repositories an installation can reach (`GET /installation/repositories`, every
    /// page).
    pub async fn installation_repositories(&self, id: i64) -> Result<Vec<Repository>, GithubError> {
        #[derive(Deserialize)]
        struct Page {
            repositories: Vec<Repository>,
        }
        let token = self.token(id, None).await?;
        let mut all = Vec::new();
        for page in 1..=100 {
            let path = format!("/installation/repositories?per_page=100&page={page}");
            let (p, _): (Page, _) = self
                .json(
                    Caller::Installation(id),
                    Some(&token.token),
                    Method::GET,
                    &path,
                    None::<&()>,
                    true,
                )
                .await?;
            let n = p.repositories.len();
            all.extend(p.repositories);
            if n < 100 {
                break;
            }
        }
        Ok(all)
    }

    fn token_key(&self, installation: i64, repo: Option<&str>) -> String {
        format!(
            "{}gh:token:{}:{installation}:{}",
            self.redis_prefix,
            self.cfg.app_id,
            repo.unwrap_or("*")
        )
    }

    fn fresh(&self, t: &Token) -> bool {
        let margin = chrono::Duration::from_std(self.cfg.token_refresh_margin).unwrap_or_default();
        t.expires_at - margin > Utc::now()
    }

    async fn cached(&self, key: &str) -> Option<Token> {
        if let Some(t) = self
            .local_tokens
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .filter(|t| self.fresh(t))
        {
            return Some(t);
        }
        let mut redis = self.redis.clone()?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut redis)
            .await
            .ok()?;
        let t: Token = serde_json::from_str(&raw?).ok()?;
        if !self.fresh(&t) {
            return None;
        }
        if let Ok(mut m) = self.local_tokens.lock() {
            m.insert(key.to_owned(), t.clone());
        }
        Some(t)
    }

    /// An installation token, for one repository (`owner/name`) or the whole installation:
    /// from the cache while it has more than `token_refresh_margin` to live, else minted —
    /// once, however many callers ask at the same time, in this process or another.
    pub async fn token(&self, installation: i64, repo: Option<&str>) -> Result<Token, GithubError> {
        let key = self.token_key(installation, repo);
        if let Some(t) = self.cached(&key).await {
            return Ok(t);
        }
        let lock = {
            let mut locks = self
                .mint_locks
                .lock()
                .map_err(|_| GithubError::Invalid("lock poisoned".into()))?;
            locks.entry(key.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if let Some(t) = self.cached(&key).await {
            return Ok(t);
        }
        // Across processes: one mints, the others wait for its token in Redis.
        let lock_key = format!("{key}:lock");
        let me = uuid::Uuid::new_v4().to_string();
        let mut holds_lock = false;
        if let Some(mut redis) = self.redis.clone() {
            let got: Result<Option<String>, _> = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(10_000)
                .query_async(&mut redis)
                .await;
            match got {
                Ok(Some(_)) => holds_lock = true,
                Ok(None) => {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Some(t) = self.cached(&key).await {
                            return Ok(t);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Redis unavailable; minting without the shared lock");
                }
            }
        }
        let minted = self.mint(installation, repo).await;
        if let Ok(t) = &minted {
            self.store(&key, t).await;
        }
        if holds_lock && let Some(mut redis) = self.redis.clone() {
            let release = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            );
            let _: Result<i64, _> = release
                .key(&lock_key)
                .arg(&me)
                .invoke_async(&mut redis)
                .await;
        }
        minted
    }

    async fn mint(&self, installation: i64, repo: Option<&str>) -> Result<Token, GithubError> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            repositories: Option<Vec<&'a str>>,
        }
        let body = Body {
            repositories: repo.map(|r| vec![r.rsplit('/').next().unwrap_or(r)]),
        };
        let path = format!("/app/installations/{installation}/access_tokens");
        let (t, _): (Token, _) = self
            .json(Caller::App, None, Method::POST, &path, Some(&body), true)
            .await?;
        self.metrics.tokens_minted.inc();
        tracing::debug!(installation, repo, expires_at = %t.expires_at, "installation token minted");
        Ok(t)
    }

    async fn store(&self, key: &str, t: &Token) {
        if let Ok(mut m) = self.local_tokens.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(key.to_owned(), t.clone());
        }
        let ttl = (t.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .saturating_sub(self.cfg.token_refresh_margin);
        if ttl.is_zero() {
            return;
        }
        if let (Some(mut redis), Ok(json)) = (self.redis.clone(), serde_json::to_string(t)) {
            let r: Result<(), _> = redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                .query_async(&mut redis)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "cannot cache the token in Redis");
            }
        }
    }

    /// Comments of an issue or pull request, oldest first (every page).
    pub async fn issue_comments(
        &self,
        installation: i64,
        repo: &str,
        number: i64,
    ) -> Result<Vec<Comment>, GithubError> {
        let token = self.token(installation, Some(repo)).await?;
        let mut all = Vec::new();
        for page in 1..=50 {
            let path = format!("/repos/{repo}/issues/{number}/comments?per_page=100&page={page}");
            let (batch, _): (Vec<Comment>, _) = self
                .json(
                    Caller::Installation(installation),
                    Some(&token.token),
                    Method::GET,
                    &path,
                    None::<&()>,
                    true,
                )
                .await?;
            let n = batch.len();
            all.extend(batch);
            if n < 100 {
                break;
            }
        }
        Ok(all)
    }

    /// Posts a comment. Not retried here: a lost answer must not post twice (the caller
    /// looks for its marker before trying again).
    pub async fn create_issue_comment(
        &self,
        installation: i64,
        repo: &str,
        number: i64,
        body: &str,
    ) -> Result<Comment, GithubError> {
        let token = self.token(installation, Some(repo)).await?;
        let path = format!("/repos/{repo}/issues/{number}/comments");
        Ok(self
            .json(
                Caller::Installation(installation),
                Some(&token.token),
                Method::POST,
                &path,
                Some(&serde_json::json!({"body": body})),
                false,
            )
            .await?
            .0)
    }

    /// The App's recent webhook deliveries, newest first: one page and the cursor of the next.
    pub async fn hook_deliveries(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<HookDelivery>, Option<String>), GithubError> {
        let path = match cursor {
            Some(c) => format!("/app/hook/deliveries?per_page=100&cursor={c}"),
            None => "/app/hook/deliveries?per_page=100".to_owned(),
        };
        let (items, headers): (Vec<HookDelivery>, _) = self
            .json(Caller::App, None, Method::GET, &path, None::<&()>, true)
            .await?;
        Ok((items, next_cursor(&headers)))
    }

    /// Asks GitHub to deliver a delivery again.
    pub async fn redeliver(&self, delivery_id: i64) -> Result<(), GithubError> {
        let path = format!("/app/hook/deliveries/{delivery_id}/attempts");
        self.call(Caller::App, None, Method::POST, &path, None::<&()>, false)
            .await
            .map(|_| ())
    }
}

/// Maps a status to an outcome: 2xx fine; rate limits and 5xx transient; the rest permanent.
fn classify(status: StatusCode, headers: &HeaderMap) -> Result<(), GithubError> {
    if status.is_success() {
        return Ok(());
    }
    let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
    let exhausted = header_u64(headers, "x-ratelimit-remaining") == Some(0);
    match status.as_u16() {
        404 => Err(GithubError::NotFound),
        429 => Err(GithubError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
        }),
        403 if exhausted || retry_after.is_some() => Err(GithubError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
        }),
        401 | 403 => Err(GithubError::Denied(status.to_string())),
        s if s >= 500 => Err(GithubError::Unavailable(status.to_string())),
        _ => Err(GithubError::Invalid(status.to_string())),
    }
}

/// The `cursor` of the `rel="next"` link, if any.
fn next_cursor(h: &HeaderMap) -> Option<String> {
    let link = h.get("link")?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| part.split(['<', '>']).nth(1))
        .and_then(|url| {
            url.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("cursor="))
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn statuses_are_classified_for_retries() {
        assert!(classify(StatusCode::CREATED, &HeaderMap::new()).is_ok());
        assert_eq!(
            classify(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Err(GithubError::NotFound)
        );
        assert!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new())
                .unwrap_err()
                .is_transient()
        );
        assert!(
            !classify(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new())
                .unwrap_err()
                .is_transient()
        );
        assert!(
            !classify(StatusCode::FORBIDDEN, &HeaderMap::new())
                .unwrap_err()
                .is_transient()
        );
        let limited = classify(
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "0")]),
        )
        .unwrap_err();
        assert!(matches!(limited, GithubError::RateLimited { .. }));
        let secondary =
            classify(StatusCode::FORBIDDEN, &headers(&[("retry-after", "30")])).unwrap_err();
        assert_eq!(
            secondary,
            GithubError::RateLimited {
                retry_after: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn the_budget_asks_to_wait_only_under_the_reserve_and_before_the_reset() {
        let b = Budget::default();
        let reset = (Utc::now().timestamp() + 100).to_string();
        b.observe(
            Caller::Installation(1),
            &headers(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4000"),
                ("x-ratelimit-reset", &reset),
            ]),
        );
        assert!(b.wait_for(Caller::Installation(1), 0.05).is_none());
        b.observe(
            Caller::Installation(1),
            &headers(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "250"),
                ("x-ratelimit-reset", &reset),
            ]),
        );
        let wait = b.wait_for(Caller::Installation(1), 0.05).unwrap();
        assert!(wait > Duration::from_secs(90) && wait <= Duration::from_secs(100));
        assert!(
            b.wait_for(Caller::Installation(2), 0.05).is_none(),
            "budgets are per installation"
        );
        let past = (Utc::now().timestamp() - 1).to_string();
        b.observe(
            Caller::App,
            &headers(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &past),
            ]),
        );
        assert!(
            b.wait_for(Caller::App, 0.05).is_none(),
            "a reset in the past frees the budget"
        );
        assert_eq!(b.lowest().1, Some(250));
    }

    #[test]
    fn the_breaker_opens_after_repeated_failures_and_success_closes_it() {
        let br = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            br.record(false);
        }
        assert!(br.check().is_ok());
        br.record(false);
        assert!(br.check().is_err());
        br.record(true);
        assert!(br.check().is_ok());
    }

    #[test]
    fn the_next_cursor_is_read_from_the_link_header() {
        let h = headers(&[(
            "link",
            "<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_12077215967>; rel=\"next\"",
        )]);
        assert_eq!(next_cursor(&h).as_deref(), Some("v1_12077215967"));
        assert_eq!(next_cursor(&HeaderMap::new()), None);
        let h = headers(&[("link", "<https://x/a?cursor=abc>; rel=\"prev\"")]);
        assert_eq!(next_cursor(&h), None);
    }
}
