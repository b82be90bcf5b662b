//! Actuators carry out the decisions: they report how many workers the pool has (starting
//! ones included) and set the number.
//!
//! * [`kubernetes`] — patches the `scale` subresource of the region's worker Deployments.
//! * [`local`] — starts and stops `worker` processes on this machine (the local stack).
//! * [`DryRun`] — logs what it would do.

pub mod kubernetes;
pub mod local;

use crate::config::{ActuatorKind, Config};

pub use kubernetes::KubernetesActuator;
pub use local::LocalActuator;

/// Why an actuator could not read or set the pool.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    #[error("cannot configure the Kubernetes client: {0}")]
    KubeConfig(String),
    #[error("Kubernetes API, Deployment {deployment}: {source}")]
    Kubernetes {
        deployment: String,
        source: kube::Error,
    },
    #[error("worker {name}: {what}: {source}")]
    Process {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// The actuator a configuration asks for.
#[derive(Debug)]
pub enum Actuator {
    Kubernetes(KubernetesActuator),
    Local(LocalActuator),
    DryRun(DryRun),
}

impl Actuator {
    /// Builds the configured actuator. The local one adopts the workers its pid files name.
    pub async fn from_config(cfg: &Config) -> Result<Self, ActuatorError> {
        Ok(match cfg.actuator.kind {
            ActuatorKind::Kubernetes => {
                Self::Kubernetes(KubernetesActuator::connect(&cfg.actuator.kubernetes).await?)
            }
            ActuatorKind::Local => Self::Local(LocalActuator::new(
                cfg.region.name.clone(),
                cfg.actuator.local.clone(),
            )),
            ActuatorKind::DryRun => Self::DryRun(DryRun::default()),
        })
    }

    /// `kubernetes`, `local` or `dry_run`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kubernetes(_) => ActuatorKind::Kubernetes.as_str(),
            Self::Local(_) => ActuatorKind::Local.as_str(),
            Self::DryRun(_) => ActuatorKind::DryRun.as_str(),
        }
    }

    /// Workers the pool has now, starting ones included; `None` when the actuator cannot
    /// know (a dry run before its first decision).
    pub async fn current(&mut self) -> Result<Option<u32>, ActuatorError> {
        match self {
            Self::Kubernetes(k) => k.current().await.map(Some),
            Self::Local(l) => Ok(Some(l.current())),
            Self::DryRun(d) => Ok(d.workers),
        }
    }

    /// Sets the pool to `desired` workers; a no-op when it has them.
    pub async fn scale(&mut self, desired: u32) -> Result<(), ActuatorError> {
        match self {
            Self::Kubernetes(k) => k.scale(desired).await,
            Self::Local(l) => l.scale(desired),
            Self::DryRun(d) => {
                if d.workers != Some(desired) {
                    tracing::info!(from = ?d.workers, to = desired, "dry run: would resize the pool");
                }
                d.workers = Some(desired);
                Ok(())
            }
        }
    }
}

/// Changes nothing; remembers what it was asked for, so the next decision starts from it.
#[derive(Debug, Default)]
pub struct DryRun {
    workers: Option<u32>,
}
