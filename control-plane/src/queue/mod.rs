//! JetStream: publishing accepted deliveries and their jobs (the records in batches), the
//! recorder that writes them to the shards, and the ingester that writes usage events there.

pub mod ingester;
pub mod publisher;
pub mod recorder;
pub mod records;

use std::future::Future;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// A durable consumer whose messages are handled in batches.
#[derive(Debug, Clone)]
pub struct Batches {
    /// What it is, for the logs (`recorder`, `usage ingester`).
    pub what: &'static str,
    pub stream: String,
    pub durable: &'static str,
    pub description: &'static str,
    /// Most messages per batch.
    pub batch: usize,
    /// Longest a partial batch waits for more messages once its first has arrived: under load
    /// batches fill up (fewer, larger transactions); when idle a message waits at most this.
    pub max_wait: Duration,
    /// How long JetStream waits for a delivered message's acknowledgement before delivering
    /// it again. While `handle` works on a batch, its messages are reported in progress every
    /// third of this, so a slow write (a shard that stalls) does not have them redelivered
    /// meanwhile.
    pub ack_wait: Duration,
}

/// Hands `handle` the consumer's messages in batches until `shutdown`; reconnects with
/// backoff when the stream fails. `handle` acknowledges what it settled.
pub async fn run_batches<F, Fut>(
    state: AppState,
    shutdown: CancellationToken,
    spec: Batches,
    handle: F,
) where
    F: Fn(AppState, Vec<Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        match consume(&state, &shutdown, &spec, &handle).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{} interrupted", spec.what);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!("{} stopped", spec.what);
}

async fn consume<F, Fut>(
    state: &AppState,
    shutdown: &CancellationToken,
    spec: &Batches,
    handle: &F,
) -> Result<(), String>
where
    F: Fn(AppState, Vec<Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    let stream = state
        .nats
        .js
        .get_stream(&spec.stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .get_or_create_consumer(
            spec.durable,
            pull::Config {
                durable_name: Some(spec.durable.to_owned()),
                description: Some(spec.description.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_deliver: -1,
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m.ok_or_else(|| "the message stream ended".to_owned())?,
        };
        let mut chunk = Vec::with_capacity(spec.batch);
        chunk.push(first);
        let deadline = tokio::time::Instant::now() + spec.max_wait;
        while chunk.len() < spec.batch {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(m)) => {
                    let failed = m.is_err();
                    chunk.push(m);
                    if failed {
                        break;
                    }
                }
                // The end of the stream is reported with the next batch; a timeout ends this one.
                Ok(None) | Err(_) => break,
            }
        }
        let mut ok = Vec::with_capacity(chunk.len());
        let mut failure = None;
        for m in chunk {
            match m {
                Ok(m) => ok.push(m),
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if !ok.is_empty() {
            let replies: Vec<Subject> = ok.iter().filter_map(|m| m.reply.clone()).collect();
            let work = handle(state.clone(), ok);
            tokio::pin!(work);
            let every = spec.ack_wait / 3;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut work => break,
                    _ = tick.tick() => in_progress(state, spec, &replies).await,
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

/// Tells JetStream that the messages answered at `replies` are still being worked on, which
/// restarts their ack wait.
async fn in_progress(state: &AppState, spec: &Batches, replies: &[Subject]) {
    tracing::debug!(
        messages = replies.len(),
        "{}: batch still in progress",
        spec.what
    );
    for reply in replies {
        let progress: bytes::Bytes = AckKind::Progress.into();
        if let Err(e) = state.nats.client.publish(reply.clone(), progress).await {
            tracing::warn!(error = %e, "{}: cannot report a batch in progress", spec.what);
            return;
        }
    }
}
