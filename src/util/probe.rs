//! The one HTTP client keygate has: a plain HTTP/1.1 `GET` over a std socket,
//! for the readiness probe of its own listeners and for `keygate healthcheck`
//! (a container image has no curl).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Probed address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Connected, but the request or its answer failed or was late.
    #[error("no answer from {addr}")]
    NoAnswer {
        /// Probed address.
        addr: SocketAddr,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `GET path` with `headers` (`Connection: close` is added) and reads
/// the answer until `complete` says enough has come, the server closes, or
/// 4 KiB arrived; the whole exchange is bounded by `timeout`.
pub fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, ProbeError> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let no_answer = |source| ProbeError::NoAnswer { addr, source };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.set_write_timeout(Some(left())).map_err(no_answer)?;
    stream.write_all(request.as_bytes()).map_err(no_answer)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !complete(&got) && got.len() < 4096 {
        if Instant::now() >= deadline {
            return Err(no_answer(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_read_timeout(Some(left())).map_err(no_answer)?;
        match stream.read(&mut buf).map_err(no_answer)? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(got)
}

/// Whether `bytes` hold a whole status line.
pub fn has_status_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\r\n")
}

/// Whether `bytes` hold a whole response head.
pub fn has_head(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}
