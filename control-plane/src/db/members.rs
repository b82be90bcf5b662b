//! `membership`: who belongs to which org, with which role.

use chrono::{DateTime, Utc};
use protocol::OrgId;
use sqlx::{PgConnection, PgPool};

use super::violates;

pub async fn insert(
    conn: &mut PgConnection,
    org: OrgId,
    user_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into membership (org_id, user_id, role) values ($1, $2, $3)",
        org.0,
        user_id,
        role
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Like [`insert`], but `Ok(false)` when the user is already a member.
pub async fn insert_new(
    conn: &mut PgConnection,
    org: OrgId,
    user_id: &str,
    role: &str,
) -> Result<bool, sqlx::Error> {
    match insert(conn, org, user_id, role).await {
        Ok(()) => Ok(true),
        Err(e) if violates(&e, "membership_pkey") => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Clone, Debug)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

pub async fn list(
    catalog: &PgPool,
    org: OrgId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        "select m.user_id, u.email, m.role, m.created_at
         from membership m join app_user u on u.id = m.user_id
         where m.org_id = $1 and ($2::text is null or m.user_id > $2)
         order by m.user_id limit $3",
        org.0,
        after,
        limit
    )
    .fetch_all(catalog)
    .await
}

/// A member's row, locked for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    org: OrgId,
    user_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        "select m.user_id, u.email, m.role, m.created_at
         from membership m join app_user u on u.id = m.user_id
         where m.org_id = $1 and m.user_id = $2
         for update of m",
        org.0,
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// Owners of the org, their rows locked: two concurrent demotions cannot both see a second
/// owner and leave none.
pub async fn lock_owners(conn: &mut PgConnection, org: OrgId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select user_id from membership where org_id = $1 and role = 'owner' order by user_id for update",
        org.0
    )
    .fetch_all(conn)
    .await
}

pub async fn set_role(
    conn: &mut PgConnection,
    org: OrgId,
    user_id: &str,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update membership set role = $3, updated_at = now() where org_id = $1 and user_id = $2",
        org.0,
        user_id,
        role
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the member and revokes the keys issued to them in this org.
pub async fn remove(conn: &mut PgConnection, org: OrgId, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update api_key set revoked_at = now() where org_id = $1 and user_id = $2 and revoked_at is null",
        org.0,
        user_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "delete from membership where org_id = $1 and user_id = $2",
        org.0,
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `(subject, role)` of every credential of the org, for the authorization rules: each
/// unrevoked key, with its member's current role (member keys) or its own (service keys).
pub async fn grants(
    conn: &mut PgConnection,
    org: OrgId,
) -> Result<(i64, Vec<(String, String)>), sqlx::Error> {
    let version = sqlx::query_scalar!("select authz_version from org where id = $1", org.0)
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or(0);
    let rows = sqlx::query!(
        r#"select k.id, coalesce(m.role, k.role) as "role!"
           from api_key k left join membership m on m.org_id = k.org_id and m.user_id = k.user_id
           where k.org_id = $1 and k.revoked_at is null and (k.user_id is null or m.user_id is not null)"#,
        org.0
    )
    .fetch_all(conn)
    .await?;
    Ok((
        version,
        rows.into_iter()
            .map(|r| (format!("key:{}", r.id), r.role))
            .collect(),
    ))
}
