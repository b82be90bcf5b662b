//! The crate's error: one enum joining the subsystems' own.

use protocol::service::config::ConfigError;
use protocol::service::nats::NatsError;

use crate::actuator::ActuatorError;
use crate::plot::PlotError;
use crate::store::StoreError;
use crate::trace::TraceError;

/// Anything the autoscaler's commands can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actuator(#[from] ActuatorError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("ops endpoint: {0}")]
    Ops(#[from] std::io::Error),
}
