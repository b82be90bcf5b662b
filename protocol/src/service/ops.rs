//! The operations endpoints of services without an API of their own (worker, autoscaler):
//! `GET /healthz` (the process is alive), `GET /readyz` (its dependencies answer) and
//! `GET /metrics` (Prometheus text format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// A readiness probe: `Ok` when ready, otherwise the name of what is not.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    registry: prometheus::Registry,
    ready: ReadyCheck,
}

/// The router of the operations endpoints.
pub fn router(registry: prometheus::Registry, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { registry, ready })
}

async fn readyz(State(st): State<OpsState>) -> Response {
    match (st.ready)().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(what) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("not ready: {what}"),
        )
            .into_response(),
    }
}

async fn metrics(State(st): State<OpsState>) -> Response {
    render_metrics(&st.registry)
}

/// Renders a registry in the Prometheus text format.
pub fn render_metrics(registry: &prometheus::Registry) -> Response {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode(&registry.gather(), &mut buf) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            buf,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
