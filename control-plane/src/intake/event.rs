//! The facts of a GitHub event that trigger rules and jobs need, read from the payload.
//!
//! Only the fields used are deserialized; everything else in the payload is skipped. Events
//! of any type parse: missing fields are simply absent facts.
//!
//! [`Payload::parse`] reads the body with sonic-rs rather than serde_json: most of a payload
//! (10 KB on average in GitHub's examples) is fields intake never reads, and sonic-rs skips
//! them with SIMD scans instead of byte by byte. The parse was 17 % of the control plane's
//! CPU in the profile of docs/benchmarks.md with serde_json (at f08bde7) and 8.9 % with
//! sonic-rs (at a587c14, another machine); sonic-rs takes 3.7 µs per example body where
//! serde_json took 6.3 µs (`cargo bench --bench payload`). Both take the same
//! serde derives and reject the same documents (invalid UTF-8, unpaired surrogates, trailing
//! characters, duplicate fields, wrong types); anything but an object is refused before either.

use protocol::job::{Target, TargetKind};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation: Option<Installation>,
    #[serde(default)]
    pub repository: Option<Repository>,
    #[serde(default)]
    pub issue: Option<Issue>,
    #[serde(default)]
    pub pull_request: Option<PullRequest>,
    #[serde(default)]
    pub label: Option<Named>,
    #[serde(default)]
    pub comment: Option<Comment>,
    #[serde(default)]
    pub sender: Option<User>,
    /// `installation` events: the repositories the installation reaches.
    #[serde(default)]
    pub repositories: Option<Vec<RepoRef>>,
    /// `installation_repositories` events.
    #[serde(default)]
    pub repositories_added: Option<Vec<RepoRef>>,
    #[serde(default)]
    pub repositories_removed: Option<Vec<RepoRef>>,
    #[serde(default)]
    pub repository_selection: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Installation {
    pub id: i64,
    #[serde(default)]
    pub account: Option<User>,
    #[serde(default)]
    pub repository_selection: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RepoRef {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    pub full_name: String,
}

#[derive(Debug, Deserialize)]
pub struct Issue {
    pub number: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
    /// Present when the "issue" is a pull request (issue comments on PRs).
    #[serde(default)]
    pub pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    pub number: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub head: Option<Head>,
}

#[derive(Debug, Deserialize)]
pub struct Head {
    pub sha: String,
}

#[derive(Debug, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct Comment {
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub performed_via_github_app: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub login: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// What rules match on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    pub event: String,
    pub action: Option<String>,
    pub repo: Option<String>,
    pub label: Option<String>,
    /// The first line of a new comment's body, trimmed.
    pub comment_line: Option<String>,
    /// Whether a bot (GitHub App or bot account) wrote the comment: such comments never
    /// trigger jobs, so bots cannot loop.
    pub by_bot: bool,
}

/// Why a body is not a payload: the parser's own description, with its position.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl Payload {
    /// Reads a webhook body: a JSON object (of any event), or an error saying where it is not.
    /// GitHub sends every event as an object. serde's derive would also take an array of the
    /// fields in order (`[]` as an empty payload), so anything but an object is refused here.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let first = body
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first != Some(&b'{') {
            return Err(ParseError("a webhook payload is a JSON object".to_owned()));
        }
        sonic_rs::from_slice(body).map_err(|e| ParseError(e.to_string()))
    }

    pub fn installation_id(&self) -> Option<i64> {
        self.installation.as_ref().map(|i| i.id)
    }

    pub fn facts(&self, event: &str) -> Facts {
        let comment_line = self
            .comment
            .as_ref()
            .and_then(|c| c.body.as_deref())
            .and_then(|b| b.lines().find(|l| !l.trim().is_empty()))
            .map(|l| l.trim().to_owned());
        let by_bot = self.comment.as_ref().is_some_and(|c| {
            c.performed_via_github_app.is_some()
                || c.user
                    .as_ref()
                    .is_some_and(|u| u.kind.as_deref() == Some("Bot") || u.login.ends_with("[bot]"))
        }) || (event == "issue_comment"
            && self
                .sender
                .as_ref()
                .is_some_and(|u| u.kind.as_deref() == Some("Bot")));
        Facts {
            event: event.to_owned(),
            action: self.action.clone(),
            repo: self.repository.as_ref().map(|r| r.full_name.clone()),
            label: self.label.as_ref().map(|l| l.name.clone()),
            comment_line,
            by_bot,
        }
    }

    /// The issue or pull request the event is about.
    pub fn target(&self) -> Option<Target> {
        let cut = |s: &Option<String>| {
            let s = s.as_deref().unwrap_or_default();
            let mut end = s.len().min(Target::MAX_BODY);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        };
        if let Some(pr) = &self.pull_request {
            return Some(Target {
                kind: TargetKind::PullRequest,
                number: pr.number,
                title: pr.title.clone(),
                body: cut(&pr.body),
                url: pr.html_url.clone(),
                head_sha: pr.head.as_ref().map(|h| h.sha.clone()),
            });
        }
        self.issue.as_ref().map(|i| Target {
            kind: if i.pull_request.is_some() {
                TargetKind::PullRequest
            } else {
                TargetKind::Issue
            },
            number: i.number,
            title: i.title.clone(),
            body: cut(&i.body),
            url: i.html_url.clone(),
            head_sha: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issue_labeled_event_yields_its_facts_and_target() {
        let p: Payload = serde_json::from_value(serde_json::json!({
            "action": "labeled",
            "installation": {"id": 42},
            "repository": {"full_name": "octo/hello", "id": 1},
            "issue": {"number": 7, "title": "Bug", "body": "it breaks", "html_url": "https://x/7"},
            "label": {"name": "bot"},
            "sender": {"login": "octocat", "type": "User"}
        }))
        .unwrap();
        assert_eq!(p.installation_id(), Some(42));
        let f = p.facts("issues");
        assert_eq!(f.action.as_deref(), Some("labeled"));
        assert_eq!(f.label.as_deref(), Some("bot"));
        assert_eq!(f.repo.as_deref(), Some("octo/hello"));
        assert!(!f.by_bot);
        let t = p.target().unwrap();
        assert_eq!((t.kind, t.number), (TargetKind::Issue, 7));
    }

    #[test]
    fn comments_by_bots_are_flagged() {
        for comment in [
            serde_json::json!({"body": "/bot go", "user": {"login": "switchyard[bot]", "type": "Bot"}}),
            serde_json::json!({"body": "/bot go", "user": {"login": "x", "type": "User"}, "performed_via_github_app": {"id": 1}}),
        ] {
            let p: Payload = serde_json::from_value(
                serde_json::json!({"action": "created", "comment": comment}),
            )
            .unwrap();
            assert!(p.facts("issue_comment").by_bot);
        }
    }

    #[test]
    fn the_command_line_is_the_first_non_blank_line() {
        let p: Payload = serde_json::from_value(serde_json::json!({
            "action": "created",
            "comment": {"body": "\n\n  /bot fix this  \nmore text", "user": {"login": "a", "type": "User"}}
        }))
        .unwrap();
        assert_eq!(
            p.facts("issue_comment").comment_line.as_deref(),
            Some("/bot fix this")
        );
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(Target::MAX_BODY);
        let p: Payload = serde_json::from_value(serde_json::json!({
            "issue": {"number": 1, "body": body}
        }))
        .unwrap();
        let t = p.target().unwrap();
        assert!(t.body.len() <= Target::MAX_BODY);
        assert!(t.body.chars().all(|c| c == 'é'));
    }

    #[test]
    fn comments_on_pull_requests_target_the_pull_request() {
        let p: Payload = serde_json::from_value(serde_json::json!({
            "issue": {"number": 3, "pull_request": {"url": "x"}}
        }))
        .unwrap();
        assert_eq!(p.target().unwrap().kind, TargetKind::PullRequest);
    }

    #[test]
    fn parse_rejects_what_serde_json_rejects() {
        let bad: [&[u8]; 9] = [
            b"",
            b"{",
            b"7",
            br#"{"action": "opened"} x"#,
            br#"{"action": "opened", "action": "closed"}"#,
            b"{\"action\": \"\xff\"}",
            br#"{"action": "\ud800"}"#,
            br#"{"installation": {"id": "7"}}"#,
            br#"{"zen": tru}"#,
        ];
        for body in bad {
            assert!(
                serde_json::from_slice::<Payload>(body).is_err(),
                "serde_json: {body:?}"
            );
            let e = Payload::parse(body).expect_err(&format!("{body:?}"));
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn parse_takes_only_an_object() {
        for body in [&b"[]"[..], b" [null, null]", b"\"x\"", b"null", b"\n\t 7"] {
            let e = Payload::parse(body).expect_err(&format!("{body:?}"));
            assert_eq!(e.to_string(), "a webhook payload is a JSON object");
        }
        assert!(Payload::parse(b" \r\n\t{}").is_ok());
    }

    #[test]
    fn parse_reads_what_serde_json_reads() {
        let body = br#" {"action": "created", "zen": [1, 2.5e3, null, {"a": "\u00e9\ud83d\ude00"}],
            "installation": {"id": 42, "account": {"login": "octo", "type": "Organization"}},
            "comment": {"body": "\n /bot go\t\nrest", "user": {"login": "a[bot]"}},
            "issue": {"number": 3, "title": "T\"q\"", "body": null, "pull_request": {}}} "#;
        let fast = Payload::parse(body).unwrap();
        let slow: Payload = serde_json::from_slice(body).unwrap();
        assert_eq!(fast.facts("issue_comment"), slow.facts("issue_comment"));
        assert_eq!(fast.target(), slow.target());
        assert_eq!(fast.installation_id(), Some(42));
        assert_eq!(
            fast.facts("issue_comment").comment_line.as_deref(),
            Some("/bot go")
        );
        assert_eq!(fast.target().unwrap().title, "T\"q\"");
    }

    #[test]
    fn payloads_without_known_fields_parse() {
        let p: Payload =
            serde_json::from_value(serde_json::json!({"zen": "Keep it logically awesome."}))
                .unwrap();
        assert_eq!(p.installation_id(), None);
        assert_eq!(p.facts("ping").event, "ping");
    }
}
