//! The Switchyard control plane.
//!
//! ```text
//! http/        router, middleware, extractors; routes/<resource>.rs
//!   │
//!   ▼
//! auth, authz  who calls; what they may do (one `require`)
//! tenancy/     orgs, roles, API keys, onboarding saga
//! intake/      signatures, event facts, trigger rules, the intake pipeline
//! github/      the App: install links, binding, lifecycle events, delivery recovery
//!   │
//!   ▼
//! db/          one file per table; shard tables only through an org-bound `OrgDb`
//! queue/       JetStream publisher and the delivery recorder
//! ```
//! [`build`] connects everything and returns the [`AppState`]; [`run`] serves the API and
//! runs the background tasks until the shutdown token fires.

pub mod auth;
pub mod authz;
pub mod billing;
pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod github;
pub mod http;
pub mod intake;
pub mod queue;
pub mod sharding;
pub mod state;
pub mod telemetry;
pub mod tenancy;

use std::time::Duration;

use futures::StreamExt;
use protocol::service::db::{DbError, PoolSettings, ShardRouter, connect_catalog};
use protocol::service::nats::{self, NatsError};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{Caches, Invalidation};
pub use crate::config::Config;
pub use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reach the catalog: {0}")]
    Catalog(#[source] sqlx::Error),
    #[error("cannot load the shard map: {0}")]
    ShardMap(#[from] DbError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("invalid Redis configuration: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("region {0} is not registered in the catalog")]
    UnknownRegion(String),
    #[error(transparent)]
    Authz(#[from] authz::AuthzError),
    #[error("access token keys: {0}")]
    Jwt(#[from] tenancy::jwt::JwtError),
    #[error("GitHub App: {0}")]
    Github(#[from] protocol::service::github::GithubError),
}

/// Connects to the catalog, shards, NATS and Redis, and prepares the region's streams.
pub async fn build(config: Config) -> Result<AppState, StartError> {
    let catalog = connect_catalog(&config.database)
        .await
        .map_err(StartError::Catalog)?;
    if db::regions::get(&catalog, config.region.name.as_str())
        .await
        .map_err(StartError::Catalog)?
        .is_none()
    {
        return Err(StartError::UnknownRegion(config.region.name.to_string()));
    }
    let shards = ShardRouter::load(catalog.clone(), PoolSettings::shards(&config.database)).await?;
    let nats = nats::connect(
        &config.nats,
        &format!("control-plane {}", config.region.name),
    )
    .await?;
    nats::ensure_region_streams(&nats, &config.region.name, &config.nats).await?;
    let redis_client = redis::Client::open(config.redis.url.expose_secret())?;
    let redis = redis::aio::ConnectionManager::new_lazy_with_config(
        redis_client,
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis.connect_timeout))
            .set_response_timeout(Some(config.redis.response_timeout))
            .set_number_of_retries(1),
    )?;
    let metrics = telemetry::Metrics::new()?;
    let caches = Caches::new(config.intake.cache_ttl, config.intake.cache_capacity);
    let authz = authz::Authz::new().await?;
    let jwt = tenancy::jwt::JwtKeys::from_config(&config.auth.jwt)?;
    let github = std::sync::Arc::new(protocol::service::github::Github::new(
        config.github.app.clone(),
        Some(redis.clone()),
        &config.redis.key_prefix,
        &metrics.registry,
    )?);
    let limiter = billing::limits::Limiter::new(redis.clone(), &config.redis.key_prefix);
    let records = queue::records::RecordPublisher::new(
        nats.clone(),
        queue::records::Limits {
            max_records: config.intake.record_batch_max,
            in_flight: config.intake.record_batches_in_flight,
            timeout: config.github.publish_timeout,
        },
        metrics.record_batch_size.clone(),
    );
    Ok(AppState::new(state::Inner {
        records,
        region: config.region.name.clone(),
        limiter,
        config,
        catalog,
        shards: std::sync::Arc::new(shards),
        nats,
        redis,
        metrics,
        caches,
        authz,
        jwt,
        github,
    }))
}

/// Serves the API on `listener` and runs the background tasks (recorder, cache
/// invalidation, shard-map refresh) until `shutdown` fires; then drains in-flight requests
/// and waits for the tasks to finish their current batch.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    tasks.spawn(queue::recorder::run(state.clone(), shutdown.clone()));
    tasks.spawn(queue::ingester::run(state.clone(), shutdown.clone()));
    tasks.spawn(listen_for_invalidations(state.clone(), shutdown.clone()));
    tasks.spawn(refresh_shard_map(state.clone(), shutdown.clone()));
    tasks.spawn(watch_shards(state.clone(), shutdown.clone()));
    tasks.spawn(recover_moves(state.clone(), shutdown.clone()));
    tasks.spawn(tenancy::onboarding::run_reaper(
        state.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(tenancy::audit::run(
        state.catalog.clone(),
        state.shards.clone(),
        shutdown.clone(),
    ));
    if state.config.github.recovery.enabled && state.github.is_configured() {
        tasks.spawn(github::recovery::run(state.clone(), shutdown.clone()));
    }
    tracing::info!(addr = %listener.local_addr()?, region = %state.region, "control plane listening");
    let drain = drain_deadline(&state.config);
    let served =
        protocol::service::serve::serve(listener, http::router(state), shutdown.clone(), drain)
            .await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    served
}

async fn listen_for_invalidations(state: AppState, shutdown: CancellationToken) {
    let subject = state.nats.names.invalidation_subject();
    let mut sub = match state.nats.client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to cache invalidations; caches rely on their TTL");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            msg = sub.next() => match msg { Some(m) => m, None => break },
        };
        match serde_json::from_slice::<Invalidation>(&msg.payload) {
            Ok(Invalidation::ShardMap) => {
                if let Err(e) = state.shards.reload().await {
                    tracing::warn!(error = %e, "cannot reload the shard map");
                }
            }
            Ok(inv) => state.caches.apply(&inv),
            Err(e) => tracing::warn!(error = %e, "undecodable cache invalidation"),
        }
    }
}

/// The per-shard circuit breakers: every shard probed on a schedule, `shard_up` exported.
async fn watch_shards(state: AppState, shutdown: CancellationToken) {
    let db = &state.config.database;
    let metrics = state.metrics.clone();
    state
        .shards
        .watch_health(
            db.shard_probe_every,
            db.shard_probe_timeout,
            shutdown,
            |p| {
                metrics
                    .shard_up
                    .with_label_values(&[p.shard.as_str()])
                    .set(i64::from(p.up));
            },
        )
        .await;
}

/// How often a control plane looks for range moves whose runner has stopped.
const MOVE_RECOVERY_EVERY: Duration = Duration::from_secs(5);

/// Finishes or rolls back the range moves whose runner died or was stopped (a control plane
/// restarted mid-move, a `shards move` interrupted), so that a paused range never waits for an
/// operator; see `sharding::moves::recover_abandoned`.
async fn recover_moves(state: AppState, shutdown: CancellationToken) {
    use sharding::moves::{self, Recovered};
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(MOVE_RECOVERY_EVERY) => {}
        }
        let done = match moves::recover_abandoned(&state.catalog).await {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!(error = %e, "cannot look for abandoned range moves");
                continue;
            }
        };
        for (id, outcome) in done {
            match outcome {
                Ok(how) => {
                    tracing::warn!(move_id = %id, outcome = ?how, "recovered a range move whose runner had stopped");
                    if how == Recovered::Completed {
                        if let Err(e) = state.shards.reload().await {
                            tracing::warn!(error = %e, "cannot reload the shard map");
                        }
                        state.invalidate(Invalidation::ShardMap).await;
                    }
                }
                Err(e) => {
                    tracing::error!(move_id = %id, error = %e, "cannot recover a range move whose runner stopped");
                }
            }
        }
    }
}

async fn refresh_shard_map(state: AppState, shutdown: CancellationToken) {
    let every = state.config.database.shard_map_refresh;
    let mut seen = db::shards::map_version(&state.catalog).await.ok();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        match db::shards::map_version(&state.catalog).await {
            Ok(v) if Some(v) != seen => match state.shards.reload().await {
                Ok(()) => {
                    tracing::info!(version = v, "shard map reloaded");
                    seen = Some(v);
                }
                Err(e) => tracing::warn!(error = %e, "cannot reload the shard map"),
            },
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the shard-map version"),
        }
    }
}

/// How long a shutdown waits for in-flight requests: they end within the request timeout.
pub fn drain_deadline(config: &Config) -> Duration {
    config.server.request_timeout + Duration::from_secs(5)
}
