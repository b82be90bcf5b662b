//! `/v1/orgs/{org}/github/installations`: binding GitHub App installations to an org.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use protocol::InstallationId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::db;
use crate::error::{Error, Problem, Result};
use crate::http::extract::{JsonBody, OrgScope, RequestId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(bind_installation, list_installations))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationIn {
    /// GitHub's id of the App installation.
    pub installation_id: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallationOut {
    pub installation_id: i64,
    /// The GitHub account (organization or user) the App is installed on.
    pub account: Option<String>,
    pub account_type: Option<String>,
    pub repositories: serde_json::Value,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<db::installations::InstallationRow> for InstallationOut {
    fn from(r: db::installations::InstallationRow) -> Self {
        Self {
            installation_id: r.installation_id,
            account: r.account_login,
            account_type: r.account_type,
            repositories: r.repositories,
            status: r.status,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallationsOut {
    pub items: Vec<InstallationOut>,
}

/// Binds an existing GitHub App installation to the org (owner, admin), once GitHub confirms
/// it is an installation of this App. An installation belongs to one org.
#[utoipa::path(
    post, path = "/v1/orgs/{org}/github/installations", tag = "github",
    params(("org" = i64, Path, description = "Org id")),
    request_body = InstallationIn,
    responses(
        (status = 201, body = InstallationOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Claimed by another org", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an installation of this App", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "GitHub did not answer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn bind_installation(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    JsonBody(input): JsonBody<InstallationIn>,
) -> Result<(StatusCode, Json<InstallationOut>)> {
    authz::require(&state, Scope::Org(&scope), Action::InstallationsWrite).await?;
    if input.installation_id <= 0 {
        return Err(Error::invalid(
            "installation_id",
            "must be a positive GitHub installation id",
        ));
    }
    let inst = InstallationId(input.installation_id);
    let actor = scope.principal.actor();
    let row =
        crate::github::install::bind_verified(&state, scope.id(), inst, &actor, Some(&request_id))
            .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// The org's installations.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/github/installations", tag = "github",
    params(("org" = i64, Path, description = "Org id")),
    responses((status = 200, body = InstallationsOut), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_installations(
    State(state): State<AppState>,
    scope: OrgScope,
) -> Result<Json<InstallationsOut>> {
    authz::require(&state, Scope::Org(&scope), Action::InstallationsRead).await?;
    let rows = db::installations::list_for_org(&state.catalog, scope.id()).await?;
    Ok(Json(InstallationsOut {
        items: rows.into_iter().map(Into::into).collect(),
    }))
}
