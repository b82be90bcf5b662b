//! A stateful GitHub emulator: the parts of GitHub's REST API and webhooks that Switchyard
//! uses, for tests and for the local stack (no network).
//!
//! * App JWTs (RS256, checked against the App's public key) for `/app/…`;
//! * installations, their repositories, and installation tokens (repository-scoped when
//!   asked; counted per installation);
//! * issue comments (create, list) and check runs (create, update), with installation tokens
//!   limited to their repositories;
//! * the App's webhook deliveries: the emulator sends events to the App's webhook URL, signed
//!   with its secret, records every attempt with its status, lists them
//!   (`GET /app/hook/deliveries`, cursor pagination) and redelivers on request;
//! * rate-limit headers on every answer, per App and per installation;
//! * repositories over git's dumb HTTP protocol, created on first use, readable with an
//!   installation token that reaches them.
//!
//! Under `/_emulator/` it offers what GitHub's users would do by hand: create installations,
//! send events, uninstall, suspend, read counters. With `auto_provision`, an installation id
//! it has never seen exists on first use with access to every repository (the local stack
//! uses that, so any installation id works there).
//!
//! Its REST routes and answers are those of GitHub's REST description (npm `@octokit/openapi`):
//! `tests/it/conformance.rs` checks every route, status, body and rate-limit header against it.

mod api;
mod control;
mod git;
pub mod state;

use std::sync::{Arc, Mutex};

use axum::Router;
pub use state::{EmulatorConfig, State};

/// The emulator's shared state.
#[derive(Clone)]
pub struct Emulator {
    pub cfg: Arc<EmulatorConfig>,
    pub state: Arc<Mutex<State>>,
    pub http: reqwest::Client,
    /// Where the repositories live.
    pub git_root: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

impl Emulator {
    pub fn new(cfg: EmulatorConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(cfg.webhook_url.clone()))),
            cfg: Arc::new(cfg),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            git_root: Arc::new(tempfile::tempdir().expect("a directory for repositories")),
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(api::router())
            .merge(control::router())
            .merge(git::router())
            .with_state(self.clone())
    }

    /// Every route of GitHub's REST API the emulator serves (method, path template as GitHub's
    /// REST description spells it); not its `/_emulator/` controls nor git hosting.
    pub fn rest_routes() -> Vec<(axum::http::Method, &'static str)> {
        api::routes()
    }

    /// Runs the emulator on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Runs the emulator on `listener` until `shutdown` fires.
    pub async fn serve_until(
        self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}
