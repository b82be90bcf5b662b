//! Delivery records, published in batches: the records of deliveries accepted at the same time
//! share one JetStream message and one acknowledgement (a group commit).
//!
//! Each handler hands its encoded record to the *lane* of its destination — the org's home
//! region and shard, or the receiving region's unclaimed deliveries — and waits for the
//! acknowledgement of the message that carried it. A lane has at most `in_flight` messages
//! awaiting JetStream; while they are out, the records that arrive queue up and leave together
//! in the next message (at most `max_records` of them and [`MAX_BATCH_BYTES`]). An idle lane
//! therefore sends a lone record at once, and a busy one sends few, large messages: the
//! stream, its acknowledgements and the recorder's reads and acks shrink with the load instead
//! of growing with it (docs/benchmarks.md).
//!
//! A message of several records is a JSON array of them; a record that leaves alone is sent as
//! a bare JSON object, as control planes from before batching sent it and can read it (see
//! [`protocol::delivery`], and docs/operations.md on rolling out `intake.record_batch_max`).
//!
//! A lane keeps one shard's records apart from another's, so a shard that is down only holds
//! back messages of its own orgs in the recorder. Records whose handler has stopped waiting
//! (it answered `503` on its timeout, or its client hung up) are left out of the next message.
//! A message that JetStream has not acknowledged within `timeout` of being sent counts as
//! failed, so a stuck acknowledgement holds its place in the lane for at most that long (its
//! handlers, whose own `publish_timeout` began earlier, may have answered `503` already).
//! Messages carry no `Nats-Msg-Id`: a repeated delivery is a second record of the same
//! delivery id, and the recorder's idempotent inserts keep the first one written.
//!
//! A lane's task ends once the last handle to the publisher is dropped and its queue is
//! empty, after the messages in flight are settled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus::Histogram;
use protocol::Region;
use protocol::delivery::encode_batch;
use protocol::service::nats::Nats;
use tokio::sync::{mpsc, oneshot};

/// Most bytes of records in one message (the streams take messages of up to 1 MiB). A record
/// larger than this goes alone.
pub const MAX_BATCH_BYTES: usize = 768 * 1024;

/// Records queued per lane before handlers wait for room.
const LANE_QUEUE: usize = 4096;

/// Why a record was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("JetStream refused the message: {0}")]
    Refused(String),
    #[error("JetStream did not acknowledge in time")]
    Timeout,
    #[error("the record publisher has stopped")]
    Stopped,
}

/// Where a record goes: the org's home region and shard, or (`shard = None`) the receiving
/// region's deliveries of unclaimed installations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lane {
    pub region: Region,
    pub shard: Option<String>,
}

/// How lanes batch.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most records per message.
    pub max_records: usize,
    /// Most messages of a lane awaiting JetStream's acknowledgement at once.
    pub in_flight: usize,
    /// Longest a message waits for JetStream's acknowledgement before it counts as failed.
    pub timeout: Duration,
}

struct Queued {
    record: Vec<u8>,
    reply: oneshot::Sender<Result<(), RecordError>>,
}

/// Publishes delivery records in batches; cheap to clone, one per control plane.
#[derive(Clone)]
pub struct RecordPublisher {
    nats: Nats,
    limits: Limits,
    /// Records per message sent.
    sizes: Histogram,
    lanes: Arc<Mutex<HashMap<Lane, mpsc::Sender<Queued>>>>,
}

impl std::fmt::Debug for RecordPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordPublisher")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RecordPublisher {
    pub fn new(nats: Nats, limits: Limits, sizes: Histogram) -> Self {
        Self {
            nats,
            sizes,
            limits: Limits {
                max_records: limits.max_records.max(1),
                in_flight: limits.in_flight.max(1),
                timeout: limits.timeout,
            },
            lanes: Arc::default(),
        }
    }

    /// Publishes one encoded record on `lane` and waits until JetStream has stored the
    /// message that carries it. Must be called within a Tokio runtime (a lane's task is
    /// started on its first record).
    pub async fn publish(&self, lane: Lane, record: Vec<u8>) -> Result<(), RecordError> {
        let sender = self.lane(lane);
        let (reply, answer) = oneshot::channel();
        sender
            .send(Queued { record, reply })
            .await
            .map_err(|_| RecordError::Stopped)?;
        answer.await.map_err(|_| RecordError::Stopped)?
    }

    fn lane(&self, lane: Lane) -> mpsc::Sender<Queued> {
        let mut lanes = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A lane whose task has ended (it can only have panicked) is started afresh.
        if let Some(s) = lanes.get(&lane).filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let subject = self
            .nats
            .names
            .deliveries_subject(&lane.region, lane.shard.as_deref());
        tokio::spawn(run_lane(
            self.nats.clone(),
            subject,
            rx,
            self.limits,
            self.sizes.clone(),
        ));
        lanes.insert(lane, tx.clone());
        tx
    }
}

async fn run_lane(
    nats: Nats,
    subject: String,
    mut rx: mpsc::Receiver<Queued>,
    limits: Limits,
    sizes: Histogram,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut carry: Option<Queued> = None;
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = next(&mut carry, &mut rx), if open && in_flight.len() < limits.in_flight => {
                match first {
                    Some(first) => {
                        let batch = gather(first, &mut rx, &mut carry, limits.max_records);
                        if !batch.is_empty() {
                            in_flight.push(send(&nats, subject.clone(), batch, limits.timeout, &sizes));
                        }
                    }
                    None => open = false,
                }
            }
        }
    }
}

async fn next(carry: &mut Option<Queued>, rx: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
    match carry.take() {
        Some(q) => Some(q),
        None => rx.recv().await,
    }
}

/// `first` and whatever else is queued, within the limits, leaving out the records nobody
/// waits for any more; what would overflow the limits waits in `carry` for the next message.
fn gather(
    first: Queued,
    rx: &mut mpsc::Receiver<Queued>,
    carry: &mut Option<Queued>,
    max_records: usize,
) -> Vec<Queued> {
    let mut bytes = 0;
    let mut batch = Vec::new();
    let mut next = Some(first);
    while batch.len() < max_records {
        let Some(q) = next.take().or_else(|| rx.try_recv().ok()) else {
            break;
        };
        if q.reply.is_closed() {
            continue;
        }
        if !batch.is_empty() && bytes + q.record.len() > MAX_BATCH_BYTES {
            *carry = Some(q);
            break;
        }
        bytes += q.record.len();
        batch.push(q);
    }
    batch
}

/// Publishes one message of `batch`'s records and tells each handler how it went.
async fn send(
    nats: &Nats,
    subject: String,
    batch: Vec<Queued>,
    timeout: Duration,
    sizes: &Histogram,
) {
    #[allow(
        clippy::cast_precision_loss,
        reason = "batches hold at most 10,000 records"
    )]
    sizes.observe(batch.len() as f64);
    let result = tokio::time::timeout(timeout, publish_batch(nats, subject, &batch))
        .await
        .unwrap_or(Err(RecordError::Timeout));
    for q in batch {
        // A handler that stopped waiting meanwhile has answered already.
        let _ = q.reply.send(result.clone());
    }
}

async fn publish_batch(nats: &Nats, subject: String, batch: &[Queued]) -> Result<(), RecordError> {
    // Nothing is sent while the connection is known to be down (see `publisher`).
    if nats.client.connection_state() != async_nats::connection::State::Connected {
        return Err(RecordError::Disconnected);
    }
    let payload = match batch {
        [one] => one.record.clone(),
        _ => encode_batch(batch.iter().map(|q| q.record.as_slice())),
    };
    let msg = PublishMessage::build().payload(payload.into());
    nats.js
        .send_publish(subject, msg)
        .await
        .map_err(|e| RecordError::Refused(e.to_string()))?
        .await
        .map_err(|e| RecordError::Refused(e.to_string()))?;
    Ok(())
}
