//! Heartbeats into the `workers` KV bucket: one key per worker, expiring when heartbeats
//! stop, so the live worker slots of a region are the bucket's keys.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// One worker's heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    pub id: String,
    pub region: String,
    pub slots: usize,
    pub in_flight: i64,
    pub at: chrono::DateTime<Utc>,
    /// Mean run time of this worker's recent jobs, seconds (see [`JobTimes`]); absent until
    /// it has run one, and in heartbeats of older workers. The autoscaler sizes pools with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_job_secs: Option<f64>,
}

/// Half-life of a job's weight in [`JobTimes`]' mean.
const JOB_TIME_HALF_LIFE: Duration = Duration::from_secs(600);

/// The mean run time of recent jobs, read from the run-time histogram at every heartbeat:
/// the jobs that finished since the last one join with full weight and the weight of older
/// ones halves every [`JOB_TIME_HALF_LIFE`], so the mean follows a change of the job mix
/// within minutes and holds while the worker idles.
#[derive(Debug, Default)]
pub struct JobTimes {
    seen_sum: f64,
    seen_count: u64,
    sum: f64,
    weight: f64,
}

impl JobTimes {
    /// Takes in the histogram's totals `elapsed` after the previous call.
    pub fn update(&mut self, sum: f64, count: u64, elapsed: Duration) -> Option<f64> {
        let decay = 0.5_f64.powf(elapsed.as_secs_f64() / JOB_TIME_HALF_LIFE.as_secs_f64());
        let new_count = count.saturating_sub(self.seen_count);
        let new_sum = (sum - self.seen_sum).max(0.0);
        self.seen_sum = sum;
        self.seen_count = count;
        self.sum = self.sum * decay + new_sum;
        self.weight = self.weight * decay + new_count as f64;
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

/// KV keys allow `[-/_=.a-zA-Z0-9]`.
pub fn key_of(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub async fn run(w: Arc<Worker>, shutdown: CancellationToken) {
    let every = w.config.worker.heartbeat_every;
    let key = key_of(&w.id);
    let mut bucket = None;
    let mut job_times = JobTimes::default();
    loop {
        let run = &w.metrics.run_duration;
        let hb = Heartbeat {
            id: w.id.clone(),
            region: w.config.worker.region.to_string(),
            slots: w.config.worker.slots,
            in_flight: w.metrics.in_flight.get(),
            at: Utc::now(),
            mean_job_secs: job_times.update(run.get_sample_sum(), run.get_sample_count(), every),
        };
        if bucket.is_none() {
            bucket = open_bucket(&w, every)
                .await
                .map_err(
                    |e| tracing::warn!(error = %e, "cannot open the workers bucket; will retry"),
                )
                .ok();
        }
        if let (Some(b), Ok(bytes)) = (&bucket, serde_json::to_vec(&hb))
            && let Err(e) = b.put(&key, bytes.into()).await
        {
            // The bucket lives in memory: a restarted server has lost it. Open it anew.
            tracing::warn!(error = %e, "heartbeat failed; reopening the workers bucket");
            bucket = None;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    // Leave at once rather than when the entry expires.
    if let Some(b) = bucket {
        let _ = b.delete(&key).await;
    }
}

/// Opens the bucket, creating it when missing.
///
/// The bucket's stream is created directly, with the key-value layout: the client's own
/// "create bucket" asks for the stream's info first and cannot read nats-server 2.9's "not
/// found" answer, whereas creating a stream that exists with the same configuration is a
/// no-op on every server version.
pub async fn open_bucket(w: &Worker, every: Duration) -> Result<kv::Store, async_nats::Error> {
    use async_nats::jetstream::stream;
    let bucket = w.nats.names.workers_bucket();
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("Live workers and their slots".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: every * 3,
        storage: stream::StorageType::Memory,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    };
    if let Err(e) = w.nats.js.create_stream(config).await {
        tracing::debug!(error = %e, "the workers bucket's stream exists with another configuration; using it");
    }
    Ok(w.nats.js.get_key_value(&bucket).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_safe() {
        assert_eq!(key_of("host.example-123"), "host_example-123");
        assert_eq!(key_of("w 1/2"), "w_1_2");
    }

    #[test]
    fn the_job_time_is_absent_until_a_job_ran_then_follows_recent_jobs() {
        let mut t = JobTimes::default();
        let beat = Duration::from_secs(5);
        assert_eq!(t.update(0.0, 0, beat), None);
        assert_eq!(t.update(20.0, 2, beat), Some(10.0));
        // idle: the mean holds
        let idle = t.update(20.0, 2, beat).unwrap();
        assert!((idle - 10.0).abs() < 1e-9, "{idle}");
        // an hour later two 40 s jobs outweigh the old ones
        let mean = t.update(100.0, 4, Duration::from_secs(3600)).unwrap();
        assert!(mean > 39.0 && mean < 40.0, "{mean}");
    }

    #[test]
    fn heartbeats_without_a_job_time_still_parse() {
        let old = r#"{"id":"w1","region":"us-east-1","slots":4,"in_flight":1,"at":"2024-01-01T00:00:00Z"}"#;
        let hb: Heartbeat = serde_json::from_str(old).unwrap();
        assert_eq!(hb.mean_job_secs, None);
        assert!(
            !serde_json::to_string(&hb)
                .unwrap()
                .contains("mean_job_secs")
        );
    }
}
