//! `shard` and `shard_range`: the shard registry and its org-id ranges.

use sqlx::PgPool;

use super::violates;

#[derive(Debug, thiserror::Error)]
pub enum ShardWriteError {
    #[error("shard {0} exists with a different region or connection string")]
    Differs(String),
    #[error("unknown region {0}")]
    UnknownRegion(String),
    #[error("unknown shard {0}")]
    UnknownShard(String),
    #[error("range [{0}, {1}) overlaps an existing range")]
    Overlap(i64, i64),
    #[error("range [{0}, {1}) is empty, reversed or not positive")]
    BadRange(i64, i64),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Registers a shard. Registering the same shard again is a no-op.
pub async fn add(
    catalog: &PgPool,
    name: &str,
    region: &str,
    dsn: &str,
) -> Result<(), ShardWriteError> {
    let res = sqlx::query!(
        "insert into shard (name, region, dsn) values ($1, $2, $3) on conflict (name) do nothing",
        name,
        region,
        dsn
    )
    .execute(catalog)
    .await;
    match res {
        Ok(done) if done.rows_affected() == 1 => Ok(()),
        Ok(_) => {
            let same = sqlx::query_scalar!(
                r#"select (region = $2 and dsn = $3) as "same!" from shard where name = $1"#,
                name,
                region,
                dsn
            )
            .fetch_one(catalog)
            .await?;
            if same {
                Ok(())
            } else {
                Err(ShardWriteError::Differs(name.into()))
            }
        }
        Err(e) if violates(&e, "shard_region_fkey") => {
            Err(ShardWriteError::UnknownRegion(region.into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens `[start, end)` on `shard` for new orgs. Adding exactly the same range again is a
/// no-op; any other overlap is refused.
pub async fn add_range(
    catalog: &PgPool,
    shard: &str,
    start: i64,
    end: i64,
) -> Result<(), ShardWriteError> {
    if start <= 0 || start >= end {
        return Err(ShardWriteError::BadRange(start, end));
    }
    let existing = sqlx::query_scalar!(
        "select shard from shard_range where range_start = $1 and range_end = $2",
        start,
        end
    )
    .fetch_optional(catalog)
    .await?;
    if let Some(owner) = existing {
        return if owner == shard {
            Ok(())
        } else {
            Err(ShardWriteError::Overlap(start, end))
        };
    }
    let res = sqlx::query!(
        "insert into shard_range (range_start, range_end, shard, next_id) values ($1, $2, $3, $1)",
        start,
        end,
        shard
    )
    .execute(catalog)
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if violates(&e, "shard_range_shard_fkey") => {
            Err(ShardWriteError::UnknownShard(shard.into()))
        }
        Err(e) if violates(&e, "shard_range_no_overlap") || violates(&e, "shard_range_pkey") => {
            Err(ShardWriteError::Overlap(start, end))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RangeRow {
    pub start: i64,
    pub end: i64,
    pub shard: String,
    pub next_id: i64,
    pub open: bool,
}

pub async fn ranges(catalog: &PgPool) -> Result<Vec<RangeRow>, sqlx::Error> {
    sqlx::query_as!(
        RangeRow,
        r#"select range_start as start, range_end as "end", shard, next_id, open
           from shard_range order by range_start"#
    )
    .fetch_all(catalog)
    .await
}

/// The catalog's shard-map version; it changes whenever a shard or range does.
pub async fn map_version(catalog: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("select version from shard_map_version")
        .fetch_one(catalog)
        .await
}
