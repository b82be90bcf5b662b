//! Each org's cap on jobs running at once across the region's workers (from its plan), so
//! one org's flood cannot starve the others.
//!
//! A running job holds a lease in the org's Redis sorted set (member: job id, score: expiry);
//! leases are taken atomically (a Lua script drops expired ones, then admits the job only
//! while the set is under the cap), renewed with every progress report, and released when the
//! job ends. A worker that dies leaves its leases to expire. A job over its org's cap is
//! offered again shortly, and the worker moves on to other orgs' jobs.
//!
//! If Redis does not answer, jobs run without the cap (and a metric counts it): running a job
//! late is worse than letting one org exceed its share for a while.

use std::time::Duration;

use protocol::{JobId, OrgId};

const ACQUIRE: &str = r"
local key, now, ttl, cap, job = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, job) or redis.call('ZCARD', key) < cap then
  redis.call('ZADD', key, now + ttl, job)
  redis.call('PEXPIRE', key, ttl)
  return 1
end
return 0
";

/// The answer to "may this job run now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    Granted,
    /// The org has as many jobs running as its plan allows.
    Full,
    /// Redis did not answer: run without the cap.
    Unchecked,
}

#[derive(Clone)]
pub struct Leases {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    ttl: Duration,
    script: redis::Script,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Leases {
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            script: redis::Script::new(ACQUIRE),
        }
    }

    fn key(&self, org: OrgId) -> String {
        format!("{}org:{org}:running", self.prefix)
    }

    /// Takes (or renews) `job`'s place among `org`'s running jobs, if under `cap`.
    pub async fn acquire(&self, org: OrgId, job: &JobId, cap: u32) -> Lease {
        let mut conn = self.redis.clone();
        let r: Result<i64, _> = self
            .script
            .key(self.key(org))
            .arg(now_ms())
            .arg(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
            .arg(cap)
            .arg(&job.0)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(1) => Lease::Granted,
            Ok(_) => Lease::Full,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable: running without the org's cap");
                Lease::Unchecked
            }
        }
    }

    pub async fn release(&self, org: OrgId, job: &JobId) {
        let mut conn = self.redis.clone();
        let r: Result<i64, _> = redis::cmd("ZREM")
            .arg(self.key(org))
            .arg(&job.0)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "cannot release a lease; it expires by itself");
        }
    }
}
