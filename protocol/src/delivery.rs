//! The record of one webhook delivery, as the intake saw it.
//!
//! Intake publishes a [`DeliveryRecord`] for every delivery it accepts (on the org's
//! deliveries stream, or the receiving region's for an installation no org claims); the
//! control plane's recorder writes it, and the queued rows of its jobs, to the org's shard.
//!
//! A message of the deliveries stream holds the records of one or more deliveries: intake
//! publishes the records of deliveries accepted at the same time together, as a JSON array
//! ([`encode_batch`]), and a record that leaves alone as a bare JSON object — the form control
//! planes from before batching send and read, so a lightly loaded region stays readable to
//! them during a rolling deploy. Both read back as records ([`decode_records`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// The records of one message, and why those of its elements that are not records were left
/// out.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<DeliveryRecord>,
    /// One per element of a batch that does not read as a record (its index and the reason).
    pub rejected: Vec<(usize, serde_json::Error)>,
}

/// The records of one message: a JSON array of records, or a single record. A batch whose
/// every element is JSON reads even if some elements are not records (they are reported in
/// [`Decoded::rejected`], so one bad record cannot take the others with it); a payload that is
/// not JSON, or a single object that is not a record, is an error.
pub fn decode_records(payload: &[u8]) -> Result<Decoded, serde_json::Error> {
    if !is_batch(payload) {
        return serde_json::from_slice(payload).map(|r| Decoded {
            records: vec![r],
            rejected: Vec::new(),
        });
    }
    let elements: Vec<&RawValue> = serde_json::from_slice(payload)?;
    let mut out = Decoded {
        records: Vec::with_capacity(elements.len()),
        rejected: Vec::new(),
    };
    for (i, e) in elements.into_iter().enumerate() {
        match serde_json::from_str(e.get()) {
            Ok(r) => out.records.push(r),
            Err(why) => out.rejected.push((i, why)),
        }
    }
    Ok(out)
}

/// The delivery ids of a message's records, in order, reading nothing else of them (for
/// checking a stream against what intake answered).
pub fn delivery_ids(payload: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Id {
        delivery_id: String,
    }
    if is_batch(payload) {
        let ids: Vec<Id> = serde_json::from_slice(payload)?;
        Ok(ids.into_iter().map(|i| i.delivery_id).collect())
    } else {
        serde_json::from_slice::<Id>(payload).map(|i| vec![i.delivery_id])
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
        assert_eq!(back.records, vec![record("a"), record("b"), record("c")]);
        assert!(back.rejected.is_empty());
        assert_eq!(delivery_ids(&batch).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn a_message_of_one_record_reads_as_a_batch_of_one() {
        let single = serde_json::to_vec(&record("a")).unwrap();
        assert_eq!(decode_records(&single).unwrap().records, vec![record("a")]);
        assert_eq!(delivery_ids(&single).unwrap(), ["a"]);
        let one = encode_batch([single.as_slice()]);
        assert_eq!(decode_records(&one).unwrap().records, vec![record("a")]);
    }

    #[test]
    fn an_empty_batch_holds_no_records_and_garbage_is_an_error() {
        assert!(
            decode_records(&encode_batch([]))
                .unwrap()
                .records
                .is_empty()
        );
        assert!(delivery_ids(b" []").unwrap().is_empty());
        for bad in [&b""[..], b"[{", b"{\"delivery_id\": 1}", b"[1,", b"7"] {
            assert!(decode_records(bad).is_err(), "{bad:?}");
        }
        assert!(delivery_ids(b"[1,").is_err());
    }

    #[test]
    fn a_bad_element_of_a_batch_is_rejected_alone() {
        let a = serde_json::to_vec(&record("a")).unwrap();
        let c = serde_json::to_vec(&record("c")).unwrap();
        let batch = encode_batch([a.as_slice(), b"{\"delivery_id\": 1}", b"1", c.as_slice()]);
        let back = decode_records(&batch).unwrap();
        assert_eq!(back.records, vec![record("a"), record("c")]);
        let at: Vec<usize> = back.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [1, 2]);
    }
}
