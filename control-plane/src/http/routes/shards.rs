//! `/v1/admin/shards…` and `/v1/admin/shard-moves…`: the shard registry, id ranges and online
//! range moves (operator). The CLI's `control-plane shards …` calls the same functions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::cache::Invalidation;
use crate::db::shards::ShardWriteError;
use crate::error::{Error, Problem, Result};
use crate::http::extract::{Caller, JsonBody};
use crate::sharding::moves::{self, MoveError, MoveStatus};
use crate::sharding::{self, RegisterError, ShardInfo};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_shards, add_shard))
        .routes(routes!(add_range))
        .routes(routes!(start_move, list_moves))
        .routes(routes!(get_move))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShardsOut {
    pub items: Vec<ShardInfo>,
}

/// Shards with their ranges, org counts and health (operator).
#[utoipa::path(
    get, path = "/v1/admin/shards", tag = "platform",
    responses((status = 200, body = ShardsOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_shards(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ShardsOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let items = sharding::list(&state.catalog, &state.shards).await?;
    Ok(Json(ShardsOut { items }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardIn {
    pub name: String,
    pub region: String,
    /// Connection string of the shard's database (never shown again).
    pub dsn: String,
}

fn write_error(e: ShardWriteError) -> Error {
    match e {
        ShardWriteError::Differs(_) | ShardWriteError::Overlap(..) => {
            Error::Conflict(e.to_string())
        }
        ShardWriteError::UnknownRegion(_) => Error::invalid("region", e.to_string()),
        ShardWriteError::UnknownShard(_) => Error::invalid("shard", e.to_string()),
        ShardWriteError::BadRange(..) => Error::invalid("end", e.to_string()),
        ShardWriteError::Sql(e) => e.into(),
    }
}

/// The map changed: this process reloads it now, the others on the notice.
async fn map_changed(state: &AppState) {
    if let Err(e) = state.shards.reload().await {
        tracing::warn!(error = %e, "cannot reload the shard map");
    }
    state.invalidate(Invalidation::ShardMap).await;
}

/// Registers a shard: its database must answer and is migrated before it enters the map
/// (operator). Registering the same shard again is a no-op.
#[utoipa::path(
    post, path = "/v1/admin/shards", tag = "platform",
    request_body = ShardIn,
    responses(
        (status = 201, body = ShardInfo),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A shard of that name with another region or DSN", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad name, unknown region, or a database that does not answer or migrate", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn add_shard(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(input): JsonBody<ShardIn>,
) -> Result<(StatusCode, Json<ShardInfo>)> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    sharding::register(&state.catalog, &input.name, &input.region, &input.dsn)
        .await
        .map_err(|e| match e {
            RegisterError::BadName => Error::invalid("name", e.to_string()),
            RegisterError::Unreachable(_) | RegisterError::Migrate(_) => {
                Error::invalid("dsn", e.to_string())
            }
            RegisterError::Write(w) => write_error(w),
        })?;
    map_changed(&state).await;
    let shard = sharding::list(&state.catalog, &state.shards)
        .await?
        .into_iter()
        .find(|s| s.name == input.name)
        .ok_or(Error::NotFound)?;
    Ok((StatusCode::CREATED, Json(shard)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeIn {
    pub shard: String,
    /// First org id of the range.
    pub start: i64,
    /// First org id after the range (half-open).
    pub end: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RangeOut {
    pub shard: String,
    pub start: i64,
    pub end: i64,
}

/// Opens a new org-id range on a shard (operator). Ranges never overlap.
#[utoipa::path(
    post, path = "/v1/admin/shards/ranges", tag = "platform",
    request_body = RangeIn,
    responses(
        (status = 201, body = RangeOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Overlaps an existing range", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn add_range(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(input): JsonBody<RangeIn>,
) -> Result<(StatusCode, Json<RangeOut>)> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    crate::db::shards::add_range(&state.catalog, &input.shard, input.start, input.end)
        .await
        .map_err(write_error)?;
    map_changed(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(RangeOut {
            shard: input.shard,
            start: input.start,
            end: input.end,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveIn {
    pub start: i64,
    pub end: i64,
    /// A shard of the same region as the range's orgs.
    pub to_shard: String,
}

fn move_error(e: MoveError) -> Error {
    match e {
        MoveError::BadRange(..) | MoveError::NotOneRange(..) => {
            Error::invalid("end", e.to_string())
        }
        MoveError::UnknownShard(_) | MoveError::SameShard(_) | MoveError::OtherRegion { .. } => {
            Error::invalid("to_shard", e.to_string())
        }
        MoveError::Busy(_)
        | MoveError::TargetNotEmpty(_)
        | MoveError::SchemaDrift(_)
        | MoveError::NotDone(_)
        | MoveError::Finished(_) => Error::Conflict(e.to_string()),
        MoveError::UnknownMove(_) => Error::NotFound,
        MoveError::Drain(_) => Error::internal(e),
        MoveError::Sql(e) => e.into(),
    }
}

/// Starts moving the orgs of `[start, end)` to another shard of their region while they keep
/// being served (operator). Answers at once; watch it at the `Location`.
#[utoipa::path(
    post, path = "/v1/admin/shard-moves", tag = "platform",
    request_body = MoveIn,
    responses(
        (status = 202, body = MoveStatus),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An overlapping move is running", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn start_move(
    State(state): State<AppState>,
    Caller(caller): Caller,
    JsonBody(input): JsonBody<MoveIn>,
) -> Result<Response> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    let planned = moves::plan(&state.catalog, input.start, input.end, &input.to_shard)
        .await
        .map_err(move_error)?;
    let id = planned.id.clone();
    let bg = state.clone();
    tokio::spawn(async move {
        match moves::run(&bg.catalog, &id, &|_| {}).await {
            Ok(done) => {
                tracing::info!(move_id = %id, phase = %done.phase, pause_ms = ?done.pause_ms, "range move finished");
                if done.phase == "done" {
                    map_changed(&bg).await;
                }
            }
            Err(e) => tracing::error!(move_id = %id, error = %e, "range move failed"),
        }
    });
    let location = format!("/v1/admin/shard-moves/{}", planned.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(planned),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MovesOut {
    pub items: Vec<MoveStatus>,
}

/// Recent range moves, newest first (operator).
#[utoipa::path(
    get, path = "/v1/admin/shard-moves", tag = "platform",
    responses((status = 200, body = MovesOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_moves(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<MovesOut>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    Ok(Json(MovesOut {
        items: moves::list(&state.catalog).await?,
    }))
}

/// One range move: phase, rows copied, lag, the write pause and the verification (operator).
#[utoipa::path(
    get, path = "/v1/admin/shard-moves/{id}", tag = "platform",
    params(("id" = String, Path, description = "Move id")),
    responses(
        (status = 200, body = MoveStatus),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_move(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<MoveStatus>> {
    authz::require(&state, Scope::Platform(&caller), Action::Platform).await?;
    moves::get(&state.catalog, &id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound)
}
