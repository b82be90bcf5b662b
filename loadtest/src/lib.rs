//! Switchyard's load generator: an open-loop driver with latency histograms, the scenarios
//! it drives, the ceilings an intake figure is compared with, and the benchmark report.
//!
//! ```text
//! target       loopback-only addresses (anything else is refused)
//! schedule     when each request is due: constant, ramp, trace replay, bursts
//! engine       open loop over a fixed pool of HTTP/1.1 connections; latency from the
//!              intended start of each request, so slow answers cannot hide
//! stats        HDR histograms, statuses, the JSON report of a run
//! scenario/    webhooks (signed, real payloads), org API reads, onboarding, a mix
//! search       the highest constant rate whose p99 stays under a bound
//! jetstream    the raw JetStream acknowledged-publish ceiling
//! noop         the HTTP framework's no-op handler, served the way Switchyard serves
//! metrics      the control plane's own timings of a run, from its Prometheus metrics
//! procstat     CPU used by the processes under test during a run
//! bench        docs/benchmarks.md from the results of `make bench`
//! calibrate    how fast the host is today: HMAC-SHA256 and a loopback TCP round trip
//! jobs         webhook 202 → job running, and the worker's overhead per job
//! shardmap     the shard map on a real catalog: load time, route cost per lookup
//! sections     the workers, tenancy and shards sections of docs/benchmarks.md
//! ```

pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod engine;
pub mod jetstream;
pub mod jobs;
pub mod metrics;
pub mod noop;
pub mod procstat;
pub mod scenario;
pub mod schedule;
pub mod search;
pub mod sections;
pub mod shardmap;
pub mod stats;
pub mod target;

/// The most requests one run may plan, whatever its schedule says.
pub const MAX_REQUESTS_CAP: u64 = 10_000_000;
/// The longest schedule one run may have.
pub const MAX_DURATION_CAP: std::time::Duration = std::time::Duration::from_secs(600);
