//! The commands besides `run`: `check`, `demo`, `healthcheck` and `keys`.
//! Printing and exit codes stay in `main.rs`.

pub mod check;
pub mod demo;
pub mod healthcheck;
pub mod keys;
