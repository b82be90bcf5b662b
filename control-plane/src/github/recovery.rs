//! Delivery recovery. GitHub never redelivers a webhook by itself: a delivery intake refused
//! (`503` while JetStream was down, a timeout, a crash) is lost unless someone asks for it
//! again. This reconciler lists the App's recent deliveries, finds those that failed on our
//! side and that intake has no record of, and asks GitHub to deliver them again.
//!
//! * One control plane at a time runs a pass (a catalog advisory lock).
//! * A delivery counts as failed on our side when no attempt of it (same GUID) got a 2xx and
//!   its attempts got a 5xx, a 429, or no answer at all. 4xx answers (a bad signature) are
//!   deliberate refusals and are never retried.
//! * Bounded: at most `max_per_run` redeliveries per pass, `max_attempts_per_delivery` per
//!   delivery ever, and none while a request made in the last two passes may still arrive.
//! * A pass runs only while this control plane can queue deliveries (its NATS connection is
//!   up): a redelivery asked for during an outage would only fail again and use up one of the
//!   delivery's attempts.
//! * Metered (`switchyard_github_redeliveries_total{result}`) and visible
//!   (`GET /v1/admin/github/redeliveries`).

use std::collections::HashMap;

use chrono::Utc;
use protocol::InstallationId;
use protocol::service::github::HookDelivery;
use tokio_util::sync::CancellationToken;

use crate::db::{self, OrgDb};
use crate::error::Chain;
use crate::state::AppState;

/// The lock that makes one pass run at a time across control planes.
const LOCK_KEY: i64 = 0x5357_5244_4c56; // "SWRDLV"

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pass {
    pub examined: usize,
    pub failed: usize,
    pub already_recorded: usize,
    pub requested: usize,
    pub gave_up: usize,
}

pub async fn run(state: AppState, shutdown: CancellationToken) {
    let every = state.config.github.recovery.every;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        match pass_if_leader(&state).await {
            Ok(Some(p)) if p.requested > 0 || p.gave_up > 0 => {
                tracing::info!(?p, "delivery recovery pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "delivery recovery pass failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("GitHub: {0}")]
    Github(#[from] protocol::service::github::GithubError),
}

/// Runs a pass unless another control plane is running one.
pub async fn pass_if_leader(state: &AppState) -> Result<Option<Pass>, RecoveryError> {
    let mut conn = state.catalog.acquire().await?;
    let leader: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !leader {
        return Ok(None);
    }
    let result = pass(state).await;
    let _: Result<bool, _> = sqlx::query_scalar("select pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await;
    result.map(Some)
}

fn failed_on_our_side(d: &HookDelivery) -> bool {
    d.status_code == 0 || d.status_code == 429 || d.status_code >= 500
}

/// One pass over the recent deliveries.
pub async fn pass(state: &AppState) -> Result<Pass, RecoveryError> {
    let cfg = &state.config.github.recovery;
    let since = Utc::now()
        - chrono::Duration::from_std(cfg.lookback).unwrap_or_else(|_| chrono::Duration::hours(6));
    let metrics = &state.metrics;
    let mut attempts: HashMap<String, Vec<HookDelivery>> = HashMap::new();
    let mut cursor: Option<String> = None;
    let mut report = Pass::default();
    'pages: for _ in 0..50 {
        let (page, next) = state.github.hook_deliveries(cursor.as_deref()).await?;
        for d in page {
            if d.delivered_at < since {
                break 'pages;
            }
            report.examined += 1;
            attempts.entry(d.guid.clone()).or_default().push(d);
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let pending_window = chrono::Duration::from_std(cfg.every * 2).unwrap_or_default();
    for (guid, tries) in attempts {
        if report.requested >= cfg.max_per_run {
            break;
        }
        if tries.iter().any(|d| (200..300).contains(&d.status_code))
            || !tries.iter().any(failed_on_our_side)
        {
            continue;
        }
        report.failed += 1;
        // The newest attempt is the one to redeliver (GitHub lists newest first).
        let Some(latest) = tries.iter().max_by_key(|d| d.delivered_at) else {
            continue;
        };
        if recorded(state, &guid, latest.installation_id).await? {
            report.already_recorded += 1;
            continue;
        }
        let (asked, last) = db::redeliveries::asked(&state.catalog, &guid).await?;
        if asked >= cfg.max_attempts_per_delivery {
            report.gave_up += 1;
            metrics.redeliveries.with_label_values(&["gave_up"]).inc();
            continue;
        }
        if last.is_some_and(|l| Utc::now() - l < pending_window) {
            continue;
        }
        let result = match state.github.redeliver(latest.id).await {
            Ok(()) => {
                report.requested += 1;
                "requested"
            }
            Err(e) => {
                tracing::warn!(error = %e, guid, "cannot ask GitHub to redeliver");
                "error"
            }
        };
        metrics.redeliveries.with_label_values(&[result]).inc();
        db::redeliveries::record(
            &state.catalog,
            &guid,
            latest.id,
            &latest.event,
            latest.status_code,
            result,
        )
        .await?;
    }
    Ok(report)
}

/// Whether intake recorded the delivery: in its org's shard, or as unclaimed.
async fn recorded(
    state: &AppState,
    guid: &str,
    installation: Option<i64>,
) -> Result<bool, sqlx::Error> {
    if db::redeliveries::unclaimed_has(&state.catalog, guid).await? {
        return Ok(true);
    }
    let Some(inst) = installation else {
        return Ok(false);
    };
    let Some(owner) = db::installations::owner(&state.catalog, InstallationId(inst)).await? else {
        return Ok(false);
    };
    match OrgDb::for_org(&state.shards, protocol::OrgId(owner.org_id)) {
        Ok(shard) => db::deliveries::exists(&shard, guid).await,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "no shard for an installation's org");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status_code: i64) -> HookDelivery {
        HookDelivery {
            id: 1,
            guid: "g".into(),
            delivered_at: Utc::now(),
            redelivery: false,
            status: String::new(),
            status_code,
            event: "issues".into(),
            action: None,
            installation_id: None,
        }
    }

    #[test]
    fn only_server_errors_throttling_and_silence_count_as_our_failures() {
        for code in [0, 429, 500, 502, 503, 504] {
            assert!(failed_on_our_side(&delivery(code)), "{code}");
        }
        for code in [200, 202, 400, 401, 404, 413, 422] {
            assert!(
                !failed_on_our_side(&delivery(code)),
                "{code}: a deliberate answer is never retried"
            );
        }
    }
}
