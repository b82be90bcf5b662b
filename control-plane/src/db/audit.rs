//! `audit_log`: append-only record of every mutating admin action, in the org's shard.

use chrono::{DateTime, Utc};
use protocol::OrgId;
use sqlx::PgConnection;

use super::OrgDb;

pub struct Entry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub details: serde_json::Value,
    pub request_id: Option<&'a str>,
}

pub async fn append(conn: &mut PgConnection, org: OrgId, e: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_log (org_id, actor, action, target, details, request_id) values ($1, $2, $3, $4, $5, $6)",
        org.0,
        e.actor,
        e.action,
        e.target,
        e.details,
        e.request_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues an entry for an org whose change is made in the catalog, in the change's own
/// transaction (see `tenancy::audit` for how it reaches the shard).
pub async fn enqueue(conn: &mut PgConnection, org: OrgId, e: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_outbox (org_id, actor, action, target, details, request_id) values ($1, $2, $3, $4, $5, $6)",
        org.0,
        e.actor,
        e.action,
        e.target,
        e.details,
        e.request_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub org_id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

/// Oldest queued entries (of one org, or of all).
pub async fn outbox(
    catalog: &sqlx::PgPool,
    org: Option<OrgId>,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as!(
        OutboxRow,
        "select id, org_id, at, actor, action, target, details, request_id from audit_outbox
         where ($1::bigint is null or org_id = $1) order by id limit $2",
        org.map(|o| o.0),
        limit
    )
    .fetch_all(catalog)
    .await
}

/// Writes a queued entry to the org's shard; a second write of the same entry is a no-op.
pub async fn append_from_outbox(db: &OrgDb, row: &OutboxRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_log (org_id, at, actor, action, target, details, request_id, source_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (org_id, source_id) where source_id is not null do nothing",
        db.org().0,
        row.at,
        row.actor,
        row.action,
        row.target,
        row.details,
        row.request_id,
        row.id
    )
    .execute(db.pool())
    .await?;
    Ok(())
}

pub async fn remove_from_outbox(catalog: &sqlx::PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from audit_outbox where id = $1", id)
        .execute(catalog)
        .await?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub request_id: Option<String>,
}

/// Newest first, strictly before `before_id` when given.
pub async fn list(
    db: &OrgDb,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRow,
        "select id, at, actor, action, target, details, request_id from audit_log
         where org_id = $1 and ($2::bigint is null or id < $2)
         order by id desc limit $3",
        db.org().0,
        before_id,
        limit
    )
    .fetch_all(db.pool())
    .await
}
