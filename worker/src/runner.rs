//! One job message, start to end:
//!
//! 1. decode it (an undecodable message is terminated: it can never succeed);
//! 2. take a place in the org's cap on running jobs — a job over the cap is held by the
//!    worker until its org has room (see [`crate::held`]) and the worker moves on;
//! 3. claim the job in its org's shard — a job that already ended is acknowledged without
//!    running again, a job held by another message is left to it;
//! 4. run its executor, telling JetStream the job is in progress (and renewing the org
//!    lease) every `progress_every`;
//! 5. post the outcome on the issue or pull request (once: see [`crate::effects`]);
//! 6. record the outcome, then acknowledge. A transient failure is retried with jittered
//!    exponential backoff until `max_attempts`, then the job is `dead` and copied to the
//!    dead-letter stream. A permanent failure is `failed` at once. A job cancelled through the
//!    API while it runs is stopped and acknowledged.
//!
//! The job's row changes before its message is acknowledged, so a crash between the two
//! makes JetStream redeliver a message whose job has ended: step 3 then acknowledges it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use protocol::service::jobstore::{self, Claim, Outcome, Ran};
use protocol::service::telemetry::{extract_nats, inject_nats};
use protocol::usage::{Metric, UsageEvent, billable_seconds};
use protocol::{JobMessage, JobSpec, JobStatus};
use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Worker;
use crate::executor::{ExecError, Output};
use crate::held::HeldJob;
use crate::leases::Lease;

pub async fn process(
    w: Arc<Worker>,
    msg: Message,
    _slot: OwnedSemaphorePermit,
    handback: CancellationToken,
) {
    let job: JobMessage = match serde_json::from_slice(&msg.payload) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, subject = %msg.subject, "undecodable job message; terminated");
            ack(&msg, AckKind::Term).await;
            return;
        }
    };
    let spec = job.spec().clone();
    let span = tracing::info_span!(
        "job",
        job_id = %spec.job_id,
        org_id = %spec.org_id,
        kind = %spec.kind,
        worker = %w.id,
    );
    extract_nats(msg.headers.as_ref(), &span);
    async {
        if let Some(cap) = spec.max_concurrent
            && w.leases.acquire(spec.org_id, &spec.job_id, cap).await == Lease::Full
        {
            w.metrics.capped.inc();
            hold(&w, Box::new(HeldJob { msg, spec, cap })).await;
            return;
        }
        run_one(&w, &msg, &spec, &handback).await;
    }
    .instrument(span)
    .await;
}

/// Runs a held job whose org has room again (its lease is taken).
pub async fn process_held(
    w: Arc<Worker>,
    job: HeldJob,
    _slot: OwnedSemaphorePermit,
    handback: CancellationToken,
) {
    let span = tracing::info_span!(
        "job",
        job_id = %job.spec.job_id,
        org_id = %job.spec.org_id,
        kind = %job.spec.kind,
        worker = %w.id,
    );
    extract_nats(job.msg.headers.as_ref(), &span);
    run_one(&w, &job.msg, &job.spec, &handback)
        .instrument(span)
        .await;
}

/// Keeps a capped job until its org has room (see [`crate::held`]); when this worker holds
/// as many as it may, hands it back with a delay that grows with each refusal.
async fn hold(w: &Worker, job: Box<HeldJob>) {
    if let Err(job) = w.held.push(job) {
        let delivered = job.msg.info().map_or(1, |i| i.delivered);
        let factor = u32::try_from(delivered.clamp(1, 8)).unwrap_or(8);
        let delay = jittered(w.config.worker.cap_retry.saturating_mul(factor));
        ack(&job.msg, AckKind::Nak(Some(delay))).await;
    }
    w.metrics
        .held
        .set(i64::try_from(w.held.len()).unwrap_or(i64::MAX));
}

/// Jittered delay around `base` (±25 %).
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

async fn run_one(w: &Worker, msg: &Message, spec: &JobSpec, handback: &CancellationToken) {
    let seq = match msg.info() {
        Ok(info) => info.stream_sequence,
        Err(e) => {
            tracing::error!(error = %e, "job message without delivery info; left for redelivery");
            return;
        }
    };
    let Some(shard) = w.shards.route(spec.org_id) else {
        tracing::warn!("no shard holds this org; reloading the map and retrying later");
        if let Err(e) = w.shards.reload().await {
            tracing::warn!(error = %e, "cannot reload the shard map");
        }
        ack(msg, AckKind::Nak(Some(Duration::from_secs(5)))).await;
        return;
    };
    let release = || async { w.leases.release(spec.org_id, &spec.job_id).await };
    if let Some(down) = shard.down() {
        // The shard's breaker is open: the job waits in the queue, its attempts untouched.
        tracing::warn!(shard = %shard.name, reason = %down.reason, "the org's shard is down; the job is retried later");
        release().await;
        ack(msg, AckKind::Nak(Some(Duration::from_secs(5)))).await;
        return;
    }
    if let Some(quota) = spec.job_seconds_quota
        && over_quota(w, &shard.pool, spec, quota).await
    {
        release().await;
        ack(msg, AckKind::Ack).await;
        return;
    }
    let (attempt, tries) = match jobstore::claim(&shard.pool, spec, &w.id, seq).await {
        Ok(Claim::Run { attempt, tries }) => (attempt, tries),
        Ok(Claim::Done { status, ran }) => {
            release().await;
            tracing::info!(%status, "job already ended; message acknowledged");
            if let Some(ran) = ran {
                report_usage(w, spec, ran).await;
            }
            ack(msg, AckKind::Ack).await;
            return;
        }
        Ok(Claim::HeldElsewhere) => {
            release().await;
            tracing::info!("job held by another message; this duplicate is dropped");
            ack(msg, AckKind::Ack).await;
            return;
        }
        Err(e) => {
            release().await;
            tracing::warn!(error = %e, "cannot claim the job; retrying later");
            reload_if_moved(w, &e).await;
            ack(msg, AckKind::Nak(Some(Duration::from_secs(2)))).await;
            return;
        }
    };
    let wait = (Utc::now() - spec.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    w.metrics.queue_wait.observe(wait);
    w.metrics.in_flight.inc();
    tracing::info!(attempt, queue_wait_s = wait, "job started");

    let stop = handback.child_token();
    if let Ok(mut running) = w.running.lock() {
        running.insert(spec.job_id.0.clone(), stop.clone());
    }
    let max_attempts = w.config.worker.max_attempts;
    let started = Instant::now();
    let result = if tries > max_attempts {
        // Workers kept dying while running it: treat the crashes as failed attempts.
        Err(ExecError::Transient(format!(
            "no attempt finished in {max_attempts} tries"
        )))
    } else {
        match w.executors.for_kind(spec.kind.as_str()) {
            None => Err(ExecError::Permanent(format!(
                "no executor for job kind {}",
                spec.kind
            ))),
            Some(exec) => {
                with_progress(w, msg, spec, exec.run(spec, w.effects.as_ref(), &stop)).await
            }
        }
    };
    w.metrics
        .run_duration
        .observe(started.elapsed().as_secs_f64());
    if let Ok(mut running) = w.running.lock() {
        running.remove(&spec.job_id.0);
    }
    w.metrics.in_flight.dec();

    if matches!(result, Err(ExecError::Stopped)) && !handback.is_cancelled() {
        // Cancelled through the API, which recorded it: nothing left to do but let go.
        tracing::info!("job cancelled while running");
        w.metrics.jobs.with_label_values(&["cancelled"]).inc();
        release().await;
        ack(msg, AckKind::Ack).await;
        return;
    }
    let (outcome, ack_kind, tokens) = outcome_of(w, spec, tries, result).await;
    let status = outcome.status;
    let error = outcome.error.clone();
    match jobstore::finish(
        &shard.pool,
        spec.org_id,
        &spec.job_id,
        attempt,
        &w.id,
        outcome,
    )
    .await
    {
        Ok(Some(ended)) => {
            w.metrics.jobs.with_label_values(&[status.as_str()]).inc();
            tracing::info!(%status, error = error.as_deref(), "job attempt ended");
            if status == JobStatus::Dead {
                dead_letter(w, msg, spec, error.as_deref()).await;
            }
            if status.is_terminal()
                && let Some(started_at) = ended.started_at
            {
                let ran = Ran {
                    attempt,
                    started_at,
                    finished_at: ended.finished_at,
                    llm_tokens: tokens,
                };
                report_usage(w, spec, ran).await;
            }
            release().await;
            ack(msg, ack_kind).await;
        }
        Ok(None) => {
            // Cancelled meanwhile, or taken over by another worker after this one stalled:
            // the message is no longer this attempt's to acknowledge.
            release().await;
            tracing::warn!("the job moved on while this attempt ran; its outcome is discarded");
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record the outcome; the job will be redelivered");
            reload_if_moved(w, &e).await;
        }
    }
}

/// A write refused because the org's range moved to another shard: the map is re-read now,
/// so the redelivery goes to the new shard.
async fn reload_if_moved(w: &Worker, e: &sqlx::Error) {
    if protocol::service::db::is_moved(e) {
        tracing::info!("the org's range has moved to another shard; reloading the map");
        if let Err(e) = w.shards.reload().await {
            tracing::warn!(error = %e, "cannot reload the shard map");
        }
    }
}

/// The outcome to record for a run, after posting it on GitHub where that applies.
async fn outcome_of(
    w: &Worker,
    spec: &JobSpec,
    tries: i32,
    result: Result<Output, ExecError>,
) -> (Outcome, AckKind, Option<i64>) {
    let max_attempts = w.config.worker.max_attempts;
    let report = |body: String| async move {
        match &w.effects {
            Some(fx) => fx.report(spec, &body).await,
            None => Ok(()),
        }
    };
    let result = match result {
        // The comment is part of the job's effect: a transient failure to post retries the
        // job (the marker keeps it from posting twice).
        Ok(out) => match report(out.comment.clone()).await {
            Ok(()) => Ok(out),
            Err(ExecError::Permanent(e)) => {
                tracing::warn!(error = %e, "the job's comment cannot be posted");
                Ok(out)
            }
            Err(e) => Err(e),
        },
        other => other,
    };
    match result {
        Ok(out) => (
            Outcome {
                status: JobStatus::Succeeded,
                result: Some(out.result),
                error: None,
                detail: None,
            },
            AckKind::Ack,
            out.llm_tokens,
        ),
        Err(ExecError::Stopped) => (
            Outcome {
                status: JobStatus::Queued,
                result: None,
                error: None,
                detail: Some(serde_json::json!({"handed_back": true})),
            },
            AckKind::Nak(None),
            None,
        ),
        Err(ExecError::Transient(e)) if tries < max_attempts => {
            let delay = backoff(w, tries);
            (
                Outcome {
                    status: JobStatus::Queued,
                    result: None,
                    error: Some(e),
                    detail: Some(serde_json::json!({"retry_in_ms": delay.as_millis() as u64})),
                },
                AckKind::Nak(Some(delay)),
                None,
            )
        }
        // Out of attempts: dead (and dead-lettered). A permanent failure: failed at once.
        Err(ExecError::Transient(e)) => failure(JobStatus::Dead, e, report).await,
        Err(ExecError::Permanent(e)) => failure(JobStatus::Failed, e, report).await,
    }
}

/// A job that ended without success: its failure is posted (best effort) and recorded.
async fn failure<F, Fut>(
    status: JobStatus,
    error: String,
    report: F,
) -> (Outcome, AckKind, Option<i64>)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), ExecError>>,
{
    if let Err(err) = report(format!("Switchyard could not finish this job: {error}")).await {
        tracing::warn!(error = %err, "cannot post the job's failure");
    }
    (
        Outcome {
            status,
            result: None,
            error: Some(error),
            detail: None,
        },
        AckKind::Ack,
        None,
    )
}

/// Whether the job's org has used its plan's job minutes for the month; if so the job is
/// marked `skipped_quota` (visible, never silently dropped). A usage read that fails lets the
/// job run.
async fn over_quota(w: &Worker, pool: &sqlx::PgPool, spec: &JobSpec, quota: i64) -> bool {
    let used = match month_job_seconds(w, pool, spec.org_id).await {
        Ok(used) if used >= quota => used,
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the org's usage; running the job");
            return false;
        }
    };
    match jobstore::skip_quota(pool, spec, &w.id, used, quota).await {
        Ok(true) => {
            tracing::info!(
                used_seconds = used,
                quota_seconds = quota,
                "job skipped: the org's job minutes are used up"
            );
            w.metrics.jobs.with_label_values(&["skipped_quota"]).inc();
            true
        }
        // Not queued: running elsewhere or ended; the claim sorts it out.
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark the job skipped; running it");
            false
        }
    }
}

/// The org's job seconds this month: from the Redis mirror the ingester keeps, or from the
/// usage rollup when the mirror has no value or Redis does not answer.
async fn month_job_seconds(
    w: &Worker,
    pool: &sqlx::PgPool,
    org: protocol::OrgId,
) -> Result<i64, sqlx::Error> {
    let mut redis = w.redis.clone();
    match protocol::service::quota::month_seconds(&mut redis, &w.config.redis.key_prefix, org).await
    {
        Ok(Some(used)) => return Ok(used),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "Redis unavailable: reading the org's usage from its shard");
        }
    }
    jobstore::month_job_seconds(pool, org).await
}

/// Runs `work`, reporting the message in progress and renewing the org lease, so neither
/// JetStream nor the cap lets go of a job that is still running.
async fn with_progress<T>(
    w: &Worker,
    msg: &Message,
    spec: &JobSpec,
    work: impl Future<Output = T>,
) -> T {
    let every = w.config.worker.progress_every;
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(every) => {
                ack(msg, AckKind::Progress).await;
                if let Some(cap) = spec.max_concurrent {
                    let _ = w.leases.acquire(spec.org_id, &spec.job_id, cap).await;
                }
            }
        }
    }
}

/// Exponential backoff with ±25 % jitter, capped.
fn backoff(w: &Worker, attempt: i32) -> Duration {
    let base = w.config.worker.backoff_base;
    let exp = base.saturating_mul(1u32 << (attempt.clamp(1, 20) - 1) as u32);
    jittered(exp.min(w.config.worker.backoff_max))
}

async fn dead_letter(w: &Worker, msg: &Message, spec: &JobSpec, error: Option<&str>) {
    let subject = w
        .nats
        .names
        .dead_subject(&spec.region, &spec.kind, spec.org_id);
    let mut headers = async_nats::HeaderMap::new();
    inject_nats(&mut headers);
    headers.insert(
        "Switchyard-Error",
        error
            .unwrap_or_default()
            .replace(['\r', '\n'], " ")
            .as_str(),
    );
    headers.insert("Switchyard-Job-Id", spec.job_id.0.as_str());
    let res = async {
        w.nats
            .js
            .publish_with_headers(subject, headers, msg.payload.clone())
            .await?
            .await
    }
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot copy the dead job to the dead-letter stream");
    }
}

/// Reports the job's billable seconds (and LLM tokens). Idempotent: each event id names the
/// job and attempt, so a report repeated after a crash is stored once.
async fn report_usage(w: &Worker, spec: &JobSpec, ran: Ran) {
    let mut events = vec![UsageEvent {
        event_id: format!("job-seconds:{}:{}", spec.job_id, ran.attempt),
        org_id: spec.org_id,
        metric: Metric::JobSeconds,
        quantity: billable_seconds(ran.started_at, ran.finished_at),
        repo: spec.repo.clone(),
        job_id: Some(spec.job_id.0.clone()),
        at: ran.finished_at,
    }];
    if let Some(tokens) = ran.llm_tokens.filter(|t| *t > 0) {
        events.push(UsageEvent {
            event_id: format!("llm-tokens:{}:{}", spec.job_id, ran.attempt),
            org_id: spec.org_id,
            metric: Metric::LlmTokens,
            quantity: tokens,
            repo: spec.repo.clone(),
            job_id: Some(spec.job_id.0.clone()),
            at: ran.finished_at,
        });
    }
    let subject = w.nats.names.usage_subject(&spec.region, spec.org_id);
    for event in events {
        let Ok(payload) = serde_json::to_vec(&event) else {
            continue;
        };
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(event.event_id.clone());
        let res = async {
            w.nats
                .js
                .send_publish(subject.clone(), publish)
                .await?
                .await
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot report usage; it is reported again if the message is redelivered");
        }
    }
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot acknowledge a job message");
    }
}
