//! `keygate run`: loads the gateway, binds every listener up front (so a bad
//! address fails at once with a clear message), assembles the Pingora server
//! with its services, and owns the process lifecycle:
//!
//! - SIGHUP: reload (in [`crate::reload::ReloadService`]).
//! - SIGTERM: `/readyz` turns 503 at once, listeners stop accepting, in-flight
//!   requests finish for up to `grace_period_secs`, then exit 0. The process
//!   exits as soon as nothing is in flight rather than sleeping out the grace.
//! - SIGINT: exit at once.
//! - SIGQUIT: like SIGTERM (no socket hand-over to a new process).

use crate::admin::AdminService;
use crate::client::ClientApp;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::problems::Problems;
use crate::proxy::{Proxy, Shared};
use crate::ratelimit::Limiter;
use crate::reload::{ReloadService, Reloader};
use crate::tls::CertStore;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Readiness and in-flight accounting, shared by the proxy, admin and signals.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
    inflight: AtomicUsize,
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<Lifecycle>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    /// Marks a request in flight.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(Arc::clone(self))
    }

    /// Requests in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Listeners accept and state is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// SIGTERM arrived.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the gateway ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the gateway draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Everything `run` needs besides the config path.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra work to do once ready (the demo prints its curl lines).
    pub on_ready_message: Option<String>,
    /// The log format `logging::init` was given.
    pub log_format: crate::logging::LogFormat,
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Config or snapshot refused.
    #[error("{0}")]
    Load(Problems),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// OS error.
        error: std::io::Error,
    },
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
}

fn check_bind(addr: SocketAddr, what: &'static str) -> Result<(), StartError> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|error| StartError::Bind { addr, what, error })
}

/// Loads, binds and runs until a signal ends the process. Returns only on a
/// start-up error.
pub fn run(
    config_path: &Path,
    options: RunOptions,
) -> Result<std::convert::Infallible, StartError> {
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let gateway = Gateway::load(config_path, &metrics, None).map_err(StartError::Load)?;
    crate::sys::release_freed_memory();
    let config: Config = gateway.config.clone();

    for addr in &config.server.listen {
        check_bind(*addr, "server.listen")?;
    }
    if let Some(tls) = &config.server.tls {
        for addr in &tls.listen {
            check_bind(*addr, "server.tls.listen")?;
        }
    }
    let admin_listener =
        TcpListener::bind(config.admin.listen).map_err(|error| StartError::Bind {
            addr: config.admin.listen,
            what: "admin.listen",
            error,
        })?;

    let now = clock.unix_secs();
    gateway.record_key_gauges(&metrics, now);
    metrics.reload_success.inc();
    metrics.last_reload_success.set(now);
    tracing::info!(loaded = %gateway.summary(), "loaded");
    log_warnings(&gateway.config);

    let certs = match (&config.server.tls, &gateway.certificate) {
        (Some(tls), Some(_)) => {
            Some(CertStore::load(&tls.cert, &tls.key).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let lifecycle = Arc::new(Lifecycle::default());
    let access_log = Arc::new(crate::logging::AccessLog::new(options.log_format));
    let limiter = Arc::new(Limiter::new(
        Arc::clone(&clock),
        config.rate_limit.max_buckets,
    ));
    let shared = Arc::new(Shared {
        state: Arc::new(ArcSwap::from_pointee(gateway)),
        limiter,
        metrics,
        clock,
        lifecycle: Arc::clone(&lifecycle),
        access_log: Arc::clone(&access_log),
        probe: format!("{:032x}", rand::random::<u128>()),
    });
    let reloader = Arc::new(Reloader::new(
        config_path.to_path_buf(),
        Arc::clone(&shared),
        certs.clone(),
    ));

    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let http = Arc::new(pingora::proxy::http_proxy(
        &server.configuration,
        Proxy::new(Arc::clone(&shared)),
    ));
    let mut proxy = pingora::services::listening::Service::new(
        "keygate".to_string(),
        ClientApp::new(Arc::clone(&http), Arc::clone(&shared), None),
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    // TLS listeners accept plain TCP: the handshake is keygate's, so that it
    // has the head deadline and a client's failure is not an error line.
    if let (Some(tls), Some(store)) = (&config.server.tls, &certs) {
        let mut settings = TlsSettings::with_callbacks(Box::new(NoCallbacks))
            .map_err(|e| StartError::Tls(e.to_string()))?;
        settings.set_cert_resolver(Arc::clone(store) as Arc<dyn pingora::tls::ResolvesServerCert>);
        settings.enable_h2();
        let mut secure = pingora::services::listening::Service::new(
            "keygate-tls".to_string(),
            ClientApp::new(
                Arc::clone(&http),
                Arc::clone(&shared),
                Some(settings.build()),
            ),
        );
        for addr in &tls.listen {
            secure.add_tcp(&addr.to_string());
        }
        server.add_service(secure);
    }
    server.add_service(background_service(
        "reload",
        ReloadService {
            reloader: Arc::clone(&reloader),
        },
    ));
    server.add_service(background_service(
        "admin",
        AdminService::new(admin_listener, Arc::clone(&shared), reloader),
    ));
    server.add_service(background_service(
        "housekeeping",
        Housekeeping {
            shared: Arc::clone(&shared),
        },
    ));
    server.add_service(background_service(
        "readiness",
        Readiness {
            plain: config.server.listen.clone(),
            tls: config
                .server
                .tls
                .as_ref()
                .map(|t| t.listen.clone())
                .unwrap_or_default(),
            probe: shared.probe.clone(),
            lifecycle: Arc::clone(&lifecycle),
            message: options.on_ready_message,
        },
    ));
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            lifecycle,
            grace: config.server.grace_period,
            access_log: Arc::clone(&access_log),
        }),
    });
    access_log.flush();
    flush_stdout();
    std::process::exit(0)
}

struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

fn flush_stdout() {
    let _ = std::io::stdout().flush();
}

/// Pingora's signal watch, with readiness and early exit added.
struct Signals {
    lifecycle: Arc<Lifecycle>,
    grace: Duration,
    access_log: Arc<crate::logging::AccessLog>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        // SIGQUIT would be Pingora's socket hand-over to a new process, which
        // keygate does not start; it is treated as SIGTERM so nothing is lost.
        tokio::select! {
            _ = async { tokio::select! { _ = term.recv() => {}, _ = quit.recv() => {} } } => {
                self.lifecycle.set_draining();
                tracing::info!(
                    inflight = self.lifecycle.inflight(),
                    grace_secs = self.grace.as_secs(),
                    "shutdown signal: not ready, draining in-flight requests"
                );
                let lifecycle = Arc::clone(&self.lifecycle);
                let grace = self.grace;
                let access_log = Arc::clone(&self.access_log);
                std::thread::spawn(move || exit_when_drained(&lifecycle, grace, &access_log));
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                self.access_log.flush();
                flush_stdout();
                std::process::exit(0)
            }
        }
    }
}

/// Exits 0 once no request has been in flight for two consecutive polls, or
/// when the grace period is over; Pingora's own grace sleep is the backstop.
fn exit_when_drained(
    lifecycle: &Lifecycle,
    grace: Duration,
    access_log: &crate::logging::AccessLog,
) {
    let deadline = Instant::now() + grace;
    let mut idle_polls = 0;
    while Instant::now() < deadline {
        if lifecycle.inflight() == 0 {
            idle_polls += 1;
            if idle_polls >= 2 {
                break;
            }
        } else {
            idle_polls = 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = lifecycle.inflight();
    if left > 0 {
        tracing::warn!(
            inflight = left,
            "grace period over; exiting with requests in flight"
        );
    } else {
        tracing::info!("drained; exiting");
    }
    access_log.flush();
    flush_stdout();
    std::process::exit(0);
}

/// Marks the gateway ready once every proxy listener accepts connections.
struct Readiness {
    /// Plain listeners: probed over HTTP, expecting keygate's own answer.
    plain: Vec<SocketAddr>,
    /// TLS listeners: a TCP connect (the handshake is not worth a client here).
    tls: Vec<SocketAddr>,
    /// The probe secret the proxy answers (see [`crate::proxy::PROBE_HEADER`]).
    probe: String,
    lifecycle: Arc<Lifecycle>,
    message: Option<String>,
}

/// Whether keygate itself answers on `addr`: a request carrying the probe
/// secret gets `204` with the secret echoed. Connecting alone would also
/// succeed against another process that took the port.
fn probe_answers(addr: SocketAddr, secret: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: keygate\r\n{}: {secret}\r\nConnection: close\r\n\r\n",
        crate::proxy::PROBE_HEADER
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = s.take(4096).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    answer.starts_with("http/1.1 204")
        && answer.contains(&format!("{}: {secret}", crate::proxy::PROBE_HEADER))
}

/// Where to connect to reach a listener: 0.0.0.0 / [::] are reached on loopback.
pub fn reachable(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

#[async_trait]
impl BackgroundService for Readiness {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let targets = self
            .plain
            .iter()
            .map(|a| (*a, true))
            .chain(self.tls.iter().map(|a| (*a, false)));
        for (listen, plain) in targets {
            let addr = reachable(listen);
            let secret = self.probe.clone();
            loop {
                let secret = secret.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    if plain {
                        probe_answers(addr, &secret)
                    } else {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    }
                })
                .await
                .unwrap_or(false);
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    // Pingora reports a failed bind by ending the listener's
                    // task, not the process: exit so a supervisor restarts us
                    // rather than leave a gateway whose admin looks alive.
                    tracing::error!(%listen, "listener is not keygate's after 30 s; exiting");
                    flush_stdout();
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.lifecycle.set_ready();
        tracing::info!(plain = ?self.plain, tls = ?self.tls, "ready");
        if let Some(m) = &self.message {
            println!("{m}");
            flush_stdout();
        }
    }
}

/// Periodic work off the request path: access-log batches, upstream health
/// checks and the sweep of idle rate-limit buckets.
struct Housekeeping {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        const SWEEP_EVERY: Duration = Duration::from_secs(30);
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    self.shared.access_log.flush();
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            self.shared.access_log.flush();
            let gw = self.shared.state.load_full();
            let now = crate::clock::unix_now().max(0) as u64;
            for upstream in &gw.upstreams {
                if upstream.config.health_check.is_some() {
                    let upstream = Arc::clone(upstream);
                    tokio::spawn(async move { upstream.health_check_if_due(now).await });
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                let limiter = Arc::clone(&self.shared.limiter);
                let left = tokio::task::spawn_blocking(move || limiter.sweep())
                    .await
                    .unwrap_or(0);
                self.shared.metrics.buckets.set(left as i64);
            }
        }
    }
}

/// What `keygate check` found in a config that loads.
#[derive(Debug)]
pub struct Checked {
    /// The one-line summary.
    pub summary: String,
    /// Likely mistakes that do not stop it loading.
    pub warnings: Vec<crate::config::warnings::Warning>,
}

/// `keygate check`: loads everything `run` would and reports.
pub fn check(config_path: &Path) -> Result<Checked, Problems> {
    let metrics = Metrics::new();
    Gateway::load(config_path, &metrics, None).map(|g| Checked {
        summary: g.summary(),
        warnings: crate::config::warnings::warnings(&g.config),
    })
}

/// Logs each warning about a config that was just loaded.
pub fn log_warnings(config: &Config) {
    for w in crate::config::warnings::warnings(config) {
        tracing::warn!("warning: {w}");
    }
}

/// The default config path.
pub fn default_config() -> PathBuf {
    PathBuf::from(crate::config::DEFAULT_PATH)
}
