//! `/v1/orgs/{org}/api-keys`: the org's service keys (and, listed, its members' keys).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::db;
use crate::error::{Error, Problem, Result};
use crate::http::extract::{JsonBody, OrgScope, QueryParams, RequestId};
use crate::http::pagination::{self, Page};
use crate::state::AppState;
use crate::tenancy::{self, Role, members, onboarding::Actor};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKeyOut {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The key, shown once.
    pub api_key: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The member the key was issued to; `null` for service keys.
    pub user_id: Option<String>,
    /// The key's visible prefix (`sy_<prefix>_…`).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–500, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The org's keys, newest first, without secrets (owner, admin).
#[utoipa::path(
    get, path = "/v1/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ListQuery),
    responses((status = 200, body = Page<ApiKeyOut>), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_api_keys(
    State(state): State<AppState>,
    scope: OrgScope,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<ApiKeyOut>>> {
    authz::require(&state, Scope::Org(&scope), Action::ApiKeysManage).await?;
    let limit = pagination::limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(pagination::decode::<(DateTime<Utc>, String)>)
        .transpose()?;
    let rows = db::api_keys::list(&state.catalog, scope.id(), before, limit + 1).await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| (r.created_at, r.id.clone()),
        |r| ApiKeyOut {
            id: r.id,
            name: r.name,
            role: r.role,
            user_id: r.user_id,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        },
    )))
}

/// Issues a service key (owner, admin; an `owner` key only by an owner).
#[utoipa::path(
    post, path = "/v1/orgs/{org}/api-keys", tag = "orgs",
    params(("org" = i64, Path, description = "Org id")),
    request_body = ApiKeyIn,
    responses(
        (status = 201, body = CreatedApiKeyOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_api_key(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    JsonBody(input): JsonBody<ApiKeyIn>,
) -> Result<(StatusCode, Json<CreatedApiKeyOut>)> {
    authz::require(&state, Scope::Org(&scope), Action::ApiKeysManage).await?;
    tenancy::check_name("name", &input.name).map_err(|e| Error::Invalid(vec![e]))?;
    let owners = match authz::require(&state, Scope::Org(&scope), Action::GrantOwner).await {
        Ok(()) => true,
        Err(Error::Forbidden) => false,
        Err(e) => return Err(e),
    };
    let actor_name = scope.principal.actor();
    let actor = Actor {
        name: &actor_name,
        request_id: Some(&request_id),
    };
    let name = input.name.trim();
    let (id, key) =
        members::create_key(&state.catalog, scope.id(), name, input.role, owners, &actor).await?;
    super::flush_audit(&state, scope.id()).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKeyOut {
            id,
            name: name.to_owned(),
            role: input.role,
            api_key: key,
        }),
    ))
}

/// Revokes a key at once (owner, admin). Tokens issued for it stop working too.
#[utoipa::path(
    delete, path = "/v1/orgs/{org}/api-keys/{id}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    Path(path): Path<(String, String)>,
) -> Result<StatusCode> {
    let id = path.1;
    authz::require(&state, Scope::Org(&scope), Action::ApiKeysManage).await?;
    let actor_name = scope.principal.actor();
    let actor = Actor {
        name: &actor_name,
        request_id: Some(&request_id),
    };
    members::revoke_key(&state.catalog, scope.id(), &id, &actor).await?;
    super::flush_audit(&state, scope.id()).await;
    Ok(StatusCode::NO_CONTENT)
}
