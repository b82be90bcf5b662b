//! The `command` executor: runs the configured agent command in a fresh workspace.
//!
//! The command runs in its own process group, with a cleared environment except `PATH`,
//! `HOME` (the workspace) and the job's `SWITCHYARD_*` variables, and the job spec in
//! `$SWITCHYARD_JOB_FILE`. When the job has a repository and GitHub is configured, the
//! repository is cloned into `$SWITCHYARD_REPO_DIR` (the command's working directory) and a
//! token scoped to it is in `GITHUB_TOKEN` and, kept fresh, in `$SWITCHYARD_GITHUB_TOKEN_FILE`.
//! On timeout or stop, the whole group is killed, so no child it spawned outlives the job. Its
//! output (the last 64 KiB of each stream) becomes the result.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::JobSpec;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{ExecError, Output};

/// Bytes of each output stream kept.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct CommandExecutor {
    command: Vec<String>,
    timeout: Duration,
    workspace_root: PathBuf,
}

impl CommandExecutor {
    pub fn new(command: Vec<String>, timeout: Duration, workspace_root: PathBuf) -> Self {
        Self {
            command,
            timeout,
            workspace_root,
        }
    }

    pub async fn run(
        &self,
        spec: &JobSpec,
        github: Option<&crate::effects::Effects>,
        stop: &CancellationToken,
    ) -> Result<Output, ExecError> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| ExecError::Permanent("the executor has no command configured".into()))?;
        let workspace = tempfile::Builder::new()
            .prefix(&format!("{}-", spec.job_id))
            .tempdir_in(&self.workspace_root)
            .map_err(|e| ExecError::Transient(format!("cannot create the workspace: {e}")))?;
        let job_file = workspace.path().join("job.json");
        let spec_json =
            serde_json::to_vec_pretty(spec).map_err(|e| ExecError::Permanent(e.to_string()))?;
        tokio::fs::write(&job_file, spec_json)
            .await
            .map_err(|e| ExecError::Transient(format!("cannot write the job file: {e}")))?;

        // The repository and its token, when the job has them.
        let token = match github {
            Some(g) => g.token_file(spec, workspace.path()).await?,
            None => None,
        };
        let mut workdir = workspace.path().to_path_buf();
        if let (Some(g), Some(t)) = (github, &token)
            && g.cfg.clone
        {
            let dest = workspace.path().join("repo");
            g.clone_repo(spec, t, &dest).await?;
            workdir = dest;
        }

        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&workdir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("HOME", workspace.path())
            .env("SWITCHYARD_JOB_ID", &spec.job_id.0)
            .env("SWITCHYARD_JOB_KIND", spec.kind.as_str())
            .env("SWITCHYARD_ORG_ID", spec.org_id.to_string())
            .env("SWITCHYARD_EVENT", &spec.event)
            .env("SWITCHYARD_JOB_FILE", &job_file)
            .env("SWITCHYARD_WORKSPACE", workspace.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(repo) = &spec.repo {
            cmd.env("SWITCHYARD_REPO", repo);
        }
        // The token lives (and is kept fresh in its file) until this function returns.
        if let Some(t) = &token {
            cmd.env("GITHUB_TOKEN", &t.first.token)
                .env("SWITCHYARD_GITHUB_TOKEN_FILE", &t.path);
        }
        if workdir != workspace.path() {
            cmd.env("SWITCHYARD_REPO_DIR", &workdir);
        }
        if let Some(action) = &spec.action {
            cmd.env("SWITCHYARD_ACTION", action);
        }
        if let Some(trigger) = &spec.trigger {
            cmd.env("SWITCHYARD_TRIGGER", trigger);
        }
        if let Some(t) = &spec.target {
            cmd.env("SWITCHYARD_TARGET_NUMBER", t.number.to_string())
                .env("SWITCHYARD_TARGET_URL", &t.url);
        }

        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| ExecError::Permanent(format!("cannot start {program}: {e}")))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let stdout = tokio::spawn(tail(child.stdout.take()));
        let stderr = tokio::spawn(tail(child.stderr.take()));

        let ended = tokio::select! {
            status = child.wait() => Ok(status),
            () = tokio::time::sleep(self.timeout) => Err(ExecError::Transient(format!("timed out after {:?}", self.timeout))),
            () = stop.cancelled() => Err(ExecError::Stopped),
        };
        if ended.is_err()
            && let Some(pgid) = pgid
        {
            // Kill the whole group: the command and everything it started.
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        let stdout = stdout.await.unwrap_or_default();
        let stderr = stderr.await.unwrap_or_default();
        let status = ended?
            .map_err(|e| ExecError::Transient(format!("cannot wait for the command: {e}")))?;
        let elapsed = started.elapsed();
        if status.success() {
            let shown = tail_chars(&stdout, 4000);
            Ok(Output {
                comment: format!(
                    "Switchyard ran the `{}` job (in {:.1} s).\n\n```\n{}\n```",
                    spec.kind,
                    elapsed.as_secs_f64(),
                    shown.trim_end()
                ),
                result: serde_json::json!({
                    "exit_code": 0,
                    "stdout": stdout,
                    "stderr": stderr,
                    "duration_ms": elapsed.as_millis() as u64,
                }),
                llm_tokens: None,
            })
        } else {
            let code = status
                .code()
                .map_or_else(|| "a signal".to_owned(), |c| format!("exit code {c}"));
            let last = stderr.lines().last().unwrap_or_default();
            Err(ExecError::Transient(format!(
                "the command ended with {code}: {last}"
            )))
        }
    }
}

/// The last `n` characters of `s`.
fn tail_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    if count <= n {
        return s;
    }
    let skip = s.char_indices().nth(count - n).map_or(0, |(i, _)| i);
    &s[skip..]
}

/// Reads a stream to its end, keeping its last [`OUTPUT_LIMIT`] bytes as (lossy) UTF-8.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * OUTPUT_LIMIT {
                    kept.drain(..kept.len() - OUTPUT_LIMIT);
                }
            }
        }
    }
    if kept.len() > OUTPUT_LIMIT {
        kept.drain(..kept.len() - OUTPUT_LIMIT);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use protocol::{DeliveryId, JobId, JobKind, OrgId, Region, RuleId};

    fn spec() -> JobSpec {
        JobSpec {
            job_id: JobId::from("job_test"),
            org_id: OrgId(1),
            region: Region::new("us-east-1").unwrap(),
            kind: JobKind::new("agent").unwrap(),
            delivery_id: DeliveryId::from("d"),
            rule_id: RuleId::from("r"),
            installation_id: None,
            event: "issues".into(),
            action: Some("labeled".into()),
            repo: Some("octo/hello".into()),
            target: None,
            trigger: Some("bot".into()),
            sender: None,
            created_at: Utc::now(),
            requeue: 0,
            job_seconds_quota: None,
            max_concurrent: None,
        }
    }

    fn exec(cmd: &str, timeout: Duration) -> CommandExecutor {
        CommandExecutor::new(
            vec!["sh".into(), "-c".into(), cmd.into()],
            timeout,
            std::env::temp_dir(),
        )
    }

    #[tokio::test]
    async fn the_command_sees_the_job_and_its_output_becomes_the_result() {
        let e = exec(
            "echo \"$SWITCHYARD_JOB_ID $SWITCHYARD_REPO\"; test -f \"$SWITCHYARD_JOB_FILE\"",
            Duration::from_secs(10),
        );
        let out = e
            .run(&spec(), None, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.result["stdout"], "job_test octo/hello\n");
        assert_eq!(out.result["exit_code"], 0);
    }

    #[tokio::test]
    async fn the_environment_is_cleared() {
        // A variable of this test process must not reach the command.
        let e = exec("echo \"[$CARGO_PKG_NAME]\"", Duration::from_secs(10));
        let out = e
            .run(&spec(), None, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.result["stdout"], "[]\n");
    }

    #[tokio::test]
    async fn a_failing_command_is_a_transient_error_with_its_last_stderr_line() {
        let e = exec(
            "echo first >&2; echo boom >&2; exit 3",
            Duration::from_secs(10),
        );
        let err = e
            .run(&spec(), None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ExecError::Transient("the command ended with exit code 3: boom".into())
        );
    }

    /// Whether a process is gone (or a zombie, which no longer runs).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let pidfile = tempfile::NamedTempFile::new().unwrap();
        // The command starts a grandchild, records its pid, and waits.
        let e = exec(
            &format!(
                "sleep 60 & echo $! > {}; sleep 60",
                pidfile.path().display()
            ),
            Duration::from_millis(500),
        );
        let err = e
            .run(&spec(), None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExecError::Transient(ref m) if m.starts_with("timed out")),
            "{err:?}"
        );
        let pid: i32 = std::fs::read_to_string(pidfile.path())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(gone(pid), "the grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn stopping_ends_the_run_at_once() {
        let e = exec("sleep 30", Duration::from_secs(60));
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(
            e.run(&spec(), None, &stop).await.unwrap_err(),
            ExecError::Stopped
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_permanent() {
        let e = CommandExecutor::new(
            vec!["/nonexistent/agent".into()],
            Duration::from_secs(1),
            std::env::temp_dir(),
        );
        assert!(matches!(
            e.run(&spec(), None, &CancellationToken::new()).await,
            Err(ExecError::Permanent(_))
        ));
    }
}
