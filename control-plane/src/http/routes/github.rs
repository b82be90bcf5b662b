//! Installing the App: `GET /v1/orgs/{org}/github/install-url` and GitHub's redirect back,
//! `GET /github/setup`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::error::{Error, Problem, Result};
use crate::github::install;
use crate::http::extract::{OrgScope, QueryParams, RequestId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_install_url))
        .routes(routes!(complete_setup))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallUrlOut {
    /// GitHub's page to install the App, with a signed `state` naming this org.
    pub url: String,
    /// Seconds the link stays valid.
    pub expires_in: u64,
}

/// A link to install the App for this org (owner, admin).
#[utoipa::path(
    get, path = "/v1/orgs/{org}/github/install-url", tag = "github",
    params(("org" = i64, Path, description = "Org id")),
    responses((status = 200, body = InstallUrlOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn get_install_url(
    State(state): State<AppState>,
    scope: OrgScope,
) -> Result<Json<InstallUrlOut>> {
    authz::require(&state, Scope::Org(&scope), Action::InstallationsWrite).await?;
    Ok(Json(InstallUrlOut {
        url: install::install_url(&state, scope.id())?,
        expires_in: state.config.github.install.state_ttl.as_secs(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SetupQuery {
    pub installation_id: i64,
    /// `install` or `update`.
    #[serde(default)]
    pub setup_action: Option<String>,
    /// The signed state of the install link.
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetupOut {
    pub org_id: i64,
    pub installation_id: i64,
    pub account: Option<String>,
    pub status: String,
}

/// GitHub's redirect after the App was installed: binds the installation to the org named in
/// `state` (verified with GitHub first).
#[utoipa::path(
    get, path = "/github/setup", tag = "github",
    params(SetupQuery),
    responses(
        (status = 200, description = "Bound (JSON when no after-setup page is configured)", body = SetupOut),
        (status = 303, description = "Bound; on to the configured after-setup page"),
        (status = 400, description = "A missing, forged or expired state", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The installation belongs to another org", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn complete_setup(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    QueryParams(q): QueryParams<SetupQuery>,
) -> Result<Response> {
    let org = state.jwt.verify_install_state(&q.state).map_err(|_| {
        Error::BadRequest("this install link is invalid or expired; ask for a new one".into())
    })?;
    let row = crate::db::orgs::get(&state.catalog, org)
        .await?
        .filter(|o| o.status == "active")
        .ok_or(Error::NotFound)?;
    if q.installation_id <= 0 {
        return Err(Error::invalid(
            "installation_id",
            "must be a positive GitHub installation id",
        ));
    }
    let inst = protocol::InstallationId(q.installation_id);
    let bound =
        install::bind_verified(&state, org, inst, "github-setup", Some(&request_id)).await?;
    tracing::info!(org_id = row.id, installation = q.installation_id, action = ?q.setup_action, "installation bound through setup");
    match &state.config.github.install.after_setup_url {
        Some(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            Ok(Redirect::to(&format!(
                "{url}{sep}org={}&installation_id={}",
                row.id, q.installation_id
            ))
            .into_response())
        }
        None => Ok(Json(SetupOut {
            org_id: row.id,
            installation_id: q.installation_id,
            account: bound.account_login,
            status: bound.status,
        })
        .into_response()),
    }
}
