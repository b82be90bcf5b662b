//! Switchyard's integration tests: whole control planes and workers, in-process, against real
//! PostgreSQL, NATS JetStream and Redis. Every test makes its own databases and NATS
//! namespace; tests in a `serial` module run one at a time (see `.config/nextest.toml`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod autoscaler;
mod billing;
mod conformance;
mod github;
mod helpers;
mod intake;
mod sharding;
mod slice;
mod tenancy;
mod workers;
