//! [`Gateway`]: everything one load builds from the config and the key snapshot
//! (routes, key index, upstream pools, metric handles), built whole by
//! [`Gateway::load`] and swapped whole by the reloader. Nothing in it changes
//! after it is built, except the health of its pools and last-used times.

pub(crate) mod cert;
pub mod policy;
pub mod upstream;

use crate::config::{Config, read_text};
use crate::gateway::policy::Policy;
use crate::gateway::upstream::Upstream;
use crate::model::format::SnapshotFormat;
use crate::model::problem::{Problem, Problems};
use crate::snapshot::KeyIndex;
use crate::telemetry::metrics::{Metrics, RouteMetrics, UNMATCHED};
use pingora::tls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Above this size a TOML snapshot is worth a warning: parsing it holds the
/// whole document as TOML tables (1,000,000 keys: 13 s and 4.5 GB at peak,
/// against 1 s and 0.5 GB as JSON).
const LARGE_TOML: usize = 32 * 1024 * 1024;

/// The content digests of the files a gateway was built from (file watch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 of the config text.
    pub config: [u8; 32],
    /// SHA-256 of the snapshot text.
    pub snapshot: [u8; 32],
}

/// One complete, validated generation of gateway state.
pub struct Gateway {
    /// The validated config.
    pub config: Config,
    /// What `decide` reads.
    pub policy: Policy,
    /// Upstream pools, indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Metric handles, indexed like `policy.routes` (shared, so a request
    /// still streaming can keep its route's handles without the gateway).
    pub route_metrics: Vec<Arc<RouteMetrics>>,
    /// Metric handles for requests that matched no route.
    pub unmatched_metrics: Arc<RouteMetrics>,
    /// The server certificate, checked, ready to install.
    pub certificate: Option<Arc<CertifiedKey>>,
    /// Digests of the source files.
    pub fingerprint: Fingerprint,
    /// Counts this state in `keygate_state_generations` while it lives.
    _generation: Generation,
}

/// One count in `keygate_state_generations`, for as long as a state lives.
struct Generation(prometheus::IntGauge);

impl Generation {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Generation(gauge.clone())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Gateway {
    /// Reads and validates the config and its snapshot and builds every part.
    /// `previous` lends its upstream pools where their config is unchanged.
    pub fn load(
        config_path: &Path,
        metrics: &Metrics,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, Problems> {
        let config_text = read_text(config_path, "config")?;
        let config = Config::parse_naming_snapshot(config_path, &config_text).map_err(
            |(mut problems, snapshot)| {
                // Every error at once: the snapshot the refused config names
                // is checked too, so fixing the config does not reveal more.
                problems
                    .0
                    .extend(snapshot.map(snapshot_problems).unwrap_or_default());
                problems
            },
        )?;
        let snapshot_text = read_text(&config.keys.snapshot, "key snapshot")?;
        if snapshot_text.len() > LARGE_TOML
            && SnapshotFormat::of(&config.keys.snapshot) == Some(SnapshotFormat::Toml)
        {
            tracing::warn!(
                snapshot = %config.keys.snapshot.display(),
                megabytes = snapshot_text.len() / 1_000_000,
                "large TOML key snapshot: the same keys as .json load about ten times faster in a tenth of the memory"
            );
        }
        let keys = KeyIndex::parse(&config.keys.snapshot, &snapshot_text)?;
        let fingerprint = Fingerprint {
            config: Sha256::digest(config_text.as_bytes()).into(),
            snapshot: Sha256::digest(snapshot_text.as_bytes()).into(),
        };
        Gateway::build(config, keys, fingerprint, metrics, previous)
    }

    /// Builds a gateway from already validated parts.
    pub fn build(
        config: Config,
        keys: KeyIndex,
        fingerprint: Fingerprint,
        metrics: &Metrics,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, Problems> {
        let mut problems = Problems(Vec::new());
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (u, line) in config.upstreams.iter().zip(&config.upstream_lines) {
            let reused = previous.and_then(|p| {
                p.upstreams
                    .iter()
                    .find(|old| old.config == *u)
                    .map(Arc::clone)
            });
            match reused.map_or_else(|| Upstream::build(u, metrics).map(Arc::new), Ok) {
                Ok(up) => upstreams.push(up),
                Err(e) => problems.push(Problem::at_line(&config.path, *line, e.to_string())),
            }
        }
        let certificate = match &config.server.tls {
            Some(tls) => match crate::gateway::cert::load_certified_key(&tls.cert, &tls.key) {
                Ok(ck) => Some(Arc::new(ck)),
                Err(e) => {
                    problems.push(Problem::at_line(
                        &config.path,
                        config.tls_line,
                        format!("server.tls: {e}"),
                    ));
                    None
                }
            },
            None => None,
        };
        if let Some(prev) = previous {
            keys.carry_last_used_from(&prev.policy.keys);
        }
        let policy = Policy::compile(&config, keys);
        let route_metrics = policy
            .routes
            .iter()
            .map(|r| Arc::new(metrics.route(&r.name)))
            .collect();
        problems.into_result(())?;
        Ok(Gateway {
            policy,
            upstreams,
            route_metrics,
            unmatched_metrics: Arc::new(metrics.route(UNMATCHED)),
            certificate,
            fingerprint,
            config,
            _generation: Generation::new(&metrics.generations),
        })
    }

    /// The upstream pool of a route index.
    pub fn upstream_of(&self, route: Option<usize>) -> Option<&Arc<Upstream>> {
        let route = self.policy.routes.get(route?)?;
        self.upstreams.get(route.upstream)
    }

    /// The limit a key's requests are held to: its own, or the default.
    pub fn limit_of(&self, key: &crate::snapshot::KeyRecord) -> crate::model::limit::Limit {
        key.rate_limit.unwrap_or(self.config.rate_limit.default)
    }

    /// Metric handles of a route index, or of `unmatched`.
    pub fn route_metrics(&self, route: Option<usize>) -> &Arc<RouteMetrics> {
        route
            .and_then(|i| self.route_metrics.get(i))
            .unwrap_or(&self.unmatched_metrics)
    }

    /// Refreshes `keygate_keys{type,state}` for time `now`.
    pub fn record_key_gauges(&self, metrics: &Metrics, now: i64) {
        use crate::model::key::KeyType;
        use crate::snapshot::KeyState;
        let mut counts = [[0i64; 3]; 2];
        for r in self.policy.keys.records() {
            let t = match r.key_type {
                KeyType::Company => 0,
                KeyType::Workspace => 1,
            };
            let s = match r.state(now) {
                KeyState::Active => 0,
                KeyState::Revoked => 1,
                KeyState::Expired => 2,
            };
            counts[t][s] += 1;
        }
        for (ti, t) in [KeyType::Company, KeyType::Workspace]
            .into_iter()
            .enumerate()
        {
            for (si, s) in [KeyState::Active, KeyState::Revoked, KeyState::Expired]
                .into_iter()
                .enumerate()
            {
                metrics
                    .keys
                    .with_label_values(&[t.as_str(), s.as_str()])
                    .set(counts[ti][si]);
            }
        }
    }

    /// One line for `keygate check` and the start-up log.
    pub fn summary(&self) -> String {
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        format!(
            "{}: {}, {}, {}, {}",
            self.config.path.display(),
            count(self.policy.routes.len(), "route"),
            count(self.upstreams.len(), "upstream"),
            count(self.policy.keys.len(), "key"),
            count(self.policy.keys.workspace_count(), "workspace")
        )
    }
}

/// The problems of the snapshot a refused config names (none when that file
/// is not a snapshot: the config's own problems say so).
fn snapshot_problems(snapshot: PathBuf) -> Vec<Problem> {
    if SnapshotFormat::of(&snapshot).is_none() {
        return Vec::new();
    }
    match read_text(&snapshot, "key snapshot").and_then(|t| KeyIndex::parse(&snapshot, &t)) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0,
    }
}
