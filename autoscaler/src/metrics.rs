//! The autoscaler's Prometheus metrics, every series labelled with its `region` (the
//! dashboards and alerts in deploy/observability use these names).

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::policy::Reason;

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// `switchyard_autoscaler_forecast_jobs_per_second{region}`
    pub forecast: GaugeVec,
    /// `switchyard_autoscaler_forecast_upper_jobs_per_second{region}`
    pub forecast_upper: GaugeVec,
    /// `switchyard_autoscaler_desired_workers{region}`
    pub desired: IntGaugeVec,
    /// `switchyard_autoscaler_actual_workers{region}`
    pub actual: IntGaugeVec,
    /// `switchyard_autoscaler_backlog_jobs{region}`
    pub backlog: IntGaugeVec,
    /// `switchyard_autoscaler_oldest_wait_seconds{region}`
    pub oldest_wait: GaugeVec,
    /// `switchyard_autoscaler_decisions_total{region,reason}`
    pub decisions: IntCounterVec,
    /// `switchyard_autoscaler_fallback{region}`
    pub fallback: IntGaugeVec,
    /// `switchyard_autoscaler_errors_total{region,stage}`
    pub errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("switchyard_autoscaler".into()), None)?;
        let region = &["region"];
        let forecast = GaugeVec::new(
            Opts::new(
                "forecast_jobs_per_second",
                "Expected job arrivals per second over a worker's start-up lead time (NaN without a forecast)",
            ),
            region,
        )?;
        let forecast_upper = GaugeVec::new(
            Opts::new(
                "forecast_upper_jobs_per_second",
                "Upper bound of job arrivals per second the pool is sized for (NaN without a forecast)",
            ),
            region,
        )?;
        let desired = IntGaugeVec::new(
            Opts::new("desired_workers", "Workers the last decision asked for"),
            region,
        )?;
        let actual = IntGaugeVec::new(
            Opts::new(
                "actual_workers",
                "Workers up and pulling jobs (heartbeating)",
            ),
            region,
        )?;
        let backlog = IntGaugeVec::new(
            Opts::new("backlog_jobs", "Jobs waiting plus jobs running"),
            region,
        )?;
        let oldest_wait = GaugeVec::new(
            Opts::new(
                "oldest_wait_seconds",
                "Seconds the oldest job no worker has taken yet has waited",
            ),
            region,
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Pool-size decisions by reason"),
            &["region", "reason"],
        )?;
        let fallback = IntGaugeVec::new(
            Opts::new(
                "fallback",
                "1 while the forecast has too little history and the reactive rule decides",
            ),
            region,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "errors_total",
                "Failed samples, actuations and state writes, by stage",
            ),
            &["region", "stage"],
        )?;
        registry.register(Box::new(forecast.clone()))?;
        registry.register(Box::new(forecast_upper.clone()))?;
        registry.register(Box::new(desired.clone()))?;
        registry.register(Box::new(actual.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(oldest_wait.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(fallback.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            forecast,
            forecast_upper,
            desired,
            actual,
            backlog,
            oldest_wait,
            decisions,
            fallback,
            errors,
        })
    }

    /// Creates every series of `region` at zero, so dashboards show them before the first
    /// decision of each reason.
    pub fn init_region(&self, region: &str) {
        for reason in Reason::ALL {
            self.decisions.with_label_values(&[region, reason.as_str()]);
        }
        for stage in ["sample", "actuate", "publish", "history"] {
            self.errors.with_label_values(&[region, stage]);
        }
        self.forecast.with_label_values(&[region]).set(f64::NAN);
        self.forecast_upper
            .with_label_values(&[region])
            .set(f64::NAN);
        self.fallback.with_label_values(&[region]);
    }
}
