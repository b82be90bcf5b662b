//! The worker's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub jobs: IntCounterVec,
    pub in_flight: IntGauge,
    pub run_duration: Histogram,
    pub queue_wait: Histogram,
    pub capped: prometheus::IntCounter,
    pub held: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("switchyard_worker".into()), None)?;
        let jobs = IntCounterVec::new(
            Opts::new("jobs_total", "Job attempts by outcome"),
            &["outcome"],
        )?;
        let in_flight = IntGauge::new("jobs_in_flight", "Jobs running now")?;
        let run_duration = Histogram::with_opts(
            HistogramOpts::new("job_run_seconds", "Executor run time").buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0,
            ]),
        )?;
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new("job_queue_wait_seconds", "Time from webhook to job start").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0,
                ],
            ),
        )?;
        registry.register(Box::new(jobs.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(run_duration.clone()))?;
        registry.register(Box::new(queue_wait.clone()))?;
        let capped = prometheus::IntCounter::new(
            "jobs_capped_total",
            "Job deliveries held back because their org had as many jobs running as its plan allows",
        )?;
        registry.register(Box::new(capped.clone()))?;
        let held = IntGauge::new(
            "jobs_held",
            "Jobs this worker keeps until their org has room under its plan's cap",
        )?;
        registry.register(Box::new(held.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            jobs,
            in_flight,
            run_duration,
            queue_wait,
            capped,
            held,
        })
    }
}
