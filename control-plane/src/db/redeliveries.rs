//! `github_redelivery`: the redeliveries the reconciler asked GitHub for.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RedeliveryRow {
    pub guid: String,
    pub delivery_id: i64,
    pub event: String,
    pub status_code: i32,
    pub requested_at: DateTime<Utc>,
    pub result: String,
}

/// How many redeliveries were asked for `guid`, and when the last was.
pub async fn asked(
    catalog: &PgPool,
    guid: &str,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let r = sqlx::query!(
        r#"select count(*) as "n!", max(requested_at) as last from github_redelivery where guid = $1"#,
        guid
    )
    .fetch_one(catalog)
    .await?;
    Ok((r.n, r.last))
}

pub async fn record(
    catalog: &PgPool,
    guid: &str,
    delivery_id: i64,
    event: &str,
    status_code: i64,
    result: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into github_redelivery (guid, delivery_id, event, status_code, result) values ($1, $2, $3, $4, $5)
         on conflict (guid, delivery_id) do update set result = excluded.result, requested_at = now()",
        guid,
        delivery_id,
        event,
        i32::try_from(status_code).unwrap_or(0),
        result
    )
    .execute(catalog)
    .await?;
    Ok(())
}

pub async fn recent(catalog: &PgPool, limit: i64) -> Result<Vec<RedeliveryRow>, sqlx::Error> {
    sqlx::query_as!(
        RedeliveryRow,
        "select guid, delivery_id, event, status_code, requested_at, result from github_redelivery
         order by requested_at desc limit $1",
        limit
    )
    .fetch_all(catalog)
    .await
}

/// Whether intake has any record of the delivery `guid`: unclaimed in the catalog (the shard
/// of a claimed installation's org is asked separately).
pub async fn unclaimed_has(catalog: &PgPool, guid: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "select 1 as one from unclaimed_delivery where delivery_id = $1",
        guid
    )
    .fetch_optional(catalog)
    .await?
    .is_some())
}
