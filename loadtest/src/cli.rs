//! The commands behind `loadtest`'s subcommands: their options and what they print.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::engine::{self, EngineConfig, Probes};
use crate::procstat::Watched;
use crate::scenario::{self, Kind, ScenarioArgs};
use crate::schedule::{self, Schedule, Shape};
use crate::search::{self, SearchArgs};
use crate::target::Target;

/// When requests are due.
#[derive(Args, Clone, Debug)]
pub struct ScheduleArgs {
    /// Constant rate (requests per second); with --ramp-to, the rate the ramp starts from.
    #[arg(long)]
    pub rate: Option<f64>,
    /// A linear ramp from --rate to this rate over --duration.
    #[arg(long, requires = "rate")]
    pub ramp_to: Option<f64>,
    /// How long a constant rate, a ramp or bursts last.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Replay a `timestamp,value` CSV: each row one step of constant rate.
    #[arg(long, conflicts_with_all = ["rate", "burst_size"])]
    pub trace: Option<PathBuf>,
    /// How long each trace row lasts.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub trace_step: Duration,
    /// The rate the busiest trace row is scaled to.
    #[arg(long, default_value_t = 1000.0)]
    pub trace_peak: f64,
    /// First trace row replayed.
    #[arg(long, default_value_t = 0)]
    pub trace_start: usize,
    /// How many trace rows are replayed.
    #[arg(long, default_value_t = 60)]
    pub trace_rows: usize,
    /// Bursts: this many requests due at the same instant …
    #[arg(long, conflicts_with = "rate")]
    pub burst_size: Option<u64>,
    /// … every this long, for --duration.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub burst_every: Duration,
    /// Unmeasured traffic at the schedule's first rate before the run.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

impl ScheduleArgs {
    pub fn shape(&self) -> anyhow::Result<Shape> {
        if let Some(path) = &self.trace {
            let values = schedule::read_trace(path, self.trace_start, self.trace_rows)?;
            let label = format!(
                "trace {} rows {}..{}, peak {}/s",
                path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into()
                ),
                self.trace_start,
                self.trace_start + values.len(),
                self.trace_peak
            );
            return Ok(Shape::Steps {
                rates: schedule::scale_trace(&values, self.trace_peak)?,
                step: self.trace_step,
                label,
            });
        }
        if let Some(size) = self.burst_size {
            return Ok(Shape::Bursts {
                size,
                every: self.burst_every,
                duration: self.duration,
            });
        }
        match (self.rate, self.ramp_to) {
            (Some(from), Some(to)) => Ok(Shape::Ramp {
                from,
                to,
                duration: self.duration,
            }),
            (Some(rate), None) => Ok(Shape::Constant {
                rate,
                duration: self.duration,
            }),
            _ => bail!("give a schedule: --rate [--ramp-to], --trace, or --burst-size"),
        }
    }

    /// The rate of the warm-up: the schedule's first.
    fn warmup_shape(&self, shape: &Shape) -> Option<Shape> {
        if self.warmup.is_zero() {
            return None;
        }
        let rate = match shape {
            Shape::Constant { rate, .. } => *rate,
            Shape::Ramp { from, .. } => *from,
            Shape::Steps { rates, .. } => rates.first().copied().unwrap_or(1.0),
            Shape::Bursts { size, every, .. } => {
                #[allow(
                    clippy::cast_precision_loss,
                    reason = "burst sizes stay far below 2^52"
                )]
                let r = *size as f64 / every.as_secs_f64();
                r
            }
        };
        Some(Shape::Constant {
            rate: rate.max(1.0),
            duration: self.warmup,
        })
    }
}

/// How requests are sent.
#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// Keep-alive HTTP/1.1 connections, one request in flight on each.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// A request without an answer after this long is a timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// How long after the schedule's end unanswered requests are waited for.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// At most this many requests in one run (or one search step).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Report the CPU a process (and its direct children) used during each run: name=pid,
    /// or name=self for the generator. Repeatable.
    #[arg(long = "watch", value_name = "NAME=PID")]
    pub watch: Vec<Watched>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl EngineArgs {
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        if self.connections == 0 || self.connections > 4096 {
            bail!("--connections must be 1 to 4096");
        }
        Ok(EngineConfig {
            connections: self.connections,
            timeout: self.timeout,
            drain: self.drain,
            progress: !self.quiet,
            give_up: None,
        })
    }
}

/// Where results go.
#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// Print the report as JSON on stdout (instead of text).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl OutputArgs {
    /// What to print on stdout; writes `--out` on the way.
    pub fn render<T: Serialize>(
        &self,
        report: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<String> {
        let json = serde_json::to_string_pretty(report)?;
        if let Some(path) = &self.out {
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(if self.json {
            format!("{json}\n")
        } else {
            human()
        })
    }
}

#[derive(Args, Clone, Debug)]
pub struct RunCmd {
    /// What to send.
    #[arg(long, value_enum)]
    pub scenario: Kind,
    #[command(flatten)]
    pub target: ScenarioArgs,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Clone, Debug)]
pub struct SearchCmd {
    /// What to send.
    #[arg(long, value_enum)]
    pub scenario: Kind,
    #[command(flatten)]
    pub target: ScenarioArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn probes(built: &scenario::Built, engine: &EngineArgs) -> Probes {
    Probes {
        streams: built.watch.clone(),
        processes: engine.watch.clone(),
        metrics: built.metrics.clone(),
    }
}

/// `loadtest run`: one schedule, one report.
pub async fn run(cmd: &RunCmd) -> anyhow::Result<String> {
    let target = Target::parse(&cmd.target.target)?;
    let shape = cmd.schedule.shape()?;
    let schedule = Schedule::build(&shape, cmd.engine.max_requests)?;
    let cfg = cmd.engine.config()?;
    let built = scenario::build(cmd.scenario, &cmd.target, &target).await?;
    if let Some(warm) = cmd.schedule.warmup_shape(&shape) {
        let warm = Schedule::build(&warm, cmd.engine.max_requests)?;
        engine::drive(&target, built.scenario.clone(), &warm, &cfg, "warm-up").await;
    }
    let report = engine::measure(
        &target,
        built.scenario.clone(),
        &schedule,
        &cfg,
        &probes(&built, &cmd.engine),
        "run",
    )
    .await?;
    cmd.output.render(&report, || report.human())
}

/// `loadtest search`: the highest rate that keeps p99 under the bound.
pub async fn search(cmd: &SearchCmd) -> anyhow::Result<String> {
    let target = Target::parse(&cmd.target.target)?;
    let cfg = cmd.engine.config()?;
    let built = scenario::build(cmd.scenario, &cmd.target, &target).await?;
    let report = search::search(
        &target,
        built.scenario.clone(),
        &cfg,
        &cmd.search,
        &probes(&built, &cmd.engine),
        cmd.engine.max_requests,
    )
    .await?;
    cmd.output.render(&report, || report.human())
}
