//! Operating the shards: registering a shard (reachable, migrated, then in the map), opening
//! id ranges, the registry as operators read it (ranges, org counts, health), `verify` (schema
//! drift and range invariants), and online range moves ([`moves`]).
//!
//! The API (`/v1/admin/shards…`) and the CLI (`control-plane shards …`) both call these, so
//! the two never disagree.

pub mod moves;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use protocol::service::db::ShardRouter;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::db::migrate::SHARD;
use crate::db::shards::{self, ShardWriteError};

/// How long registering a shard waits for its database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("shard names are 1–63 characters of a–z, 0–9 and '-', starting with a letter")]
    BadName,
    #[error("cannot connect to the shard's database: {0}")]
    Unreachable(String),
    #[error("cannot migrate the shard's database: {0}")]
    Migrate(String),
    #[error(transparent)]
    Write(#[from] ShardWriteError),
}

pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Connects to a shard database outside the router (registration, verification, moves).
pub async fn connect(dsn: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(dsn)
        .await
}

/// Registers a shard: its database must answer and is migrated first, so a shard is in the
/// map only once it can hold orgs. Registering the same shard again is a no-op.
pub async fn register(
    catalog: &PgPool,
    name: &str,
    region: &str,
    dsn: &str,
) -> Result<(), RegisterError> {
    if !valid_name(name) {
        return Err(RegisterError::BadName);
    }
    if crate::db::regions::get(catalog, region)
        .await
        .map_err(ShardWriteError::from)?
        .is_none()
    {
        return Err(ShardWriteError::UnknownRegion(region.to_owned()).into());
    }
    let pool = tokio::time::timeout(CONNECT_TIMEOUT, connect(dsn, 1))
        .await
        .map_err(|_| RegisterError::Unreachable("no answer within 5s".into()))?
        .map_err(|e| RegisterError::Unreachable(e.to_string()))?;
    let migrated = SHARD
        .run(&pool)
        .await
        .map_err(|e| RegisterError::Migrate(e.to_string()));
    pool.close().await;
    migrated?;
    shards::add(catalog, name, region, dsn).await?;
    Ok(())
}

/// A shard as operators see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ShardInfo {
    pub name: String,
    pub region: String,
    pub ranges: Vec<RangeInfo>,
    /// Orgs (not deleted) whose ids fall in the shard's ranges.
    pub orgs: i64,
    /// `up`, or `down` while its circuit breaker is open (its orgs get `503`).
    pub health: String,
    /// Seconds since it was marked down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_seconds: Option<f64>,
    /// Why its last probes failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RangeInfo {
    pub start: i64,
    pub end: i64,
    /// The next id this range hands out.
    pub next_id: i64,
    /// Whether new orgs are placed in it.
    pub open: bool,
}

/// Every shard with its ranges, org count and health (as this process's breakers see it).
pub async fn list(catalog: &PgPool, router: &ShardRouter) -> Result<Vec<ShardInfo>, sqlx::Error> {
    let map = protocol::service::db::read_map(catalog)
        .await
        .map_err(|e| match e {
            protocol::service::db::DbError::Sql(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    let ranges = shards::ranges(catalog).await?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "select r.shard, count(o.id)
           from shard_range r
           join org o on o.id >= r.range_start and o.id < r.range_end and o.status <> 'deleted'
          group by r.shard",
    )
    .fetch_all(catalog)
    .await?;
    let counts: BTreeMap<String, i64> = counts.into_iter().collect();
    let handles: BTreeMap<String, _> = router
        .all()
        .into_iter()
        .map(|h| (h.name.clone(), h))
        .collect();
    Ok(map
        .shards()
        .map(|s| {
            let down = handles
                .get(&s.name)
                .and_then(protocol::service::db::ShardHandle::down);
            ShardInfo {
                name: s.name.clone(),
                region: s.region.to_string(),
                ranges: ranges
                    .iter()
                    .filter(|r| r.shard == s.name)
                    .map(|r| RangeInfo {
                        start: r.start,
                        end: r.end,
                        next_id: r.next_id,
                        open: r.open,
                    })
                    .collect(),
                orgs: counts.get(&s.name).copied().unwrap_or(0),
                health: if down.is_some() { "down" } else { "up" }.into(),
                down_for_seconds: down.as_ref().map(|d| d.since.as_secs_f64()),
                error: down.map(|d| d.reason),
            }
        })
        .collect())
}

/// What `shards verify` found on one shard.
#[derive(Clone, Debug, Serialize)]
pub struct ShardReport {
    pub shard: String,
    pub reachable: bool,
    /// Migrations this build has that the shard has not applied.
    pub missing: Vec<i64>,
    /// Migrations applied on the shard with a checksum other than this build's.
    pub changed: Vec<i64>,
    /// Migrations applied on the shard that this build does not know.
    pub unknown: Vec<i64>,
    /// Orgs with rows on this shard whose ids the map gives to another shard or to none
    /// (for example the source copy of a moved range, kept until the operator drops it).
    pub stray_orgs: i64,
    pub error: Option<String>,
}

impl ShardReport {
    pub fn drift(&self) -> bool {
        !self.reachable
            || !self.missing.is_empty()
            || !self.changed.is_empty()
            || !self.unknown.is_empty()
    }
}

/// The whole verification: the map's invariants and every shard's schema.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The map is valid (no empty or overlapping range, every range's shard registered).
    pub map_error: Option<String>,
    /// Orgs in the catalog whose id no range holds.
    pub orgs_outside_ranges: i64,
    pub shards: Vec<ShardReport>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.map_error.is_none()
            && self.orgs_outside_ranges == 0
            && self.shards.iter().all(|s| !s.drift())
    }
}

/// Checks the shard map and compares each shard's applied migrations with this build's.
pub async fn verify(catalog: &PgPool) -> Result<VerifyReport, sqlx::Error> {
    let map = protocol::service::db::read_map(catalog).await;
    let map_error = map.as_ref().err().map(ToString::to_string);
    let orgs_outside_ranges: i64 = sqlx::query_scalar(
        "select count(*) from org o
          where not exists (select 1 from shard_range r
                             where o.id >= r.range_start and o.id < r.range_end)",
    )
    .fetch_one(catalog)
    .await?;
    let shard_rows: Vec<(String, String)> =
        sqlx::query_as("select name, dsn from shard order by name")
            .fetch_all(catalog)
            .await?;
    let mut shards_out = Vec::new();
    for (name, dsn) in shard_rows {
        shards_out.push(verify_shard(&name, &dsn, map.as_ref().ok()).await);
    }
    Ok(VerifyReport {
        map_error,
        orgs_outside_ranges,
        shards: shards_out,
    })
}

async fn verify_shard(
    name: &str,
    dsn: &str,
    map: Option<&protocol::shardmap::ShardMap>,
) -> ShardReport {
    let mut report = ShardReport {
        shard: name.to_owned(),
        reachable: false,
        missing: Vec::new(),
        changed: Vec::new(),
        unknown: Vec::new(),
        stray_orgs: 0,
        error: None,
    };
    let pool = match tokio::time::timeout(CONNECT_TIMEOUT, connect(dsn, 1)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            report.error = Some(e.to_string());
            return report;
        }
        Err(_) => {
            report.error = Some("no answer within 5s".into());
            return report;
        }
    };
    report.reachable = true;
    let applied: Result<Vec<(i64, Vec<u8>)>, sqlx::Error> =
        sqlx::query_as("select version, checksum from _sqlx_migrations where success")
            .fetch_all(&pool)
            .await;
    match applied {
        Ok(applied) => {
            let applied: BTreeMap<i64, Vec<u8>> = applied.into_iter().collect();
            let known: BTreeSet<i64> = SHARD.iter().map(|m| m.version).collect();
            for m in SHARD.iter() {
                match applied.get(&m.version) {
                    None => report.missing.push(m.version),
                    Some(sum) if sum.as_slice() != m.checksum.as_ref() => {
                        report.changed.push(m.version);
                    }
                    Some(_) => {}
                }
            }
            report.unknown = applied
                .keys()
                .filter(|v| !known.contains(v))
                .copied()
                .collect();
        }
        Err(e) => {
            report.error = Some(format!("cannot read its migrations: {e}"));
            report.missing = SHARD.iter().map(|m| m.version).collect();
        }
    }
    if let Some(map) = map {
        let orgs: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar("select org_id from tenant")
            .fetch_all(&pool)
            .await;
        if let Ok(orgs) = orgs {
            let stray = orgs
                .into_iter()
                .filter(|o| {
                    map.locate(protocol::OrgId(*o))
                        .is_none_or(|s| s.name != name)
                })
                .count();
            report.stray_orgs = i64::try_from(stray).unwrap_or(i64::MAX);
        }
    }
    pool.close().await;
    report
}
