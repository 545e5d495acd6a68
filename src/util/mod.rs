//! Clock, OS and text helpers, used everywhere and using nothing of keygate's.

pub mod clock;
pub(crate) mod handover;
pub(crate) mod probe;
pub mod sys;
pub mod text;
