//! `autoscaler backtest`: replays a `timestamp,value` trace through the queue simulation
//! ([`sim`]) under the reactive baseline and the predictive policy, and reports cost
//! (worker-minutes), waiting (p95, share of jobs over the SLO), scale events and, for the
//! predictive policy, the forecast's error against seasonal-naive.
//!
//! The two policies run side by side on their own threads; each has its own simulated pool
//! and history and sees the same arrivals.

pub mod sim;

use std::fmt::Write as _;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::error::Error;
use crate::forecast::{DAY, WEEK, smape};
use crate::plot::{self, Chart};
use crate::policy::{
    Bounds, Policy, Predictive, PredictiveConfig, Reactive, ReactiveConfig, Reason,
};
use crate::trace::Trace;
use sim::{Outcome, World};

/// Which policies to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyChoice {
    Reactive,
    Predictive,
    Both,
}

/// Options of `autoscaler backtest`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Trace to replay: `timestamp,value` rows, each the events of the interval ending at
    /// its timestamp.
    #[arg(long)]
    pub trace: PathBuf,
    /// Policies to run.
    #[arg(long, value_enum, default_value_t = PolicyChoice::Both)]
    pub policy: PolicyChoice,
    /// Print one JSON object with a key per policy instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also draw arrivals, forecast and pools into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Days the plot's detailed panel shows, counted back from the end of the trace.
    #[arg(long, default_value_t = 2.0)]
    pub plot_days: f64,
    /// Jobs per trace event.
    #[arg(long, default_value_t = 1.0)]
    pub rate_scale: f64,
    /// Simulation step, seconds.
    #[arg(long, default_value_t = 5)]
    pub tick_secs: i64,
    /// Seconds between policy decisions.
    #[arg(long, default_value_t = 15)]
    pub decision_secs: i64,
    /// Run time of a job, seconds.
    #[arg(long, default_value_t = 30)]
    pub job_secs: i64,
    /// Job slots per worker.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Seconds from starting a worker to its first job; it costs from the start.
    #[arg(long, default_value_t = 90)]
    pub startup_secs: i64,
    /// Longest acceptable wait for a job to start, seconds.
    #[arg(long, default_value_t = 60)]
    pub slo_secs: i64,
    /// Fewest workers.
    #[arg(long, default_value_t = 1)]
    pub min_workers: u32,
    /// Most workers.
    #[arg(long, default_value_t = 500)]
    pub max_workers: u32,
    /// Predictive: quantile of recent residuals for the forecast's upper bound (0.9).
    #[arg(long)]
    pub upper_quantile: Option<f64>,
    /// Predictive: seconds a scale-down waits for the targets to stay low (15).
    #[arg(long)]
    pub scale_down_window_secs: Option<i64>,
    /// Predictive: most of the pool one scale-down removes, as a share (0.5).
    #[arg(long)]
    pub scale_down_step: Option<f64>,
    /// Predictive: hours between refits of the forecast (6).
    #[arg(long)]
    pub refit_every_hours: Option<f64>,
    /// Predictive: days of history a fit uses (14).
    #[arg(long)]
    pub train_days: Option<i64>,
    /// Predictive: offset of the forecast's log transform, as a share of the mean bucket (0.3).
    #[arg(long)]
    pub log_offset_share: Option<f64>,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl Args {
    fn world(&self, trace: &Trace, bucket_secs: i64) -> World {
        let mut world = World {
            tick_secs: self.tick_secs,
            decision_secs: self.decision_secs,
            job_secs: self.job_secs,
            slots_per_worker: self.slots,
            startup_secs: self.startup_secs,
            slo_secs: self.slo_secs,
            rate_scale: self.rate_scale,
            bucket_secs,
            initial_workers: self.min_workers,
        };
        // Both pools start sized for the first bucket's load, so neither pays for a cold start.
        if let Some((_, events)) = trace.windows(bucket_secs).next() {
            let load = events * self.rate_scale / bucket_secs as f64 * self.job_secs as f64
                / f64::from(self.slots.max(1));
            world.initial_workers = (load.ceil() as u32).clamp(self.min_workers, self.max_workers);
        }
        world
    }

    fn predictive_config(&self) -> Result<PredictiveConfig, Error> {
        let defaults = PredictiveConfig::default();
        let mut forecast = defaults.forecast.clone();
        if let Some(q) = self.upper_quantile {
            forecast.upper_quantile = q;
        }
        if let Some(hours) = self.refit_every_hours {
            forecast.refit_every_secs = (hours * 3600.0) as i64;
        }
        if let Some(days) = self.train_days {
            forecast.train_days = days;
        }
        if let Some(share) = self.log_offset_share {
            forecast.log_offset_share = share;
        }
        forecast.validate().map_err(Error::Settings)?;
        let config = PredictiveConfig {
            bounds: self.bounds(),
            lead_secs: self.startup_secs,
            scale_down_window_secs: self
                .scale_down_window_secs
                .unwrap_or(defaults.scale_down_window_secs),
            scale_down_step: self.scale_down_step.unwrap_or(defaults.scale_down_step),
            fallback: self.reactive_config(),
            forecast,
        };
        if !(config.scale_down_step > 0.0 && config.scale_down_step <= 1.0) {
            return Err(Error::Settings(
                "the scale-down step must be in (0, 1]".into(),
            ));
        }
        Ok(config)
    }

    fn reactive_config(&self) -> ReactiveConfig {
        ReactiveConfig {
            bounds: self.bounds(),
            ..ReactiveConfig::default()
        }
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            min: self.min_workers,
            max: self.max_workers,
        }
    }
}

/// The results of one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    /// Workers provisioned (starting and draining ones included) integrated over time.
    pub worker_minutes: f64,
    /// 95th percentile of the time jobs waited for a slot, seconds.
    pub p95_wait_s: f64,
    /// Share of jobs that waited longer than the SLO.
    pub slo_miss_ratio: f64,
    /// Decisions that changed the pool size.
    pub scale_events: u64,
    /// Jobs simulated.
    pub jobs: u64,
    /// Mean workers provisioned.
    pub mean_workers: f64,
    /// Most workers provisioned at once.
    pub peak_workers: u32,
    /// Mean workers the arrivals need at full use: rate × job seconds / slots.
    pub mean_load_workers: f64,
    /// Worker-minutes of the work itself (jobs × job seconds / slots): no policy costs less.
    pub load_worker_minutes: f64,
    /// Worker-minutes of a clairvoyant pool: sized for each bucket's arrivals and raised a
    /// start-up time before each rise, never queueing. What the lead-time rule would cost
    /// with a perfect forecast.
    pub clairvoyant_worker_minutes: f64,
    /// Jobs per trace event.
    pub rate_scale: f64,
    /// Decisions per reason.
    pub decisions: std::collections::BTreeMap<&'static str, u64>,
    /// sMAPE of the forecast 30 minutes ahead (per bucket, over the buckets that also
    /// have a value a week earlier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast_smape: Option<f64>,
    /// sMAPE of seasonal-naive (same time last week) over the same buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seasonal_naive_smape: Option<f64>,
    /// sMAPE of daily seasonal-naive (same time yesterday) over the same buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seasonal_naive_daily_smape: Option<f64>,
    /// Buckets the sMAPEs are taken over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast_buckets: Option<u64>,
}

/// The backtest's result: a key per policy run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactive: Option<PolicyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictive: Option<PolicyReport>,
}

/// A finished backtest.
#[derive(Debug)]
pub struct Backtest {
    pub trace_name: String,
    pub rows: usize,
    pub days: f64,
    pub report: Report,
}

/// Runs the backtest `args` describe, drawing the plot if asked.
pub fn run(args: &Args) -> Result<Backtest, Error> {
    if args.min_workers == 0 || args.min_workers > args.max_workers {
        return Err(Error::Settings(
            "workers must satisfy 1 <= min <= max".into(),
        ));
    }
    let trace = Trace::load(&args.trace)?;
    let predictive_config = args.predictive_config()?;
    let bucket_secs = predictive_config.forecast.bucket_secs;
    let world = args.world(&trace, bucket_secs);
    world.validate().map_err(Error::Settings)?;
    let retain = predictive_config.forecast.retain_buckets();

    let mut policies: Vec<Box<dyn Policy>> = Vec::new();
    if matches!(args.policy, PolicyChoice::Reactive | PolicyChoice::Both) {
        policies.push(Box::new(Reactive::new(args.reactive_config())));
    }
    if matches!(args.policy, PolicyChoice::Predictive | PolicyChoice::Both) {
        policies.push(Box::new(Predictive::new(predictive_config)));
    }

    let ticks = trace
        .span_secs()
        .unsigned_abs()
        .div_ceil(world.tick_secs.unsigned_abs());
    let progress = (!args.no_progress && ticks >= 100_000).then(|| {
        let bar = ProgressBar::new(ticks * policies.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% ({eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("simulating");
        bar
    });
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = policies
            .iter_mut()
            .map(|policy| {
                let (trace, world, progress) = (&trace, &world, progress.as_ref());
                scope.spawn(move || sim::simulate(trace, world, policy.as_mut(), retain, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let mut report = Report {
        reactive: None,
        predictive: None,
    };
    for outcome in &outcomes {
        let bounds = (f64::from(args.min_workers), f64::from(args.max_workers));
        let policy_report = summarize(&trace, &world, bounds, outcome);
        match outcome.policy {
            "reactive" => report.reactive = Some(policy_report),
            _ => report.predictive = Some(policy_report),
        }
    }

    if let (Some(path), Some(first)) = (&args.plot, outcomes.first()) {
        let per_job =
            world.job_secs as f64 / f64::from(world.slots_per_worker) / bucket_secs as f64;
        let forecast = outcomes
            .iter()
            .find(|o| o.forecasts.iter().any(Option::is_some))
            .map(|o| {
                o.forecasts
                    .iter()
                    .map(|f| f.map(|(m, u)| (m * per_job, u * per_job)))
                    .collect()
            })
            .unwrap_or_default();
        let chart = Chart {
            title: format!("{} at rate scale {}", trace_name(args), args.rate_scale),
            start: trace.start(),
            bucket_secs,
            load: first.arrivals.iter().map(|a| a * per_job).collect(),
            forecast,
            pools: outcomes
                .iter()
                .map(|o| (o.policy, o.workers.as_slice()))
                .collect(),
            detail_days: args.plot_days,
        };
        plot::render(path, &chart)?;
    }

    Ok(Backtest {
        trace_name: trace_name(args),
        rows: trace.len(),
        days: trace.span_secs() as f64 / DAY as f64,
        report,
    })
}

fn trace_name(args: &Args) -> String {
    args.trace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.trace.display().to_string())
}

fn summarize(trace: &Trace, world: &World, bounds: (f64, f64), outcome: &Outcome) -> PolicyReport {
    let span = trace.span_secs() as f64;
    let jobs = outcome.waits.total();
    let slo_ticks = u64::try_from(world.slo_secs / world.tick_secs).unwrap_or(0);
    let mut decisions = std::collections::BTreeMap::new();
    for reason in Reason::ALL {
        if let Some(&n) = outcome.decisions.get(&reason) {
            decisions.insert(reason.as_str(), n);
        }
    }
    let arrived: f64 = outcome.arrivals.iter().sum();
    let per_worker = f64::from(world.slots_per_worker) / world.job_secs as f64;
    let (min, max) = bounds;
    let sized: Vec<f64> = outcome
        .arrivals
        .iter()
        .map(|a| {
            (a / world.bucket_secs as f64 / per_worker)
                .ceil()
                .clamp(min, max)
        })
        .collect();
    let lead = (world.startup_secs as f64).min(world.bucket_secs as f64);
    let clairvoyant_secs: f64 = sized
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let next = sized.get(i + 1).copied().unwrap_or(w);
            w * (world.bucket_secs as f64 - lead) + w.max(next) * lead
        })
        .sum();
    let mut report = PolicyReport {
        worker_minutes: outcome.worker_secs / 60.0,
        p95_wait_s: (outcome.waits.quantile_ticks(0.95) as f64) * world.tick_secs as f64,
        slo_miss_ratio: if jobs == 0 {
            0.0
        } else {
            outcome.waits.above(slo_ticks) as f64 / jobs as f64
        },
        scale_events: outcome.scale_events,
        jobs,
        mean_workers: outcome.worker_secs / span,
        peak_workers: outcome.peak_workers,
        mean_load_workers: arrived / span / per_worker,
        load_worker_minutes: arrived / per_worker / 60.0,
        clairvoyant_worker_minutes: clairvoyant_secs / 60.0,
        rate_scale: world.rate_scale,
        decisions,
        forecast_smape: None,
        seasonal_naive_smape: None,
        seasonal_naive_daily_smape: None,
        forecast_buckets: None,
    };
    if outcome.forecasts.iter().any(Option::is_some) {
        let accuracy = forecast_accuracy(trace, world, outcome);
        report.forecast_smape = accuracy.forecast;
        report.seasonal_naive_smape = accuracy.weekly;
        report.seasonal_naive_daily_smape = accuracy.daily;
        report.forecast_buckets = Some(accuracy.buckets);
    }
    report
}

struct Accuracy {
    forecast: Option<f64>,
    weekly: Option<f64>,
    daily: Option<f64>,
    buckets: u64,
}

/// sMAPE of the 30-minute-ahead forecast and of seasonal-naive over the complete buckets
/// that have both a forecast and a value a week earlier.
fn forecast_accuracy(trace: &Trace, world: &World, outcome: &Outcome) -> Accuracy {
    let per_week = usize::try_from(WEEK / world.bucket_secs).unwrap_or(usize::MAX);
    let per_day = usize::try_from(DAY / world.bucket_secs).unwrap_or(usize::MAX);
    let complete = usize::try_from(trace.span_secs() / world.bucket_secs).unwrap_or(0);
    let actual = &outcome.arrivals;
    let scored: Vec<(usize, f64)> = (per_week..complete.min(actual.len()))
        .filter_map(|b| {
            outcome
                .forecasts
                .get(b)
                .copied()
                .flatten()
                .map(|(m, _)| (b, m))
        })
        .collect();
    Accuracy {
        forecast: smape(scored.iter().map(|&(b, m)| (m, actual[b]))),
        weekly: smape(
            scored
                .iter()
                .map(|&(b, _)| (actual[b - per_week], actual[b])),
        ),
        daily: smape(
            scored
                .iter()
                .map(|&(b, _)| (actual[b - per_day], actual[b])),
        ),
        buckets: scored.len() as u64,
    }
}

/// The report as a table for a terminal.
pub fn table(backtest: &Backtest) -> String {
    let mut out = String::new();
    let first = backtest
        .report
        .reactive
        .as_ref()
        .or(backtest.report.predictive.as_ref());
    let _ = write!(
        out,
        "{}: {} rows over {:.1} days",
        backtest.trace_name, backtest.rows, backtest.days
    );
    if let Some(r) = first {
        let _ = write!(
            out,
            ", rate scale {}, {} jobs, mean load {:.2} workers",
            r.rate_scale, r.jobs, r.mean_load_workers
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<11} {:>15} {:>11} {:>15} {:>13} {:>15} {:>21}",
        "policy",
        "worker_minutes",
        "p95_wait_s",
        "slo_miss_ratio",
        "scale_events",
        "forecast_smape",
        "seasonal_naive_smape"
    );
    for (name, r) in [
        ("reactive", &backtest.report.reactive),
        ("predictive", &backtest.report.predictive),
    ] {
        let Some(r) = r else { continue };
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
        let _ = writeln!(
            out,
            "{:<11} {:>15.1} {:>11.1} {:>15.6} {:>13} {:>15} {:>21}",
            name,
            r.worker_minutes,
            r.p95_wait_s,
            r.slo_miss_ratio,
            r.scale_events,
            opt(r.forecast_smape),
            opt(r.seasonal_naive_smape)
        );
    }
    if let (Some(re), Some(pr)) = (&backtest.report.reactive, &backtest.report.predictive) {
        let _ = writeln!(
            out,
            "predictive / reactive: cost {:.3}, SLO misses {}",
            pr.worker_minutes / re.worker_minutes,
            if re.slo_miss_ratio > 0.0 {
                format!("{:.3}", pr.slo_miss_ratio / re.slo_miss_ratio)
            } else {
                format!("{} vs none", pr.slo_miss_ratio)
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn write_trace(dir: &std::path::Path, days: i64) -> PathBuf {
        let path = dir.join("trace.csv");
        let mut text = String::from("timestamp,value\n");
        for i in 1..=days * 288 {
            let t = 1_420_070_400 + i * 300;
            let phase = (t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
            let _ = writeln!(text, "{t},{:.1}", 300.0 + 200.0 * phase.sin());
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let cli = Cli::parse_from(["backtest", "--trace", "t.csv"]);
        let a = cli.args;
        assert_eq!(a.policy, PolicyChoice::Both);
        assert_eq!(
            (
                a.tick_secs,
                a.decision_secs,
                a.job_secs,
                a.slots,
                a.startup_secs,
                a.slo_secs
            ),
            (5, 15, 30, 4, 90, 60)
        );
        assert_eq!((a.min_workers, a.max_workers), (1, 500));
        assert_eq!(a.rate_scale, 1.0);
    }

    #[test]
    fn a_backtest_reports_both_policies_and_the_forecast_error() {
        let dir = tempfile::tempdir().unwrap();
        let trace = write_trace(dir.path(), 10);
        let plot = dir.path().join("plot.svg");
        let cli = Cli::parse_from([
            "backtest",
            "--trace",
            trace.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
            "--rate-scale",
            "0.5",
            "--no-progress",
        ]);
        let backtest = run(&cli.args).unwrap();
        let reactive = backtest.report.reactive.clone().unwrap();
        let predictive = backtest.report.predictive.clone().unwrap();
        assert_eq!(reactive.jobs, predictive.jobs);
        assert!(reactive.worker_minutes > 0.0);
        assert!(reactive.forecast_smape.is_none());
        assert!(predictive.forecast_smape.is_some());
        assert!(predictive.seasonal_naive_smape.is_some());
        assert!(predictive.decisions.contains_key("fallback"));
        let json = serde_json::to_value(&backtest.report).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 2);
        assert!(json["predictive"]["forecast_smape"].is_number());
        assert!(json["reactive"]["p95_wait_s"].is_number());
        assert!(std::fs::metadata(&plot).unwrap().len() > 1000);
        assert!(table(&backtest).contains("predictive"));
    }

    #[test]
    fn one_policy_can_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let trace = write_trace(dir.path(), 1);
        let cli = Cli::parse_from([
            "backtest",
            "--trace",
            trace.to_str().unwrap(),
            "--policy",
            "reactive",
        ]);
        let backtest = run(&cli.args).unwrap();
        assert!(backtest.report.predictive.is_none());
        let json = serde_json::to_value(&backtest.report).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 1);
    }

    #[test]
    fn a_minimum_above_the_maximum_is_refused() {
        let cli = Cli::parse_from([
            "backtest",
            "--trace",
            "unread.csv",
            "--min-workers",
            "10",
            "--max-workers",
            "5",
        ]);
        assert!(matches!(run(&cli.args), Err(Error::Settings(_))));
    }

    #[test]
    fn periods_that_are_not_whole_ticks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trace = write_trace(dir.path(), 1);
        let cli = Cli::parse_from([
            "backtest",
            "--trace",
            trace.to_str().unwrap(),
            "--job-secs",
            "32",
        ]);
        assert!(matches!(run(&cli.args), Err(Error::Settings(_))));
    }
}
