//! Clock and OS helpers, used everywhere and using nothing of keygate's.

pub mod clock;
pub mod handover;
pub mod probe;
pub mod sys;
