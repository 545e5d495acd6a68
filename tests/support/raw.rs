//! Raw HTTP/1.1 on a socket, for requests real clients normalise away (odd
//! targets, duplicate or non-UTF-8 headers, smuggling attempts), and the
//! shared assertions on gateway-made answers.

use super::Seen;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP/1.1 response, from reqwest or read off a raw socket.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn from_reqwest(resp: reqwest::blocking::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.bytes().unwrap().to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header (panics if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} repeated: {all:?}");
        all.first().copied()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Whether the server said it will close the connection.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A gateway-made answer: exact status, `Content-Type: application/json`, a
/// request id, exactly `{"code","message"}`, and `WWW-Authenticate: Bearer`
/// on every 401.
#[track_caller]
pub fn assert_denied(r: &Reply, status: u16, code: &str, message: &str) {
    assert_eq!(
        r.status,
        status,
        "status for {message:?}: body {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "content-type"
    );
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "x-request-id on a denial"
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"code": code, "message": message}),
        "body"
    );
    if status == 401 {
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
}

/// A raw HTTP/1.1 connection, for what real clients normalise away.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The error the connection ended with, if it ended with one (a reset
    /// rather than a close), for failure messages.
    pub ended_with: Option<std::io::ErrorKind>,
}

/// What a read attempt on a raw connection ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    Data,
    Closed,
    TimedOut,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            ended_with: None,
        }
    }

    /// Writes everything; `false` if the server already closed or reset.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    pub fn fill(&mut self) -> ReadEnd {
        let mut chunk = [0u8; 16 * 1024];
        // A signal landing during the read (EINTR) is no end: read again.
        let read = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read,
            }
        };
        match read {
            Ok(0) => ReadEnd::Closed,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                ReadEnd::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                ReadEnd::TimedOut
            }
            Err(e) => {
                self.ended_with = Some(e.kind());
                ReadEnd::Closed
            }
        }
    }

    /// The next whole response; `None` if the server closed (or reset) the
    /// connection before sending a byte of one. A timeout fails the test.
    pub fn read_reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            match self.fill() {
                ReadEnd::Data => {}
                ReadEnd::Closed => {
                    assert!(
                        self.buf.is_empty(),
                        "connection ended inside a response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
                ReadEnd::TimedOut => panic!("no response within 10 s"),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        self.buf.drain(..head_end + 4);
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let body = if let Some(len) = len {
            while self.buf.len() < len {
                assert_eq!(self.fill(), ReadEnd::Data, "connection ended inside a body");
            }
            self.buf.drain(..len).collect()
        } else if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    assert_eq!(
                        self.fill(),
                        ReadEnd::Data,
                        "connection ended inside a chunk"
                    );
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert_eq!(
                        self.fill(),
                        ReadEnd::Data,
                        "connection ended inside a chunk"
                    );
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
            }
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Vec::new()
        } else {
            while self.fill() == ReadEnd::Data {}
            std::mem::take(&mut self.buf)
        };
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Whether the server has closed the connection (reads until EOF, reset or
    /// `within`; bytes that arrive are kept).
    pub fn is_closed_within(&mut self, within: Duration) -> bool {
        self.stream.set_read_timeout(Some(within)).unwrap();
        let closed = loop {
            match self.fill() {
                ReadEnd::Data => {}
                ReadEnd::Closed => break true,
                ReadEnd::TimedOut => break false,
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        closed
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection; its response, or `None` if the server
/// closed the connection without answering.
pub fn exchange(port: u16, request: &[u8]) -> Option<Reply> {
    let mut c = Conn::connect(port);
    // A write error means the server closed early; it may still have answered.
    let _ = c.send(request);
    c.read_reply()
}

/// A request head: `METHOD target HTTP/1.1`, `Host`, then `headers` (each a
/// full line without CRLF), then the blank line.
pub fn head(method: &str, target: &str, headers: &[&str]) -> String {
    let mut h = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for line in headers {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// The identity headers an upstream request carries, folded and sorted.
pub fn identity(seen: &Seen) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| {
            n.replace('_', "-")
                .to_ascii_lowercase()
                .starts_with("x-keygate-")
        })
        .cloned()
        .collect();
    out.sort();
    out
}

pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}
