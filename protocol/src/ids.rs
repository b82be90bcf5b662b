//! Typed identifiers.
//!
//! Org ids are integers allocated from shard ranges, so they say where an org's data lives.
//! Every other id is an opaque string; job ids are derived from what made the job, so a
//! redelivered webhook names the same job again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An organization's id: a positive 64-bit integer inside one shard range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub i64);

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for OrgId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>().map(OrgId)
    }
}

/// A GitHub App installation id, as GitHub numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(pub i64);

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// GitHub's `X-GitHub-Delivery` GUID; the same for every redelivery of one event.
    DeliveryId
);
string_id!(
    /// A trigger rule's id, unique within its org.
    RuleId
);
string_id!(
    /// A job's id: `job_` followed by 32 hex digits.
    JobId
);

impl JobId {
    /// The job made by `rule` from `delivery`: the same inputs always name the same job, so a
    /// redelivered webhook cannot make a second one.
    pub fn derive(org: OrgId, delivery: &DeliveryId, rule: &RuleId) -> Self {
        let mut h = Sha256::new();
        h.update(org.0.to_be_bytes());
        h.update(delivery.0.as_bytes());
        h.update([0]);
        h.update(rule.0.as_bytes());
        let digest = h.finalize();
        JobId(format!("job_{}", hex::encode(&digest[..16])))
    }
}

/// The JetStream message id of a job: `<delivery_id>:<rule_id>`, plus the retry number for
/// jobs re-queued by hand, so JetStream's duplicate window drops a redelivered webhook.
pub fn job_msg_id(delivery: &DeliveryId, rule: &RuleId, requeue: u32) -> String {
    if requeue == 0 {
        format!("{delivery}:{rule}")
    } else {
        format!("{delivery}:{rule}:requeue-{requeue}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_stable_for_the_same_delivery_and_rule() {
        let d = DeliveryId::from("72d3162e-cc78-11e3-81ab-4c9367dc0958");
        let a = JobId::derive(OrgId(7), &d, &RuleId::from("default"));
        let b = JobId::derive(OrgId(7), &d, &RuleId::from("default"));
        assert_eq!(a, b);
        assert!(a.0.starts_with("job_"));
        assert_eq!(a.0.len(), 4 + 32);
    }

    #[test]
    fn job_ids_differ_by_rule_delivery_and_org() {
        let d = DeliveryId::from("d1");
        let base = JobId::derive(OrgId(7), &d, &RuleId::from("r1"));
        assert_ne!(base, JobId::derive(OrgId(7), &d, &RuleId::from("r2")));
        assert_ne!(
            base,
            JobId::derive(OrgId(7), &DeliveryId::from("d2"), &RuleId::from("r1"))
        );
        assert_ne!(base, JobId::derive(OrgId(8), &d, &RuleId::from("r1")));
    }

    #[test]
    fn a_rule_id_boundary_cannot_be_faked_by_concatenation() {
        let a = JobId::derive(OrgId(1), &DeliveryId::from("ab"), &RuleId::from("c"));
        let b = JobId::derive(OrgId(1), &DeliveryId::from("a"), &RuleId::from("bc"));
        assert_ne!(a, b);
    }

    #[test]
    fn message_ids_carry_the_requeue_number() {
        let d = DeliveryId::from("d");
        let r = RuleId::from("r");
        assert_eq!(job_msg_id(&d, &r, 0), "d:r");
        assert_eq!(job_msg_id(&d, &r, 2), "d:r:requeue-2");
    }
}
