//! `org`: the catalog's directory of organizations, and id placement.

use chrono::{DateTime, Utc};
use protocol::OrgId;
use sqlx::PgPool;

use super::violates;

#[derive(Clone, Debug)]
pub struct OrgRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub region: String,
    pub plan: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Moves with every change of the org's memberships and keys.
    pub authz_version: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("slug is taken")]
    SlugTaken,
    #[error("region {0} has no open id range")]
    NoOpenRange(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Places a new org: takes the next id of an open range on the least-loaded shard of
/// `region` and inserts the org as `creating` (invisible until onboarding activates it).
/// Returns the row and the shard that owns the id.
pub async fn place(
    catalog: &PgPool,
    slug: &str,
    name: &str,
    region: &str,
    plan: &str,
) -> Result<(OrgRow, String), PlaceError> {
    let mut tx = catalog.begin().await?;
    // Load of a shard = ids handed out across its ranges. Locking the chosen range row
    // serializes allocations from it; other ranges stay free.
    let chosen = sqlx::query!(
        r#"with load as (
               select shard, sum(next_id - range_start) as used from shard_range group by shard
           )
           select r.range_start
           from shard_range r
           join shard s on s.name = r.shard
           join load l on l.shard = r.shard
           where s.region = $1 and r.open and r.next_id < r.range_end
           order by l.used, r.range_start
           limit 1
           for update of r"#,
        region
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| PlaceError::NoOpenRange(region.to_owned()))?;
    let alloc = sqlx::query!(
        r#"update shard_range set next_id = next_id + 1 where range_start = $1
           returning next_id - 1 as "id!", shard"#,
        chosen.range_start
    )
    .fetch_one(&mut *tx)
    .await?;
    let row = sqlx::query_as!(
        OrgRow,
        r#"insert into org (id, slug, name, region, plan, status) values ($1, $2, $3, $4, $5, 'creating')
           returning id, slug, name, region, plan, status, created_at, updated_at, authz_version"#,
        alloc.id,
        slug,
        name,
        region,
        plan
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| if violates(&e, "org_slug_key") { PlaceError::SlugTaken } else { e.into() })?;
    tx.commit().await?;
    Ok((row, alloc.shard))
}

/// The org in any status (callers decide what a `creating` or `deleted` org means to them).
pub async fn get(catalog: &PgPool, id: OrgId) -> Result<Option<OrgRow>, sqlx::Error> {
    sqlx::query_as!(
        OrgRow,
        "select id, slug, name, region, plan, status, created_at, updated_at, authz_version from org where id = $1",
        id.0
    )
    .fetch_optional(catalog)
    .await
}

/// Marks a `creating` org `active` (onboarding's last step).
pub async fn activate(conn: &mut sqlx::PgConnection, id: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update org set status = 'active', updated_at = now() where id = $1 and status = 'creating'",
        id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Compensation of [`place`]: removes an org that never became active. Its id is not reused.
pub async fn remove_creating(catalog: &PgPool, id: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from org where id = $1 and status = 'creating'",
        id.0
    )
    .execute(catalog)
    .await?;
    Ok(())
}

/// Renames the org and/or changes its plan. Returns the updated row (`None` if it is not
/// active).
pub async fn update(
    conn: &mut sqlx::PgConnection,
    id: OrgId,
    name: Option<&str>,
    plan: Option<&str>,
) -> Result<Option<OrgRow>, sqlx::Error> {
    sqlx::query_as!(
        OrgRow,
        "update org set name = coalesce($2, name), plan = coalesce($3, plan), updated_at = now()
         where id = $1 and status = 'active'
         returning id, slug, name, region, plan, status, created_at, updated_at, authz_version",
        id.0,
        name,
        plan
    )
    .fetch_optional(conn)
    .await
}

/// Offboards the org: `deleted`, its data kept. Returns the row; an org already deleted is
/// returned unchanged.
pub async fn mark_deleted(
    conn: &mut sqlx::PgConnection,
    id: OrgId,
) -> Result<Option<OrgRow>, sqlx::Error> {
    sqlx::query_as!(
        OrgRow,
        "update org set status = 'deleted', deleted_at = coalesce(deleted_at, now()), updated_at = now()
         where id = $1 and status in ('active', 'deleted')
         returning id, slug, name, region, plan, status, created_at, updated_at, authz_version",
        id.0
    )
    .fetch_optional(conn)
    .await
}

/// An org to invoice.
#[derive(Debug, Clone)]
pub struct Billable {
    pub id: i64,
    pub plan: String,
    pub region: String,
}

/// Orgs to invoice for a period ending at `before`: active or offboarded (their usage of the
/// period is still billed), created before it; with their current plan.
pub async fn billable(
    catalog: &PgPool,
    before: DateTime<Utc>,
) -> Result<Vec<Billable>, sqlx::Error> {
    let rows = sqlx::query!(
        "select id, plan, region from org where status in ('active', 'deleted') and created_at < $1 order by id",
        before
    )
    .fetch_all(catalog)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Billable {
            id: r.id,
            plan: r.plan,
            region: r.region,
        })
        .collect())
}
