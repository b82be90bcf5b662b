//! Handlers, one module per resource. Handlers are named `verb_noun`, take validated input,
//! authorize through `authz::require`, call domain and `db` functions, and answer DTOs named
//! `…In` / `…Out`. Each is declared with `#[utoipa::path]`, which both routes it and
//! describes it in `/openapi.json`.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod github;
pub mod installations;
pub mod invoices;
pub mod jobs;
pub mod members;
pub mod ops;
pub mod orgs;
pub mod rules;
pub mod shards;
pub mod usage;
pub mod webhooks;

use protocol::OrgId;

use crate::state::AppState;

/// Moves the audit entries a catalog change just queued to the org's shard. A failure is
/// only logged: the background flush moves them later.
pub(crate) async fn flush_audit(state: &AppState, org: OrgId) {
    if let Err(e) = crate::tenancy::audit::flush(&state.catalog, &state.shards, Some(org)).await {
        tracing::warn!(error = %e, "audit entries stay queued for the background flush");
    }
}
