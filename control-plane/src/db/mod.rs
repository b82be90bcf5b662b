//! Storage. One file per table; catalog tables take the catalog pool, shard tables take an
//! [`OrgDb`] — an org's id bound to its shard's pool — so no shard query can be written
//! without the org scope, and none can reach the wrong shard.
//!
//! Catalog: [`regions`], [`shards`], [`orgs`], [`users`], [`members`], [`api_keys`],
//! [`installations`], [`unclaimed`], [`idempotency`], [`redeliveries`], [`plan_changes`].
//! Shard: [`tenants`], [`rules`], [`deliveries`], [`jobs`], [`audit`].

pub mod api_keys;
pub mod audit;
pub mod deliveries;
pub mod idempotency;
pub mod installations;
pub mod invoices;
pub mod jobs;
pub mod members;
pub mod migrate;
pub mod orgs;
pub mod plan_changes;
pub mod redeliveries;
pub mod regions;
pub mod rules;
pub mod shards;
pub mod tenants;
pub mod unclaimed;
pub mod usage;
pub mod users;

use protocol::OrgId;
use protocol::service::db::ShardRouter;
use sqlx::PgPool;

use crate::error::Error;

/// `Retry-After` of a request refused because its org's shard is down: about the time a
/// probe needs to see it back.
pub const SHARD_RETRY_AFTER: u64 = 2;

/// An org's data on its shard: the org id and the pool of the shard that owns it.
#[derive(Clone, Debug)]
pub struct OrgDb {
    org: OrgId,
    shard: String,
    pool: PgPool,
}

impl OrgDb {
    /// The org's shard, found in the in-memory map. An org id that no range holds has no data
    /// anywhere: that is a "not found". A shard whose breaker is open (see
    /// `protocol::service::db::ShardHealth`) is refused at once, so its orgs get `503` without
    /// waiting for a connection that will not come.
    pub fn for_org(router: &ShardRouter, org: OrgId) -> Result<Self, Error> {
        let h = router.route(org).ok_or(Error::NotFound)?;
        if h.down().is_some() {
            return Err(Error::ShardDown {
                shard: h.name,
                retry_after: SHARD_RETRY_AFTER,
            });
        }
        Ok(Self {
            org,
            shard: h.name,
            pool: h.pool,
        })
    }

    pub fn org(&self) -> OrgId {
        self.org
    }

    pub fn shard(&self) -> &str {
        &self.shard
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Whether a database error is a violation of the named unique or exclusion constraint.
pub fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.constraint() == Some(constraint),
        _ => false,
    }
}
