//! The org's audit log: every mutating admin action.
//!
//! Changes made in the org's shard write their entry in the same transaction. Changes made in
//! the catalog (memberships, keys, installations, the org row) queue their entry in the
//! catalog's outbox in the same transaction; [`flush`] moves it to the shard — right after
//! the change, and from a background loop for whatever that missed.

use std::time::Duration;

use protocol::OrgId;
use protocol::service::db::ShardRouter;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::{self, OrgDb};
use crate::error::Chain;

/// Moves queued entries (of `org`, or of every org) to their shards. Returns how many moved.
pub async fn flush(
    catalog: &PgPool,
    router: &ShardRouter,
    org: Option<OrgId>,
) -> Result<usize, sqlx::Error> {
    let mut moved = 0;
    loop {
        let rows = db::audit::outbox(catalog, org, 200).await?;
        if rows.is_empty() {
            return Ok(moved);
        }
        let n = rows.len();
        for row in rows {
            let Ok(shard) = OrgDb::for_org(router, OrgId(row.org_id)) else {
                tracing::warn!(
                    org_id = row.org_id,
                    "audit entry of an org no shard holds; kept in the outbox"
                );
                return Ok(moved);
            };
            db::audit::append_from_outbox(&shard, &row).await?;
            db::audit::remove_from_outbox(catalog, row.id).await?;
            moved += 1;
        }
        if n < 200 {
            return Ok(moved);
        }
    }
}

/// Flushes the outbox every second until `shutdown`.
pub async fn run(
    catalog: PgPool,
    router: std::sync::Arc<ShardRouter>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = flush(&catalog, &router, None).await {
            tracing::warn!(error = %Chain(&e), "cannot move audit entries to the shards; will retry");
        }
    }
}
