//! `keygate check`: loads everything `run` would (config, snapshot,
//! upstream names, certificates) without binding or connecting, and reports
//! the problems, or the summary and the warnings.

use crate::config::{Config, read_text};
use crate::gateway::Gateway;
use crate::model::format::SnapshotFormat;
use crate::model::problem::{Problem, Problems};
use crate::snapshot::KeyIndex;
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

/// `keygate check`: loads everything `run` would and reports. Every error
/// at once: where the config itself is refused (so the snapshot was never
/// read), the snapshot it names is checked too.
pub fn check(config_path: &Path) -> Result<Checked, Problems> {
    let metrics = Metrics::new();
    Gateway::load(config_path, &metrics, None)
        .map(|g| Checked {
            summary: g.summary(),
            warnings: crate::config::warnings::warnings(&g.config),
        })
        .map_err(|mut problems| {
            problems.0.extend(snapshot_problems_of_refused(config_path));
            problems
        })
}

/// The snapshot's problems when the config at `path` is refused but still
/// says which snapshot it uses; nothing otherwise (a config that passes
/// had its snapshot checked by the load).
fn snapshot_problems_of_refused(path: &Path) -> Vec<Problem> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    if Config::parse(path, &text).is_ok() {
        return Vec::new();
    }
    let Some(snapshot) = Config::snapshot_path(path, &text) else {
        return Vec::new();
    };
    if SnapshotFormat::of(&snapshot).is_none() {
        return Vec::new();
    }
    match read_text(&snapshot, "key snapshot").and_then(|t| KeyIndex::parse(&snapshot, &t)) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0,
    }
}
