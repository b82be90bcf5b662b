//! The API rate limit of `/v1/orgs/{org}/…` (rules in [`crate::billing::limits`]).
//!
//! The org scope extractor ([`crate::http::extract::OrgScope`]) takes each request from its
//! org's and its API key's budgets once it knows both (after authentication, after the
//! org is found to be the caller's and to live in this region — a foreign caller, an unknown
//! org or a redirected request takes nothing). Over the limit it answers `429`. Under it, the
//! decision is left in the request's [`RateLimitSlot`], and [`headers`] writes it on the
//! response as `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
//! `RateLimit-Policy`, whatever the handler answers. When Redis did not answer, no header is
//! sent: there is no budget to report.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use protocol::OrgId;

use crate::auth::Principal;
use crate::billing::limits::{Decision, Limit};
use crate::config::PlanConfig;
use crate::error::{Error, RateLimit};
use crate::state::AppState;

/// What the extractor decided for this request, for [`headers`] to report.
#[derive(Clone, Debug, Default)]
pub struct RateLimitSlot(Arc<Mutex<Option<Budget>>>);

/// The budget nearest to running out after this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: Limit,
    pub remaining: u64,
    /// Whole seconds until the budget is full again (rounded up).
    pub reset: u64,
}

impl RateLimitSlot {
    fn set(&self, budget: Budget) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(budget);
        }
    }

    fn get(&self) -> Option<Budget> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}

/// Whole seconds, rounded up: a client that waits this long is allowed again.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

/// Takes the request from its org's and key's API budgets: `Ok` to go on (with the budget
/// left in `slot`), `Err(429)` over either. The platform operator is not limited: its token
/// is the platform's own, not a tenant's.
pub async fn take(
    state: &AppState,
    org: OrgId,
    plan: &str,
    principal: &Principal,
    slot: Option<&RateLimitSlot>,
) -> Result<(), Error> {
    let key_id = match principal {
        Principal::Operator => return Ok(()),
        Principal::ApiKey { key_id, .. } => key_id,
    };
    let Some(p) = state.config.plans.get(plan) else {
        // An org on a plan this configuration does not know: nothing to limit it by. Its
        // invoices will fail loudly; the API need not.
        tracing::warn!(org_id = %org, plan, "org on an unknown plan: API rate limit not applied");
        return Ok(());
    };
    let (org_limit, key_limit) = limits(p);
    let decision = state
        .limiter
        .api(org, org_limit, Some((key_id.as_str(), key_limit)))
        .await;
    state.metrics.count_rate_limit("api", &decision);
    match decision {
        Decision::Allowed {
            limit,
            remaining,
            reset,
        } => {
            if let Some(slot) = slot {
                slot.set(Budget {
                    limit,
                    remaining,
                    reset: ceil_secs(reset),
                });
            }
            Ok(())
        }
        Decision::Limited { limit, retry_after } => {
            let retry_after = ceil_secs(retry_after).max(1);
            tracing::info!(org_id = %org, retry_after, "API request over the rate limit");
            Err(Error::RateLimited(RateLimit {
                limit: u64::from(limit.burst),
                remaining: 0,
                reset: retry_after,
                retry_after,
                window: ceil_secs(limit.window()),
            }))
        }
        Decision::Unchecked => Ok(()),
    }
}

/// The org's and one key's API limits on `plan`.
pub fn limits(plan: &PlanConfig) -> (Limit, Limit) {
    (
        Limit {
            per_minute: plan.api_rate_per_minute,
            burst: plan.api_burst,
        },
        Limit {
            per_minute: plan.api_key_rate_per_minute,
            burst: plan.api_key_burst,
        },
    )
}

/// Middleware: gives each request a [`RateLimitSlot`] and reports what it holds on the
/// response (a `429` carries its own headers already).
pub async fn headers(mut req: Request, next: Next) -> Response {
    let slot = RateLimitSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Some(b) = slot.get()
        && !resp.headers().contains_key("ratelimit-limit")
    {
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(b.limit.burst));
        h.insert("ratelimit-remaining", HeaderValue::from(b.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(b.reset));
        if let Ok(v) = HeaderValue::from_str(&policy(b.limit.burst, ceil_secs(b.limit.window()))) {
            h.insert("ratelimit-policy", v);
        }
    }
    resp
}

/// `RateLimit-Policy`: `<burst>;w=<seconds to refill it>`.
pub fn policy(burst: u32, window: u64) -> String {
    format!("{burst};w={window}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_rounded_up_so_a_client_never_retries_too_early() {
        use std::time::Duration;
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn the_policy_names_the_burst_and_its_window() {
        assert_eq!(policy(30, 30), "30;w=30");
    }
}
