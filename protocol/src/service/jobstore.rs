//! The job table's writes, shared by everything that moves a job: the control plane's
//! recorder and API (create, retry, cancel) and the workers (claim, finish).
//!
//! Every change is a conditional update guarded by [`JobStatus::can_become`] plus an
//! appended `job_event` row in the same transaction, so the table never holds a transition
//! the state machine forbids and every transition is recorded exactly once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::ids::{JobId, OrgId};
use crate::job::{JobSpec, JobStatus};

/// Statuses a job may be in for it to become `to`.
pub fn sources_of(to: JobStatus) -> Vec<String> {
    JobStatus::ALL
        .into_iter()
        .filter(|s| s.can_become(to))
        .map(|s| s.as_str().to_owned())
        .collect()
}

/// Inserts the job as `status` (`queued` or `skipped_quota`) unless it exists. Returns
/// whether it was inserted; the first event is written only then.
pub async fn insert_if_absent(
    conn: &mut PgConnection,
    spec: &JobSpec,
    status: JobStatus,
    detail: Option<Value>,
) -> Result<bool, sqlx::Error> {
    let spec_json = serde_json::to_value(spec).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let inserted = sqlx::query_scalar!(
        r#"insert into job (org_id, id, kind, delivery_id, rule_id, repo, status, event_seq, spec, created_at, requeue)
           values ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10)
           on conflict (org_id, id) do nothing
           returning id"#,
        spec.org_id.0,
        spec.job_id.0,
        spec.kind.as_str(),
        spec.delivery_id.0,
        spec.rule_id.0,
        spec.repo,
        status.as_str(),
        spec_json,
        spec.created_at,
        i32::try_from(spec.requeue).unwrap_or(i32::MAX),
    )
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if inserted {
        sqlx::query!(
            "insert into job_event (org_id, job_id, seq, status, at, detail) values ($1, $2, 1, $3, $4, $5)",
            spec.org_id.0,
            spec.job_id.0,
            status.as_str(),
            spec.created_at,
            detail,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(inserted)
}

/// Inserts the jobs as `queued` unless they exist, each with its first event, in one
/// statement (the recorder's batches). A job listed twice is inserted once. Returns how many
/// were inserted.
pub async fn insert_queued_if_absent(
    conn: &mut PgConnection,
    specs: &[&JobSpec],
) -> Result<u64, sqlx::Error> {
    if specs.is_empty() {
        return Ok(0);
    }
    let orgs: Vec<i64> = specs.iter().map(|s| s.org_id.0).collect();
    let ids: Vec<&str> = specs.iter().map(|s| s.job_id.0.as_str()).collect();
    let kinds: Vec<&str> = specs.iter().map(|s| s.kind.as_str()).collect();
    let deliveries: Vec<&str> = specs.iter().map(|s| s.delivery_id.0.as_str()).collect();
    let rules: Vec<&str> = specs.iter().map(|s| s.rule_id.0.as_str()).collect();
    let repos: Vec<Option<&str>> = specs.iter().map(|s| s.repo.as_deref()).collect();
    let json: Vec<Value> = specs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let created: Vec<DateTime<Utc>> = specs.iter().map(|s| s.created_at).collect();
    let requeues: Vec<i32> = specs
        .iter()
        .map(|s| i32::try_from(s.requeue).unwrap_or(i32::MAX))
        .collect();
    let queued = JobStatus::Queued.as_str();
    let n = sqlx::query_scalar!(
        r#"with new as (
               insert into job (org_id, id, kind, delivery_id, rule_id, repo, status, event_seq, spec,
                                created_at, requeue)
               select o, i, k, d, r, rp, $10, 1, sp, c, rq
               from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::jsonb[], $8::timestamptz[], $9::int[])
                    as t(o, i, k, d, r, rp, sp, c, rq)
               on conflict (org_id, id) do nothing
               returning org_id, id, created_at
           ), events as (
               insert into job_event (org_id, job_id, seq, status, at, detail)
               select org_id, id, 1, $10, created_at, null from new
               returning 1
           )
           select count(*) as "n!" from events"#,
        &orgs,
        &ids as &[&str],
        &kinds as &[&str],
        &deliveries as &[&str],
        &rules as &[&str],
        &repos as &[Option<&str>],
        &json,
        &created,
        &requeues,
        queued,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What a worker may do with a job message it received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Run it; this is attempt number `attempt` (1-based).
    Run {
        /// The attempt's number over the job's whole life (recorded with its outcome).
        attempt: i32,
        /// Its number since the job was last retried by hand (what `max_attempts` bounds).
        tries: i32,
    },
    /// Already ended (or cancelled, or skipped): acknowledge and drop the message. For a job
    /// that ran, `ran` tells its last attempt and times, so usage can be reported again.
    Done { status: JobStatus, ran: Option<Ran> },
    /// Another message of the same job holds it: acknowledge and drop this duplicate.
    HeldElsewhere,
}

/// The last run of an ended job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ran {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// LLM tokens the run reported, if any.
    pub llm_tokens: Option<i64>,
}

/// Claims a job for running from the JetStream message with stream sequence `stream_seq`.
///
/// A `queued` job starts its next attempt. A `running` job whose recorded message is this one
/// was left by a worker that died or stalled past the ack wait: this worker takes it over as
/// a new attempt. A `running` job held by another message is left alone.
pub async fn claim(
    pool: &PgPool,
    spec: &JobSpec,
    worker: &str,
    stream_seq: u64,
) -> Result<Claim, sqlx::Error> {
    let seq = i64::try_from(stream_seq).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    insert_if_absent(
        &mut tx,
        spec,
        JobStatus::Queued,
        Some(serde_json::json!({"created_by": "worker"})),
    )
    .await?;
    let row = sqlx::query!(
        r#"select status, attempts, stream_seq, worker, started_at, finished_at, requeue,
                  (result -> 'usage' ->> 'total_tokens')::bigint as llm_tokens
           from job where org_id = $1 and id = $2 for update"#,
        spec.org_id.0,
        spec.job_id.0,
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut status: JobStatus = row
        .status
        .parse()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let retried = i64::from(spec.requeue) > i64::from(row.requeue)
        && matches!(
            status,
            JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        );
    if retried {
        let r = sqlx::query!(
            r#"update job set status = 'queued', requeue = $3, retry_from = attempts, event_seq = event_seq + 1, updated_at = now()
               where org_id = $1 and id = $2 returning event_seq"#,
            spec.org_id.0,
            spec.job_id.0,
            i32::try_from(spec.requeue).unwrap_or(i32::MAX),
        )
        .fetch_one(&mut *tx)
        .await?;
        let detail = serde_json::json!({"requeue": spec.requeue, "recorded_by": "worker"});
        append_event(
            &mut tx,
            spec.org_id,
            &spec.job_id,
            r.event_seq,
            JobStatus::Queued,
            Some(worker),
            Some(detail),
        )
        .await?;
        status = JobStatus::Queued;
    }
    let takeover = status == JobStatus::Running && row.stream_seq == Some(seq);
    if !(status == JobStatus::Queued || takeover) {
        tx.commit().await?;
        if status == JobStatus::Running {
            return Ok(Claim::HeldElsewhere);
        }
        let ran = match (row.started_at, row.finished_at) {
            (Some(started_at), Some(finished_at)) => Some(Ran {
                attempt: row.attempts,
                started_at,
                finished_at,
                llm_tokens: row.llm_tokens,
            }),
            _ => None,
        };
        return Ok(Claim::Done { status, ran });
    }
    let detail = if takeover {
        serde_json::json!({"attempt": row.attempts + 1, "took_over_from": row.worker})
    } else {
        serde_json::json!({"attempt": row.attempts + 1})
    };
    let r = sqlx::query!(
        r#"update job set status = 'running', attempts = attempts + 1, worker = $3, stream_seq = $4,
               started_at = now(), finished_at = null, event_seq = event_seq + 1, updated_at = now()
           where org_id = $1 and id = $2
           returning attempts, retry_from, event_seq"#,
        spec.org_id.0,
        spec.job_id.0,
        worker,
        seq,
    )
    .fetch_one(&mut *tx)
    .await?;
    append_event(
        &mut tx,
        spec.org_id,
        &spec.job_id,
        r.event_seq,
        JobStatus::Running,
        Some(worker),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(Claim::Run {
        attempt: r.attempts,
        tries: r.attempts - r.retry_from,
    })
}

/// How a running attempt ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `succeeded`, `failed`, `dead`, or `queued` (to be retried after a backoff).
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub detail: Option<Value>,
}

/// Times of an ended attempt.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

/// Ends attempt `attempt` of a running job. Returns `None` when the job is no longer that
/// attempt's (cancelled, or taken over by another worker): the caller must not report it.
pub async fn finish(
    pool: &PgPool,
    org: OrgId,
    job: &JobId,
    attempt: i32,
    worker: &str,
    outcome: Outcome,
) -> Result<Option<Ended>, sqlx::Error> {
    debug_assert!(JobStatus::Running.can_become(outcome.status));
    let terminal = outcome.status.is_terminal();
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"update job set status = $4, result = coalesce($5, result), error = $6,
               finished_at = case when $7 then now() else null end,
               event_seq = event_seq + 1, updated_at = now()
           where org_id = $1 and id = $2 and status = 'running' and attempts = $3
           returning event_seq, started_at, coalesce(finished_at, now()) as "finished_at!""#,
        org.0,
        job.0,
        attempt,
        outcome.status.as_str(),
        outcome.result,
        outcome.error,
        terminal,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let mut detail = outcome.detail.unwrap_or_else(|| serde_json::json!({}));
    if let (Some(err), Some(map)) = (&outcome.error, detail.as_object_mut()) {
        map.insert("error".into(), Value::String(err.clone()));
    }
    append_event(
        &mut tx,
        org,
        job,
        row.event_seq,
        outcome.status,
        Some(worker),
        Some(detail),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(Ended {
        started_at: row.started_at,
        finished_at: row.finished_at,
    }))
}

/// Re-queues a `failed`, `dead` or `cancelled` job by hand: its `requeue` number goes up by
/// one (the retry's message carries it). Returns the new number, or `None` when the job is
/// not in a status that can be retried.
pub async fn requeue(
    conn: &mut PgConnection,
    org: OrgId,
    job: &JobId,
    actor: &str,
) -> Result<Option<i32>, sqlx::Error> {
    let sources: Vec<String> = ["failed", "dead", "cancelled"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let row = sqlx::query!(
        r#"update job set status = 'queued', requeue = requeue + 1, retry_from = attempts, event_seq = event_seq + 1, error = null,
               finished_at = null, updated_at = now()
           where org_id = $1 and id = $2 and status = any($3)
           returning event_seq, requeue"#,
        org.0,
        job.0,
        &sources,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let detail = serde_json::json!({"requeue": row.requeue});
    append_event(
        conn,
        org,
        job,
        row.event_seq,
        JobStatus::Queued,
        Some(actor),
        Some(detail),
    )
    .await?;
    Ok(Some(row.requeue))
}

/// Moves a job to `to` from whatever legal source status it is in (API retry and cancel,
/// offboarding). Returns the status it left, or `None` if no legal transition applied.
pub async fn transition(
    conn: &mut PgConnection,
    org: OrgId,
    job: &JobId,
    to: JobStatus,
    actor: Option<&str>,
    detail: Option<Value>,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let sources = sources_of(to);
    let row = sqlx::query!(
        // The previous status comes from a locked read joined in, not from a CTE: a CTE read
        // in RETURNING would run after the update and skip the row it changed.
        r#"update job set status = $3, event_seq = job.event_seq + 1, updated_at = now(),
               finished_at = case when $3 in ('queued', 'running') then null else now() end
           from (select status as prev_status from job where org_id = $1 and id = $2 for update) prev
           where job.org_id = $1 and job.id = $2 and job.status = any($4)
           returning job.event_seq, prev.prev_status as "prev!""#,
        org.0,
        job.0,
        to.as_str(),
        &sources,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    append_event(conn, org, job, row.event_seq, to, actor, detail).await?;
    Ok(row.prev.parse().ok())
}

/// Job seconds the org used in the current calendar month (UTC), from the usage rollup.
pub async fn month_job_seconds(pool: &PgPool, org: OrgId) -> Result<i64, sqlx::Error> {
    let used = sqlx::query_scalar!(
        r#"select coalesce(sum(quantity), 0)::bigint as "used!" from usage_daily
           where org_id = $1 and metric = 'job_seconds'
             and day >= date_trunc('month', now() at time zone 'UTC')::date"#,
        org.0
    )
    .fetch_one(pool)
    .await?;
    Ok(used)
}

/// Marks a queued job `skipped_quota` (its org used its plan's job minutes), creating its row
/// when the recorder has not yet. `false` when the job was not queued.
pub async fn skip_quota(
    pool: &PgPool,
    spec: &JobSpec,
    worker: &str,
    used_seconds: i64,
    quota_seconds: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    insert_if_absent(&mut tx, spec, JobStatus::Queued, None).await?;
    let moved = transition(
        &mut tx,
        spec.org_id,
        &spec.job_id,
        JobStatus::SkippedQuota,
        Some(worker),
        Some(serde_json::json!({
            "reason": "the plan's included job minutes are used up for this month",
            "used_seconds": used_seconds,
            "quota_seconds": quota_seconds,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(moved.is_some())
}

/// Cancels every `queued` job of the org (offboarding). Returns how many.
pub async fn cancel_queued(
    conn: &mut PgConnection,
    org: OrgId,
    actor: &str,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"with cancelled as (
               update job set status = 'cancelled', event_seq = event_seq + 1, finished_at = now(), updated_at = now()
               where org_id = $1 and status = 'queued'
               returning id, event_seq
           )
           insert into job_event (org_id, job_id, seq, status, worker, detail)
           select $1, id, event_seq, 'cancelled', $2, jsonb_build_object('reason', $3::text) from cancelled"#,
        org.0,
        actor,
        reason
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

async fn append_event(
    conn: &mut PgConnection,
    org: OrgId,
    job: &JobId,
    seq: i32,
    status: JobStatus,
    worker: Option<&str>,
    detail: Option<Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into job_event (org_id, job_id, seq, status, worker, detail) values ($1, $2, $3, $4, $5, $6)",
        org.0,
        job.0,
        seq,
        status.as_str(),
        worker,
        detail,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_of_each_status_follow_the_state_machine() {
        assert_eq!(sources_of(JobStatus::Running), vec!["queued"]);
        assert_eq!(
            sources_of(JobStatus::Queued),
            vec!["running", "failed", "dead", "cancelled"]
        );
        assert_eq!(sources_of(JobStatus::Cancelled), vec!["queued", "running"]);
        assert!(sources_of(JobStatus::Succeeded) == vec!["running"]);
    }
}
