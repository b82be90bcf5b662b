//! Plans, rate limits and (with the ingester in [`crate::queue::ingester`]) metering.

pub mod invoice;
pub mod invoicing;
pub mod limits;
