//! Support for Switchyard's integration tests: where the real services are, private servers
//! for fault tests, GitHub's own webhook payloads, and a stateful GitHub emulator.

// The emulator's repository objects are large `json!` literals.
#![recursion_limit = "256"]

pub mod emulator;
pub mod env;
pub mod fixtures;
pub mod servers;
