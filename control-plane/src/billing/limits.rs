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
//! A busy org's webhooks are not each a Redis call: each control plane takes cells from the
//! org's budget in small leases and hands them out locally ([`Leases`]). A lease is sized to
//! last [`LEASE_SPAN`] at the pace this control plane used its last one (one cell at first, so
//! a quiet org is checked exactly, delivery by delivery), at most a sixteenth of the burst and
//! [`MAX_LEASE`], and its unused cells are dropped after [`LEASE_TTL`]. Every cell
//! still comes from the shared budget, so the sustained rate holds across all control planes;
//! what leasing costs is bounded by the lease: a burst may go over by the cells a control plane
//! still held from its last lease (at most a sixteenth of the burst each), and cells left
//! unused when traffic stops are spent. A refusal is also remembered until its retry time — no
//! cell can free up before then — so an org far over its limit costs no Redis call per
//! delivery either. Plans whose burst is under 32 are never leased.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::OrgId;

/// How long Redis is left alone after it failed to answer.
pub const REDIS_COOLDOWN: Duration = Duration::from_secs(1);

/// The longest a lease's cells are kept before the unused ones are dropped.
pub const LEASE_TTL: Duration = Duration::from_millis(100);
/// A lease covers what this control plane used of the org's budget in this much time.
pub const LEASE_SPAN: Duration = Duration::from_millis(50);
/// The most cells one lease takes.
pub const MAX_LEASE: u32 = 1024;
/// Orgs whose leases are kept before expired ones are first swept.
const LEASED_ORGS: usize = 10_000;

/// GCRA over any number of keys, all or nothing: `ARGV = now, want, (interval, burst) per
/// key` (milliseconds). Takes up to `want` cells from every key — as many as the key with the
/// least room has, at least one — or none. Returns
/// `{allowed, remaining, retry_after, reset, which, taken}` where `which` is the 1-based index
/// of the key that decided: the one that refused, or the one with the least room left.
const GCRA: &str = r"
local now, want = tonumber(ARGV[1]), tonumber(ARGV[2])
local tats, intervals = {}, {}
local worst, worst_retry = 0, 0
local take = want
for i, key in ipairs(KEYS) do
  local interval, burst = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local horizon = interval * burst
  -- Cells free now; the epsilon keeps a whole cell whole despite fractional intervals.
  local room = math.floor((horizon - (tat - now)) / interval + 1e-9)
  if room < 1 then
    local retry = tat + interval - now - horizon
    if retry > worst_retry or worst == 0 then worst, worst_retry = i, retry end
  elseif room < take then
    take = room
  end
  tats[i], intervals[i] = tat, interval
end
if worst > 0 then
  return {0, 0, math.ceil(worst_retry), 0, worst, 0}
end
local best, best_remaining, best_reset = 1, nil, 0
for i, key in ipairs(KEYS) do
  local new_tat = tats[i] + take * intervals[i]
  local interval, burst = intervals[i], tonumber(ARGV[2 * i + 2])
  local remaining = math.floor((interval * burst - (new_tat - now)) / interval + 1e-9)
  if best_remaining == nil or remaining < best_remaining then
    best, best_remaining, best_reset = i, remaining, new_tat - now
  end
  redis.call('SET', key, new_tat, 'PX', math.ceil(new_tat - now))
end
return {1, best_remaining, 0, math.ceil(best_reset), best, take}
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

/// Cells of one org's webhook budget this control plane holds.
#[derive(Clone, Copy, Debug)]
struct Lease {
    limit: Limit,
    /// Cells left to hand out.
    left: u32,
    /// Cells the last lease took (with any left from before).
    taken: u32,
    at: Instant,
    /// What Redis said was left in the budget after the lease.
    remaining: u64,
    /// Refused until then (the budget's own retry time).
    refused_until: Option<Instant>,
}

/// The webhook leases of one control plane, by org (see the module's documentation).
#[derive(Debug, Default)]
pub struct Leases {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    orgs: HashMap<OrgId, Lease>,
    /// Size at which expired leases are next swept: twice what a sweep left, so sweeping
    /// costs O(1) per lease however many orgs are live.
    sweep_at: usize,
}

impl Leases {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A decision without Redis: a cell of a live lease, or a refusal not yet over.
    pub fn local(&self, org: OrgId, limit: Limit, now: Instant) -> Option<Decision> {
        let mut table = self.table();
        let lease = table.orgs.get_mut(&org).filter(|l| l.limit == limit)?;
        if let Some(until) = lease.refused_until.filter(|u| *u > now) {
            return Some(Decision::Limited {
                limit,
                retry_after: until - now,
            });
        }
        if lease.left == 0 || now.duration_since(lease.at) >= LEASE_TTL {
            return None;
        }
        lease.left -= 1;
        Some(Decision::Allowed {
            limit,
            remaining: lease.remaining + u64::from(lease.left),
            reset: Duration::ZERO,
        })
    }

    /// How many cells to ask Redis for: what the org's last lease here lasted for, scaled to
    /// [`LEASE_SPAN`], within the limit's cap.
    pub fn want(&self, org: OrgId, limit: Limit, now: Instant) -> u32 {
        let cap = (limit.burst / 16).min(MAX_LEASE);
        if cap <= 1 {
            return 1;
        }
        let table = self.table();
        let Some(l) = table.orgs.get(&org).filter(|l| l.limit == limit) else {
            return 1;
        };
        let used = u64::from(l.taken.saturating_sub(l.left));
        let elapsed = now.duration_since(l.at).max(Duration::from_millis(1));
        let span = u64::try_from(LEASE_SPAN.as_micros()).unwrap_or(u64::MAX);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let want = (used.saturating_mul(span)).div_ceil(micros);
        u32::try_from(want).unwrap_or(u32::MAX).clamp(1, cap)
    }

    /// Keeps what Redis granted: `taken` cells of which the caller uses one.
    pub fn keep(&self, org: OrgId, limit: Limit, now: Instant, decision: Decision, taken: u32) {
        let mut table = self.table();
        if table.orgs.len() >= table.sweep_at.max(LEASED_ORGS) {
            table.orgs.retain(|_, l| {
                now.duration_since(l.at) < LEASE_TTL || l.refused_until.is_some_and(|u| u > now)
            });
            table.sweep_at = table.orgs.len() * 2;
        }
        let before = table
            .orgs
            .get(&org)
            .filter(|l| l.limit == limit && now.duration_since(l.at) < LEASE_TTL)
            .map_or(0, |l| l.left);
        let lease = match decision {
            Decision::Allowed { remaining, .. } => Lease {
                limit,
                left: before + taken.saturating_sub(1),
                taken: before + taken,
                at: now,
                remaining,
                refused_until: None,
            },
            // A concurrent request's lease still has cells: hand those out first; the refusal
            // comes back from Redis once they are gone.
            Decision::Limited { .. } if before > 0 => return,
            Decision::Limited { retry_after, .. } => Lease {
                limit,
                left: 0,
                taken: 0,
                at: now,
                remaining: 0,
                refused_until: Some(now + retry_after),
            },
            Decision::Unchecked => return,
        };
        table.orgs.insert(org, lease);
    }
}

/// The rate limiter.
#[derive(Clone)]
pub struct Limiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
    /// Unix milliseconds until which Redis is not asked (see [`REDIS_COOLDOWN`]).
    skip_until: Arc<AtomicI64>,
    leases: Arc<Leases>,
    /// Scripts run in Redis, all decisions together.
    redis_calls: Arc<AtomicU64>,
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
            leases: Arc::default(),
            redis_calls: Arc::default(),
        }
    }

    /// How many times this limiter (and its clones) asked Redis.
    pub fn redis_calls(&self) -> u64 {
        self.redis_calls.load(Ordering::Relaxed)
    }

    /// Takes one delivery from `org`'s webhook budget: from this control plane's lease when
    /// it holds one, else from Redis (with a new lease when the org is busy).
    pub async fn webhook(&self, org: OrgId, limit: Limit) -> Decision {
        let now = Instant::now();
        if let Some(d) = self.leases.local(org, limit, now) {
            return d;
        }
        let want = self.leases.want(org, limit, now);
        let key = format!("{}rl:webhooks:{org}", self.prefix);
        let (decision, taken) = self.take(&[(key, limit)], want).await;
        self.leases.keep(org, limit, now, decision, taken);
        decision
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
        self.take(&keys, 1).await.0
    }

    /// Takes up to `want` cells (at least one) from every key, or none; with how many.
    async fn take(&self, keys: &[(String, Limit)], want: u32) -> (Decision, u32) {
        if let Some((_, limit)) = keys.iter().find(|(_, l)| l.per_minute == 0) {
            let refused = Decision::Limited {
                limit: *limit,
                retry_after: Duration::from_secs(60),
            };
            return (refused, 0);
        }
        let now = chrono::Utc::now().timestamp_millis();
        if now < self.skip_until.load(Ordering::Relaxed) {
            return (Decision::Unchecked, 0);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now).arg(want.max(1));
        for (key, limit) in keys {
            // Milliseconds between two requests at the sustained rate (a rate, not money: a
            // fraction of a millisecond matters for fast plans).
            let interval = 60_000.0 / f64::from(limit.per_minute);
            invocation.key(key).arg(interval).arg(limit.burst.max(1));
        }
        let mut conn = self.redis.clone();
        self.redis_calls.fetch_add(1, Ordering::Relaxed);
        let r: Result<(i64, i64, i64, i64, i64, i64), _> = invocation.invoke_async(&mut conn).await;
        let limit_of = |which: i64| {
            usize::try_from(which - 1)
                .ok()
                .and_then(|i| keys.get(i))
                .map_or(keys[0].1, |(_, l)| *l)
        };
        match r {
            Ok((1, remaining, _, reset, which, taken)) => {
                let allowed = Decision::Allowed {
                    limit: limit_of(which),
                    remaining: u64::try_from(remaining).unwrap_or(0),
                    reset: ms(reset),
                };
                (allowed, u32::try_from(taken).unwrap_or(1).max(1))
            }
            Ok((_, _, retry, _, which, _)) => {
                let refused = Decision::Limited {
                    limit: limit_of(which),
                    retry_after: ms(retry),
                };
                (refused, 0)
            }
            Err(e) => {
                let cooldown = i64::try_from(REDIS_COOLDOWN.as_millis()).unwrap_or(1_000);
                self.skip_until.store(now + cooldown, Ordering::Relaxed);
                tracing::warn!(error = %e, cooldown_ms = cooldown, "Redis unavailable: rate limits not applied");
                (Decision::Unchecked, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Limit = Limit {
        per_minute: 600_000,
        burst: 4_096,
    };

    fn allowed(remaining: u64) -> Decision {
        Decision::Allowed {
            limit: BUSY,
            remaining,
            reset: Duration::ZERO,
        }
    }

    #[test]
    fn a_quiet_org_is_checked_delivery_by_delivery() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        assert_eq!(leases.want(org, BUSY, t0), 1, "nothing known: one cell");
        leases.keep(org, BUSY, t0, allowed(100), 1);
        assert_eq!(leases.local(org, BUSY, t0), None, "the one cell was used");
        // One delivery a second: still one cell at a time.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(leases.want(org, BUSY, t1), 1);
    }

    #[test]
    fn a_busy_org_gets_leases_sized_to_its_recent_traffic_within_the_cap() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        leases.keep(org, BUSY, t0, allowed(100), 1);
        // The cell lasted 2 ms: 25 cover the next 50 ms.
        let t1 = t0 + Duration::from_millis(2);
        assert_eq!(leases.want(org, BUSY, t1), 25);
        leases.keep(org, BUSY, t1, allowed(100), 25);
        for _ in 0..24 {
            assert!(matches!(
                leases.local(org, BUSY, t1),
                Some(Decision::Allowed { .. })
            ));
        }
        assert_eq!(leases.local(org, BUSY, t1), None, "the lease is used up");
        // 25 used in 1 ms: far more than the cap wants; the cap holds.
        let t2 = t1 + Duration::from_millis(1);
        assert_eq!(leases.want(org, BUSY, t2), (BUSY.burst / 16).min(MAX_LEASE));
        let huge = Limit {
            per_minute: 100_000_000,
            burst: 100_000_000,
        };
        leases.keep(OrgId(2), huge, t0, allowed(0), 25_000);
        let used = std::iter::from_fn(|| leases.local(OrgId(2), huge, t0)).count();
        assert_eq!(used, 24_999);
        assert_eq!(leases.want(OrgId(2), huge, t0), MAX_LEASE);
    }

    #[test]
    fn small_bursts_are_never_leased() {
        let leases = Leases::default();
        let small = Limit {
            per_minute: 600_000,
            burst: 31,
        };
        let (org, t0) = (OrgId(1), Instant::now());
        leases.keep(org, small, t0, allowed(10), 1);
        assert_eq!(leases.want(org, small, t0 + Duration::from_micros(10)), 1);
    }

    #[test]
    fn unused_cells_are_dropped_after_the_ttl() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        leases.keep(org, BUSY, t0, allowed(100), 10);
        assert!(leases.local(org, BUSY, t0 + LEASE_TTL / 2).is_some());
        assert_eq!(leases.local(org, BUSY, t0 + LEASE_TTL), None);
        // Two of ten used in the lease's life: the next one is sized to that.
        assert_eq!(leases.want(org, BUSY, t0 + LEASE_TTL), 1);
    }

    #[test]
    fn a_refusal_is_remembered_until_its_retry_time_and_a_new_plan_starts_afresh() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        let refused = Decision::Limited {
            limit: BUSY,
            retry_after: Duration::from_millis(300),
        };
        leases.keep(org, BUSY, t0, refused, 0);
        assert_eq!(
            leases.local(org, BUSY, t0 + Duration::from_millis(100)),
            Some(Decision::Limited {
                limit: BUSY,
                retry_after: Duration::from_millis(200)
            })
        );
        assert_eq!(
            leases.local(org, BUSY, t0 + Duration::from_millis(300)),
            None
        );
        // Another plan's limit: what was remembered does not apply.
        let other = Limit {
            per_minute: 60,
            burst: 100,
        };
        assert_eq!(leases.local(org, other, t0), None);
        assert_eq!(leases.want(org, other, t0), 1);
    }

    #[test]
    fn a_refusal_does_not_drop_the_cells_of_a_live_lease() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        leases.keep(org, BUSY, t0, allowed(0), 3);
        let refused = Decision::Limited {
            limit: BUSY,
            retry_after: Duration::from_secs(1),
        };
        leases.keep(org, BUSY, t0, refused, 0);
        let n = std::iter::from_fn(|| leases.local(org, BUSY, t0)).count();
        assert_eq!(n, 2, "the two cells left are handed out");
    }

    #[test]
    fn expired_leases_are_swept_once_many_orgs_were_seen() {
        let leases = Leases::default();
        let t0 = Instant::now();
        for i in 0..LEASED_ORGS {
            leases.keep(OrgId(i as i64), BUSY, t0, allowed(1), 1);
        }
        assert_eq!(leases.table().orgs.len(), LEASED_ORGS);
        leases.keep(OrgId(-1), BUSY, t0 + LEASE_TTL, allowed(1), 1);
        assert_eq!(leases.table().orgs.len(), 1, "only the new lease is live");
    }

    #[test]
    fn cells_left_from_a_live_lease_are_kept_when_another_arrives() {
        let leases = Leases::default();
        let (org, t0) = (OrgId(1), Instant::now());
        leases.keep(org, BUSY, t0, allowed(100), 5);
        // A concurrent miss brought 3 more: 4 + 2 left to hand out.
        leases.keep(org, BUSY, t0, allowed(100), 3);
        let n = std::iter::from_fn(|| leases.local(org, BUSY, t0)).count();
        assert_eq!(n, 6);
    }

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
