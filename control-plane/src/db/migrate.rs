//! Schema migrations: `migrations/catalog` on the catalog, `migrations/shard` on every shard
//! registered in it. Idempotent: applied migrations are recorded and skipped.

use protocol::service::db::ShardRouter;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub static CATALOG: Migrator = sqlx::migrate!("../migrations/catalog");
pub static SHARD: Migrator = sqlx::migrate!("../migrations/shard");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("catalog: {0}")]
    Catalog(#[source] sqlx::migrate::MigrateError),
    #[error("shard {shard}: {source}")]
    Shard {
        shard: String,
        source: sqlx::migrate::MigrateError,
    },
}

pub async fn catalog(pool: &PgPool) -> Result<(), MigrateError> {
    CATALOG.run(pool).await.map_err(MigrateError::Catalog)
}

/// Migrates every shard of the router's map; returns the shards migrated.
pub async fn shards(router: &ShardRouter) -> Result<Vec<String>, MigrateError> {
    let mut done = Vec::new();
    for shard in router.all() {
        SHARD
            .run(&shard.pool)
            .await
            .map_err(|source| MigrateError::Shard {
                shard: shard.name.clone(),
                source,
            })?;
        done.push(shard.name);
    }
    Ok(done)
}
