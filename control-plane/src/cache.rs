//! Read-through caches of catalog and shard lookups on the webhook hot path.
//!
//! Entries expire after `intake.cache_ttl`; a change made through any control plane is
//! announced on the NATS invalidation subject and evicted everywhere at once (see
//! [`Invalidation`]), so the TTL only bounds staleness when a notice is lost.

use std::sync::Arc;
use std::time::Duration;

use mini_moka::sync::Cache;
use protocol::{InstallationId, OrgId};
use serde::{Deserialize, Serialize};

use crate::db::installations::Owner;
use crate::intake::rules::Rule;

#[derive(Clone)]
pub struct Caches {
    /// Installation → its owner; `None` caches "no org claimed it".
    pub installations: Cache<InstallationId, Option<Owner>>,
    pub rules: Cache<OrgId, Arc<Vec<Rule>>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            installations: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
            rules: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }

    pub fn apply(&self, inv: &Invalidation) {
        match inv {
            Invalidation::Installation(id) => self.installations.invalidate(id),
            Invalidation::Rules(org) => self.rules.invalidate(org),
            Invalidation::Org(org) => {
                self.rules.invalidate(org);
                // An org's status is part of every cached installation owner of that org.
                self.installations.invalidate_all();
            }
            Invalidation::ShardMap => {}
        }
    }
}

/// A change notice, published on the invalidation subject by the control plane that made
/// the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", content = "id", rename_all = "snake_case")]
pub enum Invalidation {
    Installation(InstallationId),
    Rules(OrgId),
    Org(OrgId),
    ShardMap,
}
