//! Everything around the request path: the admin listener, readiness, the
//! periodic housekeeping and reloads (signal, admin, file watch).

pub mod admin;
pub mod housekeeping;
pub mod readiness;
pub mod reload;
