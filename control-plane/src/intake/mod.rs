//! Webhook intake rules: signature verification, the facts of an event that rules look at,
//! and rule matching. Pure functions; the HTTP handler in `http::routes::webhooks` drives
//! them and the queue publishes the result.

pub mod event;
pub mod pipeline;
pub mod rules;
pub mod signature;
