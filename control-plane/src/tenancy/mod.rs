//! Tenancy rules: roles, what a valid slug, name and email are, API key format. No HTTP, no
//! SQL.

pub mod apikey;
pub mod audit;
pub mod jwt;
pub mod members;
pub mod onboarding;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// A member's role in an org.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Billing,
    Developer,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Billing,
        Role::Developer,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Billing => "billing",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// An org's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    /// Onboarding is running; invisible to the API.
    Creating,
    Active,
    /// Offboarded: no new jobs; data kept for the retention period.
    Deleted,
}

impl OrgStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgStatus::Creating => "creating",
            OrgStatus::Active => "active",
            OrgStatus::Deleted => "deleted",
        }
    }
}

impl FromStr for OrgStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "creating" => Ok(OrgStatus::Creating),
            "active" => Ok(OrgStatus::Active),
            "deleted" => Ok(OrgStatus::Deleted),
            _ => Err(format!("unknown org status {s:?}")),
        }
    }
}

/// Slugs follow GitHub's organization names: 3–39 characters, lowercase letters, digits and
/// single hyphens, not starting or ending with a hyphen.
pub fn check_slug(slug: &str) -> Result<(), FieldError> {
    let bad = |m: &str| Err(FieldError::new("slug", m));
    if !(3..=39).contains(&slug.chars().count()) {
        return bad("must be 3 to 39 characters long");
    }
    if !slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return bad("may contain only lowercase letters, digits and hyphens");
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return bad("may not start or end with a hyphen");
    }
    if slug.contains("--") {
        return bad("may not contain consecutive hyphens");
    }
    Ok(())
}

/// Display names: 1–100 characters after trimming, no control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 100 {
        return Err(FieldError::new(field, "must be 1 to 100 characters long"));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(field, "may not contain control characters"));
    }
    Ok(())
}

/// A plausible email address, normalized to lowercase. Deliverability is not checked.
pub fn normalize_email(field: &str, email: &str) -> Result<String, FieldError> {
    let e = email.trim().to_lowercase();
    let bad = || FieldError::new(field, "must be an email address");
    if e.len() > 254 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
        return Err(bad());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_like_slugs_are_accepted() {
        for s in ["abc", "acme-corp", "a1b2", "x-y-z", &"a".repeat(39)] {
            assert!(check_slug(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn slugs_outside_the_rules_are_refused() {
        for s in [
            "ab",
            &"a".repeat(40),
            "Acme",
            "-acme",
            "acme-",
            "ac--me",
            "acme_corp",
            "acme corp",
            "acme;drop",
            "ac'me",
            "ácme",
            "acme\n",
        ] {
            assert!(check_slug(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn names_allow_unicode_but_not_control_characters() {
        assert!(check_name("name", "Acme Corp").is_ok());
        assert!(check_name("name", "Société Générale 🚀").is_ok());
        assert!(
            check_name("name", "'; drop table org; --").is_ok(),
            "stored as data, never as SQL"
        );
        assert!(check_name("name", "").is_err());
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
        assert!(check_name("name", "line\nbreak").is_err());
        assert!(check_name("name", &"é".repeat(101)).is_err());
        assert!(check_name("name", &"é".repeat(100)).is_ok());
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("e", " Owner@Acme.Example ").unwrap(),
            "owner@acme.example"
        );
        for bad in [
            "",
            "owner",
            "@acme.example",
            "owner@",
            "owner@acme",
            "a b@c.d",
            "a@b..c",
            "a@.b.c",
        ] {
            assert!(normalize_email("e", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("operator".parse::<Role>().is_err());
    }
}
