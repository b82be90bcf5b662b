//! The emulator's data: installations, tokens, comments, check runs, deliveries, rate limits.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How an emulator is set up.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub app_id: u64,
    pub app_slug: String,
    /// The App's public key (PEM), to check App JWTs.
    pub app_public_key_pem: String,
    /// Where the App receives webhooks (can be set later through `/_emulator/config`).
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    /// Installations spring into existence on first use.
    pub auto_provision: bool,
    /// Requests per hour per caller.
    pub rate_limit: u64,
    /// Life of an installation token, in seconds.
    pub token_ttl_secs: i64,
    /// This emulator's base URL, for the `url` fields of its answers.
    pub base_url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Repo {
    pub id: i64,
    pub name: String,
    pub full_name: String,
    pub owner: String,
}

#[derive(Clone, Debug)]
pub struct Installation {
    pub id: i64,
    pub account: String,
    pub account_id: i64,
    pub account_type: String,
    /// `None`: every repository of the account (`repository_selection: all`).
    pub repos: Option<Vec<Repo>>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Provisioned on first use: it stands for whichever account a request names, so a
    /// token for repository `name` reaches `<any owner>/name`.
    pub any_owner: bool,
}

/// Whether a token's repository entry (`owner/name`, or `*/name` for an auto-provisioned
/// installation) covers `full`.
pub fn repo_matches(entry: &str, full: &str) -> bool {
    match entry.strip_prefix("*/") {
        Some(name) => full
            .rsplit('/')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(name)),
        None => entry.eq_ignore_ascii_case(full),
    }
}

#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub installation: i64,
    /// Repository full names the token may touch; `None` for all of the installation's.
    pub repos: Option<Vec<String>>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommentRec {
    pub id: i64,
    pub body: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRun {
    pub id: i64,
    pub repo: String,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub external_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// One attempt to deliver an event to the App's webhook URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRec {
    pub id: i64,
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    pub redelivery: bool,
    pub duration: f64,
    pub status: String,
    pub status_code: i64,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
    pub payload: serde_json::Value,
    pub response_body: String,
}

#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub used: u64,
    pub reset: i64,
}

#[derive(Debug)]
pub struct State {
    pub webhook_url: Option<String>,
    /// The App's setup URL: where the browser goes after installing.
    pub setup_url: Option<String>,
    pub installations: BTreeMap<i64, Installation>,
    pub tokens: HashMap<String, TokenInfo>,
    pub tokens_minted: BTreeMap<i64, u64>,
    pub comments: BTreeMap<(String, i64), Vec<CommentRec>>,
    pub check_runs: Vec<CheckRun>,
    pub deliveries: Vec<DeliveryRec>,
    pub rate: HashMap<String, Window>,
    pub next_id: i64,
}

impl State {
    pub fn new(webhook_url: Option<String>) -> Self {
        Self {
            webhook_url,
            setup_url: None,
            installations: BTreeMap::new(),
            tokens: HashMap::new(),
            tokens_minted: BTreeMap::new(),
            comments: BTreeMap::new(),
            check_runs: Vec::new(),
            deliveries: Vec::new(),
            rate: HashMap::new(),
            next_id: 1_000,
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// A repository record for `full_name`, with a stable id.
    pub fn repo(&mut self, full_name: &str) -> Repo {
        let (owner, name) = full_name.split_once('/').unwrap_or(("owner", full_name));
        let id = i64::from(crc(full_name) & 0x3fff_ffff) + 1;
        Repo {
            id,
            name: name.to_owned(),
            full_name: full_name.to_owned(),
            owner: owner.to_owned(),
        }
    }

    /// Creates an installation (or returns it when it exists).
    pub fn install(
        &mut self,
        id: i64,
        account: &str,
        account_type: &str,
        repos: Option<Vec<String>>,
    ) -> Installation {
        if let Some(i) = self.installations.get(&id) {
            return i.clone();
        }
        let repos = repos.map(|names| names.iter().map(|n| self.repo(n)).collect());
        let inst = Installation {
            id,
            account: account.to_owned(),
            account_id: i64::from(crc(account) & 0x3fff_ffff) + 1,
            account_type: account_type.to_owned(),
            repos,
            suspended_at: None,
            created_at: Utc::now(),
            any_owner: false,
        };
        self.installations.insert(id, inst.clone());
        inst
    }

    /// Counts one call of `caller` against its hourly budget; returns the window after it.
    pub fn spend(&mut self, caller: &str, limit: u64) -> Window {
        let now = Utc::now().timestamp();
        let w = self.rate.entry(caller.to_owned()).or_insert(Window {
            used: 0,
            reset: now + 3600,
        });
        if w.reset <= now {
            *w = Window {
                used: 0,
                reset: now + 3600,
            };
        }
        w.used = (w.used + 1).min(limit + 1);
        *w
    }
}

/// A small stable hash (ids derived from names).
pub fn crc(s: &str) -> u32 {
    s.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}
