//! The Switchyard worker: runs the jobs of one region.
//!
//! * [`consumer`] — pulls from the region's durable consumer, never more messages than it
//!   has free slots; drains on shutdown.
//! * [`runner`] — one message: claim the job, run its executor with in-progress acks, record
//!   the outcome, then acknowledge (or retry with backoff, or dead-letter).
//! * [`executor`] — what runs a job (`command`, `llm`).
//! * [`effects`] — the job's GitHub side: token, clone, the exactly-once comment.
//! * [`leases`] — each org's cap on running jobs, across the region's workers.
//! * [`held`] — jobs kept back by that cap, started when their org has room.
//! * [`heartbeat`] — this worker's entry in the `workers` KV bucket.

pub mod config;
pub mod consumer;
pub mod effects;
pub mod executor;
pub mod heartbeat;
pub mod held;
pub mod leases;
pub mod metrics;
pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use protocol::service::github::Github;
use secrecy::ExposeSecret;

use protocol::service::db::{DbError, PoolSettings, ShardRouter, connect_catalog};
use protocol::service::nats::{self, Nats, NatsError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
use crate::effects::Effects;
use crate::executor::Executors;
use crate::leases::Leases;

/// Everything a worker's tasks share.
#[derive(Debug)]
pub struct Worker {
    pub config: Config,
    pub id: String,
    pub nats: Nats,
    pub shards: ShardRouter,
    pub executors: Executors,
    pub metrics: metrics::Metrics,
    /// GitHub effects, when a GitHub App is configured.
    pub effects: Option<Effects>,
    pub leases: Leases,
    /// Redis: the org caps (`leases`) and the job-minute quota mirror.
    pub redis: redis::aio::ConnectionManager,
    /// Jobs running here, by id, with the token that stops each (cancellation).
    pub running: Mutex<HashMap<String, CancellationToken>>,
    /// Jobs waiting here for their org's cap.
    pub held: held::Held,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the catalog: {0}")]
    Catalog(#[source] sqlx::Error),
    #[error("cannot load the shard map: {0}")]
    ShardMap(#[from] DbError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("invalid Redis configuration: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("GitHub App: {0}")]
    Github(#[from] protocol::service::github::GithubError),
}

/// Connects to the catalog and NATS and prepares the region's streams and consumer.
pub async fn build(config: Config) -> Result<Arc<Worker>, StartError> {
    let catalog = connect_catalog(&config.database)
        .await
        .map_err(StartError::Catalog)?;
    let shards = ShardRouter::load(catalog, PoolSettings::shards(&config.database)).await?;
    let id = config.worker_id();
    let nats = nats::connect(&config.nats, &format!("worker {id}")).await?;
    nats::ensure_region_streams(&nats, &config.worker.region, &config.nats).await?;
    let executors = Executors::from_config(&config.executors, &config.workspace_root());
    let metrics = metrics::Metrics::new()?;
    let redis = redis::aio::ConnectionManager::new_lazy_with_config(
        redis::Client::open(config.redis.url.expose_secret())?,
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis.connect_timeout))
            .set_response_timeout(Some(config.redis.response_timeout))
            .set_number_of_retries(1),
    )?;
    let effects = if config.github.app.is_configured() {
        let gh = Github::new(
            config.github.app.clone(),
            Some(redis.clone()),
            &config.redis.key_prefix,
            &metrics.registry,
        )?;
        Some(Effects {
            gh: Arc::new(gh),
            cfg: config.github.clone(),
        })
    } else {
        tracing::warn!("no GitHub App configured: jobs run without tokens, clones or comments");
        None
    };
    let leases = Leases::new(
        redis.clone(),
        &config.redis.key_prefix,
        config.worker.org_lease,
    );
    Ok(Arc::new(Worker {
        id,
        nats,
        shards,
        executors,
        metrics,
        effects,
        leases,
        redis,
        running: Mutex::new(HashMap::new()),
        held: held::Held::new(held::HELD_PER_SLOT * config.worker.slots),
        config,
    }))
}

/// Runs the consumer, heartbeats and the ops endpoints until `shutdown`; then drains.
pub async fn run(
    worker: Arc<Worker>,
    ops: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let consumer = consumer::ensure_consumer(&worker).await?;
    let ops_router =
        protocol::service::ops::router(worker.metrics.registry.clone(), readiness(worker.clone()));
    let ops_shutdown = shutdown.clone();
    let ops_task = tokio::spawn(async move {
        let _ = axum::serve(ops, ops_router)
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await;
    });
    let hb = tokio::spawn(heartbeat::run(worker.clone(), shutdown.clone()));
    let refresh = tokio::spawn(refresh_shard_map(worker.clone(), shutdown.clone()));
    let probes = {
        let (w, stop) = (worker.clone(), shutdown.clone());
        tokio::spawn(async move {
            let db = &w.config.database;
            w.shards
                .watch_health(db.shard_probe_every, db.shard_probe_timeout, stop, |_| {})
                .await;
        })
    };
    let cancels = tokio::spawn(listen_for_cancels(worker.clone(), shutdown.clone()));
    tracing::info!(worker = %worker.id, region = %worker.config.worker.region, slots = worker.config.worker.slots, "worker started");
    consumer::run(worker.clone(), consumer, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::join!(ops_task, hb, refresh, probes, cancels);
    tracing::info!(worker = %worker.id, "worker stopped");
    Ok(())
}

fn readiness(worker: Arc<Worker>) -> protocol::service::ops::ReadyCheck {
    Arc::new(move || {
        let w = worker.clone();
        Box::pin(async move {
            if !matches!(
                w.nats.client.connection_state(),
                async_nats::connection::State::Connected
            ) {
                return Err("nats".to_owned());
            }
            let catalog = w.shards.catalog();
            match tokio::time::timeout(
                std::time::Duration::from_secs(1),
                sqlx::query("select 1").execute(catalog),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                _ => Err("catalog".to_owned()),
            }
        })
    })
}

async fn refresh_shard_map(worker: Arc<Worker>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(worker.config.database.shard_map_refresh) => {}
        }
        if let Err(e) = worker.shards.reload().await {
            tracing::warn!(error = %e, "cannot reload the shard map");
        }
    }
}

/// Stops jobs cancelled through the API while they run here.
async fn listen_for_cancels(worker: Arc<Worker>, shutdown: CancellationToken) {
    let subject = worker
        .nats
        .names
        .cancel_subject(&worker.config.worker.region);
    let mut sub = match worker.nats.client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for cancellations");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let Ok(notice) = serde_json::from_slice::<protocol::job::CancelNotice>(&msg.payload) else {
            continue;
        };
        let token = worker
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&notice.job_id.0).cloned());
        if let Some(t) = token {
            tracing::info!(job_id = %notice.job_id, "cancelling a running job");
            t.cancel();
        }
    }
}
