//! Scaling policies: from one observation of a region's queue and pool to the number of
//! workers it should have, with the reason.
//!
//! The same policies drive the backtest's simulated pool and the live loop; both hand them an
//! [`Observation`] every decision period and carry out the [`Decision`].
//!
//! * [`Reactive`] is the baseline a user gets from KEDA's NATS JetStream scaler under the
//!   Kubernetes HPA defaults.
//! * [`Predictive`] adds a forecast of arrivals over a worker's start-up time, scales up at
//!   once and scales down after a window and by bounded steps.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::forecast::{Forecast, ForecastConfig, Forecaster, History};

/// What a policy sees at a decision.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Unix seconds.
    pub now: i64,
    /// Jobs waiting for a worker (the consumer's pending messages).
    pub pending: u64,
    /// Jobs being run (delivered, not yet acknowledged).
    pub in_flight: u64,
    /// Slots of the workers that are up and pulling.
    pub live_slots: u64,
    /// Slots of one worker.
    pub slots_per_worker: u32,
    /// Mean run time of a job, seconds.
    pub mean_job_secs: f64,
    /// Workers in the pool, starting ones included.
    pub current_workers: u32,
    /// Workers started but not yet pulling.
    pub starting_workers: u32,
    /// Arrivals so far, in buckets.
    pub history: &'a History,
}

/// Why a policy chose its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The forecast's upper bound over the start-up lead time needs this many workers.
    Forecast,
    /// The jobs waiting and running need this many workers.
    Backlog,
    /// Held at the pool's minimum.
    Min,
    /// Held at the pool's maximum.
    Max,
    /// A scale-down held back or slowed by the stabilization window, step or tolerance.
    Stabilizing,
    /// Too little history for a forecast: the reactive rule decided.
    Fallback,
}

impl Reason {
    /// Every reason, in the order reports list them.
    pub const ALL: [Self; 6] = [
        Self::Forecast,
        Self::Backlog,
        Self::Min,
        Self::Max,
        Self::Stabilizing,
        Self::Fallback,
    ];

    /// The name used in logs, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forecast => "forecast",
            Self::Backlog => "backlog",
            Self::Min => "min",
            Self::Max => "max",
            Self::Stabilizing => "stabilizing",
            Self::Fallback => "fallback",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Workers the pool should have, starting ones included.
    pub desired: u32,
    pub reason: Reason,
    /// Workers the jobs waiting and running call for: ⌈(pending + in flight) / slots⌉.
    pub backlog_workers: u32,
    /// Workers the forecast calls for, when there is a forecast.
    pub forecast_workers: Option<u32>,
    /// The forecast's upper-bound arrival rate over the lead time, jobs per second.
    pub upper_rate: Option<f64>,
}

/// A scaling policy.
pub trait Policy: Send {
    /// Name used in reports (`reactive`, `predictive`).
    fn name(&self) -> &'static str;
    /// Decides the pool size for this observation.
    fn decide(&mut self, obs: &Observation<'_>) -> Decision;
    /// The forecast behind the last decision, for policies that have one.
    fn forecast(&self) -> Option<&Forecast> {
        None
    }
}

/// Bounds of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Fewest workers. Default 1.
    pub min: u32,
    /// Most workers. Default 500.
    pub max: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { min: 1, max: 500 }
    }
}

impl Bounds {
    fn clamp(self, workers: u32) -> (u32, Option<Reason>) {
        if workers < self.min {
            (self.min, Some(Reason::Min))
        } else if workers > self.max {
            (self.max, Some(Reason::Max))
        } else {
            (workers, None)
        }
    }
}

/// ⌈(pending + in flight) / slots⌉: KEDA's NATS JetStream lag (`num_pending +
/// num_ack_pending`) against a per-replica target of one worker's slots.
pub fn backlog_workers(obs: &Observation<'_>) -> u32 {
    let slots = u64::from(obs.slots_per_worker.max(1));
    u32::try_from((obs.pending + obs.in_flight).div_ceil(slots)).unwrap_or(u32::MAX)
}

/// Tuning of [`Reactive`]; the defaults are Kubernetes' and KEDA's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReactiveConfig {
    pub bounds: Bounds,
    /// No change while |metric / target − 1| is at most this. Default 0.1.
    pub tolerance: f64,
    /// A scale-down takes the highest recommendation of this many seconds. Default 300.
    pub scale_down_window_secs: i64,
    /// A scale-up reaches at most this factor of the current count… Default 2.
    pub scale_up_factor: f64,
    /// …or this many replicas, whichever is more. Default 4.
    pub scale_up_min: u32,
}

impl Default for ReactiveConfig {
    fn default() -> Self {
        Self {
            bounds: Bounds::default(),
            tolerance: 0.1,
            scale_down_window_secs: 300,
            scale_up_factor: 2.0,
            scale_up_min: 4,
        }
    }
}

/// The Kubernetes HPA's replica calculation for an external `AverageValue` metric (what a
/// KEDA `ScaledObject` creates) followed by the controller's normalization when
/// `spec.behavior` is unset, as KEDA leaves it: tolerance, a scale-down stabilization window
/// over the unnormalized recommendations, and the scale-up limit of max(2 × current, 4).
#[derive(Debug, Clone)]
pub struct Reactive {
    config: ReactiveConfig,
    recommendations: VecDeque<(i64, u32)>,
}

impl Reactive {
    pub fn new(config: ReactiveConfig) -> Self {
        Self {
            config,
            recommendations: VecDeque::new(),
        }
    }
}

impl Policy for Reactive {
    fn name(&self) -> &'static str {
        "reactive"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Decision {
        let cfg = &self.config;
        let backlog = backlog_workers(obs);
        let current = obs.current_workers;
        let decision = |desired, reason| Decision {
            desired,
            reason,
            backlog_workers: backlog,
            forecast_workers: None,
            upper_rate: None,
        };
        // The controller does not compute a metric outside the bounds; it moves inside first.
        if current > cfg.bounds.max {
            return decision(cfg.bounds.max, Reason::Max);
        }
        if current < cfg.bounds.min {
            return decision(cfg.bounds.min, Reason::Min);
        }
        let lag = (obs.pending + obs.in_flight) as f64;
        let target_per_pod = f64::from(obs.slots_per_worker.max(1));
        let ratio = lag / (target_per_pod * f64::from(current));
        let within_tolerance = (1.0 - ratio).abs() <= cfg.tolerance;
        let recommendation = if within_tolerance { current } else { backlog };

        let cutoff = obs.now - cfg.scale_down_window_secs;
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| at < cutoff)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((obs.now, recommendation));
        let stabilized = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(recommendation);

        let up_limit =
            ((cfg.scale_up_factor * f64::from(current)).ceil() as u32).max(cfg.scale_up_min);
        let max_allowed = cfg.bounds.max.min(up_limit);
        if stabilized < cfg.bounds.min {
            return decision(cfg.bounds.min, Reason::Min);
        }
        if stabilized > max_allowed {
            let reason = if max_allowed == cfg.bounds.max {
                Reason::Max
            } else {
                Reason::Backlog
            };
            return decision(max_allowed, reason);
        }
        let held = stabilized > recommendation || (within_tolerance && backlog != current);
        let reason = if held {
            Reason::Stabilizing
        } else {
            Reason::Backlog
        };
        decision(stabilized, reason)
    }
}

/// Tuning of [`Predictive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictiveConfig {
    pub bounds: Bounds,
    /// Seconds from starting a worker to its first job: the lead time the forecast must
    /// cover. Default 90.
    pub lead_secs: i64,
    /// A scale-down takes the highest target of this many seconds: the target must stay low
    /// for the next decision too. Default 15.
    pub scale_down_window_secs: i64,
    /// A scale-down removes at most this share of the pool per decision (at least one
    /// worker). Default 0.5.
    pub scale_down_step: f64,
    /// The reactive rule used while there is no forecast.
    pub fallback: ReactiveConfig,
    pub forecast: ForecastConfig,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        Self {
            bounds: Bounds::default(),
            lead_secs: 90,
            scale_down_window_secs: 15,
            scale_down_step: 0.5,
            fallback: ReactiveConfig::default(),
            forecast: ForecastConfig::default(),
        }
    }
}

/// desired = clamp(max(backlog, ⌈upper forecast over the lead time × mean job seconds /
/// slots⌉), min, max): up at once, down after a window and by bounded steps; the reactive
/// rule while the forecast has too little history.
#[derive(Debug, Clone)]
pub struct Predictive {
    config: PredictiveConfig,
    forecaster: Forecaster,
    fallback: Reactive,
    targets: VecDeque<(i64, u32)>,
}

impl Predictive {
    pub fn new(config: PredictiveConfig) -> Self {
        Self {
            forecaster: Forecaster::new(config.forecast.clone()),
            fallback: Reactive::new(config.fallback),
            targets: VecDeque::new(),
            config,
        }
    }

    fn remember(&mut self, now: i64, target: u32) {
        let cutoff = now - self.config.scale_down_window_secs;
        while self.targets.front().is_some_and(|&(at, _)| at < cutoff) {
            self.targets.pop_front();
        }
        self.targets.push_back((now, target));
    }
}

impl Policy for Predictive {
    fn name(&self) -> &'static str {
        "predictive"
    }

    fn forecast(&self) -> Option<&Forecast> {
        self.forecaster.latest()
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Decision {
        let lead = self.config.lead_secs;
        self.forecaster.update(obs.history, obs.now);
        let upper_rate = self.forecaster.upper_rate_over(obs.history, obs.now, lead);
        let Some(upper_rate) = upper_rate else {
            let mut decision = self.fallback.decide(obs);
            decision.reason = Reason::Fallback;
            self.remember(obs.now, decision.desired);
            return decision;
        };
        let backlog = backlog_workers(obs);
        let slots = f64::from(obs.slots_per_worker.max(1));
        let forecast_workers = (upper_rate * obs.mean_job_secs / slots).ceil().max(0.0) as u32;
        let (raw, reason) = if forecast_workers >= backlog {
            (forecast_workers, Reason::Forecast)
        } else {
            (backlog, Reason::Backlog)
        };
        let (target, clamped) = self.config.bounds.clamp(raw);
        let mut reason = clamped.unwrap_or(reason);
        self.remember(obs.now, target);

        let current = obs.current_workers;
        let desired = if target >= current {
            target
        } else {
            let held = self.targets.iter().map(|&(_, t)| t).max().unwrap_or(target);
            let step = ((f64::from(current) * self.config.scale_down_step).floor() as u32).max(1);
            let floor = current.saturating_sub(step).max(self.config.bounds.min);
            let desired = held.max(floor).min(current);
            if desired > target {
                reason = Reason::Stabilizing;
            }
            desired
        };
        Decision {
            desired,
            reason,
            backlog_workers: backlog,
            forecast_workers: Some(forecast_workers),
            upper_rate: Some(upper_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        History::new(0, 300, 16)
    }

    fn obs(h: &History, now: i64, pending: u64, in_flight: u64, current: u32) -> Observation<'_> {
        Observation {
            now,
            pending,
            in_flight,
            live_slots: u64::from(current) * 4,
            slots_per_worker: 4,
            mean_job_secs: 30.0,
            current_workers: current,
            starting_workers: 0,
            history: h,
        }
    }

    #[test]
    fn the_reactive_policy_holds_within_the_ten_percent_tolerance() {
        let h = history();
        let mut reactive = Reactive::new(ReactiveConfig::default());
        // 20 workers × 4 slots = 80: 86 outstanding is +7.5 %, 73 is −8.75 %
        let d = reactive.decide(&obs(&h, 0, 6, 80, 20));
        assert_eq!((d.desired, d.reason), (20, Reason::Stabilizing));
        assert_eq!(d.backlog_workers, 22);
        let d = reactive.decide(&obs(&h, 15, 0, 73, 20));
        assert_eq!((d.desired, d.reason), (20, Reason::Stabilizing));
        // 90 is +12.5 %: ⌈90 / 4⌉
        let d = reactive.decide(&obs(&h, 30, 10, 80, 20));
        assert_eq!((d.desired, d.reason), (23, Reason::Backlog));
    }

    #[test]
    fn the_reactive_policy_scales_up_at_most_to_twice_the_pool_or_four() {
        let h = history();
        let mut reactive = Reactive::new(ReactiveConfig::default());
        let d = reactive.decide(&obs(&h, 0, 1000, 40, 10));
        assert_eq!((d.desired, d.reason), (20, Reason::Backlog));
        let mut reactive = Reactive::new(ReactiveConfig::default());
        let d = reactive.decide(&obs(&h, 0, 1000, 4, 1));
        assert_eq!(d.desired, 4);
        let mut reactive = Reactive::new(ReactiveConfig::default());
        let d = reactive.decide(&obs(&h, 0, 10_000, 1600, 400));
        assert_eq!((d.desired, d.reason), (500, Reason::Max));
    }

    #[test]
    fn the_reactive_policy_scales_down_only_to_the_highest_recommendation_of_five_minutes() {
        let h = history();
        let mut reactive = Reactive::new(ReactiveConfig::default());
        assert_eq!(reactive.decide(&obs(&h, 0, 0, 80, 20)).desired, 20);
        // the load halves: the window still holds the 20 recommended at t = 0
        for t in (15..=300).step_by(15) {
            let d = reactive.decide(&obs(&h, t, 0, 40, 20));
            assert_eq!((d.desired, d.reason), (20, Reason::Stabilizing), "t = {t}");
        }
        // 300 s later the old recommendation has left the window, and the drop is not limited
        let d = reactive.decide(&obs(&h, 315, 0, 40, 20));
        assert_eq!((d.desired, d.reason), (10, Reason::Backlog));
    }

    #[test]
    fn the_reactive_policy_never_goes_below_the_minimum() {
        let h = history();
        let mut reactive = Reactive::new(ReactiveConfig::default());
        let d = reactive.decide(&obs(&h, 0, 0, 0, 1));
        assert_eq!((d.desired, d.reason), (1, Reason::Min));
    }

    #[test]
    fn the_predictive_policy_falls_back_to_reactive_without_history_and_says_so() {
        let h = history();
        let mut predictive = Predictive::new(PredictiveConfig::default());
        let d = predictive.decide(&obs(&h, 0, 100, 40, 10));
        assert_eq!(d.reason, Reason::Fallback);
        assert_eq!(d.desired, 20);
        assert_eq!(d.forecast_workers, None);
    }

    /// A predictive policy whose forecaster has a fixed forecast of `rate` jobs per second.
    fn predictive_with_rate(config: PredictiveConfig, rate: f64) -> (Predictive, History) {
        let mut p = Predictive::new(config);
        let forecast = Forecast {
            origin: 0,
            first_bucket_start: 0,
            bucket_secs: 300,
            mean: vec![rate * 300.0; 6],
            upper: vec![rate * 300.0; 6],
        };
        p.forecaster = Forecaster::pinned(p.config.forecast.clone(), forecast);
        (p, history())
    }

    #[test]
    fn the_predictive_policy_provisions_the_forecast_over_the_lead_time() {
        // 2 jobs/s × 30 s / 4 slots = 15 workers
        let (mut p, h) = predictive_with_rate(PredictiveConfig::default(), 2.0);
        let d = p.decide(&obs(&h, 10, 0, 8, 2));
        assert_eq!((d.desired, d.reason), (15, Reason::Forecast));
        assert_eq!(d.forecast_workers, Some(15));
        // a backlog beyond the forecast wins
        let d = p.decide(&obs(&h, 25, 100, 60, 15));
        assert_eq!((d.desired, d.reason), (40, Reason::Backlog));
    }

    #[test]
    fn the_predictive_policy_clamps_to_its_bounds_and_says_which() {
        let config = PredictiveConfig {
            bounds: Bounds { min: 3, max: 12 },
            ..PredictiveConfig::default()
        };
        let (mut p, h) = predictive_with_rate(config.clone(), 2.0);
        let d = p.decide(&obs(&h, 10, 0, 0, 5));
        assert_eq!((d.desired, d.reason), (12, Reason::Max));
        let (mut p, h) = predictive_with_rate(config, 0.0);
        let d = p.decide(&obs(&h, 10, 0, 0, 3));
        assert_eq!((d.desired, d.reason), (3, Reason::Min));
    }

    #[test]
    fn the_predictive_policy_scales_down_after_its_window_by_bounded_steps() {
        // forecast: 0.4 jobs/s → 3 workers; the pool has 40
        let config = PredictiveConfig {
            scale_down_window_secs: 60,
            scale_down_step: 0.25,
            ..PredictiveConfig::default()
        };
        let (mut p, h) = predictive_with_rate(config, 0.4);
        p.remember(0, 40);
        let mut current = 40;
        let mut path = Vec::new();
        for t in (15..=300).step_by(15) {
            let d = p.decide(&obs(&h, t, 0, 0, current));
            current = d.desired;
            path.push((t, d.desired, d.reason));
        }
        // held while the 40 of t = 0 is in the 60 s window
        assert!(
            path[..4]
                .iter()
                .all(|&(_, w, r)| w == 40 && r == Reason::Stabilizing)
        );
        // then down by a quarter per decision, at least one worker, to the forecast
        assert_eq!(path[4], (75, 30, Reason::Stabilizing));
        assert_eq!(path[5].1, 23);
        assert_eq!(path[6].1, 18);
        assert!(path.windows(2).all(|w| w[1].1 >= w[0].1 * 3 / 4));
        let last = path.last().unwrap();
        assert_eq!((last.1, last.2), (3, Reason::Forecast));
    }

    #[test]
    fn the_predictive_policy_scales_up_at_once() {
        let (mut p, h) = predictive_with_rate(PredictiveConfig::default(), 40.0);
        let d = p.decide(&obs(&h, 10, 0, 0, 1));
        assert_eq!(d.desired, 300);
    }
}
