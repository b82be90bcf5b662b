//! Jobs: the message a worker consumes and the state machine every job follows.
//!
//! ```text
//! queued ──► running ──► succeeded
//!   │  ▲        │  ├───► failed ──┐
//!   │  └────────┘  ├───► dead ────┤  (retry by API)
//!   │   (backoff)  └───► cancelled┤
//!   ├──► cancelled                │
//!   ├──► skipped_quota            │
//!   ◄─────────────────────────────┘
//! ```
//! Every transition is recorded as a `job_event` row; [`JobStatus::can_become`] is the one
//! place that says which are legal.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, InstallationId, JobId, OrgId, RuleId};
use crate::region::Region;

/// What a job does, as named by trigger rules (`agent`, `review`, …). Lowercase letters,
/// digits, `-` and `_`; at most 32 characters, since it appears in subjects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobKind(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid job kind {0:?}: use 1-32 lowercase letters, digits, '-' or '_'")]
pub struct InvalidJobKind(pub String);

impl JobKind {
    pub fn new(kind: impl Into<String>) -> Result<Self, InvalidJobKind> {
        let kind = kind.into();
        let ok = !kind.is_empty()
            && kind.len() <= 32
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(kind))
        } else {
            Err(InvalidJobKind(kind))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobKind {
    type Err = InvalidJobKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for JobKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobKind::new(s).map_err(serde::de::Error::custom)
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    SkippedQuota,
    Cancelled,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {from} job cannot become {to}")]
pub struct IllegalTransition {
    pub from: JobStatus,
    pub to: JobStatus,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::SkippedQuota,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::SkippedQuota => "skipped_quota",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal job never runs again unless someone retries it by hand.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// The one table of legal transitions.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Queued, Running | Cancelled | SkippedQuota)
                | (Running, Succeeded | Failed | Dead | Cancelled | Queued)
                | (Failed | Dead | Cancelled, Queued)
        )
    }

    pub fn transition(self, to: JobStatus) -> Result<JobStatus, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What the job acts on: the issue or pull request the event was about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub number: i64,
    pub title: String,
    /// The issue or pull request body, cut to [`Target::MAX_BODY`] bytes.
    pub body: String,
    pub url: String,
    /// Head commit of a pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
}

impl Target {
    pub const MAX_BODY: usize = 16 * 1024;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Issue,
    PullRequest,
}

/// Everything a worker needs to run one job; also what the control plane records as the
/// job's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: JobId,
    pub org_id: OrgId,
    /// The org's home region, whose workers run the job.
    pub region: Region,
    pub kind: JobKind,
    pub delivery_id: DeliveryId,
    pub rule_id: RuleId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<InstallationId>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `owner/name` of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// What matched: the label name or the comment's command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub created_at: DateTime<Utc>,
    /// How many times the job was re-queued by hand (`POST …/retry`).
    #[serde(default)]
    pub requeue: u32,
    /// The most jobs of this org that may run at once across the region's workers (from the
    /// org's plan); no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Job seconds the org may use per calendar month (UTC) when its plan's included minutes
    /// are a hard limit; beyond them the job is `skipped_quota`. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_seconds_quota: Option<i64>,
}

/// A message on a region's jobs stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobMessage {
    /// Run this job.
    Run(JobSpec),
}

impl JobMessage {
    pub fn spec(&self) -> &JobSpec {
        match self {
            JobMessage::Run(spec) => spec,
        }
    }
}

/// A request to the workers of a region to stop a running job (published on
/// [`crate::subjects::Names::cancel_subject`] when a running job is cancelled by API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelNotice {
    pub job_id: JobId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn the_transition_table_is_exactly_the_documented_one() {
        let legal = [
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, SkippedQuota),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Dead),
            (Running, Cancelled),
            (Running, Queued),
            (Failed, Queued),
            (Dead, Queued),
            (Cancelled, Queued),
        ];
        for from in JobStatus::ALL {
            for to in JobStatus::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn succeeded_and_skipped_jobs_are_final() {
        for to in JobStatus::ALL {
            assert!(!Succeeded.can_become(to));
            assert!(!SkippedQuota.can_become(to));
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn only_queued_and_running_are_not_terminal() {
        let live: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        assert_eq!(live, vec![Queued, Running]);
    }

    #[test]
    fn job_kinds_must_be_subject_safe() {
        assert!(JobKind::new("agent").is_ok());
        assert!(JobKind::new("code-review_2").is_ok());
        for bad in ["", "Agent", "a.b", "a b", "a>", "*", &"k".repeat(33)] {
            assert!(JobKind::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_message_is_tagged_with_its_type() {
        let spec = JobSpec {
            job_id: JobId::from("job_1"),
            org_id: OrgId(1_000_001),
            region: Region::new("us-east-1").unwrap(),
            kind: JobKind::new("agent").unwrap(),
            delivery_id: DeliveryId::from("d"),
            rule_id: RuleId::from("default"),
            installation_id: Some(InstallationId(42)),
            event: "issues".into(),
            action: Some("labeled".into()),
            repo: Some("octo/repo".into()),
            target: None,
            trigger: Some("bot".into()),
            sender: None,
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            requeue: 0,
            job_seconds_quota: None,
            max_concurrent: Some(4),
        };
        let msg = JobMessage::Run(spec.clone());
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["type"], "run");
        assert_eq!(json["org_id"], 1_000_001);
        let back: JobMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back.spec(), &spec);
    }
}
