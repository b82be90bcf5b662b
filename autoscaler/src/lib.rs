//! The Switchyard autoscaler: forecasts each region's job arrivals and sizes its worker pool.
//!
//! ```text
//! live       the loop of one region: sample → observation → policy → actuator, metrics,
//!   │        the pool state published in the `autoscaler` KV bucket
//!   ├── sampler   arrivals, backlog, oldest wait, live workers from JetStream and `workers`
//!   ├── store     the `autoscaler` bucket (pool state) and the saved arrival history
//!   ├── actuator  kubernetes (Deployment scale) | local (worker processes) | dry run
//!   └── metrics   switchyard_autoscaler_* gauges and counters
//! config     typed, validated configuration of `autoscaler run`
//!
//! trace      `timestamp,value` event traces
//!   │
//!   ▼
//! backtest/  queue simulation of a pool under a policy; cost, waits, forecast error
//!   │
//!   ▼
//! policy     Observation → Decision { desired, reason }: reactive (KEDA + HPA) and predictive
//! forecast   bucketed arrival history; linfa regression with an upper bound
//! plot       SVG chart of a backtest
//! ```
//! A policy sees the same [`policy::Observation`] in the backtest as in a live loop, so what
//! the backtest measures is what a region would run.

pub mod actuator;
pub mod backtest;
pub mod config;
pub mod error;
pub mod forecast;
pub mod live;
pub mod metrics;
pub mod plot;
pub mod policy;
pub mod sampler;
pub mod store;
pub mod trace;

pub use crate::config::Config;
pub use crate::error::Error;
pub use crate::live::run;
