//! `api_key`: hashed API keys, found by prefix.

use chrono::{DateTime, Utc};
use protocol::OrgId;
use sqlx::{PgConnection, PgPool};

pub struct NewApiKey<'a> {
    pub org: OrgId,
    pub user_id: Option<&'a str>,
    pub name: &'a str,
    pub role: &'a str,
    pub prefix: &'a str,
    pub hash: &'a [u8],
}

/// Stores a key; returns its id.
pub async fn insert(conn: &mut PgConnection, k: NewApiKey<'_>) -> Result<String, sqlx::Error> {
    let id = format!("key_{}", uuid::Uuid::new_v4().simple());
    sqlx::query!(
        "insert into api_key (id, org_id, user_id, name, role, prefix, secret_hash)
         values ($1, $2, $3, $4, $5, $6, $7)",
        id,
        k.org.0,
        k.user_id,
        k.name,
        k.role,
        k.prefix,
        k.hash
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// A key found by its prefix, with what authentication needs to decide about it.
#[derive(Clone, Debug)]
pub struct KeyLookup {
    pub id: String,
    pub org_id: i64,
    pub user_id: Option<String>,
    /// The key's own role.
    pub role: String,
    /// The member's current role, for keys issued to a member (`None` when the member left).
    pub member_role: Option<String>,
    pub secret_hash: Vec<u8>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn find_by_id(catalog: &PgPool, id: &str) -> Result<Option<KeyLookup>, sqlx::Error> {
    sqlx::query_as!(
        KeyLookup,
        r#"select k.id, k.org_id, k.user_id, k.role, m.role as "member_role?", k.secret_hash, k.revoked_at
           from api_key k
           left join membership m on m.org_id = k.org_id and m.user_id = k.user_id
           where k.id = $1"#,
        id
    )
    .fetch_optional(catalog)
    .await
}

pub async fn find_by_prefix(
    catalog: &PgPool,
    prefix: &str,
) -> Result<Option<KeyLookup>, sqlx::Error> {
    sqlx::query_as!(
        KeyLookup,
        r#"select k.id, k.org_id, k.user_id, k.role, m.role as "member_role?", k.secret_hash, k.revoked_at
           from api_key k
           left join membership m on m.org_id = k.org_id and m.user_id = k.user_id
           where k.prefix = $1"#,
        prefix
    )
    .fetch_optional(catalog)
    .await
}

#[derive(Clone, Debug)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub user_id: Option<String>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The org's keys, newest first (no secrets).
pub async fn list(
    catalog: &PgPool,
    org: OrgId,
    before: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let (at, id) = before.map_or((None, None), |(a, i)| (Some(a), Some(i)));
    sqlx::query_as!(
        KeyRow,
        "select id, name, role, user_id, prefix, created_at, last_used_at, revoked_at from api_key
         where org_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3::text))
         order by created_at desc, id desc limit $4",
        org.0,
        at,
        id,
        limit
    )
    .fetch_all(catalog)
    .await
}

/// Revokes a key of the org; `false` if the org has no such key. Revoking twice is fine.
pub async fn revoke(conn: &mut PgConnection, org: OrgId, id: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query!(
        "update api_key set revoked_at = coalesce(revoked_at, now()) where org_id = $1 and id = $2",
        org.0,
        id
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Notes that a key was used, at most once a minute per key (cheap to call on every request).
pub async fn touch(catalog: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update api_key set last_used_at = now()
         where id = $1 and (last_used_at is null or last_used_at < now() - interval '1 minute')",
        id
    )
    .execute(catalog)
    .await?;
    Ok(())
}
