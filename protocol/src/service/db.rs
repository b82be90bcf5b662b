//! The catalog and the shard router.
//!
//! The router holds the [`ShardMap`] and one lazily-connected pool per shard behind an
//! atomically swappable pointer: [`ShardRouter::route`] finds an org's shard and pool with a
//! binary search and no I/O; [`ShardRouter::reload`] re-reads the map from the catalog and
//! swaps it in, keeping the pools of shards whose connection string did not change.
//!
//! Each shard also has a circuit breaker, [`ShardHealth`]: [`ShardRouter::probe`] checks every
//! shard with `select 1` on a schedule, and after `shard_down_after` failures in a row the
//! shard is marked down. Callers check [`ShardHandle::down`] before using a shard, so the orgs
//! of a shard that does not answer are refused at once, without waiting for a pool timeout,
//! while every other shard is served as before. The first successful probe closes it again.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
    /// Failed probes in a row that mark a shard down.
    pub down_after: u32,
}

impl PoolSettings {
    pub fn catalog(cfg: &DatabaseConfig) -> Self {
        Self {
            max_connections: cfg.max_connections,
            min_connections: cfg.min_connections,
            acquire_timeout: cfg.acquire_timeout,
            statement_timeout: cfg.statement_timeout,
            down_after: cfg.shard_down_after.max(1),
        }
    }

    pub fn shards(cfg: &DatabaseConfig) -> Self {
        Self {
            max_connections: cfg.shard_max_connections,
            ..Self::catalog(cfg)
        }
    }

    fn conn(&self, dsn: &str) -> Result<Conn, sqlx::Error> {
        Ok(Conn {
            pool: self.lazy_pool(dsn)?,
            health: Arc::new(ShardHealth::new(self.down_after)),
        })
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

/// The circuit breaker of one shard: closed (up) until `down_after` probes in a row fail,
/// open (down) until one succeeds.
#[derive(Debug)]
pub struct ShardHealth {
    down_after: u32,
    failures: AtomicU32,
    /// Whether the breaker is open: read on every request, so the lock below is only taken
    /// for a shard that is down (or by the prober).
    open: AtomicBool,
    /// When the shard was marked down, and why; `None` while it is up.
    down: Mutex<Option<(Instant, String)>>,
}

/// What [`ShardHealth::down`] reports about a shard that is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub since: Duration,
    pub reason: String,
}

impl ShardHealth {
    pub fn new(down_after: u32) -> Self {
        Self {
            down_after: down_after.max(1),
            failures: AtomicU32::new(0),
            open: AtomicBool::new(false),
            down: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some` while the breaker is open.
    pub fn down(&self) -> Option<Down> {
        if !self.open.load(Ordering::Acquire) {
            return None;
        }
        self.state().as_ref().map(|(at, reason)| Down {
            since: at.elapsed(),
            reason: reason.clone(),
        })
    }

    pub fn is_up(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// A probe succeeded: the breaker closes. Returns whether it was open.
    pub fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        let mut g = self.state();
        self.open.store(false, Ordering::Release);
        g.take().is_some()
    }

    /// A probe failed; after `down_after` in a row the breaker opens. Returns whether this
    /// failure opened it.
    pub fn failed(&self, reason: &str) -> bool {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n < self.down_after {
            return false;
        }
        let mut g = self.state();
        if g.is_some() {
            return false;
        }
        *g = Some((Instant::now(), reason.to_owned()));
        self.open.store(true, Ordering::Release);
        true
    }
}

/// An org's shard, its pool and its breaker.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub name: String,
    pub region: Region,
    pub pool: PgPool,
    pub health: Arc<ShardHealth>,
}

impl ShardHandle {
    /// `Some` while the shard's breaker is open: callers answer "unavailable" without I/O.
    pub fn down(&self) -> Option<Down> {
        self.health.down()
    }
}

/// A shard's pool and breaker, kept together across map reloads.
#[derive(Clone, Debug)]
struct Conn {
    pool: PgPool,
    health: Arc<ShardHealth>,
}

/// One consistent snapshot of the map and its pools.
#[derive(Debug)]
pub struct Routes {
    pub map: ShardMap,
    pools: HashMap<String, Conn>,
}

impl Routes {
    pub fn handle(&self, shard: &Shard) -> Option<ShardHandle> {
        self.pools.get(&shard.name).map(|c| ShardHandle {
            name: shard.name.clone(),
            region: shard.region.clone(),
            pool: c.pool.clone(),
            health: c.health.clone(),
        })
    }
}

/// The result of probing one shard.
#[derive(Clone, Debug)]
pub struct Probe {
    pub shard: String,
    pub up: bool,
    /// Whether this probe changed the shard's state (opened or closed its breaker).
    pub changed: bool,
    pub error: Option<String>,
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
            .map(|s| Ok((s.name.clone(), settings.conn(&s.dsn)?)))
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
            let conn = match (same, old.pools.get(&s.name)) {
                (true, Some(c)) => c.clone(),
                _ => self.settings.conn(&s.dsn)?,
            };
            pools.insert(s.name.clone(), conn);
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

    /// The name of `org`'s shard, without I/O (and without cloning its pool); `None` when no
    /// range holds it.
    pub fn shard_name(&self, org: OrgId) -> Option<String> {
        self.current.load().map.locate(org).map(|s| s.name.clone())
    }

    /// Probes every shard at once (`select 1` within `timeout`) and updates its breaker.
    pub async fn probe(&self, timeout: Duration) -> Vec<Probe> {
        let shards = self.all();
        futures::future::join_all(shards.into_iter().map(|h| async move {
            let res = tokio::time::timeout(timeout, sqlx::query("select 1").execute(&h.pool)).await;
            let error = match res {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {timeout:?}")),
            };
            let changed = match &error {
                None => h.health.succeeded(),
                Some(e) => h.health.failed(e),
            };
            Probe {
                shard: h.name,
                up: h.health.is_up(),
                changed,
                error,
            }
        }))
        .await
    }

    /// Probes every shard each `every` until `shutdown`, logging each shard that goes down or
    /// comes back, and handing every probe to `observe` (metrics).
    pub async fn watch_health(
        &self,
        every: Duration,
        timeout: Duration,
        shutdown: tokio_util::sync::CancellationToken,
        mut observe: impl FnMut(&Probe),
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            for p in self.probe(timeout).await {
                match (p.changed, p.up) {
                    (true, false) => tracing::warn!(
                        shard = %p.shard,
                        error = p.error.as_deref().unwrap_or_default(),
                        "shard down: its orgs are refused until it answers"
                    ),
                    (true, true) => tracing::info!(shard = %p.shard, "shard back up"),
                    _ => {}
                }
                observe(&p);
            }
        }
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

/// Whether a shard refused a write because the org's range has moved to another shard
/// (SQLSTATE `SY001`, raised by a range move's fence): reload the map and retry there.
pub fn is_moved(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("SY001"))
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
