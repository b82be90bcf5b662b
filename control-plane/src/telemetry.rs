//! The control plane's Prometheus metrics. Labels are bounded: routes are matched path
//! templates, never raw paths or org ids.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub deliveries: IntCounterVec,
    pub jobs_published: IntCounter,
    pub publish_duration: Histogram,
    pub recorded: IntCounterVec,
    pub recorder_batch: Histogram,
    pub redeliveries: IntCounterVec,
    pub usage_events: IntCounterVec,
    pub ingest_lag: Gauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("switchyard".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new("intake_deliveries_total", "Webhook deliveries by outcome"),
            &["outcome"],
        )?;
        let jobs_published =
            IntCounter::new("intake_jobs_published_total", "Jobs published to JetStream")?;
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "intake_publish_duration_seconds",
                "Time for JetStream to acknowledge a delivery",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let recorded = IntCounterVec::new(
            Opts::new(
                "recorder_records_total",
                "Delivery records written by the recorder",
            ),
            &["kind"],
        )?;
        let recorder_batch = Histogram::with_opts(
            HistogramOpts::new(
                "recorder_batch_duration_seconds",
                "Time to write one recorder batch",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let redeliveries = IntCounterVec::new(
            Opts::new(
                "github_redeliveries_total",
                "Redeliveries the reconciler asked GitHub for, by result",
            ),
            &["result"],
        )?;
        let usage_events = IntCounterVec::new(
            Opts::new(
                "billing_usage_events_total",
                "Usage events stored (each once), by metric",
            ),
            &["metric"],
        )?;
        let ingest_lag = Gauge::new(
            "billing_ingest_lag_seconds",
            "Age of the oldest usage event in the last batch the ingester stored",
        )?;
        for c in [
            Box::new(redeliveries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(usage_events.clone()),
            Box::new(ingest_lag.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(deliveries.clone()),
            Box::new(jobs_published.clone()),
            Box::new(publish_duration.clone()),
            Box::new(recorded.clone()),
            Box::new(recorder_batch.clone()),
        ] {
            registry.register(c)?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            deliveries,
            jobs_published,
            publish_duration,
            recorded,
            recorder_batch,
            redeliveries,
            usage_events,
            ingest_lag,
        })
    }
}
