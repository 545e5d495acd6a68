//! `keygate run`: loads the gateway, binds every listener up front (so a bad
//! address fails at once with a clear message), assembles the Pingora server
//! with its services, and owns the process lifecycle:
//!
//! - SIGHUP: reload (in [`crate::control::reload::ReloadService`]).
//! - SIGTERM: `/readyz` turns 503 at once, listeners stop accepting, in-flight
//!   requests finish for up to `grace_period_secs`, then exit 0. The process
//!   exits as soon as nothing is in flight rather than sleeping out the grace.
//! - SIGINT: exit at once.
//! - SIGQUIT: hands every listener (plain, TLS, admin) to a new process
//!   waiting with `run --upgrade`, then drains like SIGTERM; with nobody
//!   waiting it says so and keeps serving.

use crate::config::Config;
use crate::control::admin::AdminService;
use crate::control::housekeeping::Housekeeping;
use crate::control::readiness::Readiness;
use crate::control::reload::{ReloadService, Reloader};
use crate::gateway::Gateway;
use crate::gateway::cert::CertStore;
use crate::model::problem::Problems;
use crate::request::downstream::ClientApp;
use crate::request::limiter::Limiter;
use crate::request::proxy::Proxy;
use crate::request::{Lifecycle, Shared};
use crate::telemetry::metrics::Metrics;
use crate::util::clock::{Clock, SystemClock};
use crate::util::handover::{ListenerInbox, admin_path, is_listening};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `run` needs besides the config path.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Extra work to do once ready (the demo prints its curl lines).
    pub on_ready_message: Option<String>,
    /// `run --upgrade`: take the listeners of the running gateway.
    pub upgrade: bool,
    /// The log format `logging::init` was given.
    pub log_format: crate::telemetry::log::LogFormat,
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
    Tls(#[from] crate::gateway::cert::CertError),
    /// `--upgrade`: the running gateway's sockets did not arrive.
    #[error("upgrade: {what}: {error}")]
    Upgrade {
        /// Which step.
        what: &'static str,
        /// OS error.
        error: std::io::Error,
    },
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
    crate::util::sys::ignore_hangup_until_handled();
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let gateway = Gateway::load(config_path, &metrics, None).map_err(StartError::Load)?;
    crate::util::sys::release_freed_memory();
    let config: Config = gateway.config.clone();

    // An upgrade takes the running gateway's sockets (which hold these
    // addresses); otherwise every address is bound up front, so a busy one
    // fails at once with a clear message.
    let upgrade_sock = config.server.upgrade_sock.clone();
    let mut admin_listener = None;
    let mut upgrade_lock = None;
    // Sockets bound while waiting for the hand-over are this user's alone:
    // whoever connects to them hands this process its listeners.
    let mut umask = None;
    let admin_inbox = if options.upgrade {
        upgrade_lock = Some(lock_upgrade(&upgrade_sock)?);
        umask = Some(crate::util::sys::set_umask(0o077));
        let inbox = ListenerInbox::bind(&admin_path(&upgrade_sock)).map_err(|error| {
            StartError::Upgrade {
                what: "cannot wait for the admin listener",
                error,
            }
        })?;
        Some(inbox)
    } else {
        for addr in &config.server.listen {
            check_bind(*addr, "server.listen")?;
        }
        if let Some(tls) = &config.server.tls {
            for addr in &tls.listen {
                check_bind(*addr, "server.tls.listen")?;
            }
        }
        admin_listener =
            Some(
                TcpListener::bind(config.admin.listen).map_err(|error| StartError::Bind {
                    addr: config.admin.listen,
                    what: "admin.listen",
                    error,
                })?,
            );
        None
    };

    let now = clock.unix_secs();
    gateway.record_key_gauges(&metrics, now);
    metrics.reload_success.inc();
    metrics.last_reload_success.set(now);
    tracing::info!(loaded = %gateway.summary(), "loaded");
    crate::config::warnings::log(&gateway.config);

    let certs = match (&config.server.tls, &gateway.certificate) {
        (Some(tls), Some(_)) => {
            Some(CertStore::load(&tls.cert, &tls.key).map_err(StartError::Tls)?)
        }
        _ => None,
    };
    let lifecycle = Arc::new(Lifecycle::default());
    let access_log = Arc::new(crate::telemetry::log::AccessLog::new(
        options.log_format,
        Arc::clone(&clock),
    ));
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
        // A backstop a second past keygate's own exit at the grace's end
        // (`exit_when_drained`), so that exit is the one that says how many
        // requests it cut off.
        grace_period_seconds: Some(config.server.grace_period.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = options.upgrade.then(|| Opt {
        upgrade: true,
        ..Opt::default()
    });
    let conf = ServerConf {
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        ..conf
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if options.upgrade {
        let _ = WAITING_ON.set((upgrade_sock.clone(), admin_path(&upgrade_sock)));
        STILL_WAITING.store(true, std::sync::atomic::Ordering::Release);
        crate::util::sys::at_exit(upgrade_gave_up);
        announce_when_waiting(upgrade_sock.clone());
    }
    // With --upgrade this receives the proxy listeners (Pingora exits 1 if
    // they do not come within 5 s); then the admin listener follows.
    server.bootstrap();
    if let Some(mask) = umask {
        crate::util::sys::set_umask(mask);
    }
    let admin_listener = match (admin_listener, admin_inbox) {
        (Some(l), _) => l,
        (None, Some(inbox)) => {
            let inherited =
                inbox
                    .receive(Duration::from_secs(5))
                    .map_err(|error| StartError::Upgrade {
                        what: "the admin listener was not handed over",
                        error,
                    })?;
            adopt_admin(inherited, config.admin.listen)
        }
        (None, None) => unreachable!("either bound here or received"),
    };
    if options.upgrade {
        STILL_WAITING.store(false, std::sync::atomic::Ordering::Release);
        // The next upgrade may wait on the same socket.
        drop(upgrade_lock);
        tracing::info!("upgrade: took over every listener");
    }
    let admin_handover = admin_listener
        .try_clone()
        .map_err(|error| StartError::Bind {
            addr: config.admin.listen,
            what: "admin.listen",
            error,
        })?;
    let phases = server.watch_execution_phase();

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
            .map_err(|e| crate::gateway::cert::CertError::Listener(e.to_string()))?;
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
    let cluster = crate::cluster::ClusterService::new(Arc::clone(&shared));
    let fleet = cluster.reader();
    server.add_service(background_service("cluster", cluster));
    server.add_service(background_service(
        "admin",
        AdminService::new(admin_listener, Arc::clone(&shared), reloader, fleet),
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
            upgrade_sock,
            admin: admin_handover,
            phases: std::sync::Mutex::new(Some(phases)),
        }),
    });
    access_log.flush();
    std::process::exit(0)
}

/// What this process waits on for the running gateway's sockets, and
/// whether it still waits: Pingora exits the process itself when they do
/// not come.
static WAITING_ON: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
static STILL_WAITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// At exit, if still waiting: says why and removes the sockets waited on.
/// Runs as the process exits, when thread-locals (and so `tracing`) may be
/// gone: it writes to stderr directly, as start-up errors are told.
extern "C" fn upgrade_gave_up() {
    if !STILL_WAITING.swap(false, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    if let Some((sock, admin)) = WAITING_ON.get() {
        let _ = std::fs::remove_file(sock);
        let _ = std::fs::remove_file(admin);
    }
    crate::util::sys::write_stderr(
        b"keygate: upgrade: no running gateway handed over its listening sockets in time; nothing changed (send SIGQUIT to the running gateway once this process says it is waiting)\n",
    );
}

/// One `run --upgrade` at a time waits on an upgrade socket: a second one
/// would take the socket from the first. Also refuses a path that holds
/// something other than a socket, which the wait would delete.
fn lock_upgrade(sock: &Path) -> Result<std::fs::File, StartError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let refuse = |what, error| StartError::Upgrade { what, error };
    for path in [sock.to_path_buf(), admin_path(sock)] {
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && !meta.file_type().is_socket()
        {
            return Err(refuse(
                "server.upgrade_sock names a file that is not a socket; remove it or choose another path",
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ),
            ));
        }
    }
    let mut lock = sock.as_os_str().to_os_string();
    lock.push(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(|e| refuse("cannot open the upgrade lock", e))?;
    let busy = || {
        refuse(
            "another `keygate run --upgrade` is already waiting on this upgrade_sock",
            std::io::Error::new(std::io::ErrorKind::WouldBlock, sock.display().to_string()),
        )
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(busy()),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(refuse("cannot take the upgrade lock", e));
        }
    }
    // A waiter of a build without the lock.
    if is_listening(sock) {
        return Err(busy());
    }
    Ok(file)
}

/// The admin listener handed over, or a new one when the new config moved
/// `[admin] listen` (the proxy listeners follow the config the same way).
fn adopt_admin(inherited: TcpListener, wanted: SocketAddr) -> TcpListener {
    let Ok(had) = inherited.local_addr() else {
        return inherited;
    };
    if had == wanted {
        return inherited;
    }
    match TcpListener::bind(wanted) {
        Ok(fresh) => {
            tracing::info!(from = %had, to = %wanted, "upgrade: admin listener moved to the new admin.listen");
            fresh
        }
        Err(error) => {
            tracing::warn!(
                from = %had,
                to = %wanted,
                error = %error,
                "upgrade: cannot listen on the new admin.listen; admin stays on the old address until a restart"
            );
            inherited
        }
    }
}

/// Says "send it SIGQUIT" once Pingora listens on the upgrade socket (it
/// binds it inside `bootstrap`, which blocks until the sockets come): a
/// SIGQUIT sent on an earlier line would find nobody waiting and leave the
/// old gateway serving while this process gives up.
fn announce_when_waiting(upgrade_sock: PathBuf) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_listening(&upgrade_sock) {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Pingora opens it to everyone (mode 0666); whoever connects hands
        // this process its listeners, so only this user may.
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) =
            std::fs::set_permissions(&upgrade_sock, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(error = %e, upgrade_sock = %upgrade_sock.display(), "upgrade: cannot make the upgrade socket private");
        }
        tracing::info!(
            upgrade_sock = %upgrade_sock.display(),
            "upgrade: waiting for the listening sockets of the running gateway; send it SIGQUIT"
        );
    });
}

struct NoCallbacks;

#[async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}

/// Pingora's signal watch, with readiness, early exit and a guarded upgrade.
struct Signals {
    lifecycle: Arc<Lifecycle>,
    grace: Duration,
    access_log: Arc<crate::telemetry::log::AccessLog>,
    /// Where a new process (`run --upgrade`) waits for the sockets.
    upgrade_sock: PathBuf,
    /// The admin listener, to hand over beside Pingora's.
    admin: TcpListener,
    /// Pingora's phases: the drain after a hand-over starts once its
    /// listeners have stopped.
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
}

impl Signals {
    /// Starts draining: exits once nothing is in flight, or at the grace.
    fn drain(&self) {
        let lifecycle = Arc::clone(&self.lifecycle);
        let grace = self.grace;
        let access_log = Arc::clone(&self.access_log);
        std::thread::spawn(move || exit_when_drained(&lifecycle, grace, &access_log));
        self.exit_on_interrupt();
    }

    /// SIGINT exits at once, also while draining: Pingora stops watching
    /// signals once a drain starts, so the watch goes on here.
    fn exit_on_interrupt(&self) {
        let access_log = Arc::clone(&self.access_log);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut int) = signal(SignalKind::interrupt()) else {
                return;
            };
            if int.recv().await.is_some() {
                exit_now(&access_log);
            }
        });
    }

    /// SIGQUIT: hands every listener to the new process waiting on the
    /// upgrade socket, or says why not. `true` once handed over.
    fn hand_over(&self) -> bool {
        if !is_listening(&self.upgrade_sock) {
            tracing::warn!(
                upgrade_sock = %self.upgrade_sock.display(),
                "upgrade: no new process is waiting; still serving"
            );
            return false;
        }
        let admin = admin_path(&self.upgrade_sock);
        if let Err(e) = crate::util::handover::send_listener(&admin, &self.admin) {
            tracing::warn!(
                error = %e,
                "upgrade: cannot hand the admin listener to the new process; still serving"
            );
            return false;
        }
        tracing::info!(
            inflight = self.lifecycle.inflight(),
            "upgrade: handing every listener to the new process, then draining"
        );
        // Answers from now on close their connection: clients reconnect, and
        // the new process may take them.
        self.lifecycle.set_handing_over();
        self.exit_on_interrupt();
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner()).take();
        let lifecycle = Arc::clone(&self.lifecycle);
        let grace = self.grace;
        let access_log = Arc::clone(&self.access_log);
        tokio::spawn(async move {
            if let Some(mut phases) = phases {
                loop {
                    match phases.recv().await {
                        Ok(ExecutionPhase::ShutdownStarted) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            lifecycle.set_draining();
            std::thread::spawn(move || exit_when_drained(&lifecycle, grace, &access_log));
        });
        true
    }
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
        loop {
            tokio::select! {
                _ = term.recv() => {
                    self.lifecycle.set_draining();
                    tracing::info!(
                        inflight = self.lifecycle.inflight(),
                        grace_secs = self.grace.as_secs(),
                        "shutdown signal: not ready, draining in-flight requests"
                    );
                    self.drain();
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = quit.recv() => {
                    // Pingora, after a failed hand-over, would shut down
                    // anyway: keygate only lets it try when someone waits.
                    if self.hand_over() {
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
                _ = int.recv() => exit_now(&self.access_log),
            }
        }
    }
}

/// SIGINT: the log written out, then exit 0 whatever is in flight.
fn exit_now(access_log: &crate::telemetry::log::AccessLog) -> ! {
    tracing::info!("SIGINT: exiting now");
    access_log.flush();
    std::process::exit(0)
}

/// Exits 0 once no request has been in flight for two consecutive polls, or
/// when the grace period is over; Pingora's own grace sleep is the backstop.
fn exit_when_drained(
    lifecycle: &Lifecycle,
    grace: Duration,
    access_log: &crate::telemetry::log::AccessLog,
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
    std::process::exit(0);
}
