//! `keygate demo`: the bundled config plus a built-in echo upstream.

use std::path::Path;

/// Starts the echo upstream and returns the run options.
pub fn prepare(_config: &Path) -> anyhow::Result<crate::run::RunOptions> {
    anyhow::bail!("in progress")
}

/// Probes the admin /healthz.
pub fn healthcheck(_config: &Path, _admin: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    anyhow::bail!("in progress")
}
