//! The catalog and the shard router.
//!
//! The router holds the [`ShardMap`] and one lazily-connected pool per shard behind an
//! atomically swappable pointer: [`ShardRouter::route`] finds an org's shard and pool with a
//! binary search and no I/O; [`ShardRouter::reload`] re-reads the map from the catalog and
//! swaps it in, keeping the pools of shards whose connection string did not change.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::config::DatabaseConfig;
use crate::ids::OrgId;
use crate::region::Region;
use crate::shardmap::{Range, Shard, ShardMap, ShardMapError};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the catalog's shard map is invalid: {0}")]
    Map(#[from] ShardMapError),
    #[error("shard {shard} has an invalid region: {region}")]
    Region { shard: String, region: String },
}

/// Pool settings applied to the catalog and every shard.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl PoolSettings {
    pub fn catalog(cfg: &DatabaseConfig) -> Self {
        Self {
            max_connections: cfg.max_connections,
            min_connections: cfg.min_connections,
            acquire_timeout: cfg.acquire_timeout,
            statement_timeout: cfg.statement_timeout,
        }
    }

    pub fn shards(cfg: &DatabaseConfig) -> Self {
        Self {
            max_connections: cfg.shard_max_connections,
            ..Self::catalog(cfg)
        }
    }

    /// A pool that connects on first use, so an unreachable shard does not stop start-up.
    pub fn lazy_pool(&self, dsn: &str) -> Result<PgPool, sqlx::Error> {
        let opts = PgConnectOptions::from_str(dsn)?.options([(
            "statement_timeout",
            format!("{}", self.statement_timeout.as_millis()),
        )]);
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(opts))
    }
}

/// Connects to the catalog (eagerly: a service cannot work without it).
pub async fn connect_catalog(cfg: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let settings = PoolSettings::catalog(cfg);
    let pool = settings.lazy_pool(cfg.catalog_url.expose_secret())?;
    pool.acquire().await?;
    Ok(pool)
}

/// An org's shard and its pool.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub name: String,
    pub region: Region,
    pub pool: PgPool,
}

/// One consistent snapshot of the map and its pools.
#[derive(Debug)]
pub struct Routes {
    pub map: ShardMap,
    pools: HashMap<String, PgPool>,
}

impl Routes {
    pub fn handle(&self, shard: &Shard) -> Option<ShardHandle> {
        self.pools.get(&shard.name).map(|pool| ShardHandle {
            name: shard.name.clone(),
            region: shard.region.clone(),
            pool: pool.clone(),
        })
    }
}

/// The shard router; cheap to share (`Arc`).
#[derive(Debug)]
pub struct ShardRouter {
    catalog: PgPool,
    settings: PoolSettings,
    current: ArcSwap<Routes>,
}

impl ShardRouter {
    /// Reads the map from the catalog and prepares a pool per shard.
    pub async fn load(catalog: PgPool, settings: PoolSettings) -> Result<Self, DbError> {
        let map = read_map(&catalog).await?;
        let pools = map
            .shards()
            .map(|s| Ok((s.name.clone(), settings.lazy_pool(&s.dsn)?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
        Ok(Self {
            catalog,
            settings,
            current: ArcSwap::from_pointee(Routes { map, pools }),
        })
    }

    pub fn catalog(&self) -> &PgPool {
        &self.catalog
    }

    /// Re-reads the map and swaps it in atomically. Pools of unchanged shards are kept.
    pub async fn reload(&self) -> Result<(), DbError> {
        let map = read_map(&self.catalog).await?;
        let old = self.current.load();
        let mut pools = HashMap::new();
        for s in map.shards() {
            let same = old.map.shard(&s.name).is_some_and(|o| o.dsn == s.dsn);
            let pool = match (same, old.pools.get(&s.name)) {
                (true, Some(p)) => p.clone(),
                _ => self.settings.lazy_pool(&s.dsn)?,
            };
            pools.insert(s.name.clone(), pool);
        }
        self.current.store(Arc::new(Routes { map, pools }));
        Ok(())
    }

    /// The current snapshot.
    pub fn routes(&self) -> Arc<Routes> {
        self.current.load_full()
    }

    /// The shard of `org`, without I/O; `None` when no range holds it.
    pub fn route(&self, org: OrgId) -> Option<ShardHandle> {
        let routes = self.current.load();
        let shard = routes.map.locate(org)?;
        routes.handle(shard)
    }

    /// Every shard with its pool (for migrations and scatter-gather).
    pub fn all(&self) -> Vec<ShardHandle> {
        let routes = self.current.load();
        routes
            .map
            .shards()
            .filter_map(|s| routes.handle(s))
            .collect()
    }
}

/// Reads and validates the shard map stored in the catalog.
pub async fn read_map(catalog: &PgPool) -> Result<ShardMap, DbError> {
    let shards: Vec<(String, String, String)> =
        sqlx::query_as("select name, region, dsn from shard order by name")
            .fetch_all(catalog)
            .await?;
    let ranges: Vec<(i64, i64, String)> = sqlx::query_as(
        "select range_start, range_end, shard from shard_range order by range_start",
    )
    .fetch_all(catalog)
    .await?;
    let shards = shards
        .into_iter()
        .map(|(name, region, dsn)| {
            let region = Region::new(region.clone()).map_err(|_| DbError::Region {
                shard: name.clone(),
                region,
            })?;
            Ok(Shard { name, region, dsn })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let ranges = ranges
        .into_iter()
        .map(|(start, end, shard)| Range { start, end, shard })
        .collect();
    Ok(ShardMap::new(shards, ranges)?)
}
