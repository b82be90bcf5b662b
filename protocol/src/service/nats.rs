//! NATS connections and the region's JetStream streams.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::config::NatsConfig;
use crate::region::Region;
use crate::subjects::Names;

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot create stream {name}: {source}")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error(transparent)]
    Namespace(#[from] crate::subjects::InvalidNamespace),
}

/// A connected client with its JetStream context and the names it uses.
#[derive(Clone, Debug)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
}

/// Connects to the configured server; fails if it cannot within `connect_timeout`.
pub async fn connect(cfg: &NatsConfig, client_name: &str) -> Result<Nats, NatsError> {
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(cfg.connect_timeout)
        .request_timeout(Some(cfg.request_timeout))
        .connect(cfg.url.as_str())
        .await
        .map_err(|source| NatsError::Connect {
            url: cfg.url.clone(),
            source,
        })?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(cfg.request_timeout)
        .build(client.clone());
    Ok(Nats {
        client,
        js,
        names: Names::new(&cfg.namespace)?,
    })
}

/// How long dead jobs stay in the dead-letter stream.
pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The stream configurations of one region (see [`crate::subjects`]).
pub fn region_streams(names: &Names, region: &Region, cfg: &NatsConfig) -> Vec<stream::Config> {
    vec![
        stream::Config {
            name: names.jobs_stream(region),
            description: Some(format!("Jobs for the workers of {region}")),
            subjects: vec![names.jobs_filter(region)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: cfg.duplicate_window,
            max_message_size: 1024 * 1024,
            ..Default::default()
        },
        stream::Config {
            name: names.deliveries_stream(region),
            description: Some(format!("Webhook deliveries accepted for orgs of {region}")),
            subjects: vec![names.deliveries_filter(region)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: cfg.duplicate_window,
            max_age: cfg.retention,
            max_message_size: 1024 * 1024,
            ..Default::default()
        },
        stream::Config {
            name: names.usage_stream(region),
            description: Some(format!("Usage events of orgs of {region}")),
            subjects: vec![names.usage_filter(region)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: cfg.duplicate_window,
            max_age: cfg.retention,
            ..Default::default()
        },
        stream::Config {
            name: names.dead_stream(region),
            description: Some(format!("Jobs of {region} that exhausted their attempts")),
            subjects: vec![names.dead_filter(region)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: DEAD_LETTER_RETENTION,
            ..Default::default()
        },
    ]
}

/// Creates (or updates to the current configuration) the streams of `region`. Idempotent:
/// every service of the region calls it at start.
pub async fn ensure_region_streams(
    nats: &Nats,
    region: &Region,
    cfg: &NatsConfig,
) -> Result<(), NatsError> {
    for config in region_streams(&nats.names, region, cfg) {
        let name = config.name.clone();
        nats.js
            .create_or_update_stream(config)
            .await
            .map_err(|source| NatsError::Stream { name, source })?;
    }
    Ok(())
}
