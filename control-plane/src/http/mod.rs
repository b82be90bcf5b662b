//! HTTP: the router, its middleware and extractors, and the OpenAPI description. Each
//! resource's handlers live in `routes/<resource>.rs` with a `pub fn router()`; every handler
//! is declared once, for axum and for the OpenAPI document, so the two cannot disagree.

pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod pagination;
pub mod rate_limit;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::Error;
use crate::state::AppState;

/// Every route with its OpenAPI description.
pub fn api(api_body_limit: usize) -> OpenApiRouter<AppState> {
    let json_api = OpenApiRouter::new()
        .merge(routes::auth::router())
        .merge(routes::orgs::router())
        .merge(routes::members::router())
        .merge(routes::api_keys::router())
        .merge(routes::audit::router())
        .merge(routes::installations::router())
        .merge(routes::github::router())
        .merge(routes::rules::router())
        .merge(routes::jobs::router())
        .merge(routes::usage::router())
        .merge(routes::invoices::router())
        .merge(routes::admin::router())
        .merge(routes::shards::router())
        .layer(DefaultBodyLimit::max(api_body_limit))
        // The API's RateLimit-* headers; the webhook route stays without this layer.
        .layer(axum::middleware::from_fn(rate_limit::headers));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(json_api)
        .merge(routes::ops::router())
        .merge(openapi::router())
        // The webhook route reads its body itself, against GitHub's 25 MiB limit.
        .merge(routes::webhooks::router().layer(DefaultBodyLimit::disable()))
}

/// The routes and the OpenAPI document the service publishes at `/openapi.json`.
fn api_parts(api_body_limit: usize) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = api(api_body_limit).split_for_parts();
    openapi::document_rate_limit(&mut doc);
    (router, doc)
}

/// The OpenAPI document the service publishes at `/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_parts(1).1
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    let (router, doc) = api_parts(state.config.server.api_body_limit);
    router
        .layer(axum::Extension(Arc::new(doc)))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panic_response,
        ))
        .with_state(state)
}
