//! Executors: what actually runs a job. Chosen per job kind by configuration.

pub mod command;
pub mod llm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use protocol::JobSpec;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::ExecutorConfig;

/// A finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Recorded as the job's result.
    pub result: Value,
    /// Posted on the job's issue or pull request.
    pub comment: String,
    /// LLM tokens used, where the endpoint reports them.
    pub llm_tokens: Option<i64>,
}

/// A run that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// Worth trying again after a backoff (non-zero exit, timeout, an unreachable service).
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way every time (bad configuration, an impossible job).
    #[error("{0}")]
    Permanent(String),
    /// Stopped on request (cancelled job, or handed back on shutdown).
    #[error("stopped before it finished")]
    Stopped,
}

#[derive(Debug)]
pub enum Executor {
    Command(command::CommandExecutor),
    Llm(llm::LlmExecutor),
}

impl Executor {
    pub fn from_config(cfg: &ExecutorConfig, workspace_root: PathBuf) -> Self {
        match cfg {
            ExecutorConfig::Command { command, timeout } => Executor::Command(
                command::CommandExecutor::new(command.clone(), *timeout, workspace_root),
            ),
            ExecutorConfig::Llm {
                base_url,
                model,
                api_key,
                timeout,
                max_tokens,
                system_prompt,
            } => Executor::Llm(llm::LlmExecutor::new(
                base_url.clone(),
                model.clone(),
                api_key.clone(),
                *timeout,
                *max_tokens,
                system_prompt.clone(),
            )),
        }
    }

    /// Runs the job; `github` gives `command` jobs their token and repository.
    pub async fn run(
        &self,
        spec: &JobSpec,
        github: Option<&crate::effects::Effects>,
        stop: &CancellationToken,
    ) -> Result<Output, ExecError> {
        match self {
            Executor::Command(c) => c.run(spec, github, stop).await,
            Executor::Llm(l) => tokio::select! {
                out = l.run(spec) => out,
                () = stop.cancelled() => Err(ExecError::Stopped),
            },
        }
    }
}

/// Executors by job kind, with the `default` for every other kind.
#[derive(Debug)]
pub struct Executors {
    by_kind: BTreeMap<String, Executor>,
}

impl Executors {
    pub fn from_config(cfg: &BTreeMap<String, ExecutorConfig>, workspace_root: &Path) -> Self {
        Self {
            by_kind: cfg
                .iter()
                .map(|(k, c)| {
                    (
                        k.clone(),
                        Executor::from_config(c, workspace_root.to_path_buf()),
                    )
                })
                .collect(),
        }
    }

    pub fn for_kind(&self, kind: &str) -> Option<&Executor> {
        self.by_kind
            .get(kind)
            .or_else(|| self.by_kind.get("default"))
    }
}
