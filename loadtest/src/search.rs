//! The highest sustainable rate: constant-rate steps of a few seconds each, doubling until a
//! step fails, then bisecting between the best pass and the lowest failure until they are
//! within the resolution. A step passes when every request got a 2xx, JetStream holds what
//! the answers said it accepted (when checked), the p99 latency from the intended start stays
//! under the bound, and the step delivered what it planned.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::engine::{self, EngineConfig, GiveUp, Probes, Scenario};
use crate::schedule::{Schedule, Shape};
use crate::stats::RunReport;
use crate::target::Target;

#[derive(Args, Clone, Debug)]
pub struct SearchArgs {
    /// First rate tried (requests per second).
    #[arg(long, default_value_t = 500.0)]
    pub start_rate: f64,
    /// No step goes above this rate.
    #[arg(long, default_value_t = 40_000.0)]
    pub max_rate: f64,
    /// Length of each step.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// The p99 a step must stay under (milliseconds).
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// Stop when the best pass and the lowest failure are this close (a fraction).
    #[arg(long, default_value_t = 0.05)]
    pub resolution: f64,
    /// At most this many steps.
    #[arg(long, default_value_t = 14)]
    pub max_steps: usize,
    /// Pause between steps, for the target to settle.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub cooldown: Duration,
    /// Unmeasured traffic at the start rate before the first step (warms caches and JITs).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// What made a step pass.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Criteria {
    pub p99_ms: f64,
    pub step_s: f64,
    /// Share of the planned requests that must be answered 2xx within the step and its drain.
    pub min_delivered: f64,
    pub no_errors: bool,
    pub streams_checked: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    pub pass: bool,
    /// Whether this step repeats the one before at the same rate: a step that failed on its
    /// tail alone (its median well inside the bound, every request answered, the rate kept
    /// up) is tried once more, so that one hiccup of a shared machine does not end a search.
    #[serde(default)]
    pub retry: bool,
    /// Why it failed; empty when it passed.
    pub why: String,
    pub run: RunReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchReport {
    pub scenario: String,
    pub target: String,
    pub connections: usize,
    pub criteria: Criteria,
    pub steps: Vec<Step>,
    /// The highest rate that passed.
    pub max_rate: Option<f64>,
    /// The lowest rate that failed.
    pub first_failure: Option<f64>,
    /// Whether the search stopped at --max-rate still passing.
    pub capped: bool,
}

impl SearchReport {
    /// The step that set `max_rate`.
    pub fn best(&self) -> Option<&Step> {
        let max = self.max_rate?;
        self.steps.iter().find(|s| s.pass && s.rate == max)
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "{} → {} over {} connections; pass = p99 < {} ms, no errors{}\n",
            self.scenario,
            self.target,
            self.connections,
            self.criteria.p99_ms,
            if self.criteria.streams_checked {
                ", JetStream holds every accepted delivery"
            } else {
                ""
            }
        );
        for s in &self.steps {
            out.push_str(&format!(
                "  {:>8.0}/s{} {}  p50 {:>7.2}  p99 {:>8.2}  max {:>8.2} ms  {:>8.0} ok/s{}  {}\n",
                s.rate,
                if s.retry { "↻" } else { " " },
                if s.pass { "pass" } else { "FAIL" },
                s.run.latency.p50_ms,
                s.run.latency.p99_ms,
                s.run.latency.max_ms,
                s.run.throughput_rps,
                match &s.run.server {
                    Some(t) if t.records_per_message > 0.0 =>
                        format!("  {:>5.1} records/msg", t.records_per_message),
                    _ => String::new(),
                },
                s.why
            ));
        }
        match self.max_rate {
            Some(r) => out.push_str(&format!(
                "highest passing rate: {r:.0}/s{}\n",
                if self.capped { " (the cap)" } else { "" }
            )),
            None => out.push_str("no rate passed\n"),
        }
        out
    }
}

/// Why a step failed, or `None` if it passed.
pub fn verdict(run: &RunReport, p99_ms: f64, min_delivered: f64) -> Option<String> {
    if run.stopped_early {
        return Some(format!(
            "over 1 % of the requests were {p99_ms} ms late or more: stopped early"
        ));
    }
    let mut why = Vec::new();
    if run.errors > 0 {
        let mut parts: Vec<String> = run
            .statuses
            .iter()
            .filter(|(s, _)| !s.starts_with('2'))
            .map(|(s, n)| format!("{n}×{s}"))
            .collect();
        parts.extend(run.transport_errors.iter().map(|(e, n)| format!("{n}×{e}")));
        why.push(format!("errors: {}", parts.join(" ")));
    }
    if run.unfinished > 0 {
        why.push(format!("{} unfinished", run.unfinished));
    }
    for c in run.stream_checks.iter().filter(|c| !c.ok) {
        why.push(format!(
            "{}: {} answered as stored, {} stored ({} repeated)",
            c.stream, c.expected, c.stored, c.repeated
        ));
    }
    if run.latency.count == 0 || run.latency.p99_ms >= p99_ms {
        why.push(format!("p99 {:.1} ms", run.latency.p99_ms));
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts stay far below 2^52"
    )]
    let delivered = run.ok as f64 / (run.schedule.planned_requests.max(1)) as f64;
    if delivered < min_delivered {
        why.push(format!("only {:.1}% answered 2xx", delivered * 100.0));
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

/// Whether a failed step failed on its tail alone: worth one more try at the same rate.
pub fn marginal(run: &RunReport, rate: f64, p99_ms: f64) -> bool {
    run.errors == 0
        && (run.unfinished == 0 || run.stopped_early)
        && run.stream_checks.iter().all(|c| c.ok)
        && run.latency.p50_ms < p99_ms / 4.0
        && run.throughput_rps >= 0.95 * rate
}

/// The next rate to try, or `None` when the search is done.
pub fn next_rate(
    rate: f64,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
    args: &SearchArgs,
) -> Option<f64> {
    let next = match (best_pass, lowest_fail) {
        (_, None) if rate >= args.max_rate => return None,
        (_, None) => (rate * 2.0).min(args.max_rate),
        (None, Some(fail)) => fail / 2.0,
        (Some(pass), Some(fail)) => {
            if (fail - pass) / pass <= args.resolution {
                return None;
            }
            (pass + fail) / 2.0
        }
    };
    let next = next.round();
    (next >= 1.0).then_some(next)
}

/// Runs the search.
pub async fn search(
    target: &Target,
    scenario: Arc<dyn Scenario>,
    engine_cfg: &EngineConfig,
    args: &SearchArgs,
    probes: &Probes,
    max_requests: u64,
) -> anyhow::Result<SearchReport> {
    const MIN_DELIVERED: f64 = 0.99;
    if !args.warmup.is_zero() {
        let warm = Schedule::build(
            &Shape::Constant {
                rate: args.start_rate,
                duration: args.warmup,
            },
            max_requests,
        )?;
        engine::drive(target, scenario.clone(), &warm, engine_cfg, "warm-up").await;
        tokio::time::sleep(args.cooldown).await;
    }
    let mut steps = Vec::new();
    let mut best_pass: Option<f64> = None;
    let mut lowest_fail: Option<f64> = None;
    let mut rate = args.start_rate;
    for i in 0..args.max_steps {
        let schedule = Schedule::build(
            &Shape::Constant {
                rate,
                duration: args.step,
            },
            max_requests,
        )?;
        let label = format!("step {} at {rate:.0}/s", i + 1);
        let step_cfg = EngineConfig {
            give_up: Some(GiveUp {
                late_after: Duration::from_secs_f64(args.p99_ms / 1000.0),
                max_late: schedule.len() as u64 / 100,
            }),
            ..engine_cfg.clone()
        };
        let measure = || {
            engine::measure(
                target,
                scenario.clone(),
                &schedule,
                &step_cfg,
                probes,
                &label,
            )
        };
        let judge = |run: &RunReport| {
            if schedule.info.truncated {
                Some("the step was cut at the request cap".to_owned())
            } else {
                verdict(run, args.p99_ms, MIN_DELIVERED)
            }
        };
        let mut run = measure().await?;
        let mut why = judge(&run);
        let mut retry = false;
        if why.is_some() && marginal(&run, rate, args.p99_ms) {
            steps.push(Step {
                rate,
                pass: false,
                retry: false,
                why: format!(
                    "{} (on the tail alone: tried again)",
                    why.unwrap_or_default()
                ),
                run,
            });
            tokio::time::sleep(args.cooldown).await;
            run = measure().await?;
            why = judge(&run);
            retry = true;
        }
        let pass = why.is_none();
        if pass {
            best_pass = Some(best_pass.map_or(rate, |b: f64| b.max(rate)));
        } else {
            lowest_fail = Some(lowest_fail.map_or(rate, |f: f64| f.min(rate)));
        }
        steps.push(Step {
            rate,
            pass,
            retry,
            why: why.unwrap_or_default(),
            run,
        });
        match next_rate(rate, best_pass, lowest_fail, args) {
            Some(next) => rate = next,
            None => break,
        }
        tokio::time::sleep(args.cooldown).await;
    }
    let first = steps.first();
    Ok(SearchReport {
        scenario: first.map(|s| s.run.scenario.clone()).unwrap_or_default(),
        target: target.base_url.clone(),
        connections: engine_cfg.connections,
        criteria: Criteria {
            p99_ms: args.p99_ms,
            step_s: args.step.as_secs_f64(),
            min_delivered: MIN_DELIVERED,
            no_errors: true,
            streams_checked: probes.streams.is_some(),
        },
        capped: lowest_fail.is_none() && best_pass == Some(args.max_rate),
        max_rate: best_pass,
        first_failure: lowest_fail,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::schedule::ScheduleInfo;
    use crate::stats::{StreamCheck, Summary};

    fn args() -> SearchArgs {
        SearchArgs {
            start_rate: 500.0,
            max_rate: 10_000.0,
            step: Duration::from_secs(3),
            p99_ms: 50.0,
            resolution: 0.05,
            max_steps: 20,
            cooldown: Duration::ZERO,
            warmup: Duration::ZERO,
        }
    }

    /// The rates a search tries against a target whose true limit is `limit`.
    fn walk(limit: f64) -> (Vec<f64>, Option<f64>) {
        let a = args();
        let (mut best, mut fail) = (None, None);
        let mut rate = a.start_rate;
        let mut tried = vec![];
        for _ in 0..a.max_steps {
            tried.push(rate);
            if rate <= limit {
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            } else {
                fail = Some(fail.map_or(rate, |f: f64| f.min(rate)));
            }
            match next_rate(rate, best, fail, &a) {
                Some(n) => rate = n,
                None => break,
            }
        }
        (tried, best)
    }

    #[test]
    fn the_search_doubles_then_bisects_to_within_the_resolution() {
        let (tried, best) = walk(3_000.0);
        assert_eq!(&tried[..4], &[500.0, 1000.0, 2000.0, 4000.0]);
        let best = best.unwrap();
        assert!(
            (3_000.0 / 1.05..=3_000.0).contains(&best),
            "{best} via {tried:?}"
        );
        assert!(tried.len() <= 10, "{tried:?}");
    }

    #[test]
    fn a_first_failure_halves_the_rate() {
        let (tried, best) = walk(100.0);
        assert_eq!(&tried[..3], &[500.0, 250.0, 125.0]);
        let best = best.unwrap();
        assert!((95.0..=100.0).contains(&best), "{best} via {tried:?}");
    }

    #[test]
    fn the_search_stops_at_the_cap() {
        let (tried, best) = walk(1e9);
        assert_eq!(best, Some(10_000.0));
        assert_eq!(tried.last(), Some(&10_000.0));
    }

    fn run(p99: f64, ok: u64, planned: u64) -> RunReport {
        RunReport {
            scenario: "s".into(),
            target: "t".into(),
            connections: 1,
            schedule: ScheduleInfo {
                description: String::new(),
                planned_requests: planned,
                planned_duration_s: 1.0,
                mean_rate: 1.0,
                truncated: false,
            },
            sent: planned,
            ok,
            errors: 0,
            unfinished: 0,
            statuses: BTreeMap::new(),
            transport_errors: BTreeMap::new(),
            elapsed_s: 1.0,
            throughput_rps: 1.0,
            latency: Summary {
                count: ok,
                p99_ms: p99,
                ..Summary::default()
            },
            by_kind: BTreeMap::new(),
            jobs: 0,
            dispatch_lag_max_ms: 0.0,
            stream_checks: vec![],
            cpu: BTreeMap::new(),
            server: None,
            stopped_early: false,
        }
    }

    #[test]
    fn only_a_failure_on_the_tail_is_tried_again() {
        let mut tail = run(80.0, 1000, 1000);
        tail.latency.p50_ms = 2.0;
        tail.throughput_rps = 990.0;
        assert!(marginal(&tail, 1000.0, 50.0));
        let mut slow = tail.clone();
        slow.latency.p50_ms = 30.0;
        assert!(!marginal(&slow, 1000.0, 50.0));
        let mut behind = tail.clone();
        behind.throughput_rps = 800.0;
        assert!(!marginal(&behind, 1000.0, 50.0));
        let mut errors = tail;
        errors.errors = 1;
        assert!(!marginal(&errors, 1000.0, 50.0));
    }

    #[test]
    fn a_step_passes_only_fast_complete_and_stored() {
        assert_eq!(verdict(&run(10.0, 100, 100), 50.0, 0.99), None);
        assert!(
            verdict(&run(60.0, 100, 100), 50.0, 0.99)
                .unwrap()
                .contains("p99")
        );
        assert!(
            verdict(&run(10.0, 90, 100), 50.0, 0.99)
                .unwrap()
                .contains("90.0%")
        );
        let mut errors = run(10.0, 100, 100);
        errors.errors = 2;
        errors.statuses.insert("503".into(), 2);
        assert!(verdict(&errors, 50.0, 0.99).unwrap().contains("2×503"));
        let mut lost = run(10.0, 100, 100);
        lost.stream_checks.push(StreamCheck {
            stream: "DELIVERIES_US_EAST_1".into(),
            expected: 100,
            stored: 99,
            repeated: 0,
            ok: false,
        });
        assert!(verdict(&lost, 50.0, 0.99).unwrap().contains("99 stored"));
        let mut stopped = run(10.0, 100, 100);
        stopped.stopped_early = true;
        assert!(
            verdict(&stopped, 50.0, 0.99)
                .unwrap()
                .contains("stopped early")
        );
    }
}
