//! Schema migrations: `migrations/catalog` on the catalog, `migrations/shard` on every shard
//! registered in it. Idempotent: applied migrations are recorded and skipped.
//!
//! Migrations run without the pools' `statement_timeout` (10 s in the chart): one that
//! rewrites or deletes from a large table may take minutes, and the `migrate` Job's own
//! deadline (`migrations.activeDeadlineSeconds`) bounds it instead.

use protocol::service::db::ShardRouter;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

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
    run(&CATALOG, pool).await.map_err(MigrateError::Catalog)
}

/// Migrates every shard of the router's map; returns the shards migrated.
pub async fn shards(router: &ShardRouter) -> Result<Vec<String>, MigrateError> {
    let mut done = Vec::new();
    for shard in router.all() {
        run(&SHARD, &shard.pool)
            .await
            .map_err(|source| MigrateError::Shard {
                shard: shard.name.clone(),
                source,
            })?;
        done.push(shard.name);
    }
    Ok(done)
}

/// Runs `migrator` against `pool`'s database on a connection of its own with no statement
/// timeout (closed afterwards, so the setting never reaches the pool's other users).
pub async fn run(migrator: &Migrator, pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("set statement_timeout = 0")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let result = migrator.run(&own).await;
    own.close().await;
    result
}
