//! The API's one error type. Every failure a client can see is rendered here as an RFC 9457
//! `application/problem+json` document; internal causes are logged once, with their chain,
//! and never sent.

use std::fmt;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Rate-limit state reported with `429`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the limit is fully restored.
    pub reset: u64,
    pub retry_after: u64,
    /// Seconds an empty budget takes to fill up (`w` of `RateLimit-Policy`).
    pub window: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request could not be read (malformed JSON, missing header).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, a member of the org, but the role does not allow it.
    #[error("your role does not allow this")]
    Forbidden,
    /// 404: unknown, or belonging to another org.
    #[error("not found")]
    NotFound,
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 405: the path exists, not with this method.
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    /// 413: body larger than the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: not JSON.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 422: readable but invalid fields.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// 429: over a rate limit or quota.
    #[error("rate limit exceeded")]
    RateLimited(RateLimit),
    /// 503: a dependency did not answer; try again after `retry_after` seconds.
    #[error("{what} is unavailable")]
    Unavailable {
        what: &'static str,
        retry_after: u64,
    },
    /// 503: the shard holding the org does not answer (its circuit breaker is open); every
    /// other shard's orgs are served as before.
    #[error("the database shard holding this org ({shard}) is unavailable")]
    ShardDown { shard: String, retry_after: u64 },
    /// 307: the org lives in another region; `location` is the same path there.
    #[error("this org lives in region {region}")]
    WrongRegion { region: String, location: String },
    /// 500: a bug or an unexpected state. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(e.into())
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable { .. } | Error::ShardDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::WrongRegion { .. } => StatusCode::TEMPORARY_REDIRECT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad-request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden => "forbidden",
            Error::NotFound => "not-found",
            Error::Conflict(_) => "conflict",
            Error::MethodNotAllowed => "method-not-allowed",
            Error::PayloadTooLarge { .. } => "payload-too-large",
            Error::UnsupportedMediaType => "unsupported-media-type",
            Error::Invalid(_) => "invalid-request",
            Error::RateLimited(_) => "rate-limited",
            Error::Unavailable { .. } => "unavailable",
            Error::ShardDown { .. } => "shard-unavailable",
            Error::WrongRegion { .. } => "wrong-region",
            Error::Internal(_) => "internal",
        }
    }
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Base of the `type` URIs of Switchyard's problems (documented in docs/api.md).
pub const PROBLEM_BASE: &str = "https://switchyard.dev/problems/";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Error::Internal(cause) => {
                tracing::error!(error = %Chain(cause.as_ref()), "internal error");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors: match &self {
                Error::Invalid(errs) => Some(errs.clone()),
                _ => None,
            },
        };
        let mut resp = (status, Json(problem)).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Error::Unavailable { retry_after, .. } | Error::ShardDown { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::RateLimited(rl) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(rl.retry_after));
                h.insert("ratelimit-limit", HeaderValue::from(rl.limit));
                h.insert("ratelimit-remaining", HeaderValue::from(rl.remaining));
                h.insert("ratelimit-reset", HeaderValue::from(rl.reset));
                if let Ok(v) = HeaderValue::from_str(&format!("{};w={}", rl.limit, rl.window)) {
                    h.insert("ratelimit-policy", v);
                }
            }
            Error::WrongRegion { location, region } => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    h.insert(header::LOCATION, v);
                }
                if let Ok(v) = HeaderValue::from_str(region) {
                    h.insert("x-switchyard-home-region", v);
                }
            }
            Error::Unauthorized(_) => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            // The refused body is left unread, so the server closes the connection after
            // this response; saying so keeps a client from sending its next request on a
            // connection that is about to close.
            Error::PayloadTooLarge { .. } => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// Displays an error with its sources: `outer: inner: root`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

/// Database errors: an unreachable database is `503`; a unique violation becomes a `409`
/// only where the query knows what conflicted (see `db::`); anything else is internal.
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            tracing::warn!(error = %Chain(&e), "database unavailable");
            Error::Unavailable {
                what: "database",
                retry_after: 2,
            }
        } else {
            Error::internal(e)
        }
    }
}

/// Whether a database error means "not reachable now" rather than "wrong".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P03 cannot_connect_now, 53300 too_many_connections,
            // 57014 query_canceled (statement timeout), 08xxx connection exceptions, SY001 the
            // org's range has just moved to another shard (a retry finds it there).
            db.code().is_some_and(|c| {
                matches!(
                    c.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "57014" | "SY001"
                ) || c.starts_with("08")
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn problems_have_the_rfc_9457_shape_and_media_type() {
        let resp = Error::invalid("slug", "too short").into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let b = body(resp).await;
        assert_eq!(b["status"], 422);
        assert_eq!(b["type"], "https://switchyard.dev/problems/invalid-request");
        assert_eq!(b["errors"][0]["field"], "slug");
    }

    #[tokio::test]
    async fn internal_errors_never_leak_their_cause() {
        let resp = Error::internal("relation \"secret_table\" does not exist").into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = body(resp).await.to_string();
        assert!(!text.contains("secret_table"));
    }

    #[tokio::test]
    async fn unavailable_and_rate_limited_say_when_to_retry() {
        let resp = Error::Unavailable {
            what: "queue",
            retry_after: 3,
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let resp = Error::RateLimited(RateLimit {
            limit: 10,
            remaining: 0,
            reset: 6,
            retry_after: 6,
            window: 60,
        })
        .into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "6");
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        assert_eq!(resp.headers()["ratelimit-limit"], "10");
        assert_eq!(resp.headers()["ratelimit-reset"], "6");
        assert_eq!(resp.headers()["ratelimit-policy"], "10;w=60");
    }

    #[test]
    fn a_refused_body_closes_the_connection() {
        let resp = Error::PayloadTooLarge { limit: 1024 }.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let resp = Error::BadRequest("x".into()).into_response();
        assert!(resp.headers().get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn wrong_region_redirects_with_a_location() {
        let resp = Error::WrongRegion {
            region: "eu-west-1".into(),
            location: "http://eu.example/v1/orgs/5".into(),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            resp.headers()[header::LOCATION],
            "http://eu.example/v1/orgs/5"
        );
    }

    #[test]
    fn a_pool_timeout_is_unavailable_not_internal() {
        assert!(matches!(
            Error::from(sqlx::Error::PoolTimedOut),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::Internal(_)
        ));
    }
}
