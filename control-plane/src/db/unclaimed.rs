//! `unclaimed_delivery`: deliveries for installations no org has claimed.

use protocol::delivery::DeliveryRecord;
use sqlx::PgPool;

/// Records a batch; a delivery already recorded is left as it is.
pub async fn insert_many(catalog: &PgPool, records: &[&DeliveryRecord]) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.delivery_id.as_ref()).collect();
    let inst: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.installation_id.map(|i| i.0))
        .collect();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    let actions: Vec<Option<&str>> = records.iter().map(|r| r.action.as_deref()).collect();
    let regions: Vec<&str> = records.iter().map(|r| r.received_in.as_str()).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = records.iter().map(|r| r.received_at).collect();
    sqlx::query!(
        r#"insert into unclaimed_delivery (delivery_id, installation_id, event, action, received_in, received_at)
           select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
           on conflict (delivery_id) do nothing"#,
        &ids as &[&str],
        &inst as &[Option<i64>],
        &events as &[&str],
        &actions as &[Option<&str>],
        &regions as &[&str],
        &at
    )
    .execute(catalog)
    .await?;
    Ok(())
}

pub async fn count_for_installation(
    catalog: &PgPool,
    installation: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "n!" from unclaimed_delivery where installation_id = $1"#,
        installation
    )
    .fetch_one(catalog)
    .await
}
