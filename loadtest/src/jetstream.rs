//! The raw JetStream ceiling: how many acknowledged publishes per second the NATS server on
//! this machine takes, with nothing in front of it. The intake cannot beat it.
//!
//! It publishes to a stream of its own, created with exactly the settings of a region's
//! `JOBS` stream (`protocol::service::nats::region_streams`: file storage, work-queue
//! retention, the duplicate window, a message id on every publish as intake sends), in two
//! ways: pipelined (many publishes awaiting their acknowledgement at once) and one at a time
//! (each publish waits for its acknowledgement before the next). The stream is deleted
//! afterwards.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use protocol::service::config::NatsConfig;
use protocol::service::nats::region_streams;
use protocol::subjects::Names;
use protocol::{JobKind, OrgId, Region};
use serde::{Deserialize, Serialize};

use crate::stats::{Latencies, Summary};
use crate::target::loopback;

#[derive(Args, Clone, Debug)]
pub struct JetstreamArgs {
    /// NATS server on this machine (loopback only).
    #[arg(long, env = "NATS_URL")]
    pub nats: String,
    /// Bytes of each message.
    #[arg(long, default_value_t = 12 * 1024)]
    pub payload_bytes: usize,
    /// Publishes awaiting acknowledgement at once, pipelined.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// How long each way of publishing runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// At most this many messages in each way.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_messages: u64,
    /// Region whose JOBS stream settings are copied.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

/// One way of publishing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phase {
    pub mode: String,
    pub in_flight: usize,
    pub acked: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Acknowledged publishes per second.
    pub rate: f64,
    /// MB per second acknowledged.
    pub mb_per_s: f64,
    /// From each publish to its acknowledgement.
    pub ack_latency: Summary,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JetstreamReport {
    pub server: String,
    pub payload_bytes: usize,
    pub stream_settings: String,
    pub pipelined: Phase,
    pub serial: Phase,
}

impl JetstreamReport {
    pub fn human(&self) -> String {
        let line = |p: &Phase| {
            format!(
                "  {:<10} in flight {:>4}: {:>8.0} acked/s ({:.0} MB/s), ack p50 {:.2} ms p99 {:.2} ms, {} errors\n",
                p.mode,
                p.in_flight,
                p.rate,
                p.mb_per_s,
                p.ack_latency.p50_ms,
                p.ack_latency.p99_ms,
                p.errors
            )
        };
        format!(
            "JetStream on {}: {} B messages to a stream with the JOBS settings ({})\n{}{}",
            self.server,
            self.payload_bytes,
            self.stream_settings,
            line(&self.pipelined),
            line(&self.serial)
        )
    }
}

struct Bench {
    js: jetstream::Context,
    config: stream::Config,
    subject: String,
    payload: Bytes,
    next_id: u64,
}

impl Bench {
    async fn fresh_stream(&self) -> anyhow::Result<()> {
        let _ = self.js.delete_stream(&self.config.name).await;
        self.js
            .create_stream(self.config.clone())
            .await
            .with_context(|| format!("creating stream {}", self.config.name))?;
        Ok(())
    }

    fn message(&mut self) -> PublishMessage {
        self.next_id += 1;
        PublishMessage::build()
            .payload(self.payload.clone())
            .message_id(format!("loadtest-{}", self.next_id))
    }

    async fn run(
        &mut self,
        mode: &str,
        in_flight: usize,
        duration: Duration,
        max: u64,
    ) -> anyhow::Result<Phase> {
        self.fresh_stream().await?;
        let mut latencies = Latencies::default();
        let mut pending = FuturesUnordered::new();
        let (mut sent, mut acked, mut errors) = (0_u64, 0_u64, 0_u64);
        let start = Instant::now();
        let deadline = start + duration;
        loop {
            while pending.len() < in_flight.max(1) && sent < max && Instant::now() < deadline {
                let msg = self.message();
                let at = Instant::now();
                match self.js.send_publish(self.subject.clone(), msg).await {
                    Ok(ack) => {
                        let ack = ack.into_future();
                        pending.push(async move { (at, ack.await) });
                    }
                    Err(_) => errors += 1,
                }
                sent += 1;
            }
            match pending.next().await {
                Some((at, Ok(_))) => {
                    acked += 1;
                    latencies.record(at.elapsed());
                }
                Some((_, Err(_))) => errors += 1,
                None => break,
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        #[allow(
            clippy::cast_precision_loss,
            reason = "message counts and sizes stay far below 2^52"
        )]
        let (rate, mb) = (
            acked as f64 / elapsed,
            acked as f64 * self.payload.len() as f64 / elapsed / 1e6,
        );
        Ok(Phase {
            mode: mode.to_owned(),
            in_flight: in_flight.max(1),
            acked,
            errors,
            elapsed_s: elapsed,
            rate,
            mb_per_s: mb,
            ack_latency: latencies.summary(),
        })
    }
}

/// Measures both ways of publishing.
pub async fn measure(args: &JetstreamArgs) -> anyhow::Result<JetstreamReport> {
    loopback(&args.nats, "nats")?;
    let client = async_nats::connect(args.nats.as_str())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats))?;
    let js = jetstream::new(client);
    // A namespace of its own: `lt<random>_JOBS_<REGION>` on `lt<random>.jobs.<region>.>`.
    let names = Names::new(&format!("lt{:08x}", rand::random::<u32>()))?;
    let region = Region::new(args.region.clone())?;
    let nats_cfg = NatsConfig {
        url: args.nats.clone(),
        namespace: names.namespace().to_owned(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        duplicate_window: Duration::from_secs(3600),
        retention: Duration::from_secs(7 * 24 * 3600),
    };
    let config = region_streams(&names, &region, &nats_cfg)
        .into_iter()
        .next()
        .context("a region has a jobs stream")?;
    let settings = format!(
        "{:?} storage, {:?} retention, duplicate window {}, message ids on",
        config.storage,
        config.retention,
        humantime::format_duration(config.duplicate_window)
    );
    let subject = names.jobs_subject(&region, &JobKind::new("agent")?, OrgId(1_000_000_000));
    let payload: Vec<u8> = (0..args.payload_bytes).map(|_| rand::random()).collect();
    let mut bench = Bench {
        js: js.clone(),
        config,
        subject,
        payload: Bytes::from(payload),
        next_id: 0,
    };
    let result = async {
        let pipelined = bench
            .run(
                "pipelined",
                args.in_flight,
                args.duration,
                args.max_messages,
            )
            .await?;
        let serial = bench
            .run("serial", 1, args.duration, args.max_messages)
            .await?;
        anyhow::Ok((pipelined, serial))
    }
    .await;
    // The stream goes whatever happened; a failure to delete it is not the measurement's.
    let _ = js.delete_stream(&bench.config.name).await;
    let (pipelined, serial) = result?;
    Ok(JetstreamReport {
        server: args.nats.clone(),
        payload_bytes: args.payload_bytes,
        stream_settings: settings,
        pipelined,
        serial,
    })
}

/// Deletes every stream whose name starts with `prefix` (what a benchmark's own control
/// plane created in its namespace).
pub async fn delete_streams(url: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    loopback(url, "nats")?;
    if prefix.is_empty() {
        anyhow::bail!("refusing to delete every stream: give a prefix");
    }
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    let js = jetstream::new(client);
    let mut names = js.stream_names();
    let mut doomed = Vec::new();
    while let Some(name) = names.next().await {
        let name = name?;
        if name.starts_with(prefix) {
            doomed.push(name);
        }
    }
    for name in &doomed {
        js.delete_stream(name)
            .await
            .with_context(|| format!("deleting stream {name}"))?;
    }
    Ok(doomed)
}
