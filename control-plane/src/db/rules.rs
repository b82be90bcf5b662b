//! `trigger_rule`: which events start which jobs, per org.

use protocol::OrgId;
use sqlx::PgConnection;

use super::OrgDb;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRow {
    pub id: String,
    pub event: String,
    pub action: Option<String>,
    pub label: Option<String>,
    pub command: Option<String>,
    pub repos: Option<Vec<String>>,
    pub kind: String,
}

pub async fn list(db: &OrgDb) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as!(
        RuleRow,
        "select id, event, action, label, command, repos, kind
         from trigger_rule where org_id = $1 order by position",
        db.org().0
    )
    .fetch_all(db.pool())
    .await
}

/// Replaces the org's rules with `rules`, in order.
pub async fn replace(
    conn: &mut PgConnection,
    org: OrgId,
    rules: &[RuleRow],
) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from trigger_rule where org_id = $1", org.0)
        .execute(&mut *conn)
        .await?;
    for (position, r) in rules.iter().enumerate() {
        sqlx::query!(
            "insert into trigger_rule (org_id, id, position, event, action, label, command, repos, kind)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            org.0,
            r.id,
            i32::try_from(position).unwrap_or(i32::MAX),
            r.event,
            r.action,
            r.label,
            r.command,
            r.repos.as_deref(),
            r.kind
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
