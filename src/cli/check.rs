//! `keygate check`: loads everything `run` would (config, snapshot,
//! upstream names, certificates) without binding or connecting, and reports
//! the problems, or the summary and the warnings.

use crate::gateway::Gateway;
use crate::model::problem::Problems;
use crate::telemetry::metrics::Metrics;
use std::path::Path;

/// What `keygate check` found in a config that loads.
#[derive(Debug)]
pub struct Checked {
    /// The one-line summary.
    pub summary: String,
    /// Likely mistakes that do not stop it loading.
    pub warnings: Vec<crate::config::warnings::Warning>,
}

/// `keygate check`: loads everything `run` would and reports, every error
/// at once (the load checks the snapshot of a refused config too).
pub fn check(config_path: &Path) -> Result<Checked, Problems> {
    let metrics = Metrics::new();
    Gateway::load(config_path, &metrics, None).map(|g| Checked {
        summary: g.summary(),
        warnings: crate::config::warnings::warnings(&g.config),
    })
}
