//! `invoice`: finalized invoices, in the org's shard (drafts are computed, not stored).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use super::OrgDb;
use crate::billing::invoice::{Line, Totals};

/// A finalized invoice as stored.
#[derive(Debug, Clone)]
pub struct StoredInvoice {
    pub period: String,
    pub number: String,
    pub plan: String,
    pub currency: String,
    pub lines: Vec<Line>,
    pub subtotal_minor: i64,
    pub total_minor: i64,
    pub finalized_at: DateTime<Utc>,
}

/// The org's usage in `[from, to)`, from the rollup.
pub async fn totals(
    pool: &PgPool,
    org: i64,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Totals, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select metric as "metric!", sum(quantity)::bigint as "quantity!"
           from usage_daily where org_id = $1 and day >= $2 and day < $3
           group by metric"#,
        org,
        from,
        to,
    )
    .fetch_all(pool)
    .await?;
    let mut t = Totals::default();
    for r in rows {
        match r.metric.as_str() {
            "webhook_deliveries" => t.webhook_deliveries = r.quantity,
            "job_seconds" => t.job_seconds = r.quantity,
            "llm_tokens" => t.llm_tokens = r.quantity,
            _ => {}
        }
    }
    Ok(t)
}

/// An invoice row as read.
struct Row {
    period: String,
    number: String,
    plan: String,
    currency: String,
    lines: serde_json::Value,
    subtotal_minor: i64,
    total_minor: i64,
    finalized_at: DateTime<Utc>,
}

impl TryFrom<Row> for StoredInvoice {
    type Error = sqlx::Error;

    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        Ok(StoredInvoice {
            lines: serde_json::from_value(r.lines).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            period: r.period,
            number: r.number,
            plan: r.plan,
            currency: r.currency,
            subtotal_minor: r.subtotal_minor,
            total_minor: r.total_minor,
            finalized_at: r.finalized_at,
        })
    }
}

/// The org's finalized invoice of `period`.
pub async fn get(db: &OrgDb, period: &str) -> Result<Option<StoredInvoice>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        r#"select period, number, plan, currency, lines, subtotal_minor, total_minor, finalized_at
           from invoice where org_id = $1 and period = $2"#,
        db.org().0,
        period,
    )
    .fetch_optional(db.pool())
    .await?
    .map(StoredInvoice::try_from)
    .transpose()
}

/// The org's finalized invoices, newest period first.
pub async fn list(db: &OrgDb) -> Result<Vec<StoredInvoice>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        r#"select period, number, plan, currency, lines, subtotal_minor, total_minor, finalized_at
           from invoice where org_id = $1 order by period desc"#,
        db.org().0,
    )
    .fetch_all(db.pool())
    .await?
    .into_iter()
    .map(StoredInvoice::try_from)
    .collect()
}

/// Stores a finalized invoice unless the org's period already has one. Returns whether it
/// was new.
pub async fn finalize(pool: &PgPool, org: i64, inv: &StoredInvoice) -> Result<bool, sqlx::Error> {
    let lines = serde_json::to_value(&inv.lines).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let done = sqlx::query!(
        r#"insert into invoice (org_id, period, number, plan, currency, lines, subtotal_minor, total_minor)
           values ($1, $2, $3, $4, $5, $6, $7, $8)
           on conflict (org_id, period) do nothing"#,
        org,
        inv.period,
        inv.number,
        inv.plan,
        inv.currency,
        lines,
        inv.subtotal_minor,
        inv.total_minor,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Usage in `[from, to)` of each of `orgs` (all on the shard of `pool`), from the rollup, in
/// one query. Orgs without usage are absent.
pub async fn totals_of(
    pool: &PgPool,
    orgs: &[i64],
    from: NaiveDate,
    to: NaiveDate,
) -> Result<HashMap<i64, Totals>, sqlx::Error> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "select org_id, metric, sum(quantity)::bigint from usage_daily
         where org_id = any($1) and day >= $2 and day < $3
         group by org_id, metric",
    )
    .bind(orgs)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<i64, Totals> = HashMap::new();
    for (org, metric, quantity) in rows {
        let t = out.entry(org).or_default();
        match metric.as_str() {
            "webhook_deliveries" => t.webhook_deliveries = quantity,
            "job_seconds" => t.job_seconds = quantity,
            "llm_tokens" => t.llm_tokens = quantity,
            _ => {}
        }
    }
    Ok(out)
}

/// A finalized invoice's plan and total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finalized {
    pub plan: String,
    pub total_minor: i64,
}

/// The finalized invoices of `period` of each of `orgs` (all on the shard of `pool`).
pub async fn finalized_of(
    pool: &PgPool,
    orgs: &[i64],
    period: &str,
) -> Result<HashMap<i64, Finalized>, sqlx::Error> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "select org_id, plan, total_minor from invoice where org_id = any($1) and period = $2",
    )
    .bind(orgs)
    .bind(period)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(org, plan, total_minor)| (org, Finalized { plan, total_minor }))
        .collect())
}

/// Stores finalized invoices (all on the shard of `pool`) in one statement, each unless its
/// org's period already has one. Returns how many were new.
pub async fn finalize_all(
    pool: &PgPool,
    invoices: &[(i64, StoredInvoice)],
) -> Result<u64, sqlx::Error> {
    if invoices.is_empty() {
        return Ok(0);
    }
    let mut orgs = Vec::with_capacity(invoices.len());
    let mut periods = Vec::with_capacity(invoices.len());
    let mut numbers = Vec::with_capacity(invoices.len());
    let mut plans = Vec::with_capacity(invoices.len());
    let mut currencies = Vec::with_capacity(invoices.len());
    let mut lines = Vec::with_capacity(invoices.len());
    let mut subtotals = Vec::with_capacity(invoices.len());
    let mut totals = Vec::with_capacity(invoices.len());
    for (org, inv) in invoices {
        orgs.push(*org);
        periods.push(inv.period.clone());
        numbers.push(inv.number.clone());
        plans.push(inv.plan.clone());
        currencies.push(inv.currency.clone());
        lines.push(serde_json::to_value(&inv.lines).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        subtotals.push(inv.subtotal_minor);
        totals.push(inv.total_minor);
    }
    let done = sqlx::query(
        "insert into invoice (org_id, period, number, plan, currency, lines, subtotal_minor, total_minor)
         select * from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::jsonb[], $7::bigint[], $8::bigint[])
         on conflict (org_id, period) do nothing",
    )
    .bind(&orgs)
    .bind(&periods)
    .bind(&numbers)
    .bind(&plans)
    .bind(&currencies)
    .bind(&lines)
    .bind(&subtotals)
    .bind(&totals)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
