//! Logs on stdout: one access-log line per request (target `keygate::access`)
//! and operational events, as JSON lines (default) or text. `RUST_LOG` filters.
//!
//! The access record has no field that could hold a key, a key hash or an
//! `Authorization` value: it is built from the decision's outcome, not from
//! request headers, and the path is logged without its query string.

use std::str::FromStr;

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber (once per process).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::from_str("info").unwrap_or_default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// The fields of one access-log line.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// `X-Request-Id` as answered.
    pub request_id: &'a str,
    /// Client IP.
    pub client: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path, no query string.
    pub path: &'a str,
    /// Route name or `unmatched`.
    pub route: &'a str,
    /// Status sent (0 if the client vanished first).
    pub status: u16,
    /// `proxied`, a denial reason, `rate_limited`, `upstream_*`, ...
    pub outcome: &'a str,
    /// Key id, when a key authenticated.
    pub key_id: Option<&'a str>,
    /// Key's company.
    pub company: Option<&'a str>,
    /// Workspace reached.
    pub workspace: Option<&'a str>,
    /// Upstream name of the matched route.
    pub upstream: Option<&'a str>,
    /// Milliseconds from request head to end of response.
    pub duration_ms: f64,
}

/// Writes one access-log line.
pub fn access(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "keygate::access",
        request_id = r.request_id,
        client = r.client,
        method = r.method,
        path = r.path,
        route = r.route,
        status = r.status,
        outcome = r.outcome,
        key_id = r.key_id,
        company = r.company,
        workspace = r.workspace,
        upstream = r.upstream,
        duration_ms = r.duration_ms,
        "request"
    );
}
