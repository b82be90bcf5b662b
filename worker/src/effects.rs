//! What a job does on GitHub, through the App.
//!
//! * A job gets an installation token scoped to its repository. Commands see it as
//!   `GITHUB_TOKEN`, and in the file named by `SWITCHYARD_GITHUB_TOKEN_FILE`, which is
//!   rewritten with a fresh token before the current one expires — long jobs keep working (the
//!   clone's git is set up to read it).
//! * The repository is cloned into the job's workspace before a `command` runs.
//! * Each finished job's outcome is posted on its issue or pull request exactly once: the
//!   comment carries a hidden marker with the job's id, and the worker looks for the marker
//!   before posting, so a job delivered again after a crash never comments twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use protocol::JobSpec;
use protocol::service::github::{Github, GithubError, Token};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::config::GithubConfig;
use crate::executor::ExecError;

/// The hidden marker a job's comment carries.
pub fn marker(spec: &JobSpec) -> String {
    format!("<!-- switchyard:job={} -->", spec.job_id)
}

/// GitHub's limit on a comment body, less room for the marker.
const COMMENT_LIMIT: usize = 60_000;

fn github_error(e: &GithubError) -> ExecError {
    if e.is_transient() {
        ExecError::Transient(e.to_string())
    } else {
        ExecError::Permanent(e.to_string())
    }
}

/// GitHub effects of jobs.
#[derive(Debug)]
pub struct Effects {
    pub gh: Arc<Github>,
    pub cfg: GithubConfig,
}

/// Where a job's repository-scoped token is kept fresh while the job runs.
#[derive(Debug)]
pub struct TokenFile {
    pub path: PathBuf,
    pub first: Token,
    stop: CancellationToken,
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Effects {
    fn repo_of(spec: &JobSpec) -> Option<(i64, &str)> {
        Some((spec.installation_id?.0, spec.repo.as_deref()?))
    }

    /// Writes the job's token to `dir/.github-token` and keeps it fresh until the returned
    /// handle drops. `None` when the job has no installation or repository.
    pub async fn token_file(
        &self,
        spec: &JobSpec,
        dir: &Path,
    ) -> Result<Option<TokenFile>, ExecError> {
        let Some((installation, repo)) = Self::repo_of(spec) else {
            return Ok(None);
        };
        let first = self
            .gh
            .token(installation, Some(repo))
            .await
            .map_err(|e| github_error(&e))?;
        let path = dir.join(".github-token");
        write_token(&path, &first.token).await?;
        let stop = CancellationToken::new();
        let (gh, repo, p, margin, s) = (
            self.gh.clone(),
            repo.to_owned(),
            path.clone(),
            self.cfg.app.token_refresh_margin,
            stop.clone(),
        );
        let mut current = first.clone();
        tokio::spawn(async move {
            loop {
                // Wake when the token enters its refresh margin: the cache then mints anew.
                let due = (current.expires_at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .saturating_sub(margin);
                tokio::select! {
                    () = s.cancelled() => break,
                    () = tokio::time::sleep(due.max(Duration::from_secs(1))) => {}
                }
                match gh.token(installation, Some(&repo)).await {
                    Ok(t) if t.token != current.token => {
                        if write_token(&p, &t.token).await.is_ok() {
                            tracing::info!(expires_at = %t.expires_at, "job token refreshed");
                            current = t;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot refresh the job's token; retrying");
                    }
                }
            }
        });
        Ok(Some(TokenFile { path, first, stop }))
    }

    /// Clones the job's repository into `dest`, authenticating with the token file.
    pub async fn clone_repo(
        &self,
        spec: &JobSpec,
        token: &TokenFile,
        dest: &Path,
    ) -> Result<(), ExecError> {
        let Some((_, repo)) = Self::repo_of(spec) else {
            return Ok(());
        };
        let url = format!("{}/{repo}.git", self.cfg.web_url.trim_end_matches('/'));
        // A credential helper that reads the (refreshed) token file, also left in the clone's
        // config for the command's own fetches and pushes.
        let helper = format!(
            "!f() {{ echo username=x-access-token; echo \"password=$(cat '{}')\"; }}; f",
            token.path.display()
        );
        let mut cmd = Command::new("git");
        cmd.arg("-c")
            .arg(format!("credential.helper={helper}"))
            .arg("clone")
            .arg("--quiet");
        if self.cfg.clone_depth > 0 {
            cmd.arg("--depth").arg(self.cfg.clone_depth.to_string());
        }
        cmd.arg(&url)
            .arg(dest)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", dest.parent().unwrap_or(dest))
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.cfg.clone_timeout, cmd.output())
            .await
            .map_err(|_| ExecError::Transient(format!("cloning {repo} timed out")))?
            .map_err(|e| ExecError::Permanent(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = format!(
                "cannot clone {repo}: {}",
                err.lines().last().unwrap_or_default()
            );
            // Not found / no access will not change by retrying; the rest may.
            return Err(
                if err.contains("not found") || err.contains("403") || err.contains("401") {
                    ExecError::Permanent(msg)
                } else {
                    ExecError::Transient(msg)
                },
            );
        }
        let set_helper = Command::new("git")
            .arg("-C")
            .arg(dest)
            .args(["config", "credential.helper", &helper])
            .output()
            .await;
        if let Err(e) = set_helper {
            tracing::warn!(error = %e, "cannot leave the credential helper in the clone");
        }
        Ok(())
    }

    /// Posts `body` on the job's issue or pull request unless the job already did.
    pub async fn report(&self, spec: &JobSpec, body: &str) -> Result<(), ExecError> {
        if !self.cfg.comments {
            return Ok(());
        }
        let (Some((installation, repo)), Some(target)) =
            (Self::repo_of(spec), spec.target.as_ref())
        else {
            return Ok(());
        };
        let mark = marker(spec);
        let existing = self
            .gh
            .issue_comments(installation, repo, target.number)
            .await
            .map_err(|e| github_error(&e))?;
        if existing
            .iter()
            .any(|c| c.body.as_deref().is_some_and(|b| b.contains(&mark)))
        {
            tracing::info!("the job's comment is already there; not posting again");
            return Ok(());
        }
        let mut text = body.to_owned();
        if text.len() > COMMENT_LIMIT {
            let mut end = COMMENT_LIMIT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("\n\n… (cut)");
        }
        self.gh
            .create_issue_comment(
                installation,
                repo,
                target.number,
                &format!("{text}\n\n{mark}"),
            )
            .await
            .map_err(|e| github_error(&e))?;
        Ok(())
    }
}

async fn write_token(path: &Path, token: &str) -> Result<(), ExecError> {
    // Write then rename: a reader never sees half a token.
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, token)
        .await
        .map_err(|e| ExecError::Transient(format!("cannot write the token: {e}")))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| ExecError::Transient(format!("cannot write the token: {e}")))
}
