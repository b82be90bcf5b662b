//! `region`: the regions and their public API URLs.

use sqlx::PgPool;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RegionRow {
    pub name: String,
    pub api_url: String,
}

/// Registers a region or updates its URL.
pub async fn upsert(catalog: &PgPool, name: &str, api_url: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into region (name, api_url) values ($1, $2)
         on conflict (name) do update set api_url = excluded.api_url",
        name,
        api_url
    )
    .execute(catalog)
    .await?;
    Ok(())
}

pub async fn list(catalog: &PgPool) -> Result<Vec<RegionRow>, sqlx::Error> {
    sqlx::query_as!(RegionRow, "select name, api_url from region order by name")
        .fetch_all(catalog)
        .await
}

pub async fn get(catalog: &PgPool, name: &str) -> Result<Option<RegionRow>, sqlx::Error> {
    sqlx::query_as!(
        RegionRow,
        "select name, api_url from region where name = $1",
        name
    )
    .fetch_optional(catalog)
    .await
}
