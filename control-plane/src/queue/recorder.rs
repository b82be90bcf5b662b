//! The recorder: consumes the region's deliveries stream and writes each delivery, and the
//! `queued` rows of its jobs, to the org's shard — in batches, once (inserts are idempotent,
//! so a redelivered message changes nothing). A message holds the records of one or more
//! deliveries (see [`super::records`]); it is acknowledged once all of them are written.
//! Deliveries of unclaimed installations go to the catalog.
//!
//! Intake never waits for this: JetStream's acknowledgement is the durable record, and the
//! rows follow within milliseconds. Workers create a job's row themselves if they get to it
//! first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use protocol::JobSpec;
use protocol::delivery::{DeliveryRecord, decode_records};
use protocol::service::jobstore;
use protocol::subjects::RECORDER_CONSUMER;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::error::Chain;
use crate::state::AppState;

/// Runs until `shutdown`; reconnects with backoff when the stream fails.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let spec = super::Batches {
        what: "recorder",
        stream: state.nats.names.deliveries_stream(&state.region),
        durable: RECORDER_CONSUMER,
        description: "Writes accepted deliveries and their jobs to the shards",
        batch: state.config.recorder.batch_size,
        max_wait: state.config.recorder.max_wait,
        ack_wait: state.config.recorder.ack_wait,
    };
    super::run_batches(state, shutdown, spec, |s, msgs| async move {
        record(&s, msgs).await;
    })
    .await;
}

/// Writes one batch of messages (each holding one or more records) and acknowledges every
/// message whose records were all written; the others are retried later, whole (writing is
/// idempotent, so the records of theirs already written change nothing). The records are
/// written at most `recorder.batch_size` at a time (a message holding more goes alone), so a
/// batch of full messages does not become one huge transaction.
async fn record(state: &AppState, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let started = Instant::now();
    // Per message: `None` while all is well, else the delay before it is retried.
    let mut retry: Vec<Option<Duration>> = vec![None; messages.len()];
    let mut undecodable = vec![false; messages.len()];
    let mut decoded: Vec<(usize, Vec<DeliveryRecord>)> = Vec::with_capacity(messages.len());
    for (i, msg) in messages.iter().enumerate() {
        match decode_records(&msg.payload) {
            Ok(d) => {
                for (at, e) in &d.rejected {
                    tracing::error!(error = %e, subject = %msg.subject, element = at, "undecodable delivery record in a batch; dropped, the others are written");
                }
                undecodable_records(state, d.rejected.len());
                decoded.push((i, d.records));
            }
            Err(e) => {
                tracing::error!(error = %e, subject = %msg.subject, "undecodable delivery record; dropped");
                undecodable[i] = true;
                undecodable_records(state, 1);
            }
        }
    }
    let cap = state.config.recorder.batch_size.max(1);
    let mut round: Vec<(usize, DeliveryRecord)> = Vec::new();
    for (i, recs) in decoded {
        if !round.is_empty() && round.len() + recs.len() > cap {
            write_round(state, std::mem::take(&mut round), &mut retry).await;
        }
        round.extend(recs.into_iter().map(|r| (i, r)));
    }
    if !round.is_empty() {
        write_round(state, round, &mut retry).await;
    }
    for ((msg, retry), undecodable) in messages.iter().zip(retry).zip(undecodable) {
        let kind = match (undecodable, retry) {
            (true, _) => AckKind::Term,
            (false, None) => AckKind::Ack,
            (false, Some(delay)) => AckKind::Nak(Some(delay)),
        };
        ack(msg, kind).await;
    }
    state
        .metrics
        .recorder_batch
        .observe(started.elapsed().as_secs_f64());
}

/// Writes records (each with the index of its message) to their shards, or to the catalog for
/// unclaimed installations, one transaction per shard; marks the messages of what was not
/// written for a retry.
async fn write_round(
    state: &AppState,
    items: Vec<(usize, DeliveryRecord)>,
    retry: &mut [Option<Duration>],
) {
    let mut unclaimed: Vec<(usize, DeliveryRecord)> = Vec::new();
    let mut by_shard: HashMap<String, (db::OrgDb, Vec<(usize, DeliveryRecord)>)> = HashMap::new();
    let mut reloaded = false;
    for (i, rec) in items {
        match rec.org_id {
            None => unclaimed.push((i, rec)),
            Some(org) => match db::OrgDb::for_org(&state.shards, org) {
                Ok(db) => by_shard
                    .entry(db.shard().to_owned())
                    .or_insert_with(|| (db, Vec::new()))
                    .1
                    .push((i, rec)),
                Err(_) => {
                    // The map may be behind the catalog: re-read it and try again later.
                    tracing::warn!(org_id = %org, "no shard holds this org; retrying the delivery later");
                    if !reloaded {
                        reloaded = true;
                        if let Err(e) = state.shards.reload().await {
                            tracing::warn!(error = %e, "cannot reload the shard map");
                        }
                    }
                    later(&mut retry[i], Duration::from_secs(5));
                }
            },
        }
    }
    if !unclaimed.is_empty() {
        let recs: Vec<&DeliveryRecord> = unclaimed.iter().map(|(_, r)| r).collect();
        let res = db::unclaimed::insert_many(&state.catalog, &recs).await;
        settle(state, "unclaimed", res.map(|_| ()), &unclaimed, retry);
    }
    for (_, (shard, items)) in by_shard {
        let res = write_shard(&shard, &items).await;
        settle(state, "delivery", res, &items, retry);
    }
}

fn undecodable_records(state: &AppState, n: usize) {
    if n > 0 {
        state
            .metrics
            .recorded
            .with_label_values(&["undecodable"])
            .inc_by(n as u64);
    }
}

/// Asks for a retry of a message after at least `delay`.
fn later(retry: &mut Option<Duration>, delay: Duration) {
    *retry = Some(retry.map_or(delay, |d| d.max(delay)));
}

async fn write_shard(
    shard: &db::OrgDb,
    items: &[(usize, DeliveryRecord)],
) -> Result<(), sqlx::Error> {
    let recs: Vec<&DeliveryRecord> = items.iter().map(|(_, r)| r).collect();
    let mut tx = shard.pool().begin().await?;
    // Each delivery accepted for an org is metered once, by its row.
    db::deliveries::insert_many(&mut tx, &recs).await?;
    let jobs: Vec<&JobSpec> = recs.iter().flat_map(|r| &r.jobs).collect();
    jobstore::insert_queued_if_absent(&mut tx, &jobs).await?;
    tx.commit().await
}

/// Counts what was written, or marks the messages of what was not for a retry.
fn settle(
    state: &AppState,
    kind: &str,
    res: Result<(), sqlx::Error>,
    items: &[(usize, DeliveryRecord)],
    retry: &mut [Option<Duration>],
) {
    match res {
        Ok(()) => {
            state
                .metrics
                .recorded
                .with_label_values(&[kind])
                .inc_by(items.len() as u64);
        }
        Err(e) => {
            tracing::warn!(error = %Chain(&e), count = items.len(), "cannot record deliveries; will retry");
            for (i, _) in items {
                later(&mut retry[*i], Duration::from_secs(2));
            }
        }
    }
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        // The message will be redelivered after the ack wait; recording is idempotent.
        tracing::warn!(error = %e, "cannot acknowledge a delivery record");
    }
}
