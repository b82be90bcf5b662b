//! `/v1/orgs/{org}/audit-log`: every mutating admin action, newest first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::db;
use crate::error::{Problem, Result};
use crate::http::extract::{OrgScope, QueryParams};
use crate::http::pagination::{self, Page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryOut {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–500, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The org's audit log (owner, admin).
#[utoipa::path(
    get, path = "/v1/orgs/{org}/audit-log", tag = "orgs",
    params(("org" = i64, Path, description = "Org id"), ListQuery),
    responses((status = 200, body = Page<AuditEntryOut>), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_audit_log(
    State(state): State<AppState>,
    scope: OrgScope,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<AuditEntryOut>>> {
    authz::require(&state, Scope::Org(&scope), Action::AuditRead).await?;
    let limit = pagination::limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(pagination::decode::<i64>)
        .transpose()?;
    let rows = db::audit::list(&scope.db, before, limit + 1).await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| r.id,
        |r| AuditEntryOut {
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
            request_id: r.request_id,
        },
    )))
}
