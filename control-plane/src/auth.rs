//! Who is calling: the platform operator (a configured bootstrap token), an org's API key,
//! or an access token (JWT) exchanged for one. Nothing here decides what a caller may do;
//! that is [`crate::authz`].
//!
//! API keys and tokens are checked against the catalog on every request: a revoked key, a
//! removed member or a changed role takes effect at once, for tokens already issued too.

use protocol::OrgId;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::db;
use crate::db::api_keys::KeyLookup;
use crate::error::Error;
use crate::state::AppState;
use crate::tenancy::{Role, apikey};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The platform operator.
    Operator,
    /// An org's API key (directly, or through a token issued for it); `role` is what it
    /// holds now (for a member's key, the member's current role).
    ApiKey {
        key_id: String,
        org: OrgId,
        user_id: Option<String>,
        role: Role,
    },
}

impl Principal {
    /// How the caller is named in audit logs.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator => "operator".to_owned(),
            Principal::ApiKey {
                user_id: Some(u),
                key_id,
                ..
            } => format!("user:{u} (key:{key_id})"),
            Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }

    /// A stable scope for idempotency keys.
    pub fn idempotency_scope(&self) -> String {
        match self {
            Principal::Operator => "operator".to_owned(),
            Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
        }
    }
}

const INVALID: &str = "invalid or expired credentials";

/// Authenticates a bearer credential.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, Error> {
    if is_operator_token(state, token) {
        return Ok(Principal::Operator);
    }
    if let Some(prefix) = apikey::parse_prefix(token) {
        let key = db::api_keys::find_by_prefix(&state.catalog, prefix)
            .await?
            .ok_or(Error::Unauthorized(INVALID))?;
        if !apikey::verify(token, &key.secret_hash) {
            return Err(Error::Unauthorized(INVALID));
        }
        return principal_of(state, key);
    }
    if token.bytes().filter(|b| *b == b'.').count() == 2 {
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| Error::Unauthorized(INVALID))?;
        let key_id = claims.key_id().ok_or(Error::Unauthorized(INVALID))?;
        let key = db::api_keys::find_by_id(&state.catalog, key_id)
            .await?
            .ok_or(Error::Unauthorized(INVALID))?;
        if key.org_id != claims.org {
            return Err(Error::Unauthorized(INVALID));
        }
        return principal_of(state, key);
    }
    Err(Error::Unauthorized(INVALID))
}

fn principal_of(state: &AppState, key: KeyLookup) -> Result<Principal, Error> {
    if key.revoked_at.is_some() {
        return Err(Error::Unauthorized(INVALID));
    }
    let role = match (&key.user_id, &key.member_role) {
        // A member's key carries the member's current role; a removed member's key is dead.
        (Some(_), Some(member_role)) => member_role.parse::<Role>().map_err(Error::internal)?,
        (Some(_), None) => return Err(Error::Unauthorized(INVALID)),
        (None, _) => key.role.parse::<Role>().map_err(Error::internal)?,
    };
    let catalog = state.catalog.clone();
    let id = key.id.clone();
    tokio::spawn(async move {
        if let Err(e) = db::api_keys::touch(&catalog, &id).await {
            tracing::debug!(error = %e, "cannot record a key's last use");
        }
    });
    Ok(Principal::ApiKey {
        key_id: key.id,
        org: OrgId(key.org_id),
        user_id: key.user_id,
        role,
    })
}

fn is_operator_token(state: &AppState, token: &str) -> bool {
    // Compare against every configured token without an early exit.
    let mut ok = false;
    for t in &state.config.auth.operator_tokens {
        ok |= bool::from(t.expose_secret().as_bytes().ct_eq(token.as_bytes()));
    }
    ok
}
