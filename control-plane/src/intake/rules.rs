//! Trigger rules: which events start which job kinds.
//!
//! A rule matches an event when every condition it names holds: the event name, the action,
//! the label (case-insensitive, as GitHub treats label names), a `/command` at the start of a
//! new comment, and a repository filter (`owner/name` or `owner/*`). Each matching rule makes
//! one job. Comments written by bots never match, so a bot's own replies cannot loop.

use chrono::{DateTime, Utc};
use protocol::{DeliveryId, InstallationId, JobId, JobKind, JobSpec, OrgId, Region, RuleId};
use serde::{Deserialize, Serialize};

use super::event::{Facts, Payload};
use crate::error::FieldError;

/// Most rules an org may have.
pub const MAX_RULES: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the org: 1–64 of `a-z 0-9 - _`.
    pub id: String,
    /// GitHub event name (`X-GitHub-Event`), e.g. `issues`, `pull_request`, `issue_comment`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A command such as `/bot`; matches new comments whose first line starts with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Repositories the rule applies to (`owner/name` or `owner/*`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<String>>,
    /// The job kind made (`agent`, `review`, …): 1–32 of `a-z 0-9 - _`.
    #[schema(value_type = String)]
    pub kind: JobKind,
}

/// The rules a new org starts with.
pub fn defaults() -> Vec<Rule> {
    vec![Rule {
        id: "label-bot".into(),
        event: "issues".into(),
        action: Some("labeled".into()),
        label: Some("bot".into()),
        command: None,
        repos: None,
        kind: JobKind::new("agent").expect("a valid kind"),
    }]
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_repo_pattern(s: &str) -> bool {
    let Some((owner, name)) = s.split_once('/') else {
        return false;
    };
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    part(owner) && (name == "*" || part(name))
}

/// Checks a rule set; every problem is reported with its field path (`[2].command`).
pub fn validate(rules: &[Rule]) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if rules.len() > MAX_RULES {
        errs.push(FieldError::new("", format!("at most {MAX_RULES} rules")));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let f = |name: &str| format!("[{i}].{name}");
        if !is_token(&r.id, 64) {
            errs.push(FieldError::new(
                f("id"),
                "use 1-64 of a-z, 0-9, '-' and '_'",
            ));
        } else if !seen.insert(r.id.as_str()) {
            errs.push(FieldError::new(f("id"), "duplicate rule id"));
        }
        if !is_token(&r.event, 64) {
            errs.push(FieldError::new(
                f("event"),
                "must be a GitHub event name such as issues",
            ));
        }
        if let Some(a) = &r.action
            && !is_token(a, 64)
        {
            errs.push(FieldError::new(
                f("action"),
                "must be a GitHub action name such as labeled",
            ));
        }
        if let Some(l) = &r.label
            && (l.is_empty() || l.chars().count() > 100 || l.chars().any(char::is_control))
        {
            errs.push(FieldError::new(
                f("label"),
                "must be 1-100 characters without control characters",
            ));
        }
        if let Some(c) = &r.command {
            let ok = c.starts_with('/')
                && (2..=64).contains(&c.len())
                && c[1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                errs.push(FieldError::new(
                    f("command"),
                    "must look like /name (2-64 characters)",
                ));
            }
        }
        if let Some(repos) = &r.repos {
            if repos.is_empty() || repos.len() > 100 {
                errs.push(FieldError::new(
                    f("repos"),
                    "list 1-100 repositories, or leave it out for all",
                ));
            }
            for (j, p) in repos.iter().enumerate() {
                if !is_repo_pattern(p) {
                    errs.push(FieldError::new(
                        format!("[{i}].repos[{j}]"),
                        "must be owner/name or owner/*",
                    ));
                }
            }
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn repo_matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(owner) => repo
            .split_once('/')
            .is_some_and(|(o, _)| o.eq_ignore_ascii_case(owner)),
        None => pattern.eq_ignore_ascii_case(repo),
    }
}

fn command_matches(command: &str, line: &str) -> bool {
    line.strip_prefix(command)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

pub fn matches(rule: &Rule, f: &Facts) -> bool {
    if rule.event != f.event {
        return false;
    }
    if f.by_bot && (f.comment_line.is_some() || rule.command.is_some()) {
        return false;
    }
    // Command rules fire on new comments unless they name another action.
    let action = rule
        .action
        .as_deref()
        .or(rule.command.as_ref().map(|_| "created"));
    if let Some(a) = action
        && f.action.as_deref() != Some(a)
    {
        return false;
    }
    if let Some(l) = &rule.label
        && !f
            .label
            .as_deref()
            .is_some_and(|fl| fl.eq_ignore_ascii_case(l))
    {
        return false;
    }
    if let Some(c) = &rule.command
        && !f
            .comment_line
            .as_deref()
            .is_some_and(|line| command_matches(c, line))
    {
        return false;
    }
    if let Some(repos) = &rule.repos
        && !f
            .repo
            .as_deref()
            .is_some_and(|r| repos.iter().any(|p| repo_matches(p, r)))
    {
        return false;
    }
    true
}

/// Where a delivery came from, for the jobs it makes.
#[derive(Clone, Debug)]
pub struct DeliveryContext<'a> {
    pub org: OrgId,
    pub region: &'a Region,
    pub delivery: &'a DeliveryId,
    pub installation: Option<InstallationId>,
    pub received_at: DateTime<Utc>,
    /// The org plan's cap on jobs running at once.
    pub max_concurrent: Option<u32>,
    /// The org plan's monthly job seconds, when they are a hard limit.
    pub job_seconds_quota: Option<i64>,
}

/// The jobs a delivery makes: one per matching rule, named by delivery and rule.
pub fn jobs_for(
    rules: &[Rule],
    payload: &Payload,
    facts: &Facts,
    ctx: &DeliveryContext<'_>,
) -> Vec<JobSpec> {
    rules
        .iter()
        .filter(|r| matches(r, facts))
        .map(|r| {
            let rule_id = RuleId(r.id.clone());
            JobSpec {
                job_id: JobId::derive(ctx.org, ctx.delivery, &rule_id),
                org_id: ctx.org,
                region: ctx.region.clone(),
                kind: r.kind.clone(),
                delivery_id: ctx.delivery.clone(),
                rule_id,
                installation_id: ctx.installation,
                event: facts.event.clone(),
                action: facts.action.clone(),
                repo: facts.repo.clone(),
                target: payload.target(),
                trigger: r
                    .command
                    .as_ref()
                    .and(facts.comment_line.clone())
                    .or_else(|| facts.label.clone()),
                sender: payload.sender.as_ref().map(|s| s.login.clone()),
                created_at: ctx.received_at,
                requeue: 0,
                max_concurrent: ctx.max_concurrent,
                job_seconds_quota: ctx.job_seconds_quota,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, event: &str) -> Rule {
        Rule {
            id: id.into(),
            event: event.into(),
            action: None,
            label: None,
            command: None,
            repos: None,
            kind: JobKind::new("agent").unwrap(),
        }
    }

    fn facts(event: &str, action: &str) -> Facts {
        Facts {
            event: event.into(),
            action: Some(action.into()),
            repo: Some("octo/hello".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_rule_matches_issues_labeled_bot_only() {
        let d = &defaults()[0];
        let mut f = facts("issues", "labeled");
        f.label = Some("bot".into());
        assert!(matches(d, &f));
        f.label = Some("BOT".into());
        assert!(matches(d, &f), "label names are case-insensitive");
        f.label = Some("bug".into());
        assert!(!matches(d, &f));
        let mut f = facts("issues", "unlabeled");
        f.label = Some("bot".into());
        assert!(!matches(d, &f));
        let mut f = facts("pull_request", "labeled");
        f.label = Some("bot".into());
        assert!(!matches(d, &f));
    }

    #[test]
    fn a_rule_naming_only_the_event_matches_every_action() {
        let r = rule("all-prs", "pull_request");
        assert!(matches(&r, &facts("pull_request", "opened")));
        assert!(matches(&r, &facts("pull_request", "closed")));
        assert!(!matches(&r, &facts("issues", "opened")));
    }

    #[test]
    fn commands_match_the_start_of_a_new_comment_as_a_whole_word() {
        let mut r = rule("cmd", "issue_comment");
        r.command = Some("/bot".into());
        let mut f = facts("issue_comment", "created");
        for (line, expected) in [
            ("/bot", true),
            ("/bot fix it", true),
            ("/bot\tnow", true),
            ("/botany", false),
            ("please /bot", false),
            ("/BOT", false),
        ] {
            f.comment_line = Some(line.into());
            assert_eq!(matches(&r, &f), expected, "{line:?}");
        }
        f.comment_line = Some("/bot".into());
        f.action = Some("edited".into());
        assert!(!matches(&r, &f), "edits do not re-run a command");
        r.action = Some("edited".into());
        assert!(matches(&r, &f), "unless the rule asks for them");
    }

    #[test]
    fn comments_by_bots_never_match() {
        let mut r = rule("cmd", "issue_comment");
        r.command = Some("/bot".into());
        let mut f = facts("issue_comment", "created");
        f.comment_line = Some("/bot go".into());
        f.by_bot = true;
        assert!(!matches(&r, &f));
        assert!(!matches(&rule("any-comment", "issue_comment"), &f));
    }

    #[test]
    fn repository_filters_take_exact_names_and_owner_wildcards() {
        let mut r = rule("scoped", "issues");
        r.repos = Some(vec!["octo/hello".into(), "acme/*".into()]);
        let mut f = facts("issues", "opened");
        for (repo, expected) in [
            ("octo/hello", true),
            ("Octo/Hello", true),
            ("octo/other", false),
            ("acme/anything", true),
            ("acmeco/x", false),
        ] {
            f.repo = Some(repo.into());
            assert_eq!(matches(&r, &f), expected, "{repo}");
        }
        f.repo = None;
        assert!(!matches(&r, &f));
    }

    #[test]
    fn validation_reports_each_bad_field() {
        let mut bad = rule("Bad Id", "issues");
        bad.command = Some("bot".into());
        bad.repos = Some(vec!["nope".into()]);
        let dup = rule("x", "issues");
        let errs = validate(&[bad, dup.clone(), dup]).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["[0].id", "[0].command", "[0].repos[0]", "[2].id"]
        );
        assert!(validate(&defaults()).is_ok());
        assert!(validate(&[]).is_ok(), "an empty rule set is valid");
    }

    #[test]
    fn each_matching_rule_makes_one_job_named_by_delivery_and_rule() {
        let mut labeled = defaults();
        labeled.push(rule("any-issue", "issues"));
        labeled.push(rule("prs", "pull_request"));
        let payload: Payload = serde_json::from_value(serde_json::json!({
            "action": "labeled", "label": {"name": "bot"}, "repository": {"full_name": "o/r"},
            "issue": {"number": 5, "title": "t"}
        }))
        .unwrap();
        let region = Region::new("us-east-1").unwrap();
        let delivery = DeliveryId::from("d-1");
        let ctx = DeliveryContext {
            org: OrgId(9),
            region: &region,
            delivery: &delivery,
            installation: Some(InstallationId(1)),
            received_at: Utc::now(),
            max_concurrent: Some(8),
            job_seconds_quota: None,
        };
        let jobs = jobs_for(&labeled, &payload, &payload.facts("issues"), &ctx);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].rule_id.0, "label-bot");
        assert_eq!(jobs[0].trigger.as_deref(), Some("bot"));
        assert_eq!(
            jobs[0].job_id,
            JobId::derive(OrgId(9), &delivery, &RuleId::from("label-bot"))
        );
        let again = jobs_for(&labeled, &payload, &payload.facts("issues"), &ctx);
        assert_eq!(jobs, again, "a redelivery names the same jobs");
    }
}
