//! The state of a region's worker pool, as its autoscaler publishes it.
//!
//! Every region's autoscaler writes one [`PoolState`] as JSON into the KV bucket
//! [`Names::autoscaler_bucket`](crate::subjects::Names::autoscaler_bucket) of the region's
//! JetStream domain, under the key [`PoolState::key`] (the region's name), after every
//! decision. Readers (the control plane's `GET /v1/admin/worker-pools`) take the latest value;
//! `updated_at` tells how fresh it is, since a stopped autoscaler leaves its last state behind.
//! Fields may be added; readers ignore the ones they do not know.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::region::Region;

/// One region's worker pool and the autoscaler's view of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    /// The region whose pool this is.
    pub region: Region,
    /// Workers up and pulling jobs: those with a heartbeat in the `workers` bucket.
    pub actual: u32,
    /// Workers the pool should have, starting ones included (the last decision).
    pub desired: u32,
    /// Workers ordered from the actuator that do not pull jobs yet.
    pub starting: u32,
    /// What carries out the decisions: `kubernetes`, `local` or `dry_run`.
    pub actuator: String,
    /// Fewest workers the pool may have.
    pub min_workers: u32,
    /// Most workers the pool may have.
    pub max_workers: u32,
    /// Jobs that arrived per second over the last decision period.
    pub arrival_jobs_per_second: f64,
    /// The forecast's expected arrivals per second over a worker's start-up lead time;
    /// `None` while there is no forecast.
    pub forecast_jobs_per_second: Option<f64>,
    /// The upper bound of arrivals per second the pool was sized for (the forecast's bound,
    /// or the rate of the bucket in progress when higher); `None` without a forecast.
    pub forecast_upper: Option<f64>,
    /// Jobs waiting plus jobs running: `pending + in_flight`.
    pub backlog: u64,
    /// Jobs not yet delivered to a worker (the consumer's pending messages).
    pub pending: u64,
    /// Jobs delivered and not yet acknowledged (running, or waiting for a retry).
    pub in_flight: u64,
    /// Seconds the oldest job not yet delivered to a worker has waited; 0 when none waits.
    pub oldest_wait_seconds: f64,
    /// Slots of the live workers.
    pub live_slots: u64,
    /// Mean run time of a job, seconds: the workers' reports, or the configured value while
    /// none reports one.
    pub mean_job_seconds: f64,
    /// The decision behind `desired`.
    pub last_decision: LastDecision,
    /// `true` while the forecast has too little history and the reactive rule decides.
    pub fallback: bool,
    /// When the autoscaler wrote this state.
    pub updated_at: DateTime<Utc>,
}

/// One decision of the autoscaler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDecision {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Workers the pool had then, starting ones included.
    pub current: u32,
    /// Workers it asked for.
    pub desired: u32,
    /// Why: `forecast`, `backlog`, `min`, `max`, `stabilizing` or `fallback`.
    pub reason: String,
}

impl PoolState {
    /// The key of a region's state in the bucket.
    pub fn key(region: &Region) -> &str {
        region.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PoolState {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        PoolState {
            region: Region::new("eu-west-1").unwrap(),
            actual: 3,
            desired: 5,
            starting: 2,
            actuator: "local".into(),
            min_workers: 1,
            max_workers: 20,
            arrival_jobs_per_second: 1.5,
            forecast_jobs_per_second: None,
            forecast_upper: Some(2.25),
            backlog: 14,
            pending: 10,
            in_flight: 4,
            oldest_wait_seconds: 3.5,
            live_slots: 12,
            mean_job_seconds: 30.0,
            last_decision: LastDecision {
                at,
                current: 3,
                desired: 5,
                reason: "backlog".into(),
            },
            fallback: true,
            updated_at: at,
        }
    }

    #[test]
    fn the_state_is_keyed_by_region_and_reads_back_as_written() {
        let s = state();
        assert_eq!(PoolState::key(&s.region), "eu-west-1");
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<PoolState>(&json).unwrap(), s);
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let v = serde_json::to_value(state()).unwrap();
        assert_eq!(v["region"], "eu-west-1");
        assert_eq!(v["actual"], 3);
        assert_eq!(v["desired"], 5);
        assert_eq!(v["starting"], 2);
        assert_eq!(v["forecast_jobs_per_second"], serde_json::Value::Null);
        assert_eq!(v["forecast_upper"], 2.25);
        assert_eq!(v["last_decision"]["reason"], "backlog");
        assert_eq!(v["last_decision"]["at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["fallback"], true);
    }

    #[test]
    fn readers_ignore_fields_they_do_not_know() {
        let mut v = serde_json::to_value(state()).unwrap();
        v["added_later"] = serde_json::json!(1);
        assert_eq!(serde_json::from_value::<PoolState>(v).unwrap(), state());
    }
}
