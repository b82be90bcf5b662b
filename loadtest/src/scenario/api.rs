//! Org API reads with an access token (JWT), as an org's dashboard makes them: the org,
//! its members, installations, trigger rules and jobs, in turn.
//!
//! Onboarding bursts: `POST /v1/orgs` with the operator's token, each with a slug of its own.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde_json::json;

use crate::engine::{Prepared, Scenario};

/// The routes read: their name for `--routes`, path suffix, and the kind they are reported
/// under.
const READS: &[(&str, &str, &str)] = &[
    ("org", "", "GET /v1/orgs/{org}"),
    ("members", "/members", "GET /v1/orgs/{org}/members"),
    (
        "installations",
        "/github/installations",
        "GET /v1/orgs/{org}/github/installations",
    ),
    ("rules", "/rules", "GET /v1/orgs/{org}/rules"),
    ("jobs", "/jobs", "GET /v1/orgs/{org}/jobs"),
];

/// The org API reads scenario.
#[derive(Debug)]
pub struct ApiReads {
    paths: Vec<(String, &'static str)>,
    authorization: HeaderValue,
}

impl ApiReads {
    /// Every route in turn.
    pub fn new(org_id: i64, access_token: &str) -> anyhow::Result<Self> {
        Self::with_routes(org_id, access_token, &[])
    }

    /// The routes named in `routes` (by name: org, members, installations, rules, jobs) in
    /// turn; all of them when `routes` is empty.
    pub fn with_routes(org_id: i64, access_token: &str, routes: &[String]) -> anyhow::Result<Self> {
        if let Some(bad) = routes
            .iter()
            .find(|r| !READS.iter().any(|(name, ..)| *name == r.as_str()))
        {
            anyhow::bail!("unknown route {bad:?} (org, members, installations, rules, jobs)");
        }
        Ok(Self {
            paths: READS
                .iter()
                .filter(|(name, ..)| {
                    routes.is_empty() || routes.iter().any(|r| r.as_str() == *name)
                })
                .map(|(_, suffix, kind)| (format!("/v1/orgs/{org_id}{suffix}"), *kind))
                .collect(),
            authorization: HeaderValue::from_str(&format!("Bearer {access_token}"))?,
        })
    }
}

impl Scenario for ApiReads {
    fn name(&self) -> String {
        format!("org API reads ({} routes, JWT)", self.paths.len())
    }

    fn request(&self, seq: u64) -> Prepared {
        let (path, kind) = &self.paths[usize::try_from(seq % self.paths.len() as u64)
            .expect("an index below the route count fits usize")];
        Prepared {
            kind,
            request: Request::get(path.as_str())
                .header(AUTHORIZATION, self.authorization.clone())
                .body(Full::new(Bytes::new()))
                .expect("a request of valid parts"),
            counts_jobs: false,
        }
    }
}

/// The onboarding scenario.
#[derive(Debug)]
pub struct Onboarding {
    authorization: HeaderValue,
    region: String,
    run_id: String,
    next: AtomicU64,
}

impl Onboarding {
    pub fn new(operator_token: &str, region: &str, run_id: &str) -> anyhow::Result<Self> {
        Ok(Self {
            authorization: HeaderValue::from_str(&format!("Bearer {operator_token}"))?,
            region: region.to_owned(),
            run_id: run_id.to_owned(),
            next: AtomicU64::new(0),
        })
    }
}

impl Scenario for Onboarding {
    fn name(&self) -> String {
        "onboarding (POST /v1/orgs)".into()
    }

    fn request(&self, _seq: u64) -> Prepared {
        // Slugs are unique across the phases of a run: `lt-<run>-<n>`, at most 39 characters.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slug = format!("lt-{}-{n}", self.run_id);
        let body = json!({
            "slug": slug,
            "name": format!("Load test {slug}"),
            "region": self.region,
            "plan": "team",
            "owner_email": format!("owner@{slug}.loadtest.example"),
        });
        Prepared {
            kind: "POST /v1/orgs",
            request: Request::post("/v1/orgs")
                .header(AUTHORIZATION, self.authorization.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("a request of valid parts"),
            counts_jobs: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_round_the_org_routes_with_the_token() {
        let s = ApiReads::new(1_000_000_007, "tok").unwrap();
        let paths: Vec<String> = (0..5)
            .map(|i| s.request(i).request.uri().path().to_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/v1/orgs/1000000007",
                "/v1/orgs/1000000007/members",
                "/v1/orgs/1000000007/github/installations",
                "/v1/orgs/1000000007/rules",
                "/v1/orgs/1000000007/jobs"
            ]
        );
        assert_eq!(s.request(5).request.uri().path(), "/v1/orgs/1000000007");
        assert_eq!(
            s.request(0).request.headers()["authorization"],
            "Bearer tok"
        );
    }

    #[test]
    fn reads_can_be_restricted_to_one_route() {
        let s = ApiReads::with_routes(1_000_000_007, "tok", &["org".into()]).unwrap();
        assert!((0..4).all(|i| s.request(i).request.uri().path() == "/v1/orgs/1000000007"));
        assert_eq!(s.request(0).kind, "GET /v1/orgs/{org}");
        assert!(ApiReads::with_routes(1, "tok", &["nope".into()]).is_err());
    }

    #[tokio::test]
    async fn onboarding_slugs_are_unique_and_valid() {
        let s = Onboarding::new("op", "us-east-1", "0123abcd").unwrap();
        let mut slugs = Vec::new();
        for _ in 0..3 {
            let (_, body) = s.request(0).request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            slugs.push(v["slug"].as_str().unwrap().to_owned());
        }
        assert_eq!(slugs, ["lt-0123abcd-0", "lt-0123abcd-1", "lt-0123abcd-2"]);
        assert!(slugs.iter().all(|s| s.len() <= 39));
    }
}
