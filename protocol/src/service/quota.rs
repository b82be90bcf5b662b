//! Each org's job seconds of the month, mirrored in Redis for the job-minute quota of hard
//! plans (`hard_job_minutes`).
//!
//! The usage rollup in the org's shard is the source of truth; the control plane's ingester
//! writes the month's total there and then *raises* the Redis value to it (set only if
//! greater — a month's total only grows, so concurrent ingesters and late writes can never
//! lower it). Workers read the mirror before claiming a job of a hard plan: one Redis `GET`
//! instead of a sum over the month's rollup rows. No key (no usage ingested this month, or
//! Redis lost it) or Redis not answering: the worker reads the rollup instead.

use chrono::{DateTime, Datelike, Utc};

use crate::ids::OrgId;

/// Keys outlive their month by a little, then go.
const TTL_SECONDS: u64 = 40 * 24 * 3600;

const RAISE: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
";

/// The key of `org`'s job seconds in the month of `at` (UTC).
pub fn key(prefix: &str, org: OrgId, at: DateTime<Utc>) -> String {
    format!(
        "{prefix}org:{org}:job_seconds:{:04}-{:02}",
        at.year(),
        at.month()
    )
}

/// Raises the mirror of `org`'s job seconds in the month of `at` to `total`, unless it holds
/// more already.
pub async fn raise(
    redis: &mut redis::aio::ConnectionManager,
    prefix: &str,
    org: OrgId,
    at: DateTime<Utc>,
    total: i64,
) -> redis::RedisResult<()> {
    let _: i64 = redis::Script::new(RAISE)
        .key(key(prefix, org, at))
        .arg(total)
        .arg(TTL_SECONDS)
        .invoke_async(redis)
        .await?;
    Ok(())
}

/// `org`'s job seconds of the current month as mirrored, if the mirror has them.
pub async fn month_seconds(
    redis: &mut redis::aio::ConnectionManager,
    prefix: &str,
    org: OrgId,
) -> redis::RedisResult<Option<i64>> {
    redis::cmd("GET")
        .arg(key(prefix, org, Utc::now()))
        .query_async(redis)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_org_and_the_utc_month() {
        let at = "2026-03-31T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(key("sy:", OrgId(42), at), "sy:org:42:job_seconds:2026-03");
        let next = "2026-04-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(key("sy:", OrgId(42), next), "sy:org:42:job_seconds:2026-04");
    }
}
