//! `/v1/admin/…`: platform endpoints for the operator.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::billing::invoice::{CURRENCY, Period};
use crate::billing::invoicing::{self, MissingShard};
use crate::db;
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::extract::{Caller, JsonBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_regions))
        .routes(routes!(list_redeliveries))
        .routes(routes!(list_worker_pools))
        .routes(routes!(close_period))
        .routes(routes!(revenue_report))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedeliveryOut {
    pub guid: String,
    pub delivery_id: i64,
    pub event: String,
    /// The status our intake answered GitHub's failed attempt with (0: no answer).
    pub status_code: i32,
    pub requested_at: chrono::DateTime<chrono::Utc>,
    /// `requested` or `error`.
    pub result: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedeliveriesOut {
    pub items: Vec<RedeliveryOut>,
}

/// Redeliveries the reconciler asked GitHub for, newest first (operator).
#[utoipa::path(
    get, path = "/v1/admin/github/redeliveries", tag = "platform",
    responses((status = 200, body = RedeliveriesOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_redeliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<RedeliveriesOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let items = db::redeliveries::recent(&state.catalog, 200)
        .await?
        .into_iter()
        .map(|r| RedeliveryOut {
            guid: r.guid,
            delivery_id: r.delivery_id,
            event: r.event,
            status_code: r.status_code,
            requested_at: r.requested_at,
            result: r.result,
        })
        .collect();
    Ok(Json(RedeliveriesOut { items }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegionOut {
    pub name: String,
    pub api_url: String,
    pub shards: Vec<String>,
    /// The region's worker pool (as in `GET /v1/admin/worker-pools`).
    pub worker_pool: WorkerPoolOut,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegionsOut {
    pub items: Vec<RegionOut>,
}

/// Regions with their shards (operator).
#[utoipa::path(
    get, path = "/v1/admin/regions", tag = "platform",
    responses((status = 200, body = RegionsOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_regions(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<RegionsOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let routes = state.shards.routes();
    let regions = db::regions::list(&state.catalog).await?;
    let pools = futures::future::join_all(regions.iter().map(|r| async {
        match protocol::Region::new(r.name.clone()) {
            Ok(region) => read_pool(&state, &region).await,
            Err(_) => WorkerPoolOut {
                region: r.name.clone(),
                status: "unreachable".into(),
                age_seconds: None,
                stale: false,
                pool: None,
            },
        }
    }))
    .await;
    let items = regions
        .into_iter()
        .zip(pools)
        .map(|(r, worker_pool)| RegionOut {
            shards: routes
                .map
                .shards()
                .filter(|s| s.region.as_str() == r.name)
                .map(|s| s.name.clone())
                .collect(),
            name: r.name,
            api_url: r.api_url,
            worker_pool,
        })
        .collect();
    Ok(Json(RegionsOut { items }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerPoolOut {
    pub region: String,
    /// `ok`; `no_autoscaler` when no autoscaler has reported for the region yet;
    /// `unreachable` when the region's JetStream did not answer.
    pub status: String,
    /// Seconds since the autoscaler last wrote the pool's state.
    pub age_seconds: Option<f64>,
    /// The state is older than a minute: its autoscaler is probably not running.
    pub stale: bool,
    /// The pool as its autoscaler last saw it: `actual`, `desired`, `starting`,
    /// `forecast_jobs_per_second`, `forecast_upper`, `backlog`, `pending`, `in_flight`,
    /// `oldest_wait_seconds`, `last_decision {at, current, desired, reason}`, `fallback`, …
    /// (docs/autoscaler.md).
    #[schema(value_type = Option<Object>)]
    pub pool: Option<protocol::autoscale::PoolState>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerPoolsOut {
    pub items: Vec<WorkerPoolOut>,
}

/// A pool state older than this is marked stale.
const POOL_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest wait for one region's JetStream.
const POOL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads one region's pool state from its autoscaler bucket: this region's through the local
/// JetStream, the others' through their JetStream domains (named after the regions).
async fn read_pool(state: &AppState, region: &protocol::Region) -> WorkerPoolOut {
    let js = if region == &state.config.region.name {
        state.nats.js.clone()
    } else {
        async_nats::jetstream::with_domain(state.nats.client.clone(), region.as_str())
    };
    let bucket = state.nats.names.autoscaler_bucket();
    let read = async {
        // Before any autoscaler ran the bucket does not exist; some servers report that as
        // an error rather than "not found", so any failure to open it means "none yet"
        // unless the domain does not answer at all (the timeout below).
        let Ok(store) = js.get_key_value(&bucket).await else {
            return Ok::<_, String>(None);
        };
        let entry = store
            .get(protocol::autoscale::PoolState::key(region))
            .await
            .map_err(|e| e.to_string())?;
        match entry {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice::<protocol::autoscale::PoolState>(&bytes)
                .map(Some)
                .map_err(|e| format!("unreadable pool state: {e}")),
        }
    };
    let (status, pool) = match tokio::time::timeout(POOL_READ_TIMEOUT, read).await {
        Ok(Ok(Some(p))) => ("ok", Some(p)),
        Ok(Ok(None)) => ("no_autoscaler", None),
        Ok(Err(e)) => {
            tracing::warn!(region = %region, error = %e, "cannot read the pool state");
            ("unreachable", None)
        }
        Err(_) => ("unreachable", None),
    };
    let age = pool.as_ref().map(|p| {
        (chrono::Utc::now() - p.updated_at)
            .to_std()
            .unwrap_or_default()
    });
    WorkerPoolOut {
        region: region.to_string(),
        status: status.to_owned(),
        age_seconds: age.map(|a| a.as_secs_f64()),
        stale: age.is_some_and(|a| a > POOL_STALE_AFTER),
        pool,
    }
}

/// Every region's worker pool: actual, desired and starting workers, forecast, backlog and
/// the autoscaler's last decision with its reason (operator).
#[utoipa::path(
    get, path = "/v1/admin/worker-pools", tag = "platform",
    responses((status = 200, body = WorkerPoolsOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_worker_pools(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<WorkerPoolsOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let regions: Vec<protocol::Region> = db::regions::list(&state.catalog)
        .await?
        .into_iter()
        .filter_map(|r| protocol::Region::new(r.name).ok())
        .collect();
    let items = futures::future::join_all(regions.iter().map(|r| read_pool(&state, r))).await;
    Ok(Json(WorkerPoolsOut { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClosePeriodIn {
    /// `YYYY-MM`, a month that has ended.
    pub period: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClosePeriodOut {
    pub period: String,
    /// Orgs invoiced for the period (active or offboarded, created before its end).
    pub orgs: u64,
    /// Invoices finalized by this call.
    pub finalized: u64,
    /// Invoices finalized by an earlier call, left as they were.
    pub already_finalized: u64,
    /// Whether every shard answered: when not, `missing_shards` names those whose orgs are
    /// not finalized yet; the rest are, and calling again finishes the period.
    pub complete: bool,
    /// Shards that did not answer or failed, with their orgs of the period.
    pub missing_shards: Vec<MissingShard>,
    /// What each answering shard finalized.
    pub shards: Vec<ShardClosedOut>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShardClosedOut {
    pub shard: String,
    pub orgs: u64,
    pub finalized: u64,
    pub already_finalized: u64,
}

/// Finalizes every org's invoice of an ended period, all shards at once: numbered, stored,
/// immutable from then on. A shard that does not answer is named in `missing_shards` and the
/// others are finalized; calling it again finalizes only what is missing (operator).
#[utoipa::path(
    post, path = "/v1/admin/billing/close-period", tag = "platform",
    request_body = ClosePeriodIn,
    responses(
        (status = 200, description = "Closed on every shard that answered (`complete` says whether all did)", body = ClosePeriodOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The period has not ended", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog did not answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn close_period(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(input): JsonBody<ClosePeriodIn>,
) -> Result<Json<ClosePeriodOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let period = Period::parse(&input.period)
        .ok_or_else(|| Error::Invalid(vec![FieldError::new("period", "expected YYYY-MM")]))?;
    let current = Period::of(chrono::Utc::now().date_naive());
    if period >= current {
        return Err(Error::Conflict(format!(
            "{period} has not ended; it can be closed from its last day's end on"
        )));
    }
    let (done, missing_shards) = invoicing::close_period(
        &state.catalog,
        &state.shards,
        &state.config.plans,
        period,
        invoicing::shard_deadline(state.config.server.request_timeout),
    )
    .await?;
    let shards: Vec<ShardClosedOut> = done
        .into_iter()
        .map(|(shard, c)| ShardClosedOut {
            shard,
            orgs: c.orgs,
            finalized: c.finalized,
            already_finalized: c.already_finalized,
        })
        .collect();
    let out = ClosePeriodOut {
        period: period.to_string(),
        orgs: shards.iter().map(|s| s.orgs).sum::<u64>()
            + missing_shards.iter().map(|m| m.orgs).sum::<u64>(),
        finalized: shards.iter().map(|s| s.finalized).sum(),
        already_finalized: shards.iter().map(|s| s.already_finalized).sum(),
        complete: missing_shards.is_empty(),
        missing_shards,
        shards,
    };
    if out.complete {
        tracing::info!(period = %out.period, finalized = out.finalized, already = out.already_finalized, "billing period closed");
    } else {
        let missing: Vec<&str> = out
            .missing_shards
            .iter()
            .map(|m| m.shard.as_str())
            .collect();
        tracing::warn!(period = %out.period, finalized = out.finalized, missing = ?missing, "billing period closed but for shards that did not answer; close it again");
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevenueQuery {
    /// `YYYY-MM`; default the current month.
    pub period: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevenueRowOut {
    pub plan: String,
    pub region: String,
    pub orgs: u64,
    /// Invoice totals of those orgs, minor units.
    pub total: i64,
    /// How many of those invoices are finalized (the rest are drafts).
    pub finalized: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevenueOut {
    pub period: String,
    pub currency: String,
    pub items: Vec<RevenueRowOut>,
    /// Minor units.
    pub total: i64,
    /// Whether every shard answered; when not, `items` and `total` lack the orgs of
    /// `missing_shards`.
    pub complete: bool,
    /// Shards that did not answer or failed, with how many orgs of the period they hold.
    pub missing_shards: Vec<MissingShard>,
}

/// Revenue of a month by plan and region, gathered from every org's invoice on all shards at
/// once: the finalized invoice where the month is closed, the draft otherwise. An org counts
/// under its invoice's plan (the one in force at the month's end). A shard that does not answer
/// is named in `missing_shards` (operator).
#[utoipa::path(
    get, path = "/v1/admin/reports/revenue", tag = "platform",
    params(RevenueQuery),
    responses(
        (status = 200, body = RevenueOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn revenue_report(
    State(state): State<AppState>,
    Caller(caller): Caller,
    crate::http::extract::QueryParams(q): crate::http::extract::QueryParams<RevenueQuery>,
) -> Result<Json<RevenueOut>> {
    use std::collections::BTreeMap;

    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let period = match q.period.as_deref() {
        Some(p) => Period::parse(p)
            .ok_or_else(|| Error::Invalid(vec![FieldError::new("period", "expected YYYY-MM")]))?,
        None => Period::of(chrono::Utc::now().date_naive()),
    };
    let (done, missing_shards) = invoicing::period_invoices(
        &state.catalog,
        &state.shards,
        &state.config.plans,
        period,
        invoicing::shard_deadline(state.config.server.request_timeout),
    )
    .await?;
    let mut rows: BTreeMap<(String, String), RevenueRowOut> = BTreeMap::new();
    for c in done.into_iter().flat_map(|(_, counted)| counted) {
        let row = rows
            .entry((c.plan.clone(), c.org.region.clone()))
            .or_insert_with(|| RevenueRowOut {
                plan: c.plan.clone(),
                region: c.org.region.clone(),
                orgs: 0,
                total: 0,
                finalized: 0,
            });
        row.orgs += 1;
        row.total = row.total.saturating_add(c.total);
        row.finalized += u64::from(c.finalized);
    }
    let items: Vec<RevenueRowOut> = rows.into_values().collect();
    let total = items.iter().map(|r| r.total).sum();
    Ok(Json(RevenueOut {
        period: period.to_string(),
        currency: CURRENCY.to_owned(),
        items,
        total,
        complete: missing_shards.is_empty(),
        missing_shards,
    }))
}
