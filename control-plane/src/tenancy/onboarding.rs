//! Onboarding an org, as a saga:
//!
//! 1. **catalog row** — an id from an open range of the least-loaded shard of the chosen
//!    region; the org is `creating`, invisible to the API;
//! 2. **shard rows** — the tenant row, the default trigger rules, the audit entry;
//! 3. **owner** — the owner's user and membership, the owner's API key, and activation, in
//!    one catalog transaction.
//!
//! A failure at any step undoes the steps before it (in reverse), so no half-created org is
//! ever visible. The audit log cannot forget, so undoing step 2 appends a compensation entry
//! instead of removing the first.

use chrono::{DateTime, Utc};
use protocol::service::db::ShardRouter;
use protocol::{OrgId, Region};
use sqlx::PgPool;

use crate::db::{self, OrgDb};
use crate::error::{Chain, Error};
use crate::intake::rules::Rule;
use crate::tenancy::{Role, apikey};

/// A validated request to create an org.
#[derive(Clone, Debug)]
pub struct NewOrg {
    pub slug: String,
    pub name: String,
    pub region: Region,
    pub plan: String,
    pub owner_email: String,
}

/// The result, including the owner's API key in clear (shown once).
#[derive(Debug)]
pub struct Onboarded {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub region: String,
    pub shard: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    pub owner_user_id: String,
    pub owner_email: String,
    pub api_key: String,
}

/// Who asked, for the audit log.
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub request_id: Option<&'a str>,
}

pub async fn onboard(
    catalog: &PgPool,
    router: &ShardRouter,
    new: &NewOrg,
    default_rules: &[Rule],
    actor: Actor<'_>,
) -> Result<Onboarded, Error> {
    // Step 1: the catalog row.
    let (row, shard) = db::orgs::place(
        catalog,
        &new.slug,
        &new.name,
        new.region.as_str(),
        &new.plan,
    )
    .await
    .map_err(|e| match e {
        db::orgs::PlaceError::SlugTaken => Error::Conflict(format!("slug {:?} is taken", new.slug)),
        db::orgs::PlaceError::NoOpenRange(r) => {
            tracing::error!(region = %r, "no open id range; an operator must add one");
            Error::Unavailable {
                what: "org placement",
                retry_after: 60,
            }
        }
        db::orgs::PlaceError::Sql(e) => e.into(),
    })?;
    let org = OrgId(row.id);
    tracing::info!(org_id = %org, shard = %shard, "onboarding: org placed");

    // Step 2: the shard rows.
    let shard_db = match shard_step(router, org, &new.slug, default_rules, actor).await {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!(org_id = %org, error = %e, "onboarding: shard step failed; compensating");
            undo_catalog_row(catalog, org).await;
            return Err(e);
        }
    };

    // Step 3: owner, key and activation.
    match owner_step(catalog, org, &new.owner_email).await {
        Ok((user_id, key)) => Ok(Onboarded {
            id: org,
            slug: row.slug,
            name: row.name,
            region: row.region,
            shard,
            plan: row.plan,
            created_at: row.created_at,
            owner_user_id: user_id,
            owner_email: new.owner_email.clone(),
            api_key: key,
        }),
        Err(e) => {
            tracing::warn!(org_id = %org, error = %e, "onboarding: owner step failed; compensating");
            undo_shard_rows(&shard_db, actor).await;
            undo_catalog_row(catalog, org).await;
            Err(e)
        }
    }
}

async fn shard_step(
    router: &ShardRouter,
    org: OrgId,
    slug: &str,
    rules: &[Rule],
    actor: Actor<'_>,
) -> Result<OrgDb, Error> {
    // A shard whose breaker is open answers `503` (and the org is undone); only a map without
    // the new id's range is an internal error.
    let shard = OrgDb::for_org(router, org).map_err(|e| match e {
        Error::NotFound => Error::internal(format!(
            "the shard map has no shard for new org {org}; it is out of date"
        )),
        e => e,
    })?;
    let rows: Vec<db::rules::RuleRow> = rules.iter().map(rule_row).collect();
    let mut tx = shard.pool().begin().await?;
    db::tenants::insert(&mut tx, org, slug).await?;
    db::rules::replace(&mut tx, org, &rows).await?;
    db::audit::append(
        &mut tx,
        org,
        db::audit::Entry {
            actor: actor.name,
            action: "org.create",
            target: Some(slug),
            details: serde_json::json!({"rules": rows.len()}),
            request_id: actor.request_id,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(shard)
}

async fn owner_step(catalog: &PgPool, org: OrgId, email: &str) -> Result<(String, String), Error> {
    let key = apikey::generate();
    let mut tx = catalog.begin().await?;
    let user_id = db::users::upsert(&mut tx, email).await?;
    db::members::insert(&mut tx, org, &user_id, Role::Owner.as_str()).await?;
    db::api_keys::insert(
        &mut tx,
        db::api_keys::NewApiKey {
            org,
            user_id: Some(&user_id),
            name: "owner",
            role: Role::Owner.as_str(),
            prefix: &key.prefix,
            hash: &key.hash,
        },
    )
    .await?;
    db::orgs::activate(&mut tx, org).await?;
    tx.commit().await?;
    Ok((user_id, key.plaintext))
}

pub fn rule_row(r: &Rule) -> db::rules::RuleRow {
    db::rules::RuleRow {
        id: r.id.clone(),
        event: r.event.clone(),
        action: r.action.clone(),
        label: r.label.clone(),
        command: r.command.clone(),
        repos: r.repos.clone(),
        kind: r.kind.to_string(),
    }
}

async fn undo_catalog_row(catalog: &PgPool, org: OrgId) {
    if let Err(e) = db::orgs::remove_creating(catalog, org).await {
        // The row stays `creating`: invisible to the API, and `control-plane` reports such
        // leftovers; log it for the operator.
        tracing::error!(org_id = %org, error = %Chain(&e), "onboarding: cannot remove the catalog row");
    }
}

async fn undo_shard_rows(shard: &OrgDb, actor: Actor<'_>) {
    let org = shard.org();
    let res = async {
        let mut tx = shard.pool().begin().await?;
        db::tenants::remove(&mut tx, org).await?;
        db::audit::append(
            &mut tx,
            org,
            db::audit::Entry {
                actor: actor.name,
                action: "org.create.compensated",
                target: None,
                details: serde_json::json!({}),
                request_id: actor.request_id,
            },
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = res {
        tracing::error!(org_id = %org, error = %Chain(&e), "onboarding: cannot remove the shard rows");
    }
}

/// An onboarding left `creating` this long is dead: its process stopped between two steps.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
/// How often the reaper looks for such orgs.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Completes the compensation of onboardings whose process stopped mid-saga (a crash or a
/// restart between two steps): orgs of this region still `creating` after `older_than` lose
/// their shard rows, then their catalog row. Replicas share the work (`skip locked`); an org
/// whose shard is down is left for a later pass. Returns the orgs removed.
pub async fn reap_stale(
    catalog: &PgPool,
    router: &ShardRouter,
    region: &str,
    older_than: std::time::Duration,
) -> Result<usize, sqlx::Error> {
    let mut tx = catalog.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "select id from org
          where status = 'creating' and region = $1
            and created_at < now() - make_interval(secs => $2)
          order by id limit 100
          for update skip locked",
    )
    .bind(region)
    .bind(older_than.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut removed = 0;
    for id in ids {
        let org = OrgId(id);
        let Ok(shard) = OrgDb::for_org(router, org) else {
            continue;
        };
        let had_rows =
            sqlx::query_scalar::<_, i64>("select count(*) from tenant where org_id = $1")
                .bind(id)
                .fetch_one(shard.pool())
                .await?
                > 0;
        if had_rows {
            undo_shard_rows(
                &shard,
                Actor {
                    name: "onboarding-reaper",
                    request_id: None,
                },
            )
            .await;
        }
        sqlx::query("delete from org where id = $1 and status = 'creating'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tracing::warn!(org_id = %org, shard_rows = had_rows, "onboarding: removed an org left half-created by a stopped process");
        removed += 1;
    }
    tx.commit().await?;
    Ok(removed)
}

/// Runs [`reap_stale`] every minute until `shutdown`.
pub async fn run_reaper(
    state: crate::state::AppState,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(REAP_EVERY) => {}
        }
        if let Err(e) = reap_stale(
            &state.catalog,
            &state.shards,
            state.region.as_str(),
            STALE_AFTER,
        )
        .await
        {
            tracing::warn!(error = %Chain(&e), "onboarding reaper failed; trying again later");
        }
    }
}
