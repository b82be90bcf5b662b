//! `/v1/orgs/{org}/jobs`: the org's jobs and their histories.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use protocol::JobStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::db::{self, jobs::JobFilter};
use crate::error::{Error, Problem, Result};
use crate::http::extract::RequestId;
use crate::http::extract::{OrgScope, QueryParams};
use crate::http::pagination::{self, Page};
use crate::queue::publisher;
use crate::state::AppState;
use protocol::service::jobstore;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
}

async fn detail(scope: &OrgScope, id: &str) -> Result<JobDetailOut> {
    let job = db::jobs::get(&scope.db, id).await?.ok_or(Error::NotFound)?;
    let events = db::jobs::events(&scope.db, id).await?;
    Ok(JobDetailOut {
        job: job.into(),
        events: events
            .into_iter()
            .map(|e| JobEventOut {
                seq: e.seq,
                status: e.status,
                at: e.at,
                worker: e.worker,
                detail: e.detail,
            })
            .collect(),
    })
}

/// Runs a `failed`, `dead` or `cancelled` job again (owner, admin, developer).
#[utoipa::path(
    post, path = "/v1/orgs/{org}/jobs/{id}/retry", tag = "jobs",
    params(("org" = i64, Path, description = "Org id"), ("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Queued again", body = JobDetailOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is queued, running or succeeded", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The job queue did not answer; nothing changed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn retry_job(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    Path(path): Path<(String, String)>,
) -> Result<Json<JobDetailOut>> {
    authz::require(&state, Scope::Org(&scope), Action::JobsWrite).await?;
    let id = protocol::JobId(path.1);
    let job = db::jobs::get(&scope.db, &id.0)
        .await?
        .ok_or(Error::NotFound)?;
    let actor = scope.principal.actor();
    let mut tx = scope.db.pool().begin().await?;
    let Some(requeue) = jobstore::requeue(&mut tx, scope.id(), &id, &actor).await? else {
        return Err(Error::Conflict(format!(
            "only failed, dead or cancelled jobs can be retried; this one is {}",
            job.status
        )));
    };
    let raw = db::jobs::spec(&mut tx, scope.id(), &id.0)
        .await?
        .ok_or(Error::NotFound)?;
    let mut spec: protocol::JobSpec = serde_json::from_value(raw).map_err(Error::internal)?;
    spec.requeue = u32::try_from(requeue).unwrap_or(u32::MAX);
    db::audit::append(
        &mut tx,
        scope.id(),
        db::audit::Entry {
            actor: &actor,
            action: "job.retry",
            target: Some(&id.0),
            details: serde_json::json!({"from": job.status, "requeue": requeue}),
            request_id: Some(&request_id),
        },
    )
    .await?;
    // The message first, the row after: if the commit is lost, the message (with its higher
    // requeue number) still re-opens the job in the worker's claim.
    publisher::publish_job(&state.nats, &spec, state.config.github.publish_timeout)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot queue a retry");
            Error::Unavailable {
                what: "the job queue",
                retry_after: 5,
            }
        })?;
    tx.commit().await?;
    Ok(Json(detail(&scope, &id.0).await?))
}

/// Cancels a queued or running job (owner, admin, developer): a running job is stopped by
/// its worker.
#[utoipa::path(
    post, path = "/v1/orgs/{org}/jobs/{id}/cancel", tag = "jobs",
    params(("org" = i64, Path, description = "Org id"), ("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = JobDetailOut),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already ended", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn cancel_job(
    State(state): State<AppState>,
    scope: OrgScope,
    RequestId(request_id): RequestId,
    Path(path): Path<(String, String)>,
) -> Result<Json<JobDetailOut>> {
    authz::require(&state, Scope::Org(&scope), Action::JobsWrite).await?;
    let id = protocol::JobId(path.1);
    let job = db::jobs::get(&scope.db, &id.0)
        .await?
        .ok_or(Error::NotFound)?;
    let actor = scope.principal.actor();
    let mut tx = scope.db.pool().begin().await?;
    let detail_json = serde_json::json!({"reason": "cancelled by request"});
    let prev = jobstore::transition(
        &mut tx,
        scope.id(),
        &id,
        JobStatus::Cancelled,
        Some(&actor),
        Some(detail_json),
    )
    .await?;
    let Some(prev) = prev else {
        return Err(Error::Conflict(format!(
            "the job already ended ({})",
            job.status
        )));
    };
    db::audit::append(
        &mut tx,
        scope.id(),
        db::audit::Entry {
            actor: &actor,
            action: "job.cancel",
            target: Some(&id.0),
            details: serde_json::json!({"from": prev}),
            request_id: Some(&request_id),
        },
    )
    .await?;
    tx.commit().await?;
    if prev == JobStatus::Running {
        let region = protocol::Region::new(scope.org.region.clone()).map_err(Error::internal)?;
        let notice = serde_json::to_vec(&protocol::job::CancelNotice { job_id: id.clone() })
            .map_err(Error::internal)?;
        let subject = state.nats.names.cancel_subject(&region);
        if let Err(e) = state.nats.client.publish(subject, notice.into()).await {
            // The job's row says cancelled: its worker's outcome will be discarded anyway.
            tracing::warn!(error = %e, "cannot tell the workers to stop a cancelled job");
        }
    }
    Ok(Json(detail(&scope, &id.0).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Only jobs of this repository (`owner/name`).
    pub repo: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobOut {
    pub id: String,
    pub kind: String,
    pub repo: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub delivery_id: String,
    pub rule_id: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobEventOut {
    pub seq: i32,
    pub status: String,
    pub at: DateTime<Utc>,
    pub worker: Option<String>,
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDetailOut {
    #[serde(flatten)]
    pub job: JobOut,
    pub events: Vec<JobEventOut>,
}

impl From<db::jobs::JobRow> for JobOut {
    fn from(r: db::jobs::JobRow) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            repo: r.repo,
            status: r.status,
            attempts: r.attempts,
            delivery_id: r.delivery_id,
            rule_id: r.rule_id,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            result: r.result,
            error: r.error,
        }
    }
}

/// The org's jobs, newest first.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/jobs", tag = "jobs",
    params(("org" = i64, Path, description = "Org id"), JobsQuery),
    responses(
        (status = 200, body = Page<JobOut>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_jobs(
    State(state): State<AppState>,
    scope: OrgScope,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Result<Json<Page<JobOut>>> {
    authz::require(&state, Scope::Org(&scope), Action::JobsRead).await?;
    if let Some(s) = &q.status {
        s.parse::<JobStatus>().map_err(|_| {
            let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            Error::invalid("status", format!("one of {}", all.join(", ")))
        })?;
    }
    let limit = pagination::limit(q.limit)?;
    let before = q
        .cursor
        .as_deref()
        .map(pagination::decode::<(DateTime<Utc>, String)>)
        .transpose()?;
    let rows = db::jobs::list(
        &scope.db,
        &JobFilter {
            status: q.status,
            repo: q.repo,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| (r.created_at, r.id.clone()),
        JobOut::from,
    )))
}

/// A job, with every transition it went through.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/jobs/{id}", tag = "jobs",
    params(("org" = i64, Path, description = "Org id"), ("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobDetailOut), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn get_job(
    State(state): State<AppState>,
    scope: OrgScope,
    Path(path): Path<(String, String)>,
) -> Result<Json<JobDetailOut>> {
    let id = path.1;
    authz::require(&state, Scope::Org(&scope), Action::JobsRead).await?;
    let job = db::jobs::get(&scope.db, &id)
        .await?
        .ok_or(Error::NotFound)?;
    let events = db::jobs::events(&scope.db, &id).await?;
    Ok(Json(JobDetailOut {
        job: job.into(),
        events: events
            .into_iter()
            .map(|e| JobEventOut {
                seq: e.seq,
                status: e.status,
                at: e.at,
                worker: e.worker,
                detail: e.detail,
            })
            .collect(),
    }))
}
