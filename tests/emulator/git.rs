//! Repositories over git's "dumb" HTTP protocol: `git clone <base>/<owner>/<repo>.git` with
//! an installation token as the password (`x-access-token:<token>`), as on GitHub. A
//! repository is created on first use with one commit holding a README.

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;

use super::Emulator;

pub fn router() -> Router<Emulator> {
    Router::new().route("/{owner}/{repo}/{*rest}", get(serve))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"GitHub\"")],
        "",
    )
        .into_response()
}

/// The token of a Basic `x-access-token:<token>` header.
fn basic_token(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, token) = text.split_once(':')?;
    Some(token.to_owned())
}

async fn serve(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    UrlPath((owner, repo, rest)): UrlPath<(String, String, String)>,
) -> Response {
    let Some(name) = repo.strip_suffix(".git").map(str::to_owned) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let full = format!("{owner}/{name}");
    let Some(token) = basic_token(&headers) else {
        return unauthorized();
    };
    let allowed = {
        let st = emu.state.lock().expect("state lock");
        match st.tokens.get(&token) {
            Some(t) if t.expires_at > chrono::Utc::now() => {
                let inst = st.installations.get(&t.installation);
                let in_inst = inst.is_some_and(|i| {
                    i.suspended_at.is_none()
                        && i.repos.as_ref().is_none_or(|rs| {
                            rs.iter().any(|r| r.full_name.eq_ignore_ascii_case(&full))
                        })
                });
                let in_token = t
                    .repos
                    .as_ref()
                    .is_none_or(|rs| rs.iter().any(|r| super::state::repo_matches(r, &full)));
                in_inst && in_token
            }
            _ => false,
        }
    };
    if !allowed {
        return unauthorized();
    }
    let rel = Path::new(&rest);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let dir = emu
        .git_root
        .path()
        .join(owner.to_lowercase())
        .join(format!("{}.git", name.to_lowercase()));
    let d = dir.clone();
    let title = name.clone();
    let made = tokio::task::spawn_blocking(move || ensure_repo(&d, &title)).await;
    if !matches!(made, Ok(Ok(()))) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot create the repository",
        )
            .into_response();
    }
    match tokio::fs::read(dir.join(rel)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn git(args: &[&str], dir: &Path) -> std::io::Result<()> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "emulator")
        .env("GIT_AUTHOR_EMAIL", "emulator@localhost")
        .env("GIT_COMMITTER_NAME", "emulator")
        .env("GIT_COMMITTER_EMAIL", "emulator@localhost")
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Creates the bare repository with one commit, once.
fn ensure_repo(dir: &PathBuf, name: &str) -> std::io::Result<()> {
    if dir.join("info/refs").exists() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    std::fs::create_dir_all(parent)?;
    let work = tempfile::tempdir_in(parent)?;
    git(&["init", "-q", "-b", "main", "."], work.path())?;
    std::fs::write(work.path().join("README.md"), format!("# {name}\n"))?;
    git(&["add", "README.md"], work.path())?;
    git(&["commit", "-q", "-m", "Initial commit"], work.path())?;
    let staging = tempfile::tempdir_in(parent)?;
    let bare = staging.path().join("repo.git");
    git(
        &[
            "clone",
            "-q",
            "--bare",
            &work.path().to_string_lossy(),
            &bare.to_string_lossy(),
        ],
        parent,
    )?;
    git(&["update-server-info"], &bare)?;
    // Concurrent first requests: one rename wins, the others find it done.
    match std::fs::rename(&bare, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.join("info/refs").exists() => Ok(()),
        Err(e) => Err(e),
    }
}
