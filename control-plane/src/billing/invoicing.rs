//! Invoices as they stand, from usage, plans and plan changes: one org's (the invoice routes),
//! or every org of every shard at once (closing a period, the revenue report).
//!
//! Platform-wide work is gathered per shard, all shards at once, each in a few set-based
//! queries (not one query per org). A shard that does not answer within its deadline, or
//! fails, is reported by name ([`MissingShard`]) while the others' results stand: a report
//! says what it lacks instead of failing or quietly leaving it out, and a close finalizes what
//! it can (calling it again finishes the rest).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use protocol::OrgId;
use protocol::service::db::{ShardHandle, ShardRouter};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::billing::invoice::{self, CURRENCY, Period, PlanChange};
use crate::config::PlanConfig;
use crate::db::{self, invoices::StoredInvoice, orgs::Billable};
use crate::error::{Chain, Error, is_unavailable};
use crate::state::AppState;

/// Midnight UTC starting `day`.
pub fn midnight(day: chrono::NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The period's first instant and the next period's.
pub fn bounds(period: Period) -> Result<(DateTime<Utc>, DateTime<Utc>), Error> {
    match (period.start(), period.end()) {
        (Some(s), Some(e)) => Ok((midnight(s), midnight(e))),
        _ => Err(Error::internal(format!("period {period} has no dates"))),
    }
}

/// The invoice of `org` for `period` from its inputs: the usage totals, the plan changes after
/// the period's start (oldest first) and the org's plan now.
pub fn price(
    plans: &BTreeMap<String, PlanConfig>,
    org: i64,
    period: Period,
    changes: &[PlanChange],
    current_plan: &str,
    totals: invoice::Totals,
) -> Result<StoredInvoice, Error> {
    let (start, end) = bounds(period)?;
    let (shares, plan) = invoice::plan_seconds(start, end, changes, current_plan);
    let (lines, subtotal) =
        invoice::price_prorated(plans, &shares, totals).map_err(Error::internal)?;
    Ok(StoredInvoice {
        period: period.to_string(),
        number: invoice::number(org, period),
        plan,
        currency: CURRENCY.to_owned(),
        lines,
        subtotal_minor: subtotal,
        total_minor: subtotal,
        finalized_at: Utc::now(),
    })
}

/// The org's invoice of `period` as it stands (a draft until it is finalized): its usage from
/// the rollup on its shard (`pool`), its plan changes from the catalog.
pub async fn compute(
    state: &AppState,
    pool: &PgPool,
    org: i64,
    current_plan: &str,
    period: Period,
) -> Result<StoredInvoice, Error> {
    let (start, _) = bounds(period)?;
    let (Some(from), Some(to)) = (period.start(), period.end()) else {
        return Err(Error::internal("a period without dates"));
    };
    let changes = db::plan_changes::of_org(&state.catalog, OrgId(org), start).await?;
    let totals = db::invoices::totals(pool, org, from, to).await?;
    price(
        &state.config.plans,
        org,
        period,
        &changes,
        current_plan,
        totals,
    )
}

/// A shard whose part of a platform-wide result is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingShard {
    /// The shard's name; `unrouted` for orgs no shard range holds.
    pub shard: String,
    /// Orgs of the period on it.
    pub orgs: u64,
    /// `down` (its circuit breaker is open), `timeout`, `unavailable` (not reachable), or
    /// `error` (logged).
    pub reason: String,
}

/// Longest a platform-wide request waits for one shard: within the request timeout `t`, so
/// the answer can still name the shards that did not make it.
pub fn shard_deadline(t: Duration) -> Duration {
    t.saturating_sub(Duration::from_secs(3)).max(t / 2)
}

/// What a period gave on every shard: each answering shard's result, and the shards that did
/// not answer.
pub type PerShard<T> = (Vec<(String, T)>, Vec<MissingShard>);

/// The orgs billable in `period`, and their plan changes since it began.
async fn billable_in(
    catalog: &PgPool,
    period: Period,
) -> Result<(Vec<Billable>, HashMap<i64, Vec<PlanChange>>), Error> {
    let (start, end) = bounds(period)?;
    let orgs = db::orgs::billable(catalog, end).await?;
    let changes = db::plan_changes::since(catalog, start).await?;
    Ok((orgs, changes))
}

/// Finalizes `period`'s invoices on every shard at once, each within `deadline` (see
/// [`close_shard`]).
pub async fn close_period(
    catalog: &PgPool,
    router: &ShardRouter,
    plans: &BTreeMap<String, PlanConfig>,
    period: Period,
    deadline: Duration,
) -> Result<PerShard<Closed>, Error> {
    let (orgs, changes) = billable_in(catalog, period).await?;
    let changes = &changes;
    Ok(per_shard(router, orgs, deadline, |shard, orgs| async move {
        close_shard(plans, &shard, orgs, period, changes).await
    })
    .await)
}

/// Every billable org's invoice of `period`, finalized or drafted, from every shard at once,
/// each within `deadline` (see [`shard_invoices`]).
pub async fn period_invoices(
    catalog: &PgPool,
    router: &ShardRouter,
    plans: &BTreeMap<String, PlanConfig>,
    period: Period,
    deadline: Duration,
) -> Result<PerShard<Vec<Counted>>, Error> {
    let (orgs, changes) = billable_in(catalog, period).await?;
    let changes = &changes;
    Ok(per_shard(router, orgs, deadline, |shard, orgs| async move {
        shard_invoices(plans, &shard, orgs, period, changes).await
    })
    .await)
}

/// Groups `orgs` by their shard and runs `work` on every shard at once, each within
/// `deadline`. Returns each answering shard's result and the shards that did not answer.
pub async fn per_shard<T, F, Fut>(
    router: &ShardRouter,
    orgs: Vec<Billable>,
    deadline: Duration,
    work: F,
) -> PerShard<T>
where
    F: Fn(ShardHandle, Vec<Billable>) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut groups: BTreeMap<String, (Option<ShardHandle>, Vec<Billable>)> = BTreeMap::new();
    for org in orgs {
        match router.route(OrgId(org.id)) {
            Some(h) => groups
                .entry(h.name.clone())
                .or_insert_with(|| (Some(h), Vec::new()))
                .1
                .push(org),
            None => groups
                .entry("unrouted".to_owned())
                .or_insert_with(|| (None, Vec::new()))
                .1
                .push(org),
        }
    }
    let runs = groups.into_iter().map(|(name, (handle, orgs))| {
        let n = orgs.len() as u64;
        // A shard whose circuit breaker is open is left out at once, not waited for.
        let fut = handle.map(|h| (h.down().is_some(), work(h, orgs)));
        async move {
            let Some((down, fut)) = fut else {
                tracing::error!(orgs = n, "orgs no shard range holds: left out");
                return (name, n, Err("unavailable"));
            };
            if down {
                tracing::warn!(shard = %name, "shard is down (its breaker is open); left out");
                return (name, n, Err("down"));
            }
            match tokio::time::timeout(deadline, fut).await {
                Ok(Ok(v)) => (name, n, Ok(v)),
                Ok(Err(e)) => {
                    let reason = match &e {
                        Error::Unavailable { .. } => "unavailable",
                        _ => "error",
                    };
                    tracing::warn!(shard = %name, error = %e, reason, "shard left out");
                    (name, n, Err(reason))
                }
                Err(_) => {
                    tracing::warn!(shard = %name, deadline = ?deadline, "shard did not answer in time; left out");
                    (name, n, Err("timeout"))
                }
            }
        }
    });
    let mut done = Vec::new();
    let mut missing = Vec::new();
    for (shard, orgs, r) in futures::future::join_all(runs).await {
        match r {
            Ok(v) => done.push((shard, v)),
            Err(reason) => missing.push(MissingShard {
                shard,
                orgs,
                reason: reason.to_owned(),
            }),
        }
    }
    (done, missing)
}

/// A database error as the shard's failure: unreachable is `Unavailable`, the rest logged.
fn shard_error(shard: &str, e: sqlx::Error) -> Error {
    if is_unavailable(&e) {
        Error::Unavailable {
            what: "a shard",
            retry_after: 5,
        }
    } else {
        tracing::error!(shard, error = %Chain(&e), "shard query failed");
        Error::internal(e)
    }
}

/// One org's invoice of a period as the revenue report counts it.
#[derive(Clone, Debug)]
pub struct Counted {
    pub org: Billable,
    /// The invoice's plan (the one in force at the period's end).
    pub plan: String,
    pub total: i64,
    pub finalized: bool,
}

/// The orgs' invoices of `period` already finalized on `shard`, and the orgs still open.
async fn finalized_and_open(
    shard: &ShardHandle,
    orgs: &[Billable],
    period: Period,
) -> Result<(HashMap<i64, db::invoices::Finalized>, Vec<i64>), Error> {
    let ids: Vec<i64> = orgs.iter().map(|o| o.id).collect();
    let finalized = db::invoices::finalized_of(&shard.pool, &ids, &period.to_string())
        .await
        .map_err(|e| shard_error(&shard.name, e))?;
    let open = ids
        .into_iter()
        .filter(|id| !finalized.contains_key(id))
        .collect();
    Ok((finalized, open))
}

/// Every org's invoice of `period` on one shard: the finalized one where there is one, the
/// draft otherwise.
pub async fn shard_invoices(
    plans: &BTreeMap<String, PlanConfig>,
    shard: &ShardHandle,
    orgs: Vec<Billable>,
    period: Period,
    changes: &HashMap<i64, Vec<PlanChange>>,
) -> Result<Vec<Counted>, Error> {
    let (finalized, open) = finalized_and_open(shard, &orgs, period).await?;
    let drafts = draft_all(plans, shard, &orgs, &open, period, changes).await?;
    let mut out = Vec::with_capacity(orgs.len());
    for org in orgs {
        let counted = match (finalized.get(&org.id), drafts.get(&org.id)) {
            (Some(f), _) => Counted {
                plan: f.plan.clone(),
                total: f.total_minor,
                finalized: true,
                org,
            },
            (None, Some(d)) => Counted {
                plan: d.plan.clone(),
                total: d.total_minor,
                finalized: false,
                org,
            },
            (None, None) => return Err(Error::internal("an org without an invoice")),
        };
        out.push(counted);
    }
    Ok(out)
}

/// Drafts of `period` for the orgs of `open` (a subset of `orgs`, all on `shard`).
async fn draft_all(
    plans: &BTreeMap<String, PlanConfig>,
    shard: &ShardHandle,
    orgs: &[Billable],
    open: &[i64],
    period: Period,
    changes: &HashMap<i64, Vec<PlanChange>>,
) -> Result<HashMap<i64, StoredInvoice>, Error> {
    let (Some(from), Some(to)) = (period.start(), period.end()) else {
        return Err(Error::internal("a period without dates"));
    };
    if open.is_empty() {
        return Ok(HashMap::new());
    }
    let totals = db::invoices::totals_of(&shard.pool, open, from, to)
        .await
        .map_err(|e| shard_error(&shard.name, e))?;
    let none = Vec::new();
    let open: std::collections::HashSet<i64> = open.iter().copied().collect();
    let mut out = HashMap::with_capacity(open.len());
    for org in orgs.iter().filter(|o| open.contains(&o.id)) {
        let inv = price(
            plans,
            org.id,
            period,
            changes.get(&org.id).unwrap_or(&none),
            &org.plan,
            totals.get(&org.id).copied().unwrap_or_default(),
        )?;
        out.insert(org.id, inv);
    }
    Ok(out)
}

/// What closing a period did on one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    pub orgs: u64,
    pub finalized: u64,
    pub already_finalized: u64,
}

/// Invoices stored per statement when closing.
const CLOSE_BATCH: usize = 1_000;

/// Finalizes every org's invoice of `period` on one shard that is not finalized yet.
pub async fn close_shard(
    plans: &BTreeMap<String, PlanConfig>,
    shard: &ShardHandle,
    orgs: Vec<Billable>,
    period: Period,
    changes: &HashMap<i64, Vec<PlanChange>>,
) -> Result<Closed, Error> {
    let (finalized, open) = finalized_and_open(shard, &orgs, period).await?;
    let mut drafts: Vec<(i64, StoredInvoice)> =
        draft_all(plans, shard, &orgs, &open, period, changes)
            .await?
            .into_iter()
            .collect();
    drafts.sort_by_key(|(org, _)| *org);
    let mut out = Closed {
        orgs: orgs.len() as u64,
        finalized: 0,
        already_finalized: finalized.len() as u64,
    };
    for batch in drafts.chunks(CLOSE_BATCH) {
        let new = db::invoices::finalize_all(&shard.pool, batch)
            .await
            .map_err(|e| shard_error(&shard.name, e))?;
        out.finalized += new;
        // Finalized meanwhile by another call: as it was.
        out.already_finalized += batch.len() as u64 - new;
    }
    Ok(out)
}
