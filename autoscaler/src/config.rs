//! The autoscaler's configuration: `config/defaults.toml` (compiled in), a `--config` file
//! (or `SWITCHYARD_AUTOSCALER_CONFIG`), then `SWITCHYARD_AUTOSCALER_<SECTION>__<FIELD>`
//! environment variables (e.g. `SWITCHYARD_AUTOSCALER_POLICY__MAX_WORKERS`). Validated at
//! load; `autoscaler config-check` prints the result.
//!
//! One autoscaler sizes the worker pool of one region.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::Region;
use protocol::service::config::{self as common, ConfigError, NatsConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

use crate::forecast::ForecastConfig;
use crate::policy::{Bounds, PredictiveConfig, ReactiveConfig};

/// The committed defaults.
pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "SWITCHYARD_AUTOSCALER_";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub region: RegionConfig,
    pub ops: OpsConfig,
    /// The region's NATS: its jobs stream, the `workers` bucket, and where the pool state and
    /// the arrival history are kept.
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub sampler: SamplerConfig,
    pub policy: PolicyConfig,
    pub history: HistoryConfig,
    pub actuator: ActuatorConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// The region whose worker pool this autoscaler sizes. Default `us-east-1`.
    pub name: Region,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default `127.0.0.1:9100`.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// How often the jobs stream, the workers' consumer and the `workers` bucket are read;
    /// arrivals are counted per sample. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

/// The predictive policy and its reactive fallback (autoscaler/src/policy.rs).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Fewest workers the pool keeps, even idle. Default 1.
    pub min_workers: u32,
    /// Most workers the pool may have. Default 500.
    pub max_workers: u32,
    /// Job slots of one worker, used while no live worker reports its own. Default 4.
    pub slots_per_worker: u32,
    /// Mean run time of a job, used while no live worker reports one. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub job_duration: Duration,
    /// Time from starting a worker to its first job: the lead time the forecast must cover.
    /// Default `90s`.
    #[serde(with = "humantime_serde")]
    pub lead_time: Duration,
    /// How often the pool size is decided (and the state published). Default `15s`.
    #[serde(with = "humantime_serde")]
    pub decide_every: Duration,
    /// A scale-down takes the highest target of this window: the target must stay low this
    /// long. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub scale_down_window: Duration,
    /// A scale-down removes at most this share of the pool per decision (at least one
    /// worker). Default 0.5.
    pub scale_down_step: f64,
    /// Reactive fallback (no forecast yet): no change while the backlog is within this share
    /// of the pool's slots, as the Kubernetes HPA does. Default 0.1.
    pub fallback_tolerance: f64,
    /// Reactive fallback: a scale-down takes the highest recommendation of this window, the
    /// HPA's default. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub fallback_scale_down_window: Duration,
    pub forecast: ForecastSettings,
}

/// The arrival forecast (autoscaler/src/forecast.rs).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastSettings {
    /// Width of a history bucket; must divide a day. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// How far ahead the forecast reaches. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// History a fit learns from (the arrival history keeps this plus 8 days). Default `14d`.
    #[serde(with = "humantime_serde")]
    pub train_window: Duration,
    /// Fewest training rows (buckets) a fit needs; with less history the policy falls back
    /// to the reactive rule and says so. Default 72.
    pub min_train_rows: usize,
    /// Time between refits. Default `6h`.
    #[serde(with = "humantime_serde")]
    pub refit_every: Duration,
    /// Quantile of recent forecast residuals that lifts the forecast to its upper bound.
    /// Default 0.9.
    pub upper_quantile: f64,
    /// Recent residuals per horizon step the bound is taken from. Default 576.
    pub residual_window: usize,
    /// Ridge penalty per training row. Default 0.001.
    pub ridge: f64,
    /// Offset of the log transform, as a share of the mean bucket. Default 0.3.
    pub log_offset_share: f64,
    /// How much of the bucket in progress must have passed before its rate so far counts.
    /// Default `15s`.
    #[serde(with = "humantime_serde")]
    pub nowcast_after: Duration,
}

/// The arrival history, kept in the KV bucket `<autoscaler bucket>_history` under the
/// region's name, so that a restart keeps the forecast.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// How often the history is saved (also at shutdown). Default `1m`.
    #[serde(with = "humantime_serde")]
    pub save_every: Duration,
}

/// What carries out the decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActuatorKind {
    /// Patches the `scale` subresource of the region's worker Deployments.
    Kubernetes,
    /// Starts and stops `worker` processes on this machine (the local stack).
    Local,
    /// Logs the decisions and changes nothing.
    DryRun,
}

impl ActuatorKind {
    /// The name used in logs and the published state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Local => "local",
            Self::DryRun => "dry_run",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorConfig {
    /// `kubernetes`, `local` or `dry_run`. Default `dry_run`.
    pub kind: ActuatorKind,
    pub kubernetes: KubernetesConfig,
    pub local: LocalConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The worker Deployments of the region; the desired count is split evenly across them.
    /// Required for `kubernetes`. Default: none.
    pub deployments: Vec<String>,
    /// Their namespace; empty means the autoscaler's own (in a pod) or the kubeconfig
    /// context's. Default empty.
    pub namespace: String,
    /// Kubernetes API URL reached without credentials (e.g. `kubectl proxy`'s
    /// `http://127.0.0.1:8001`); empty means the in-cluster service account, or the
    /// kubeconfig (`KUBECONFIG`, `~/.kube/config`) outside a cluster. Default empty.
    pub api_url: String,
    /// Field manager recorded on the replica counts it sets. Default `switchyard-autoscaler`.
    pub field_manager: String,
    /// Longest one API request may take. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Worker processes on this machine. Worker `n` (from 1) of the region is named
/// `worker-<region>-<n>`: its pid file `<run_dir>/worker-<region>-<n>.pid` (so a restarted
/// autoscaler finds what runs, and `make down` stops it), its log
/// `<log_dir>/worker-<region>-<n>.log`, its id `<id_prefix>-<region>-<n>`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The `worker` executable (a bare name is looked up in `PATH`). Default `worker`.
    pub worker_binary: PathBuf,
    /// The workers' `--config` file; empty passes none. Id, region and ops address are set
    /// per worker through its environment. Default empty.
    pub worker_config: PathBuf,
    /// Directory of the workers' pid files. Default `.local/run`.
    pub run_dir: PathBuf,
    /// Directory of the workers' logs. Default `.local/log`.
    pub log_dir: PathBuf,
    /// First part of the workers' ids. Default `local`.
    pub id_prefix: String,
    /// Host of the workers' ops endpoints. Default `127.0.0.1`.
    pub ops_host: String,
    /// Ops port of worker 1; worker `n` gets `ops_port_first + (n - 1) × ops_port_step`.
    /// 0 lets every worker take a free port. Default 9090.
    pub ops_port_first: u16,
    /// Distance between the ops ports of consecutive workers. Default 1.
    pub ops_port_step: u16,
    /// A stopped worker drains its jobs; one still running this long after SIGTERM gets
    /// SIGKILL. Default `2m`.
    #[serde(with = "humantime_serde")]
    pub kill_after: Duration,
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
        let p = &self.policy;
        rule(
            p.max_workers >= 1 && p.min_workers <= p.max_workers,
            "policy: min_workers must not exceed max_workers, and max_workers must be at least 1",
        )?;
        rule(
            p.max_workers <= 10_000,
            "policy.max_workers must be at most 10000",
        )?;
        rule(
            (1..=1024).contains(&p.slots_per_worker),
            "policy.slots_per_worker must be 1-1024",
        )?;
        rule(
            !p.job_duration.is_zero(),
            "policy.job_duration must be positive",
        )?;
        rule(
            !self.sampler.every.is_zero() && p.decide_every >= self.sampler.every,
            "sampler.every must be positive and policy.decide_every at least as long",
        )?;
        rule(
            p.scale_down_step > 0.0 && p.scale_down_step <= 1.0,
            "policy.scale_down_step must be in (0, 1]",
        )?;
        rule(
            (0.0..1.0).contains(&p.fallback_tolerance),
            "policy.fallback_tolerance must be in [0, 1)",
        )?;
        p.forecast
            .forecast_config()
            .validate()
            .map_err(|e| ConfigError::Rule(format!("policy.forecast: {e}")))?;
        rule(
            !self.history.save_every.is_zero(),
            "history.save_every must be positive",
        )?;
        match self.actuator.kind {
            ActuatorKind::Kubernetes => self.actuator.kubernetes.validate()?,
            ActuatorKind::Local => self.actuator.local.validate(p.max_workers)?,
            ActuatorKind::DryRun => {}
        }
        Ok(())
    }
}

impl PolicyConfig {
    /// The predictive policy's settings.
    pub fn predictive(&self) -> PredictiveConfig {
        let bounds = Bounds {
            min: self.min_workers,
            max: self.max_workers,
        };
        PredictiveConfig {
            bounds,
            lead_secs: secs(self.lead_time),
            scale_down_window_secs: secs(self.scale_down_window),
            scale_down_step: self.scale_down_step,
            fallback: ReactiveConfig {
                bounds,
                tolerance: self.fallback_tolerance,
                scale_down_window_secs: secs(self.fallback_scale_down_window),
                ..ReactiveConfig::default()
            },
            forecast: self.forecast.forecast_config(),
        }
    }
}

impl ForecastSettings {
    /// The forecast's settings.
    pub fn forecast_config(&self) -> ForecastConfig {
        ForecastConfig {
            bucket_secs: secs(self.bucket),
            horizon_secs: secs(self.horizon),
            train_days: secs(self.train_window) / crate::forecast::DAY,
            min_train_rows: self.min_train_rows,
            refit_every_secs: secs(self.refit_every),
            upper_quantile: self.upper_quantile,
            residual_window: self.residual_window,
            ridge: self.ridge,
            log_offset_share: self.log_offset_share,
            nowcast_min_secs: secs(self.nowcast_after),
        }
    }
}

impl KubernetesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, msg: String| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Rule(msg))
            }
        };
        rule(
            !self.deployments.is_empty(),
            "actuator.kubernetes.deployments must name the region's worker Deployments".into(),
        )?;
        for d in self
            .deployments
            .iter()
            .chain(Some(&self.namespace).filter(|n| !n.is_empty()))
        {
            rule(
                is_dns_label(d, 253),
                format!("actuator.kubernetes: {d:?} is not a valid Kubernetes name"),
            )?;
        }
        rule(
            self.api_url.is_empty()
                || self.api_url.starts_with("http://")
                || self.api_url.starts_with("https://"),
            "actuator.kubernetes.api_url must be empty or an http(s) URL".into(),
        )?;
        rule(
            !self.field_manager.is_empty() && !self.timeout.is_zero(),
            "actuator.kubernetes: field_manager and timeout must be set".into(),
        )
    }
}

impl LocalConfig {
    fn validate(&self, max_workers: u32) -> Result<(), ConfigError> {
        let rule = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Rule(msg.into()))
            }
        };
        rule(
            !self.worker_binary.as_os_str().is_empty()
                && !self.run_dir.as_os_str().is_empty()
                && !self.log_dir.as_os_str().is_empty(),
            "actuator.local: worker_binary, run_dir and log_dir must be set",
        )?;
        rule(
            !self.id_prefix.is_empty()
                && self
                    .id_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "actuator.local.id_prefix must be letters, digits, '-' or '_'",
        )?;
        // Draining workers keep their ports while new ones start: room for twice the pool.
        let last = u64::from(self.ops_port_first)
            + 2 * u64::from(max_workers) * u64::from(self.ops_port_step);
        rule(
            self.ops_port_first == 0 || (self.ops_port_step > 0 && last <= 65_535),
            "actuator.local: ops ports of 2 × max_workers workers must fit below 65536 with a step of at least 1",
        )?;
        rule(
            !self.kill_after.is_zero(),
            "actuator.local.kill_after must be positive",
        )
    }
}

/// Whole seconds of a duration, as the policies count them.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending
/// with a letter or digit.
fn is_dns_label(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Config {
        common::load(DEFAULTS, None, "SWITCHYARD_AUTOSCALER_TESTS_NO_ENV_").unwrap()
    }

    #[test]
    fn the_defaults_are_valid_and_match_the_backtest_defaults() {
        let cfg = defaults();
        cfg.validate().unwrap();
        assert_eq!(cfg.actuator.kind, ActuatorKind::DryRun);
        assert_eq!(cfg.policy.predictive(), PredictiveConfig::default());
    }

    #[test]
    fn a_file_overrides_the_defaults_and_an_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("autoscaler.toml");
        std::fs::write(
            &file,
            "[policy]\nmax_workers = 8\n[actuator]\nkind = \"local\"\n[actuator.local]\nworker_binary = \"/bin/worker\"\n",
        )
        .unwrap();
        let cfg: Config =
            common::load(DEFAULTS, Some(&file), "SWITCHYARD_AUTOSCALER_TESTS_NO_ENV_").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.policy.max_workers, 8);
        assert_eq!(cfg.actuator.kind, ActuatorKind::Local);
        assert_eq!(
            cfg.actuator.local.worker_binary,
            PathBuf::from("/bin/worker")
        );

        std::fs::write(&file, "[policy]\nmax_worker = 8\n").unwrap();
        let err =
            common::load::<Config>(DEFAULTS, Some(&file), "SWITCHYARD_AUTOSCALER_TESTS_NO_ENV_")
                .unwrap_err();
        assert!(err.to_string().contains("max_worker"), "{err}");
    }

    #[test]
    fn bounds_that_cannot_work_are_refused() {
        let mut cfg = defaults();
        cfg.policy.min_workers = 10;
        cfg.policy.max_workers = 5;
        assert!(cfg.validate().is_err());
        let mut cfg = defaults();
        cfg.policy.decide_every = Duration::from_secs(1);
        assert!(cfg.validate().is_err(), "decisions more often than samples");
        let mut cfg = defaults();
        cfg.policy.scale_down_step = 0.0;
        assert!(cfg.validate().is_err());
        let mut cfg = defaults();
        cfg.policy.forecast.bucket = Duration::from_secs(7 * 60);
        assert!(
            cfg.validate().is_err(),
            "a bucket that does not divide a day"
        );
    }

    #[test]
    fn the_kubernetes_actuator_needs_valid_deployment_names() {
        let mut cfg = defaults();
        cfg.actuator.kind = ActuatorKind::Kubernetes;
        assert!(cfg.validate().is_err(), "no deployments");
        cfg.actuator.kubernetes.deployments = vec!["switchyard-worker-us-east-1".into()];
        cfg.validate().unwrap();
        cfg.actuator.kubernetes.deployments = vec!["Worker_Pool".into()];
        assert!(cfg.validate().is_err());
        cfg.actuator.kubernetes.deployments = vec!["w".into()];
        cfg.actuator.kubernetes.api_url = "127.0.0.1:8001".into();
        assert!(cfg.validate().is_err(), "a URL without a scheme");
    }

    #[test]
    fn the_local_actuator_needs_room_for_its_ports() {
        let mut cfg = defaults();
        cfg.actuator.kind = ActuatorKind::Local;
        cfg.validate().unwrap();
        cfg.actuator.local.ops_port_first = 65_000;
        assert!(cfg.validate().is_err(), "500 workers from port 65000");
        cfg.actuator.local.ops_port_first = 0;
        cfg.validate().unwrap();
        cfg.actuator.local.id_prefix = "a b".into();
        assert!(cfg.validate().is_err());
    }
}
