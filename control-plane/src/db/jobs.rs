//! `job` and `job_event`: reads for the API. Writes go through `protocol::service::jobstore`,
//! which holds the state machine's guards.

use chrono::{DateTime, Utc};

use super::OrgDb;

#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub delivery_id: String,
    pub rule_id: String,
    pub repo: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub struct JobEventRow {
    pub seq: i32,
    pub status: String,
    pub at: DateTime<Utc>,
    pub worker: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Filters and keyset position of a job listing (newest first).
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub repo: Option<String>,
    /// List jobs strictly older than this `(created_at, id)`.
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

pub async fn list(db: &OrgDb, f: &JobFilter) -> Result<Vec<JobRow>, sqlx::Error> {
    let (before_at, before_id) = match &f.before {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    sqlx::query_as!(
        JobRow,
        r#"select id, kind, delivery_id, rule_id, repo, status, attempts, result, error,
                  created_at, started_at, finished_at
           from job
           where org_id = $1
             and ($2::text is null or status = $2)
             and ($3::text is null or repo = $3)
             and ($4::timestamptz is null or (created_at, id) < ($4, $5::text))
           order by created_at desc, id desc
           limit $6"#,
        db.org().0,
        f.status,
        f.repo,
        before_at,
        before_id,
        f.limit
    )
    .fetch_all(db.pool())
    .await
}

pub async fn get(db: &OrgDb, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as!(
        JobRow,
        r#"select id, kind, delivery_id, rule_id, repo, status, attempts, result, error,
                  created_at, started_at, finished_at
           from job where org_id = $1 and id = $2"#,
        db.org().0,
        id
    )
    .fetch_optional(db.pool())
    .await
}

pub async fn events(db: &OrgDb, id: &str) -> Result<Vec<JobEventRow>, sqlx::Error> {
    sqlx::query_as!(
        JobEventRow,
        "select seq, status, at, worker, detail from job_event where org_id = $1 and job_id = $2 order by seq",
        db.org().0,
        id
    )
    .fetch_all(db.pool())
    .await
}

/// The job's spec as it was queued.
pub async fn spec(
    conn: &mut sqlx::PgConnection,
    org: protocol::OrgId,
    id: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar!(
        "select spec from job where org_id = $1 and id = $2",
        org.0,
        id
    )
    .fetch_optional(conn)
    .await
}
