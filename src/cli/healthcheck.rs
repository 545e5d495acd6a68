//! `keygate healthcheck`: probes the admin `/healthz` of a running gateway
//! with a plain HTTP/1.1 request, so a container image needs no shell tools
//! for its HEALTHCHECK.

use crate::config::DEFAULT_ADMIN;
use crate::util::probe::{self, ProbeError};
use crate::util::sys::reachable;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The config could not be read for its admin address.
    #[error("cannot read {}", path.display())]
    Read {
        /// Config.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The config's `[admin] listen` is unusable.
    #[error("{}: {what}", path.display())]
    Config {
        /// Config.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// No connection, or no answer in time.
    #[error("admin listener: {0}")]
    Probe(#[from] ProbeError),
    /// An answer that is not 200.
    #[error("http://{addr}/healthz answered {status:?}")]
    Status {
        /// Probed address.
        addr: SocketAddr,
        /// The status line.
        status: String,
    },
}

/// The whole probe must fit in a container HEALTHCHECK timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The config's `[admin] listen`, read without validating the rest: an edit
/// that a reload would refuse must not make a gateway that is still serving
/// look unhealthy (and get it restarted into a config it cannot load).
fn admin_addr(config: &Path) -> Result<SocketAddr, HealthError> {
    let text = std::fs::read_to_string(config).map_err(|source| HealthError::Read {
        path: config.to_path_buf(),
        source,
    })?;
    let bad = |what: String| HealthError::Config {
        path: config.to_path_buf(),
        what,
    };
    let doc: toml::Table = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
    match doc.get("admin").and_then(|a| a.get("listen")) {
        None => Ok(DEFAULT_ADMIN),
        Some(toml::Value::String(s)) => s
            .parse()
            .map_err(|_| bad(format!("admin.listen {s:?} is not an IP:port address"))),
        Some(_) => Err(bad("admin.listen must be a string".into())),
    }
}

/// Probes the admin `/healthz`: Ok on a 200 within 2 s.
pub fn healthcheck(config: &Path, admin: Option<SocketAddr>) -> Result<(), HealthError> {
    let addr = reachable(match admin {
        Some(a) => a,
        None => admin_addr(config)?,
    });
    let got = probe::get(
        addr,
        "/healthz",
        &[("User-Agent", "keygate-healthcheck")],
        PROBE_TIMEOUT,
        probe::has_status_line,
    )?;
    let text = String::from_utf8_lossy(&got);
    let status_line = text.lines().next().unwrap_or_default().trim();
    let mut words = status_line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(v), Some("200")) if v.starts_with("HTTP/1.") => Ok(()),
        _ => Err(HealthError::Status {
            addr,
            status: status_line.chars().take(100).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn healthcheck_fails_fast_when_nothing_listens() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = healthcheck(Path::new("unused.toml"), Some(port)).unwrap_err();
        assert!(
            matches!(e, HealthError::Probe(ProbeError::Connect { .. })),
            "{e}"
        );
    }

    #[test]
    fn healthcheck_wants_a_200() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).unwrap();
                s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        healthcheck(Path::new("unused.toml"), Some(addr)).unwrap();
        let e = healthcheck(Path::new("unused.toml"), Some(addr)).unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn unspecified_admin_addresses_are_probed_on_loopback() {
        let addr: SocketAddr = "0.0.0.0:9091".parse().unwrap();
        assert_eq!(
            crate::util::sys::reachable(addr),
            "127.0.0.1:9091".parse().unwrap()
        );
        let addr: SocketAddr = "[::]:9091".parse().unwrap();
        assert_eq!(
            crate::util::sys::reachable(addr),
            "[::1]:9091".parse().unwrap()
        );
    }
}
