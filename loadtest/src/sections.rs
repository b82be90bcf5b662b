//! Sections of docs/benchmarks.md written by benchmarks other than `make bench`: the workers
//! (`make bench-workers`) and tenancy (`make bench-tenancy`) benchmarks of
//! `loadtest/worker-bench.sh`. Each section sits between two markers,
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
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::jobs::JobsReport;
use crate::procstat::MACHINE;
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
