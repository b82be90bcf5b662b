//! The intake pipeline of one verified delivery: installation → org (cached) → the org's
//! rules (cached) → jobs → JetStream. Nothing is written to a database here; the
//! acknowledgement of JetStream is the durable record, and the recorder writes the rows.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use protocol::delivery::DeliveryRecord;
use protocol::{DeliveryId, InstallationId, JobId, JobKind, OrgId, Region};

use super::event::Payload;
use super::rules::{self, DeliveryContext, Rule};
use crate::config::PlanConfig;
use crate::db::{self, OrgDb};
use crate::error::{Chain, Error, Result};
use crate::queue::publisher;
use crate::queue::records::Lane;
use crate::state::AppState;

/// What intake did with a delivery.
#[derive(Debug)]
pub struct Accepted {
    pub jobs: Vec<JobId>,
    pub outcome: &'static str,
}

pub async fn accept(
    state: &AppState,
    event: &str,
    delivery: &DeliveryId,
    payload: &Payload,
) -> Result<Accepted> {
    if event == "ping" {
        state.metrics.deliveries.with_label_values(&["ping"]).inc();
        return Ok(Accepted {
            jobs: Vec::new(),
            outcome: "ping",
        });
    }
    let received_at = Utc::now();
    // What rules match on and the record keeps, read from the payload once.
    let facts = payload.facts(event);
    let installation = payload.installation_id().map(InstallationId);
    if matches!(event, "installation" | "installation_repositories") {
        crate::github::lifecycle::apply(state, event, &delivery.0, payload).await?;
    }
    let owner = match installation {
        Some(i) => owner_of(state, i).await?,
        None => None,
    };

    let (org, region, outcome, jobs) = match owner {
        None => (
            None,
            state.region.clone(),
            "unknown_installation",
            Vec::new(),
        ),
        Some(o) => {
            let org = OrgId(o.org_id);
            let region = Region::new(o.region.clone()).map_err(Error::internal)?;
            let plan = state.config.plans.get(&o.plan);
            if o.org_status != "active" {
                (Some(org), region, "org_inactive", Vec::new())
            } else if o.installation_status != "active" {
                (Some(org), region, "installation_inactive", Vec::new())
            } else if over_rate_limit(state, org, plan).await {
                (Some(org), region, "rate_limited", Vec::new())
            } else {
                let rules = rules_of(state, org).await?;
                let ctx = DeliveryContext {
                    org,
                    region: &region,
                    delivery,
                    installation,
                    received_at,
                    max_concurrent: plan.map(|p| p.max_concurrent_jobs),
                    job_seconds_quota: plan
                        .filter(|p| p.hard_job_minutes)
                        .map(|p| p.included.job_minutes.saturating_mul(60)),
                };
                let jobs = rules::jobs_for(&rules, payload, &facts, &ctx);
                let outcome = if jobs.is_empty() { "ignored" } else { "queued" };
                (Some(org), region, outcome, jobs)
            }
        }
    };
    if let Some(org) = org {
        tracing::Span::current().record("org_id", org.0);
    }

    let record = DeliveryRecord {
        delivery_id: delivery.clone(),
        org_id: org,
        event: event.to_owned(),
        action: facts.action,
        installation_id: installation,
        repo: facts.repo,
        received_in: state.region.clone(),
        received_at,
        outcome: outcome.to_owned(),
        jobs: jobs.clone(),
    };
    // The record goes to the org's home region, in a batch with the records of its shard's
    // orgs; an unclaimed delivery (or one of an org the map has no range for yet: the
    // recorder routes each record by its own org id) to this region's unclaimed ones.
    let lane = Lane {
        shard: org.and_then(|o| state.shards.shard_name(o)),
        region,
    };
    let started = Instant::now();
    let published = publisher::publish_delivery(
        &state.nats,
        &state.records,
        lane,
        &jobs,
        &record,
        state.config.github.publish_timeout,
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %Chain(&e), delivery = %delivery, "cannot queue delivery");
        state
            .metrics
            .deliveries
            .with_label_values(&["unavailable"])
            .inc();
        Error::Unavailable {
            what: "the job queue",
            retry_after: 5,
        }
    })?;
    state
        .metrics
        .publish_duration
        .observe(started.elapsed().as_secs_f64());
    state.metrics.jobs_published.inc_by(jobs.len() as u64);
    let label = if published.duplicate {
        "duplicate"
    } else {
        outcome
    };
    state.metrics.deliveries.with_label_values(&[label]).inc();
    Ok(Accepted {
        jobs: jobs.into_iter().map(|j| j.job_id).collect(),
        outcome,
    })
}

/// Whether this delivery exceeds the org's webhook rate (see [`crate::billing::limits`]).
async fn over_rate_limit(state: &AppState, org: OrgId, plan: Option<&PlanConfig>) -> bool {
    use crate::billing::limits::{Decision, Limit};
    let Some(p) = plan else {
        return false;
    };
    let limit = Limit {
        per_minute: p.webhook_rate_per_minute,
        burst: p.webhook_burst,
    };
    let decision = state.limiter.webhook(org, limit).await;
    state.metrics.count_rate_limit("webhook", &decision);
    match decision {
        Decision::Limited { retry_after, .. } => {
            tracing::info!(org_id = %org, retry_after_ms = retry_after.as_millis() as u64, "webhook over the org's rate limit; no jobs made");
            true
        }
        Decision::Allowed { .. } | Decision::Unchecked => false,
    }
}

async fn owner_of(
    state: &AppState,
    id: InstallationId,
) -> Result<Option<db::installations::Owner>> {
    if let Some(hit) = state.caches.installations.get(&id) {
        return Ok(hit);
    }
    let owner = db::installations::owner(&state.catalog, id).await?;
    state.caches.installations.insert(id, owner.clone());
    Ok(owner)
}

async fn rules_of(state: &AppState, org: OrgId) -> Result<Arc<Vec<Rule>>> {
    if let Some(hit) = state.caches.rules.get(&org) {
        return Ok(hit);
    }
    let shard = OrgDb::for_org(&state.shards, org)?;
    let rows = db::rules::list(&shard).await?;
    let rules: Vec<Rule> = rows
        .into_iter()
        .filter_map(|r| match JobKind::new(r.kind.clone()) {
            Ok(kind) => Some(Rule {
                id: r.id,
                event: r.event,
                action: r.action,
                label: r.label,
                command: r.command,
                repos: r.repos,
                kind,
            }),
            Err(e) => {
                tracing::error!(org_id = %org, rule = %r.id, error = %e, "stored rule has an invalid kind; skipped");
                None
            }
        })
        .collect();
    let rules = Arc::new(rules);
    state.caches.rules.insert(org, rules.clone());
    Ok(rules)
}
