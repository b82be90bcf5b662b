//! `/v1/orgs/{org}/members`: who belongs to the org, with which role.

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
        .routes(routes!(list_members, add_member))
        .routes(routes!(update_member, remove_member))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberOut {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddedMemberOut {
    #[serde(flatten)]
    pub member: MemberOut,
    /// The member's API key, shown once.
    pub api_key: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberIn {
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleIn {
    pub role: Role,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–500, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl TryFrom<db::members::MemberRow> for MemberOut {
    type Error = Error;
    fn try_from(r: db::members::MemberRow) -> Result<Self> {
        Ok(MemberOut {
            role: r.role.parse().map_err(Error::internal)?,
            user_id: r.user_id,
            email: r.email,
            created_at: r.created_at,
        })
    }
}

/// May the caller manage owners in this org? (Asked of `authz::require` like everything.)
async fn may_manage_owners(state: &AppState, scope: &OrgScope) -> Result<bool> {
    match authz::require(state, Scope::Org(scope), Action::GrantOwner).await {
        Ok(()) => Ok(true),
        Err(Error::Forbidden) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The org's members.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/members", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ListQuery),
    responses(
        (status = 200, description = "A page of members (`items`, `next_cursor`)", body = Page<MemberOut>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_members(
    State(state): State<AppState>,
    scope: OrgScope,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<MemberOut>>> {
    authz::require(&state, Scope::Org(&scope), Action::MembersRead).await?;
    let limit = pagination::limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(pagination::decode::<String>)
        .transpose()?;
    let rows = db::members::list(&state.catalog, scope.id(), after.as_deref(), limit + 1).await?;
    let page = pagination::page(rows, limit, |r| r.user_id.clone(), |r| r);
    let items = page
        .items
        .into_iter()
        .map(MemberOut::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Adds a member (owner, admin; only an owner adds an owner) and issues their API key.
#[utoipa::path(
    post, path = "/v1/orgs/{org}/members", tag = "orgs",
    params(("org" = i64, Path, description = "Org id")),
    request_body = MemberIn,
    responses(
        (status = 201, body = AddedMemberOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn add_member(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    JsonBody(input): JsonBody<MemberIn>,
) -> Result<(StatusCode, Json<AddedMemberOut>)> {
    authz::require(&state, Scope::Org(&scope), Action::MembersWrite).await?;
    let email =
        tenancy::normalize_email("email", &input.email).map_err(|e| Error::Invalid(vec![e]))?;
    let owners = may_manage_owners(&state, &scope).await?;
    let actor_name = scope.principal.actor();
    let actor = Actor {
        name: &actor_name,
        request_id: Some(&request_id),
    };
    let (row, key) = members::add(
        &state.catalog,
        scope.id(),
        &email,
        input.role,
        owners,
        &actor,
    )
    .await?;
    super::flush_audit(&state, scope.id()).await;
    Ok((
        StatusCode::CREATED,
        Json(AddedMemberOut {
            member: row.try_into()?,
            api_key: key,
        }),
    ))
}

/// Changes a member's role (owner, admin; only an owner grants or takes `owner`; the last
/// owner stays).
#[utoipa::path(
    patch, path = "/v1/orgs/{org}/members/{user_id}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ("user_id" = String, Path, description = "Member")),
    request_body = RoleIn,
    responses(
        (status = 200, body = MemberOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last owner", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn update_member(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    Path(path): Path<(String, String)>,
    JsonBody(input): JsonBody<RoleIn>,
) -> Result<Json<MemberOut>> {
    let user_id = path.1;
    authz::require(&state, Scope::Org(&scope), Action::MembersWrite).await?;
    let owners = may_manage_owners(&state, &scope).await?;
    let actor_name = scope.principal.actor();
    let actor = Actor {
        name: &actor_name,
        request_id: Some(&request_id),
    };
    let row = members::change_role(
        &state.catalog,
        scope.id(),
        &user_id,
        input.role,
        owners,
        &actor,
    )
    .await?;
    super::flush_audit(&state, scope.id()).await;
    Ok(Json(row.try_into()?))
}

/// Removes a member and revokes their keys (owner, admin; the last owner stays).
#[utoipa::path(
    delete, path = "/v1/orgs/{org}/members/{user_id}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ("user_id" = String, Path, description = "Member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last owner", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn remove_member(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    Path(path): Path<(String, String)>,
) -> Result<StatusCode> {
    let user_id = path.1;
    authz::require(&state, Scope::Org(&scope), Action::MembersWrite).await?;
    let owners = may_manage_owners(&state, &scope).await?;
    let actor_name = scope.principal.actor();
    let actor = Actor {
        name: &actor_name,
        request_id: Some(&request_id),
    };
    members::remove(&state.catalog, scope.id(), &user_id, owners, &actor).await?;
    super::flush_audit(&state, scope.id()).await;
    Ok(StatusCode::NO_CONTENT)
}
