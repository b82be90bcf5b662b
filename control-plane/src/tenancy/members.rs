//! Members and API keys: adding, changing roles, removing, issuing and revoking keys.
//!
//! Rules kept here, each inside the transaction that changes the catalog:
//! * only someone who may manage owners (an owner, or the operator) grants `owner`, demotes
//!   or removes an owner, or issues an `owner` key;
//! * the last owner can neither be demoted nor removed (`409`);
//! * every change queues its audit entry in the same transaction.

use protocol::OrgId;
use sqlx::PgPool;

use crate::db;
use crate::db::api_keys::NewApiKey;
use crate::db::members::MemberRow;
use crate::error::Error;
use crate::tenancy::onboarding::Actor;
use crate::tenancy::{Role, apikey};

fn entry<'a>(
    actor: &'a Actor<'a>,
    action: &'a str,
    target: &'a str,
    details: serde_json::Value,
) -> db::audit::Entry<'a> {
    db::audit::Entry {
        actor: actor.name,
        action,
        target: Some(target),
        details,
        request_id: actor.request_id,
    }
}

fn owners_only(may_manage_owners: bool) -> Result<(), Error> {
    if may_manage_owners {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

/// Adds `email` as a member with `role` and issues the member's first API key (returned in
/// clear, once).
pub async fn add(
    catalog: &PgPool,
    org: OrgId,
    email: &str,
    role: Role,
    may_manage_owners: bool,
    actor: &Actor<'_>,
) -> Result<(MemberRow, String), Error> {
    if role == Role::Owner {
        owners_only(may_manage_owners)?;
    }
    let key = apikey::generate();
    let mut tx = catalog.begin().await?;
    let user_id = db::users::upsert(&mut tx, email).await?;
    if !db::members::insert_new(&mut tx, org, &user_id, role.as_str()).await? {
        return Err(Error::Conflict("this user is already a member".into()));
    }
    db::api_keys::insert(
        &mut tx,
        NewApiKey {
            org,
            user_id: Some(&user_id),
            name: email,
            role: role.as_str(),
            prefix: &key.prefix,
            hash: &key.hash,
        },
    )
    .await?;
    db::audit::enqueue(
        &mut tx,
        org,
        entry(
            actor,
            "member.add",
            &user_id,
            serde_json::json!({"email": email, "role": role}),
        ),
    )
    .await?;
    let row = db::members::get_for_update(&mut tx, org, &user_id)
        .await?
        .ok_or_else(|| Error::internal("member vanished"))?;
    tx.commit().await?;
    Ok((row, key.plaintext))
}

/// Changes a member's role.
pub async fn change_role(
    catalog: &PgPool,
    org: OrgId,
    user_id: &str,
    role: Role,
    may_manage_owners: bool,
    actor: &Actor<'_>,
) -> Result<MemberRow, Error> {
    let mut tx = catalog.begin().await?;
    let current = db::members::get_for_update(&mut tx, org, user_id)
        .await?
        .ok_or(Error::NotFound)?;
    let was_owner = current.role == Role::Owner.as_str();
    if role == Role::Owner || was_owner {
        owners_only(may_manage_owners)?;
    }
    if was_owner && role != Role::Owner && db::members::lock_owners(&mut tx, org).await?.len() <= 1
    {
        return Err(Error::Conflict(
            "the last owner cannot be demoted; make another member owner first".into(),
        ));
    }
    if current.role != role.as_str() {
        db::members::set_role(&mut tx, org, user_id, role.as_str()).await?;
        db::audit::enqueue(
            &mut tx,
            org,
            entry(
                actor,
                "member.role",
                user_id,
                serde_json::json!({"from": current.role, "to": role}),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MemberRow {
        role: role.as_str().to_owned(),
        ..current
    })
}

/// Removes a member; their keys in the org are revoked.
pub async fn remove(
    catalog: &PgPool,
    org: OrgId,
    user_id: &str,
    may_manage_owners: bool,
    actor: &Actor<'_>,
) -> Result<(), Error> {
    let mut tx = catalog.begin().await?;
    let current = db::members::get_for_update(&mut tx, org, user_id)
        .await?
        .ok_or(Error::NotFound)?;
    if current.role == Role::Owner.as_str() {
        owners_only(may_manage_owners)?;
        if db::members::lock_owners(&mut tx, org).await?.len() <= 1 {
            return Err(Error::Conflict("the last owner cannot be removed".into()));
        }
    }
    db::members::remove(&mut tx, org, user_id).await?;
    db::audit::enqueue(
        &mut tx,
        org,
        entry(
            actor,
            "member.remove",
            user_id,
            serde_json::json!({"role": current.role}),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Issues a service key (not tied to a member) with `role`; returns its id and the key in
/// clear, once.
pub async fn create_key(
    catalog: &PgPool,
    org: OrgId,
    name: &str,
    role: Role,
    may_manage_owners: bool,
    actor: &Actor<'_>,
) -> Result<(String, String), Error> {
    if role == Role::Owner {
        owners_only(may_manage_owners)?;
    }
    let key = apikey::generate();
    let mut tx = catalog.begin().await?;
    let id = db::api_keys::insert(
        &mut tx,
        NewApiKey {
            org,
            user_id: None,
            name,
            role: role.as_str(),
            prefix: &key.prefix,
            hash: &key.hash,
        },
    )
    .await?;
    db::audit::enqueue(
        &mut tx,
        org,
        entry(
            actor,
            "api_key.create",
            &id,
            serde_json::json!({"name": name, "role": role}),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((id, key.plaintext))
}

/// Revokes a key of the org (`404` if the org has none such).
pub async fn revoke_key(
    catalog: &PgPool,
    org: OrgId,
    key_id: &str,
    actor: &Actor<'_>,
) -> Result<(), Error> {
    let mut tx = catalog.begin().await?;
    if !db::api_keys::revoke(&mut tx, org, key_id).await? {
        return Err(Error::NotFound);
    }
    db::audit::enqueue(
        &mut tx,
        org,
        entry(actor, "api_key.revoke", key_id, serde_json::json!({})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
