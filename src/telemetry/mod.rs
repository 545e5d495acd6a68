//! What keygate tells operators: Prometheus metrics on an owned registry,
//! and the logs (operational lines and the access log).

pub mod log;
pub mod metrics;
