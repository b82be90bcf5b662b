//! `/v1/orgs/{org}/rules`: which events start which jobs.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::cache::Invalidation;
use crate::db;
use crate::error::{Error, Problem, Result};
use crate::http::extract::{JsonBody, OrgScope, RequestId};
use crate::intake::rules::{self, Rule};
use crate::state::AppState;
use crate::tenancy::onboarding::rule_row;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_rules, replace_rules))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RulesOut {
    pub items: Vec<Rule>,
}

fn rules_of(rows: Vec<db::rules::RuleRow>) -> Result<Vec<Rule>> {
    rows.into_iter()
        .map(|r| {
            Ok(Rule {
                kind: protocol::JobKind::new(r.kind).map_err(Error::internal)?,
                id: r.id,
                event: r.event,
                action: r.action,
                label: r.label,
                command: r.command,
                repos: r.repos,
            })
        })
        .collect()
}

/// The org's trigger rules, in order.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/rules", tag = "github",
    params(("org" = i64, Path, description = "Org id")),
    responses((status = 200, body = RulesOut), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_rules(State(state): State<AppState>, scope: OrgScope) -> Result<Json<RulesOut>> {
    authz::require(&state, Scope::Org(&scope), Action::RulesRead).await?;
    Ok(Json(RulesOut {
        items: rules_of(db::rules::list(&scope.db).await?)?,
    }))
}

/// Replaces the org's trigger rules (owner, admin, developer). Each matching rule makes one
/// job: `issues` `labeled` with label `bot` → `agent`; `pull_request` `opened` → `review`;
/// `issue_comment` starting `/bot` → `agent`.
#[utoipa::path(
    put, path = "/v1/orgs/{org}/rules", tag = "github",
    params(("org" = i64, Path, description = "Org id")),
    request_body = Vec<Rule>,
    responses(
        (status = 200, body = RulesOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Each invalid field, by path (`[2].command`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn replace_rules(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    JsonBody(input): JsonBody<Vec<Rule>>,
) -> Result<Json<RulesOut>> {
    authz::require(&state, Scope::Org(&scope), Action::RulesWrite).await?;
    rules::validate(&input).map_err(Error::Invalid)?;
    let rows: Vec<db::rules::RuleRow> = input.iter().map(rule_row).collect();
    let mut tx = scope.db.pool().begin().await?;
    db::rules::replace(&mut tx, scope.id(), &rows).await?;
    db::audit::append(
        &mut tx,
        scope.id(),
        db::audit::Entry {
            actor: &scope.principal.actor(),
            action: "rules.replace",
            target: None,
            details: serde_json::json!({"rules": input}),
            request_id: Some(&request_id),
        },
    )
    .await?;
    tx.commit().await?;
    state.invalidate(Invalidation::Rules(scope.id())).await;
    Ok(Json(RulesOut { items: input }))
}
