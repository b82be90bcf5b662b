//! What a caller may do — decided by casbin, domain = org, through the one function
//! [`require`]. No handler asks casbin itself.
//!
//! The model (`config/rbac_model.conf`) and the roles' permissions
//! (`config/rbac_policy.csv`) live in the repository. Who holds which role in which org
//! comes from the catalog: when a request first concerns an org, its credentials' roles are
//! loaded as `g` rules for that org's domain; when the org's `authz_version` (bumped by the
//! database on any membership or key change) moves past what is loaded, they are loaded
//! again. So a membership change takes effect on the next request on every control plane.

use std::collections::HashMap;
use std::sync::Mutex;

use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use protocol::OrgId;
use tokio::sync::RwLock;

use crate::auth::Principal;
use crate::db;
use crate::error::Error;
use crate::http::extract::OrgScope;
use crate::state::AppState;

pub const MODEL: &str = include_str!("../config/rbac_model.conf");
pub const POLICY: &str = include_str!("../config/rbac_policy.csv");

/// Orgs whose rules are held before the table is emptied and refilled on demand.
const MAX_LOADED_ORGS: usize = 50_000;

/// Everything a handler may ask permission for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    OrgRead,
    OrgUpdate,
    OrgPlan,
    OrgDelete,
    MembersRead,
    MembersWrite,
    /// Granting the `owner` role, or changing or removing an owner.
    GrantOwner,
    ApiKeysManage,
    AuditRead,
    InstallationsRead,
    InstallationsWrite,
    RulesRead,
    RulesWrite,
    JobsRead,
    JobsWrite,
    UsageRead,
    InvoicesRead,
    /// The platform endpoints (`/v1/admin/…`), and creating orgs without self-serve signup.
    Platform,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::OrgRead => "org:read",
            Action::OrgUpdate => "org:update",
            Action::OrgPlan => "org:plan",
            Action::OrgDelete => "org:delete",
            Action::MembersRead => "members:read",
            Action::MembersWrite => "members:write",
            Action::GrantOwner => "members:grant_owner",
            Action::ApiKeysManage => "api_keys:manage",
            Action::AuditRead => "audit:read",
            Action::InstallationsRead => "installations:read",
            Action::InstallationsWrite => "installations:write",
            Action::RulesRead => "rules:read",
            Action::RulesWrite => "rules:write",
            Action::JobsRead => "jobs:read",
            Action::JobsWrite => "jobs:write",
            Action::UsageRead => "usage:read",
            Action::InvoicesRead => "invoices:read",
            Action::Platform => "platform:admin",
        }
    }

    /// Whether the action changes anything (refused on an offboarded org).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Action::OrgRead
                | Action::MembersRead
                | Action::AuditRead
                | Action::InstallationsRead
                | Action::RulesRead
                | Action::JobsRead
                | Action::UsageRead
                | Action::InvoicesRead
        )
    }
}

/// Where an action is asked for.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Org(&'a OrgScope),
    Platform(&'a Principal),
}

/// The casbin subject of a caller.
pub fn subject(p: &Principal) -> String {
    match p {
        Principal::Operator => "operator".to_owned(),
        Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
    }
}

/// The enforcer and which orgs' rules it holds, at which version.
pub struct Authz {
    enforcer: RwLock<Enforcer>,
    loaded: Mutex<HashMap<OrgId, i64>>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("authorization rules: {0}")]
pub struct AuthzError(#[from] casbin::Error);

impl Authz {
    /// The enforcer with the repository's model and role permissions.
    pub async fn new() -> Result<Self, AuthzError> {
        let model = DefaultModel::from_str(MODEL).await?;
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default()).await?;
        for line in POLICY
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let fields: Vec<String> = line.split(',').map(|f| f.trim().to_owned()).collect();
            match fields.split_first() {
                Some((kind, rest)) if kind == "p" => {
                    enforcer.add_policy(rest.to_vec()).await?;
                }
                Some((kind, rest)) if kind == "g" => {
                    enforcer.add_grouping_policy(rest.to_vec()).await?;
                }
                _ => {
                    return Err(casbin::Error::from(casbin::error::ModelError::P(format!(
                        "bad policy line: {line}"
                    )))
                    .into());
                }
            }
        }
        Ok(Self {
            enforcer: RwLock::new(enforcer),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Decides `subject` may do `action` in `domain`, without I/O.
    pub async fn decide(
        &self,
        subject: &str,
        domain: &str,
        action: Action,
    ) -> Result<bool, AuthzError> {
        Ok(self
            .enforcer
            .read()
            .await
            .enforce((subject, domain, action.as_str()))?)
    }

    fn loaded_version(&self, org: OrgId) -> Option<i64> {
        self.loaded.lock().ok().and_then(|l| l.get(&org).copied())
    }

    /// Replaces the org's `g` rules with `grants` (as of `version`).
    pub async fn load_org(
        &self,
        org: OrgId,
        version: i64,
        grants: Vec<(String, String)>,
    ) -> Result<(), AuthzError> {
        let domain = org.to_string();
        let mut e = self.enforcer.write().await;
        e.remove_filtered_grouping_policy(2, vec![domain.clone()])
            .await?;
        let rules: Vec<Vec<String>> = grants
            .into_iter()
            .map(|(sub, role)| vec![sub, role, domain.clone()])
            .collect();
        if !rules.is_empty() {
            e.add_grouping_policies(rules).await?;
        }
        drop(e);
        if let Ok(mut loaded) = self.loaded.lock() {
            if loaded.len() >= MAX_LOADED_ORGS {
                // Forget the bookkeeping; stale rules of other orgs are replaced on their next
                // request, since an org absent from the table is always reloaded.
                loaded.clear();
            }
            loaded.insert(org, version);
        }
        Ok(())
    }
}

/// Allows or refuses `action`. The one authorization check of every handler.
///
/// A member of the org without the permission gets `403`. Callers never reach another org's
/// resources: the org scope already answered `404` for those. A change to an offboarded org
/// is `409`.
pub async fn require(state: &AppState, scope: Scope<'_>, action: Action) -> Result<(), Error> {
    let (principal, domain) = match scope {
        Scope::Platform(p) => (p, "platform".to_owned()),
        Scope::Org(s) => {
            let org = s.id();
            if state
                .authz
                .loaded_version(org)
                .is_none_or(|v| v < s.org.authz_version)
            {
                let mut conn = state.catalog.acquire().await?;
                let (version, grants) = db::members::grants(&mut conn, org).await?;
                drop(conn);
                state
                    .authz
                    .load_org(org, version, grants)
                    .await
                    .map_err(Error::internal)?;
            }
            if action.writes() && s.org.status == "deleted" {
                return Err(Error::Conflict(
                    "the org is offboarded; its data is read-only".into(),
                ));
            }
            (&s.principal, org.to_string())
        }
    };
    let allowed = state
        .authz
        .decide(&subject(principal), &domain, action)
        .await
        .map_err(Error::internal)?;
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn authz_with(org: i64, grants: &[(&str, &str)]) -> Authz {
        let a = Authz::new().await.unwrap();
        let g = grants
            .iter()
            .map(|(s, r)| ((*s).to_owned(), (*r).to_owned()))
            .collect();
        a.load_org(OrgId(org), 1, g).await.unwrap();
        a
    }

    #[tokio::test]
    async fn the_operator_may_do_everything_everywhere() {
        let a = Authz::new().await.unwrap();
        for act in [
            Action::OrgDelete,
            Action::GrantOwner,
            Action::Platform,
            Action::InvoicesRead,
        ] {
            assert!(a.decide("operator", "12345", act).await.unwrap());
            assert!(a.decide("operator", "platform", act).await.unwrap());
        }
    }

    #[tokio::test]
    async fn roles_get_exactly_the_contracts_permissions() {
        let a = authz_with(
            7,
            &[
                ("key:o", "owner"),
                ("key:a", "admin"),
                ("key:b", "billing"),
                ("key:d", "developer"),
                ("key:v", "viewer"),
            ],
        )
        .await;
        use Action::*;
        let table: &[(Action, &[&str])] = &[
            (OrgRead, &["o", "a", "b", "d", "v"]),
            (OrgUpdate, &["o", "a"]),
            (OrgPlan, &["o", "b"]),
            (OrgDelete, &["o"]),
            (MembersRead, &["o", "a", "b", "d", "v"]),
            (MembersWrite, &["o", "a"]),
            (GrantOwner, &["o"]),
            (ApiKeysManage, &["o", "a"]),
            (AuditRead, &["o", "a"]),
            (InstallationsRead, &["o", "a", "b", "d", "v"]),
            (InstallationsWrite, &["o", "a"]),
            (RulesRead, &["o", "a", "b", "d", "v"]),
            (RulesWrite, &["o", "a", "d"]),
            (JobsRead, &["o", "a", "b", "d", "v"]),
            (JobsWrite, &["o", "a", "d"]),
            (UsageRead, &["o", "a", "b"]),
            (InvoicesRead, &["o", "b"]),
            (Platform, &[]),
        ];
        for (act, allowed) in table {
            for who in ["o", "a", "b", "d", "v"] {
                let got = a.decide(&format!("key:{who}"), "7", *act).await.unwrap();
                assert_eq!(got, allowed.contains(&who), "{who} {act:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_role_holds_only_in_its_own_org() {
        let a = authz_with(7, &[("key:o", "owner")]).await;
        assert!(a.decide("key:o", "7", Action::OrgRead).await.unwrap());
        assert!(!a.decide("key:o", "8", Action::OrgRead).await.unwrap());
        assert!(
            !a.decide("key:o", "platform", Action::Platform)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn reloading_an_org_replaces_its_rules() {
        let a = authz_with(7, &[("key:x", "owner")]).await;
        a.load_org(OrgId(7), 2, vec![("key:x".into(), "viewer".into())])
            .await
            .unwrap();
        assert!(!a.decide("key:x", "7", Action::OrgDelete).await.unwrap());
        assert!(a.decide("key:x", "7", Action::OrgRead).await.unwrap());
        a.load_org(OrgId(7), 3, vec![]).await.unwrap();
        assert!(!a.decide("key:x", "7", Action::OrgRead).await.unwrap());
        assert_eq!(a.loaded_version(OrgId(7)), Some(3));
    }

    #[tokio::test]
    async fn unknown_subjects_may_do_nothing() {
        let a = authz_with(7, &[("key:o", "owner")]).await;
        assert!(!a.decide("key:nobody", "7", Action::OrgRead).await.unwrap());
        assert!(!a.decide("", "7", Action::OrgRead).await.unwrap());
    }
}
