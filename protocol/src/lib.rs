//! The wire contract shared by every Switchyard binary.
//!
//! * [`ids`] — typed identifiers (org ids carry their shard range; the rest are opaque).
//! * [`region`] — region names and their stream-name tokens.
//! * [`job`] — the job message workers consume and the job state machine.
//! * [`delivery`] — the record of one accepted webhook delivery.
//! * [`usage`] — metered usage events.
//! * [`subjects`] — NATS subjects, stream, consumer and bucket names.
//! * [`shardmap`] — the org-range → shard map (pure, no I/O).
//!
//! With the `service` feature it also carries the runtime plumbing the services share
//! ([`service`]): configuration loading, telemetry, JetStream setup and catalog-backed shard
//! routing. The control plane, the worker and the autoscaler depend on this crate and never on
//! each other.

pub mod autoscale;
pub mod delivery;
pub mod ids;
pub mod job;
pub mod region;
pub mod shardmap;
pub mod subjects;
pub mod usage;

#[cfg(feature = "service")]
pub mod service;

pub use ids::{DeliveryId, InstallationId, JobId, OrgId, RuleId};
pub use job::{JobKind, JobMessage, JobSpec, JobStatus};
pub use region::Region;
