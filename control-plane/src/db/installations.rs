//! `installation`: GitHub App installations and the org that claimed each.

use chrono::{DateTime, Utc};
use protocol::{InstallationId, OrgId};
use sqlx::PgPool;

#[derive(Clone, Debug)]
pub struct InstallationRow {
    pub installation_id: i64,
    pub org_id: i64,
    pub account_login: Option<String>,
    pub account_type: Option<String>,
    pub status: String,
    pub repositories: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("installation is claimed by another org")]
    ClaimedElsewhere,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What GitHub says about an installation when it is bound.
#[derive(Clone, Debug, Default)]
pub struct Described<'a> {
    pub account_login: Option<&'a str>,
    pub account_type: Option<&'a str>,
    pub suspended: bool,
    /// `all` or `selected`.
    pub repository_selection: Option<&'a str>,
    pub repositories: Option<Vec<String>>,
}

/// Binds an installation to `org`. Binding it to the same org again refreshes it; an
/// installation claimed by another org is refused.
pub async fn bind(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    installation: InstallationId,
    d: &Described<'_>,
) -> Result<InstallationRow, BindError> {
    let status = if d.suspended { "suspended" } else { "active" };
    let repos = d.repositories.as_ref().map(|r| serde_json::json!(r));
    let row = sqlx::query_as!(
        InstallationRow,
        r#"insert into installation (installation_id, org_id, account_login, account_type, status, repositories, repository_selection)
           values ($1, $2, $3, $4, $5, coalesce($6, '[]'::jsonb), coalesce($7, 'selected'))
           on conflict (installation_id) do update
               set account_login = coalesce(excluded.account_login, installation.account_login),
                   account_type = coalesce(excluded.account_type, installation.account_type),
                   status = excluded.status,
                   repositories = coalesce($6, installation.repositories),
                   repository_selection = coalesce($7, installation.repository_selection),
                   updated_at = now()
               where installation.org_id = excluded.org_id
           returning installation_id, org_id, account_login, account_type, status, repositories, created_at"#,
        installation.0,
        org.0,
        d.account_login,
        d.account_type,
        status,
        repos,
        d.repository_selection
    )
    .fetch_optional(conn)
    .await?;
    row.ok_or(BindError::ClaimedElsewhere)
}

pub async fn get(
    catalog: &PgPool,
    installation: InstallationId,
) -> Result<Option<InstallationRow>, sqlx::Error> {
    sqlx::query_as!(
        InstallationRow,
        r#"select installation_id, org_id, account_login, account_type, status, repositories, created_at
           from installation where installation_id = $1"#,
        installation.0
    )
    .fetch_optional(catalog)
    .await
}

/// Sets a bound installation's status; returns its org, if bound.
pub async fn set_status(
    conn: &mut sqlx::PgConnection,
    installation: InstallationId,
    status: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "update installation set status = $2, updated_at = now() where installation_id = $1 returning org_id",
        installation.0,
        status
    )
    .fetch_optional(conn)
    .await
}

/// Adds and removes repositories of a bound installation; returns its org, if bound.
pub async fn change_repositories(
    conn: &mut sqlx::PgConnection,
    installation: InstallationId,
    added: &[String],
    removed: &[String],
    selection: Option<&str>,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"update installation set
               repositories = (
                   select coalesce(jsonb_agg(distinct r), '[]'::jsonb) from (
                       select jsonb_array_elements_text(repositories) as r
                       union select unnest($2::text[])
                   ) all_repos where r <> all($3::text[])
               ),
               repository_selection = coalesce($4, repository_selection),
               updated_at = now()
           where installation_id = $1
           returning org_id"#,
        installation.0,
        added,
        removed,
        selection
    )
    .fetch_optional(conn)
    .await
}

/// Removes the binding (the App was uninstalled); returns the org it belonged to.
pub async fn unbind(
    conn: &mut sqlx::PgConnection,
    installation: InstallationId,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "delete from installation where installation_id = $1 returning org_id",
        installation.0
    )
    .fetch_optional(conn)
    .await
}

pub async fn list_for_org(
    catalog: &PgPool,
    org: OrgId,
) -> Result<Vec<InstallationRow>, sqlx::Error> {
    sqlx::query_as!(
        InstallationRow,
        r#"select installation_id, org_id, account_login, account_type, status, repositories, created_at
           from installation where org_id = $1 order by created_at"#,
        org.0
    )
    .fetch_all(catalog)
    .await
}

/// The org an installation belongs to, with the installation's and the org's status.
#[derive(Clone, Debug)]
pub struct Owner {
    pub org_id: i64,
    pub region: String,
    pub plan: String,
    pub installation_status: String,
    pub org_status: String,
}

pub async fn owner(
    catalog: &PgPool,
    installation: InstallationId,
) -> Result<Option<Owner>, sqlx::Error> {
    sqlx::query_as!(
        Owner,
        r#"select i.org_id, o.region, o.plan, i.status as installation_status, o.status as org_status
           from installation i join org o on o.id = i.org_id
           where i.installation_id = $1"#,
        installation.0
    )
    .fetch_optional(catalog)
    .await
}
