//! The open loop. A dispatcher hands each planned request to a shared queue at its due
//! time; a fixed pool of HTTP/1.1 keep-alive connections takes requests from the queue one at
//! a time each, as a client's connection pool would. Latency is measured from the request's
//! due time, not from when a connection was free to send it: when the server slows down,
//! requests wait in the queue and that wait is counted (no coordinated omission).
//!
//! A run is bounded: it plans at most its schedule's requests, and whatever has not been
//! answered `drain` after the schedule's end is abandoned and reported as unfinished.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::MetricsWatch;
use crate::procstat::{Meter, Watched};
use crate::schedule::Schedule;
use crate::stats::{RunReport, StreamCheck, Tally};
use crate::target::Target;

/// One request, ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// What kind of request it is, for the per-kind latencies.
    pub kind: &'static str,
    /// Origin-form URI (path and query); the engine adds `Host`.
    pub request: Request<Full<Bytes>>,
    /// Whether the answer is a webhook's `{delivery_id, jobs}` whose jobs are counted.
    pub counts_jobs: bool,
}

/// What a run sends.
pub trait Scenario: Send + Sync {
    /// A name for reports.
    fn name(&self) -> String;
    /// The `seq`-th request of the run.
    fn request(&self, seq: u64) -> Prepared;
}

/// How a run sends.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Keep-alive connections, each with one request in flight at a time.
    pub connections: usize,
    /// How long one request may take before it is counted as a timeout.
    pub timeout: Duration,
    /// How long after the schedule's end unanswered requests are still waited for.
    pub drain: Duration,
    /// Whether to draw a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Stop the run once its outcome is certain to fail a latency bound.
    pub give_up: Option<GiveUp>,
}

/// When a run has failed for certain: more than `max_late` requests took (or have already
/// waited) `late_after` or longer. A search sets it to its p99 bound and 1 % of the step's
/// requests: past that the step's p99 cannot be under the bound, and sending the rest only
/// piles up a backlog the next step would inherit.
#[derive(Clone, Copy, Debug)]
pub struct GiveUp {
    pub late_after: Duration,
    pub max_late: u64,
}

/// What the dispatcher and the connections saw.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    pub sent: u64,
    pub unfinished: u64,
    pub elapsed: Duration,
    pub dispatch_lag_max: Duration,
    /// Whether the run was stopped by [`GiveUp`].
    pub stopped_early: bool,
}

struct Ticket {
    seq: u64,
    due: Instant,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    late: AtomicU64,
    gave_up: AtomicBool,
}

impl Counters {
    /// Counts one late request; stops the run when that makes its failure certain.
    fn late(&self, give_up: Option<GiveUp>, stop: &CancellationToken) {
        let late = self.late.fetch_add(1, Ordering::Relaxed) + 1;
        if give_up.is_some_and(|g| late > g.max_late) && !self.gave_up.swap(true, Ordering::Relaxed)
        {
            stop.cancel();
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("{0}")]
    Io(hyper::Error),
}

impl SendError {
    fn cause(&self) -> &'static str {
        match self {
            SendError::Connect(_) | SendError::Handshake(_) => "connect",
            SendError::Io(e) if e.is_incomplete_message() || e.is_canceled() => "closed",
            SendError::Io(_) => "io",
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> Result<SendRequest<Full<Bytes>>, SendError> {
    let stream = TcpStream::connect(addr).await.map_err(SendError::Connect)?;
    stream.set_nodelay(true).map_err(SendError::Connect)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the server closes it; a
        // request on it then fails and is counted there.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` on `conn` (connecting first if needed) and reads the whole answer.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: std::net::SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Bytes), SendError> {
    // A kept-alive connection the server has closed is noticed before anything is sent:
    // connect again then, as any client would.
    let ready = match conn.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        let mut sender = connect(addr).await?;
        sender.ready().await.map_err(SendError::Handshake)?;
        *conn = Some(sender);
    }
    let sender = conn.as_mut().expect("a connection was just made ready");
    let resp = sender.send_request(req).await.map_err(SendError::Io)?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(SendError::Io)?
        .to_bytes();
    Ok((status, body))
}

#[derive(serde::Deserialize)]
struct WebhookAnswer {
    #[serde(default)]
    jobs: Vec<serde::de::IgnoredAny>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one connection's loop: everything it shares with the others"
)]
async fn connection(
    addr: std::net::SocketAddr,
    host: HeaderValue,
    queue: flume::Receiver<Ticket>,
    scenario: Arc<dyn Scenario>,
    timeout: Duration,
    give_up: Option<GiveUp>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    loop {
        let ticket = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            t = queue.recv_async() => match t {
                Ok(t) => t,
                Err(_) => break,
            },
        };
        // A request that has waited past the bound in the queue is late whatever comes next.
        let late_already = give_up.is_some_and(|g| ticket.due.elapsed() >= g.late_after);
        if late_already {
            counters.late(give_up, &stop);
        }
        let mut prepared = scenario.request(ticket.seq);
        prepared
            .request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| host.clone());
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = tokio::time::timeout(timeout, exchange(&mut conn, addr, prepared.request)) => r,
        };
        let failed = match result {
            Err(_) => {
                conn = None;
                *tally.transport.entry("timeout").or_default() += 1;
                true
            }
            Ok(Err(e)) => {
                conn = None;
                *tally.transport.entry(e.cause()).or_default() += 1;
                true
            }
            Ok(Ok((status, body))) => {
                let latency = ticket.due.elapsed();
                if !late_already && give_up.is_some_and(|g| latency >= g.late_after) {
                    counters.late(give_up, &stop);
                }
                *tally.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    tally.ok.record(latency);
                    tally
                        .by_kind
                        .entry(prepared.kind)
                        .or_default()
                        .record(latency);
                    if prepared.counts_jobs {
                        tally.jobs += serde_json::from_slice::<WebhookAnswer>(&body)
                            .map_or(0, |a| a.jobs.len() as u64);
                    }
                    false
                } else {
                    true
                }
            }
        };
        if failed {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        counters.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

fn progress_bar(show: bool, len: u64, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} answered {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `schedule` against `target`.
pub async fn drive(
    target: &Target,
    scenario: Arc<dyn Scenario>,
    schedule: &Schedule,
    cfg: &EngineConfig,
    label: &str,
) -> Outcome {
    let (tx, rx) = flume::unbounded::<Ticket>();
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let host = HeaderValue::from_str(&target.authority)
        .expect("a parsed authority is a valid header value");
    let workers: Vec<_> = (0..cfg.connections.max(1))
        .map(|_| {
            tokio::spawn(connection(
                target.addr,
                host.clone(),
                rx.clone(),
                scenario.clone(),
                cfg.timeout,
                cfg.give_up,
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(rx);

    let bar = progress_bar(cfg.progress, schedule.len() as u64, label);
    let ticker = {
        let bar = bar.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                bar.set_position(counters.done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} errors",
                    counters.failed.load(Ordering::Relaxed)
                ));
            }
        })
    };

    // A moment for the connections to start before the first request is due.
    let start = Instant::now() + Duration::from_millis(20);
    let hard_stop = start + schedule.duration + cfg.drain;
    let mut lag_max = Duration::ZERO;
    for (seq, offset) in schedule.offsets.iter().enumerate() {
        let due = start + *offset;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let now = Instant::now();
        lag_max = lag_max.max(now.saturating_duration_since(due));
        if now >= hard_stop
            || tx
                .send(Ticket {
                    seq: seq as u64,
                    due,
                })
                .is_err()
        {
            break;
        }
    }
    drop(tx);

    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(hard_stop.into()).await;
            stop.cancel();
        })
    };
    let mut tally = Tally::default();
    for w in workers {
        // A connection task only ends by returning its tally.
        if let Ok(t) = w.await {
            tally.merge(&t);
        }
    }
    let elapsed = start.elapsed();
    stopper.abort();
    ticker.abort();
    bar.finish_and_clear();

    let finished = tally.answered() + tally.transport.values().sum::<u64>();
    Outcome {
        sent: counters.sent.load(Ordering::Relaxed),
        unfinished: (schedule.len() as u64).saturating_sub(finished),
        tally,
        elapsed,
        dispatch_lag_max: lag_max,
        stopped_early: counters.gave_up.load(Ordering::Relaxed),
    }
}

/// What to ask JetStream after a run: what a stream stored, against what the answers said.
#[derive(Clone, Debug)]
pub struct StreamWatch {
    pub js: async_nats::jetstream::Context,
    /// The deliveries stream: one record per accepted webhook (its messages hold one record
    /// or a batch of them).
    pub deliveries: String,
    /// The jobs stream: one message per job id answered.
    pub jobs: String,
}

async fn last_sequence(js: &async_nats::jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    let mut s = js.get_stream(stream).await?;
    Ok(s.info().await?.state.last_sequence)
}

/// What the messages of `stream` after sequence `after`, up to and including `last`, hold
/// (read with an ordered consumer, after the run): how many delivery records, and how many of
/// them repeat a delivery id that an earlier record of these messages had.
async fn stored_records(
    js: &async_nats::jetstream::Context,
    stream: &str,
    after: u64,
    last: u64,
) -> anyhow::Result<(u64, u64)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    use futures::StreamExt;
    if last <= after {
        return Ok((0, 0));
    }
    let consumer = js
        .get_stream(stream)
        .await?
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = std::collections::HashSet::new();
    let (mut records, mut repeated) = (0u64, 0u64);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("reading {stream}: no message for 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("reading {stream}: the consumer ended"))??;
        let seq = msg.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
        if seq > last {
            break;
        }
        for id in protocol::delivery::delivery_ids(&msg.payload)? {
            records += 1;
            if !seen.insert(id) {
                repeated += 1;
            }
        }
        if seq == last {
            break;
        }
    }
    Ok((records, repeated))
}

/// Kinds of request that are webhooks: each 2xx answer of one is a stored delivery record.
pub fn is_webhook(kind: &str) -> bool {
    kind.starts_with("webhook")
}

/// What to look at around a run besides the answers.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    /// JetStream's count of what was stored.
    pub streams: Option<StreamWatch>,
    /// Processes whose CPU use is reported.
    pub processes: Vec<Watched>,
    /// The target's Prometheus metrics (a Switchyard control plane).
    pub metrics: Option<MetricsWatch>,
}

/// Runs `schedule` and reports it: latencies, statuses, and, when asked, JetStream's count of
/// what was stored, the CPU used by the watched processes, and the server's own timings.
pub async fn measure(
    target: &Target,
    scenario: Arc<dyn Scenario>,
    schedule: &Schedule,
    cfg: &EngineConfig,
    probes: &Probes,
    label: &str,
) -> anyhow::Result<RunReport> {
    let before = match &probes.streams {
        Some(w) => Some((
            last_sequence(&w.js, &w.deliveries).await?,
            last_sequence(&w.js, &w.jobs).await?,
        )),
        None => None,
    };
    let metrics_before = match &probes.metrics {
        Some(m) => Some(m.snapshot().await?),
        None => None,
    };
    let meter = Meter::start(&probes.processes);
    let outcome = drive(target, scenario.clone(), schedule, cfg, label).await;
    let cpu = meter.finish();
    let server = match (&probes.metrics, metrics_before) {
        (Some(m), Some(b)) => b.until(&m.snapshot().await?),
        _ => None,
    };
    let mut stream_checks = Vec::new();
    if let (Some(w), Some((d0, j0))) = (&probes.streams, before) {
        let webhooks_ok: u64 = outcome
            .tally
            .by_kind
            .iter()
            .filter(|(k, _)| is_webhook(k))
            .map(|(_, h)| h.count())
            .sum();
        let d1 = last_sequence(&w.js, &w.deliveries).await?;
        let j1 = last_sequence(&w.js, &w.jobs).await?;
        let (records, repeated) = stored_records(&w.js, &w.deliveries, d0, d1).await?;
        // Each delivery of the run has its own id: a repeated one is a record stored twice,
        // which could otherwise hide a lost one in the count.
        for (stream, expected, stored, repeated) in [
            (&w.deliveries, webhooks_ok, records, repeated),
            (&w.jobs, outcome.tally.jobs, j1.saturating_sub(j0), 0),
        ] {
            stream_checks.push(StreamCheck {
                stream: stream.clone(),
                expected,
                stored,
                repeated,
                ok: expected == stored && repeated == 0,
            });
        }
    }
    let mut report = report(
        scenario.name(),
        target,
        cfg,
        schedule,
        &outcome,
        stream_checks,
        cpu,
    );
    report.server = server;
    Ok(report)
}

fn report(
    scenario: String,
    target: &Target,
    cfg: &EngineConfig,
    schedule: &Schedule,
    outcome: &Outcome,
    stream_checks: Vec<StreamCheck>,
    cpu: BTreeMap<String, crate::procstat::CpuUse>,
) -> RunReport {
    let t = &outcome.tally;
    let ok = t.ok.count();
    let elapsed = outcome.elapsed.as_secs_f64().max(1e-9);
    #[allow(
        clippy::cast_precision_loss,
        reason = "request counts stay far below 2^52"
    )]
    let throughput = ok as f64 / elapsed;
    RunReport {
        scenario,
        target: target.base_url.clone(),
        connections: cfg.connections,
        schedule: schedule.info.clone(),
        sent: outcome.sent,
        ok,
        errors: t.failed(),
        unfinished: outcome.unfinished,
        statuses: t
            .statuses
            .iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect(),
        transport_errors: t
            .transport
            .iter()
            .map(|(e, n)| ((*e).to_owned(), *n))
            .collect(),
        elapsed_s: elapsed,
        throughput_rps: throughput,
        latency: t.ok.summary(),
        by_kind: t
            .by_kind
            .iter()
            .map(|(k, h)| ((*k).to_owned(), h.summary()))
            .collect(),
        jobs: t.jobs,
        dispatch_lag_max_ms: outcome.dispatch_lag_max.as_secs_f64() * 1000.0,
        stream_checks,
        cpu,
        server: None,
        stopped_early: outcome.stopped_early,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::Router;
    use axum::routing::post;

    use super::*;
    use crate::schedule::Shape;

    struct Echo;

    impl Scenario for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn request(&self, seq: u64) -> Prepared {
            let path = if seq % 10 == 9 { "/fail" } else { "/ok" };
            Prepared {
                kind: "webhook",
                request: Request::post(path)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
                counts_jobs: true,
            }
        }
    }

    async fn server(delay: Duration) -> Target {
        let app = Router::new()
            .route(
                "/ok",
                post(move || async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>((http::StatusCode::ACCEPTED, r#"{"jobs":["a","b"]}"#))
                }),
            )
            .route(
                "/fail",
                post(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Target::parse(&format!("http://{addr}")).unwrap()
    }

    fn cfg(connections: usize, drain: Duration) -> EngineConfig {
        EngineConfig {
            connections,
            timeout: Duration::from_secs(5),
            drain,
            progress: false,
            give_up: None,
        }
    }

    #[tokio::test]
    async fn every_planned_request_is_answered_and_counted() {
        let target = server(Duration::ZERO).await;
        let schedule = Schedule::build(
            &Shape::Constant {
                rate: 200.0,
                duration: Duration::from_millis(500),
            },
            1000,
        )
        .unwrap();
        let r = measure(
            &target,
            Arc::new(Echo),
            &schedule,
            &cfg(4, Duration::from_secs(5)),
            &Probes::default(),
            "t",
        )
        .await
        .unwrap();
        assert_eq!(r.sent, 100);
        assert_eq!(r.ok, 90);
        assert_eq!(r.errors, 10);
        assert_eq!(r.statuses["503"], 10);
        assert_eq!(r.jobs, 180);
        assert_eq!(r.unfinished, 0);
        assert!(!r.clean());
    }

    #[tokio::test]
    async fn waiting_for_a_free_connection_counts_as_latency() {
        // One connection, 50 ms per answer, 10 requests due at once: the last one waits for
        // the nine before it, and its latency says so.
        let target = server(Duration::from_millis(50)).await;
        let schedule = Schedule::build(
            &Shape::Bursts {
                size: 9,
                every: Duration::from_secs(10),
                duration: Duration::from_millis(1),
            },
            100,
        )
        .unwrap();
        struct AllOk;
        impl Scenario for AllOk {
            fn name(&self) -> String {
                "ok".into()
            }
            fn request(&self, _: u64) -> Prepared {
                Prepared {
                    kind: "webhook",
                    request: Request::post("/ok").body(Full::new(Bytes::new())).unwrap(),
                    counts_jobs: false,
                }
            }
        }
        let r = measure(
            &target,
            Arc::new(AllOk),
            &schedule,
            &cfg(1, Duration::from_secs(5)),
            &Probes::default(),
            "t",
        )
        .await
        .unwrap();
        assert_eq!(r.ok, 9);
        assert!(r.latency.max_ms >= 400.0, "{:?}", r.latency);
        assert!(r.latency.p50_ms >= 200.0, "{:?}", r.latency);
    }

    #[tokio::test]
    async fn requests_still_unanswered_after_the_drain_are_unfinished() {
        let target = server(Duration::from_secs(30)).await;
        let schedule = Schedule::build(
            &Shape::Bursts {
                size: 3,
                every: Duration::from_secs(10),
                duration: Duration::from_millis(1),
            },
            100,
        )
        .unwrap();
        struct Slow;
        impl Scenario for Slow {
            fn name(&self) -> String {
                "slow".into()
            }
            fn request(&self, _: u64) -> Prepared {
                Prepared {
                    kind: "webhook",
                    request: Request::post("/ok").body(Full::new(Bytes::new())).unwrap(),
                    counts_jobs: false,
                }
            }
        }
        let started = Instant::now();
        let r = measure(
            &target,
            Arc::new(Slow),
            &schedule,
            &cfg(2, Duration::from_millis(200)),
            &Probes::default(),
            "t",
        )
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.ok, 0);
        assert_eq!(r.unfinished, 3);
    }

    #[tokio::test]
    async fn a_run_certain_to_fail_its_bound_stops_early() {
        // 100 ms per answer on 2 connections, 200 requests due within a second: after a
        // handful the rest are late, and the run stops long before its drain ends.
        let target = server(Duration::from_millis(100)).await;
        let schedule = Schedule::build(
            &Shape::Constant {
                rate: 200.0,
                duration: Duration::from_secs(1),
            },
            1000,
        )
        .unwrap();
        let mut c = cfg(2, Duration::from_secs(20));
        c.give_up = Some(GiveUp {
            late_after: Duration::from_millis(50),
            max_late: 2,
        });
        let started = Instant::now();
        let r = measure(
            &target,
            Arc::new(Echo),
            &schedule,
            &c,
            &Probes::default(),
            "t",
        )
        .await
        .unwrap();
        assert!(r.stopped_early);
        assert!(r.unfinished > 100, "{}", r.unfinished);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_unreachable_target_is_a_connect_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::parse(&format!("http://{addr}")).unwrap();
        let schedule = Schedule::build(
            &Shape::Constant {
                rate: 100.0,
                duration: Duration::from_millis(100),
            },
            100,
        )
        .unwrap();
        let r = measure(
            &target,
            Arc::new(Echo),
            &schedule,
            &cfg(2, Duration::from_secs(1)),
            &Probes::default(),
            "t",
        )
        .await
        .unwrap();
        assert_eq!(r.transport_errors["connect"], 10);
        assert_eq!(r.errors, 10);
    }
}
