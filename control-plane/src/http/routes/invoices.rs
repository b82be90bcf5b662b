//! `/v1/orgs/{org}/invoices`: the org's invoices — finalized ones as stored, the open
//! period's as a draft computed from its usage so far.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::billing::invoice::{Line, Period};
use crate::billing::invoicing;
use crate::db;
use crate::db::invoices::StoredInvoice;
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::extract::OrgScope;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoiceOut {
    /// `YYYY-MM`.
    pub period: String,
    /// `draft` while the period is open (recomputed on every read), `finalized` once closed.
    pub status: String,
    /// Set when finalized.
    pub number: Option<String>,
    pub plan: String,
    pub lines: Vec<Line>,
    /// Minor units.
    pub subtotal: i64,
    /// Minor units.
    pub total: i64,
    pub currency: String,
    pub finalized_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvoicesOut {
    pub items: Vec<InvoiceOut>,
}

impl From<StoredInvoice> for InvoiceOut {
    fn from(i: StoredInvoice) -> Self {
        InvoiceOut {
            period: i.period,
            status: "finalized".into(),
            number: Some(i.number),
            plan: i.plan,
            lines: i.lines,
            subtotal: i.subtotal_minor,
            total: i.total_minor,
            currency: i.currency,
            finalized_at: Some(i.finalized_at),
        }
    }
}

fn draft(i: StoredInvoice) -> InvoiceOut {
    InvoiceOut {
        status: "draft".into(),
        number: None,
        finalized_at: None,
        ..i.into()
    }
}

/// The org's invoices, newest first: the open period's draft (and the previous period's,
/// until it is closed), then the finalized ones (owner, billing).
#[utoipa::path(
    get, path = "/v1/orgs/{org}/invoices", tag = "billing",
    params(("org" = i64, Path, description = "Org id")),
    responses((status = 200, body = InvoicesOut), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn list_invoices(
    State(state): State<AppState>,
    scope: OrgScope,
) -> Result<Json<InvoicesOut>> {
    authz::require(&state, Scope::Org(&scope), Action::InvoicesRead).await?;
    let stored = db::invoices::list(&scope.db).await?;
    let current = Period::of(Utc::now().date_naive());
    let mut items = Vec::new();
    let created = Period::of(scope.org.created_at.date_naive());
    for p in [current, current.previous()] {
        if p >= created && !stored.iter().any(|s| s.period == p.to_string()) {
            let inv = invoicing::compute(&state, scope.db.pool(), scope.id().0, &scope.org.plan, p)
                .await?;
            items.push(draft(inv));
        }
    }
    items.extend(stored.into_iter().map(InvoiceOut::from));
    Ok(Json(InvoicesOut { items }))
}

/// One invoice (owner, billing); `Accept: text/csv` gives its lines as CSV.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/invoices/{period}", tag = "billing",
    params(("org" = i64, Path, description = "Org id"), ("period" = String, Path, description = "`YYYY-MM`")),
    responses(
        (status = 200, body = InvoiceOut, description = "JSON; `text/csv` when asked for"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A period before the org existed, or in the future", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_invoice(
    State(state): State<AppState>,
    scope: OrgScope,
    headers: HeaderMap,
    Path(path): Path<(String, String)>,
) -> Result<Response> {
    let period = path.1;
    authz::require(&state, Scope::Org(&scope), Action::InvoicesRead).await?;
    let p = Period::parse(&period)
        .ok_or_else(|| Error::Invalid(vec![FieldError::new("period", "expected YYYY-MM")]))?;
    let out = match db::invoices::get(&scope.db, &period).await? {
        Some(stored) => InvoiceOut::from(stored),
        None => {
            let current = Period::of(Utc::now().date_naive());
            let created = Period::of(scope.org.created_at.date_naive());
            if p > current || p < created {
                return Err(Error::NotFound);
            }
            draft(
                invoicing::compute(&state, scope.db.pool(), scope.id().0, &scope.org.plan, p)
                    .await?,
            )
        }
    };
    if super::usage::wants_csv(&headers) {
        let mut csv = String::from(
            "period,status,number,metric,quantity,included,billable,unit_price_micros,amount_minor,currency,plan,plan_seconds,period_seconds\r\n",
        );
        for l in &out.lines {
            // The plan columns are set on the lines of a month prorated between plans.
            let (plan, seconds, period_seconds) = l.proration.as_ref().map_or_else(
                || (String::new(), String::new(), String::new()),
                |p| {
                    (
                        p.plan.clone(),
                        p.seconds.to_string(),
                        p.period_seconds.to_string(),
                    )
                },
            );
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{plan},{seconds},{period_seconds}\r\n",
                out.period,
                out.status,
                out.number.as_deref().unwrap_or(""),
                l.metric,
                l.quantity,
                l.included,
                l.billable,
                l.unit_price,
                l.amount,
                out.currency
            ));
        }
        csv.push_str(&format!(
            "{},{},{},total,,,,,{},{},,,\r\n",
            out.period,
            out.status,
            out.number.as_deref().unwrap_or(""),
            out.total,
            out.currency
        ));
        return Ok(super::usage::csv_response(csv, "invoice.csv"));
    }
    Ok(Json(out).into_response())
}
