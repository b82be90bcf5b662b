//! The middleware every request passes: a request id (the caller's `X-Request-Id` if sane,
//! else a new one), a tracing span with `request_id`, `trace_id` and, once known, `org_id`;
//! the request timeout (`503`); RED metrics per matched route; and the `X-Request-Id` and
//! `X-Switchyard-Region` response headers.

use std::any::Any;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Response as HttpResponse};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::service::telemetry::current_trace_id;
use tracing::Instrument;

use crate::error::Error;
use crate::state::AppState;

/// The request's id, available to handlers as an extractor.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId("unknown".into())))
    }
}

fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = %request_id,
        org_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let timeout = state.config.server.request_timeout;
    let fut = async {
        if let Some(t) = current_trace_id() {
            tracing::Span::current().record("trace_id", t.as_str());
        }
        let resp = match tokio::time::timeout(timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => {
                tracing::warn!(timeout = ?timeout, "request timed out");
                Error::Unavailable {
                    what: "the service",
                    retry_after: 5,
                }
                .into_response()
            }
        };
        let status = resp.status().as_u16();
        if status >= 500 {
            tracing::warn!(
                status,
                latency_ms = started.elapsed().as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status,
                latency_ms = started.elapsed().as_millis() as u64,
                "request done"
            );
        }
        resp
    };
    let mut resp = fut.instrument(span).await;
    let status = resp.status().as_str().to_owned();
    state
        .metrics
        .http_requests
        .with_label_values(&[method.as_str(), &route, &status])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[method.as_str(), &route])
        .observe(started.elapsed().as_secs_f64());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(state.region.as_str()) {
        h.insert("x-switchyard-region", v);
    }
    resp
}

/// A panic in a handler becomes a logged `500` problem, never a dropped connection.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature CatchPanicLayer::custom requires"
)]
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> HttpResponse<axum::body::Body> {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    Error::internal(format!("handler panicked: {detail}")).into_response()
}
