//! `POST /webhooks/github`: GitHub's deliveries. The hot path: read the body (25 MiB limit),
//! verify the signature before anything else, read the headers and payload, then hand it to
//! [`crate::intake::pipeline`], which answers only once JetStream holds the jobs.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use protocol::DeliveryId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Problem, Result};
use crate::intake::event::Payload;
use crate::intake::{pipeline, signature};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookOut {
    pub delivery_id: String,
    pub jobs: Vec<String>,
}

fn header_token<'a>(headers: &'a HeaderMap, name: &'static str, max: usize) -> Result<&'a str> {
    let v = headers
        .get(name)
        .ok_or_else(|| Error::BadRequest(format!("missing {name} header")))?
        .to_str()
        .map_err(|_| Error::BadRequest(format!("invalid {name} header")))?;
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err(Error::BadRequest(format!("invalid {name} header")))
    }
}

/// A GitHub webhook delivery, signed with the App's webhook secret. Answered `202` once
/// JetStream holds its jobs.
#[utoipa::path(
    post, path = "/webhooks/github", tag = "github",
    params(
        ("X-GitHub-Event" = String, Header, description = "Event name"),
        ("X-GitHub-Delivery" = String, Header, description = "Delivery GUID"),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC of the body>"),
    ),
    request_body(content = serde_json::Value, description = "GitHub's payload", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; the jobs it made", body = WebhookOut),
        (status = 400, description = "Missing headers or malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Bad or missing signature", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over 25 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Could not be queued; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WebhookOut>)> {
    let limit = state.config.github.webhook_body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            Error::PayloadTooLarge { limit }
        } else {
            Error::BadRequest("cannot read the request body".into())
        }
    })?;

    signature::verify(
        &state.config.github.webhook_secrets,
        headers.get("x-hub-signature-256").map(|v| v.as_bytes()),
        &bytes,
    )
    .map_err(|e| {
        state
            .metrics
            .deliveries
            .with_label_values(&["bad_signature"])
            .inc();
        Error::Unauthorized(match e {
            signature::SignatureError::Missing => "missing X-Hub-Signature-256",
            signature::SignatureError::Malformed => "malformed X-Hub-Signature-256",
            signature::SignatureError::Mismatch => "signature does not match",
        })
    })?;

    let event = header_token(&headers, "x-github-event", 64)?.to_owned();
    let delivery = DeliveryId(header_token(&headers, "x-github-delivery", 128)?.to_owned());
    let payload = Payload::parse(&bytes)
        .map_err(|e| Error::BadRequest(format!("malformed JSON payload: {e}")))?;

    let accepted = pipeline::accept(&state, &event, &delivery, &payload).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookOut {
            delivery_id: delivery.0,
            jobs: accepted.jobs.into_iter().map(|j| j.0).collect(),
        }),
    ))
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}
