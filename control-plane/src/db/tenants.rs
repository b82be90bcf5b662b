//! `tenant`: an org's presence on its shard.

use protocol::OrgId;
use sqlx::PgConnection;

pub async fn insert(conn: &mut PgConnection, org: OrgId, slug: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into tenant (org_id, slug) values ($1, $2)",
        org.0,
        slug
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Compensation of onboarding: removes what onboarding wrote to the shard for `org`.
pub async fn remove(conn: &mut PgConnection, org: OrgId) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from trigger_rule where org_id = $1", org.0)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("delete from tenant where org_id = $1", org.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
