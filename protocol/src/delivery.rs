//! The record of one webhook delivery, as the intake saw it.
//!
//! Intake publishes a [`DeliveryRecord`] for every delivery it accepts (on the org's
//! deliveries stream, or the receiving region's for an installation no org claims); the
//! control plane's recorder writes it, and the queued rows of its jobs, to the org's shard.
//!
//! A message of the deliveries stream holds the records of one or more deliveries: intake
//! publishes the records of deliveries accepted at the same time together, as a JSON array
//! ([`encode_batch`]). A message holding a single record as a JSON object reads as a batch of
//! one ([`decode_records`]).

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, InstallationId, OrgId};
use crate::job::JobSpec;
use crate::region::Region;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub delivery_id: DeliveryId,
    /// `None` when no org has claimed the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<InstallationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The region whose intake received it.
    pub received_in: Region,
    pub received_at: DateTime<Utc>,
    /// What happened to it: `queued` (jobs made), `ignored` (no rule matched),
    /// `unknown_installation`, `rate_limited`, `org_inactive`.
    pub outcome: String,
    pub jobs: Vec<JobSpec>,
}

/// Joins encoded records (each the JSON of one [`DeliveryRecord`]) into one message: a JSON
/// array of them.
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'[');
    for (i, r) in records.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.push(b']');
    out
}

/// The records of one message: a JSON array of records, or a single record.
pub fn decode_records(payload: &[u8]) -> Result<Vec<DeliveryRecord>, serde_json::Error> {
    if is_batch(payload) {
        serde_json::from_slice(payload)
    } else {
        serde_json::from_slice(payload).map(|r| vec![r])
    }
}

/// How many records a message holds, without decoding them.
pub fn count_records(payload: &[u8]) -> Result<usize, serde_json::Error> {
    if is_batch(payload) {
        serde_json::from_slice::<Vec<IgnoredAny>>(payload).map(|v| v.len())
    } else {
        serde_json::from_slice::<IgnoredAny>(payload).map(|_| 1)
    }
}

fn is_batch(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> DeliveryRecord {
        DeliveryRecord {
            delivery_id: DeliveryId(id.into()),
            org_id: Some(OrgId(1_000_001)),
            event: "issues".into(),
            action: Some("labeled".into()),
            installation_id: Some(InstallationId(42)),
            repo: Some("acme/widgets".into()),
            received_in: Region::new("us-east-1").unwrap(),
            received_at: "2026-12-06T12:00:00Z".parse().unwrap(),
            outcome: "ignored".into(),
            jobs: Vec::new(),
        }
    }

    #[test]
    fn a_batch_reads_back_as_its_records_in_order() {
        let encoded: Vec<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|id| serde_json::to_vec(&record(id)).unwrap())
            .collect();
        let batch = encode_batch(encoded.iter().map(Vec::as_slice));
        let back = decode_records(&batch).unwrap();
        assert_eq!(back, vec![record("a"), record("b"), record("c")]);
        assert_eq!(count_records(&batch).unwrap(), 3);
    }

    #[test]
    fn a_message_of_one_record_reads_as_a_batch_of_one() {
        let single = serde_json::to_vec(&record("a")).unwrap();
        assert_eq!(decode_records(&single).unwrap(), vec![record("a")]);
        assert_eq!(count_records(&single).unwrap(), 1);
        let one = encode_batch([single.as_slice()]);
        assert_eq!(decode_records(&one).unwrap(), vec![record("a")]);
    }

    #[test]
    fn an_empty_batch_holds_no_records_and_garbage_is_an_error() {
        assert_eq!(decode_records(&encode_batch([])).unwrap(), Vec::new());
        assert_eq!(count_records(b" []").unwrap(), 0);
        for bad in [&b""[..], b"[{", b"{\"delivery_id\": 1}", b"[1]"] {
            assert!(decode_records(bad).is_err(), "{bad:?}");
        }
        assert!(count_records(b"[1,").is_err());
    }
}
