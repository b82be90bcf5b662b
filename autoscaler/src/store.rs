//! What the autoscaler keeps in its region's JetStream domain, in two KV buckets (file
//! storage, one value per key, no expiry):
//!
//! * `autoscaler` ([`Names::autoscaler_bucket`]): the pool state
//!   ([`protocol::autoscale::PoolState`]) under the region's name, rewritten after every
//!   decision, for the control plane's `GET /v1/admin/worker-pools`;
//! * `autoscaler_history` (the same name with `_history`): the arrival history
//!   ([`SavedHistory`]) under the region's name, so that a restarted autoscaler — on another
//!   node, in Kubernetes — keeps its forecast. NATS is the one store every region already
//!   runs with persistence; a file would need a volume per autoscaler.
//!
//! [`Names::autoscaler_bucket`]: protocol::subjects::Names::autoscaler_bucket

use async_nats::jetstream::{kv, stream};
use protocol::Region;
use protocol::autoscale::PoolState;
use protocol::service::nats::Nats;
use serde::{Deserialize, Serialize};

use crate::forecast::HistorySnapshot;

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the KV bucket {bucket}: {source}")]
    Open {
        bucket: String,
        source: async_nats::Error,
    },
    #[error("cannot write {what}: {source}")]
    Write {
        what: &'static str,
        source: async_nats::Error,
    },
    #[error("cannot read the saved history: {0}")]
    Read(async_nats::Error),
}

/// The arrival history as saved: the buckets and the stream position they count up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHistory {
    /// The jobs stream's last sequence at the last sample counted.
    pub last_sequence: u64,
    /// Unix seconds of that sample.
    pub sampled_at: i64,
    pub history: HistorySnapshot,
}

/// The autoscaler's two buckets.
#[derive(Debug, Clone)]
pub struct Store {
    state: kv::Store,
    history: kv::Store,
}

impl Store {
    /// Opens the buckets, creating them when missing.
    pub async fn open(nats: &Nats) -> Result<Self, StoreError> {
        let state = nats.names.autoscaler_bucket();
        let history = format!("{state}_history");
        Ok(Self {
            state: open_bucket(
                nats,
                &state,
                "Worker pool state per region, from the autoscaler",
            )
            .await?,
            history: open_bucket(
                nats,
                &history,
                "Arrival history per region, from the autoscaler",
            )
            .await?,
        })
    }

    /// Writes a region's pool state.
    pub async fn publish(&self, state: &PoolState) -> Result<(), StoreError> {
        let write = |source| StoreError::Write {
            what: "the pool state",
            source,
        };
        let bytes = serde_json::to_vec(state).map_err(|e| write(e.into()))?;
        self.state
            .put(PoolState::key(&state.region), bytes.into())
            .await
            .map_err(|e| write(e.into()))?;
        Ok(())
    }

    /// A region's pool state as last written.
    pub async fn pool_state(&self, region: &Region) -> Result<Option<PoolState>, StoreError> {
        let Some(bytes) = self
            .state
            .get(PoolState::key(region))
            .await
            .map_err(|e| StoreError::Read(e.into()))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Read(e.into()))
    }

    /// Saves a region's arrival history.
    pub async fn save_history(
        &self,
        region: &Region,
        saved: &SavedHistory,
    ) -> Result<(), StoreError> {
        let write = |source| StoreError::Write {
            what: "the arrival history",
            source,
        };
        let bytes = serde_json::to_vec(saved).map_err(|e| write(e.into()))?;
        self.history
            .put(region.as_str(), bytes.into())
            .await
            .map_err(|e| write(e.into()))?;
        Ok(())
    }

    /// A region's saved arrival history, if any.
    pub async fn load_history(&self, region: &Region) -> Result<Option<SavedHistory>, StoreError> {
        let Some(bytes) = self
            .history
            .get(region.as_str())
            .await
            .map_err(|e| StoreError::Read(e.into()))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Read(e.into()))
    }
}

/// Opens a bucket, creating it when missing. The bucket's stream is created directly, with
/// the key-value layout (as the worker does for `workers`): the client's own "create
/// bucket" asks for the stream's info first and cannot read nats-server 2.9's "not found"
/// answer, whereas creating a stream that exists with the same configuration is a no-op.
async fn open_bucket(
    nats: &Nats,
    bucket: &str,
    description: &str,
) -> Result<kv::Store, StoreError> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    };
    if let Err(e) = nats.js.create_stream(config).await {
        tracing::debug!(error = %e, bucket, "the bucket's stream exists with another configuration; using it");
    }
    nats.js
        .get_key_value(bucket)
        .await
        .map_err(|e| StoreError::Open {
            bucket: bucket.to_owned(),
            source: e.into(),
        })
}
