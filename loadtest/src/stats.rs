//! What a run measured: HDR histograms of latency (recorded in microseconds, three
//! significant digits), answers by status, transport errors, and the report of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::ServerTimes;
use crate::procstat::CpuUse;
use crate::schedule::ScheduleInfo;

/// The longest latency a histogram tells apart; longer ones are recorded as this.
const HIGHEST_US: u64 = 120_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .expect("1 µs to 120 s with 3 significant digits is a valid histogram"),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(HIGHEST_US)
            .clamp(1, HIGHEST_US);
        self.0.saturating_record(us);
    }

    pub fn add(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Summary {
        #[allow(
            clippy::cast_precision_loss,
            reason = "microsecond latencies stay far below 2^52"
        )]
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return Summary::default();
        }
        Summary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        }
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// What one connection (or a whole run, once merged) saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Latencies of the successful (2xx) answers, from each request's intended start.
    pub ok: Latencies,
    /// The same, by kind of request.
    pub by_kind: BTreeMap<&'static str, Latencies>,
    /// Answers by status code, successful ones included.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer, by cause.
    pub transport: BTreeMap<&'static str, u64>,
    /// Job ids in the answers of webhooks.
    pub jobs: u64,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.ok.add(&other.ok);
        for (k, h) in &other.by_kind {
            self.by_kind.entry(k).or_default().add(h);
        }
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        for (e, n) in &other.transport {
            *self.transport.entry(e).or_default() += n;
        }
        self.jobs += other.jobs;
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn failed(&self) -> u64 {
        let bad: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        bad + self.transport.values().sum::<u64>()
    }
}

/// Whether JetStream holds what the target said it accepted: the streams' last sequence
/// numbers before and after the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamCheck {
    pub stream: String,
    /// What the answers said was stored (`202`s, or job ids in them).
    pub expected: u64,
    /// What the stream stored during the run: delivery records (several to a message), or
    /// job messages.
    pub stored: u64,
    /// Delivery records whose id an earlier record of the run already had.
    #[serde(default)]
    pub repeated: u64,
    pub ok: bool,
}

/// The report of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub target: String,
    pub connections: usize,
    pub schedule: ScheduleInfo,
    /// Requests handed to a connection.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Non-2xx answers and requests without an answer.
    pub errors: u64,
    /// Planned requests not finished when the run was stopped.
    pub unfinished: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Requests without an answer, by cause (connect, timeout, io).
    pub transport_errors: BTreeMap<String, u64>,
    /// From the first due time to the last answer.
    pub elapsed_s: f64,
    /// 2xx answers per second of `elapsed_s`.
    pub throughput_rps: f64,
    /// Latency of the 2xx answers from each request's intended start.
    pub latency: Summary,
    /// The same, by kind of request (a mix, or the API reads' routes).
    pub by_kind: BTreeMap<String, Summary>,
    /// Job ids returned in webhook answers.
    pub jobs: u64,
    /// How late the generator itself handed out the most overdue request (its own lag;
    /// included in the latencies).
    pub dispatch_lag_max_ms: f64,
    /// JetStream's own account of what was stored, when asked for.
    #[serde(default)]
    pub stream_checks: Vec<StreamCheck>,
    /// CPU used during the run by the processes watched, in cores (CPU seconds per second).
    #[serde(default)]
    pub cpu: BTreeMap<String, CpuUse>,
    /// The control plane's own timings of the webhooks, from its metrics, when asked for.
    #[serde(default)]
    pub server: Option<ServerTimes>,
    /// Whether the run was stopped once it was certain to fail its latency bound.
    #[serde(default)]
    pub stopped_early: bool,
}

impl RunReport {
    /// Whether every request got a 2xx and every stream check agreed.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.unfinished == 0 && self.stream_checks.iter().all(|c| c.ok)
    }

    /// A few lines for people.
    pub fn human(&self) -> String {
        let l = &self.latency;
        let mut out = format!(
            "{} → {} over {} connections: {}\n  sent {}  ok {}  errors {}  unfinished {}  in {:.2}s  = {:.0} ok/s\n  latency ms (from intended start): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.scenario,
            self.target,
            self.connections,
            self.schedule.description,
            self.sent,
            self.ok,
            self.errors,
            self.unfinished,
            self.elapsed_s,
            self.throughput_rps,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
        );
        if !self.statuses.is_empty() {
            let s: Vec<String> = self
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out.push_str(&format!("  statuses: {}\n", s.join(", ")));
        }
        if !self.transport_errors.is_empty() {
            let s: Vec<String> = self
                .transport_errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out.push_str(&format!("  no answer: {}\n", s.join(", ")));
        }
        if self.by_kind.len() > 1 {
            for (k, s) in &self.by_kind {
                out.push_str(&format!(
                    "  {k}: {} ok, p50 {:.2} p99 {:.2} ms\n",
                    s.count, s.p50_ms, s.p99_ms
                ));
            }
        }
        if self.jobs > 0 {
            out.push_str(&format!("  jobs made: {}\n", self.jobs));
        }
        for c in &self.stream_checks {
            out.push_str(&format!(
                "  JetStream {}: expected {}, stored {}{} — {}\n",
                c.stream,
                c.expected,
                c.stored,
                if c.repeated > 0 {
                    format!(" ({} repeated)", c.repeated)
                } else {
                    String::new()
                },
                if c.ok { "ok" } else { "MISMATCH" }
            ));
        }
        if let Some(t) = &self.server {
            out.push_str(&format!(
                "  server: {:.2} ms per webhook in the handler, {:.2} ms of it waiting for JetStream; {:.1} delivery records per message\n",
                t.handler_mean_ms, t.publish_mean_ms, t.records_per_message
            ));
        }
        for (name, cpu) in &self.cpu {
            out.push_str(&format!("  cpu {name}: {:.2} cores\n", cpu.cores));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut h = Latencies::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn latencies_beyond_the_bound_are_kept_at_the_bound() {
        let mut h = Latencies::default();
        h.record(Duration::from_secs(3600));
        h.record(Duration::ZERO);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max_ms >= 119_000.0);
    }

    #[test]
    fn merged_tallies_add_up_and_count_failures() {
        let mut a = Tally::default();
        a.statuses.insert(202, 3);
        a.statuses.insert(503, 1);
        a.ok.record(Duration::from_millis(1));
        let mut b = Tally::default();
        b.statuses.insert(202, 2);
        b.transport.insert("timeout", 1);
        b.jobs = 4;
        a.merge(&b);
        assert_eq!(a.answered(), 6);
        assert_eq!(a.failed(), 2);
        assert_eq!(a.jobs, 4);
        assert_eq!(a.statuses[&202], 5);
    }
}
