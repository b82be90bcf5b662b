//! The control plane's Prometheus metrics. Labels are bounded: routes are matched path
//! templates, never raw paths or org ids.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub deliveries: IntCounterVec,
    pub jobs_published: IntCounter,
    pub publish_duration: Histogram,
    pub record_batch_size: Histogram,
    pub recorded: IntCounterVec,
    pub recorder_batch: Histogram,
    pub redeliveries: IntCounterVec,
    pub usage_events: IntCounterVec,
    pub ingest_lag: Gauge,
    pub shard_up: IntGaugeVec,
    pub rate_limit_decisions: IntCounterVec,
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
        let record_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "intake_record_batch_records",
                "Delivery records per message intake published on a deliveries stream",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )?;
        let recorded = IntCounterVec::new(
            Opts::new(
                "recorder_records_total",
                "Delivery records the recorder wrote (kind delivery or unclaimed), or dropped \
                 because they do not read as records (kind undecodable: a message, or an \
                 element of a batch)",
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
        let shard_up = IntGaugeVec::new(
            Opts::new(
                "shard_up",
                "Whether each shard answers its probes (0 while its circuit breaker is open)",
            ),
            &["shard"],
        )?;
        let rate_limit_decisions = IntCounterVec::new(
            Opts::new(
                "rate_limit_decisions_total",
                "Rate-limit decisions by limit (api, webhook) and decision (allowed, limited, \
                 unchecked: Redis did not answer and the limit was not applied)",
            ),
            &["limit", "decision"],
        )?;
        for c in [
            Box::new(rate_limit_decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(redeliveries.clone()),
            Box::new(shard_up.clone()),
            Box::new(usage_events.clone()),
            Box::new(ingest_lag.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_duration.clone()),
            Box::new(deliveries.clone()),
            Box::new(jobs_published.clone()),
            Box::new(publish_duration.clone()),
            Box::new(record_batch_size.clone()),
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
            record_batch_size,
            recorded,
            recorder_batch,
            redeliveries,
            usage_events,
            ingest_lag,
            shard_up,
            rate_limit_decisions,
        })
    }

    /// Counts a rate-limit decision of `limit` (`api` or `webhook`).
    pub fn count_rate_limit(&self, limit: &str, d: &crate::billing::limits::Decision) {
        use crate::billing::limits::Decision;
        let decision = match d {
            Decision::Allowed { .. } => "allowed",
            Decision::Limited { .. } => "limited",
            Decision::Unchecked => "unchecked",
        };
        self.rate_limit_decisions
            .with_label_values(&[limit, decision])
            .inc();
    }
}
