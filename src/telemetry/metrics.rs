//! Every metric of the contract, registered once on a registry the gateway owns
//! (never the process-global default). Label handles are resolved when a
//! gateway is loaded ([`RouteMetrics`], [`UpstreamMetrics`]), so the request
//! path increments plain counters without hashing label values. Labels stay
//! bounded: route and upstream names, never paths or key ids.

use crate::model::denial::{DenialReason, ShadowReason};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

/// The `route` label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    denials: IntCounterVec,
    shadow_denials: IntCounterVec,
    rate_limited: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    /// `keygate_keys{type,state}`
    pub keys: IntGaugeVec,
    /// `keygate_reloads_total{result="success"}`
    pub reload_success: IntCounter,
    /// `keygate_reloads_total{result="failure"}`
    pub reload_failure: IntCounter,
    /// `keygate_last_reload_success_timestamp_seconds`
    pub last_reload_success: IntGauge,
    /// `keygate_rate_limit_buckets`
    pub buckets: IntGauge,
    /// `keygate_rate_limit_untracked_requests_total`: requests served without
    /// a bucket because the map was full of active ones.
    pub untracked: IntCounter,
    /// `keygate_log_lines_dropped_total`: log lines lost because stdout took
    /// no writes while 32 MiB of them waited.
    pub log_dropped: IntCounter,
    /// `keygate_state_generations`: loaded states still in memory (the live
    /// one, plus old ones that in-flight work still holds).
    pub generations: IntGauge,
    /// The fleet sync's figures (CONTRACT §7).
    pub cluster: ClusterMetrics,
}

/// `keygate_cluster_*`: present whether or not `[cluster]` is set (0 without it).
pub struct ClusterMetrics {
    /// `keygate_cluster_up`: 1 while synced, 0 while degraded or off.
    pub up: IntGauge,
    /// `keygate_cluster_instances`: instances seen in the last 3 sync periods.
    pub instances: IntGauge,
    /// `keygate_cluster_sync_duration_seconds`: one whole sync (every batch).
    pub sync_duration: Histogram,
    failures: [IntCounter; 3],
}

impl ClusterMetrics {
    /// `keygate_cluster_sync_failures_total{kind}` (the kinds of the
    /// upstream errors: connect, timeout, other).
    pub fn failure(&self, kind: UpstreamErrorKind) {
        self.failures[kind as usize].inc();
    }
}

/// Upstream error kinds (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// Refused, unreachable, or no healthy server.
    Connect,
    /// Connect or read timed out.
    Timeout,
    /// Anything else after connecting.
    Other,
}

impl UpstreamErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Other => "other",
        }
    }
}

/// Label handles of one route, resolved at load time.
pub struct RouteMetrics {
    name: String,
    requests: IntCounterVec,
    statuses: Box<[OnceLock<IntCounter>]>,
    denials: Vec<IntCounter>,
    shadow: Vec<IntCounter>,
    /// `keygate_rate_limited_total{route}`
    pub rate_limited: IntCounter,
    /// `keygate_request_duration_seconds{route}`
    pub duration: Histogram,
}

impl RouteMetrics {
    /// `keygate_requests_total{route, status}`: the handle of each status is
    /// resolved the first time that status is seen, then reused lock-free.
    pub fn request(&self, status: u16) {
        let idx = usize::from(status.clamp(100, 599) - 100);
        self.statuses[idx]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[self.name.as_str(), &status.clamp(100, 599).to_string()])
            })
            .inc();
    }

    /// `keygate_auth_denials_total{route, reason}`
    pub fn denial(&self, reason: DenialReason) {
        self.denials[reason.index()].inc();
    }

    /// `keygate_shadow_denials_total{route, reason}`
    pub fn shadow(&self, reason: ShadowReason) {
        self.shadow[reason.index()].inc();
    }
}

/// Label handles of one upstream.
pub struct UpstreamMetrics {
    errors: [IntCounter; 3],
}

impl UpstreamMetrics {
    /// `keygate_upstream_errors_total{upstream, kind}`
    pub fn error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
    register(registry, Box::new(v.clone()));
    v
}

fn register(registry: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Names are static and registered once per registry: a failure is a bug.
    if let Err(e) = registry.register(c) {
        unreachable!("metric registration: {e}");
    }
}

impl Metrics {
    /// Registers every family on a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "keygate_requests_total",
            "Requests answered, by route and HTTP status.",
            &["route", "status"],
        );
        let denials = counter_vec(
            &registry,
            "keygate_auth_denials_total",
            "Requests refused by the auth checks, by route and reason.",
            &["route", "reason"],
        );
        let shadow_denials = counter_vec(
            &registry,
            "keygate_shadow_denials_total",
            "Requests on shadow routes that a check would have refused, proxied anyway, by route and reason.",
            &["route", "reason"],
        );
        let rate_limited = counter_vec(
            &registry,
            "keygate_rate_limited_total",
            "Requests refused with 429 by the per-key rate limit.",
            &["route"],
        );
        let upstream_errors = counter_vec(
            &registry,
            "keygate_upstream_errors_total",
            "Failures talking to an upstream, by kind.",
            &["upstream", "kind"],
        );
        let reloads = counter_vec(
            &registry,
            "keygate_reloads_total",
            "Config and key snapshot reloads, by result.",
            &["result"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from request head to the end of the response, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static histogram is valid: {e}"));
        register(&registry, Box::new(duration.clone()));
        let keys = IntGaugeVec::new(
            Opts::new(
                "keygate_keys",
                "Keys in the loaded snapshot, by type and state.",
            ),
            &["type", "state"],
        )
        .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
        register(&registry, Box::new(keys.clone()));
        let last_reload_success = IntGauge::new(
            "keygate_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of config and snapshot.",
        )
        .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
        register(&registry, Box::new(last_reload_success.clone()));
        let buckets = IntGauge::new(
            "keygate_rate_limit_buckets",
            "Rate-limit buckets currently held.",
        )
        .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
        register(&registry, Box::new(buckets.clone()));
        let untracked = IntCounter::new(
            "keygate_rate_limit_untracked_requests_total",
            "Requests served without a rate-limit bucket because max_buckets active buckets were held.",
        )
        .unwrap_or_else(|e| unreachable!("static counter is valid: {e}"));
        register(&registry, Box::new(untracked.clone()));
        let log_dropped = IntCounter::new(
            "keygate_log_lines_dropped_total",
            "Log lines dropped because stdout took no writes while 32 MiB of lines waited.",
        )
        .unwrap_or_else(|e| unreachable!("static counter is valid: {e}"));
        register(&registry, Box::new(log_dropped.clone()));
        let generations = IntGauge::new(
            "keygate_state_generations",
            "Loaded gateway states in memory: the live one plus old ones still held by in-flight requests.",
        )
        .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
        register(&registry, Box::new(generations.clone()));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)
                .unwrap_or_else(|e| unreachable!("static gauge is valid: {e}"));
            register(&registry, Box::new(g.clone()));
            g
        };
        let cluster_up = gauge(
            "keygate_cluster_up",
            "1 while the rate limits are synced with the fleet through Redis, 0 while degraded (or without [cluster]).",
        );
        let cluster_instances = gauge(
            "keygate_cluster_instances",
            "Instances of the fleet seen in the last 3 sync periods (the last figure while degraded; 0 without [cluster]).",
        );
        let sync_duration = Histogram::with_opts(
            HistogramOpts::new(
                "keygate_cluster_sync_duration_seconds",
                "Time of one sync of the rate-limit buckets with Redis, every batch included.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 5.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static histogram is valid: {e}"));
        register(&registry, Box::new(sync_duration.clone()));
        let sync_failures = counter_vec(
            &registry,
            "keygate_cluster_sync_failures_total",
            "Failed syncs with Redis, by kind.",
            &["kind"],
        );
        let cluster = ClusterMetrics {
            up: cluster_up,
            instances: cluster_instances,
            sync_duration,
            failures: [
                UpstreamErrorKind::Connect,
                UpstreamErrorKind::Timeout,
                UpstreamErrorKind::Other,
            ]
            .map(|k| sync_failures.with_label_values(&[k.as_str()])),
        };
        Metrics {
            cluster,
            reload_success: reloads.with_label_values(&["success"]),
            reload_failure: reloads.with_label_values(&["failure"]),
            registry,
            requests,
            denials,
            shadow_denials,
            rate_limited,
            duration,
            upstream_errors,
            keys,
            last_reload_success,
            buckets,
            untracked,
            log_dropped,
            generations,
        }
    }

    /// Resolves the handles of one route (and creates its zero series, so
    /// alert expressions see them before the first event).
    pub fn route(&self, name: &str) -> RouteMetrics {
        RouteMetrics {
            name: name.to_string(),
            requests: self.requests.clone(),
            statuses: (100..600).map(|_| OnceLock::new()).collect(),
            denials: DenialReason::ALL
                .iter()
                .map(|r| self.denials.with_label_values(&[name, r.as_str()]))
                .collect(),
            shadow: ShadowReason::ALL
                .iter()
                .map(|r| self.shadow_denials.with_label_values(&[name, r.as_str()]))
                .collect(),
            rate_limited: self.rate_limited.with_label_values(&[name]),
            duration: self.duration.with_label_values(&[name]),
        }
    }

    /// Resolves the handles of one upstream.
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let h = |k: UpstreamErrorKind| self.upstream_errors.with_label_values(&[name, k.as_str()]);
        UpstreamMetrics {
            errors: [
                h(UpstreamErrorKind::Connect),
                h(UpstreamErrorKind::Timeout),
                h(UpstreamErrorKind::Other),
            ],
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec only fails on malformed families, which the
        // static definitions above rule out; an empty scrape would show it.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_count_into_the_families() {
        let m = Metrics::new();
        let r = m.route("company");
        r.request(200);
        r.request(200);
        r.request(404);
        r.denial(DenialReason::Scope);
        r.rate_limited.inc();
        m.upstream("api").error(UpstreamErrorKind::Timeout);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"keygate_requests_total{route="company",status="200"} 2"#));
        assert!(text.contains(r#"keygate_requests_total{route="company",status="404"} 1"#));
        assert!(text.contains(r#"keygate_auth_denials_total{reason="scope",route="company"} 1"#));
        assert!(text.contains(r#"keygate_auth_denials_total{reason="revoked",route="company"} 0"#));
        assert!(text.contains(r#"keygate_rate_limited_total{route="company"} 1"#));
        assert!(text.contains(r#"keygate_upstream_errors_total{kind="timeout",upstream="api"} 1"#));
        assert!(text.contains("keygate_rate_limit_buckets 0"));
    }

    #[test]
    fn two_registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.route("x").request(200);
        let text = String::from_utf8(b.render()).unwrap();
        assert!(!text.contains(r#"route="x""#));
    }
}
