//! What keygate tells operators: Prometheus metrics on an owned registry,
//! and the logs (operational lines and the access log), written to stdout
//! by a thread of their own.

pub mod log;
pub mod metrics;
pub mod sink;
