//! Layered, typed configuration.
//!
//! Every service reads, in order, each overriding the one before: its committed defaults
//! file (compiled in), an optional TOML file (`--config`), and environment variables
//! `<PREFIX><SECTION>__<FIELD>` with the service's own prefix (`SWITCHYARD_CP_`,
//! `SWITCHYARD_WORKER_`, `SWITCHYARD_AUTOSCALER_`; double underscore between levels, e.g.
//! `SWITCHYARD_CP_DATABASE__CATALOG_URL`). Prefixes never overlap, so the services can share
//! one environment. Unknown keys are errors, so a typo fails at start-up, not at the first
//! request.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Loads a service's configuration from its defaults, an optional file and the environment.
pub fn load<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Toml::string(defaults));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__").ignore(&["config"]));
    fig.extract().map_err(|e| ConfigError::Invalid(Box::new(e)))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

/// Logs and traces.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format: `json` (one object per line) or `pretty`. Default `json`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` directive syntax. Default `info`.
    pub log_filter: String,
    /// OTLP/HTTP traces endpoint (e.g. `http://otel-collector:4318/v1/traces`). Traces are
    /// exported only when this is set. Default: unset.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces to sample, 0.0–1.0 (a sampled parent is always followed).
    /// Default 1.0.
    pub trace_sample_ratio: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(ConfigError::Rule(
                "telemetry.trace_sample_ratio must be in 0.0–1.0".into(),
            ));
        }
        Ok(())
    }
}

/// The NATS connection of a service (its own region's server or cluster).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of every subject, stream and bucket name; empty in production, set by tests
    /// so that they can share a server. Default empty.
    pub namespace: String,
    /// How long to wait for the initial connection. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a JetStream API call or publish acknowledgement may take. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// JetStream duplicate window of the jobs and deliveries streams: a webhook redelivered
    /// within it makes no new message. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long deliveries and usage events are kept in their streams. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// The catalog database.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Catalog connection string. Required.
    #[serde(serialize_with = "redact")]
    pub catalog_url: SecretString,
    /// Connections in the catalog pool. Default 10.
    pub max_connections: u32,
    /// Connections kept open in every pool. Default 0.
    pub min_connections: u32,
    /// Longest wait for a pooled connection. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Connections in each shard's pool. Default 10.
    pub shard_max_connections: u32,
    /// How often the shard map is re-read from the catalog even without a change notice.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub shard_map_refresh: Duration,
    /// How often every shard is probed (`select 1`) for the per-shard circuit breaker.
    /// Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub shard_probe_every: Duration,
    /// How long a probe may take before it counts as a failure. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub shard_probe_timeout: Duration,
    /// Consecutive failed probes that open a shard's breaker: its orgs then get `503` at once
    /// until a probe succeeds again. Default 2.
    pub shard_down_after: u32,
}

/// Redis (rate limits, quotas, leases, the installation-token cache).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL. Default `redis://127.0.0.1:6379`.
    #[serde(serialize_with = "redact")]
    pub url: SecretString,
    /// Prefix of every key this service writes. Default `sy:`.
    pub key_prefix: String,
    /// Longest wait to (re)connect. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for one command. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

/// Serializes a secret as `"[redacted]"` (for `config-check`).
pub fn redact<S: serde::Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

/// Serializes a list of secrets as `"[redacted]"` each.
pub fn redact_all<S: serde::Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for _ in v {
        seq.serialize_element("[redacted]")?;
    }
    seq.end()
}

/// Serializes an optional secret as `"[redacted]"` when set.
pub fn redact_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}
