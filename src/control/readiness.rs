//! Readiness: `/readyz` turns 200 only once every proxy listener answers as
//! keygate (a probe carrying this process's secret), so a port taken by
//! another process cannot look ready; a listener that never does ends the
//! process so that a supervisor restarts it.

use crate::request::{Lifecycle, PROBE_HEADER};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Marks the gateway ready once every proxy listener accepts connections.
pub struct Readiness {
    /// Plain listeners: probed over HTTP, expecting keygate's own answer.
    pub(crate) plain: Vec<SocketAddr>,
    /// TLS listeners: a TCP connect (the handshake is not worth a client here).
    pub(crate) tls: Vec<SocketAddr>,
    /// The probe secret the proxy answers (see [`PROBE_HEADER`]).
    pub(crate) probe: String,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) message: Option<String>,
}

/// Whether keygate itself answers on `addr`: a request carrying the probe
/// secret gets `204` with the secret echoed. Connecting alone would also
/// succeed against another process that took the port.
fn probe_answers(addr: SocketAddr, secret: &str) -> bool {
    let Ok(answer) = crate::util::probe::get(
        addr,
        "/",
        &[(PROBE_HEADER, secret)],
        Duration::from_secs(2),
        crate::util::probe::has_head,
    ) else {
        return false;
    };
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    answer.starts_with("http/1.1 204") && answer.contains(&format!("{PROBE_HEADER}: {secret}"))
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
            let addr = crate::util::sys::reachable(listen);
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
                    crate::telemetry::sink::flush();
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Not ready before a SIGHUP can reload: until its handler is in,
        // the signal is ignored, and an operator who reloads right after
        // start-up must not be ignored.
        while !self.lifecycle.reload_signal_handled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.lifecycle.set_ready();
        tracing::info!(plain = ?self.plain, tls = ?self.tls, "ready");
        if let Some(m) = &self.message {
            // After the log lines before it, "ready" among them.
            crate::telemetry::sink::flush();
            println!("{m}");
            crate::util::sys::flush_stdout();
        }
    }
}
