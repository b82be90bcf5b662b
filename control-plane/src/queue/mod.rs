//! JetStream: publishing accepted deliveries and their jobs, and the recorder that writes
//! them to the shards.

pub mod publisher;
pub mod recorder;
