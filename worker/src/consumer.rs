//! The pull loop. A worker asks JetStream for at most as many messages as it has free slots,
//! so no message waits in a worker that cannot run it (where its ack wait would tick away
//! while other workers sit idle). On shutdown it stops asking, lets in-flight jobs finish
//! within the grace period, then hands the rest back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use futures::StreamExt;
use protocol::subjects::WORKERS_CONSUMER;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{StartError, Worker, runner};

/// The region's durable consumer (created if missing; shared by all its workers).
pub async fn ensure_consumer(w: &Worker) -> Result<PullConsumer, StartError> {
    let region = &w.config.worker.region;
    let names = &w.nats.names;
    let stream = w
        .nats
        .js
        .get_stream(names.jobs_stream(region))
        .await
        .map_err(|e| StartError::JetStream(e.to_string()))?;
    stream
        .get_or_create_consumer(
            WORKERS_CONSUMER,
            pull::Config {
                durable_name: Some(WORKERS_CONSUMER.to_owned()),
                description: Some(format!("The workers of {region}")),
                ack_policy: AckPolicy::Explicit,
                ack_wait: w.config.worker.ack_wait,
                // Attempts are counted in the job table (a delayed retry is a redelivery
                // too), so JetStream itself never gives up on a message.
                max_deliver: -1,
                max_ack_pending: 20_000,
                filter_subject: names.jobs_filter(region),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| StartError::JetStream(e.to_string()))
}

/// Pulls and runs jobs until `shutdown`, then drains.
pub async fn run(w: Arc<Worker>, consumer: PullConsumer, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(w.config.worker.slots));
    let handback = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut backoff = Duration::from_millis(200);
    // Held jobs are reported in progress as often as running ones.
    let keep_alive = {
        let w = w.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(w.config.worker.progress_every).await;
                w.held.keep_alive().await;
            }
        })
    };
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the slot semaphore is never closed"),
        };
        // A free slot goes first to a held job whose org has room again.
        if !w.held.is_empty()
            && let Some(job) = w.held.next_runnable(&w.leases).await
        {
            w.metrics
                .held
                .set(i64::try_from(w.held.len()).unwrap_or(i64::MAX));
            tasks.spawn(runner::process_held(
                w.clone(),
                job,
                permit,
                handback.clone(),
            ));
            continue;
        }
        let want = 1 + slots.available_permits();
        // A short expiry bounds how long a shutdown waits for the pull in progress; an idle
        // pull costs one small request a second. While jobs are held the pull is shorter, so
        // that they are offered the slot again soon after their org has room.
        let expiry = if w.held.is_empty() {
            Duration::from_secs(1)
        } else {
            w.config
                .worker
                .cap_retry
                .clamp(Duration::from_millis(100), Duration::from_secs(1))
        };
        let batch = consumer
            .batch()
            .max_messages(want)
            .expires(expiry)
            .messages();
        let mut batch = tokio::select! {
            () = shutdown.cancelled() => break,
            b = batch => match b {
                Ok(b) => b,
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot pull jobs");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(200);
        let mut permit = Some(permit);
        // Finish the pull even after a shutdown signal (it ends within its expiry), so that
        // messages already sent to this worker are handed back at once, not after the ack wait.
        while let Some(item) = batch.next().await {
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "pull interrupted");
                    break;
                }
            };
            if shutdown.is_cancelled() {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            let slot = match permit.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        continue;
                    }
                },
            };
            tasks.spawn(runner::process(w.clone(), msg, slot, handback.clone()));
        }
    }

    keep_alive.abort();
    let held = w.held.take_all();
    if !held.is_empty() {
        tracing::info!(held = held.len(), "handing back the held jobs");
    }
    for job in held {
        let _ = job.msg.ack_with(AckKind::Nak(None)).await;
    }
    w.metrics.held.set(0);
    tasks.close();
    let grace = w.config.worker.drain_grace;
    tracing::info!(in_flight = tasks.len(), grace = ?grace, "draining");
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tasks.len(),
            "grace period over; handing the remaining jobs back"
        );
        handback.cancel();
        tasks.wait().await;
    }
}
