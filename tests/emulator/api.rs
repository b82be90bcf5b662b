//! The emulated GitHub REST API.

// Handlers return early with ready answers; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Emulator;
use super::state::{CheckRun, CommentRec, Installation, Repo, TokenInfo, Window};

pub fn router() -> Router<Emulator> {
    rest()
        .router
        .fallback(|| async { gh_error(StatusCode::NOT_FOUND, "Not Found", None) })
}

/// Every REST route the emulator serves: method and path template, spelled as in GitHub's REST
/// description (a test finds each of them there).
pub fn routes() -> Vec<(Method, &'static str)> {
    rest().routes
}

fn rest() -> Rest {
    Rest::default()
        .at(Method::GET, "/app", get_app)
        .at(
            Method::GET,
            "/app/installations/{installation_id}",
            get_installation,
        )
        .at(
            Method::POST,
            "/app/installations/{installation_id}/access_tokens",
            create_token,
        )
        .at(Method::GET, "/installation/repositories", list_repositories)
        .at(
            Method::GET,
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            list_comments,
        )
        .at(
            Method::POST,
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
            create_comment,
        )
        .at(
            Method::POST,
            "/repos/{owner}/{repo}/check-runs",
            create_check_run,
        )
        .at(
            Method::PATCH,
            "/repos/{owner}/{repo}/check-runs/{check_run_id}",
            update_check_run,
        )
        .at(Method::GET, "/app/hook/deliveries", list_deliveries)
        .at(
            Method::GET,
            "/app/hook/deliveries/{delivery_id}",
            get_delivery,
        )
        .at(
            Method::POST,
            "/app/hook/deliveries/{delivery_id}/attempts",
            redeliver,
        )
}

/// The REST routes, and the list of them, built by the same calls so they cannot drift apart.
#[derive(Default)]
struct Rest {
    router: Router<Emulator>,
    routes: Vec<(Method, &'static str)>,
}

impl Rest {
    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Emulator>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.routes.push((method, path));
        self
    }
}

/// GitHub's error body, with the rate-limit headers of `window` when known.
pub fn gh_error(status: StatusCode, message: &str, window: Option<(Window, u64)>) -> Response {
    let body = json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()});
    with_rate(status, body, window)
}

fn with_rate(
    status: StatusCode,
    body: impl Into<Value>,
    window: Option<(Window, u64)>,
) -> Response {
    let body: Value = body.into();
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    if let Some((w, limit)) = window {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", limit.into());
        h.insert("x-ratelimit-remaining", limit.saturating_sub(w.used).into());
        h.insert("x-ratelimit-used", w.used.into());
        h.insert("x-ratelimit-reset", w.reset.into());
        h.insert(
            "x-ratelimit-resource",
            "core".parse().expect("a header value"),
        );
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .or_else(|| v.strip_prefix("token "))
}

/// Checks an App JWT: RS256, signed by the App's key, issued for the App, short-lived.
fn app_auth(emu: &Emulator, headers: &HeaderMap) -> Result<(Window, u64), Response> {
    let unauthorized = |m: &str| {
        tracing::debug!(reason = m, headers = ?headers.keys().collect::<Vec<_>>(), "emulator: App JWT refused");
        gh_error(StatusCode::UNAUTHORIZED, m, None)
    };
    let token = bearer(headers).ok_or_else(|| unauthorized("Requires authentication"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(emu.cfg.app_public_key_pem.as_bytes())
        .map_err(|_| unauthorized("A JSON web token could not be decoded"))?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // `iss` is the App id as an integer, which the library does not take as an issuer; it is
    // checked below.
    v.set_required_spec_claims(&["exp"]);
    v.validate_aud = false;
    v.leeway = 60;
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
        tracing::debug!(error = %e, "emulator: App JWT refused");
        unauthorized("A JSON web token could not be decoded")
    })?;
    let c = data.claims;
    let iss = c["iss"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| c["iss"].as_u64().map(|n| n.to_string()));
    if iss.as_deref() != Some(emu.cfg.app_id.to_string().as_str()) {
        return Err(unauthorized("'Issuer' claim ('iss') must be an Integer"));
    }
    let (iat, exp) = (
        c["iat"].as_i64().unwrap_or(0),
        c["exp"].as_i64().unwrap_or(0),
    );
    if exp - iat > 660 {
        return Err(unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    spend(emu, "app")
}

fn spend(emu: &Emulator, caller: &str) -> Result<(Window, u64), Response> {
    let limit = emu.cfg.rate_limit;
    let w = emu.state.lock().expect("state lock").spend(caller, limit);
    if w.used > limit {
        return Err(gh_error(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded",
            Some((w, limit)),
        ));
    }
    Ok((w, limit))
}

/// Checks an installation token; returns it and the caller's window.
fn token_auth(emu: &Emulator, headers: &HeaderMap) -> Result<(TokenInfo, (Window, u64)), Response> {
    let token = bearer(headers)
        .ok_or_else(|| gh_error(StatusCode::UNAUTHORIZED, "Requires authentication", None))?;
    let info = emu
        .state
        .lock()
        .expect("state lock")
        .tokens
        .get(token)
        .cloned();
    let info = info
        .filter(|t| t.expires_at > Utc::now())
        .ok_or_else(|| gh_error(StatusCode::UNAUTHORIZED, "Bad credentials", None))?;
    let w = spend(emu, &format!("installation:{}", info.installation))?;
    Ok((info, w))
}

/// Whether a token may touch `repo`.
fn may_touch(emu: &Emulator, t: &TokenInfo, repo: &str) -> bool {
    let st = emu.state.lock().expect("state lock");
    let Some(inst) = st.installations.get(&t.installation) else {
        return false;
    };
    if inst.suspended_at.is_some() {
        return false;
    }
    let in_installation = inst
        .repos
        .as_ref()
        .is_none_or(|rs| rs.iter().any(|r| r.full_name.eq_ignore_ascii_case(repo)));
    let in_token = t
        .repos
        .as_ref()
        .is_none_or(|rs| rs.iter().any(|r| super::state::repo_matches(r, repo)));
    in_installation && in_token
}

pub fn user_json(base: &str, login: &str, id: i64, kind: &str) -> Value {
    // A bot's login (`slug[bot]`) is percent-encoded in its URLs, and its page is its App's.
    let escaped = login.replace('[', "%5B").replace(']', "%5D");
    let u = format!("{base}/users/{escaped}");
    let html_url = match login.strip_suffix("[bot]") {
        Some(slug) => format!("{base}/apps/{slug}"),
        None => format!("{base}/{login}"),
    };
    json!({
        "login": login, "id": id, "node_id": format!("U_{id}"), "avatar_url": format!("{base}/avatars/{id}"),
        "gravatar_id": "", "url": u, "html_url": html_url,
        "followers_url": format!("{u}/followers"), "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"), "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"), "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"), "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"), "type": kind, "site_admin": false,
    })
}

fn installation_json(emu: &Emulator, i: &Installation) -> Value {
    let base = &emu.cfg.base_url;
    json!({
        "id": i.id,
        "account": user_json(base, &i.account, i.account_id, &i.account_type),
        "access_tokens_url": format!("{base}/app/installations/{}/access_tokens", i.id),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": format!("{base}/organizations/{}/settings/installations/{}", i.account, i.id),
        "app_id": emu.cfg.app_id, "app_slug": emu.cfg.app_slug,
        "target_id": i.account_id, "target_type": i.account_type,
        "permissions": {"issues": "write", "pull_requests": "write", "checks": "write", "contents": "read", "metadata": "read"},
        "events": ["issues", "issue_comment", "pull_request", "installation", "installation_repositories"],
        "created_at": i.created_at.to_rfc3339(), "updated_at": i.created_at.to_rfc3339(),
        "single_file_name": null,
        "repository_selection": if i.repos.is_some() { "selected" } else { "all" },
        "suspended_by": null,
        "suspended_at": i.suspended_at.map(|t| t.to_rfc3339()),
    })
}

pub fn repo_json(base: &str, r: &Repo) -> Value {
    let u = format!("{base}/repos/{}", r.full_name);
    let owner_id = i64::from(super::state::crc(&r.owner) & 0x3fff_ffff) + 1;
    let now = Utc::now().to_rfc3339();
    json!({
        "id": r.id, "node_id": format!("R_{}", r.id), "name": r.name, "full_name": r.full_name,
        "owner": user_json(base, &r.owner, owner_id, "Organization"), "private": false,
        "html_url": format!("{base}/{}", r.full_name), "description": null, "fork": false, "url": u,
        "archive_url": format!("{u}/{{archive_format}}{{/ref}}"), "assignees_url": format!("{u}/assignees{{/user}}"),
        "blobs_url": format!("{u}/git/blobs{{/sha}}"), "branches_url": format!("{u}/branches{{/branch}}"),
        "collaborators_url": format!("{u}/collaborators{{/collaborator}}"), "comments_url": format!("{u}/comments{{/number}}"),
        "commits_url": format!("{u}/commits{{/sha}}"), "compare_url": format!("{u}/compare/{{base}}...{{head}}"),
        "contents_url": format!("{u}/contents/{{+path}}"), "contributors_url": format!("{u}/contributors"),
        "deployments_url": format!("{u}/deployments"), "downloads_url": format!("{u}/downloads"),
        "events_url": format!("{u}/events"), "forks_url": format!("{u}/forks"),
        "git_commits_url": format!("{u}/git/commits{{/sha}}"), "git_refs_url": format!("{u}/git/refs{{/sha}}"),
        "git_tags_url": format!("{u}/git/tags{{/sha}}"), "git_url": format!("git://emulator/{}.git", r.full_name),
        "issue_comment_url": format!("{u}/issues/comments{{/number}}"), "issue_events_url": format!("{u}/issues/events{{/number}}"),
        "issues_url": format!("{u}/issues{{/number}}"), "keys_url": format!("{u}/keys{{/key_id}}"),
        "labels_url": format!("{u}/labels{{/name}}"), "languages_url": format!("{u}/languages"),
        "merges_url": format!("{u}/merges"), "milestones_url": format!("{u}/milestones{{/number}}"),
        "notifications_url": format!("{u}/notifications{{?since,all,participating}}"),
        "pulls_url": format!("{u}/pulls{{/number}}"), "releases_url": format!("{u}/releases{{/id}}"),
        "ssh_url": format!("git@emulator:{}.git", r.full_name), "stargazers_url": format!("{u}/stargazers"),
        "statuses_url": format!("{u}/statuses/{{sha}}"), "subscribers_url": format!("{u}/subscribers"),
        "subscription_url": format!("{u}/subscription"), "tags_url": format!("{u}/tags"),
        "teams_url": format!("{u}/teams"), "trees_url": format!("{u}/git/trees{{/sha}}"),
        "clone_url": format!("{base}/{}.git", r.full_name), "mirror_url": null, "hooks_url": format!("{u}/hooks"),
        "svn_url": format!("{base}/{}", r.full_name), "homepage": null, "language": null,
        "forks_count": 0, "stargazers_count": 0, "watchers_count": 0, "size": 0, "default_branch": "main",
        "open_issues_count": 0, "is_template": false, "topics": [], "has_issues": true, "has_projects": false,
        "has_wiki": false, "has_pages": false, "has_downloads": false, "archived": false, "disabled": false,
        "visibility": "public", "pushed_at": now, "created_at": now, "updated_at": now,
        "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        "forks": 0, "open_issues": 0, "watchers": 0, "license": null,
    })
}

async fn get_app(State(emu): State<Emulator>, headers: HeaderMap) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let base = &emu.cfg.base_url;
    let now = Utc::now().to_rfc3339();
    with_rate(
        StatusCode::OK,
        json!({
            "id": emu.cfg.app_id, "slug": emu.cfg.app_slug, "node_id": format!("A_{}", emu.cfg.app_id),
            "owner": user_json(base, "switchyard", 1, "Organization"), "name": emu.cfg.app_slug,
            "description": "Switchyard code bots", "external_url": base, "html_url": format!("{base}/apps/{}", emu.cfg.app_slug),
            "created_at": now, "updated_at": now,
            "permissions": {"issues": "write", "pull_requests": "write", "checks": "write", "contents": "read", "metadata": "read"},
            "events": ["issues", "issue_comment", "pull_request"],
        }),
        Some(w),
    )
}

/// The installation, provisioned on first use when the emulator auto-provisions.
fn find_installation(emu: &Emulator, id: i64) -> Option<Installation> {
    let mut st = emu.state.lock().expect("state lock");
    if let Some(i) = st.installations.get(&id) {
        return Some(i.clone());
    }
    emu.cfg.auto_provision.then(|| {
        st.install(id, &format!("account-{id}"), "Organization", None);
        let inst = st.installations.get_mut(&id).expect("just installed");
        inst.any_owner = true;
        inst.clone()
    })
}

async fn get_installation(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match find_installation(&emu, id) {
        Some(i) => with_rate(StatusCode::OK, installation_json(&emu, &i), Some(w)),
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenIn {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

async fn create_token(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<axum::Json<TokenIn>>,
) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(inst) = find_installation(&emu, id) else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    };
    if inst.suspended_at.is_some() {
        return gh_error(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
            Some(w),
        );
    }
    let names = body.and_then(|b| b.0.repositories);
    let full: Option<Vec<String>> = names.map(|ns| {
        ns.iter()
            .map(|n| {
                if n.contains('/') {
                    n.clone()
                } else if inst.any_owner {
                    format!("*/{n}")
                } else {
                    format!("{}/{n}", inst.account)
                }
            })
            .collect()
    });
    if let (Some(want), Some(have)) = (&full, &inst.repos)
        && !want
            .iter()
            .all(|w| have.iter().any(|r| r.full_name.eq_ignore_ascii_case(w)))
    {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
            Some(w),
        );
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires_at = Utc::now() + Duration::seconds(emu.cfg.token_ttl_secs);
    let mut st = emu.state.lock().expect("state lock");
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            installation: id,
            repos: full.clone(),
            expires_at,
        },
    );
    *st.tokens_minted.entry(id).or_default() += 1;
    let repos: Option<Vec<Value>> = full.map(|fs| {
        fs.iter()
            .map(|f| repo_json(&emu.cfg.base_url, &st.repo(f)))
            .collect()
    });
    drop(st);
    let mut body = json!({
        "token": token,
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "permissions": {"issues": "write", "pull_requests": "write", "checks": "write", "contents": "read", "metadata": "read"},
        "repository_selection": if repos.is_some() || inst.repos.is_some() { "selected" } else { "all" },
    });
    if let Some(r) = repos {
        body["repositories"] = Value::Array(r);
    }
    with_rate(StatusCode::CREATED, body, Some(w))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_repositories(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let (t, w) = match token_auth(&emu, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut st = emu.state.lock().expect("state lock");
    let inst = st.installations.get(&t.installation).cloned();
    let repos: Vec<Repo> = match (&t.repos, inst.and_then(|i| i.repos)) {
        (Some(names), _) => names.iter().map(|n| st.repo(n)).collect(),
        (None, Some(rs)) => rs,
        (None, None) => Vec::new(),
    };
    drop(st);
    let per = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let items: Vec<Value> = repos
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|r| repo_json(&emu.cfg.base_url, r))
        .collect();
    with_rate(
        StatusCode::OK,
        json!({"total_count": repos.len(), "repository_selection": if t.repos.is_some() { "selected" } else { "all" }, "repositories": items}),
        Some(w),
    )
}

fn comment_json(emu: &Emulator, repo: &str, number: i64, c: &CommentRec) -> Value {
    let base = &emu.cfg.base_url;
    json!({
        "id": c.id, "node_id": format!("IC_{}", c.id),
        "url": format!("{base}/repos/{repo}/issues/comments/{}", c.id),
        "html_url": format!("{base}/{repo}/issues/{number}#issuecomment-{}", c.id),
        "issue_url": format!("{base}/repos/{repo}/issues/{number}"),
        "body": c.body,
        "user": user_json(base, &c.user, 9_000_001, "Bot"),
        "created_at": c.created_at.to_rfc3339(), "updated_at": c.created_at.to_rfc3339(),
        "author_association": "NONE",
        "performed_via_github_app": null,
    })
}

async fn list_comments(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let (t, w) = match token_auth(&emu, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let full = format!("{owner}/{repo}");
    if !may_touch(&emu, &t, &full) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    }
    let all = emu
        .state
        .lock()
        .expect("state lock")
        .comments
        .get(&(full.to_lowercase(), number))
        .cloned()
        .unwrap_or_default();
    let per = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|c| comment_json(&emu, &full, number, c))
        .collect();
    with_rate(StatusCode::OK, Value::Array(items), Some(w))
}

#[derive(Debug, Deserialize)]
struct CommentIn {
    body: String,
}

async fn create_comment(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((owner, repo, number)): Path<(String, String, i64)>,
    axum::Json(input): axum::Json<CommentIn>,
) -> Response {
    let (t, w) = match token_auth(&emu, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let full = format!("{owner}/{repo}");
    if !may_touch(&emu, &t, &full) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    }
    let mut st = emu.state.lock().expect("state lock");
    let c = CommentRec {
        id: st.next_id(),
        body: input.body,
        user: format!("{}[bot]", emu.cfg.app_slug),
        created_at: Utc::now(),
    };
    st.comments
        .entry((full.to_lowercase(), number))
        .or_default()
        .push(c.clone());
    drop(st);
    let body = comment_json(&emu, &full, number, &c);
    let location = body["url"].as_str().and_then(|u| u.parse().ok());
    let mut resp = with_rate(StatusCode::CREATED, body, Some(w));
    if let Some(l) = location {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    resp
}

fn check_run_json(emu: &Emulator, c: &CheckRun) -> Value {
    let base = &emu.cfg.base_url;
    json!({
        "id": c.id, "node_id": format!("CR_{}", c.id), "head_sha": c.head_sha, "name": c.name,
        "url": format!("{base}/repos/{}/check-runs/{}", c.repo, c.id),
        "html_url": format!("{base}/{}/runs/{}", c.repo, c.id), "details_url": null,
        "status": c.status, "conclusion": c.conclusion, "started_at": c.started_at.to_rfc3339(),
        "completed_at": c.completed_at.map(|t| t.to_rfc3339()), "external_id": c.external_id,
        "check_suite": {"id": c.id + 1}, "app": null, "pull_requests": [],
        "output": {"title": null, "summary": null, "text": null, "annotations_count": 0,
                   "annotations_url": format!("{base}/repos/{}/check-runs/{}/annotations", c.repo, c.id)},
    })
}

#[derive(Debug, Deserialize)]
struct CheckRunIn {
    name: Option<String>,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    external_id: Option<String>,
}

async fn create_check_run(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    axum::Json(input): axum::Json<CheckRunIn>,
) -> Response {
    let (t, w) = match token_auth(&emu, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let full = format!("{owner}/{repo}");
    if !may_touch(&emu, &t, &full) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    }
    let (Some(name), Some(head_sha)) = (input.name, input.head_sha) else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: name and head_sha are required",
            Some(w),
        );
    };
    let mut st = emu.state.lock().expect("state lock");
    let completed = input.conclusion.is_some();
    let c = CheckRun {
        id: st.next_id(),
        repo: full,
        name,
        head_sha,
        status: input.status.unwrap_or_else(|| {
            if completed {
                "completed".into()
            } else {
                "queued".into()
            }
        }),
        conclusion: input.conclusion,
        external_id: input.external_id,
        started_at: Utc::now(),
        completed_at: completed.then(Utc::now),
    };
    st.check_runs.push(c.clone());
    drop(st);
    with_rate(StatusCode::CREATED, check_run_json(&emu, &c), Some(w))
}

async fn update_check_run(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    axum::Json(input): axum::Json<CheckRunIn>,
) -> Response {
    let (t, w) = match token_auth(&emu, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let full = format!("{owner}/{repo}");
    if !may_touch(&emu, &t, &full) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    }
    let mut st = emu.state.lock().expect("state lock");
    let Some(c) = st
        .check_runs
        .iter_mut()
        .find(|c| c.id == id && c.repo == full)
    else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    };
    if let Some(s) = input.status {
        c.status = s;
    }
    if let Some(conclusion) = input.conclusion {
        c.conclusion = Some(conclusion);
        c.status = "completed".into();
        c.completed_at = Some(Utc::now());
    }
    let c = c.clone();
    drop(st);
    with_rate(StatusCode::OK, check_run_json(&emu, &c), Some(w))
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    per_page: Option<usize>,
    cursor: Option<String>,
}

pub fn delivery_item(d: &super::state::DeliveryRec) -> Value {
    json!({
        "id": d.id, "guid": d.guid, "delivered_at": d.delivered_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "redelivery": d.redelivery, "duration": d.duration, "status": d.status, "status_code": d.status_code,
        "event": d.event, "action": d.action, "installation_id": d.installation_id, "repository_id": d.repository_id,
    })
}

async fn list_deliveries(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Query(q): Query<DeliveriesQuery>,
) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let per = q.per_page.unwrap_or(30).clamp(1, 100);
    // The cursor is the id of the last delivery of the previous page (newest first).
    let before: Option<i64> = q
        .cursor
        .as_deref()
        .and_then(|c| c.strip_prefix("v1_"))
        .and_then(|c| c.parse().ok());
    let st = emu.state.lock().expect("state lock");
    let mut items: Vec<&super::state::DeliveryRec> = st
        .deliveries
        .iter()
        .rev()
        .filter(|d| before.is_none_or(|b| d.id < b))
        .take(per + 1)
        .collect();
    let more = items.len() > per;
    items.truncate(per);
    let body = Value::Array(items.iter().map(|d| delivery_item(d)).collect());
    let next = if more {
        items.last().map(|d| d.id)
    } else {
        None
    };
    drop(st);
    let mut resp = with_rate(StatusCode::OK, body, Some(w));
    if let Some(id) = next {
        let link = format!(
            "<{}/app/hook/deliveries?per_page={per}&cursor=v1_{id}>; rel=\"next\"",
            emu.cfg.base_url
        );
        if let Ok(v) = link.parse() {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn get_delivery(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let d = emu
        .state
        .lock()
        .expect("state lock")
        .deliveries
        .iter()
        .find(|d| d.id == id)
        .cloned();
    match d {
        None => gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w)),
        Some(d) => {
            let mut body = delivery_item(&d);
            body["request"] = json!({"headers": {"X-GitHub-Event": d.event, "X-GitHub-Delivery": d.guid}, "payload": d.payload});
            body["response"] = json!({"headers": {}, "payload": d.response_body});
            with_rate(StatusCode::OK, body, Some(w))
        }
    }
}

async fn redeliver(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let w = match app_auth(&emu, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let d = emu
        .state
        .lock()
        .expect("state lock")
        .deliveries
        .iter()
        .find(|d| d.id == id)
        .cloned();
    let Some(d) = d else {
        return gh_error(StatusCode::NOT_FOUND, "Not Found", Some(w));
    };
    // GitHub answers at once and delivers in the background.
    let (status, body) = (StatusCode::ACCEPTED, json!({}));
    let resp = with_rate(status, body, Some(w));
    tokio::spawn(async move {
        super::control::deliver(&emu, &d.event, d.guid.clone(), d.payload.clone(), true).await;
    });
    resp
}
