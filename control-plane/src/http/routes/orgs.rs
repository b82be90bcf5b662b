//! `/v1/orgs` and `/v1/orgs/{org}`: onboarding, reading, changing and offboarding an org.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use protocol::Region;
use protocol::service::jobstore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::authz::{self, Action, Scope};
use crate::cache::Invalidation;
use crate::db::{self, idempotency::Begin};
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::extract::{JsonBody, MaybeCaller, OrgScope, RequestId};
use crate::intake::rules;
use crate::state::AppState;
use crate::tenancy::{self, onboarding};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org))
        .routes(routes!(get_org, update_org, delete_org))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgIn {
    /// 3–39 lowercase letters, digits and single hyphens; unique.
    pub slug: String,
    pub name: String,
    /// The home region: the org's data and jobs stay there.
    pub region: String,
    pub plan: String,
    pub owner_email: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrgOut {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub region: String,
    pub shard: String,
    pub plan: String,
    /// `active` or `deleted`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OwnerOut {
    pub user_id: String,
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedOrgOut {
    #[serde(flatten)]
    pub org: OrgOut,
    pub owner: OwnerOut,
    /// The owner's API key, shown once; `null` in an idempotent replay.
    pub api_key: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPatchIn {
    pub name: Option<String>,
    pub plan: Option<String>,
}

fn check_plan(state: &AppState, plan: &str) -> Option<FieldError> {
    (!state.config.plans.contains_key(plan)).then(|| {
        let known: Vec<&str> = state.config.plans.keys().map(String::as_str).collect();
        FieldError::new("plan", format!("unknown plan; one of {}", known.join(", ")))
    })
}

async fn validate(state: &AppState, input: &OrgIn) -> Result<onboarding::NewOrg> {
    let mut errs: Vec<FieldError> = Vec::new();
    if let Err(e) = tenancy::check_slug(&input.slug) {
        errs.push(e);
    }
    if let Err(e) = tenancy::check_name("name", &input.name) {
        errs.push(e);
    }
    let email = tenancy::normalize_email("owner_email", &input.owner_email)
        .map_err(|e| errs.push(e))
        .ok();
    errs.extend(check_plan(state, &input.plan));
    let region = match Region::new(input.region.clone()) {
        Ok(r)
            if db::regions::get(&state.catalog, r.as_str())
                .await?
                .is_some() =>
        {
            Some(r)
        }
        _ => {
            errs.push(FieldError::new("region", "unknown region"));
            None
        }
    };
    match (errs.is_empty(), email, region) {
        (true, Some(owner_email), Some(region)) => Ok(onboarding::NewOrg {
            slug: input.slug.clone(),
            name: input.name.trim().to_owned(),
            region,
            plan: input.plan.clone(),
            owner_email,
        }),
        _ => Err(Error::Invalid(errs)),
    }
}

/// Onboards an org: the operator only, unless self-serve signup is on. Honours
/// `Idempotency-Key`: a repeat answers the first result, without the key's secret.
#[utoipa::path(
    post, path = "/v1/orgs", tag = "orgs",
    request_body = OrgIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first result")),
    responses(
        (status = 201, description = "Created; `api_key` is the owner's, shown once", body = CreatedOrgOut),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or bad credentials", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No open id range in the region, or the new org's shard is down; nothing was created", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_org(
    State(state): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    JsonBody(input): JsonBody<OrgIn>,
) -> Result<Response> {
    match &caller {
        Some(p) if !state.config.auth.self_serve_signup => {
            authz::require(&state, Scope::Platform(p), Action::Platform).await?;
        }
        Some(_) => {}
        None if state.config.auth.self_serve_signup => {}
        None => {
            return Err(Error::Unauthorized(
                "send credentials as Authorization: Bearer <token>",
            ));
        }
    }
    let new = validate(&state, &input).await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    Error::BadRequest("Idempotency-Key must be 1-255 visible characters".into())
                })?
                .to_owned(),
        ),
    };
    let idem = match key {
        None => None,
        Some(key) => {
            let scope = caller
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), Principal::idempotency_scope);
            let hash =
                Sha256::digest(serde_json::to_vec(&input).map_err(Error::internal)?).to_vec();
            Some((scope, key, hash))
        }
    };
    let actor = caller
        .as_ref()
        .map_or_else(|| "signup".to_owned(), Principal::actor);
    // The saga runs in a task of its own: a client that hangs up mid-request must not cancel
    // it between two steps, which would leave a half-created org behind. It finishes — or
    // compensates — either way.
    tokio::spawn(onboard_detached(state, new, actor, request_id, idem))
        .await
        .map_err(Error::internal)?
}

async fn onboard_detached(
    state: AppState,
    new: onboarding::NewOrg,
    actor: String,
    request_id: String,
    idem: Option<(String, String, Vec<u8>)>,
) -> Result<Response> {
    let idem = match idem {
        None => None,
        Some((scope, key, hash)) => {
            match db::idempotency::begin(&state.catalog, &scope, &key, &hash).await? {
                Begin::Fresh => Some((scope, key)),
                Begin::Replay { status, body } => {
                    let status = StatusCode::from_u16(status).map_err(Error::internal)?;
                    return Ok(
                        (status, [("idempotent-replayed", "true")], Json(body)).into_response()
                    );
                }
                Begin::InProgress => {
                    return Err(Error::Conflict(
                        "a request with this Idempotency-Key is in progress".into(),
                    ));
                }
                Begin::Mismatch => {
                    return Err(Error::invalid(
                        "Idempotency-Key",
                        "was used with a different request body",
                    ));
                }
            }
        }
    };
    let result = onboarding::onboard(
        &state.catalog,
        &state.shards,
        &new,
        &rules::defaults(),
        onboarding::Actor {
            name: &actor,
            request_id: Some(&request_id),
        },
    )
    .await;
    match result {
        Ok(done) => {
            let out = CreatedOrgOut {
                org: OrgOut {
                    id: done.id.0,
                    slug: done.slug,
                    name: done.name,
                    region: done.region,
                    shard: done.shard,
                    plan: done.plan,
                    status: "active".into(),
                    created_at: done.created_at,
                },
                owner: OwnerOut {
                    user_id: done.owner_user_id,
                    email: done.owner_email,
                },
                api_key: Some(done.api_key),
            };
            if let Some((scope, key)) = &idem {
                let mut stored = serde_json::to_value(&out).map_err(Error::internal)?;
                stored["api_key"] = serde_json::Value::Null;
                db::idempotency::complete(&state.catalog, scope, key, 201, &stored).await?;
            }
            tracing::info!(org_id = out.org.id, slug = %out.org.slug, region = %out.org.region, "org created");
            Ok((StatusCode::CREATED, Json(out)).into_response())
        }
        Err(e) => {
            if let Some((scope, key)) = &idem {
                db::idempotency::abandon(&state.catalog, scope, key).await?;
            }
            Err(e)
        }
    }
}

pub fn org_out(state: &AppState, org: &db::orgs::OrgRow) -> OrgOut {
    let shard = state
        .shards
        .route(protocol::OrgId(org.id))
        .map(|h| h.name)
        .unwrap_or_default();
    OrgOut {
        id: org.id,
        slug: org.slug.clone(),
        name: org.name.clone(),
        region: org.region.clone(),
        shard,
        plan: org.plan.clone(),
        status: org.status.clone(),
        created_at: org.created_at,
    }
}

/// The org.
#[utoipa::path(
    get, path = "/v1/orgs/{org}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id")),
    responses(
        (status = 200, body = OrgOut),
        (status = 307, description = "The org lives in another region; Location is the same path there"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, or another org's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_org(State(state): State<AppState>, scope: OrgScope) -> Result<Json<OrgOut>> {
    authz::require(&state, Scope::Org(&scope), Action::OrgRead).await?;
    Ok(Json(org_out(&state, &scope.org)))
}

/// Renames the org (owner, admin) or changes its plan (owner, billing).
#[utoipa::path(
    patch, path = "/v1/orgs/{org}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id")),
    request_body = OrgPatchIn,
    responses(
        (status = 200, body = OrgOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The org is offboarded", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn update_org(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    JsonBody(input): JsonBody<OrgPatchIn>,
) -> Result<Json<OrgOut>> {
    if input.name.is_none() && input.plan.is_none() {
        return Err(Error::invalid("", "send name, plan, or both"));
    }
    if input.name.is_some() {
        authz::require(&state, Scope::Org(&scope), Action::OrgUpdate).await?;
    }
    if input.plan.is_some() {
        authz::require(&state, Scope::Org(&scope), Action::OrgPlan).await?;
    }
    let mut errs = Vec::new();
    if let Some(n) = &input.name
        && let Err(e) = tenancy::check_name("name", n)
    {
        errs.push(e);
    }
    if let Some(p) = &input.plan {
        errs.extend(check_plan(&state, p));
    }
    if !errs.is_empty() {
        return Err(Error::Invalid(errs));
    }
    let name = input.name.as_deref().map(str::trim);
    let actor = scope.principal.actor();
    let mut tx = state.catalog.begin().await?;
    let row = db::orgs::update(&mut tx, scope.id(), name, input.plan.as_deref())
        .await?
        .ok_or_else(|| Error::Conflict("the org is not active".into()))?;
    db::audit::enqueue(
        &mut tx,
        scope.id(),
        db::audit::Entry {
            actor: &actor,
            action: "org.update",
            target: Some(&scope.org.slug),
            details: serde_json::json!({
                "name": input.name.as_ref().map(|_| serde_json::json!({"from": scope.org.name, "to": row.name})),
                "plan": input.plan.as_ref().map(|_| serde_json::json!({"from": scope.org.plan, "to": row.plan})),
            }),
            request_id: Some(&request_id),
        },
    )
    .await?;
    tx.commit().await?;
    super::flush_audit(&state, scope.id()).await;
    state.invalidate(Invalidation::Org(scope.id())).await;
    Ok(Json(org_out(&state, &row)))
}

/// Offboards the org (owner): `deleted`, its webhooks make no more jobs, its queued jobs are
/// cancelled; its data is kept for the retention period. Repeating it changes nothing.
#[utoipa::path(
    delete, path = "/v1/orgs/{org}", tag = "orgs",
    params(("org" = i64, Path, description = "Org id")),
    responses(
        (status = 200, description = "The offboarded org", body = OrgOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_org(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
) -> Result<Json<OrgOut>> {
    if scope.org.status == "deleted" {
        authz::require(&state, Scope::Org(&scope), Action::OrgRead).await?;
        return Ok(Json(org_out(&state, &scope.org)));
    }
    authz::require(&state, Scope::Org(&scope), Action::OrgDelete).await?;
    let actor = scope.principal.actor();
    let mut tx = state.catalog.begin().await?;
    let row = db::orgs::mark_deleted(&mut tx, scope.id())
        .await?
        .ok_or(Error::NotFound)?;
    db::audit::enqueue(
        &mut tx,
        scope.id(),
        db::audit::Entry {
            actor: &actor,
            action: "org.delete",
            target: Some(&scope.org.slug),
            details: serde_json::json!({"retention_days": state.config.tenancy.retention.as_secs() / 86_400}),
            request_id: Some(&request_id),
        },
    )
    .await?;
    tx.commit().await?;
    // From here on, intake makes no jobs for the org.
    state.invalidate(Invalidation::Org(scope.id())).await;
    super::flush_audit(&state, scope.id()).await;
    let mut conn = scope.db.pool().acquire().await?;
    let cancelled =
        jobstore::cancel_queued(&mut conn, scope.id(), &actor, "the org was offboarded").await?;
    tracing::info!(org_id = scope.org.id, cancelled, "org offboarded");
    Ok(Json(org_out(&state, &row)))
}
