//! Upstream pools: round robin over the healthy servers of each `[[upstreams]]`
//! entry (pingora-load-balancing), optional HTTP health checks, per-upstream
//! timeouts, and TLS to the upstream with SNI and certificate verification.
//!
//! A pool whose config is unchanged is carried over by a reload as the same
//! `Arc`, so its health state and its pooled connections survive.

use crate::config::UpstreamConfig;
use crate::telemetry::metrics::{Metrics, UpstreamMetrics};
use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One upstream and its servers.
pub struct Upstream {
    /// Name from the config.
    pub name: Arc<str>,
    /// The config it was built from (compared on reload).
    pub config: UpstreamConfig,
    /// Error counters.
    pub metrics: UpstreamMetrics,
    lb: LoadBalancer<RoundRobin>,
    servers: Vec<Backend>,
    sni: String,
    ca: Option<Arc<CaType>>,
    group_key: u64,
    next_check: AtomicU64,
}

/// Health of one server, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerHealth {
    /// `ip:port`
    pub address: String,
    /// Whether it is selected for requests.
    pub healthy: bool,
}

/// Why an upstream pool could not be built.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?}: {problem}")]
pub struct UpstreamError {
    /// Upstream name.
    pub upstream: String,
    /// What is wrong.
    pub problem: UpstreamProblem,
}

/// What is wrong with an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamProblem {
    /// A server name did not resolve.
    #[error("cannot resolve {server:?}: {reason}")]
    Resolve {
        /// The server as written.
        server: String,
        /// The resolver's reason.
        reason: String,
    },
    /// A server name resolved to nothing.
    #[error("{server:?} resolves to no address")]
    NoAddress {
        /// The server as written.
        server: String,
    },
    /// `health_check.path` is not a request target.
    #[error("bad health_check.path")]
    HealthPath,
    /// The CA bundle is unusable.
    #[error("ca_file {}: {reason}", path.display())]
    CaFile {
        /// The bundle.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Pingora refused the pool.
    #[error("{0}")]
    Pool(String),
}

impl Upstream {
    /// Resolves the servers and builds the pool. Name resolution happens here,
    /// on the reload path, never per request.
    pub fn build(config: &UpstreamConfig, metrics: &Metrics) -> Result<Upstream, UpstreamError> {
        let err = |problem: UpstreamProblem| UpstreamError {
            upstream: config.name.clone(),
            problem,
        };
        let mut addrs = Vec::new();
        for s in &config.servers {
            let resolved: Vec<_> = s
                .to_socket_addrs()
                .map_err(|e| {
                    err(UpstreamProblem::Resolve {
                        server: s.clone(),
                        reason: e.to_string(),
                    })
                })?
                .collect();
            if resolved.is_empty() {
                return Err(err(UpstreamProblem::NoAddress { server: s.clone() }));
            }
            addrs.extend(resolved);
        }
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs.iter().copied())
            .map_err(|e| err(UpstreamProblem::Pool(e.to_string())))?;
        let sni = config.sni.clone().unwrap_or_else(|| {
            config
                .servers
                .first()
                .and_then(|s| s.rsplit_once(':'))
                .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
        if let Some(hc) = &config.health_check {
            let mut check = HttpHealthCheck::new(&sni, config.tls);
            check.req.set_uri(
                hc.path
                    .parse()
                    .map_err(|_| err(UpstreamProblem::HealthPath))?,
            );
            check.peer_template.options.connection_timeout = Some(config.connect_timeout);
            check.peer_template.options.read_timeout =
                Some(config.read_timeout.min(Duration::from_secs(5)));
            check.peer_template.options.verify_cert = config.verify_cert;
            check.peer_template.options.verify_hostname = config.verify_cert;
            lb.set_health_check(Box::new(check));
        }
        let ca = match &config.ca_file {
            Some(path) => Some(load_ca(path).map_err(err)?),
            None => None,
        };
        let servers = addrs
            .iter()
            .map(|a| Backend::new(&a.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(UpstreamProblem::Pool(e.to_string())))?;
        Ok(Upstream {
            name: config.name.as_str().into(),
            config: config.clone(),
            metrics: metrics.upstream(&config.name),
            lb,
            servers,
            sni,
            ca,
            group_key: group_key(config),
            next_check: AtomicU64::new(0),
        })
    }

    /// Picks the next healthy server, skipping those in `tried` (addresses that
    /// already failed to connect for this request).
    pub fn peer(
        &self,
        tried: &[pingora::protocols::l4::socket::SocketAddr],
    ) -> Option<Box<HttpPeer>> {
        let selected;
        let backend = match self.servers.as_slice() {
            // One server, the common case: nothing to choose, and Pingora's
            // selection would hash it twice and build a set to do so. Without
            // a health check nothing ever marks it down, so its readiness
            // (a SipHash and a map lookup) is not looked up either.
            [only] => {
                let down = self.config.health_check.is_some() && !self.lb.backends().ready(only);
                if down || tried.contains(&only.addr) {
                    return None;
                }
                only
            }
            _ => {
                selected =
                    self.lb
                        .select_with(b"", self.servers.len().max(1) * 2, |b, healthy| {
                            healthy && !tried.contains(&b.addr)
                        })?;
                &selected
            }
        };
        let mut peer = HttpPeer::new(backend, self.config.tls, self.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.config.connect_timeout);
        o.read_timeout = Some(self.config.read_timeout);
        o.write_timeout = Some(self.config.read_timeout);
        o.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        o.verify_cert = self.config.verify_cert;
        o.verify_hostname = self.config.verify_cert;
        o.ca = self.ca.clone();
        peer.group_key = self.group_key;
        Some(Box::new(peer))
    }

    /// Number of servers (after name resolution).
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Runs a health check pass if one is configured and due at `now_secs`.
    pub async fn health_check_if_due(&self, now_secs: u64) {
        let Some(hc) = &self.config.health_check else {
            return;
        };
        let due = self.next_check.load(Ordering::Relaxed);
        if now_secs < due {
            return;
        }
        self.next_check
            .store(now_secs + hc.interval.as_secs().max(1), Ordering::Relaxed);
        self.lb.backends().run_health_check(true).await;
    }

    /// Health of every server.
    pub fn health(&self) -> Vec<ServerHealth> {
        self.servers
            .iter()
            .map(|b| ServerHealth {
                address: b.addr.to_string(),
                healthy: self.lb.backends().ready(b),
            })
            .collect()
    }

    /// Whether at least one server is healthy.
    pub fn is_healthy(&self) -> bool {
        self.servers.iter().any(|b| self.lb.backends().ready(b))
    }
}

/// Pingora pools upstream connections by address, SNI and verification flags,
/// but not by trusted CA: two upstreams on one address with different
/// `ca_file`s could share a connection verified under the other's trust. The
/// group key keeps each upstream's connections to itself.
fn group_key(config: &UpstreamConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    config.name.hash(&mut h);
    config.ca_file.hash(&mut h);
    h.finish()
}

fn load_ca(path: &std::path::Path) -> Result<Arc<CaType>, UpstreamProblem> {
    let bad = |reason: String| UpstreamProblem::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let mut reader = std::io::BufReader::new(&text[..]);
    let mut out = Vec::new();
    let mut store = pingora::tls::RootCertStore::empty();
    for item in rustls_pemfile::certs(&mut reader) {
        let der = item.map_err(|e| bad(e.to_string()))?;
        // webpki parses it first, so the X.509 parser below never sees garbage.
        store.add(der.clone()).map_err(|e| bad(e.to_string()))?;
        out.push(WrappedX509::new(der.to_vec(), |raw| {
            pingora::utils::tls::parse_x509(raw)
        }));
    }
    if out.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(Arc::from(out.into_boxed_slice()))
}
