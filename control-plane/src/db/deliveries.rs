//! `delivery`: webhook deliveries accepted for an org.
//!
//! Written in batches by the recorder: every record carries its org id, and the recorder
//! groups records by the shard the router gives for that id.
//!
//! A delivery row is also the org's usage event for the `webhook_deliveries` metric (its id
//! is idempotent: the primary key with the org): the insert adds exactly the new rows to the
//! daily rollup in the same statement, and the usage readers that go back to the events
//! ([`super::usage::hourly`], [`super::usage::rebuild`]) count delivery rows for that metric.
//! A second `usage_event` row per delivery, as written before, doubled the rows and index
//! entries of the busiest metric (docs/architecture.md, "Usage metering").

use protocol::delivery::DeliveryRecord;
use sqlx::PgConnection;

use super::OrgDb;

/// Inserts the records and meters the new ones; a delivery already recorded (a redelivery)
/// is left as it is and not metered again. Records without an org are skipped (they belong in
/// the catalog's unclaimed table). Takes the usage lock of the records' orgs (see
/// [`super::usage`]) until the transaction ends. Returns how many deliveries were new.
pub async fn insert_many(
    conn: &mut PgConnection,
    records: &[&DeliveryRecord],
) -> Result<u64, sqlx::Error> {
    let records: Vec<&&DeliveryRecord> = records.iter().filter(|r| r.org_id.is_some()).collect();
    if records.is_empty() {
        return Ok(0);
    }
    let orgs: Vec<i64> = records
        .iter()
        .filter_map(|r| r.org_id.map(|o| o.0))
        .collect();
    let ids: Vec<&str> = records.iter().map(|r| r.delivery_id.as_ref()).collect();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    let actions: Vec<Option<&str>> = records.iter().map(|r| r.action.as_deref()).collect();
    let inst: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.installation_id.map(|i| i.0))
        .collect();
    let repos: Vec<Option<&str>> = records.iter().map(|r| r.repo.as_deref()).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    let counts: Vec<i32> = records
        .iter()
        .map(|r| i32::try_from(r.jobs.len()).unwrap_or(i32::MAX))
        .collect();
    let regions: Vec<&str> = records.iter().map(|r| r.received_in.as_str()).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = records.iter().map(|r| r.received_at).collect();
    super::usage::lock_orgs(&mut *conn, orgs.iter().copied().collect()).await?;
    // The rollup's day is the UTC date of `received_at`, as for every usage event.
    let new = sqlx::query_scalar!(
        r#"with new as (
               insert into delivery (org_id, delivery_id, event, action, installation_id, repo,
                                     outcome, job_count, received_in, received_at)
               select * from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                                    $6::text[], $7::text[], $8::int[], $9::text[], $10::timestamptz[])
               on conflict (org_id, delivery_id) do nothing
               returning org_id, repo, received_at
           ),
           sums as (
               select org_id, (received_at at time zone 'UTC')::date as day,
                      coalesce(repo, '') as repo, count(*)::bigint as quantity
               from new group by 1, 2, 3
           ),
           rolled as (
               insert into usage_daily (org_id, day, metric, repo, quantity)
               select org_id, day, 'webhook_deliveries', repo, quantity from sums
               on conflict (org_id, day, metric, repo)
               do update set quantity = usage_daily.quantity + excluded.quantity
           )
           select coalesce(sum(quantity), 0)::bigint as "new!" from sums"#,
        &orgs,
        &ids as &[&str],
        &events as &[&str],
        &actions as &[Option<&str>],
        &inst as &[Option<i64>],
        &repos as &[Option<&str>],
        &outcomes as &[&str],
        &counts,
        &regions as &[&str],
        &at
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(new).unwrap_or_default())
}

/// Whether the org has a delivery with this id.
pub async fn exists(db: &OrgDb, delivery_id: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"select count(*) as "n!" from delivery where org_id = $1 and delivery_id = $2"#,
        db.org().0,
        delivery_id
    )
    .fetch_one(db.pool())
    .await?;
    Ok(n > 0)
}
