//! The queue simulation behind the backtest: a region's work queue, its worker pool and one
//! policy, advanced in fixed ticks.
//!
//! Jobs are not simulated one by one: each tick's arrivals form one cohort, cohorts wait in
//! FIFO order and are started, whole or in part, as slots free up; the jobs started in a tick
//! finish together one job time later. That keeps a seven-month trace at a 5-second tick (a
//! few million ticks, tens of millions of jobs) to seconds of work. Waits are whole ticks: a
//! job that finds a free slot in the tick it arrives waits 0. Their distribution is kept
//! exactly, as a count per tick of wait.

use std::collections::{BTreeMap, VecDeque};

use indicatif::ProgressBar;

use crate::forecast::History;
use crate::policy::{Observation, Policy, Reason};
use crate::trace::Trace;

/// The simulated world, in seconds; every period a whole number of ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct World {
    pub tick_secs: i64,
    pub decision_secs: i64,
    pub job_secs: i64,
    pub slots_per_worker: u32,
    pub startup_secs: i64,
    pub slo_secs: i64,
    /// Multiplies the trace's values into jobs.
    pub rate_scale: f64,
    /// Width of the buckets the history and the reported series use.
    pub bucket_secs: i64,
    /// Workers in the pool when the trace starts.
    pub initial_workers: u32,
}

impl World {
    /// Checks that the periods fit the tick.
    pub fn validate(&self) -> Result<(), String> {
        let tick = self.tick_secs;
        if tick <= 0 {
            return Err("the tick must be positive".into());
        }
        for (name, secs) in [
            ("decision period", self.decision_secs),
            ("job time", self.job_secs),
            ("history bucket", self.bucket_secs),
        ] {
            if secs <= 0 || secs % tick != 0 {
                return Err(format!(
                    "the {name} ({secs} s) must be a positive multiple of the tick ({tick} s)"
                ));
            }
        }
        if self.startup_secs < 0 || self.slo_secs < 0 {
            return Err("start-up time and SLO cannot be negative".into());
        }
        if self.slots_per_worker == 0 {
            return Err("a worker needs at least one slot".into());
        }
        if !(self.rate_scale.is_finite() && self.rate_scale > 0.0) {
            return Err("the rate scale must be a positive number".into());
        }
        Ok(())
    }

    fn ticks(&self, secs: i64) -> u64 {
        u64::try_from(secs.max(0))
            .unwrap_or(0)
            .div_ceil(self.tick_secs.unsigned_abs())
    }
}

/// How long jobs waited: job counts per whole tick of wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl WaitHistogram {
    /// Counts `jobs` that waited `ticks`.
    pub fn record(&mut self, ticks: u64, jobs: u64) {
        let i = usize::try_from(ticks).unwrap_or(usize::MAX);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += jobs;
        self.total += jobs;
    }

    /// Jobs counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest wait, in ticks, that at least `q` of the jobs did not exceed.
    pub fn quantile_ticks(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (q * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ticks, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return ticks as u64;
            }
        }
        self.counts.len().saturating_sub(1) as u64
    }

    /// Jobs that waited more than `ticks`.
    pub fn above(&self, ticks: u64) -> u64 {
        let from = usize::try_from(ticks.saturating_add(1)).unwrap_or(usize::MAX);
        self.counts.iter().skip(from).sum()
    }
}

/// What one policy did over a trace.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy: &'static str,
    /// Worker-seconds provisioned: starting, ready and draining workers.
    pub worker_secs: f64,
    pub waits: WaitHistogram,
    /// Decisions that changed the pool size.
    pub scale_events: u64,
    pub decisions: BTreeMap<Reason, u64>,
    pub peak_workers: u32,
    /// Per history bucket: jobs that arrived.
    pub arrivals: Vec<f64>,
    /// Per history bucket: mean workers provisioned.
    pub workers: Vec<f64>,
    /// Per history bucket: the forecast made for it a full horizon earlier (mean, upper).
    pub forecasts: Vec<Option<(f64, f64)>>,
}

/// Jobs that arrived in one tick and have not all started.
#[derive(Debug, Clone, Copy)]
struct Cohort {
    tick: u64,
    jobs: u64,
}

/// Replays `trace` through a pool driven by `policy`.
pub fn simulate(
    trace: &Trace,
    world: &World,
    policy: &mut dyn Policy,
    retain_buckets: usize,
    progress: Option<&ProgressBar>,
) -> Outcome {
    let tick_secs = world.tick_secs;
    let decision_ticks = world.ticks(world.decision_secs).max(1);
    let job_ticks = world.ticks(world.job_secs).max(1);
    let startup_ticks = world.ticks(world.startup_secs);
    let bucket_ticks = world.ticks(world.bucket_secs).max(1);
    let slots = u64::from(world.slots_per_worker);

    let mut history = History::new(trace.start(), world.bucket_secs, retain_buckets);
    let mut waiting: VecDeque<Cohort> = VecDeque::new();
    let mut pending: u64 = 0;
    // (tick the jobs finish, jobs), in tick order since every job takes the same time
    let mut running: VecDeque<(u64, u64)> = VecDeque::new();
    let mut in_flight: u64 = 0;
    let mut ready: u32 = world.initial_workers;
    // (tick the workers are up, workers), in tick order
    let mut starting: VecDeque<(u64, u32)> = VecDeque::new();
    let mut starting_total: u32 = 0;

    let buckets = usize::try_from(
        trace
            .span_secs()
            .unsigned_abs()
            .div_ceil(world.bucket_secs.unsigned_abs()),
    )
    .unwrap_or(0);
    let mut outcome = Outcome {
        policy: policy.name(),
        worker_secs: 0.0,
        waits: WaitHistogram::default(),
        scale_events: 0,
        decisions: BTreeMap::new(),
        peak_workers: ready,
        arrivals: vec![0.0; buckets],
        workers: vec![0.0; buckets],
        forecasts: vec![None; buckets],
    };
    let mut last_origin = None;
    let mut carry = 0.0;
    let mut tick: u64 = 0;

    for (now, events) in trace.windows(tick_secs) {
        tick += 1;
        let bucket = usize::try_from((tick - 1) / bucket_ticks).unwrap_or(usize::MAX);

        while running.front().is_some_and(|&(done, _)| done <= tick) {
            if let Some((_, jobs)) = running.pop_front() {
                in_flight -= jobs;
            }
        }
        while starting.front().is_some_and(|&(up, _)| up <= tick) {
            if let Some((_, workers)) = starting.pop_front() {
                ready += workers;
                starting_total -= workers;
            }
        }

        // Whole jobs, carrying the fraction so none are lost over the trace.
        carry += events * world.rate_scale;
        let arrived = carry.floor().max(0.0);
        carry -= arrived;
        let arrived = arrived as u64;
        history.record(now, arrived as f64);
        if let Some(slot) = outcome.arrivals.get_mut(bucket) {
            *slot += arrived as f64;
        }
        if arrived > 0 {
            waiting.push_back(Cohort {
                tick,
                jobs: arrived,
            });
            pending += arrived;
        }

        let mut free = (u64::from(ready) * slots).saturating_sub(in_flight);
        let mut started = 0;
        while free > 0 {
            let Some(front) = waiting.front_mut() else {
                break;
            };
            let take = front.jobs.min(free);
            outcome.waits.record(tick - front.tick, take);
            front.jobs -= take;
            free -= take;
            started += take;
            if front.jobs == 0 {
                waiting.pop_front();
            }
        }
        if started > 0 {
            pending -= started;
            in_flight += started;
            running.push_back((tick + job_ticks, started));
        }

        // The tick's cost is the pool it had; a decision at its end costs from the next.
        // Workers told to stop finish the jobs they hold, and cost until they do.
        let capacity = u64::from(ready) * slots;
        let draining =
            u32::try_from(in_flight.saturating_sub(capacity).div_ceil(slots)).unwrap_or(u32::MAX);
        let provisioned = ready + starting_total + draining;
        outcome.peak_workers = outcome.peak_workers.max(provisioned);
        outcome.worker_secs += f64::from(provisioned) * tick_secs as f64;
        if let Some(slot) = outcome.workers.get_mut(bucket) {
            *slot += f64::from(provisioned) / bucket_ticks as f64;
        }

        if tick.is_multiple_of(decision_ticks) {
            let current = ready + starting_total;
            let obs = Observation {
                now,
                pending,
                in_flight,
                live_slots: u64::from(ready) * slots,
                slots_per_worker: world.slots_per_worker,
                mean_job_secs: world.job_secs as f64,
                current_workers: current,
                starting_workers: starting_total,
                history: &history,
            };
            let decision = policy.decide(&obs);
            *outcome.decisions.entry(decision.reason).or_default() += 1;
            if decision.desired > current {
                let added = decision.desired - current;
                starting.push_back((tick + startup_ticks, added));
                starting_total += added;
                outcome.scale_events += 1;
            } else if decision.desired < current {
                // Like a ReplicaSet scaling down, take workers that are not up yet first,
                // the most recently started of them first.
                let mut remove = current - decision.desired;
                while remove > 0 {
                    let Some(back) = starting.back_mut() else {
                        break;
                    };
                    let take = back.1.min(remove);
                    back.1 -= take;
                    starting_total -= take;
                    remove -= take;
                    if back.1 == 0 {
                        starting.pop_back();
                    }
                }
                ready -= remove.min(ready);
                outcome.scale_events += 1;
            }
            if let Some(forecast) = policy.forecast()
                && last_origin != Some(forecast.origin)
            {
                last_origin = Some(forecast.origin);
                let horizon = forecast.mean.len();
                let target = usize::try_from(forecast.origin)
                    .unwrap_or(usize::MAX)
                    .saturating_add(horizon);
                if let (Some(slot), Some(&mean), Some(&upper)) = (
                    outcome.forecasts.get_mut(target),
                    forecast.mean.last(),
                    forecast.upper.last(),
                ) {
                    *slot = Some((mean, upper));
                }
            }
        }

        if tick.is_multiple_of(65_536)
            && let Some(bar) = progress
        {
            bar.inc(65_536);
        }
    }
    if let Some(bar) = progress {
        bar.inc(tick % 65_536);
    }
    // Jobs still waiting at the end count with the wait they have had so far.
    for cohort in waiting {
        outcome.waits.record(tick - cohort.tick, cohort.jobs);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Decision;

    /// Keeps the pool at a fixed size.
    struct Fixed(u32);

    impl Policy for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }

        fn decide(&mut self, obs: &Observation<'_>) -> Decision {
            Decision {
                desired: self.0,
                reason: Reason::Min,
                backlog_workers: crate::policy::backlog_workers(obs),
                forecast_workers: None,
                upper_rate: None,
            }
        }
    }

    fn world(rate_scale: f64, initial_workers: u32) -> World {
        World {
            tick_secs: 5,
            decision_secs: 15,
            job_secs: 30,
            slots_per_worker: 4,
            startup_secs: 90,
            slo_secs: 60,
            rate_scale,
            bucket_secs: 300,
            initial_workers,
        }
    }

    /// An hour at `per_minute` events a minute.
    fn steady(per_minute: f64) -> Trace {
        let rows: String = (1..=60)
            .map(|m| format!("{},{per_minute}\n", m * 60))
            .collect();
        Trace::parse(&rows).unwrap()
    }

    #[test]
    fn a_constant_pool_costs_its_size_times_the_span() {
        let trace = steady(60.0);
        let outcome = simulate(&trace, &world(1.0, 10), &mut Fixed(10), 1000, None);
        assert!((outcome.worker_secs / 60.0 - 600.0).abs() < 1e-9);
        assert_eq!(outcome.scale_events, 0);
        assert_eq!(outcome.peak_workers, 10);
        assert_eq!(outcome.workers.len(), 12);
        assert!(outcome.workers.iter().all(|w| (w - 10.0).abs() < 1e-9));
    }

    #[test]
    fn with_enough_capacity_no_job_waits() {
        // 1 job/s × 30 s = 30 slots busy; 10 workers have 40
        let trace = steady(60.0);
        let outcome = simulate(&trace, &world(1.0, 10), &mut Fixed(10), 1000, None);
        assert_eq!(outcome.waits.total(), 3600);
        assert_eq!(outcome.waits.quantile_ticks(1.0), 0);
        assert_eq!(outcome.waits.above(0), 0);
        let arrived: f64 = outcome.arrivals.iter().sum();
        assert_eq!(arrived, 3600.0);
    }

    #[test]
    fn with_too_little_capacity_the_queue_and_the_waits_grow() {
        // 2 jobs/s need 60 slots; 10 workers have 40, so 1/3 of the work piles up
        let trace = steady(120.0);
        let outcome = simulate(&trace, &world(1.0, 10), &mut Fixed(10), 1000, None);
        assert_eq!(outcome.waits.total(), 7200);
        let slo_ticks = 12;
        let missed = outcome.waits.above(slo_ticks) as f64 / 7200.0;
        assert!(missed > 0.5, "missed {missed}");
        assert!(outcome.waits.quantile_ticks(0.95) > slo_ticks);
    }

    #[test]
    fn a_started_worker_costs_from_the_start_but_serves_only_after_start_up() {
        let trace = steady(60.0);
        let outcome = simulate(&trace, &world(1.0, 0), &mut Fixed(10), 1000, None);
        // the first decision comes at 15 s, the workers serve from 105 s
        let expected_secs = (3600.0 - 15.0) * 10.0;
        assert!((outcome.worker_secs - expected_secs).abs() < 1e-6);
        assert_eq!(outcome.scale_events, 1);
        // the jobs of the first 105 s wait for the first slots
        assert!(outcome.waits.above(12) > 0);
    }

    #[test]
    fn the_rate_scale_multiplies_arrivals_without_losing_fractions() {
        let trace = steady(60.0);
        let outcome = simulate(&trace, &world(0.37, 10), &mut Fixed(10), 1000, None);
        let arrived: f64 = outcome.arrivals.iter().sum();
        assert!((arrived - 3600.0 * 0.37).abs() <= 1.0, "{arrived}");
    }

    #[test]
    fn the_wait_histogram_quantile_is_the_nearest_rank() {
        let mut waits = WaitHistogram::default();
        waits.record(0, 90);
        waits.record(3, 5);
        waits.record(20, 5);
        assert_eq!(waits.quantile_ticks(0.9), 0);
        assert_eq!(waits.quantile_ticks(0.95), 3);
        assert_eq!(waits.quantile_ticks(0.96), 20);
        assert_eq!(waits.above(12), 5);
        assert_eq!(waits.above(3), 5);
        assert_eq!(waits.above(2), 10);
    }
}
