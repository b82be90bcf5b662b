//! Extractors: JSON bodies and query strings whose errors are problem documents, the
//! authenticated caller, and the org scope of `/v1/orgs/{org}/…` routes.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header;
use axum::http::request::Parts;
use protocol::OrgId;
use serde::de::DeserializeOwned;

use crate::auth::{self, Principal};
use crate::db::{self, OrgDb, orgs::OrgRow};
use crate::error::{Error, FieldError};
pub use crate::http::middleware::RequestId;
use crate::http::rate_limit::{self, RateLimitSlot};
use crate::state::AppState;

/// A JSON body: `415` if not JSON, `413` over the size limit, `400` if malformed, `422` with
/// the failing field's path if it does not fit the type (unknown fields included).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge {
                    limit: state.config.server.api_body_limit,
                }
            } else {
                Error::BadRequest("cannot read the request body".into())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON with the error split described on [`JsonBody`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            // A body that is not JSON at all is malformed, whatever its first value lacks.
            serde_json::error::Category::Data => {
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => data_error(&path, &inner),
                    Err(syntax) => Error::BadRequest(format!("malformed JSON: {syntax}")),
                }
            }
            _ => Error::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| Error::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn data_error(path: &str, e: &serde_json::Error) -> Error {
    let msg = e.to_string();
    // Drop serde_json's " at line 1 column 9" suffix: the field path says where.
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    let named = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let base = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    // serde_path_to_error's path ends at the unknown field itself, but at the parent of a
    // missing one.
    let field = match named("missing field `") {
        Some(name) if base.is_empty() => name,
        Some(name) => format!("{base}.{name}"),
        None => base,
    };
    Error::Invalid(vec![FieldError::new(field, msg)])
}

/// A query string, with the same error rules as [`JsonBody`].
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let field = e.path().to_string();
                let msg = e.into_inner().to_string();
                let field = if field == "." {
                    msg.split('`').nth(1).unwrap_or_default().to_owned()
                } else {
                    field
                };
                Error::Invalid(vec![FieldError::new(field, msg)])
            })
    }
}

/// The authenticated caller (`401` without valid credentials).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer(parts).ok_or(Error::Unauthorized(
            "send credentials as Authorization: Bearer <token>",
        ))?;
        auth::authenticate(state, token).await.map(Caller)
    }
}

/// The caller, if any credentials were sent (invalid credentials are still `401`).
#[derive(Clone, Debug)]
pub struct MaybeCaller(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match bearer(parts) {
            None if !parts.headers.contains_key(header::AUTHORIZATION) => Ok(MaybeCaller(None)),
            None => Err(Error::Unauthorized(
                "send credentials as Authorization: Bearer <token>",
            )),
            Some(token) => auth::authenticate(state, token)
                .await
                .map(|p| MaybeCaller(Some(p))),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The org of an `/v1/orgs/{org}/…` route, resolved for the caller:
/// `401` without credentials; `404` if the org does not exist, is still being created, or is
/// not the caller's; `307` to the org's home region if this is not it; `429` over the org's or
/// the key's API rate limit ([`crate::http::rate_limit`]). What the caller may do there is
/// then asked of [`crate::authz::require`].
#[derive(Clone, Debug)]
pub struct OrgScope {
    pub org: OrgRow,
    pub principal: Principal,
    pub db: OrgDb,
}

impl OrgScope {
    pub fn id(&self) -> OrgId {
        OrgId(self.org.id)
    }
}

impl FromRequestParts<AppState> for OrgScope {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound)?;
        let id = params
            .iter()
            .find(|(k, _)| *k == "org")
            .and_then(|(_, v)| v.parse::<i64>().ok())
            .map(OrgId)
            .ok_or(Error::NotFound)?;
        let org = db::orgs::get(&state.catalog, id)
            .await?
            .ok_or(Error::NotFound)?;
        if org.status == "creating" {
            return Err(Error::NotFound);
        }
        if let Principal::ApiKey { org: own, .. } = &principal
            && *own != id
        {
            return Err(Error::NotFound);
        }
        if org.region != state.region.as_str() {
            let home = db::regions::get(&state.catalog, &org.region)
                .await?
                .ok_or_else(|| {
                    Error::internal(format!("org {id} names unknown region {}", org.region))
                })?;
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            return Err(Error::WrongRegion {
                region: org.region,
                location: format!("{}{path}", home.api_url.trim_end_matches('/')),
            });
        }
        let db = OrgDb::for_org(&state.shards, id)?;
        tracing::Span::current().record("org_id", id.0);
        let slot = parts.extensions.get::<RateLimitSlot>();
        rate_limit::take(state, id, &org.plan, &principal, slot).await?;
        Ok(OrgScope { org, principal, db })
    }
}
