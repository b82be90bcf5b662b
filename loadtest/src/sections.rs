//! Sections of docs/benchmarks.md written by benchmarks other than `make bench`: the workers
//! (`make bench-workers`) and tenancy (`make bench-tenancy`) benchmarks of
//! `loadtest/worker-bench.sh`, and sharding at scale (`make bench-shards`,
//! `loadtest/shard-bench.sh`). Each section sits between two markers,
//!
//! ```text
//! <!-- section:NAME -->
//! …
//! <!-- /section:NAME -->
//! ```
//!
//! and is replaced in place when its benchmark runs again (appended when absent). `loadtest
//! report` (`make bench`) rewrites the rest of the file and carries these sections over.
//!
//! What each reads from the benchmark's directory:
//!
//! ```text
//! meta.tsv                     machine, versions, settings (name<TAB>value)
//! commands.tsv                 the commands as run (name<TAB>command)
//! jobs.json                    workers: the report of `loadtest jobs`
//! criterion/<bench>.json       tenancy: criterion's estimates.json of each cargo bench
//! api-org-<n>.json             tenancy: `loadtest run` of GET /v1/orgs/{org}, run n
//! criterion/locate-<r>.json    shards: criterion's estimates of `ShardMap::locate`, r ranges
//! criterion/new-<r>.json       shards: the same of `ShardMap::new`
//! map-<n>.json                 shards: `loadtest shard-map` on the loaded catalog, run n
//! map-many-<n>.json            shards: the same once many ranges were added
//! onboarding-{empty,loaded}-<n>.json  shards: `loadtest search --scenario onboarding`, run n
//! placement-{before,after}.tsv shards: per shard, ranges, ids handed out, orgs, tenants
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::bench::thousands;
use crate::jobs::JobsReport;
use crate::procstat::MACHINE;
use crate::search::SearchReport;
use crate::shardmap::{ShardMapReport, Spread};
use crate::stats::RunReport;

fn begin(name: &str) -> String {
    format!("<!-- section:{name} -->")
}

fn end(name: &str) -> String {
    format!("<!-- /section:{name} -->")
}

/// The marked sections of `doc`, in order: (name, text including its markers).
pub fn sections(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find("<!-- section:") {
        let after = &rest[at + "<!-- section:".len()..];
        let Some(close) = after.find(" -->") else {
            break;
        };
        let name = after[..close].to_owned();
        let end_marker = end(&name);
        let Some(stop) = rest[at..].find(&end_marker) else {
            break;
        };
        let stop = at + stop + end_marker.len();
        out.push((name, rest[at..stop].to_owned()));
        rest = &rest[stop..];
    }
    out
}

/// `doc` with the section `name` set to `body` (replaced in place, or appended).
pub fn replace(doc: &str, name: &str, body: &str) -> String {
    let block = format!("{}\n{}\n{}", begin(name), body.trim_end(), end(name));
    let (b, e) = (begin(name), end(name));
    if let Some(start) = doc.find(&b)
        && let Some(stop) = doc[start..].find(&e)
    {
        let stop = start + stop + e.len();
        return format!("{}{}{}", &doc[..start], block, &doc[stop..]);
    }
    let mut out = doc.trim_end().to_owned();
    out.push_str("\n\n");
    out.push_str(&block);
    out.push('\n');
    out
}

/// The freshly rendered `new` report, with the sections of `old` it lacks appended.
pub fn carry_over(old: &str, new: &str) -> String {
    let present: Vec<String> = sections(new).into_iter().map(|(n, _)| n).collect();
    let mut out = new.to_owned();
    for (name, text) in sections(old) {
        if !present.contains(&name) {
            out = format!("{}\n\n{}\n", out.trim_end(), text);
        }
    }
    out
}

fn tsv(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn commands(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

fn machine(out: &mut String, meta: &BTreeMap<String, String>) {
    let get = |k: &str| meta.get(k).map_or("unknown", String::as_str);
    let _ = writeln!(
        out,
        "- Machine: {} — {} cores, {}; {}. Versions: {}; {}; PostgreSQL {}; {}.",
        get("cpu"),
        get("cores"),
        get("memory"),
        get("kernel"),
        get("rustc"),
        get("nats-server"),
        get("postgres"),
        get("redis")
    );
    let _ = writeln!(
        out,
        "- Load average (1, 5, 15 min) before the benchmark started its processes {}, after {}; processes using 1 % of a core or more over 5 s just before: {}.",
        get("loadavg-before"),
        get("loadavg-after"),
        meta.get("busy-before")
            .filter(|s| !s.trim().is_empty())
            .map_or("none", String::as_str)
    );
}

fn command_block(out: &mut String, cmds: &[(String, String)]) {
    if cmds.is_empty() {
        return;
    }
    out.push_str("```sh\n");
    for (name, cmd) in cmds {
        let _ = writeln!(out, "# {name}\n{cmd}");
    }
    out.push_str("```\n\n");
}

fn cores(cpu: &BTreeMap<String, crate::procstat::CpuUse>) -> String {
    let mut parts: Vec<String> = cpu
        .iter()
        .filter(|(k, _)| k.as_str() != MACHINE)
        .map(|(k, v)| format!("{k} {:.2}", v.cores))
        .collect();
    if let Some(m) = cpu.get(MACHINE) {
        let listed: f64 = cpu
            .iter()
            .filter(|(k, _)| k.as_str() != MACHINE)
            .map(|(_, v)| v.cores)
            .sum();
        parts.push(format!(
            "everything else {:.2} (whole machine {:.2})",
            (m.cores - listed).max(0.0),
            m.cores
        ));
    }
    parts.join(", ")
}

/// The workers section from `dir`.
pub fn workers(dir: &Path) -> anyhow::Result<String> {
    let meta = tsv(&dir.join("meta.tsv"));
    let report: JobsReport = read_json(&dir.join("jobs.json"))?;
    let get = |k: &str| meta.get(k).map_or("unknown", String::as_str);
    let mut out = String::new();
    out.push_str("## Workers: from a webhook's `202` to its job running\n\n");
    let _ = writeln!(
        out,
        "Written by `make bench-workers` (`loadtest/worker-bench.sh workers`) on {} at commit {}; do not edit by hand, run it again. One run; the other sections of this page are `make bench`'s and were not measured in the same run.\n",
        get("date"),
        get("commit")
    );
    out.push_str("| rate | jobs | succeeded | `202` → running p50 | p95 | p99 | max | worker overhead p50 | p95 | executor (`true`) p50 | worker CPU per job | less idle |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in &report.phases {
        let _ = writeln!(
            out,
            "| {}/s × {:.0} s | {} | {}{} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            p.rate,
            p.duration_s,
            p.jobs,
            p.succeeded(),
            if p.clean() { "" } else { " (not clean)" },
            p.queue_wait.p50_ms,
            p.queue_wait.p95_ms,
            p.queue_wait.p99_ms,
            p.queue_wait.max_ms,
            p.overhead.p50_ms,
            p.overhead.p95_ms,
            p.executor.p50_ms,
            p.worker_cpu_ms_per_job,
            p.worker_cpu_ms_per_job_less_idle,
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Worker overhead is a job's `finished_at − started_at` less the executor's own `duration_ms`; worker CPU per job is the worker process's user + system CPU over the phase divided by the jobs it ran (\"less idle\": minus what the idle worker used over as long, {:.4} cores measured for 5 s before the first phase).\n",
        report.worker_idle_cores
    );
    out.push_str("| rate | webhook `202` p50 / p99 (from due time) | `202` → finished p50 / p95 | run (`finished_at − started_at`) p50 / p95 | retried | phase window | cores during the phase |\n|---|---|---|---|---|---|---|\n");
    for p in &report.phases {
        let _ = writeln!(
            out,
            "| {}/s | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {} | {:.1} s | {} |",
            p.rate,
            p.intake.p50_ms,
            p.intake.p99_ms,
            p.to_finished.p50_ms,
            p.to_finished.p95_ms,
            p.run.p50_ms,
            p.run.p95_ms,
            p.retried,
            p.window_s,
            cores(&p.cpu)
        );
    }
    out.push('\n');
    out.push_str("### Method\n\n");
    let _ = writeln!(
        out,
        "- **What runs**: the benchmark's own release control plane and one release worker (`slots = {}`), each with the committed defaults except: own catalog and shard databases on the local stack's PostgreSQL, NATS namespace `benchwk` on the stack's `us-east-1` NATS server, own Redis key prefix, logs at `warn`, and for the worker a no-op executor (`command = [\"true\"]`) with GitHub effects off (`[github.app] app_id = 0`: no clone, no token, no comment). A GitHub emulator answers the control plane's installation binding. The org is on the `enterprise` plan (rate limit 200 webhooks/s, at most 64 jobs at once).",
        get("worker-slots")
    );
    let _ = writeln!(
        out,
        "- **What is sent**: only GitHub's `issues.labeled` example (from npm `@octokit/webhooks-examples`) with its label renamed `bot` — the default trigger rule makes one `agent` job of each — with a fresh delivery id each, signed with HMAC-SHA256, open loop at a constant rate (each webhook on its own task at its due time); {} unmeasured jobs first. The phases run one after another, each once the previous phase's jobs have all ended.",
        get("warmup-jobs")
    );
    out.push_str("- **What is measured**: the wall-clock instant each `202` arrived at the generator, joined by job id with the job's row in the shard database once it has ended: `started_at` and `finished_at` (PostgreSQL's `now()` of the worker's claim and final update, same machine and clock) and `result.duration_ms` (the executor's own time around the command). Percentiles are nearest-rank over every job of the phase. CPU from `/proc/<pid>/stat` (user + system) of the worker and of the other processes, and `/proc/stat` for the whole machine, from the phase's first webhook until its last job ended.\n");
    let busiest = report
        .phases
        .iter()
        .filter_map(|p| {
            let m = p.cpu.get(MACHINE)?.cores;
            let listed: f64 = p
                .cpu
                .iter()
                .filter(|(k, _)| k.as_str() != MACHINE)
                .map(|(_, v)| v.cores)
                .sum();
            Some((m, (m - listed).max(0.0)))
        })
        .fold((0.0_f64, 0.0_f64), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    let _ = writeln!(
        out,
        "- **Contention**: during the phases the whole machine used up to {:.2} of its 2 cores, and processes other than those measured (here: other builds) up to {:.2} cores; the tails (p95, p99, max) are those of a machine without a free core, and are not the worker's alone.",
        busiest.0, busiest.1
    );
    out.push_str("- **Resolution**: `result.duration_ms` is whole milliseconds (the executor rounds down), so the worker overhead is known to about 1 ms; `/proc` CPU times are in 10 ms ticks, summed over thousands of jobs.\n");
    out.push_str("- **Caveats**: the generator, control plane, worker, NATS, PostgreSQL and Redis share the machine's 2 cores with whatever else runs (\"everything else\" above); queue wait includes the control plane's delivery recorder and the JetStream round trip to the worker's pull consumer, not only the worker. A negative wait would mean the worker started the job before the `202` reached the generator (the job is in JetStream before the answer is sent). The worker's CPU does not include its exited children (`true`), but does include forking them.\n\n");
    let _ = writeln!(out, "### Machine\n");
    machine(&mut out, &meta);
    out.push('\n');
    out.push_str("### Commands\n\n");
    command_block(&mut out, &commands(&dir.join("commands.tsv")));
    Ok(out)
}

/// Criterion's `estimates.json`: what is read of it.
#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

fn ns(x: f64) -> String {
    if x >= 1_000_000.0 {
        format!("{:.2} ms", x / 1_000_000.0)
    } else if x >= 1_000.0 {
        format!("{:.2} µs", x / 1_000.0)
    } else {
        format!("{x:.0} ns")
    }
}

/// What each cargo bench measures, by its id.
fn bench_label(id: &str) -> &'static str {
    match id {
        "member_allowed" => {
            "an org member (`developer`) asks for `org:read` in its own org: **allowed** (the cached decision of `GET /v1/orgs/{org}`)"
        }
        "member_denied" => {
            "the same member asks for `members:write`, which its role lacks: **denied** (`403`)"
        }
        "other_org_denied" => "a key of another org asks for `org:read` here: **denied**",
        "operator_allowed" => {
            "the platform operator asks for `platform:admin` in the `platform` domain: allowed"
        }
        "load_org" => {
            "reloading one org's rules after its `authz_version` moved (a cache miss, without the catalog query)"
        }
        _ => "",
    }
}

/// The tenancy section from `dir`.
pub fn tenancy(dir: &Path) -> anyhow::Result<String> {
    let meta = tsv(&dir.join("meta.tsv"));
    let get = |k: &str| meta.get(k).map_or("unknown", String::as_str);
    let mut out = String::new();
    out.push_str("## Tenancy: the authorization decision and an authorized read\n\n");
    let _ = writeln!(
        out,
        "Written by `make bench-tenancy` (`loadtest/worker-bench.sh tenancy`) on {} at commit {}; do not edit by hand, run it again. The other sections of this page were not measured in the same run.\n",
        get("date"),
        get("commit")
    );
    out.push_str("### The decision (`cargo bench -p switchyard-control-plane --bench authz`)\n\n");
    let _ = writeln!(
        out,
        "`authz::require`, the one check every handler makes, needs a live `AppState` (the catalog pool); once an org's rules are loaded it takes a lock-guarded map lookup of the org's loaded version and then `Authz::decide` — the casbin enforcer's decision, which is what is measured here, with the repository's model and role permissions and {} orgs loaded with {} keys each ({} `g` rules besides the roles' `p` rules). Criterion, {}; median of its samples with its 95 % confidence interval.\n",
        get("authz-orgs"),
        get("authz-members"),
        get("authz-grants"),
        get("criterion")
    );
    out.push_str("| decision | median | 95 % interval | mean |\n|---|---|---|---|\n");
    let mut found = false;
    if let Ok(entries) = std::fs::read_dir(dir.join("criterion")) {
        let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
                continue;
            };
            let e: Estimates = read_json(&path)?;
            found = true;
            let label = bench_label(&id);
            let _ = writeln!(
                out,
                "| `{id}`: {} | **{}** | {} – {} | {} |",
                label,
                ns(e.median.point_estimate),
                ns(e.median.confidence_interval.lower_bound),
                ns(e.median.confidence_interval.upper_bound),
                ns(e.mean.point_estimate),
            );
        }
    }
    if !found {
        out.push_str("| (no criterion results found) | | | |\n");
    }
    out.push('\n');

    out.push_str("### Authorized `GET /v1/orgs/{org}` under load\n\n");
    let mut runs: Vec<RunReport> = Vec::new();
    for n in 1..=10 {
        let path = dir.join(format!("api-org-{n}.json"));
        if !path.exists() {
            break;
        }
        runs.push(read_json(&path)?);
    }
    if runs.is_empty() {
        out.push_str("(not measured)\n\n");
    } else {
        let _ = writeln!(
            out,
            "`GET /v1/orgs/{{org}}` with the org owner's access token (a JWT, verified on every request) against the benchmark's release control plane (the same configuration as the workers benchmark's, no worker running), open loop over {} keep-alive connections, latency from each request's due time to the last byte of its answer; {} run(s) one after the other.\n",
            runs[0].connections,
            runs.len()
        );
        out.push_str("| run | schedule | answered 2xx | errors | p50 | p90 | p99 | p99.9 | max | cores |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (i, r) in runs.iter().enumerate() {
            let l = &r.latency;
            let _ = writeln!(
                out,
                "| {} | {} | {} of {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
                i + 1,
                r.schedule.description,
                r.ok,
                r.sent,
                r.errors,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms,
                cores(&r.cpu)
            );
        }
        let mut p50: Vec<f64> = runs.iter().map(|r| r.latency.p50_ms).collect();
        let mut p99: Vec<f64> = runs.iter().map(|r| r.latency.p99_ms).collect();
        p50.sort_by(f64::total_cmp);
        p99.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "\nMedian of the runs: **p50 {:.2} ms, p99 {:.2} ms**.\n",
            p50[p50.len() / 2],
            p99[p99.len() / 2]
        );
    }
    out.push_str("- **Caveats**: the generator, control plane, PostgreSQL, NATS and Redis share the machine's 2 cores with whatever else runs (\"everything else\" above). The request's time includes the JWT check, the org lookup (the control plane's org cache), the authorization and the JSON answer; the cargo bench isolates the decision.\n\n");
    let _ = writeln!(out, "### Machine\n");
    machine(&mut out, &meta);
    out.push('\n');
    out.push_str("### Commands\n\n");
    command_block(&mut out, &commands(&dir.join("commands.tsv")));
    Ok(out)
}

/// A figure measured once per run: its median, each run's value and the spread.
fn runs_row(out: &mut String, label: &str, values: &[f64], show: impl Fn(f64) -> String) {
    let spread = Spread::of(values.to_vec());
    let each: Vec<String> = values.iter().map(|v| show(*v)).collect();
    let _ = writeln!(
        out,
        "| {label} | **{}** | {} | {} |",
        if values.is_empty() {
            "—".to_owned()
        } else {
            show(spread.median)
        },
        if each.is_empty() {
            "—".to_owned()
        } else {
            each.join(" / ")
        },
        if values.len() < 2 {
            "—".to_owned()
        } else {
            format!("{:.0} %", spread.relative() * 100.0)
        }
    );
}

/// `<dir>/<stem>-1.json`, `-2.json`, … as far as they go.
fn numbered<T: for<'de> Deserialize<'de>>(dir: &Path, stem: &str) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for n in 1..=10 {
        let path = dir.join(format!("{stem}-{n}.json"));
        if !path.exists() {
            break;
        }
        out.push(read_json(&path)?);
    }
    Ok(out)
}

/// One shard's line of `placement-{empty,before,after}.tsv`: name, then ranges, ids handed
/// out, active orgs of its ranges in the catalog, tenant rows on the shard, active orgs
/// without a tenant row, tenant rows without an active org, orgs still `creating`.
fn placement(path: &Path) -> Vec<(String, Vec<i64>)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let name = parts.next()?.to_owned();
            let nums: Vec<i64> = parts.filter_map(|p| p.trim().parse().ok()).collect();
            (nums.len() == 7).then_some((name, nums))
        })
        .collect()
}

/// The highest step rate that every search passed.
fn common_rate<'a>(reports: impl Iterator<Item = &'a SearchReport>) -> Option<f64> {
    let mut common: Option<Vec<f64>> = None;
    for r in reports {
        let passed: Vec<f64> = r.steps.iter().filter(|s| s.pass).map(|s| s.rate).collect();
        common = Some(match common {
            None => passed,
            Some(c) => c.into_iter().filter(|x| passed.contains(x)).collect(),
        });
    }
    common?.into_iter().reduce(f64::max)
}

/// `a` against `b`, as a signed percentage: `+80 %`, `−12 %`.
fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        let p = (a / b - 1.0) * 100.0;
        format!("{}{:.0} %", if p < 0.0 { "−" } else { "+" }, p.abs())
    } else {
        "—".into()
    }
}

/// The sharding-at-scale section (`make bench-shards`) from `dir`.
#[allow(
    clippy::cast_precision_loss,
    reason = "counts of orgs and ids stay far below 2^52"
)]
pub fn shards(dir: &Path) -> anyhow::Result<String> {
    let meta = tsv(&dir.join("meta.tsv"));
    let get = |k: &str| meta.get(k).map_or("unknown", String::as_str);
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<f64>().ok());
    let orgs = num("orgs").unwrap_or(0.0);
    let maps: Vec<ShardMapReport> = numbered(dir, "map")?;
    let many: Vec<ShardMapReport> = numbered(dir, "map-many")?;
    let loaded: Vec<SearchReport> = numbered(dir, "onboarding-loaded")?;
    let empty: Vec<SearchReport> = numbered(dir, "onboarding-empty")?;
    let ranges = maps.first().map_or(0, |m| m.ranges);
    let many_ranges = many.first().map_or(0, |m| m.ranges);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Sharding at scale: {} orgs over {} shards\n",
        thousands(orgs),
        get("shards")
    );
    let _ = writeln!(
        out,
        "Written by `make bench-shards` (`loadtest/shard-bench.sh`) on {} at commit {}; do not edit by hand, run it again. The other sections of this page were not measured in the same run. Medians of the runs, each run's value, and the spread of the runs ((max − min) / median).\n",
        get("date"),
        get("commit")
    );
    out.push_str("| figure | median | runs | spread |\n|---|---|---|---|\n");
    let nsd = |x: f64| format!("{x:.1} ns");
    let msf = |x: f64| format!("{x:.2} ms");
    let rate = |x: f64| format!("{}/s", thousands(x));
    runs_row(
        &mut out,
        &format!(
            "**Shard lookup per request**, `ShardRouter::route` (map of {ranges} ranges loaded from the catalog, random org ids of the {}; median of 10 batches of 1,000,000 lookups per run)",
            thousands(orgs)
        ),
        &maps.iter().map(|m| m.route_ns.median).collect::<Vec<_>>(),
        nsd,
    );
    runs_row(
        &mut out,
        "— the binary search alone, `ShardMap::locate` on the same map",
        &maps.iter().map(|m| m.locate_ns.median).collect::<Vec<_>>(),
        nsd,
    );
    runs_row(
        &mut out,
        &format!(
            "— `ShardRouter::route` with {} ranges",
            thousands(many_ranges as f64)
        ),
        &many.iter().map(|m| m.route_ns.median).collect::<Vec<_>>(),
        nsd,
    );
    runs_row(
        &mut out,
        &format!(
            "**Shard-map load**, `read_map` (catalog of {} orgs, {ranges} ranges; median of 20 loads per run)",
            thousands(orgs)
        ),
        &maps
            .iter()
            .map(|m| m.read_map_ms.median)
            .collect::<Vec<_>>(),
        msf,
    );
    runs_row(
        &mut out,
        "— `ShardRouter::load` (the same, and a lazy pool per shard)",
        &maps
            .iter()
            .map(|m| m.router_load_ms.median)
            .collect::<Vec<_>>(),
        msf,
    );
    runs_row(
        &mut out,
        &format!("— `read_map` with {} ranges", thousands(many_ranges as f64)),
        &many
            .iter()
            .map(|m| m.read_map_ms.median)
            .collect::<Vec<_>>(),
        msf,
    );
    runs_row(
        &mut out,
        &format!(
            "— `ShardRouter::load` with {} ranges",
            thousands(many_ranges as f64)
        ),
        &many
            .iter()
            .map(|m| m.router_load_ms.median)
            .collect::<Vec<_>>(),
        msf,
    );
    let best_rate = |rs: &[SearchReport]| rs.iter().filter_map(|r| r.max_rate).collect::<Vec<_>>();
    runs_row(
        &mut out,
        &format!(
            "**Onboarding** (`POST /v1/orgs` through the API), {} orgs loaded: the highest constant rate with p99 < {} ms",
            thousands(orgs),
            get("p99-ms")
        ),
        &best_rate(&loaded),
        rate,
    );
    // Latencies compared at one rate that every run passed (the doubling steps are the same
    // in every run), rather than at each run's own highest rate.
    let common = common_rate(loaded.iter().chain(empty.iter()));
    let at = |rs: &[SearchReport], f: &dyn Fn(&RunReport) -> f64| -> Vec<f64> {
        let Some(rate) = common else {
            return Vec::new();
        };
        rs.iter()
            .filter_map(|r| r.steps.iter().find(|s| s.pass && s.rate == rate))
            .map(|s| f(&s.run))
            .collect()
    };
    let common_label = common.map_or_else(|| "—".to_owned(), rate);
    runs_row(
        &mut out,
        &format!("— p50 at {common_label} (a rate every run passed)"),
        &at(&loaded, &|r| r.latency.p50_ms),
        msf,
    );
    runs_row(
        &mut out,
        &format!("— p99 at {common_label}"),
        &at(&loaded, &|r| r.latency.p99_ms),
        msf,
    );
    if !empty.is_empty() {
        runs_row(
            &mut out,
            &format!(
                "— the same on the empty catalog (measured first): highest rate with p99 < {} ms",
                get("p99-ms")
            ),
            &best_rate(&empty),
            rate,
        );
        runs_row(
            &mut out,
            &format!("— p50 at {common_label}, empty catalog"),
            &at(&empty, &|r| r.latency.p50_ms),
            msf,
        );
        runs_row(
            &mut out,
            &format!("— p99 at {common_label}, empty catalog"),
            &at(&empty, &|r| r.latency.p99_ms),
            msf,
        );
    }
    let startup = |k: &str| num(k).map(|v| vec![v]).unwrap_or_default();
    runs_row(
        &mut out,
        &format!(
            "Control-plane start-up to `/readyz`, {} orgs loaded (one start)",
            thousands(orgs)
        ),
        &startup("startup-loaded-ms"),
        |x| format!("{x:.0} ms"),
    );
    runs_row(
        &mut out,
        "— on the empty catalog (one start)",
        &startup("startup-empty-ms"),
        |x| format!("{x:.0} ms"),
    );
    out.push('\n');

    // What the figures say, from the figures.
    let route = Spread::of(maps.iter().map(|m| m.route_ns.median).collect());
    let route_many = Spread::of(many.iter().map(|m| m.route_ns.median).collect());
    let load = Spread::of(maps.iter().map(|m| m.read_map_ms.median).collect());
    let load_many = Spread::of(many.iter().map(|m| m.read_map_ms.median).collect());
    let rate_loaded = Spread::of(best_rate(&loaded));
    let rate_empty = Spread::of(best_rate(&empty));
    let p50_loaded = Spread::of(at(&loaded, &|r| r.latency.p50_ms));
    let p99_loaded = Spread::of(at(&loaded, &|r| r.latency.p99_ms));
    let p50_empty = Spread::of(at(&empty, &|r| r.latency.p50_ms));
    let p99_empty = Spread::of(at(&empty, &|r| r.latency.p99_ms));
    let _ = write!(
        out,
        "In short: finding an org's shard costs a request about {:.0} ns with {ranges} ranges and {:.0} ns with {} ({}: a binary search over the ranges, which the number of orgs does not enter); loading the map costs one catalog round trip of about {:.1} ms with {ranges} ranges and {:.1} ms with {} (it reads shards and ranges, never the `org` table); with {} orgs present, onboarding keeps up with {} orgs a second (the median of the runs' highest passing rates, {}–{})",
        route.median,
        route_many.median,
        thousands(many_ranges as f64),
        pct(route_many.median, route.median),
        load.median,
        load_many.median,
        thousands(many_ranges as f64),
        thousands(orgs),
        thousands(rate_loaded.median),
        rate(rate_loaded.min),
        rate(rate_loaded.max),
    );
    if empty.is_empty() {
        out.push_str(".\n\n");
    } else {
        let _ = write!(
            out,
            ", against {} ({}–{}) on the empty catalog before the load",
            rate(rate_empty.median),
            rate(rate_empty.min),
            rate(rate_empty.max)
        );
        if common.is_some() {
            let _ = write!(
                out,
                "; at {common_label}, which every run passed, p50 / p99 were {:.1} / {:.1} ms with the orgs and {:.1} / {:.1} ms without",
                p50_loaded.median, p99_loaded.median, p50_empty.median, p99_empty.median
            );
        }
        out.push_str(
            ". The search moves in coarse steps (doubling, then bisecting to within 10 %), so one step more or less passing moves a run's rate by 10–25 %: compare the ranges, not the medians alone.\n\n",
        );
    }

    // The in-process benchmark.
    out.push_str("### In process (`cargo bench -p switchyard-protocol --bench shardmap`)\n\n");
    let _ = writeln!(
        out,
        "1,000,000 org ids over 4 shards, in equal ranges dealt to the shards in turn; `locate` of a random id of them (65,536 ids taken in turn), `new` the validation of the map read from the catalog (without the query). Criterion, {}; median of its samples with its 95 % confidence interval. The search does about log₂(ranges) comparisons; past a few thousand ranges (48 bytes each) the ranges also outgrow the CPU's caches, so the cost grows somewhat faster than the comparisons.\n",
        get("criterion")
    );
    out.push_str("| ranges | `ShardMap::locate` median | 95 % interval | `ShardMap::new` median | 95 % interval |\n|---|---|---|---|---|\n");
    let est = |name: &str| -> Option<Estimates> {
        read_json(&dir.join("criterion").join(format!("{name}.json"))).ok()
    };
    let mut layouts: Vec<u64> = std::fs::read_dir(dir.join("criterion"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("locate-")?
                        .strip_suffix(".json")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    layouts.sort_unstable();
    if layouts.is_empty() {
        out.push_str("| (no criterion results found) | | | | |\n");
    }
    for n in layouts {
        let cell = |e: Option<&Estimates>| match e {
            Some(e) => (
                format!("**{}**", ns(e.median.point_estimate)),
                format!(
                    "{} – {}",
                    ns(e.median.confidence_interval.lower_bound),
                    ns(e.median.confidence_interval.upper_bound)
                ),
            ),
            None => ("—".into(), "—".into()),
        };
        let (l, li) = cell(est(&format!("locate-{n}")).as_ref());
        let (v, vi) = cell(est(&format!("new-{n}")).as_ref());
        let _ = writeln!(out, "| {} | {l} | {li} | {v} | {vi} |", thousands(n as f64));
    }
    out.push('\n');

    // Onboarding.
    out.push_str("### Onboarding through the API\n\n");
    let _ = writeln!(
        out,
        "`loadtest search --scenario onboarding`: `POST /v1/orgs` with the operator's token, each with its own slug and owner (the saga: id placement and the org row in the catalog, tenant, default rule and audit entry on the org's shard, owner, membership, API key and activation in the catalog), open loop over {} keep-alive connections; constant-rate steps of {} from 20/s, doubling until a step fails, then bisecting to within 10 %; a step passes when its p99 (from each request's due time) is under {} ms, every answer is a `201` and it delivered its planned requests. Rates and latencies of the best passing step of each run; cores are those the processes used during that step.\n",
        get("connections"),
        get("step"),
        get("p99-ms")
    );
    out.push_str("| catalog | run | highest passing rate | lowest failing rate | `201`s in the step | p50 | p90 | p99 | max | cores | other databases' commits/s during the run |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (label, key, rs) in [
        (format!("{} orgs", thousands(orgs)), "loaded", &loaded),
        ("empty (measured first)".to_owned(), "empty", &empty),
    ] {
        for (i, r) in rs.iter().enumerate() {
            let others = meta
                .get(&format!("others-{key}-{}", i + 1))
                .map_or("—", String::as_str);
            let Some(best) = r.best() else {
                let _ = writeln!(
                    out,
                    "| {label} | {} | none passed | {} | | | | | | | {others} |",
                    i + 1,
                    r.first_failure.map_or("—".into(), rate)
                );
                continue;
            };
            let l = &best.run.latency;
            let _ = writeln!(
                out,
                "| {label} | {} | **{}** | {} | {} of {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {others} |",
                i + 1,
                rate(best.rate),
                r.first_failure.map_or_else(|| "—".into(), rate),
                best.run.ok,
                best.run.sent,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.max_ms,
                cores(&best.run.cpu)
            );
        }
    }
    out.push_str("\n`postgres` is the whole server — every backend, also those of other databases on it; the last column counts the transactions those other databases committed (each a write-ahead-log flush that onboarding's own commits may wait behind), from `pg_stat_database`.\n");
    out.push('\n');

    // Placement.
    out.push_str("### Placement\n\n");
    let empty_pl = placement(&dir.join("placement-empty.tsv"));
    let before = placement(&dir.join("placement-before.tsv"));
    let after = placement(&dir.join("placement-after.tsv"));
    let _ = writeln!(
        out,
        "`place` takes the next id of an open range on the least-loaded shard of the region (load = the ids its ranges have handed out). The orgs were loaded 27 / 27 / 23 / 23 % on purpose: every org onboarded in the runs above with them present must land on the two least-loaded shards, about evenly (within the connections plus 1 %), and every active org must have its tenant row on the shard its id maps to (compared id by id). Check: **{}**.\n",
        get("placement")
    );
    out.push_str("| shard | ranges | ids handed out before the runs | after | onboarded in the runs | active orgs | tenant rows on the shard | active orgs without a tenant row | tenant rows without an active org | orgs left `creating` |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for ((name, b), (_, a)) in before.iter().zip(after.iter()) {
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} | **{}** | {} | {} | {} | {} | {} |",
            a[0],
            thousands(b[1] as f64),
            thousands(a[1] as f64),
            thousands((a[1] - b[1]) as f64),
            thousands(a[2] as f64),
            thousands(a[3] as f64),
            a[4],
            a[5],
            a[6]
        );
    }
    out.push('\n');
    if !empty_pl.is_empty() {
        let per: Vec<String> = empty_pl
            .iter()
            .map(|(name, n)| format!("`{name}` {}", thousands(n[1] as f64)))
            .collect();
        let _ = writeln!(
            out,
            "On the empty catalog, with every shard equally loaded, the empty-catalog runs' orgs spread over all four: ids handed out {}.\n",
            per.join(", ")
        );
    }
    let leftovers: i64 = after.iter().map(|(_, a)| a[5]).sum();
    let creating: i64 = after.iter().map(|(_, a)| a[6]).sum();
    if leftovers > 0 || creating > 0 {
        let _ = writeln!(
            out,
            "**Left over**: {leftovers} tenant rows without an active org and {creating} orgs still `creating` in the catalog after all the runs (the control plane stopped). They are onboardings cut off mid-saga: when a search step is stopped early (its p99 can no longer pass) the generator drops its in-flight requests and closes their connections, the server then drops the request's handler future, and the saga's compensation — which runs only on an error — never runs. Such orgs stay invisible to the API, but their ids, catalog rows and shard rows stay behind until an operator removes them. (Measured with a build from before the saga ran in a task of its own; since then a hung-up client no longer cuts it short, and the onboarding reaper compensates any org still `creating` after 10 minutes.)\n"
        );
    }

    // The data set.
    out.push_str("### The data set\n\n");
    let insert_s = num("bulk-insert-ms").unwrap_or(0.0) / 1000.0;
    let _ = writeln!(
        out,
        "A catalog and {} shard databases of their own on the local stack's PostgreSQL; one region, {} shards with {} ranges of {} ids each, opened in turns (each shard's ranges interleave with the others'). {} orgs in the catalog, {} of them bulk-loaded with `insert … select … from generate_series` in chunks of 50,000 (catalog: `org` active, `app_user`, `membership` as owner, `api_key`; shard: `tenant`, the default `trigger_rule`, the `org.create` audit entry) in {:.0} s ({} orgs/s, catalog and shard in parallel), then `vacuum (analyze)` of every database in {:.0} s, as autovacuum would have left them; the rest onboarded through the API in the empty-catalog runs. Sizes after loading: catalog {}, each shard about {}.\n",
        get("shards"),
        get("shards"),
        ranges,
        thousands(num("range-size").unwrap_or(0.0)),
        thousands(num("catalog-orgs").unwrap_or(0.0)),
        thousands(num("bulk-orgs").unwrap_or(0.0)),
        insert_s,
        thousands(if insert_s > 0.0 {
            num("bulk-orgs").unwrap_or(0.0) / insert_s
        } else {
            0.0
        }),
        num("bulk-vacuum-ms").unwrap_or(0.0) / 1000.0,
        get("catalog-size"),
        get("shard-size")
    );

    out.push_str("### Method and caveats\n\n");
    let _ = writeln!(
        out,
        "- **`loadtest shard-map`** connects to the benchmark's catalog, reads the map once unmeasured (opens the connection), then times 20 `read_map` calls and 20 `ShardRouter::load` calls (the service's function, with the default pool settings; pools connect lazily, so no shard connection is opened). It then draws 65,536 org ids uniformly from the ids the ranges handed out and times 10 batches of 1,000,000 `route` calls and as many `locate` calls on the router's current map, in one thread, taking the ids in turn; nanoseconds per call are each batch's wall time divided by its calls, and each run's figure is the median of its batches. It checks {} of those ids that exist against the catalog (a SQL join of `org` and `shard_range`): {} on the wrong shard. Three runs one after the other; then {} closed ranges are added with SQL (the map of {} ranges) and it runs three more times.",
        maps.first().map_or(0, |m| m.checked),
        maps.iter().map(|m| m.mismatched).sum::<usize>(),
        many_ranges.saturating_sub(ranges),
        thousands(many_ranges as f64)
    );
    out.push_str("- **`route` against `locate`**: `route` adds an atomic load of the current snapshot (`arc-swap`) and builds the shard's handle — clones of its name and region (two small allocations) and of its pool and breaker (reference counts) — which is most of its cost; the search itself is a few dozen nanoseconds.\n");
    let _ = writeln!(
        out,
        "- **The control plane** is a release build with the committed defaults except: its own catalog (`[database] catalog_url`), NATS namespace, Redis key prefix, logs at `warn`, delivery recovery off, and a GitHub App key that reaches no GitHub (onboarding does not call GitHub). It was restarted after the bulk load, so the runs with the orgs present start from its cold caches (the search warms up for 2 s first). Its start-up time runs from spawning the process to the first `200` of `/readyz` (polled every 50 ms)."
    );
    let busy = Spread::of(
        loaded
            .iter()
            .chain(empty.iter())
            .filter_map(|r| r.best()?.run.cpu.get(MACHINE).map(|c| c.cores))
            .collect(),
    );
    let _ = writeln!(
        out,
        "- **What bounds onboarding here**: each org is three transactions (catalog, shard, catalog), each with a synchronous commit (`synchronous_commit = on`), and `place` holds a row lock on the range it takes an id from until its transaction commits, so concurrent onboardings that choose the same range — all those that see the same least-loaded shard — take their ids one at a time. At the best passing steps the whole machine used {:.2}–{:.2} of its 2 cores, most of it PostgreSQL and the control plane (cores column): on this machine the ceiling is largely the CPU, and another database's writes on the same server lower it (last column).",
        busy.min, busy.max
    );
    out.push_str("- **Contention**: the generator, the control plane and PostgreSQL share the machine's 2 cores with whatever else runs (\"everything else\" in the cores column); the load average before and after and the busiest other processes are below. The empty-catalog runs were measured before the bulk load and the loaded runs after it, minutes apart.\n\n");
    let _ = writeln!(out, "### Machine\n");
    machine(&mut out, &meta);
    let _ = writeln!(out, "- PostgreSQL settings: {}.", get("postgres-settings"));
    out.push('\n');
    out.push_str("### Commands\n\n");
    let _ = writeln!(
        out,
        "`make bench-shards` runs `loadtest/shard-bench.sh` (settings in its header; `BENCH_ORGS={}`, `BENCH_RUNS={}`), which runs the following (`OPERATOR_TOKEN` is the benchmark control plane's, `CATALOG_URL` its catalog's, in the environment):\n",
        get("orgs"),
        get("runs")
    );
    command_block(&mut out, &commands(&dir.join("commands.tsv")));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let doc = "# Benchmarks\n\nintro\n";
        let once = replace(doc, "workers", "## Workers\n\nfirst\n");
        assert!(once.starts_with("# Benchmarks\n\nintro\n\n<!-- section:workers -->\n## Workers"));
        assert!(once.ends_with("<!-- /section:workers -->\n"));
        let twice = replace(&once, "workers", "## Workers\n\nsecond");
        assert!(twice.contains("second") && !twice.contains("first"));
        let both = replace(&twice, "tenancy", "## Tenancy");
        let names: Vec<String> = sections(&both).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["workers", "tenancy"]);
        // Replacing the first leaves the second alone.
        let again = replace(&both, "workers", "third");
        assert!(again.contains("third") && again.contains("## Tenancy"));
    }

    #[test]
    fn the_shards_section_renders_what_a_run_left_and_dashes_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("meta.tsv"),
            "orgs\t1000000\nshards\t4\np99-ms\t100\nplacement\tok\nstartup-loaded-ms\t80\n",
        )
        .unwrap();
        let map = ShardMapReport {
            ranges: 16,
            route_ns: Spread::of(vec![80.0, 90.0]),
            ..ShardMapReport::default()
        };
        std::fs::write(p.join("map-1.json"), serde_json::to_string(&map).unwrap()).unwrap();
        let line = |handed: i64| format!("us-east-1-0\t4\t{handed}\t10\t10\t0\t0\t0\n");
        std::fs::write(p.join("placement-before.tsv"), line(10)).unwrap();
        std::fs::write(p.join("placement-after.tsv"), line(25)).unwrap();
        let text = shards(p).unwrap();
        assert!(text.starts_with("## Sharding at scale: 1,000,000 orgs over 4 shards"));
        assert!(text.contains("| **85.0 ns** | 85.0 ns | — |"), "{text}");
        assert!(
            text.contains("| `us-east-1-0` | 4 | 10 | 25 | **15** |"),
            "{text}"
        );
        assert!(text.contains("Check: **ok**"));
        assert!(!text.contains("Left over"));
    }

    #[test]
    fn the_report_carries_the_other_benchmarks_sections_over() {
        let old = replace("# Old report\n", "workers", "W");
        let new = "# New report\n\nfigures\n";
        let merged = carry_over(&old, new);
        assert!(merged.starts_with("# New report\n\nfigures\n"));
        assert!(merged.contains("<!-- section:workers -->\nW\n<!-- /section:workers -->"));
        assert!(!merged.contains("Old report"));
        assert_eq!(carry_over("# nothing marked\n", new), new);
    }
}
