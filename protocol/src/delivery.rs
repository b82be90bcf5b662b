//! The record of one webhook delivery, as the intake saw it.
//!
//! Intake publishes a [`DeliveryRecord`] for every delivery it accepts (on the org's
//! deliveries stream, or the receiving region's for an installation no org claims); the
//! control plane's recorder writes it, and the queued rows of its jobs, to the org's shard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, InstallationId, OrgId};
use crate::job::JobSpec;
use crate::region::Region;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub delivery_id: DeliveryId,
    /// `None` when no org has claimed the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<InstallationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The region whose intake received it.
    pub received_in: Region,
    pub received_at: DateTime<Utc>,
    /// What happened to it: `queued` (jobs made), `ignored` (no rule matched),
    /// `unknown_installation`, `rate_limited`, `org_inactive`.
    pub outcome: String,
    pub jobs: Vec<JobSpec>,
}
