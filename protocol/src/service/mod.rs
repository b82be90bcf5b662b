//! Runtime plumbing shared by the Switchyard services (feature `service`).
//!
//! * [`config`] — layered configuration (defaults file → file → environment) and the config
//!   sections every service has.
//! * [`telemetry`] — JSON logs, OpenTelemetry traces (OTLP when configured) and the trace
//!   context carried in NATS headers.
//! * [`nats`] — connecting, and creating the region's streams idempotently.
//! * [`db`] — the catalog-backed shard router: per-shard pools found without I/O.
//! * [`github`] — GitHub as the App: installation tokens (cached in Redis), budget, retries.
//! * [`jobstore`] — the job table's state transitions, shared by recorder, API and workers.
//! * [`ops`] — `/healthz`, `/readyz` and `/metrics` for binaries without an API of their own.
//! * [`serve`] — the HTTP/1.1 server loop every service uses.
//! * [`shutdown`] — SIGTERM / Ctrl-C as a cancellation token.

pub mod config;
pub mod db;
pub mod github;
pub mod jobstore;
pub mod nats;
pub mod ops;
pub mod quota;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
