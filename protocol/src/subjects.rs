//! NATS names: subjects, streams, durable consumers and KV buckets.
//!
//! Per region (and JetStream domain):
//!
//! | stream | subjects | retention | carries |
//! |---|---|---|---|
//! | `JOBS_<REGION>` | `jobs.<region>.<kind>.<org_id>` | work queue | jobs for the region's workers |
//! | `DELIVERIES_<REGION>` | `deliveries.<region>.shard.<shard> \| unclaimed` | limits (age) | what intake accepted, for the recorder: batches of records |
//! | `USAGE_<REGION>` | `usage.<region>.<org_id>` | limits (age) | usage events for the ingester |
//! | `DEAD_<REGION>` | `dead.<region>.<kind>.<org_id>` | limits (age) | jobs that exhausted their attempts |
//!
//! Stream names carry the region so that one server may hold several regions (tests, small
//! installs). A [`Names`] may carry a namespace that prefixes every name, so tests sharing a
//! server never see each other's streams.

use crate::ids::OrgId;
use crate::job::JobKind;
use crate::region::Region;

/// Durable consumer of the workers on a region's jobs stream.
pub const WORKERS_CONSUMER: &str = "workers";
/// Durable consumer of the control plane's delivery recorder.
pub const RECORDER_CONSUMER: &str = "recorder";
/// Durable consumer of the control plane's usage ingester.
pub const INGESTER_CONSUMER: &str = "ingester";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid NATS namespace {0:?}: use up to 24 lowercase letters and digits")]
pub struct InvalidNamespace(pub String);

/// Builds every NATS name, optionally inside a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    pub fn new(namespace: &str) -> Result<Self, InvalidNamespace> {
        let ok = namespace.len() <= 24
            && namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(Self {
                ns: namespace.to_owned(),
            })
        } else {
            Err(InvalidNamespace(namespace.to_owned()))
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn stream(&self, base: &str, region: &Region) -> String {
        if self.ns.is_empty() {
            format!("{base}_{}", region.token())
        } else {
            format!("{}_{base}_{}", self.ns.to_ascii_uppercase(), region.token())
        }
    }

    fn subject(&self, rest: std::fmt::Arguments<'_>) -> String {
        if self.ns.is_empty() {
            rest.to_string()
        } else {
            format!("{}.{rest}", self.ns)
        }
    }

    pub fn jobs_stream(&self, region: &Region) -> String {
        self.stream("JOBS", region)
    }
    pub fn jobs_subject(&self, region: &Region, kind: &JobKind, org: OrgId) -> String {
        self.subject(format_args!("jobs.{region}.{kind}.{org}"))
    }
    pub fn jobs_filter(&self, region: &Region) -> String {
        self.subject(format_args!("jobs.{region}.>"))
    }

    pub fn deliveries_stream(&self, region: &Region) -> String {
        self.stream("DELIVERIES", region)
    }
    /// Where intake publishes batches of delivery records: those of the orgs of one shard
    /// (`shard = Some`), or of installations no org has claimed (`None`).
    pub fn deliveries_subject(&self, region: &Region, shard: Option<&str>) -> String {
        match shard {
            Some(shard) => self.subject(format_args!("deliveries.{region}.shard.{shard}")),
            None => self.subject(format_args!("deliveries.{region}.unclaimed")),
        }
    }
    pub fn deliveries_filter(&self, region: &Region) -> String {
        self.subject(format_args!("deliveries.{region}.>"))
    }

    pub fn usage_stream(&self, region: &Region) -> String {
        self.stream("USAGE", region)
    }
    pub fn usage_subject(&self, region: &Region, org: OrgId) -> String {
        self.subject(format_args!("usage.{region}.{org}"))
    }
    pub fn usage_filter(&self, region: &Region) -> String {
        self.subject(format_args!("usage.{region}.>"))
    }

    pub fn dead_stream(&self, region: &Region) -> String {
        self.stream("DEAD", region)
    }
    pub fn dead_subject(&self, region: &Region, kind: &JobKind, org: OrgId) -> String {
        self.subject(format_args!("dead.{region}.{kind}.{org}"))
    }
    pub fn dead_filter(&self, region: &Region) -> String {
        self.subject(format_args!("dead.{region}.>"))
    }

    /// KV bucket of worker heartbeats (one per domain).
    pub fn workers_bucket(&self) -> String {
        if self.ns.is_empty() {
            "workers".to_owned()
        } else {
            format!("{}_workers", self.ns)
        }
    }

    /// KV bucket of the autoscalers' pool states, one key per region (one per domain); see
    /// [`crate::autoscale::PoolState`].
    pub fn autoscaler_bucket(&self) -> String {
        if self.ns.is_empty() {
            "autoscaler".to_owned()
        } else {
            format!("{}_autoscaler", self.ns)
        }
    }

    /// Core-NATS subject on which control planes announce changes that invalidate caches
    /// (memberships, installations, rules, the shard map).
    pub fn invalidation_subject(&self) -> String {
        self.subject(format_args!("switchyard.invalidate"))
    }

    /// Core-NATS subject to ask the workers of a region to stop a running job.
    pub fn cancel_subject(&self, region: &Region) -> String {
        self.subject(format_args!("switchyard.cancel.{region}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Region {
        Region::new("us-east-1").unwrap()
    }

    #[test]
    fn names_without_a_namespace_follow_the_design() {
        let n = Names::default();
        let kind = JobKind::new("agent").unwrap();
        assert_eq!(n.jobs_stream(&us()), "JOBS_US_EAST_1");
        assert_eq!(
            n.jobs_subject(&us(), &kind, OrgId(42)),
            "jobs.us-east-1.agent.42"
        );
        assert_eq!(n.jobs_filter(&us()), "jobs.us-east-1.>");
        assert_eq!(n.usage_subject(&us(), OrgId(42)), "usage.us-east-1.42");
        assert_eq!(
            n.deliveries_subject(&us(), None),
            "deliveries.us-east-1.unclaimed"
        );
        assert_eq!(
            n.deliveries_subject(&us(), Some("us-east-1-0")),
            "deliveries.us-east-1.shard.us-east-1-0"
        );
        assert_eq!(n.dead_stream(&us()), "DEAD_US_EAST_1");
        assert_eq!(n.workers_bucket(), "workers");
        assert_eq!(n.autoscaler_bucket(), "autoscaler");
    }

    #[test]
    fn a_namespace_prefixes_every_name() {
        let n = Names::new("t1a2").unwrap();
        let kind = JobKind::new("agent").unwrap();
        assert_eq!(n.jobs_stream(&us()), "T1A2_JOBS_US_EAST_1");
        assert_eq!(
            n.jobs_subject(&us(), &kind, OrgId(1)),
            "t1a2.jobs.us-east-1.agent.1"
        );
        assert_eq!(n.workers_bucket(), "t1a2_workers");
        assert_eq!(n.autoscaler_bucket(), "t1a2_autoscaler");
        assert_eq!(n.invalidation_subject(), "t1a2.switchyard.invalidate");
    }

    #[test]
    fn namespaces_that_would_break_names_are_refused() {
        for bad in ["T1", "a.b", "a-b", "a b", "x>", &"a".repeat(25)] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
