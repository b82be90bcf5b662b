//! Per-org rate limits: a GCRA (generic cell rate algorithm) kept in Redis, decided atomically
//! by one script — so every control plane of every region shares one budget per org.
//!
//! **Webhooks.** An org may send `webhook_burst` deliveries at once and
//! `webhook_rate_per_minute` sustained (its plan). A delivery over the limit is still answered
//! `202` (GitHub does not retry other answers by itself) but makes no job: it is recorded with
//! the outcome `rate_limited`, counted in
//! `switchyard_intake_deliveries_total{outcome="rate_limited"}` and metered like any other
//! delivery.
//!
//! **The org-scoped API.** Two budgets are taken together by each request: the org's
//! (`api_burst`, `api_rate_per_minute`) and the calling API key's (`api_key_burst`,
//! `api_key_rate_per_minute`; a token counts as the key it was issued for). A request is
//! allowed only when both have room, and then it takes from both; a refused request takes
//! from neither. Over either, the answer is `429` with `Retry-After` and `RateLimit-*`.
//!
//! **When Redis does not answer**, no limit is applied (the request or delivery goes through):
//! the API's and intake's availability come before an exact limit, and the concurrency cap on
//! the workers still protects the other orgs. Every such decision is counted
//! (`switchyard_rate_limit_decisions_total{decision="unchecked"}`), and after a failure Redis
//! is not asked again for [`REDIS_COOLDOWN`], so a Redis that hangs adds its timeout to one
//! request per cooldown rather than to every request. One warning is logged per failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use protocol::OrgId;

/// How long Redis is left alone after it failed to answer.
pub const REDIS_COOLDOWN: Duration = Duration::from_secs(1);

/// GCRA over any number of keys, all or nothing: `ARGV = now, (interval, burst) per key`
/// (milliseconds). Returns `{allowed, remaining, retry_after, reset, which}` where `which` is
/// the 1-based index of the key that decided: the one that refused, or the one with the least
/// room left.
const GCRA: &str = r"
local now = tonumber(ARGV[1])
local tats = {}
local best, best_remaining, best_reset = 1, nil, 0
local worst, worst_retry = 0, 0
for i, key in ipairs(KEYS) do
  local interval, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local horizon = interval * burst
  if new_tat - now > horizon then
    local retry = new_tat - now - horizon
    if retry > worst_retry then worst, worst_retry = i, retry end
  else
    local remaining = math.floor((horizon - (new_tat - now)) / interval)
    if best_remaining == nil or remaining < best_remaining then
      best, best_remaining, best_reset = i, remaining, new_tat - now
    end
  end
  tats[i] = new_tat
end
if worst > 0 then
  return {0, 0, math.ceil(worst_retry), 0, worst}
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil(tats[i] - now))
end
return {1, best_remaining, 0, math.ceil(best_reset), best}
";

/// A limit: `burst` at once, refilled at `per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Limit {
    /// Time for an empty budget to fill up again: `burst` cells at the sustained rate.
    pub fn window(self) -> Duration {
        let per_minute = u64::from(self.per_minute.max(1));
        Duration::from_millis(u64::from(self.burst.max(1)) * 60_000 / per_minute)
    }
}

/// A decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more would be allowed right now by `limit`, the budget nearest to
    /// running out, which is full again after `reset`.
    Allowed {
        limit: Limit,
        remaining: u64,
        reset: Duration,
    },
    /// Refused by `limit`; a request is allowed again after `retry_after`.
    Limited { limit: Limit, retry_after: Duration },
    /// Redis did not answer: not checked.
    Unchecked,
}

/// The rate limiter.
#[derive(Clone)]
pub struct Limiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
    /// Unix milliseconds until which Redis is not asked (see [`REDIS_COOLDOWN`]).
    skip_until: Arc<AtomicI64>,
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
            skip_until: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Takes one delivery from `org`'s webhook budget.
    pub async fn webhook(&self, org: OrgId, limit: Limit) -> Decision {
        let key = format!("{}rl:webhooks:{org}", self.prefix);
        self.take(&[(key, limit)]).await
    }

    /// Takes one API request from `org`'s budget and, for a key, from the key's — both or
    /// neither. The keys share the hash tag `{org}`, so a Redis Cluster keeps them in one slot.
    pub async fn api(&self, org: OrgId, org_limit: Limit, key: Option<(&str, Limit)>) -> Decision {
        let mut keys = vec![(format!("{}rl:api:{{{org}}}", self.prefix), org_limit)];
        if let Some((key_id, limit)) = key {
            keys.push((
                format!("{}rl:api:{{{org}}}:key:{key_id}", self.prefix),
                limit,
            ));
        }
        self.take(&keys).await
    }

    async fn take(&self, keys: &[(String, Limit)]) -> Decision {
        if let Some((_, limit)) = keys.iter().find(|(_, l)| l.per_minute == 0) {
            return Decision::Limited {
                limit: *limit,
                retry_after: Duration::from_secs(60),
            };
        }
        let now = chrono::Utc::now().timestamp_millis();
        if now < self.skip_until.load(Ordering::Relaxed) {
            return Decision::Unchecked;
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now);
        for (key, limit) in keys {
            // Milliseconds between two requests at the sustained rate (a rate, not money: a
            // fraction of a millisecond matters for fast plans).
            let interval = 60_000.0 / f64::from(limit.per_minute);
            invocation.key(key).arg(interval).arg(limit.burst.max(1));
        }
        let mut conn = self.redis.clone();
        let r: Result<(i64, i64, i64, i64, i64), _> = invocation.invoke_async(&mut conn).await;
        let limit_of = |which: i64| {
            usize::try_from(which - 1)
                .ok()
                .and_then(|i| keys.get(i))
                .map_or(keys[0].1, |(_, l)| *l)
        };
        match r {
            Ok((1, remaining, _, reset, which)) => Decision::Allowed {
                limit: limit_of(which),
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: ms(reset),
            },
            Ok((_, _, retry, _, which)) => Decision::Limited {
                limit: limit_of(which),
                retry_after: ms(retry),
            },
            Err(e) => {
                let cooldown = i64::try_from(REDIS_COOLDOWN.as_millis()).unwrap_or(1_000);
                self.skip_until.store(now + cooldown, Ordering::Relaxed);
                tracing::warn!(error = %e, cooldown_ms = cooldown, "Redis unavailable: rate limits not applied");
                Decision::Unchecked
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limits_window_is_the_time_to_refill_its_burst() {
        let l = Limit {
            per_minute: 60,
            burst: 30,
        };
        assert_eq!(l.window(), Duration::from_secs(30));
        let l = Limit {
            per_minute: 12,
            burst: 3,
        };
        assert_eq!(l.window(), Duration::from_secs(15));
    }
}
