//! Installing the App for an org.
//!
//! An owner or admin asks for an install link: GitHub's install page with a signed, expiring
//! `state` naming the org. GitHub sends the browser back to `/github/setup` with the new
//! installation's id and that `state`; the installation is verified with GitHub (App JWT) and
//! bound to the org. Binding by API (`POST …/github/installations`) verifies the same way.
//! One installation belongs to one org: a second claim is refused.

use protocol::service::github::GithubError;
use protocol::{InstallationId, OrgId};

use crate::cache::Invalidation;
use crate::db::{
    self,
    installations::{BindError, Described, InstallationRow},
};
use crate::error::Error;
use crate::state::AppState;

/// The link to GitHub's install page for `org`.
pub fn install_url(state: &AppState, org: OrgId) -> Result<String, Error> {
    let ttl = state.config.github.install.state_ttl.as_secs();
    let token = state
        .jwt
        .issue_install_state(org, ttl)
        .map_err(Error::internal)?;
    let i = &state.config.github.install;
    Ok(format!(
        "{}/apps/{}/installations/new?state={token}",
        i.web_url.trim_end_matches('/'),
        i.app_slug
    ))
}

fn github_error(e: GithubError) -> Error {
    match e {
        GithubError::NotFound => {
            Error::invalid("installation_id", "not an installation of this GitHub App")
        }
        GithubError::NotConfigured => Error::Unavailable {
            what: "the GitHub App (not configured)",
            retry_after: 60,
        },
        e if e.is_transient() => {
            tracing::warn!(error = %e, "GitHub unavailable while verifying an installation");
            Error::Unavailable {
                what: "GitHub",
                retry_after: 10,
            }
        }
        e => Error::internal(e),
    }
}

/// Verifies the installation with GitHub and binds it to `org`, with its audit entry.
pub async fn bind_verified(
    state: &AppState,
    org: OrgId,
    installation: InstallationId,
    actor: &str,
    request_id: Option<&str>,
) -> Result<InstallationRow, Error> {
    let gh = state
        .github
        .installation(installation.0)
        .await
        .map_err(github_error)?;
    let suspended = gh.suspended_at.is_some();
    let repositories = if suspended {
        None
    } else {
        match state.github.installation_repositories(installation.0).await {
            Ok(repos) => Some(repos.into_iter().map(|r| r.full_name).collect::<Vec<_>>()),
            Err(e) if e.is_transient() => return Err(github_error(e)),
            Err(e) => {
                tracing::warn!(error = %e, installation = installation.0, "cannot list the installation's repositories");
                None
            }
        }
    };
    let described = Described {
        account_login: Some(&gh.account.login),
        account_type: gh.account.kind.as_deref(),
        suspended,
        repository_selection: gh.repository_selection.as_deref(),
        repositories,
    };
    let mut tx = state.catalog.begin().await?;
    let row = db::installations::bind(&mut tx, org, installation, &described)
        .await
        .map_err(|e| match e {
            BindError::ClaimedElsewhere => {
                Error::Conflict("this installation belongs to another org".into())
            }
            BindError::Sql(e) => e.into(),
        })?;
    db::audit::enqueue(
        &mut tx,
        org,
        db::audit::Entry {
            actor,
            action: "installation.bind",
            target: Some(&installation.to_string()),
            details: serde_json::json!({"account": gh.account.login, "suspended": suspended}),
            request_id,
        },
    )
    .await?;
    tx.commit().await?;
    crate::http::routes::flush_audit(state, org).await;
    state
        .invalidate(Invalidation::Installation(installation))
        .await;
    Ok(row)
}
