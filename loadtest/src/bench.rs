//! docs/benchmarks.md from the results `loadtest/bench.sh` leaves in its directory:
//!
//! ```text
//! meta.tsv                 machine, versions, settings (name<TAB>value)
//! commands.tsv             each measurement's command (name<TAB>command)
//! run-<n>/<name>.json      each measurement of run n (jetstream, noop, intake, probot,
//!                          api-reads, onboarding, mix)
//! profile-self.txt         perf report of the control plane, self time (optional)
//! profile-children.txt     the same, time including callees (optional)
//! profile-run.json         the run the profile was taken during (optional)
//! ```
//!
//! Every figure is given as the median of the runs, each run's value, and the spread
//! ((max − min) / median). Ratios are taken within each run — a figure and its ceiling are
//! measured minutes apart on the same machine — and then their median.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

use crate::jetstream::JetstreamReport;
use crate::procstat::MACHINE;
use crate::search::SearchReport;
use crate::stats::RunReport;

/// The intake goals of the performance baseline.
const GOAL_JETSTREAM_SHARE: f64 = 0.5;
const GOAL_PROBOT_MULTIPLE: f64 = 2.5;

/// One run's results.
#[derive(Debug, Default)]
struct Run {
    jetstream: Option<JetstreamReport>,
    noop: Option<SearchReport>,
    intake: Option<SearchReport>,
    probot: Option<SearchReport>,
    api: Option<RunReport>,
    onboarding: Option<RunReport>,
    mix: Option<RunReport>,
}

fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
    ))
}

fn tsv(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A figure over the runs.
#[derive(Debug, Clone)]
struct Figure {
    values: Vec<Option<f64>>,
}

impl Figure {
    fn of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Self {
        Self {
            values: runs.iter().map(f).collect(),
        }
    }

    fn present(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.values.iter().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> Option<f64> {
        let v = self.present();
        match v.len() {
            0 => None,
            n if !n.is_multiple_of(2) => Some(v[n / 2]),
            n => Some(f64::midpoint(v[n / 2 - 1], v[n / 2])),
        }
    }

    fn spread(&self) -> Option<f64> {
        let v = self.present();
        let median = self.median()?;
        if v.len() < 2 || median == 0.0 {
            return None;
        }
        Some((v[v.len() - 1] - v[0]) / median)
    }
}

/// How a figure is written.
#[derive(Clone, Copy)]
enum Unit {
    Rate,
    Ratio,
    Multiple,
    Ms,
    Count,
}

/// `x` rounded, with thousands separated by commas: `12,345`.
pub(crate) fn thousands(x: f64) -> String {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "rates are far below i64's range"
    )]
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn fmt(x: Option<f64>, unit: Unit) -> String {
    match x {
        None => "—".into(),
        Some(x) => match unit {
            Unit::Rate => format!("{}/s", thousands(x)),
            Unit::Ratio => format!("{x:.2}"),
            Unit::Multiple => format!("{x:.2}×"),
            Unit::Ms => format!("{x:.2} ms"),
            Unit::Count => thousands(x),
        },
    }
}

fn row(out: &mut String, label: &str, fig: &Figure, unit: Unit) {
    let runs: Vec<String> = fig.values.iter().map(|v| fmt(*v, unit)).collect();
    let spread = fig
        .spread()
        .map_or_else(|| "—".into(), |s| format!("{:.0} %", s * 100.0));
    out.push_str(&format!(
        "| {label} | **{}** | {} | {spread} |\n",
        fmt(fig.median(), unit),
        runs.join(" / ")
    ));
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn max_rate(s: Option<&SearchReport>) -> Option<f64> {
    s.and_then(|s| s.max_rate)
}

/// A parsed line of `perf report --stdio`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    percent: f64,
    dso: String,
    symbol: String,
}

/// The rest of a report line: the symbol, without the empty columns perf pads it with.
fn symbol_of<'a>(words: impl Iterator<Item = &'a str>) -> String {
    let mut words: Vec<&str> = words.collect();
    while words.last() == Some(&"-") {
        words.pop();
    }
    words.join(" ")
}

/// Shortens a long symbol for a table.
fn short(symbol: &str) -> String {
    const MAX: usize = 140;
    if symbol.chars().count() <= MAX {
        symbol.to_owned()
    } else {
        format!("{}…", symbol.chars().take(MAX).collect::<String>())
    }
}

/// Lines of `perf report --no-children --sort dso,symbol`: `12.34%  dso  [.] symbol`.
fn parse_self(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let percent = it.next()?.strip_suffix('%')?.parse().ok()?;
            let dso = it.next()?.to_owned();
            let _kind = it.next()?;
            Some(Sample {
                percent,
                dso,
                symbol: symbol_of(it),
            })
        })
        .collect()
}

/// Lines of `perf report --children --sort symbol`: `45.6%  1.2%  [.] symbol`.
fn parse_children(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let percent = it.next()?.strip_suffix('%')?.parse().ok()?;
            let _self = it.next()?.strip_suffix('%')?;
            let _kind = it.next()?;
            Some(Sample {
                percent,
                dso: String::new(),
                symbol: symbol_of(it),
            })
        })
        .collect()
}

/// What a symbol's time is spent on.
fn category(s: &Sample) -> &'static str {
    let sym = s.symbol.as_str();
    let has = |needles: &[&str]| needles.iter().any(|n| sym.contains(n));
    if s.dso.contains("kernel")
        || s.dso.contains("vdso")
        || (s.dso.starts_with("libc")
            && has(&[
                "recv",
                "send",
                "writev",
                "read",
                "write",
                "epoll",
                "clock_gettime",
                "futex",
                "syscall",
            ]))
    {
        "the kernel and system calls (TCP on loopback, wake-ups, scheduling)"
    } else if has(&[
        "serde_json",
        "sonic_rs",
        "sonic_simd",
        "sonic_number",
        "serde::",
        "serde_core",
        "from_utf8",
        "utf8",
    ]) {
        "JSON (serde_json and sonic-rs, with their UTF-8 checks)"
    } else if has(&["sha2", "hmac", "Sha256", "sha256", "digest::"]) {
        "HMAC-SHA256 (sha2, hmac)"
    } else if has(&["tracing", "opentelemetry"]) {
        "tracing and OpenTelemetry spans"
    } else if has(&["async_nats"]) {
        "NATS client (async_nats)"
    } else if has(&["prometheus"]) {
        "Prometheus metrics"
    } else if has(&[
        "hyper",
        "axum",
        "tower",
        "http::",
        "httparse",
        "http_body",
        "bytes::",
    ]) {
        "HTTP (hyper, axum, tower)"
    } else if has(&["tokio"]) {
        "tokio runtime"
    } else if has(&[
        "malloc",
        "free",
        "realloc",
        "calloc",
        "memcpy",
        "memmove",
        "memset",
        "_int_",
        "unlink_chunk",
    ]) {
        "memory (allocation, copies)"
    } else if has(&["sqlx", "postgres", "mini_moka", "moka"]) {
        "caches and database client"
    } else if has(&["control_plane", "protocol::"]) {
        "Switchyard's own code"
    } else {
        "other"
    }
}

fn push_machine(out: &mut String, meta: &BTreeMap<String, String>) {
    let get = |k: &str| meta.get(k).map_or("unknown", String::as_str);
    out.push_str("## Machine\n\n");
    out.push_str(&format!(
        "- CPU: {} — {} cores; memory {}; {}\n",
        get("cpu"),
        get("cores"),
        get("memory"),
        get("kernel")
    ));
    out.push_str(&format!(
        "- Load average (1, 5, 15 min) before the benchmark started its processes {}, after the \
         runs {}; processes using 1 % of a core or more over 5 s just before: {}.\n",
        get("loadavg-before"),
        get("loadavg-after"),
        match get("busy-before") {
            "" => "none",
            busy => busy,
        }
    ));
    if let (Some(before), Some(after)) = (
        meta.get("calibration-before"),
        meta.get("calibration-after"),
    ) {
        out.push_str(&format!(
            "- How fast the host was (`loadtest calibrate`: one HMAC-SHA256 of a webhook-sized \
             body on one core, and one round trip of a byte over loopback TCP between two \
             threads, each the mean over 1 s): before the runs {before}; after them {after}. \
             The same commit measures lower on a host that is slower at these; compare \
             benchmarks of different days by them first.\n"
        ));
    }
    out.push_str(
        "- The load generator (one thread), the server under test and its dependencies (NATS, \
         PostgreSQL, Redis) share these cores: every rate here is what the whole system does on \
         one small machine, not what the server would do with the cores to itself. The CPU each \
         used is in [CPU at the highest passing rates](#cpu-at-the-highest-passing-rates).\n\n",
    );
    out.push_str("## Versions\n\n| what | version |\n|---|---|\n");
    for k in [
        "commit",
        "rustc",
        "nats-server",
        "postgres",
        "redis",
        "node",
        "probot",
        "profiler",
    ] {
        out.push_str(&format!("| {k} | {} |\n", get(k)));
    }
    out.push('\n');
}

fn steps_table(out: &mut String, s: &SearchReport) {
    let server = s.steps.iter().any(|st| st.run.server.is_some());
    out.push_str("| rate | result | p50 | p90 | p99 | p99.9 | max | 2xx/s |");
    out.push_str(if server {
        " in the handler / waiting for JetStream (server's means) | records per message | why it failed |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    } else {
        " why it failed |\n|---|---|---|---|---|---|---|---|---|\n"
    });
    for st in &s.steps {
        let l = &st.run.latency;
        let times = match (&st.run.server, server) {
            (Some(t), _) => format!(
                " {:.2} / {:.2} ms | {:.1} |",
                t.handler_mean_ms, t.publish_mean_ms, t.records_per_message
            ),
            (None, true) => " — | — |".to_owned(),
            (None, false) => String::new(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |{times} {} |\n",
            fmt(Some(st.rate), Unit::Rate),
            match (st.pass, st.retry) {
                (true, false) => "pass",
                (true, true) => "pass (2nd try)",
                (false, false) => "fail",
                (false, true) => "fail (2nd try)",
            },
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            thousands(st.run.throughput_rps),
            st.why.replace('|', "/")
        ));
    }
    out.push('\n');
}

fn cpu_line(run: &RunReport) -> String {
    let machine = run.cpu.get(MACHINE).map_or(0.0, |c| c.cores);
    let watched: f64 = run
        .cpu
        .iter()
        .filter(|(k, _)| k.as_str() != MACHINE)
        .map(|(_, c)| c.cores)
        .sum();
    let mut parts: Vec<String> = run
        .cpu
        .iter()
        .filter(|(k, _)| k.as_str() != MACHINE)
        .map(|(k, c)| format!("{k} {:.2}", c.cores))
        .collect();
    parts.push(format!(
        "everything else {:.2}",
        (machine - watched).max(0.0)
    ));
    format!("{} (whole machine {:.2})", parts.join(", "), machine)
}

/// CPU used by processes other than those measured, during the steps that set the highest
/// passing rates: whether the machine was otherwise quiet.
fn others(run: &RunReport) -> Option<f64> {
    let machine = run.cpu.get(MACHINE)?.cores;
    let watched: f64 = run
        .cpu
        .iter()
        .filter(|(k, _)| k.as_str() != MACHINE)
        .map(|(_, c)| c.cores)
        .sum();
    Some((machine - watched).max(0.0))
}

fn load_note(runs: &[Run], cores: &str) -> String {
    let values: Vec<Option<f64>> = runs
        .iter()
        .flat_map(|r| [&r.intake, &r.noop, &r.probot])
        .filter_map(|s| s.as_ref()?.best())
        .map(|s| others(&s.run))
        .collect();
    let fig = Figure { values };
    match (fig.median(), fig.present().last()) {
        (Some(m), Some(max)) if m <= 0.15 && *max <= 0.3 => format!(
            "The machine has {cores} cores and was otherwise lightly loaded: during the steps \
             that set the highest passing rates, processes other than those measured used a \
             median of {m:.2} cores (at most {max:.2})."
        ),
        (Some(m), Some(max)) => format!(
            "The machine has {cores} cores and was **not** otherwise idle: during the steps that \
             set the highest passing rates, processes other than those measured used a median \
             of {m:.2} cores (at most {max:.2}), which the figures below had to share."
        ),
        _ => format!("The machine has {cores} cores."),
    }
}

/// Where a webhook's time goes at the intake's highest passing rate: CPU or waiting.
/// The whole machine at the intake's highest passing rate, the median of the runs: its CPU
/// per webhook in µs (every process counted, the load generator's too) and the cores busy.
fn machine_at_best(runs: &[Run]) -> Option<(f64, f64)> {
    let best = |r: &Run| {
        let step = r.intake.as_ref()?.best()?;
        let cores = step.run.cpu.get(MACHINE)?.cores;
        (step.rate > 0.0 && cores > 0.0).then_some((step.rate, cores))
    };
    let us = Figure::of(runs, |r| best(r).map(|(rate, cores)| cores / rate * 1e6)).median()?;
    let busy = Figure::of(runs, |r| best(r).map(|(_, cores)| cores)).median()?;
    Some((us, busy))
}

/// For each missed goal, what its rate would ask of the machine: the CPU per webhook it
/// allows with the machine as busy as it was at the intake's highest passing rates (past
/// that, on these shared cores, the p99 bound failed), against what a webhook costs now.
fn push_goal_cost(
    out: &mut String,
    runs: &[Run],
    goals: [(bool, &str, Option<f64>); 2],
    machine_cores: f64,
) {
    let Some((us, busy)) = machine_at_best(runs) else {
        return;
    };
    for (missed, name, rate) in goals {
        let Some(rate) = rate.filter(|r| missed && *r > 0.0) else {
            continue;
        };
        let budget = busy / rate * 1e6;
        out.push_str(&format!(
            "- What {name} asks of the machine: {}/s. At the intake's highest passing rates the \
             whole machine was {:.0} % busy, at {us:.0} µs of its CPU per webhook (medians of the \
             runs; every process counted, the load generator's too). As busy as that, {}/s \
             allows {budget:.0} µs per webhook{}; at today's {us:.0} µs it would keep {:.2} of \
             the machine's {machine_cores} cores busy.\n",
            thousands(rate),
            busy / machine_cores * 100.0,
            thousands(rate),
            if budget < us {
                format!(", {:.0} % less", (1.0 - budget / us) * 100.0)
            } else {
                String::new()
            },
            rate * us / 1e6,
        ));
    }
}

fn push_diagnosis(out: &mut String, runs: &[Run], connections: &str, machine_cores: f64) {
    let conns: f64 = connections.parse().unwrap_or(16.0);
    let rows: Vec<(usize, &crate::search::Step)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i + 1, r.intake.as_ref()?.best()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("## The intake at its highest passing rate\n\n");
    out.push_str(&format!(
        "The CPU each process used during the step that set the intake's highest passing rate, \
         and the control plane's own account of a webhook's time (its metrics \
         `switchyard_http_request_duration_seconds` for `POST /webhooks/github` and \
         `switchyard_intake_publish_duration_seconds`, read before and after the step). With \
         {connections} connections each carrying one request at a time, a mean time of *h* in \
         the handler allows at most {connections} / *h* webhooks per second however idle the \
         CPU is.\n\n"
    ));
    out.push_str(&format!(
        "| run | rate | control plane | NATS server | PostgreSQL | load generator | whole machine | in the handler | of it waiting for JetStream | {connections} / handler time |\n|---|---|---|---|---|---|---|---|---|---|\n"
    ));
    let mut wait_shares = Vec::new();
    let mut machine = Vec::new();
    for (run, step) in &rows {
        let cores = |name: &str| step.run.cpu.get(name).map_or(0.0, |c| c.cores);
        let (handler, publish) = step.run.server.as_ref().map_or((None, None), |t| {
            (Some(t.handler_mean_ms), Some(t.publish_mean_ms))
        });
        if let (Some(h), Some(p)) = (handler, publish)
            && h > 0.0
        {
            wait_shares.push(p / h);
        }
        machine.push(cores(MACHINE));
        out.push_str(&format!(
            "| {run} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} of {machine_cores} | {} | {} | {} |\n",
            fmt(Some(step.rate), Unit::Rate),
            cores("control-plane"),
            cores("nats-server"),
            cores("postgres"),
            cores("loadtest"),
            cores(MACHINE),
            fmt(handler, Unit::Ms),
            fmt(publish, Unit::Ms),
            fmt(
                handler.filter(|h| *h > 0.0).map(|h| conns / h * 1000.0),
                Unit::Rate
            ),
        ));
    }
    out.push_str("\nCPU in cores (CPU seconds per second).");
    let median = |v: &[f64]| {
        Figure {
            values: v.iter().copied().map(Some).collect(),
        }
        .median()
    };
    if let (Some(wait), Some(busy)) = (median(&wait_shares), median(&machine)) {
        out.push_str(&format!(
            " At that rate the whole machine was {:.0} % busy (median of the runs), and of the \
             time a webhook spent in the control plane's handler, {:.0} % went to waiting for \
             JetStream's acknowledgements.",
            busy / machine_cores * 100.0,
            wait * 100.0
        ));
    }
    out.push_str("\n\n");
}

fn push_profile(
    out: &mut String,
    dir: &Path,
    commands: &BTreeMap<String, String>,
    machine_cores: f64,
) {
    let self_text = std::fs::read_to_string(dir.join("profile-self.txt")).unwrap_or_default();
    let samples = parse_self(&self_text);
    out.push_str("## Where the intake's time goes\n\n");
    if samples.is_empty() {
        out.push_str("No profile was taken (perf was not available).\n\n");
        return;
    }
    let run: Option<RunReport> = load(&dir.join("profile-run.json")).ok().flatten();
    out.push_str(&format!(
        "A CPU profile of the control plane alone (perf, software clock, {}), while it received \
         webhooks at a fixed rate below its highest passing one{}:\n\n",
        "DWARF call graphs",
        run.as_ref().map_or_else(String::new, |r| format!(
            " ({}; p99 {:.2} ms; {})",
            r.schedule.description,
            r.latency.p99_ms,
            cpu_line(r)
        ))
    ));
    if let Some(c) = commands.get("profile") {
        out.push_str(&format!("```sh\n{c}\n```\n\n"));
    }
    if let Some(r) = run.as_ref().filter(|r| r.throughput_rps > 0.0) {
        push_cpu_per_webhook(out, r, machine_cores);
    }
    let mut by_category: BTreeMap<&str, f64> = BTreeMap::new();
    for s in &samples {
        *by_category.entry(category(s)).or_default() += s.percent;
    }
    let mut cats: Vec<(&str, f64)> = by_category.into_iter().collect();
    cats.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.push_str("Self time by what it is spent on:\n\n| share | spent on |\n|---|---|\n");
    for (c, p) in &cats {
        out.push_str(&format!("| {p:.1} % | {c} |\n"));
    }
    out.push_str(
        "\nThe hottest symbols (self time):\n\n| share | where | symbol |\n|---|---|---|\n",
    );
    for s in samples.iter().take(20) {
        out.push_str(&format!(
            "| {:.2} % | {} | `{}` |\n",
            s.percent,
            s.dso,
            short(&s.symbol).replace('|', "\\|")
        ));
    }
    let children = parse_children(
        &std::fs::read_to_string(dir.join("profile-children.txt")).unwrap_or_default(),
    );
    let mut key: Vec<(&str, f64)> = KEY_FUNCTIONS
        .iter()
        .filter_map(|(label, needle)| {
            children
                .iter()
                .filter(|s| s.symbol.contains(needle))
                .map(|s| s.percent)
                .reduce(f64::max)
                .map(|p| (*label, p))
        })
        .collect();
    key.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !key.is_empty() {
        out.push_str(
            "\nSwitchyard's steps by the time spent in them and in what they call (inclusive; \
             a step inside another counts in both):\n\n| share | step |\n|---|---|\n",
        );
        for (label, p) in &key {
            out.push_str(&format!("| {p:.1} % | {label} |\n"));
        }
    }
    if let Some((top, share)) = cats.first() {
        out.push_str(&format!(
            "\nThe largest share of the control plane's own CPU goes to **{top}** ({share:.1} %)"
        ));
        // The handler and the pipeline contain the rest; name the largest step inside them.
        if let Some((label, p)) = key
            .iter()
            .find(|(l, _)| !l.starts_with("the webhook handler"))
        {
            out.push_str(&format!(
                "; of the steps inside Switchyard, {label} holds the most ({p:.1} % inclusive)"
            ));
        }
        out.push_str(".\n\n");
    }
}

/// What each process spent per webhook during the profiled run: the figure to watch when
/// changing the intake, steadier than the highest passing rate.
fn push_cpu_per_webhook(out: &mut String, run: &RunReport, machine_cores: f64) {
    let per = |cores: f64| cores / run.throughput_rps * 1e6;
    out.push_str(
        "CPU per webhook during that run, by process (perf was sampling the control plane \
         meanwhile, which adds a little to its share):\n\n| process | cores | CPU per webhook |\n|---|---|---|\n",
    );
    let machine = run.cpu.get(MACHINE).map_or(0.0, |c| c.cores);
    let mut watched = 0.0;
    for (name, c) in run.cpu.iter().filter(|(k, _)| k.as_str() != MACHINE) {
        watched += c.cores;
        out.push_str(&format!(
            "| {name} | {:.2} | {:.0} µs |\n",
            c.cores,
            per(c.cores)
        ));
    }
    let rest = (machine - watched).max(0.0);
    out.push_str(&format!(
        "| everything else | {rest:.2} | {:.0} µs |\n| **whole machine** | **{machine:.2}** | **{:.0} µs** |\n\n",
        per(rest),
        per(machine)
    ));
    out.push_str(&format!(
        "At {:.0} µs of the machine's CPU per webhook, its {machine_cores} cores could not \
         receive more than about {} webhooks/s even fully busy.\n\n",
        per(machine),
        thousands(machine_cores * 1e6 / per(machine).max(1.0))
    ));
}

/// Steps of the webhook path, found in the inclusive profile by a part of their symbol.
const KEY_FUNCTIONS: &[(&str, &str)] = &[
    (
        "the webhook handler, all of it (`http/routes/webhooks.rs` `receive_webhook`)",
        "control_plane::http::routes::webhooks::receive_webhook",
    ),
    (
        "parsing the whole payload (`intake/event.rs` `Payload::parse`: sonic-rs)",
        // The parse's generic entry with `Payload` as its type argument, whatever its name
        // (sonic-rs inlines `from_slice` into `from_trait<Read, Payload>`).
        "control_plane::intake::event::Payload>",
    ),
    (
        "the pipeline after parsing (`intake/pipeline.rs` `accept`)",
        "control_plane::intake::pipeline::accept",
    ),
    (
        "publishing and waiting for the acknowledgements (`queue/publisher.rs` `publish_delivery`)",
        "control_plane::queue::publisher::publish_delivery",
    ),
    (
        "the signature check (`intake/signature.rs` `verify`)",
        "control_plane::intake::signature::verify",
    ),
    (
        "the delivery recorder, writing rows to the shard (`queue/recorder.rs` `run`)",
        "control_plane::queue::recorder::run",
    ),
    (
        "the org's webhook rate limit (`billing/limits.rs` `Limiter::webhook`)",
        "control_plane::billing::limits::Limiter::webhook",
    ),
    (
        "serializing the delivery record (`protocol::delivery::DeliveryRecord`)",
        "Serialize for protocol::delivery::DeliveryRecord",
    ),
];

/// Renders docs/benchmarks.md from `dir`.
pub fn render(dir: &Path) -> anyhow::Result<String> {
    let meta: BTreeMap<String, String> = tsv(&dir.join("meta.tsv")).into_iter().collect();
    let command_list = tsv(&dir.join("commands.tsv"));
    let commands: BTreeMap<String, String> = command_list.iter().cloned().collect();
    let mut runs = Vec::new();
    for n in 1.. {
        let d = dir.join(format!("run-{n}"));
        if !d.is_dir() {
            break;
        }
        runs.push(Run {
            jetstream: load(&d.join("jetstream.json"))?,
            noop: load(&d.join("noop.json"))?,
            intake: load(&d.join("intake.json"))?,
            probot: load(&d.join("probot.json"))?,
            api: load(&d.join("api-reads.json"))?,
            onboarding: load(&d.join("onboarding.json"))?,
            mix: load(&d.join("mix.json"))?,
        });
    }
    if runs.is_empty() {
        anyhow::bail!("{} holds no run-<n>/ results", dir.display());
    }
    let get = |k: &str| meta.get(k).map_or("?", String::as_str);

    let js_pipe = Figure::of(&runs, |r| r.jetstream.as_ref().map(|j| j.pipelined.rate));
    let js_serial = Figure::of(&runs, |r| r.jetstream.as_ref().map(|j| j.serial.rate));
    let noop = Figure::of(&runs, |r| max_rate(r.noop.as_ref()));
    let intake = Figure::of(&runs, |r| max_rate(r.intake.as_ref()));
    let probot = Figure::of(&runs, |r| max_rate(r.probot.as_ref()));
    let vs_js = Figure::of(&runs, |r| {
        ratio(
            max_rate(r.intake.as_ref()),
            r.jetstream.as_ref().map(|j| j.pipelined.rate),
        )
    });
    let vs_js_serial = Figure::of(&runs, |r| {
        ratio(
            max_rate(r.intake.as_ref()),
            r.jetstream.as_ref().map(|j| j.serial.rate),
        )
    });
    let vs_noop = Figure::of(&runs, |r| {
        ratio(max_rate(r.intake.as_ref()), max_rate(r.noop.as_ref()))
    });
    let vs_probot = Figure::of(&runs, |r| {
        ratio(max_rate(r.intake.as_ref()), max_rate(r.probot.as_ref()))
    });
    let api_p50 = Figure::of(&runs, |r| r.api.as_ref().map(|a| a.latency.p50_ms));
    let api_p99 = Figure::of(&runs, |r| r.api.as_ref().map(|a| a.latency.p99_ms));
    let api_errors = Figure::of(&runs, |r| {
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        r.api.as_ref().map(|a| a.errors as f64)
    });
    let onb_p50 = Figure::of(&runs, |r| r.onboarding.as_ref().map(|a| a.latency.p50_ms));
    let onb_p99 = Figure::of(&runs, |r| r.onboarding.as_ref().map(|a| a.latency.p99_ms));
    let mix_p99 = Figure::of(&runs, |r| r.mix.as_ref().map(|a| a.latency.p99_ms));

    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(&format!(
        "Written by `make bench` (`loadtest/bench.sh`) on {} at commit {}; do not edit by hand, \
         run it again. Each figure was measured {}, every time in the same run as \
         its ceilings and its peer; the tables give the median, each run's value, and the spread \
         of the runs ((max − min) / median). {}\n\n",
        get("date"),
        get("commit"),
        match runs.len() {
            1 => "once".to_owned(),
            n => format!("{n} times in a row"),
        },
        load_note(&runs, get("cores")),
    ));

    out.push_str("## Summary\n\n| figure | median | runs | spread |\n|---|---|---|---|\n");
    row(
        &mut out,
        "**Webhook intake**: the highest rate with p99 < 50 ms, every `202` acknowledged by JetStream",
        &intake,
        Unit::Rate,
    );
    row(
        &mut out,
        "— as a share of the raw JetStream ceiling, pipelined (goal ≥ 0.50)",
        &vs_js,
        Unit::Ratio,
    );
    row(
        &mut out,
        "— as a multiple of the Probot peer (goal ≥ 2.5×)",
        &vs_probot,
        Unit::Multiple,
    );
    row(
        &mut out,
        "— as a multiple of raw JetStream, one publish at a time",
        &vs_js_serial,
        Unit::Multiple,
    );
    row(
        &mut out,
        "— as a share of the HTTP framework's no-op handler",
        &vs_noop,
        Unit::Ratio,
    );
    row(
        &mut out,
        "Raw JetStream, acknowledged 12 KB publishes, pipelined (256 in flight)",
        &js_pipe,
        Unit::Rate,
    );
    row(
        &mut out,
        "Raw JetStream, acknowledged 12 KB publishes, one at a time",
        &js_serial,
        Unit::Rate,
    );
    row(
        &mut out,
        "HTTP framework's no-op handler (axum on Switchyard's server loop): the highest rate with p99 < 50 ms",
        &noop,
        Unit::Rate,
    );
    row(
        &mut out,
        "Probot peer (verifies signatures, persists nothing): the highest rate with p99 < 50 ms",
        &probot,
        Unit::Rate,
    );
    let api_rate = get("api-rate");
    row(
        &mut out,
        &format!("Org API reads with a JWT at {api_rate}/s: p50"),
        &api_p50,
        Unit::Ms,
    );
    row(
        &mut out,
        &format!("Org API reads with a JWT at {api_rate}/s: p99"),
        &api_p99,
        Unit::Ms,
    );
    row(&mut out, "Org API reads: errors", &api_errors, Unit::Count);
    row(
        &mut out,
        "Onboarding bursts (`POST /v1/orgs`, 20 at once every 2 s): p50",
        &onb_p50,
        Unit::Ms,
    );
    row(&mut out, "Onboarding bursts: p99", &onb_p99, Unit::Ms);
    row(
        &mut out,
        "Mix (90 % webhooks, 9 % API reads, 1 % onboarding) at 500/s: p99",
        &mix_p99,
        Unit::Ms,
    );
    out.push('\n');

    let noop_generator = Figure::of(&runs, |r| {
        r.noop
            .as_ref()?
            .best()?
            .run
            .cpu
            .get("loadtest")
            .map(|c| c.cores)
    });
    if let Some(g) = noop_generator.median()
        && g >= 0.75
    {
        out.push_str(&format!(
            "At the no-op handler's highest passing rate the load generator's one thread was \
             {:.0} % busy (median) and the two shared the machine's cores: that figure is as much \
             the generator's limit as the framework's, a lower bound on the framework's own \
             ceiling (and the intake's share of it an upper bound).\n\n",
            g * 100.0
        ));
    }
    let ceiling_spread = [&js_pipe, &js_serial, &probot]
        .iter()
        .filter_map(|f| f.spread())
        .fold(0.0_f64, f64::max);
    if ceiling_spread > 0.2 {
        out.push_str(&format!(
            "The ceilings and the peer themselves varied by up to {:.0} % from run to run while \
             no other process was busy (see [CPU at the highest passing \
             rates](#cpu-at-the-highest-passing-rates)): the same work took more CPU time in \
             some runs than in others, as on a virtual machine whose host is shared. Each ratio \
             compares figures measured minutes apart in the same run.\n\n",
            ceiling_spread * 100.0
        ));
    }
    out.push_str("### Against the goals\n\n");
    let verdict = |fig: &Figure, goal: f64| match fig.median() {
        Some(m) if m >= goal => "**met**",
        Some(_) => "**missed**",
        None => "**not measured**",
    };
    out.push_str(&format!(
        "- Intake at least {:.0} % of the pipelined JetStream ceiling: {} (median {}).\n",
        GOAL_JETSTREAM_SHARE * 100.0,
        verdict(&vs_js, GOAL_JETSTREAM_SHARE),
        fmt(vs_js.median(), Unit::Ratio)
    ));
    out.push_str(&format!(
        "- Intake at least {GOAL_PROBOT_MULTIPLE}× the Probot peer: {} (median {}).\n",
        verdict(&vs_probot, GOAL_PROBOT_MULTIPLE),
        fmt(vs_probot.median(), Unit::Multiple)
    ));
    out.push_str(
        "- For reference, the baseline's figures, measured before Switchyard existed: raw JetStream ≈ \
         26,000 acknowledged 12 KB publishes/s pipelined and ≈ 4,400/s one at a time, Probot ≈ \
         4,800 webhooks/s over 16 connections. The ratios above use the ceilings and the peer as \
         measured in the same run instead.\n",
    );
    let missed = vs_js.median().is_none_or(|m| m < GOAL_JETSTREAM_SHARE)
        || vs_probot.median().is_none_or(|m| m < GOAL_PROBOT_MULTIPLE);
    let machine_cores: f64 = get("cores").parse().unwrap_or(2.0);
    if missed {
        push_goal_cost(
            &mut out,
            &runs,
            [
                (
                    vs_js.median().is_some_and(|m| m < GOAL_JETSTREAM_SHARE),
                    "the JetStream share",
                    js_pipe.median().map(|r| r * GOAL_JETSTREAM_SHARE),
                ),
                (
                    vs_probot.median().is_some_and(|m| m < GOAL_PROBOT_MULTIPLE),
                    "the Probot multiple",
                    probot.median().map(|r| r * GOAL_PROBOT_MULTIPLE),
                ),
            ],
            machine_cores,
        );
        out.push_str(
            "- Where the intake falls short, [Where the intake's time goes](#where-the-intakes-time-goes) \
             shows what its CPU is spent on.\n",
        );
    }
    out.push('\n');

    push_machine(&mut out, &meta);

    out.push_str("## Method\n\n");
    let payloads = runs
        .iter()
        .find_map(|r| r.intake.as_ref())
        .map_or_else(String::new, |s| s.scenario.clone());
    out.push_str(&format!(
        "- **Open loop.** Every request's due time is fixed before the run; {} keep-alive HTTP/1.1 \
         connections take requests from a shared queue, one in flight each. Latency is measured \
         from the due time to the last byte of the answer, so time spent waiting for a free \
         connection counts (no coordinated omission). Latencies go into HDR histograms \
         (1 µs – 120 s, 3 significant digits).\n",
        get("connections")
    ));
    out.push_str(&format!(
        "- **Highest passing rate.** Constant-rate steps of {} each, after a 2 s unmeasured \
         warm-up: from 1,000/s, doubling until a step fails, then bisecting between the best pass \
         and the lowest failure until they are within 5 % (at most 10 steps). A step passes when \
         its p99 is under 50 ms, every answer is a 2xx, at least 99 % of its planned requests \
         are answered, and — for the intake — the messages the deliveries stream stored during \
         the step hold exactly as many delivery records as there were `202`s, no delivery \
         id among them twice (read back after the step), and the jobs stream's sequence grew by exactly the number of job ids \
         answered. A step that fails on its tail alone (its median well \
         inside the bound, every request answered, the rate kept up) is tried once more at the \
         same rate, so that one hiccup of a shared machine does not end a search; a step is \
         stopped as soon as more than 1 % of its requests are 50 ms late (its p99 can no longer \
         pass), so that an overload does not leave a backlog to the next step.\n",
        get("step")
    ));
    out.push_str(&format!(
        "- **The same webhooks to every receiver.** {payloads}: every example of npm \
         `@octokit/webhooks-examples` but `ping` and the installation lifecycle events, each with \
         its `installation` set to the one the scenario bound, signed with HMAC-SHA256 as GitHub \
         does. The intake, the no-op server and Probot receive the same requests.\n"
    ));
    let threads = match get("cp-threads") {
        "0" | "?" => "one runtime thread per core".to_owned(),
        "1" => "one runtime thread (`[server] worker_threads = 1`, as the local stack runs it)"
            .to_owned(),
        n => format!("{n} runtime threads (`[server] worker_threads = {n}`)"),
    };
    // Settings tried on top of the defaults (`BENCH_CP_EXTRA`), as they were given.
    let extra = match meta.get("cp-extra").map(|e| e.trim()) {
        Some(e) if !e.is_empty() => format!("; and, from `BENCH_CP_EXTRA`, `{e}`"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "- **The control plane under test** is a release build started by the benchmark with \
         the committed defaults except: its own catalog and shard databases on the local \
         stack's PostgreSQL, NATS namespace `bench` on the stack's `us-east-1` NATS server (one \
         Go scheduler thread, `GOMAXPROCS=1`, as the stack starts it), its own Redis key \
         prefix, logs at `warn` (intake logs every request at `info`), delivery recovery off, \
         and {threads}{extra}. Its org, the org's installation and, for the API reads, an \
         access token are set up through the API at the start of each scenario. No worker \
         runs: jobs stay queued in the work-queue stream.\n"
    ));
    out.push_str(
        "- **Raw JetStream ceiling**: 12,288-byte messages to a stream of its own created with \
         the settings of a region's `JOBS` stream (file storage, work-queue retention, 1 h \
         duplicate window, a message id on every publish), on the same NATS server as the \
         intake; 4 s pipelined with 256 publishes awaiting acknowledgement, then 4 s one at a \
         time. (Intake publishes smaller messages — a delivery record, plus a job for an issue \
         labeled `bot` — but the ceiling is the one the baseline was set against.)\n",
    );
    out.push_str(&format!(
        "- **The Probot peer** (`loadtest/peers/probot/`, probot {}) is Probot's \
         `createNodeMiddleware` on `node:http` with the same webhook secret: it verifies each \
         signature, hands the event to a handler that does nothing, and answers `200`; logs at \
         `warn`.\n",
        get("probot")
    ));
    out.push_str("- Ratios are taken within each run, then their median.\n\n");

    out.push_str(
        "## Commands\n\n`make bench` runs `loadtest/bench.sh`, which starts what is \
         described above and runs, three times, each of the following (`OPERATOR_TOKEN` and \
         `WEBHOOK_SECRET` are the benchmark control plane's, in the environment):\n\n```sh\n",
    );
    for (name, cmd) in &command_list {
        out.push_str(&format!("# {name}\n{cmd}\n"));
    }
    out.push_str("```\n\n");

    out.push_str("## Runs in detail\n\n");
    for (i, r) in runs.iter().enumerate() {
        out.push_str(&format!("### Run {}\n\n", i + 1));
        if let Some(j) = &r.jetstream {
            out.push_str(&format!(
                "Raw JetStream: pipelined {} ({:.0} MB/s, ack p99 {:.2} ms), one at a time {} (ack p50 {:.2} ms, p99 {:.2} ms); {} errors.\n\n",
                fmt(Some(j.pipelined.rate), Unit::Rate),
                j.pipelined.mb_per_s,
                j.pipelined.ack_latency.p99_ms,
                fmt(Some(j.serial.rate), Unit::Rate),
                j.serial.ack_latency.p50_ms,
                j.serial.ack_latency.p99_ms,
                j.pipelined.errors + j.serial.errors
            ));
        }
        for (title, s) in [
            ("Intake", &r.intake),
            ("No-op handler", &r.noop),
            ("Probot peer", &r.probot),
        ] {
            if let Some(s) = s {
                out.push_str(&format!(
                    "{title}: highest passing rate {}{}.\n\n",
                    fmt(s.max_rate, Unit::Rate),
                    if s.capped { " (the search's cap)" } else { "" }
                ));
                steps_table(&mut out, s);
            }
        }
        for (title, run) in [
            ("Org API reads", &r.api),
            ("Onboarding bursts", &r.onboarding),
            ("Mix", &r.mix),
        ] {
            if let Some(run) = run {
                let l = &run.latency;
                out.push_str(&format!(
                    "{title} ({}): {} of {} answered 2xx, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms{}.\n",
                    run.schedule.description,
                    run.ok,
                    run.schedule.planned_requests,
                    l.p50_ms,
                    l.p90_ms,
                    l.p99_ms,
                    l.p999_ms,
                    l.max_ms,
                    if run.errors > 0 {
                        format!("; errors: {:?} {:?}", run.statuses, run.transport_errors)
                    } else {
                        String::new()
                    }
                ));
                if run.by_kind.len() > 1 {
                    for (k, s) in &run.by_kind {
                        out.push_str(&format!(
                            "  - `{k}`: {} answered, p50 {:.2} ms, p99 {:.2} ms\n",
                            s.count, s.p50_ms, s.p99_ms
                        ));
                    }
                }
                out.push('\n');
            }
        }
    }

    out.push_str("## CPU at the highest passing rates\n\n");
    out.push_str("Cores used (CPU seconds per second) during the step that set each highest passing rate, per process; \"everything else\" is the machine's total less the processes listed.\n\n| run | measurement | rate | cores |\n|---|---|---|---|\n");
    for (i, r) in runs.iter().enumerate() {
        for (title, s) in [
            ("intake", &r.intake),
            ("no-op handler", &r.noop),
            ("Probot", &r.probot),
        ] {
            if let Some(best) = s.as_ref().and_then(|s| s.best()) {
                out.push_str(&format!(
                    "| {} | {title} | {} | {} |\n",
                    i + 1,
                    fmt(Some(best.rate), Unit::Rate),
                    cpu_line(&best.run)
                ));
            }
        }
        if let Some(a) = &r.api {
            out.push_str(&format!(
                "| {} | org API reads | {} | {} |\n",
                i + 1,
                fmt(Some(a.schedule.mean_rate), Unit::Rate),
                cpu_line(a)
            ));
        }
    }
    out.push('\n');

    push_diagnosis(&mut out, &runs, get("connections"), machine_cores);
    push_profile(&mut out, dir, &commands, machine_cores);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jetstream::Phase;
    use crate::procstat::CpuUse;
    use crate::schedule::ScheduleInfo;
    use crate::search::{Criteria, Step};
    use crate::stats::Summary;

    /// A run's report at `rate` per second whose processes used `cpu` cores.
    fn run_at(rate: f64, cpu: &[(&str, f64)]) -> RunReport {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small positive test rates"
        )]
        let n = (rate * 3.0) as u64;
        RunReport {
            scenario: "webhooks".into(),
            target: "http://127.0.0.1:1".into(),
            connections: 16,
            schedule: ScheduleInfo {
                description: format!("constant {rate}/s for 3s"),
                planned_requests: n,
                planned_duration_s: 3.0,
                mean_rate: rate,
                truncated: false,
            },
            sent: n,
            ok: n,
            errors: 0,
            unfinished: 0,
            statuses: BTreeMap::from([("202".to_owned(), n)]),
            transport_errors: BTreeMap::new(),
            elapsed_s: 3.0,
            throughput_rps: rate,
            latency: Summary {
                count: n,
                p50_ms: 2.0,
                p90_ms: 5.0,
                p99_ms: 20.0,
                p999_ms: 30.0,
                max_ms: 40.0,
                mean_ms: 3.0,
            },
            by_kind: BTreeMap::new(),
            jobs: 0,
            dispatch_lag_max_ms: 0.1,
            stream_checks: Vec::new(),
            cpu: cpu
                .iter()
                .map(|(name, cores)| {
                    (
                        (*name).to_owned(),
                        CpuUse {
                            cpu_s: cores * 3.0,
                            cores: *cores,
                        },
                    )
                })
                .collect(),
            server: None,
            stopped_early: false,
        }
    }

    /// A search whose highest passing rate is `rate`, its step using `cpu`.
    fn search_to(rate: f64, cpu: &[(&str, f64)]) -> SearchReport {
        let fail = rate * 1.05;
        SearchReport {
            scenario: "webhooks".into(),
            target: "http://127.0.0.1:1".into(),
            connections: 16,
            criteria: Criteria {
                p99_ms: 50.0,
                step_s: 3.0,
                min_delivered: 0.99,
                no_errors: true,
                streams_checked: true,
            },
            steps: vec![
                Step {
                    rate,
                    pass: true,
                    retry: false,
                    why: String::new(),
                    run: run_at(rate, cpu),
                },
                Step {
                    rate: fail,
                    pass: false,
                    retry: false,
                    why: "p99 over 50 ms".into(),
                    run: run_at(fail, cpu),
                },
            ],
            max_rate: Some(rate),
            first_failure: Some(fail),
            capped: false,
        }
    }

    fn jetstream_at(pipelined: f64, serial: f64) -> JetstreamReport {
        let phase = |mode: &str, in_flight, rate| Phase {
            mode: mode.into(),
            in_flight,
            acked: 1000,
            errors: 0,
            elapsed_s: 1.0,
            rate,
            mb_per_s: rate * 0.012,
            ack_latency: Summary::default(),
        };
        JetstreamReport {
            server: "nats://127.0.0.1:1".into(),
            payload_bytes: 12 * 1024,
            stream_settings: "file".into(),
            pipelined: phase("pipelined", 256, pipelined),
            serial: phase("serial", 1, serial),
        }
    }

    #[test]
    fn a_report_states_each_figure_its_goals_and_what_a_missed_one_asks_of_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta.tsv"),
            "date\t2026-01-01 00:00 UTC\ncommit\tabc1234\ncores\t2\nconnections\t16\n\
             calibration-before\tHMAC-SHA256 of 10 KB 9.00 µs; loopback TCP round trip 20.0 µs\n\
             calibration-after\tHMAC-SHA256 of 10 KB 9.50 µs; loopback TCP round trip 21.0 µs\n",
        )
        .unwrap();
        // Intake 12,000/s in the middle run: 0.30 of JetStream (missed), 3× Probot (met).
        for (n, intake, js, probot) in [
            (1, 11_000.0, 40_000.0, 4_000.0),
            (2, 12_000.0, 40_000.0, 4_000.0),
            (3, 13_000.0, 44_000.0, 4_400.0),
        ] {
            let run = dir.path().join(format!("run-{n}"));
            std::fs::create_dir(&run).unwrap();
            let write = |name: &str, value: serde_json::Value| {
                std::fs::write(run.join(name), value.to_string()).unwrap();
            };
            // The whole machine at 1.5 cores: 136, 125 and 115 µs per webhook.
            let cpu = [("control-plane", 0.7), ("loadtest", 0.3), (MACHINE, 1.5)];
            write(
                "intake.json",
                serde_json::to_value(search_to(intake, &cpu)).unwrap(),
            );
            write(
                "probot.json",
                serde_json::to_value(search_to(probot, &[("probot", 0.9)])).unwrap(),
            );
            write(
                "jetstream.json",
                serde_json::to_value(jetstream_at(js, js / 4.0)).unwrap(),
            );
        }
        let md = render(dir.path()).unwrap();
        assert!(md.contains("at commit abc1234"), "{md}");
        assert!(
            md.contains(
                "before the runs HMAC-SHA256 of 10 KB 9.00 µs; loopback TCP round trip 20.0 µs; \
                 after them HMAC-SHA256 of 10 KB 9.50 µs; loopback TCP round trip 21.0 µs."
            ),
            "{md}"
        );
        assert!(
            md.contains("| **12,000/s** | 11,000/s / 12,000/s / 13,000/s | 17 % |"),
            "{md}"
        );
        assert!(
            md.contains(
                "Intake at least 50 % of the pipelined JetStream ceiling: **missed** (median 0.30)"
            ),
            "{md}"
        );
        assert!(
            md.contains("Intake at least 2.5× the Probot peer: **met** (median 2.95×)"),
            "{md}"
        );
        // Half of the median ceiling (40,000/s), with the machine 75 % busy (1.5 cores) as at
        // the intake's best: 75 µs per webhook against the median 125 µs, 40 % less.
        assert!(
            md.contains(
                "What the JetStream share asks of the machine: 20,000/s. At the intake's highest passing rates the whole machine was 75 % busy, at 125 µs of its CPU per webhook"
            ),
            "{md}"
        );
        assert!(
            md.contains("20,000/s allows 75 µs per webhook, 40 % less; at today's 125 µs it would keep 2.50 of the machine's 2 cores busy."),
            "{md}"
        );
        // A goal that was met asks nothing.
        assert!(!md.contains("What the Probot multiple asks"), "{md}");
        // Measurements that were not run are shown as such, not as zero.
        assert!(md.contains("| Org API reads: errors | **—** |"), "{md}");
    }

    #[test]
    fn medians_and_spreads_of_three_runs() {
        let f = Figure {
            values: vec![Some(90.0), Some(110.0), Some(100.0)],
        };
        assert_eq!(f.median(), Some(100.0));
        assert!((f.spread().unwrap() - 0.2).abs() < 1e-9);
        let missing = Figure {
            values: vec![None, Some(4.0), Some(2.0)],
        };
        assert_eq!(missing.median(), Some(3.0));
        assert_eq!(Figure { values: vec![None] }.median(), None);
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(fmt(Some(0.3149), Unit::Ratio), "0.31");
        assert_eq!(fmt(Some(2.5), Unit::Multiple), "2.50×");
        assert_eq!(fmt(None, Unit::Rate), "—");
    }

    #[test]
    fn perf_reports_parse_into_samples_and_categories() {
        let text = "# Samples: 3K\n#\n    12.50%  control-plane      [.] serde_json::de::Deserializer<R>::parse_whitespace\n     8.00%  [kernel.kallsyms]  [k] copy_user_enhanced_fast_string\n     1.00%  libc.so.6          [.] malloc\n";
        let s = parse_self(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].percent, 12.5);
        assert!(category(&s[0]).starts_with("JSON"));
        assert!(category(&s[1]).starts_with("the kernel"));
        assert!(category(&s[2]).starts_with("memory"));
        let sonic = parse_self(
            "     5.00%  control-plane      [.] sonic_rs::parser::Parser<R>::skip_one\n",
        );
        assert!(category(&sonic[0]).starts_with("JSON"));
        let children =
            "    45.10%     0.20%  [.] control_plane::intake::pipeline::accept::{{closure}}\n";
        let c = parse_children(children);
        assert_eq!(c[0].percent, 45.1);
        assert!(c[0].symbol.starts_with("control_plane::intake"));
    }

    #[test]
    fn the_payload_step_is_found_under_the_name_perf_gives_it() {
        let (_, needle) = KEY_FUNCTIONS
            .iter()
            .find(|(label, _)| label.starts_with("parsing the whole payload"))
            .unwrap();
        // As perf reported the parse at a587c14 (sonic-rs, `Payload::parse` inlined), and
        // as it reported serde_json's before.
        for line in [
            "     8.88%     0.00%  [.] from_trait<sonic_rs::reader::Read, control_plane::intake::event::Payload> (inlined)\n",
            "    17.00%     0.00%  [.] serde_json::de::from_slice<control_plane::intake::event::Payload>\n",
        ] {
            let c = parse_children(line);
            assert!(c[0].symbol.contains(needle), "{line}");
        }
        let other = parse_children(
            "     9.00%     0.00%  [.] control_plane::intake::pipeline::accept::{{closure}}\n",
        );
        assert!(!other[0].symbol.contains(needle));
    }
}
