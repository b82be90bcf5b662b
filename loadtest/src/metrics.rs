//! The target's own account of where a webhook's time went, from the control plane's
//! Prometheus metrics before and after a run: the mean time its handler took per webhook, the
//! mean time of that spent waiting for JetStream to acknowledge the delivery, and how many
//! delivery records shared a message of the deliveries stream.

use serde::{Deserialize, Serialize};

use crate::target::Target;

const HANDLER: &str = "switchyard_http_request_duration_seconds";
const HANDLER_LABELS: &[(&str, &str)] = &[("method", "POST"), ("route", "/webhooks/github")];
const PUBLISH: &str = "switchyard_intake_publish_duration_seconds";
const RECORDS: &str = "switchyard_intake_record_batch_records";

/// Means over a run, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerTimes {
    /// Webhooks the handler finished during the run.
    pub webhooks: f64,
    /// Mean time in the control plane, from the request's head to the answer.
    pub handler_mean_ms: f64,
    /// Mean time waiting for JetStream's acknowledgements (jobs, then the delivery record).
    pub publish_mean_ms: f64,
    /// Mean delivery records per message intake published on the deliveries stream (0 when
    /// the target does not report it).
    #[serde(default)]
    pub records_per_message: f64,
}

/// Sums and counts of the two histograms at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    handler_sum: f64,
    handler_count: f64,
    publish_sum: f64,
    publish_count: f64,
    records_sum: f64,
    records_count: f64,
}

fn labels_match(labels: &str, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| {
        labels
            .split(',')
            .any(|kv| kv.trim() == format!("{k}=\"{v}\""))
    })
}

/// The value of the series `name` whose labels include `want`, in Prometheus' text format.
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (metric, labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        (metric == name && labels_match(labels, want))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

impl Snapshot {
    pub fn parse(text: &str) -> Self {
        let get = |name: &str, labels: &[(&str, &str)]| sample(text, name, labels).unwrap_or(0.0);
        Self {
            handler_sum: get(&format!("{HANDLER}_sum"), HANDLER_LABELS),
            handler_count: get(&format!("{HANDLER}_count"), HANDLER_LABELS),
            publish_sum: get(&format!("{PUBLISH}_sum"), &[]),
            publish_count: get(&format!("{PUBLISH}_count"), &[]),
            records_sum: get(&format!("{RECORDS}_sum"), &[]),
            records_count: get(&format!("{RECORDS}_count"), &[]),
        }
    }

    /// What happened between `self` and `later`.
    pub fn until(&self, later: &Snapshot) -> Option<ServerTimes> {
        let n = later.handler_count - self.handler_count;
        let p = later.publish_count - self.publish_count;
        let m = later.records_count - self.records_count;
        if n <= 0.0 {
            return None;
        }
        Some(ServerTimes {
            webhooks: n,
            handler_mean_ms: (later.handler_sum - self.handler_sum) / n * 1000.0,
            publish_mean_ms: if p > 0.0 {
                (later.publish_sum - self.publish_sum) / p * 1000.0
            } else {
                0.0
            },
            records_per_message: if m > 0.0 {
                (later.records_sum - self.records_sum) / m
            } else {
                0.0
            },
        })
    }
}

/// Reads the target's `/metrics`.
#[derive(Clone, Debug)]
pub struct MetricsWatch {
    client: reqwest::Client,
    url: String,
}

impl MetricsWatch {
    pub fn new(target: &Target) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(5))
                .build()?,
            url: format!("{}/metrics", target.base_url),
        })
    }

    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let text = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Snapshot::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP switchyard_http_request_duration_seconds HTTP request latency by route
# TYPE switchyard_http_request_duration_seconds histogram
switchyard_http_request_duration_seconds_bucket{method="POST",route="/webhooks/github",le="0.001"} 3
switchyard_http_request_duration_seconds_sum{method="GET",route="/v1/orgs/{org}"} 9
switchyard_http_request_duration_seconds_count{method="GET",route="/v1/orgs/{org}"} 9
switchyard_http_request_duration_seconds_sum{method="POST",route="/webhooks/github"} 0.5
switchyard_http_request_duration_seconds_count{method="POST",route="/webhooks/github"} 100
switchyard_intake_publish_duration_seconds_sum 0.3
switchyard_intake_publish_duration_seconds_count 100
switchyard_intake_record_batch_records_sum 100
switchyard_intake_record_batch_records_count 40
"#;

    #[test]
    fn series_are_found_by_name_and_labels() {
        assert_eq!(
            sample(
                TEXT,
                "switchyard_http_request_duration_seconds_count",
                HANDLER_LABELS
            ),
            Some(100.0)
        );
        assert_eq!(
            sample(TEXT, "switchyard_intake_publish_duration_seconds_sum", &[]),
            Some(0.3)
        );
        assert_eq!(sample(TEXT, "missing", &[]), None);
    }

    #[test]
    fn means_come_from_the_differences_between_two_scrapes() {
        let before = Snapshot::default();
        let after = Snapshot::parse(TEXT);
        let t = before.until(&after).unwrap();
        assert_eq!(t.webhooks, 100.0);
        assert!((t.handler_mean_ms - 5.0).abs() < 1e-9);
        assert!((t.publish_mean_ms - 3.0).abs() < 1e-9);
        assert!((t.records_per_message - 2.5).abs() < 1e-9);
        assert_eq!(after.until(&after), None);
    }
}
