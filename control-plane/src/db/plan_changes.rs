//! `org_plan_change`: every change of an org's plan with its time, written by a catalog
//! trigger whenever `org.plan` changes (migrations/catalog/0005_plan_change.sql). Invoices read
//! it to prorate a month between plans.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use protocol::OrgId;
use sqlx::PgPool;

use crate::billing::invoice::PlanChange;

type Row = (i64, DateTime<Utc>, String, String);

fn change((_, at, from, to): Row) -> PlanChange {
    PlanChange { at, from, to }
}

/// The org's plan changes after `since`, oldest first.
pub async fn of_org(
    catalog: &PgPool,
    org: OrgId,
    since: DateTime<Utc>,
) -> Result<Vec<PlanChange>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "select org_id, changed_at, from_plan, to_plan from org_plan_change
         where org_id = $1 and changed_at > $2 order by changed_at, id",
    )
    .bind(org.0)
    .bind(since)
    .fetch_all(catalog)
    .await?;
    Ok(rows.into_iter().map(change).collect())
}

/// Every org's plan changes after `since`, oldest first, by org (orgs without one are absent).
pub async fn since(
    catalog: &PgPool,
    since: DateTime<Utc>,
) -> Result<HashMap<i64, Vec<PlanChange>>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "select org_id, changed_at, from_plan, to_plan from org_plan_change
         where changed_at > $1 order by org_id, changed_at, id",
    )
    .bind(since)
    .fetch_all(catalog)
    .await?;
    let mut out: HashMap<i64, Vec<PlanChange>> = HashMap::new();
    for row in rows {
        out.entry(row.0).or_default().push(change(row));
    }
    Ok(out)
}
