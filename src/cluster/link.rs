//! The connection to Redis: connect and every call bounded by `timeout_ms`,
//! failures sorted into the `kind`s of `keygate_cluster_sync_failures_total`,
//! and reasons that never carry the URL or its password.

use crate::config::ClusterConfig;
use crate::telemetry::metrics::UpstreamErrorKind;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use std::time::Duration;

/// Why a call to Redis failed: the metric kind and a reason fit for a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct LinkError {
    /// `connect`, `timeout` or `other`.
    pub kind: UpstreamErrorKind,
    /// What went wrong, without the URL.
    pub reason: String,
}

impl LinkError {
    fn timeout(what: &str, after: Duration) -> LinkError {
        LinkError {
            kind: UpstreamErrorKind::Timeout,
            reason: format!("{what} took longer than {} ms", after.as_millis()),
        }
    }

    /// Sorts a client error. The client's own texts name the failure, never
    /// the URL it was given.
    pub fn of(e: &redis::RedisError, connecting: bool) -> LinkError {
        let kind = if e.is_timeout() {
            UpstreamErrorKind::Timeout
        } else if connecting || e.is_connection_refusal() || e.is_connection_dropped() {
            UpstreamErrorKind::Connect
        } else {
            UpstreamErrorKind::Other
        };
        let what = if connecting { "connect" } else { "call" };
        LinkError {
            kind,
            reason: format!("{what}: {}{}", e.category(), detail(e)),
        }
    }
}

fn detail(e: &redis::RedisError) -> String {
    // Server error details (e.g. WRONGPASS, NOSCRIPT) and I/O errors are
    // short and name no secret; a URL is only ever in parse errors, which
    // `keygate check` has already ruled out.
    match (e.code(), e.detail()) {
        (Some(code), Some(d)) => format!(" ({code} {d})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(d)) if !d.contains("://") => format!(" ({d})"),
        _ if e.is_io_error() => format!(" ({})", io_reason(e)),
        _ => String::new(),
    }
}

fn io_reason(e: &redis::RedisError) -> String {
    let text = e.to_string();
    if text.contains("://") {
        "I/O error".into()
    } else {
        text
    }
}

/// One Redis server, as `[cluster]` names it, and the connection to it.
pub struct Link {
    /// The settings this link was made with.
    pub config: ClusterConfig,
    client: Client,
    conn: Option<MultiplexedConnection>,
    /// Redis's clock less this instance's monotonic one, µs, as of the last
    /// answer that carried it (it can only be read late, so it errs early).
    pub clock_offset: Option<i64>,
}

impl Link {
    /// A link that connects on first use.
    pub fn new(config: ClusterConfig) -> Result<Link, LinkError> {
        let client = Client::open(config.redis.secret()).map_err(|e| LinkError {
            kind: UpstreamErrorKind::Other,
            reason: format!("invalid redis URL: {}", e.category()),
        })?;
        Ok(Link {
            config,
            client,
            conn: None,
            clock_offset: None,
        })
    }

    /// The connection, made within `timeout_ms` if there is none.
    pub async fn connection(&mut self) -> Result<MultiplexedConnection, LinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let t = self.config.timeout;
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let conn = match tokio::time::timeout(
            t,
            self.client
                .get_multiplexed_async_connection_with_config(&settings),
        )
        .await
        {
            Err(_) => return Err(LinkError::timeout("connect", t)),
            Ok(Err(e)) => return Err(LinkError::of(&e, true)),
            Ok(Ok(c)) => c,
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one call within `timeout_ms`. On a failure the connection is
    /// dropped, so the next call starts on a fresh one: a server that stopped
    /// answering may never answer on the old one.
    pub async fn call<T>(
        &mut self,
        what: &str,
        call: impl AsyncFnOnce(MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        let conn = self.connection().await?;
        let t = self.config.timeout;
        let result = match tokio::time::timeout(t, call(conn)).await {
            Err(_) => Err(LinkError::timeout(what, t)),
            Ok(Err(e)) => Err(LinkError::of(&e, false)),
            Ok(Ok(v)) => Ok(v),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}
