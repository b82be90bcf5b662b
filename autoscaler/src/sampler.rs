//! What the autoscaler measures of its region, every sample:
//!
//! | measure | source |
//! |---|---|
//! | arrivals | the jobs stream's last sequence: the delta between two samples is the jobs published in between (a work-queue stream removes acknowledged messages, but its sequence only grows; duplicates JetStream dropped never get one) |
//! | pending, in flight | the `workers` durable consumer: `num_pending`, `num_ack_pending` |
//! | oldest waiting job | the first message after the consumer's delivered stream sequence (a message get with `next_by_subj`): the oldest job no worker has taken yet; its age is now − its stream timestamp |
//! | live workers, slots, job time | the heartbeats of the region's workers in the `workers` KV bucket (entries expire when a worker stops beating) |
//!
//! Before any worker has created the consumer, every message of the stream is pending and
//! the oldest is the stream's first.

use std::collections::BTreeMap;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{kv, stream};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use protocol::Region;
use protocol::service::nats::Nats;
use protocol::subjects::WORKERS_CONSUMER;
use serde::Deserialize;

use crate::forecast::History;

/// Why a sample failed.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read stream {stream}: {source}")]
    Stream {
        stream: String,
        source: async_nats::Error,
    },
    #[error("cannot read the {WORKERS_CONSUMER} consumer of {stream}: {source}")]
    Consumer {
        stream: String,
        source: async_nats::Error,
    },
    #[error("cannot read the oldest waiting job of {stream}: {source}")]
    Oldest {
        stream: String,
        source: async_nats::Error,
    },
}

/// One reading of a region's queue and workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The jobs stream's last sequence.
    pub last_sequence: u64,
    /// Jobs no worker has taken yet.
    pub pending: u64,
    /// Jobs delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Seconds the oldest pending job has waited; 0 when none is pending.
    pub oldest_wait_secs: f64,
    /// The region's workers that beat.
    pub workers: Vec<WorkerBeat>,
}

impl Sample {
    /// Workers up and pulling.
    pub fn live_workers(&self) -> u32 {
        u32::try_from(self.workers.len()).unwrap_or(u32::MAX)
    }

    /// Their slots.
    pub fn live_slots(&self) -> u64 {
        self.workers.iter().map(|w| w.slots).sum()
    }

    /// Slots of one worker, rounded from the live ones; `None` without live workers.
    pub fn slots_per_worker(&self) -> Option<u32> {
        let n = self.workers.len() as u64;
        (n > 0).then(|| {
            u32::try_from((self.live_slots() + n / 2) / n)
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }

    /// The mean job time the live workers report; `None` when none reports one.
    pub fn mean_job_secs(&self) -> Option<f64> {
        let times: Vec<f64> = self
            .workers
            .iter()
            .filter_map(|w| w.mean_job_secs)
            .filter(|t| t.is_finite() && *t >= 0.0)
            .collect();
        (!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64)
    }
}

/// A worker's heartbeat as the autoscaler reads it (the worker writes it:
/// worker/src/heartbeat.rs). Fields it does not need are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkerBeat {
    pub id: String,
    pub region: String,
    pub slots: u64,
    #[serde(default)]
    pub mean_job_secs: Option<f64>,
}

/// Reads one region's queue and workers.
#[derive(Debug)]
pub struct Sampler {
    nats: Nats,
    region: Region,
    stream: String,
    filter: String,
    workers: Option<kv::Store>,
}

impl Sampler {
    pub fn new(nats: Nats, region: Region) -> Self {
        Self {
            stream: nats.names.jobs_stream(&region),
            filter: nats.names.jobs_filter(&region),
            nats,
            region,
            workers: None,
        }
    }

    /// Takes a sample.
    pub async fn sample(&mut self) -> Result<Sample, SampleError> {
        let stream_err = |e: async_nats::Error| SampleError::Stream {
            stream: self.stream.clone(),
            source: e,
        };
        let stream = self
            .nats
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| stream_err(e.into()))?;
        let state = stream.cached_info().state.clone();
        let at = Utc::now();
        let (pending, in_flight, delivered) = match stream.consumer_info(WORKERS_CONSUMER).await {
            Ok(info) => (
                info.num_pending,
                info.num_ack_pending as u64,
                info.delivered.stream_sequence,
            ),
            Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
                (state.messages, 0, state.first_sequence.saturating_sub(1))
            }
            Err(e) => {
                return Err(SampleError::Consumer {
                    stream: self.stream.clone(),
                    source: e.into(),
                });
            }
        };
        let oldest_wait_secs = if pending == 0 {
            0.0
        } else {
            self.oldest_wait(&stream, delivered + 1, at).await?
        };
        let workers = self.heartbeats().await;
        Ok(Sample {
            at,
            last_sequence: state.last_sequence,
            pending,
            in_flight,
            oldest_wait_secs,
            workers,
        })
    }

    /// Age of the first job at or after stream sequence `from`.
    async fn oldest_wait(
        &self,
        stream: &stream::Stream,
        from: u64,
        now: DateTime<Utc>,
    ) -> Result<f64, SampleError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let got = stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(self.filter.clone())
            .send()
            .await;
        match got {
            Ok(msg) => {
                let stored = msg.time.unix_timestamp_nanos() as f64 / 1e9;
                let now = now.timestamp_nanos_opt().unwrap_or(i64::MAX) as f64 / 1e9;
                Ok((now - stored).max(0.0))
            }
            // Taken by a worker since the consumer was read.
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(0.0),
            Err(e) => Err(SampleError::Oldest {
                stream: self.stream.clone(),
                source: e.into(),
            }),
        }
    }

    /// The heartbeats of the region's workers. A bucket that cannot be read (it does not
    /// exist before the first worker beats) counts as no workers.
    async fn heartbeats(&mut self) -> Vec<WorkerBeat> {
        if self.workers.is_none() {
            let bucket = self.nats.names.workers_bucket();
            match self.nats.js.get_key_value(&bucket).await {
                Ok(store) => self.workers = Some(store),
                Err(e) => {
                    tracing::debug!(error = %e, bucket, "no workers bucket yet");
                    return Vec::new();
                }
            }
        }
        let Some(store) = &self.workers else {
            return Vec::new();
        };
        match read_beats(store, &self.region).await {
            Ok(beats) => beats,
            Err(e) => {
                // The bucket lives in memory: a restarted server has lost it. Open it anew.
                tracing::warn!(error = %e, "cannot read the workers bucket; reopening it");
                self.workers = None;
                Vec::new()
            }
        }
    }
}

async fn read_beats(
    store: &kv::Store,
    region: &Region,
) -> Result<Vec<WorkerBeat>, async_nats::Error> {
    let keys: Vec<String> = store.keys().await?.try_collect().await?;
    let mut beats = BTreeMap::new();
    for key in keys {
        let Some(value) = store.get(&key).await? else {
            continue;
        };
        match serde_json::from_slice::<WorkerBeat>(&value) {
            Ok(beat) if beat.region == region.as_str() => {
                beats.insert(beat.id.clone(), beat);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, key, "unreadable heartbeat; ignored"),
        }
    }
    Ok(beats.into_values().collect())
}

/// Adds `jobs` that arrived over `(from, to]` to `history`, spread evenly over the span, so
/// a gap between samples (a restart) does not pile its arrivals into one bucket.
pub fn record_spread(history: &mut History, from: i64, to: i64, jobs: f64) {
    if to <= from {
        history.record(to, jobs);
        return;
    }
    let width = history.bucket_secs();
    let span = (to - from) as f64;
    let mut at = from;
    while at < to {
        // The end of the bucket `at` lies in (buckets are half-open on the left).
        let offset = (at - history.start()).rem_euclid(width);
        let end = (at - offset + width).min(to);
        history.record(end, jobs * (end - at) as f64 / span);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, slots: u64, mean: Option<f64>) -> WorkerBeat {
        WorkerBeat {
            id: id.into(),
            region: "us-east-1".into(),
            slots,
            mean_job_secs: mean,
        }
    }

    fn sample(workers: Vec<WorkerBeat>) -> Sample {
        Sample {
            at: Utc::now(),
            last_sequence: 0,
            pending: 0,
            in_flight: 0,
            oldest_wait_secs: 0.0,
            workers,
        }
    }

    #[test]
    fn a_sample_sums_the_slots_and_averages_the_job_times_of_its_workers() {
        let s = sample(vec![
            beat("a", 4, Some(10.0)),
            beat("b", 4, None),
            beat("c", 8, Some(20.0)),
        ]);
        assert_eq!(s.live_workers(), 3);
        assert_eq!(s.live_slots(), 16);
        assert_eq!(s.slots_per_worker(), Some(5));
        assert_eq!(s.mean_job_secs(), Some(15.0));
        let empty = sample(Vec::new());
        assert_eq!(empty.slots_per_worker(), None);
        assert_eq!(empty.mean_job_secs(), None);
    }

    #[test]
    fn a_heartbeat_of_the_worker_reads_with_or_without_a_job_time() {
        let old = r#"{"id":"w1","region":"us-east-1","slots":4,"in_flight":1,"at":"2024-01-01T00:00:00Z"}"#;
        assert_eq!(
            serde_json::from_str::<WorkerBeat>(old).unwrap(),
            beat("w1", 4, None)
        );
        let new = r#"{"id":"w1","region":"us-east-1","slots":4,"in_flight":1,"at":"2024-01-01T00:00:00Z","mean_job_secs":2.5}"#;
        assert_eq!(
            serde_json::from_str::<WorkerBeat>(new).unwrap(),
            beat("w1", 4, Some(2.5))
        );
    }

    #[test]
    fn arrivals_over_a_gap_are_spread_over_its_buckets() {
        let mut h = History::new(0, 100, 100);
        h.record(50, 1.0);
        // 300 jobs from t = 50 to t = 350: 50 s in bucket 0, 100 s in buckets 1 and 2, 50 s in 3
        record_spread(&mut h, 50, 350, 300.0);
        assert_eq!(h.completed(), 3);
        assert_eq!(h.get(0), Some(51.0));
        assert_eq!(h.get(1), Some(100.0));
        assert_eq!(h.get(2), Some(100.0));
        assert_eq!(h.open(), 50.0);
    }

    #[test]
    fn arrivals_within_one_second_go_to_the_bucket_of_the_sample() {
        let mut h = History::new(0, 100, 100);
        record_spread(&mut h, 40, 40, 3.0);
        record_spread(&mut h, 40, 45, 2.0);
        assert_eq!(h.completed(), 0);
        assert_eq!(h.open(), 5.0);
    }
}
