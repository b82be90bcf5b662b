//! Installation lifecycle events keep the catalog true to GitHub:
//!
//! | event | action | effect on a bound installation |
//! |---|---|---|
//! | `installation` | `created` | account and repositories refreshed, `active` |
//! | `installation` | `deleted` | binding removed: no more jobs |
//! | `installation` | `suspend` / `unsuspend` | `suspended` (no jobs) / `active` |
//! | `installation` | `new_permissions_accepted` | recorded in the audit log |
//! | `installation_repositories` | `added` / `removed` | repositories updated |
//!
//! An installation no org has claimed is left alone: its deliveries are recorded as
//! unclaimed, and it is bound when an org claims it.

use protocol::{InstallationId, OrgId};

use crate::cache::Invalidation;
use crate::db;
use crate::error::Error;
use crate::intake::event::Payload;
use crate::state::AppState;

const ACTOR: &str = "github";

/// Applies a lifecycle event, if `event` is one. Returns whether it changed a binding.
pub async fn apply(
    state: &AppState,
    event: &str,
    delivery: &str,
    payload: &Payload,
) -> Result<bool, Error> {
    let Some(installation) = payload.installation.as_ref() else {
        return Ok(false);
    };
    let id = InstallationId(installation.id);
    let action = payload.action.as_deref().unwrap_or_default();
    let names = |list: &Option<Vec<crate::intake::event::RepoRef>>| -> Vec<String> {
        list.iter().flatten().map(|r| r.full_name.clone()).collect()
    };
    let mut tx = state.catalog.begin().await?;
    let (org, audit_action, details) = match (event, action) {
        ("installation", "created") => {
            let Some(row) = db::installations::get(&state.catalog, id).await? else {
                return Ok(false);
            };
            let d = db::installations::Described {
                account_login: installation.account.as_ref().map(|a| a.login.as_str()),
                account_type: installation
                    .account
                    .as_ref()
                    .and_then(|a| a.kind.as_deref()),
                suspended: false,
                repository_selection: installation.repository_selection.as_deref(),
                repositories: payload
                    .repositories
                    .as_ref()
                    .map(|_| names(&payload.repositories)),
            };
            db::installations::bind(&mut tx, OrgId(row.org_id), id, &d)
                .await
                .map_err(|e| match e {
                    db::installations::BindError::Sql(e) => Error::from(e),
                    db::installations::BindError::ClaimedElsewhere => {
                        Error::internal("binding changed org")
                    }
                })?;
            (
                Some(row.org_id),
                "installation.created",
                serde_json::json!({}),
            )
        }
        ("installation", "deleted") => (
            db::installations::unbind(&mut tx, id).await?,
            "installation.deleted",
            serde_json::json!({}),
        ),
        ("installation", "suspend") => (
            db::installations::set_status(&mut tx, id, "suspended").await?,
            "installation.suspend",
            serde_json::json!({}),
        ),
        ("installation", "unsuspend") => (
            db::installations::set_status(&mut tx, id, "active").await?,
            "installation.unsuspend",
            serde_json::json!({}),
        ),
        ("installation", "new_permissions_accepted") => (
            db::installations::get(&state.catalog, id)
                .await?
                .map(|r| r.org_id),
            "installation.new_permissions_accepted",
            serde_json::json!({}),
        ),
        ("installation_repositories", "added" | "removed") => {
            let added = names(&payload.repositories_added);
            let removed = names(&payload.repositories_removed);
            let org = db::installations::change_repositories(
                &mut tx,
                id,
                &added,
                &removed,
                payload.repository_selection.as_deref(),
            )
            .await?;
            (
                org,
                "installation.repositories",
                serde_json::json!({"added": added, "removed": removed}),
            )
        }
        _ => return Ok(false),
    };
    let Some(org) = org else { return Ok(false) };
    db::audit::enqueue(
        &mut tx,
        OrgId(org),
        db::audit::Entry {
            actor: ACTOR,
            action: audit_action,
            target: Some(&id.to_string()),
            details,
            request_id: Some(delivery),
        },
    )
    .await?;
    tx.commit().await?;
    crate::http::routes::flush_audit(state, OrgId(org)).await;
    state.invalidate(Invalidation::Installation(id)).await;
    tracing::info!(
        installation = id.0,
        org_id = org,
        event,
        action,
        "installation lifecycle applied"
    );
    Ok(true)
}
