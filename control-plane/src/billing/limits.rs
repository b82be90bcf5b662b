//! Per-org webhook rate limits: a GCRA (generic cell rate algorithm) kept in Redis, one key per
//! org, decided atomically by a script — so every control plane of every region shares one
//! budget per org.
//!
//! An org may send `webhook_burst` deliveries at once and `webhook_rate_per_minute` sustained
//! (its plan). A delivery over the limit is still answered `202` (GitHub does not retry other
//! answers by itself) but makes no job: it is recorded with the outcome `rate_limited`, counted
//! in `switchyard_intake_deliveries_total{outcome="rate_limited"}` and metered like any other
//! delivery.
//!
//! When Redis does not answer, the limit is not applied (the delivery goes through and a
//! warning is logged): intake's availability comes before an exact limit, and the concurrency
//! cap on the workers still protects the other orgs.

use std::time::Duration;

use protocol::OrgId;

const GCRA: &str = r"
local key = KEYS[1]
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local horizon = interval * burst
if new_tat - now > horizon then
  return {0, 0, new_tat - now - horizon, tat - now}
end
redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now))
return {1, math.floor((horizon - (new_tat - now)) / interval), 0, new_tat - now}
";

/// A limit: `burst` at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
    pub burst: u32,
}

/// A decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more would be allowed right now; the budget is full again after
    /// `reset`.
    Allowed { remaining: u64, reset: Duration },
    /// Refused; a request is allowed again after `retry_after`.
    Limited { retry_after: Duration },
    /// Redis did not answer: not checked.
    Unchecked,
}

/// The rate limiter.
#[derive(Clone)]
pub struct Limiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v.max(0)).unwrap_or(0))
}

impl Limiter {
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(GCRA),
        }
    }

    /// Takes one delivery from `org`'s webhook budget.
    pub async fn webhook(&self, org: OrgId, limit: Limit) -> Decision {
        let key = format!("{}rl:webhooks:{org}", self.prefix);
        self.take(&key, limit).await
    }

    async fn take(&self, key: &str, limit: Limit) -> Decision {
        if limit.per_minute == 0 {
            return Decision::Limited {
                retry_after: Duration::from_secs(60),
            };
        }
        // Milliseconds between two deliveries at the sustained rate.
        let interval = 60_000.0 / f64::from(limit.per_minute);
        let now = chrono::Utc::now().timestamp_millis();
        let mut conn = self.redis.clone();
        let r: Result<(i64, i64, i64, i64), _> = self
            .script
            .key(key)
            .arg(now)
            .arg(interval)
            .arg(limit.burst.max(1))
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok((1, remaining, _, reset)) => Decision::Allowed {
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: ms(reset),
            },
            Ok((_, _, retry, _)) => Decision::Limited {
                retry_after: ms(retry),
            },
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable: rate limit not applied");
                Decision::Unchecked
            }
        }
    }
}
