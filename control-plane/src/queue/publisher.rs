//! Publishing a delivery: its jobs on the jobs stream of the org's region, then its record
//! on that region's deliveries stream (in a batch with the records of other deliveries, see
//! [`super::records`]) — each acknowledged by JetStream before intake answers.
//!
//! Jobs go first: if the record then fails, the jobs still run (workers create their rows)
//! and the `503` makes GitHub's redelivery publish the record, while the jobs' message ids
//! (`<delivery>:<rule>`) make JetStream drop them as duplicates. The reverse order could
//! leave recorded jobs that never run.
//!
//! Nothing is sent while the connection is known to be down: the NATS client would queue the
//! messages and deliver them after reconnecting, long after intake answered `503` (the record
//! lanes check the connection again when they send). A connection that fails during a
//! publish can still deliver it late: a late job is a valid delivery whose redelivery
//! JetStream then drops as a duplicate, so the job runs once either way; a late record is a
//! second record of its delivery, and the recorder keeps whichever was written first.

use std::time::Duration;

use std::future::IntoFuture;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::future::try_join_all;
use protocol::delivery::DeliveryRecord;
use protocol::ids::job_msg_id;
use protocol::service::nats::Nats;
use protocol::service::telemetry::inject_nats;
use protocol::{JobMessage, JobSpec};

use super::records::{Lane, RecordError, RecordPublisher};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("JetStream did not acknowledge in time")]
    Timeout,
    #[error("JetStream refused the message: {0}")]
    Refused(String),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<RecordError> for PublishError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Disconnected => Self::Disconnected,
            RecordError::Refused(why) => Self::Refused(why),
            RecordError::Timeout => Self::Timeout,
            RecordError::Stopped => Self::Refused(e.to_string()),
        }
    }
}

/// What JetStream said about a delivery's messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Whether JetStream had already stored this delivery's jobs (a redelivery inside the
    /// duplicate window). A delivery that makes no jobs is never reported as one here; the
    /// recorder leaves its repeated record as the first one was written.
    pub duplicate: bool,
}

fn ensure_connected(nats: &Nats) -> Result<(), PublishError> {
    match nats.client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        _ => Err(PublishError::Disconnected),
    }
}

fn message(payload: Bytes, msg_id: String) -> PublishMessage {
    let mut headers = async_nats::HeaderMap::new();
    inject_nats(&mut headers);
    PublishMessage::build()
        .payload(payload)
        .message_id(msg_id)
        .headers(headers)
}

/// Publishes `jobs` and then `record` (on `lane`: the org's home region and shard or, for an
/// unclaimed installation, this region), waiting for every acknowledgement within `timeout`.
pub async fn publish_delivery(
    nats: &Nats,
    records: &RecordPublisher,
    lane: Lane,
    jobs: &[JobSpec],
    record: &DeliveryRecord,
    timeout: Duration,
) -> Result<Published, PublishError> {
    ensure_connected(nats)?;
    let work = async {
        let mut acks = Vec::with_capacity(jobs.len());
        for job in jobs {
            let subject = nats.names.jobs_subject(&job.region, &job.kind, job.org_id);
            let payload = serde_json::to_vec(&JobMessage::Run(job.clone()))?;
            let msg = message(
                payload.into(),
                job_msg_id(&job.delivery_id, &job.rule_id, job.requeue),
            );
            acks.push(
                nats.js
                    .send_publish(subject, msg)
                    .await
                    .map_err(|e| PublishError::Refused(e.to_string()))?,
            );
        }
        let acks = try_join_all(acks.into_iter().map(IntoFuture::into_future))
            .await
            .map_err(|e| PublishError::Refused(e.to_string()))?;
        let duplicate = !acks.is_empty() && acks.iter().all(|a| a.duplicate);

        records.publish(lane, serde_json::to_vec(record)?).await?;
        Ok(Published { duplicate })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PublishError::Timeout)?
}

/// Publishes one job (a retry by hand) and waits for its acknowledgement.
pub async fn publish_job(
    nats: &Nats,
    job: &JobSpec,
    timeout: Duration,
) -> Result<(), PublishError> {
    let subject = nats.names.jobs_subject(&job.region, &job.kind, job.org_id);
    let payload = serde_json::to_vec(&JobMessage::Run(job.clone()))?;
    let msg = message(
        payload.into(),
        job_msg_id(&job.delivery_id, &job.rule_id, job.requeue),
    );
    let work = async {
        nats.js
            .send_publish(subject, msg)
            .await
            .map_err(|e| PublishError::Refused(e.to_string()))?
            .await
            .map_err(|e| PublishError::Refused(e.to_string()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PublishError::Timeout)??;
    Ok(())
}
