//! Signed GitHub webhooks with a real payload mix: every example of GitHub's own webhook
//! payloads (npm `@octokit/webhooks-examples`, `api.github.com/index.json`), each with its
//! `installation` set to the one the scenario bound, signed with HMAC-SHA256 as GitHub signs
//! them. A share of the requests is an issue labeled `bot`, which the default trigger rule
//! turns into an `agent` job; the rest are recorded with no job.
//!
//! Left out of the mix: `ping` (answered without touching JetStream) and the installation
//! lifecycle events (`installation`, `installation_repositories`, `installation_target`),
//! which would unbind or change the installation under test mid-run.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::mix;
use crate::engine::{Prepared, Scenario};

/// Events left out of the mix.
pub const EXCLUDED_EVENTS: &[&str] = &[
    "ping",
    "installation",
    "installation_repositories",
    "installation_target",
];

static X_GITHUB_EVENT: HeaderName = HeaderName::from_static("x-github-event");
static X_GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
static X_HUB_SIGNATURE_256: HeaderName = HeaderName::from_static("x-hub-signature-256");

#[derive(Deserialize)]
struct ExampleSet {
    name: String,
    examples: Vec<Value>,
}

/// One payload, ready to send: its event, body and signature.
#[derive(Clone, Debug)]
struct Signed {
    event: HeaderValue,
    body: Bytes,
    signature: HeaderValue,
}

/// The webhooks scenario.
#[derive(Debug)]
pub struct Webhooks {
    path: String,
    payloads: Vec<Signed>,
    job_payload: Signed,
    /// Out of 10,000 requests, how many are the job-making payload.
    job_share: u64,
    /// Delivery ids are `<run salt>-<counter>`: unique across the phases of a run, so that
    /// JetStream's duplicate window never drops one.
    salt: u64,
    next_delivery: AtomicU64,
    mean_body: usize,
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn with_installation(mut payload: Value, installation_id: i64) -> Value {
    if let Some(obj) = payload.as_object_mut() {
        match obj.get_mut("installation").and_then(Value::as_object_mut) {
            Some(inst) => {
                inst.insert("id".into(), json!(installation_id));
            }
            None => {
                obj.insert(
                    "installation".into(),
                    json!({ "id": installation_id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u" }),
                );
            }
        }
    }
    payload
}

/// The labeled-issue example with its label renamed `bot`.
fn labeled_bot(sets: &[ExampleSet]) -> anyhow::Result<Value> {
    let example = sets
        .iter()
        .filter(|s| s.name == "issues")
        .flat_map(|s| &s.examples)
        .find(|p| p.get("action").and_then(Value::as_str) == Some("labeled"))
        .context("the examples have no issues.labeled payload")?;
    let mut payload = example.clone();
    let label = json!({
        "id": 1_362_934_389,
        "node_id": "MDU6TGFiZWwxMzYyOTM0Mzg5",
        "url": "https://api.github.com/repos/Codertocat/Hello-World/labels/bot",
        "name": "bot",
        "color": "ededed",
        "default": false,
        "description": null,
    });
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("label".into(), label.clone());
        if let Some(labels) = obj
            .get_mut("issue")
            .and_then(|i| i.get_mut("labels"))
            .and_then(Value::as_array_mut)
        {
            labels.push(label);
        }
    }
    Ok(payload)
}

fn signed(secret: &[u8], event: &str, payload: &Value) -> anyhow::Result<Signed> {
    let body = serde_json::to_vec(payload)?;
    Ok(Signed {
        event: HeaderValue::from_str(event).with_context(|| format!("event name {event:?}"))?,
        signature: HeaderValue::from_str(&sign(secret, &body))?,
        body: Bytes::from(body),
    })
}

impl Webhooks {
    /// Loads the examples, sets their installation and signs them.
    pub fn load(
        examples: &Path,
        secret: &str,
        installation_id: i64,
        path: &str,
        job_share: f64,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(examples).with_context(|| {
            format!(
                "reading the webhook examples {} (run `make fixtures`)",
                examples.display()
            )
        })?;
        let sets: Vec<ExampleSet> =
            serde_json::from_str(&text).context("reading the webhook examples")?;
        let secret = secret.as_bytes();
        let mut payloads = Vec::new();
        for set in sets
            .iter()
            .filter(|s| !EXCLUDED_EVENTS.contains(&s.name.as_str()))
        {
            for example in &set.examples {
                let payload = with_installation(example.clone(), installation_id);
                payloads.push(signed(secret, &set.name, &payload)?);
            }
        }
        if payloads.is_empty() {
            bail!("{} holds no webhook examples", examples.display());
        }
        let job_payload = signed(
            secret,
            "issues",
            &with_installation(labeled_bot(&sets)?, installation_id),
        )?;
        if !(0.0..=1.0).contains(&job_share) {
            bail!("the job share must be between 0 and 1, not {job_share}");
        }
        let mean_body = payloads.iter().map(|p| p.body.len()).sum::<usize>() / payloads.len();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a share in [0, 1] times 10,000"
        )]
        let job_share = (job_share * 10_000.0).round() as u64;
        Ok(Self {
            path: path.to_owned(),
            payloads,
            job_payload,
            job_share,
            salt: rand::random(),
            next_delivery: AtomicU64::new(0),
            mean_body,
        })
    }

    /// How many distinct payloads the mix holds.
    pub fn payload_count(&self) -> usize {
        self.payloads.len()
    }
}

impl Scenario for Webhooks {
    fn name(&self) -> String {
        format!(
            "webhooks ({} real payloads, mean {} B; {:.1}% issues labeled bot)",
            self.payloads.len(),
            self.mean_body,
            // A share out of 10,000, shown as a percentage.
            self.job_share as f64 / 100.0
        )
    }

    fn request(&self, seq: u64) -> Prepared {
        let h = mix::spread(seq ^ self.salt);
        let (kind, p) = if h % 10_000 < self.job_share {
            ("webhook (job)", &self.job_payload)
        } else {
            (
                "webhook",
                &self.payloads[usize::try_from((h >> 16) % self.payloads.len() as u64)
                    .expect("an index below the payload count fits usize")],
            )
        };
        let n = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let delivery = HeaderValue::from_str(&format!("{:016x}-{n:012x}", self.salt))
            .expect("hex digits are a valid header value");
        let request = Request::post(self.path.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "GitHub-Hookshot/loadtest")
            .header(&X_GITHUB_EVENT, p.event.clone())
            .header(&X_GITHUB_DELIVERY, delivery)
            .header(&X_HUB_SIGNATURE_256, p.signature.clone())
            .body(Full::new(p.body.clone()))
            .expect("a request of valid parts");
        Prepared {
            kind,
            request,
            counts_jobs: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn examples() -> tempfile::NamedTempFile {
        let sets = json!([
            {"name": "ping", "examples": [{"zen": "hi", "hook_id": 1}]},
            {"name": "installation", "examples": [{"action": "deleted", "installation": {"id": 5}}]},
            {"name": "issues", "examples": [
                {"action": "opened", "issue": {"number": 1, "labels": []}, "installation": {"id": 5, "node_id": "x"}},
                {"action": "labeled", "issue": {"number": 2, "labels": []}, "label": {"name": "bug"}},
            ]},
            {"name": "star", "examples": [{"action": "created"}]},
        ]);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, "{sets}").unwrap();
        f
    }

    #[test]
    fn the_signature_is_githubs() {
        // The example of GitHub's documentation on validating webhook deliveries.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn lifecycle_events_and_ping_are_left_out_and_installations_set() {
        let f = examples();
        let w = Webhooks::load(f.path(), "s3cret", 77, "/webhooks/github", 0.0).unwrap();
        assert_eq!(w.payload_count(), 3);
        for p in &w.payloads {
            let v: Value = serde_json::from_slice(&p.body).unwrap();
            assert_eq!(v["installation"]["id"], 77);
            assert_ne!(p.event, "ping");
            assert_ne!(p.event, "installation");
            assert_eq!(
                p.signature.to_str().unwrap(),
                sign(b"s3cret", &p.body),
                "signed over the exact bytes sent"
            );
        }
    }

    #[test]
    fn the_job_payload_is_an_issue_labeled_bot() {
        let f = examples();
        let w = Webhooks::load(f.path(), "s", 9, "/webhooks/github", 1.0).unwrap();
        let p = w.request(0);
        assert_eq!(p.kind, "webhook (job)");
        let body = &w.job_payload.body;
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["action"], "labeled");
        assert_eq!(v["label"]["name"], "bot");
        assert_eq!(v["installation"]["id"], 9);
        assert_eq!(p.request.headers()["x-github-event"], "issues");
    }

    #[test]
    fn requests_carry_githubs_headers_and_unique_deliveries() {
        let f = examples();
        let w = Webhooks::load(f.path(), "s", 9, "/api/github/webhooks", 0.5).unwrap();
        let a = w.request(1);
        let b = w.request(1);
        assert_eq!(a.request.uri().path(), "/api/github/webhooks");
        for h in [
            "x-github-event",
            "x-hub-signature-256",
            "x-github-delivery",
            "content-type",
        ] {
            assert!(a.request.headers().contains_key(h), "{h}");
        }
        assert_ne!(
            a.request.headers()["x-github-delivery"],
            b.request.headers()["x-github-delivery"]
        );
        let jobs = (0..10_000)
            .filter(|i| w.request(*i).kind == "webhook (job)")
            .count();
        assert!((4_500..5_500).contains(&jobs), "{jobs}");
    }

    #[test]
    fn a_share_out_of_range_is_refused() {
        let f = examples();
        assert!(Webhooks::load(f.path(), "s", 9, "/w", 1.5).is_err());
    }
}
