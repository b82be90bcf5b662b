//! `/v1/orgs/{org}/usage`: the org's metered usage per day or hour, by metric or by metric and
//! repository, as JSON or CSV.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::authz::{self, Action, Scope};
use crate::db;
use crate::db::usage::UsageRow;
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::extract::{OrgScope, QueryParams};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_usage))
}

/// Longest range of a daily report.
const MAX_DAYS: i64 = 366;
/// Longest range of an hourly report.
const MAX_HOURS: i64 = 31 * 24;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, inclusive: `YYYY-MM-DD` (midnight UTC) or RFC 3339. Default: the first day of
    /// the current month.
    pub from: Option<String>,
    /// End, exclusive: `YYYY-MM-DD` or RFC 3339. Default: the start of tomorrow (UTC).
    pub to: Option<String>,
    /// `day` (default) or `hour`.
    pub granularity: Option<String>,
    /// `metric` (default) or `repo` (per metric and repository).
    pub group_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageItemOut {
    /// Start of the day or hour (UTC).
    pub period_start: DateTime<Utc>,
    /// `webhook_deliveries`, `job_seconds` or `llm_tokens`.
    pub metric: String,
    /// The repository (`group_by=repo` only; null for usage without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub quantity: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageOut {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: String,
    pub group_by: String,
    pub items: Vec<UsageItemOut>,
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::Invalid(vec![FieldError::new(
                field,
                "expected a date (YYYY-MM-DD) or an RFC 3339 time",
            )])
        })
}

/// The org's usage (owner, admin, billing). `Accept: text/csv` gives CSV with the columns
/// `period_start,metric,repo,quantity`.
#[utoipa::path(
    get, path = "/v1/orgs/{org}/usage", tag = "billing",
    params(("org" = i64, Path, description = "Org id"), UsageQuery),
    responses(
        (status = 200, body = UsageOut, description = "JSON; `text/csv` when asked for"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad range, granularity or grouping", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_usage(
    State(state): State<AppState>,
    scope: OrgScope,
    headers: HeaderMap,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Response> {
    authz::require(&state, Scope::Org(&scope), Action::UsageRead).await?;
    let now = Utc::now();
    let month_start = NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
        .unwrap_or_else(|| now.date_naive())
        .and_time(NaiveTime::MIN)
        .and_utc();
    let tomorrow = now
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap_or_else(|| now.date_naive())
        .and_time(NaiveTime::MIN)
        .and_utc();
    let from = q
        .from
        .as_deref()
        .map(|s| parse_time("from", s))
        .transpose()?
        .unwrap_or(month_start);
    let to =
        q.to.as_deref()
            .map(|s| parse_time("to", s))
            .transpose()?
            .unwrap_or(tomorrow);
    let granularity = q.granularity.as_deref().unwrap_or("day");
    let group_by = q.group_by.as_deref().unwrap_or("metric");
    let mut errors = Vec::new();
    if to <= from {
        errors.push(FieldError::new("to", "must be after `from`"));
    }
    let by_repo = match group_by {
        "metric" => false,
        "repo" => true,
        _ => {
            errors.push(FieldError::new("group_by", "must be `metric` or `repo`"));
            false
        }
    };
    match granularity {
        "day" if (to - from).num_days() > MAX_DAYS => errors.push(FieldError::new(
            "to",
            format!("a daily report covers at most {MAX_DAYS} days"),
        )),
        "hour" if (to - from).num_hours() > MAX_HOURS => errors.push(FieldError::new(
            "to",
            format!("an hourly report covers at most {MAX_HOURS} hours"),
        )),
        "day" | "hour" => {}
        _ => errors.push(FieldError::new("granularity", "must be `day` or `hour`")),
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let rows = if granularity == "day" {
        // Whole days: a range that starts or ends inside a day covers all of it.
        let first = from.date_naive();
        let last = if to.time() == NaiveTime::MIN {
            to.date_naive()
        } else {
            to.date_naive()
                .checked_add_days(Days::new(1))
                .unwrap_or_else(|| to.date_naive())
        };
        db::usage::daily(&scope.db, first, last, by_repo).await?
    } else {
        db::usage::hourly(&scope.db, from, to, by_repo).await?
    };
    if wants_csv(&headers) {
        return Ok(csv(&rows));
    }
    Ok(Json(UsageOut {
        from,
        to,
        granularity: granularity.to_owned(),
        group_by: group_by.to_owned(),
        items: rows
            .into_iter()
            .map(|r| UsageItemOut {
                period_start: r.period_start,
                metric: r.metric,
                repo: if by_repo { r.repo } else { None },
                quantity: r.quantity,
            })
            .collect(),
    })
    .into_response())
}

/// Whether the client asked for CSV (`Accept: text/csv`).
pub fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"))
}

/// A CSV document, as a download named `filename`.
pub fn csv_response(body: String, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv(rows: &[UsageRow]) -> Response {
    let mut out = String::from("period_start,metric,repo,quantity\r\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{}\r\n",
            r.period_start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            field(&r.metric),
            field(r.repo.as_deref().unwrap_or("")),
            r.quantity
        ));
    }
    csv_response(out, "usage.csv")
}
