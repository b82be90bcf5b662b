//! The control plane's configuration: typed, documented, validated at load.
//!
//! Sources, each overriding the one before: `config/defaults.toml` (compiled in), the file
//! given with `--config` (or `SWITCHYARD_CP_CONFIG`), then `SWITCHYARD_CP_<SECTION>__<FIELD>`
//! environment variables (e.g. `SWITCHYARD_CP_DATABASE__CATALOG_URL`). `control-plane config-check` prints the result with secrets
//! redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use protocol::Region;
use protocol::service::config::{
    self as common, ConfigError, DatabaseConfig, NatsConfig, RedisConfig, TelemetryConfig,
    redact_all, redact_opt,
};
use protocol::service::github::GithubAppConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The committed defaults.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "SWITCHYARD_CP_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub region: RegionConfig,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub tenancy: TenancyConfig,
    pub github: GithubConfig,
    pub intake: IntakeConfig,
    pub recorder: RecorderConfig,
    pub telemetry: TelemetryConfig,
    pub billing: BillingConfig,
    /// Plans by name (`free`, `team`, `enterprise` by default).
    pub plans: BTreeMap<String, PlanConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region this control plane serves; it must be registered in the catalog.
    /// Default `us-east-1`.
    pub name: Region,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// This region's public base URL, as clients reach it. Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Longest time one request may take before it is answered `503`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest JSON body the API accepts, in bytes (`413` above). Default 1 MiB.
    pub api_body_limit: usize,
    /// Threads of the async runtime that serves requests and runs the consumers; `0` (the
    /// default) = one per core available to the process (its cgroup CPU limit counted). Where
    /// the cores are shared with NATS and PostgreSQL on one machine, `1` spends less on
    /// waking threads than a second thread earns (the local stack sets it; see
    /// docs/operations.md, "Runtime threads").
    pub worker_threads: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Platform operator bearer tokens (bootstrap credentials); two may live during
    /// rotation. Default: none (operator endpoints then refuse everyone).
    #[serde(serialize_with = "redact_all")]
    pub operator_tokens: Vec<SecretString>,
    /// Whether anyone may create an org (`POST /v1/orgs`) without an operator token.
    /// Default `false`.
    pub self_serve_signup: bool,
    pub jwt: JwtConfig,
}

/// Access tokens (`POST /v1/auth/token`): Ed25519-signed JWTs (`alg: EdDSA`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `iss` of issued tokens; the only issuer accepted. Default `switchyard`.
    pub issuer: String,
    /// `aud` of issued tokens; the only audience accepted. Default `switchyard-api`.
    pub audience: String,
    /// Lifetime of an access token, at most 15 minutes. Default `15m`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The Ed25519 private key (PKCS#8 PEM) that signs tokens; `control-plane keys generate`
    /// makes one. Required.
    #[serde(default, serialize_with = "redact_opt")]
    pub signing_key: Option<SecretString>,
    /// The signing key's id (`kid`). Default `default`.
    pub signing_kid: String,
    /// Further public keys whose tokens are still accepted and published in the JWKS, so a
    /// key can be rotated without cutting off tokens already issued. Default: none.
    pub verify_keys: Vec<VerifyKey>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    pub kid: String,
    /// Ed25519 public key (SPKI PEM).
    pub public_key: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    /// How long an offboarded org's data is kept before it may be purged. Default `90d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// Webhook secrets of the GitHub App; a delivery signed with any of them is accepted
    /// (two live during rotation). Required.
    #[serde(serialize_with = "redact_all")]
    pub webhook_secrets: Vec<SecretString>,
    /// Largest webhook body accepted, in bytes (`413` above). Default 25 MiB, GitHub's cap.
    pub webhook_body_limit: usize,
    /// Longest wait for JetStream to acknowledge a delivery's messages before intake
    /// answers `503`. Default `3s`.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// The GitHub App: id, private key, API URL, rate-limit reserve.
    pub app: GithubAppConfig,
    pub install: InstallConfig,
    pub recovery: RecoveryConfig,
}

/// Installing the App on an org's GitHub account.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallConfig {
    /// The App's slug, in `<web_url>/apps/<slug>/installations/new`. Default `switchyard`.
    pub app_slug: String,
    /// GitHub's web URL (`https://github.com`, a GitHub Enterprise Server, the emulator).
    /// Default `https://github.com`.
    pub web_url: String,
    /// How long an install link (its signed `state`) stays valid. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub state_ttl: Duration,
    /// Where `GET /github/setup` sends the browser after binding (with `org` and
    /// `installation_id` added); answers JSON when unset. Default: unset.
    #[serde(default)]
    pub after_setup_url: Option<String>,
}

/// Delivery recovery: asking GitHub to redeliver what failed on our side.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Whether this control plane runs the reconciler (one runs at a time, by lock).
    /// Default `true`.
    pub enabled: bool,
    /// Time between passes. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// How far back a pass looks at GitHub's deliveries. Default `6h`.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Most redeliveries one pass asks for. Default 100.
    pub max_per_run: usize,
    /// Most redeliveries asked for one delivery, ever. Default 3.
    pub max_attempts_per_delivery: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// How long intake trusts its cached installation → org and rule lookups without a
    /// change notice. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Entries per cache. Default 100,000.
    pub cache_capacity: u64,
    /// Most delivery records in one message of the deliveries stream: the records of
    /// deliveries accepted while the previous messages of their shard await JetStream go
    /// together (see `queue::records`). Default 256; 1 publishes every record alone, as the
    /// bare object control planes before batching read (docs/operations.md).
    pub record_batch_max: usize,
    /// Messages of records per shard awaiting JetStream's acknowledgement at once. Default 2.
    pub record_batches_in_flight: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// Most messages read, and most delivery records written to the shards, per batch.
    /// Default 256.
    pub batch_size: usize,
    /// Longest a partial batch waits for more deliveries. Default `50ms`.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How long a delivery being written may go unacknowledged before JetStream delivers it
    /// again; a batch still being written is reported in progress every third of it. Applies
    /// when the recorder's consumer is created. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// ISO 4217 code of every price. Default `USD`.
    pub currency: String,
}

/// A plan. Money is integer: minor units for prices, micro-units of a minor unit for the
/// overage unit prices.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// Monthly base price in minor units.
    pub monthly_price_minor: i64,
    /// Sustained webhook rate per org, per minute.
    pub webhook_rate_per_minute: u32,
    /// Webhooks an org may send at once above the sustained rate.
    pub webhook_burst: u32,
    /// Sustained requests per minute of the whole org on the org-scoped API
    /// (`/v1/orgs/{org}/…`); above it `429` (see `billing::limits`). Default: free 60,
    /// team 600, enterprise 6,000.
    pub api_rate_per_minute: u32,
    /// Requests the org may make at once above its sustained API rate. Default: free 30,
    /// team 120, enterprise 1,000.
    pub api_burst: u32,
    /// Sustained requests per minute of one API key (and the access tokens issued for it),
    /// so that one runaway script cannot use up its org's whole budget. At most
    /// `api_rate_per_minute`. Default: free 60, team 300, enterprise 3,000.
    pub api_key_rate_per_minute: u32,
    /// Requests one API key may make at once; at most `api_burst`. Default: free 30, team 60,
    /// enterprise 500.
    pub api_key_burst: u32,
    /// Jobs of one org that may run at once across the region's workers.
    pub max_concurrent_jobs: u32,
    /// When true, jobs beyond the included job minutes are `skipped_quota` instead of billed.
    pub hard_job_minutes: bool,
    /// Quantities included in the monthly price.
    pub included: Quantities,
    /// Price per unit beyond the included quantity, in micro-units of a minor unit.
    pub overage_micros: Quantities,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    pub webhook_deliveries: i64,
    pub job_minutes: i64,
    pub llm_tokens: i64,
}

impl Config {
    /// Loads and validates the configuration.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let cfg: Config = common::load(DEFAULTS, file, ENV_PREFIX)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Rule(msg.into()))
            }
        };
        self.telemetry.validate()?;
        rule(
            self.server.public_url.starts_with("http://")
                || self.server.public_url.starts_with("https://"),
            "server.public_url must be an http(s) URL",
        )?;
        rule(
            self.server.api_body_limit >= 1024,
            "server.api_body_limit must be at least 1 KiB",
        )?;
        rule(
            !self.github.webhook_secrets.is_empty(),
            "github.webhook_secrets must name at least one secret",
        )?;
        rule(
            self.github.webhook_secrets.len() <= 2,
            "github.webhook_secrets holds at most two secrets (current and next)",
        )?;
        rule(
            self.github
                .webhook_secrets
                .iter()
                .all(|s| s.expose_secret().len() >= 16),
            "every webhook secret must be at least 16 characters",
        )?;
        rule(
            self.auth
                .operator_tokens
                .iter()
                .all(|s| s.expose_secret().len() >= 24),
            "every operator token must be at least 24 characters",
        )?;
        rule(
            self.database.max_connections > 0,
            "database.max_connections must be positive",
        )?;
        rule(
            self.database.shard_max_connections > 0,
            "database.shard_max_connections must be positive",
        )?;
        rule(
            self.recorder.batch_size > 0,
            "recorder.batch_size must be positive",
        )?;
        rule(
            self.recorder.ack_wait >= Duration::from_secs(1),
            "recorder.ack_wait must be at least 1s",
        )?;
        rule(
            (1..=10_000).contains(&self.intake.record_batch_max),
            "intake.record_batch_max must be between 1 and 10,000",
        )?;
        rule(
            (1..=64).contains(&self.intake.record_batches_in_flight),
            "intake.record_batches_in_flight must be between 1 and 64",
        )?;
        rule(
            self.billing.currency.len() == 3
                && self
                    .billing
                    .currency
                    .chars()
                    .all(|c| c.is_ascii_uppercase()),
            "billing.currency must be an ISO 4217 code such as USD",
        )?;
        rule(
            !self.plans.is_empty(),
            "at least one plan must be configured",
        )?;
        for (name, plan) in &self.plans {
            let ok = plan.monthly_price_minor >= 0
                && plan.max_concurrent_jobs > 0
                && plan.webhook_rate_per_minute > 0
                && plan.api_rate_per_minute > 0
                && plan.api_burst > 0
                && plan.api_key_rate_per_minute > 0
                && plan.api_key_burst > 0
                && [&plan.included, &plan.overage_micros]
                    .iter()
                    .all(|q| q.webhook_deliveries >= 0 && q.job_minutes >= 0 && q.llm_tokens >= 0);
            rule(
                ok,
                &format!(
                    "plan {name}: prices and quantities must be non-negative, rates and caps positive"
                ),
            )?;
            rule(
                plan.api_key_rate_per_minute <= plan.api_rate_per_minute
                    && plan.api_key_burst <= plan.api_burst,
                &format!(
                    "plan {name}: an API key's rate and burst cannot exceed its org's (api_key_* <= api_*)"
                ),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_required(mut cfg: Config) -> Config {
        cfg.github.webhook_secrets = vec![SecretString::from("0123456789abcdef")];
        cfg.auth.jwt.signing_key = Some(SecretString::from(
            crate::tenancy::jwt::generate_pem().private_pem,
        ));
        cfg
    }

    fn defaults() -> Config {
        with_required(common::load(DEFAULTS, None, ENV_PREFIX).expect("defaults parse"))
    }

    #[test]
    fn the_defaults_parse_and_validate_once_a_webhook_secret_is_set() {
        let cfg = defaults();
        cfg.validate().unwrap();
        assert_eq!(cfg.github.webhook_body_limit, 25 * 1024 * 1024);
        assert!(cfg.plans.contains_key("free") && cfg.plans.contains_key("team"));
    }

    #[test]
    fn a_missing_webhook_secret_is_a_load_error() {
        let mut cfg = defaults();
        cfg.github.webhook_secrets.clear();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{DEFAULTS}\n[typo]\nx = 1\n");
        assert!(common::load::<Config>(&text, None, ENV_PREFIX).is_err());
    }

    #[test]
    fn short_operator_tokens_are_refused() {
        let mut cfg = defaults();
        cfg.auth.operator_tokens = vec![SecretString::from("short")];
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn a_recorder_ack_wait_under_a_second_is_refused() {
        let mut cfg = defaults();
        assert_eq!(cfg.recorder.ack_wait, Duration::from_secs(30));
        cfg.recorder.ack_wait = Duration::from_millis(900);
        let e = cfg.validate().unwrap_err();
        assert!(e.to_string().contains("recorder.ack_wait"), "{e}");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let mut cfg = defaults();
        cfg.auth.operator_tokens = vec![SecretString::from("operator-token-operator-token")];
        let text = toml_like(&cfg);
        assert!(!text.contains("operator-token-operator-token"));
        assert!(!text.contains("0123456789abcdef"));
        assert!(text.contains("[redacted]"));
    }

    fn toml_like(cfg: &Config) -> String {
        serde_json::to_string(cfg).unwrap()
    }
}
