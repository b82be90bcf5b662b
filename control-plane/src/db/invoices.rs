//! `invoice`: finalized invoices, in the org's shard (drafts are computed, not stored).

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
