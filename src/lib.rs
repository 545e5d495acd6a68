//! keygate: an API-key auth gateway on Pingora.
//!
//! One request takes one straight path: [`proxy`] (thin Pingora glue) asks
//! [`decide`] (pure, no I/O) whether the request may pass, takes a token from the
//! [`ratelimit`] limiter, and forwards it to an [`upstream`] pool. Everything one
//! reload builds lives in a [`gateway::Gateway`], swapped whole by [`reload`].

#![deny(unsafe_code)]
#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod client;
pub mod clock;
pub mod config;
pub mod decide;
pub mod demo;
pub mod denial;
pub mod gateway;
pub mod keys_cli;
pub mod logging;
pub mod metrics;
pub mod problems;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod routes;
pub mod run;
pub mod scope;
pub mod snapshot;
pub mod sys;
pub mod tls;
pub mod token;
pub mod upstream;
