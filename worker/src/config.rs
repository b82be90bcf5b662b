//! The worker's configuration: `config/defaults.toml` (compiled in), a `--config` file, then
//! `SWITCHYARD_WORKER_<SECTION>__<FIELD>` environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::Region;
use protocol::service::config::{
    self as common, ConfigError, DatabaseConfig, NatsConfig, RedisConfig, TelemetryConfig,
    redact_opt,
};
use protocol::service::github::GithubAppConfig;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");
pub const ENV_PREFIX: &str = "SWITCHYARD_WORKER_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub worker: WorkerConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub github: GithubConfig,
    pub telemetry: TelemetryConfig,
    /// Executors by job kind; `default` runs every kind not listed.
    pub executors: BTreeMap<String, ExecutorConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The region whose jobs this worker runs. Default `us-east-1`.
    pub region: Region,
    /// This worker's name in job events and heartbeats; empty means `<hostname>-<pid>`.
    /// Default empty.
    pub id: String,
    /// Jobs run at once (the worker's bulkhead). Default 4.
    pub slots: usize,
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default `127.0.0.1:9090`.
    pub ops_listen: SocketAddr,
    /// JetStream ack wait: a job not acknowledged (or reported in progress) within it is
    /// redelivered. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How often a running job is reported in progress; well under `ack_wait`. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub progress_every: Duration,
    /// Attempts before a job that keeps failing is `dead`. Default 3.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with jitter. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay. Default `2m`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// On SIGTERM, how long in-flight jobs may run on before they are handed back.
    /// Default `30s`.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Heartbeat period into the `workers` KV bucket. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_every: Duration,
    /// Where job workspaces are created; empty means the system temp directory.
    /// Default empty.
    pub workspace_root: String,
    /// How long a job holds its place in its org's concurrency cap without renewal (renewed
    /// with every progress report; a dead worker's place frees after it). Default `2m`.
    #[serde(with = "humantime_serde")]
    pub org_lease: Duration,
    /// How long a job held back by its org's cap waits before it is offered again.
    /// Default `1s`.
    #[serde(with = "humantime_serde")]
    pub cap_retry: Duration,
}

/// What the worker does on GitHub for a job.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// Post each finished job's outcome as a comment on its issue or pull request (once,
    /// however often the job is delivered). Default `true`.
    pub comments: bool,
    /// GitHub's web URL, for repository clones (`<web_url>/<owner>/<repo>.git`).
    /// Default `https://github.com`.
    pub web_url: String,
    /// Clone the job's repository into the workspace of `command` jobs. Default `true`.
    pub clone: bool,
    /// Depth of the clone; 0 clones the whole history. Default 1.
    pub clone_depth: u32,
    /// Longest a clone may take. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub clone_timeout: Duration,
    /// The GitHub App the worker acts as (tokens, comments). No GitHub effects without it.
    pub app: GithubAppConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorConfig {
    /// Runs a command in a fresh workspace.
    Command {
        /// Program and arguments.
        command: Vec<String>,
        /// Longest run; the process group is killed after it. Default `10m`.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// Asks an OpenAI-compatible chat endpoint and posts its answer.
    Llm {
        /// The API base URL, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// Model name.
        model: String,
        /// Bearer key of the endpoint, if it needs one.
        #[serde(default, serialize_with = "redact_opt")]
        api_key: Option<SecretString>,
        /// Longest one request may take. Default `60s`.
        #[serde(with = "humantime_serde", default = "default_llm_timeout")]
        timeout: Duration,
        /// Most tokens of an answer. Default 1024.
        #[serde(default = "default_max_tokens")]
        max_tokens: u32,
        /// The system prompt. Default: a short instruction to help with the issue or pull
        /// request.
        #[serde(default = "default_system_prompt")]
        system_prompt: String,
    },
}

fn default_llm_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_tokens() -> u32 {
    1024
}

fn default_system_prompt() -> String {
    "You are a code assistant working on a GitHub issue or pull request. Answer concisely.".into()
}

impl Config {
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
        let w = &self.worker;
        rule(
            w.slots > 0 && w.slots <= 1024,
            "worker.slots must be 1-1024",
        )?;
        rule(
            w.max_attempts >= 1,
            "worker.max_attempts must be at least 1",
        )?;
        rule(
            w.progress_every < w.ack_wait,
            "worker.progress_every must be shorter than worker.ack_wait",
        )?;
        rule(
            w.backoff_base <= w.backoff_max,
            "worker.backoff_base must not exceed worker.backoff_max",
        )?;
        rule(
            self.executors.contains_key("default"),
            "executors.default must be configured",
        )?;
        for (kind, e) in &self.executors {
            match e {
                ExecutorConfig::Command { command, timeout } => rule(
                    !command.is_empty() && !timeout.is_zero(),
                    &format!(
                        "executors.{kind}: command must not be empty and timeout must be positive"
                    ),
                )?,
                ExecutorConfig::Llm {
                    base_url,
                    model,
                    timeout,
                    max_tokens,
                    ..
                } => rule(
                    (base_url.starts_with("http://") || base_url.starts_with("https://"))
                        && !model.is_empty()
                        && !timeout.is_zero()
                        && *max_tokens > 0,
                    &format!(
                        "executors.{kind}: needs an http(s) base_url, a model, a timeout and max_tokens"
                    ),
                )?,
            }
        }
        rule(
            w.org_lease > w.progress_every,
            "worker.org_lease must be longer than worker.progress_every",
        )?;
        Ok(())
    }

    /// This worker's id.
    pub fn worker_id(&self) -> String {
        if self.worker.id.is_empty() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default();
            let host = if host.is_empty() {
                "worker".to_owned()
            } else {
                host
            };
            format!("{host}-{}", std::process::id())
        } else {
            self.worker.id.clone()
        }
    }

    pub fn workspace_root(&self) -> PathBuf {
        if self.worker.workspace_root.is_empty() {
            std::env::temp_dir()
        } else {
            PathBuf::from(&self.worker.workspace_root)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        let cfg: Config = common::load(DEFAULTS, None, ENV_PREFIX).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.worker.slots, 4);
    }

    #[test]
    fn a_progress_period_longer_than_the_ack_wait_is_refused() {
        let mut cfg: Config = common::load(DEFAULTS, None, ENV_PREFIX).unwrap();
        cfg.worker.progress_every = Duration::from_secs(60);
        assert!(cfg.validate().is_err());
    }
}
