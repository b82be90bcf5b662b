//! The scenarios, and their setup through the API.
//!
//! | scenario | sends | set up first |
//! |---|---|---|
//! | `webhooks` | signed GitHub webhooks, real payloads, a share of them making jobs | an org and its installation |
//! | `api-reads` | `GET` of the org, members, installations, rules, jobs with a JWT | an org, an access token |
//! | `onboarding` | `POST /v1/orgs` (use bursts) | — |
//! | `mix` | a weighted mix of the three | as its parts need |

pub mod api;
pub mod mix;
pub mod setup;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use protocol::Region;
use protocol::subjects::Names;

use crate::engine::{Scenario, StreamWatch};
use crate::metrics::MetricsWatch;
use crate::target::{Target, loopback};
use setup::{Api, OrgFixture};

/// Which scenario to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Webhooks,
    ApiReads,
    Onboarding,
    Mix,
}

impl Kind {
    fn from_name(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "webhooks" => Kind::Webhooks,
            "api-reads" => Kind::ApiReads,
            "onboarding" => Kind::Onboarding,
            other => bail!("unknown mix part {other:?} (webhooks, api-reads, onboarding)"),
        })
    }
}

/// Where to send, as whom, and what.
#[derive(Args, Clone, Debug)]
pub struct ScenarioArgs {
    /// Base URL of the target, on this machine (loopback only), e.g. http://127.0.0.1:18480.
    #[arg(long, env = "LOADTEST_TARGET")]
    pub target: String,
    /// The operator's token: creates the scenario's org, and the orgs of onboarding.
    #[arg(long, env = "OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// The GitHub App's webhook secret, to sign webhooks with.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// GitHub's webhook examples (npm @octokit/webhooks-examples; `make fixtures`).
    #[arg(
        long,
        default_value = "tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json"
    )]
    pub examples: PathBuf,
    /// Path webhooks are posted to (Probot: /api/github/webhooks).
    #[arg(long, default_value = "/webhooks/github")]
    pub webhook_path: String,
    /// Set nothing up through the API (a peer that is not Switchyard): webhooks carry
    /// --installation-id.
    #[arg(long)]
    pub no_setup: bool,
    /// Installation id of the webhooks when nothing is set up.
    #[arg(long, default_value_t = 1)]
    pub installation_id: i64,
    /// Share of webhooks that are an issue labeled `bot` (a job each).
    #[arg(long, default_value_t = 0.1)]
    pub job_share: f64,
    /// Home region of the scenario's org.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// The routes the api-reads scenario goes round (org, members, installations, rules,
    /// jobs); all of them unless given, e.g. `--routes org` for `GET /v1/orgs/{org}` alone.
    #[arg(long, value_delimiter = ',')]
    pub routes: Vec<String>,
    /// Weights of the mix scenario.
    #[arg(long, default_value = "webhooks=90,api-reads=9,onboarding=1")]
    pub mix: String,
    /// NATS server of the target's region: after each run, check that its deliveries stream
    /// stored exactly one record per accepted webhook (no delivery id twice) and its jobs
    /// stream one message per job id answered.
    #[arg(long)]
    pub verify_nats: Option<String>,
    /// NATS namespace of the target's streams (its `nats.namespace`).
    #[arg(long, default_value = "")]
    pub nats_namespace: String,
    /// Read the target's /metrics (a Switchyard control plane) before and after each run,
    /// and report its own mean handler and JetStream acknowledgement times.
    #[arg(long)]
    pub server_metrics: bool,
}

/// A scenario ready to run.
pub struct Built {
    pub scenario: Arc<dyn Scenario>,
    pub fixture: Option<OrgFixture>,
    pub watch: Option<StreamWatch>,
    pub metrics: Option<MetricsWatch>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("scenario", &self.scenario.name())
            .field("fixture", &self.fixture)
            .finish_non_exhaustive()
    }
}

fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

struct Setup {
    args: ScenarioArgs,
    api: Api,
    run_id: String,
    fixture: Option<OrgFixture>,
}

impl Setup {
    fn operator_token(&self) -> anyhow::Result<&str> {
        self.args
            .operator_token
            .as_deref()
            .context("this scenario needs --operator-token (or OPERATOR_TOKEN)")
    }

    async fn fixture(&mut self) -> anyhow::Result<OrgFixture> {
        if let Some(f) = &self.fixture {
            return Ok(f.clone());
        }
        let token = self.operator_token()?.to_owned();
        let f = self
            .api
            .org_fixture(&token, &self.run_id, &self.args.region)
            .await?;
        self.fixture = Some(f.clone());
        Ok(f)
    }

    async fn part(&mut self, kind: Kind) -> anyhow::Result<Arc<dyn Scenario>> {
        Ok(match kind {
            Kind::Webhooks => {
                let installation = if self.args.no_setup {
                    self.args.installation_id
                } else {
                    self.fixture().await?.installation_id
                };
                let secret = self
                    .args
                    .webhook_secret
                    .as_deref()
                    .context("webhooks need --webhook-secret (or WEBHOOK_SECRET)")?;
                Arc::new(webhooks::Webhooks::load(
                    &self.args.examples,
                    secret,
                    installation,
                    &self.args.webhook_path,
                    self.args.job_share,
                )?)
            }
            Kind::ApiReads => {
                if self.args.no_setup {
                    bail!("API reads need an org: drop --no-setup");
                }
                let f = self.fixture().await?;
                let token = self.api.access_token(&f.api_key).await?;
                Arc::new(api::ApiReads::with_routes(
                    f.org_id,
                    &token,
                    &self.args.routes,
                )?)
            }
            Kind::Onboarding => Arc::new(api::Onboarding::new(
                self.operator_token()?,
                &self.args.region,
                &self.run_id,
            )?),
            Kind::Mix => bail!("a mix cannot hold a mix"),
        })
    }
}

/// Sets up `kind` against the target (creating what it needs through the API).
pub async fn build(kind: Kind, args: &ScenarioArgs, target: &Target) -> anyhow::Result<Built> {
    let mut cx = Setup {
        args: args.clone(),
        api: Api::new(&target.base_url)?,
        run_id: run_id(),
        fixture: None,
    };
    let scenario: Arc<dyn Scenario> = match kind {
        Kind::Mix => {
            let weights = mix::parse_weights(&args.mix).map_err(anyhow::Error::msg)?;
            let mut parts = Vec::new();
            for (name, weight) in weights {
                parts.push((weight, cx.part(Kind::from_name(&name)?).await?));
            }
            Arc::new(mix::Mix::new(parts))
        }
        k => cx.part(k).await?,
    };
    let watch = match &args.verify_nats {
        Some(url) => Some(stream_watch(url, &args.nats_namespace, &args.region).await?),
        None => None,
    };
    let metrics = if args.server_metrics {
        Some(MetricsWatch::new(target)?)
    } else {
        None
    };
    Ok(Built {
        scenario,
        fixture: cx.fixture,
        watch,
        metrics,
    })
}

async fn stream_watch(url: &str, namespace: &str, region: &str) -> anyhow::Result<StreamWatch> {
    loopback(url, "nats")?;
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let names = Names::new(namespace)?;
    let region = Region::new(region)?;
    Ok(StreamWatch {
        js: async_nats::jetstream::new(client),
        deliveries: names.deliveries_stream(&region),
        jobs: names.jobs_stream(&region),
    })
}
