//! What GitHub's users would do by hand, under `/_emulator/`: install and uninstall the App,
//! change an installation's repositories, suspend it, send events; and the browser side of
//! installing (`/apps/{slug}/installations/new`, which redirects to the App's setup URL).

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Emulator;
use super::api::{delivery_item, user_json};
use super::state::{DeliveryRec, Installation};

pub fn router() -> Router<Emulator> {
    Router::new()
        .route("/_emulator/config", put(set_config))
        .route("/_emulator/installations", post(create_installation))
        .route("/_emulator/installations/{id}/uninstall", post(uninstall))
        .route("/_emulator/installations/{id}/suspend", post(suspend))
        .route("/_emulator/installations/{id}/unsuspend", post(unsuspend))
        .route(
            "/_emulator/installations/{id}/repositories",
            post(change_repositories),
        )
        .route("/_emulator/events", post(send_event))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/comments/{owner}/{repo}/{number}", get(comments))
        .route("/apps/{slug}/installations/new", get(install_in_browser))
}

/// Sends `payload` as `event` to the App's webhook URL and records the attempt.
pub async fn deliver(
    emu: &Emulator,
    event: &str,
    guid: String,
    payload: Value,
    redelivery: bool,
) -> DeliveryRec {
    let url = emu.state.lock().expect("state lock").webhook_url.clone();
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(emu.cfg.webhook_secret.as_bytes())
        .expect("HMAC takes any key");
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let started = Instant::now();
    let (status_code, status, response_body) = match url {
        None => (0, "No webhook URL is configured".to_owned(), String::new()),
        Some(url) => {
            let sent = emu
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("user-agent", "GitHub-Hookshot/emulator")
                .header("x-github-event", event)
                .header("x-github-delivery", &guid)
                .header("x-github-hook-id", "1")
                .header("x-github-hook-installation-target-type", "integration")
                .header(
                    "x-github-hook-installation-target-id",
                    emu.cfg.app_id.to_string(),
                )
                .header("x-hub-signature-256", sig)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let code = i64::from(r.status().as_u16());
                    let text = r.text().await.unwrap_or_default();
                    let status = if (200..300).contains(&code) {
                        "OK".to_owned()
                    } else {
                        format!("Invalid HTTP Response: {code}")
                    };
                    (code, status, text)
                }
                Err(_) => (0, "failed to connect".to_owned(), String::new()),
            }
        }
    };
    let mut st = emu.state.lock().expect("state lock");
    let rec = DeliveryRec {
        id: st.next_id(),
        guid,
        delivered_at: Utc::now(),
        redelivery,
        duration: started.elapsed().as_secs_f64(),
        status,
        status_code,
        event: event.to_owned(),
        action: payload
            .get("action")
            .and_then(Value::as_str)
            .map(str::to_owned),
        installation_id: payload.pointer("/installation/id").and_then(Value::as_i64),
        repository_id: payload.pointer("/repository/id").and_then(Value::as_i64),
        payload,
        response_body,
    };
    st.deliveries.push(rec.clone());
    rec
}

fn installation_payload(emu: &Emulator, i: &Installation, action: &str) -> Value {
    let base = &emu.cfg.base_url;
    let repos: Vec<Value> = i
        .repos
        .as_ref()
        .map(|rs| rs.iter().map(|r| json!({"id": r.id, "node_id": format!("R_{}", r.id), "name": r.name, "full_name": r.full_name, "private": false})).collect())
        .unwrap_or_default();
    json!({
        "action": action,
        "installation": {
            "id": i.id,
            "account": user_json(base, &i.account, i.account_id, &i.account_type),
            "repository_selection": if i.repos.is_some() { "selected" } else { "all" },
            "app_id": emu.cfg.app_id, "app_slug": emu.cfg.app_slug,
            "target_id": i.account_id, "target_type": i.account_type,
            "suspended_at": i.suspended_at.map(|t| t.to_rfc3339()),
        },
        "repositories": repos,
        "sender": user_json(base, "octocat", 583_231, "User"),
    })
}

/// The App's settings on GitHub: its webhook URL and its setup URL.
#[derive(Debug, Deserialize)]
pub struct ConfigIn {
    pub webhook_url: Option<String>,
    pub setup_url: Option<String>,
}

async fn set_config(State(emu): State<Emulator>, Json(input): Json<ConfigIn>) -> StatusCode {
    let mut st = emu.state.lock().expect("state lock");
    if input.webhook_url.is_some() {
        st.webhook_url = input.webhook_url;
    }
    if input.setup_url.is_some() {
        st.setup_url = input.setup_url;
    }
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct InstallIn {
    id: Option<i64>,
    account: String,
    #[serde(default)]
    account_type: Option<String>,
    /// Repository names or full names; all of the account's when absent.
    #[serde(default)]
    repositories: Option<Vec<String>>,
    /// Send the `installation.created` webhook. Default true.
    #[serde(default)]
    notify: Option<bool>,
}

async fn create_installation(
    State(emu): State<Emulator>,
    Json(input): Json<InstallIn>,
) -> Response {
    let inst = {
        let mut st = emu.state.lock().expect("state lock");
        let id = input.id.unwrap_or_else(|| st.next_id());
        let repos = input.repositories.map(|ns| {
            ns.into_iter()
                .map(|n| {
                    if n.contains('/') {
                        n
                    } else {
                        format!("{}/{n}", input.account)
                    }
                })
                .collect()
        });
        st.install(
            id,
            &input.account,
            input.account_type.as_deref().unwrap_or("Organization"),
            repos,
        )
    };
    let delivery = if input.notify.unwrap_or(true) {
        let payload = installation_payload(&emu, &inst, "created");
        Some(delivery_item(
            &deliver(
                &emu,
                "installation",
                uuid::Uuid::new_v4().to_string(),
                payload,
                false,
            )
            .await,
        ))
    } else {
        None
    };
    (
        StatusCode::CREATED,
        Json(json!({"id": inst.id, "delivery": delivery})),
    )
        .into_response()
}

async fn lifecycle(
    emu: &Emulator,
    id: i64,
    action: &str,
    change: impl FnOnce(&mut super::state::State) -> Option<Installation>,
) -> Response {
    let inst = change(&mut emu.state.lock().expect("state lock"));
    let Some(inst) = inst else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let payload = installation_payload(emu, &inst, action);
    let d = deliver(
        emu,
        "installation",
        uuid::Uuid::new_v4().to_string(),
        payload,
        false,
    )
    .await;
    let _ = id;
    Json(delivery_item(&d)).into_response()
}

async fn uninstall(State(emu): State<Emulator>, Path(id): Path<i64>) -> Response {
    lifecycle(&emu, id, "deleted", |st| {
        st.tokens.retain(|_, t| t.installation != id);
        st.installations.remove(&id)
    })
    .await
}

async fn suspend(State(emu): State<Emulator>, Path(id): Path<i64>) -> Response {
    lifecycle(&emu, id, "suspend", |st| {
        let i = st.installations.get_mut(&id)?;
        i.suspended_at = Some(Utc::now());
        Some(i.clone())
    })
    .await
}

async fn unsuspend(State(emu): State<Emulator>, Path(id): Path<i64>) -> Response {
    lifecycle(&emu, id, "unsuspend", |st| {
        let i = st.installations.get_mut(&id)?;
        i.suspended_at = None;
        Some(i.clone())
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ReposChange {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn change_repositories(
    State(emu): State<Emulator>,
    Path(id): Path<i64>,
    Json(input): Json<ReposChange>,
) -> Response {
    let changed = {
        let mut st = emu.state.lock().expect("state lock");
        let Some(mut inst) = st.installations.get(&id).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let full = |n: &String| {
            if n.contains('/') {
                n.clone()
            } else {
                format!("{}/{n}", inst.account)
            }
        };
        let added: Vec<_> = input.add.iter().map(|n| st.repo(&full(n))).collect();
        let removed: Vec<_> = input.remove.iter().map(|n| st.repo(&full(n))).collect();
        let mut repos = inst.repos.clone().unwrap_or_default();
        repos.retain(|r| !removed.iter().any(|x| x.id == r.id));
        repos.extend(
            added
                .iter()
                .filter(|a| !repos.iter().any(|r| r.id == a.id))
                .cloned()
                .collect::<Vec<_>>(),
        );
        inst.repos = Some(repos);
        st.installations.insert(id, inst.clone());
        (inst, added, removed)
    };
    let (inst, added, removed) = changed;
    let mut out = Vec::new();
    for (action, list) in [("added", &added), ("removed", &removed)] {
        if list.is_empty() {
            continue;
        }
        let mut payload = installation_payload(&emu, &inst, action);
        let short = |rs: &Vec<super::state::Repo>| -> Vec<Value> {
            rs.iter().map(|r| json!({"id": r.id, "node_id": format!("R_{}", r.id), "name": r.name, "full_name": r.full_name, "private": false})).collect()
        };
        payload["repository_selection"] = json!("selected");
        payload["repositories_added"] = json!(if action == "added" {
            short(list)
        } else {
            vec![]
        });
        payload["repositories_removed"] = json!(if action == "removed" {
            short(list)
        } else {
            vec![]
        });
        if let Some(o) = payload.as_object_mut() {
            o.remove("repositories");
        }
        let d = deliver(
            &emu,
            "installation_repositories",
            uuid::Uuid::new_v4().to_string(),
            payload,
            false,
        )
        .await;
        out.push(delivery_item(&d));
    }
    Json(Value::Array(out)).into_response()
}

#[derive(Debug, Deserialize)]
struct EventIn {
    event: String,
    payload: Value,
    #[serde(default)]
    guid: Option<String>,
}

/// Sends an event to the App as GitHub would; answers the recorded delivery.
async fn send_event(State(emu): State<Emulator>, Json(input): Json<EventIn>) -> Response {
    let guid = input
        .guid
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let d = deliver(&emu, &input.event, guid, input.payload, false).await;
    let mut body = delivery_item(&d);
    body["response"] = Value::String(d.response_body);
    Json(body).into_response()
}

async fn stats(State(emu): State<Emulator>) -> Json<Value> {
    let st = emu.state.lock().expect("state lock");
    let minted: serde_json::Map<String, Value> = st
        .tokens_minted
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Json(json!({
        "tokens_minted": minted,
        "comments": st.comments.values().map(Vec::len).sum::<usize>(),
        "deliveries": st.deliveries.len(),
        "installations": st.installations.len(),
    }))
}

async fn comments(
    State(emu): State<Emulator>,
    Path((owner, repo, number)): Path<(String, String, i64)>,
) -> Json<Value> {
    let st = emu.state.lock().expect("state lock");
    let cs = st
        .comments
        .get(&(format!("{owner}/{repo}").to_lowercase(), number))
        .cloned()
        .unwrap_or_default();
    Json(serde_json::to_value(cs).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct InstallQuery {
    state: Option<String>,
    /// The account to install on (what the user picks on GitHub's page).
    account: Option<String>,
}

/// The browser flow: installs the App on an account and sends the browser to the App's setup
/// URL with `installation_id`, `setup_action=install` and the `state` it was given.
async fn install_in_browser(
    State(emu): State<Emulator>,
    Path(slug): Path<String>,
    Query(q): Query<InstallQuery>,
) -> Response {
    if slug != emu.cfg.app_slug {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(setup) = emu.state.lock().expect("state lock").setup_url.clone() else {
        return (StatusCode::BAD_REQUEST, "the App has no setup URL").into_response();
    };
    let inst = {
        let mut st = emu.state.lock().expect("state lock");
        let id = st.next_id() + 70_000_000;
        let account = q.account.unwrap_or_else(|| format!("account-{id}"));
        st.install(
            id,
            &account,
            "Organization",
            Some(vec![
                format!("{account}/hello-world"),
                format!("{account}/widgets"),
            ]),
        )
    };
    let payload = installation_payload(&emu, &inst, "created");
    deliver(
        &emu,
        "installation",
        uuid::Uuid::new_v4().to_string(),
        payload,
        false,
    )
    .await;
    let sep = if setup.contains('?') { '&' } else { '?' };
    let state = q
        .state
        .map(|s| format!("&state={}", urlencode(&s)))
        .unwrap_or_default();
    Redirect::to(&format!(
        "{setup}{sep}installation_id={}&setup_action=install{state}",
        inst.id
    ))
    .into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
