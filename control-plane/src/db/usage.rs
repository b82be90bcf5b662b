//! `usage_event` and `usage_daily`: metered usage, in the org's shard.
//!
//! Events are written once (their id is the primary key with the org) and, in the same
//! transaction, exactly the new ones are added to their day's rollup — so `usage_daily` always
//! equals the sum of its events, and recomputing it from the events ([`rebuild`]) changes
//! nothing. A transaction-scoped advisory lock per org keeps a rebuild and new events of the
//! same org from interleaving.
//!
//! The events of `webhook_deliveries` are the `delivery` rows themselves, one per delivery
//! with quantity 1 at its `received_at` (see [`super::deliveries`]); what reads the events
//! reads them there. `usage_event` rows of that metric with a `delivery:` id are what control
//! planes before that wrote (and migration `0008` deleted): they are left out, so that a
//! recorder of the old version during a rolling upgrade cannot make a delivery count twice.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use protocol::usage::UsageEvent;
use sqlx::PgConnection;

use super::OrgDb;

/// Stores `events` (ids already stored are skipped) and brings the rollup of the days they
/// touched up to date. Returns the events that were new.
pub async fn record(
    conn: &mut PgConnection,
    events: &[&UsageEvent],
) -> Result<Vec<usize>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let orgs: Vec<i64> = events.iter().map(|e| e.org_id.0).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let metrics: Vec<&str> = events.iter().map(|e| e.metric.as_str()).collect();
    let quantities: Vec<i64> = events.iter().map(|e| e.quantity.max(0)).collect();
    let repos: Vec<Option<&str>> = events.iter().map(|e| e.repo.as_deref()).collect();
    let jobs: Vec<Option<&str>> = events.iter().map(|e| e.job_id.as_deref()).collect();
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    let new = sqlx::query!(
        r#"insert into usage_event (org_id, event_id, metric, quantity, repo, job_id, at)
           select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                                $6::text[], $7::timestamptz[])
           on conflict (org_id, event_id) do nothing
           returning org_id, event_id"#,
        &orgs,
        &ids as &[&str],
        &metrics as &[&str],
        &quantities,
        &repos as &[Option<&str>],
        &jobs as &[Option<&str>],
        &at,
    )
    .fetch_all(&mut *conn)
    .await?;
    if new.is_empty() {
        return Ok(Vec::new());
    }
    // The new events, once each (a batch may carry the same event twice).
    let mut inserted: BTreeSet<(i64, &str)> = new
        .iter()
        .map(|r| (r.org_id, r.event_id.as_str()))
        .collect();
    let fresh: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| inserted.remove(&(e.org_id.0, e.event_id.as_str())))
        .map(|(i, _)| i)
        .collect();
    add_to_rollup(conn, events, &fresh).await?;
    Ok(fresh)
}

/// Adds the new events to their days' rollup: the sums of just these events, so the cost does
/// not grow with how much the day already holds.
async fn add_to_rollup(
    conn: &mut PgConnection,
    events: &[&UsageEvent],
    fresh: &[usize],
) -> Result<(), sqlx::Error> {
    let mut sums: BTreeMap<(i64, NaiveDate, &str, &str), i64> = BTreeMap::new();
    for i in fresh {
        let e = events[*i];
        *sums
            .entry((
                e.org_id.0,
                e.at.date_naive(),
                e.metric.as_str(),
                e.repo.as_deref().unwrap_or(""),
            ))
            .or_default() += e.quantity.max(0);
    }
    lock_orgs(conn, sums.keys().map(|k| k.0).collect()).await?;
    let (mut orgs, mut days, mut metrics, mut repos, mut quantities) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((org, day, metric, repo), q) in sums {
        orgs.push(org);
        days.push(day);
        metrics.push(metric);
        repos.push(repo);
        quantities.push(q);
    }
    sqlx::query!(
        r#"insert into usage_daily (org_id, day, metric, repo, quantity)
           select * from unnest($1::bigint[], $2::date[], $3::text[], $4::text[], $5::bigint[])
           on conflict (org_id, day, metric, repo)
           do update set quantity = usage_daily.quantity + excluded.quantity"#,
        &orgs,
        &days,
        &metrics as &[&str],
        &repos as &[&str],
        &quantities,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the org's usage lock until the transaction ends, in org order (so two writers never
/// wait on each other in a cycle): a rebuild and new events of one org never interleave.
/// One statement for all the orgs of a batch: a batch of the ingester touches about as many
/// orgs as it has events, and a round trip per org made locking most of the write's cost
/// (docs/benchmarks.md, "Billing").
pub(super) async fn lock_orgs(
    conn: &mut PgConnection,
    orgs: BTreeSet<i64>,
) -> Result<(), sqlx::Error> {
    if orgs.is_empty() {
        return Ok(());
    }
    let orgs: Vec<i64> = orgs.into_iter().collect();
    // The sorted subquery hands its rows to the locking projection in order.
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('usage:' || o::text, 0))
         from (select o from unnest($1::bigint[]) as o order by o) as sorted",
    )
    .bind(&orgs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recomputes the rollup of each (org, day) from all its events (the repair behind [`rebuild`]).
async fn rollup(
    conn: &mut PgConnection,
    days: &BTreeSet<(i64, NaiveDate)>,
) -> Result<(), sqlx::Error> {
    lock_orgs(conn, days.iter().map(|(o, _)| *o).collect()).await?;
    let (o, d): (Vec<i64>, Vec<NaiveDate>) = days.iter().copied().unzip();
    sqlx::query!(
        r#"with t as (select * from unnest($1::bigint[], $2::date[]) as t(org_id, day)),
           events as (
               select e.org_id, t.day, e.metric, coalesce(e.repo, '') as repo, e.quantity
               from t join usage_event e on e.org_id = t.org_id
                    and e.at >= t.day::timestamp at time zone 'UTC'
                    and e.at < (t.day + 1)::timestamp at time zone 'UTC'
               where not (e.metric = 'webhook_deliveries' and e.event_id like 'delivery:%')
               union all
               select d.org_id, t.day, 'webhook_deliveries', coalesce(d.repo, ''), 1
               from t join delivery d on d.org_id = t.org_id
                    and d.received_at >= t.day::timestamp at time zone 'UTC'
                    and d.received_at < (t.day + 1)::timestamp at time zone 'UTC'
           ),
           sums as (
               select org_id, day, metric, repo, sum(quantity)::bigint as quantity
               from events group by org_id, day, metric, repo
           ),
           gone as (
               delete from usage_daily d using t
               where d.org_id = t.org_id and d.day = t.day
                 and not exists (select 1 from sums s where s.org_id = d.org_id and s.day = d.day
                                 and s.metric = d.metric and s.repo = d.repo)
           )
           insert into usage_daily (org_id, day, metric, repo, quantity)
           select org_id, day, metric, repo, quantity from sums
           on conflict (org_id, day, metric, repo) do update set quantity = excluded.quantity"#,
        &o,
        &d,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recomputes the org's rollup for every day in `[from, to)` (an operator's repair; a no-op
/// when the rollup is right, which it always should be).
pub async fn rebuild(db: &OrgDb, from: NaiveDate, to: NaiveDate) -> Result<(), sqlx::Error> {
    let days: BTreeSet<(i64, NaiveDate)> = from
        .iter_days()
        .take_while(|d| *d < to)
        .map(|d| (db.org().0, d))
        .collect();
    let mut tx = db.pool().begin().await?;
    rollup(&mut tx, &days).await?;
    tx.commit().await
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub period_start: DateTime<Utc>,
    pub metric: String,
    pub repo: Option<String>,
    pub quantity: i64,
}

/// The org's usage in `[from, to)` per UTC day (from the rollup), by metric, or by metric and
/// repository.
pub async fn daily(
    db: &OrgDb,
    from: NaiveDate,
    to: NaiveDate,
    by_repo: bool,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select day as "day!", metric as "metric!",
                  case when $4 then repo else null end as repo,
                  sum(quantity)::bigint as "quantity!"
           from usage_daily
           where org_id = $1 and day >= $2 and day < $3
           group by day, metric, case when $4 then repo else null end
           order by day, metric, repo nulls first"#,
        db.org().0,
        from,
        to,
        by_repo,
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRow {
            period_start: r.day.and_time(chrono::NaiveTime::MIN).and_utc(),
            metric: r.metric,
            repo: r.repo.filter(|s| !s.is_empty()),
            quantity: r.quantity,
        })
        .collect())
}

/// The org's usage in `[from, to)` per hour (from the events, webhook deliveries from their
/// `delivery` rows), by metric, or by metric and repository.
pub async fn hourly(
    db: &OrgDb,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by_repo: bool,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with events as (
               select at, metric, repo, quantity from usage_event
               where org_id = $1 and at >= $2 and at < $3
                 and not (metric = 'webhook_deliveries' and event_id like 'delivery:%')
               union all
               select received_at, 'webhook_deliveries', repo, 1 from delivery
               where org_id = $1 and received_at >= $2 and received_at < $3
           )
           select date_trunc('hour', at, 'UTC') as "hour!", metric as "metric!",
                  case when $4 then coalesce(repo, '') else null end as repo,
                  sum(quantity)::bigint as "quantity!"
           from events
           group by 1, 2, 3
           order by 1, 2, 3 nulls first"#,
        db.org().0,
        from,
        to,
        by_repo,
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| UsageRow {
            period_start: r.hour,
            metric: r.metric,
            repo: r.repo.filter(|s| !s.is_empty()),
            quantity: r.quantity,
        })
        .collect())
}
