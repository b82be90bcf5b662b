//! `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_healthz))
        .routes(routes!(get_readyz))
        .routes(routes!(get_metrics))
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = String)))]
async fn get_healthz() -> &'static str {
    "ok"
}

/// Readiness: the catalog, this region's NATS and Redis answer within a second each.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: every dependency answered", body = serde_json::Value),
        (status = 503, description = "Not ready; the body says which dependency failed", body = serde_json::Value),
    )
)]
async fn get_readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(1);
    let catalog = async {
        tokio::time::timeout(
            limit,
            sqlx::query_scalar!("select 1 as one").fetch_one(&state.catalog),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    };
    let nats = async {
        matches!(
            state.nats.client.connection_state(),
            async_nats::connection::State::Connected
        ) && tokio::time::timeout(limit, state.nats.client.flush())
            .await
            .is_ok_and(|r| r.is_ok())
    };
    let redis = async {
        let mut conn = state.redis.clone();
        tokio::time::timeout(limit, redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .is_ok_and(|r| r.is_ok())
    };
    let (catalog, nats, redis) = tokio::join!(catalog, nats, redis);
    let body = json!({"catalog": catalog, "nats": nats, "redis": redis});
    if catalog && nats && redis {
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(body),
        )
            .into_response()
    }
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String)))]
async fn get_metrics(State(state): State<AppState>) -> Response {
    protocol::service::ops::render_metrics(&state.metrics.registry)
}
