//! Everything around the request path: the admin listener, readiness, the
//! periodic housekeeping and reloads (signal, admin, file watch).

pub(crate) mod admin;
pub(crate) mod housekeeping;
pub(crate) mod readiness;
pub mod reload;
