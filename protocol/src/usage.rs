//! Metered usage events: what the workers (and the intake) report for billing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::OrgId;

/// A metered quantity. Invoices price these per plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    WebhookDeliveries,
    JobSeconds,
    LlmTokens,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::WebhookDeliveries => "webhook_deliveries",
            Metric::JobSeconds => "job_seconds",
            Metric::LlmTokens => "llm_tokens",
        }
    }
}

/// One usage event; `event_id` makes it idempotent (written once however often it is sent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub event_id: String,
    pub org_id: OrgId,
    pub metric: Metric,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// Whole seconds a job ran, rounded up: a job that ran 0.2 s bills one second.
pub fn billable_seconds(started: DateTime<Utc>, finished: DateTime<Utc>) -> i64 {
    let ms = (finished - started).num_milliseconds().max(0);
    (ms + 999) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn job_seconds_round_up_to_whole_seconds() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(billable_seconds(t0, t0), 0);
        assert_eq!(billable_seconds(t0, t0 + Duration::milliseconds(1)), 1);
        assert_eq!(billable_seconds(t0, t0 + Duration::milliseconds(1000)), 1);
        assert_eq!(billable_seconds(t0, t0 + Duration::milliseconds(1001)), 2);
        assert_eq!(billable_seconds(t0, t0 - Duration::seconds(5)), 0);
    }
}
