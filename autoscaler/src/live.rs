//! The live loop of one region: every `sampler.every` a [`Sample`] (arrivals into the
//! [`History`], backlog and oldest wait into the metrics); every `policy.decide_every` an
//! [`Observation`] for the predictive policy (which runs the reactive rule while its
//! forecast lacks history), its [`Decision`](crate::policy::Decision) logged, exported,
//! carried out by the actuator and published as the region's
//! [`PoolState`]; every `history.save_every`, and at shutdown, the history saved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::Region;
use protocol::autoscale::{LastDecision, PoolState};
use protocol::service::nats::{self, Nats};
use protocol::service::ops::{self, ReadyCheck};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::actuator::Actuator;
use crate::config::Config;
use crate::forecast::History;
use crate::metrics::Metrics;
use crate::policy::{Observation, Policy, Predictive, Reason};
use crate::sampler::{Sample, Sampler, record_spread};
use crate::store::{SavedHistory, Store};

/// How long the ops server may take to finish its requests at shutdown.
const OPS_DRAIN: Duration = Duration::from_secs(5);

/// One region's autoscaler.
#[derive(Debug)]
pub struct Autoscaler {
    cfg: Config,
    region: Region,
    nats: Nats,
    sampler: Sampler,
    actuator: Actuator,
    policy: Predictive,
    history: History,
    /// The stream's last sequence and the unix second of the last sample counted.
    last: Option<(u64, i64)>,
    store: Store,
    metrics: Metrics,
    /// Jobs counted since the last decision, and when that decision's sample was taken.
    arrivals: u64,
    decided: Option<(Instant, DateTime<Utc>)>,
    saved: Instant,
    sampled_ok: Arc<AtomicBool>,
}

impl Autoscaler {
    /// Connects to NATS, prepares the region's streams and the autoscaler's buckets, loads
    /// the saved history and builds the actuator.
    pub async fn build(cfg: Config, metrics: Metrics) -> Result<Self, Error> {
        let region = cfg.region.name.clone();
        let nats = nats::connect(&cfg.nats, &format!("autoscaler {region}")).await?;
        nats::ensure_region_streams(&nats, &region, &cfg.nats).await?;
        let store = Store::open(&nats).await?;
        let actuator = Actuator::from_config(&cfg).await?;
        let predictive = cfg.policy.predictive();
        let forecast = predictive.forecast.clone();
        let retain = forecast.retain_buckets();
        let fresh = || {
            let now = Utc::now().timestamp();
            History::new(
                now - now.rem_euclid(forecast.bucket_secs),
                forecast.bucket_secs,
                retain,
            )
        };
        let (history, last) = match store.load_history(&region).await {
            Ok(Some(saved)) if saved.history.bucket_secs == forecast.bucket_secs => {
                let history = History::restore(saved.history, retain);
                tracing::info!(
                    %region,
                    buckets = history.completed() - history.first_kept(),
                    since = saved.sampled_at,
                    "restored the arrival history"
                );
                (history, Some((saved.last_sequence, saved.sampled_at)))
            }
            Ok(Some(_)) => {
                tracing::warn!(%region, "the saved history has another bucket width; starting afresh");
                (fresh(), None)
            }
            Ok(None) => (fresh(), None),
            Err(e) => {
                tracing::warn!(%region, error = %e, "cannot load the saved history; starting afresh");
                (fresh(), None)
            }
        };
        metrics.init_region(region.as_str());
        Ok(Self {
            sampler: Sampler::new(nats.clone(), region.clone()),
            policy: Predictive::new(predictive),
            region,
            nats,
            actuator,
            history,
            last,
            store,
            metrics,
            arrivals: 0,
            decided: None,
            saved: Instant::now(),
            sampled_ok: Arc::new(AtomicBool::new(false)),
            cfg,
        })
    }

    /// Ready when NATS is connected and the last sample succeeded.
    pub fn readiness(&self) -> ReadyCheck {
        let client = self.nats.client.clone();
        let sampled = self.sampled_ok.clone();
        Arc::new(move || {
            let client = client.clone();
            let sampled = sampled.clone();
            Box::pin(async move {
                if !matches!(
                    client.connection_state(),
                    async_nats::connection::State::Connected
                ) {
                    return Err("nats".to_owned());
                }
                if !sampled.load(Ordering::Relaxed) {
                    return Err("sampler".to_owned());
                }
                Ok(())
            })
        })
    }

    /// One sample; a decision when one is due. Returns the state published, if any.
    pub async fn step(&mut self) -> Option<PoolState> {
        let region = self.region.as_str();
        let sample = match self.sampler.sample().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%region, error = %e, "sample failed");
                self.metrics
                    .errors
                    .with_label_values(&[region, "sample"])
                    .inc();
                self.sampled_ok.store(false, Ordering::Relaxed);
                return None;
            }
        };
        self.sampled_ok.store(true, Ordering::Relaxed);
        let now = sample.at.timestamp();
        if let Some((sequence, at)) = self.last {
            // A stream that was deleted and made anew counts from zero again.
            let jobs = sample
                .last_sequence
                .checked_sub(sequence)
                .unwrap_or(sample.last_sequence);
            record_spread(&mut self.history, at, now, jobs as f64);
            self.arrivals += jobs;
        }
        self.last = Some((sample.last_sequence, now));
        let m = &self.metrics;
        m.backlog
            .with_label_values(&[region])
            .set(gauge(sample.pending + sample.in_flight));
        m.oldest_wait
            .with_label_values(&[region])
            .set(sample.oldest_wait_secs);
        m.actual
            .with_label_values(&[region])
            .set(i64::from(sample.live_workers()));

        let due = self
            .decided
            .is_none_or(|(at, _)| at.elapsed() >= self.cfg.policy.decide_every);
        let state = if due {
            self.decide(&sample).await
        } else {
            None
        };
        if self.saved.elapsed() >= self.cfg.history.save_every {
            self.save_history().await;
        }
        state
    }

    async fn decide(&mut self, sample: &Sample) -> Option<PoolState> {
        let region = self.region.as_str();
        let current = match self.actuator.current().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%region, error = %e, "cannot read the pool size; no decision");
                self.metrics
                    .errors
                    .with_label_values(&[region, "actuate"])
                    .inc();
                return None;
            }
        };
        let live = sample.live_workers();
        let current = current.unwrap_or(live);
        let policy_cfg = &self.cfg.policy;
        let now = sample.at.timestamp();
        let obs = Observation {
            now,
            pending: sample.pending,
            in_flight: sample.in_flight,
            live_slots: sample.live_slots(),
            slots_per_worker: sample
                .slots_per_worker()
                .unwrap_or(policy_cfg.slots_per_worker),
            mean_job_secs: sample
                .mean_job_secs()
                .unwrap_or(policy_cfg.job_duration.as_secs_f64()),
            current_workers: current,
            starting_workers: current.saturating_sub(live),
            history: &self.history,
        };
        let decision = self.policy.decide(&obs);
        let fallback = decision.reason == Reason::Fallback;
        let lead = i64::try_from(policy_cfg.lead_time.as_secs()).unwrap_or(i64::MAX);
        let forecast = if fallback {
            None
        } else {
            self.policy
                .forecast()
                .and_then(|f| f.mean_rate_between(now, now.saturating_add(lead)))
        };
        tracing::info!(
            %region,
            current,
            desired = decision.desired,
            reason = %decision.reason,
            pending = obs.pending,
            in_flight = obs.in_flight,
            live_workers = live,
            starting = obs.starting_workers,
            backlog_workers = decision.backlog_workers,
            forecast_workers = decision.forecast_workers,
            upper_rate = decision.upper_rate,
            mean_job_secs = obs.mean_job_secs,
            "decision"
        );
        let m = &self.metrics;
        m.desired
            .with_label_values(&[region])
            .set(i64::from(decision.desired));
        m.decisions
            .with_label_values(&[region, decision.reason.as_str()])
            .inc();
        m.fallback
            .with_label_values(&[region])
            .set(i64::from(fallback));
        m.forecast
            .with_label_values(&[region])
            .set(forecast.unwrap_or(f64::NAN));
        m.forecast_upper
            .with_label_values(&[region])
            .set(decision.upper_rate.unwrap_or(f64::NAN));
        if let Err(e) = self.actuator.scale(decision.desired).await {
            tracing::warn!(%region, error = %e, desired = decision.desired, "cannot resize the pool");
            m.errors.with_label_values(&[region, "actuate"]).inc();
        }

        let arrival_rate = match self.decided {
            Some((_, at)) => {
                let secs = (sample.at - at).num_milliseconds() as f64 / 1000.0;
                if secs > 0.0 {
                    self.arrivals as f64 / secs
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.arrivals = 0;
        self.decided = Some((Instant::now(), sample.at));
        let state = PoolState {
            region: self.region.clone(),
            actual: live,
            desired: decision.desired,
            starting: obs.starting_workers,
            actuator: self.actuator.kind().to_owned(),
            min_workers: policy_cfg.min_workers,
            max_workers: policy_cfg.max_workers,
            arrival_jobs_per_second: arrival_rate,
            forecast_jobs_per_second: forecast,
            forecast_upper: decision.upper_rate,
            backlog: sample.pending + sample.in_flight,
            pending: sample.pending,
            in_flight: sample.in_flight,
            oldest_wait_seconds: sample.oldest_wait_secs,
            live_slots: obs.live_slots,
            mean_job_seconds: obs.mean_job_secs,
            last_decision: LastDecision {
                at: sample.at,
                current,
                desired: decision.desired,
                reason: decision.reason.as_str().to_owned(),
            },
            fallback,
            updated_at: Utc::now(),
        };
        if let Err(e) = self.store.publish(&state).await {
            tracing::warn!(%region, error = %e, "cannot publish the pool state");
            self.metrics
                .errors
                .with_label_values(&[region, "publish"])
                .inc();
        }
        Some(state)
    }

    /// Saves the arrival history (with the stream position it counts up to).
    pub async fn save_history(&mut self) {
        self.saved = Instant::now();
        let Some((last_sequence, sampled_at)) = self.last else {
            return;
        };
        let saved = SavedHistory {
            last_sequence,
            sampled_at,
            history: self.history.snapshot(),
        };
        if let Err(e) = self.store.save_history(&self.region, &saved).await {
            tracing::warn!(region = %self.region, error = %e, "cannot save the arrival history");
            self.metrics
                .errors
                .with_label_values(&[self.region.as_str(), "history"])
                .inc();
        }
    }
}

/// Runs the region's autoscaler and its ops endpoints (`/healthz`, `/readyz`, `/metrics`
/// on `ops`) until `shutdown`; then saves the history. Workers keep running: a restarted
/// autoscaler takes the pool over as it is.
pub async fn run(cfg: Config, ops: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let metrics = Metrics::new()?;
    let every = cfg.sampler.every;
    let mut scaler = Autoscaler::build(cfg, metrics.clone()).await?;
    let router = ops::router(metrics.registry.clone(), scaler.readiness());
    let ops_task = tokio::spawn(protocol::service::serve::serve(
        ops,
        router,
        shutdown.clone(),
        OPS_DRAIN,
    ));
    tracing::info!(
        region = %scaler.region,
        actuator = scaler.actuator.kind(),
        "autoscaler started"
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        scaler.step().await;
    }
    scaler.save_history().await;
    tracing::info!(region = %scaler.region, "autoscaler stopped");
    match ops_task.await {
        Ok(result) => result?,
        Err(e) => tracing::warn!(error = %e, "the ops server task failed"),
    }
    Ok(())
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
