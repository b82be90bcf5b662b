//! The application state every handler and background task shares. Cheap to clone.

use std::ops::Deref;
use std::sync::Arc;

use protocol::Region;
use protocol::service::db::ShardRouter;
use protocol::service::github::Github;
use protocol::service::nats::Nats;
use sqlx::PgPool;

use crate::authz::Authz;
use crate::cache::{Caches, Invalidation};
use crate::config::Config;
use crate::telemetry::Metrics;
use crate::tenancy::jwt::JwtKeys;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub region: Region,
    pub catalog: PgPool,
    pub shards: Arc<ShardRouter>,
    pub nats: Nats,
    pub redis: redis::aio::ConnectionManager,
    pub metrics: Metrics,
    pub caches: Caches,
    pub authz: Authz,
    pub jwt: JwtKeys,
    pub github: Arc<Github>,
    pub limiter: crate::billing::limits::Limiter,
    /// Publishes the intake's delivery records in batches.
    pub records: crate::queue::records::RecordPublisher,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// Evicts the change here and tells every other control plane to do the same.
    pub async fn invalidate(&self, inv: Invalidation) {
        self.caches.apply(&inv);
        match serde_json::to_vec(&inv) {
            Ok(payload) => {
                let subject = self.nats.names.invalidation_subject();
                if let Err(e) = self.nats.client.publish(subject, payload.into()).await {
                    // Other instances fall back to the cache TTL.
                    tracing::warn!(error = %e, "cannot publish cache invalidation");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode cache invalidation"),
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
