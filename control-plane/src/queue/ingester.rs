//! The ingester: consumes the region's USAGE stream (job seconds and LLM tokens from the
//! workers) and writes each event once into its org's shard, in batches, updating the daily
//! rollup in the same transaction (see [`crate::db::usage`]). An event delivered again (a
//! worker that reported twice, a redelivery after a crash) is stored once: its id is unique.
//!
//! Webhook deliveries are metered by the recorder, in the transaction that records them.
//!
//! After each batch, the month's job seconds of every org that got new ones are raised in
//! Redis (`protocol::service::quota`), where workers check hard plans' job-minute quotas.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use chrono::Datelike;
use protocol::OrgId;
use protocol::service::quota;
use protocol::subjects::INGESTER_CONSUMER;
use protocol::usage::{Metric, UsageEvent};
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::error::Chain;
use crate::state::AppState;

/// Events written per transaction at most.
const BATCH: usize = 500;
/// Longest a partial batch waits for more events.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// How long an event being written may go unacknowledged before it is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Runs until `shutdown`; reconnects with backoff when the stream fails.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let spec = super::Batches {
        what: "usage ingester",
        stream: state.nats.names.usage_stream(&state.region),
        durable: INGESTER_CONSUMER,
        description: "Writes usage events to the shards",
        batch: BATCH,
        max_wait: MAX_WAIT,
        ack_wait: ACK_WAIT,
    };
    super::run_batches(state, shutdown, spec, |s, msgs| async move {
        ingest(&s, msgs).await;
    })
    .await;
}

/// Writes one batch, shard by shard, and acknowledges what was written.
async fn ingest(state: &AppState, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let mut by_shard: HashMap<String, (db::OrgDb, Vec<(Message, UsageEvent)>)> = HashMap::new();
    for msg in messages {
        let event: UsageEvent = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, subject = %msg.subject, "undecodable usage event; dropped");
                ack(&msg, AckKind::Term).await;
                continue;
            }
        };
        match db::OrgDb::for_org(&state.shards, event.org_id) {
            Ok(shard) => by_shard
                .entry(shard.shard().to_owned())
                .or_insert_with(|| (shard, Vec::new()))
                .1
                .push((msg, event)),
            Err(_) => {
                tracing::warn!(org_id = %event.org_id, "no shard holds this org; retrying the usage event later");
                if let Err(e) = state.shards.reload().await {
                    tracing::warn!(error = %e, "cannot reload the shard map");
                }
                ack(&msg, AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
        }
    }
    for (_, (shard, items)) in by_shard {
        let events: Vec<&UsageEvent> = items.iter().map(|(_, e)| e).collect();
        let written = async {
            let mut tx = shard.pool().begin().await?;
            let fresh = db::usage::record(&mut tx, &events).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(fresh)
        }
        .await;
        match written {
            Ok(fresh) => {
                for i in &fresh {
                    state
                        .metrics
                        .usage_events
                        .with_label_values(&[events[*i].metric.as_str()])
                        .inc();
                }
                mirror_job_seconds(state, &shard, &events, &fresh).await;
                let oldest = events.iter().map(|e| e.at).min();
                if let Some(at) = oldest {
                    let lag = (chrono::Utc::now() - at).num_milliseconds().max(0);
                    #[allow(clippy::cast_precision_loss, reason = "a lag in seconds")]
                    state.metrics.ingest_lag.set(lag as f64 / 1000.0);
                }
                for (m, _) in &items {
                    ack(m, AckKind::Ack).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), count = items.len(), shard = shard.shard(), "cannot write usage events; will retry");
                for (m, _) in &items {
                    ack(m, AckKind::Nak(Some(Duration::from_secs(2)))).await;
                }
            }
        }
    }
}

/// Raises the Redis mirror of each org's month of job seconds to the rollup's total, for the
/// orgs and months that just got new job seconds. A failure leaves the mirror behind until
/// that org's next job seconds; workers fall back to the rollup when there is no mirror.
async fn mirror_job_seconds(
    state: &AppState,
    shard: &db::OrgDb,
    events: &[&UsageEvent],
    fresh: &[usize],
) {
    let months: BTreeSet<(i64, i32, u32)> = fresh
        .iter()
        .filter_map(|i| events.get(*i))
        .filter(|e| e.metric == Metric::JobSeconds)
        .map(|e| (e.org_id.0, e.at.year(), e.at.month()))
        .collect();
    for (org, year, month) in months {
        let Some(first) = chrono::NaiveDate::from_ymd_opt(year, month, 1) else {
            continue;
        };
        let total: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "select coalesce(sum(quantity), 0)::bigint from usage_daily
              where org_id = $1 and metric = 'job_seconds'
                and day >= $2 and day < ($2 + interval '1 month')::date",
        )
        .bind(org)
        .bind(first)
        .fetch_one(shard.pool())
        .await;
        let at = first.and_time(chrono::NaiveTime::MIN).and_utc();
        let raised = match total {
            Ok(total) => {
                let mut redis = state.redis.clone();
                quota::raise(
                    &mut redis,
                    &state.config.redis.key_prefix,
                    OrgId(org),
                    at,
                    total,
                )
                .await
                .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = raised {
            tracing::warn!(org_id = org, error = %e, "cannot mirror the month's job seconds to Redis");
        }
    }
}

async fn ack(msg: &Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot acknowledge a usage event");
    }
}
