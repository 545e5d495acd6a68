//! keygate: an API-key auth gateway on Pingora.
//!
//! One request takes one straight path: [`request::downstream`] takes the
//! client connection (TLS, the head deadline, heads Pingora refuses),
//! [`request::proxy`] (thin Pingora glue, one call per phase) hands the head to
//! [`request::precheck`] (framing, head size) and [`request::decide`] (rows
//! 1-12 of the contract, pure), takes a token from [`request::limiter`], sets
//! the [`request::headers`] and forwards to an upstream pool of the
//! [`gateway::Gateway`], the state one load builds whole from config and
//! snapshot and [`control::reload`] swaps whole. Every answer keygate writes
//! itself is a [`model::denial::Denial`]. With `[cluster]`, [`cluster`]
//! reconciles the limiter's buckets with the fleet's in Redis, off that path.
//!
//! Folders in dependency order, each using only those before it: `util`,
//! `model`, `telemetry`, `config`, `snapshot`, `gateway`, `request`,
//! `cluster`, `control`, `server`, `cli`.

#![deny(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod gateway;
pub mod model;
pub mod request;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod util;
