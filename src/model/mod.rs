//! Plain values with no I/O: keys and their digests, scopes, path patterns,
//! rate limits, denials, and the problems a load reports.

pub mod denial;
pub mod format;
pub mod key;
pub mod limit;
pub mod pattern;
pub mod problem;
pub mod scope;
pub mod unknown_fields;
