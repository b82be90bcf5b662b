//! JetStream: publishing accepted deliveries and their jobs, the recorder that writes them to
//! the shards, and the ingester that writes usage events there.

pub mod ingester;
pub mod publisher;
pub mod recorder;
