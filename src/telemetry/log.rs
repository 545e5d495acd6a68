//! Logs on stdout: one access-log line per request (target `keygate::access`)
//! and operational events, as JSON lines (default) or text. `RUST_LOG` filters.
//!
//! The access record has no field that could hold a key, a key hash or an
//! `Authorization` value: it is built from the decision's outcome, not from
//! request headers, and the path is logged without its query string.
//!
//! Access lines in JSON are formatted by hand into stdout's buffer
//! ([`super::sink`]), which its own thread writes in batches (every 100 ms,
//! when 64 KiB pile up, and at exit): one `write(2)` per batch instead of per
//! request, which was a tenth of the gateway's CPU per request, and none on a
//! request's thread, so a stdout that blocks never holds up a request.
//! Operational events go through `tracing` into the same buffer and are
//! written at once. The trade-off: a process killed by SIGKILL loses the last
//! 100 ms of access lines.

use super::sink::Sink;
use crate::util::clock::Clock;
use crate::util::text::{digits, rfc3339_micros};
use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// `--log-format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Targets whose debug and trace lines print whole request or response heads
/// (`Authorization` included): held at INFO whatever `RUST_LOG` says, so no
/// level can put a key in the log.
const HEAD_PRINTING_TARGETS: [&str; 2] = ["pingora_proxy", "pingora_core::protocols"];

/// Whether a line of `target` at `level` may be written at all.
fn never_secret(target: &str, level: &tracing::Level) -> bool {
    *level <= tracing::Level::INFO
        || !HEAD_PRINTING_TARGETS.iter().any(|t| {
            target
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// Pingora's error lines that report nothing wrong with the gateway:
/// a request head cut off by the client or by `header_timeout_ms` (keygate
/// logs the latter itself, at info level, and answers 408), a pooled
/// upstream connection still held by its idle watcher when a request wanted
/// it (the request opens a new connection; nothing fails), and `run
/// --upgrade` still waiting for the sockets (keygate says it waits; a real
/// failure ends the wait with its own error).
const CLIENT_FAULT_LINES: [&str; 3] = [
    "while reading request headers",
    "failed to acquire reusable stream",
    "No incoming socket transfer, sleep",
];

/// The filter of the log layer: [`never_secret`] on every line, and
/// Pingora's client-fault error lines dropped.
struct Guard;

impl<S> tracing_subscriber::layer::Filter<S> for Guard {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        never_secret(meta.target(), meta.level())
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        // Pingora logs through the `log` crate: such events carry the target
        // `log` and the real one in a `log.target` field.
        let bridged = meta.target() == "log";
        if *meta.level() != tracing::Level::ERROR
            || !(bridged || meta.target().starts_with("pingora"))
        {
            return true;
        }
        #[derive(Default)]
        struct Fields {
            message: String,
            log_target: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                match field.name() {
                    "log.target" => self.log_target.push_str(value),
                    "message" => self.message.push_str(value),
                    _ => {}
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write as _;
                match field.name() {
                    "log.target" => {
                        let _ = write!(self.log_target, "{value:?}");
                    }
                    "message" => {
                        let _ = write!(self.message, "{value:?}");
                    }
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = if bridged {
            fields.log_target.trim_matches('"')
        } else {
            meta.target()
        };
        !(target.starts_with("pingora")
            && CLIENT_FAULT_LINES
                .iter()
                .any(|l| fields.message.contains(l)))
    }
}

/// Installs the global subscriber (once per process).
pub fn init(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::from_str("info").unwrap_or_default());
    let guard = Guard;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(super::sink::Events)
        .with_target(true);
    super::sink::stdout().set_json(format == LogFormat::Json);
    super::sink::flush_at_exit();
    let layer = match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(guard)
            .boxed(),
        LogFormat::Text => layer.with_filter(Guard).boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
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
    /// On a shadow route: the check that would have refused it.
    pub shadow: Option<&'a str>,
    /// Milliseconds from request head to end of response.
    pub duration_ms: f64,
}

/// Access-log lines, appended to stdout's buffer.
pub struct AccessLog {
    format: LogFormat,
    clock: Arc<dyn Clock>,
    sink: Arc<Sink>,
    /// Whether `RUST_LOG` lets `keygate::access` through, asked once: the
    /// filter is set at start and never changes, and asking `tracing` runs
    /// it for every line.
    enabled: OnceLock<bool>,
}

impl AccessLog {
    /// An access log in the process's log format, on stdout.
    pub fn new(format: LogFormat, clock: Arc<dyn Clock>) -> Self {
        Self::to(format, clock, Arc::clone(super::sink::stdout()))
    }

    /// An access log into `sink`.
    pub fn to(format: LogFormat, clock: Arc<dyn Clock>, sink: Arc<Sink>) -> Self {
        AccessLog {
            format,
            clock,
            sink,
            enabled: OnceLock::new(),
        }
    }

    /// Records one request (if `RUST_LOG` lets `keygate::access` through).
    pub fn record(&self, r: &AccessRecord<'_>) {
        let enabled = self
            .enabled
            .get_or_init(|| tracing::enabled!(target: "keygate::access", tracing::Level::INFO));
        if !*enabled {
            return;
        }
        if self.format == LogFormat::Text {
            return access(r);
        }
        let unix_micros = self.clock.unix_micros();
        self.sink.push(|buf| write_json_line(buf, r, unix_micros));
    }

    /// Lines dropped because stdout took no writes for too long.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped()
    }

    /// Writes out whatever is pending, on this thread.
    pub fn flush(&self) {
        self.sink.flush();
    }
}

/// One access line in the same shape `tracing`'s JSON formatter gives.
fn write_json_line(buf: &mut Vec<u8>, r: &AccessRecord<'_>, unix_micros: i64) {
    /// `name` is the field's whole lead-in, `,"name":`, so each field is
    /// one copy of it and one of its value.
    fn field(buf: &mut Vec<u8>, name: &[u8], value: &str) {
        buf.extend_from_slice(name);
        json_str(buf, value);
    }
    buf.extend_from_slice(b"{\"timestamp\":\"");
    rfc3339_micros(buf, unix_micros);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    field(buf, b",\"request_id\":", r.request_id);
    field(buf, b",\"client\":", r.client);
    field(buf, b",\"method\":", r.method);
    field(buf, b",\"path\":", r.path);
    field(buf, b",\"route\":", r.route);
    buf.extend_from_slice(b",\"status\":");
    digits(buf, u64::from(r.status), 1);
    field(buf, b",\"outcome\":", r.outcome);
    for (name, value) in [
        (&b",\"key_id\":"[..], r.key_id),
        (b",\"company\":", r.company),
        (b",\"workspace\":", r.workspace),
        (b",\"upstream\":", r.upstream),
        (b",\"shadow\":", r.shadow),
    ] {
        if let Some(v) = value {
            field(buf, name, v);
        }
    }
    // Milliseconds to the microsecond, written from integers: the shortest
    // float form costs more than the rest of the line.
    let micros = (r.duration_ms * 1000.0).round().max(0.0) as u64;
    buf.extend_from_slice(b",\"duration_ms\":");
    digits(buf, micros / 1000, 1);
    buf.push(b'.');
    digits(buf, micros % 1000, 3);
    buf.extend_from_slice(b",\"target\":\"keygate::access\"}\n");
}

/// The bytes [`json_str`] copies as they are. 0xE2 starts U+2028/U+2029
/// (E2 80 A8/A9): a string holding it takes the careful path.
static PLAIN: [bool; 256] = {
    let mut plain = [true; 256];
    let mut b = 0;
    while b < 0x20 {
        plain[b] = false;
        b += 1;
    }
    plain[b'"' as usize] = false;
    plain[b'\\' as usize] = false;
    plain[0x7f] = false;
    plain[0xE2] = false;
    plain
};

/// A JSON string: copied as is when nothing needs escaping (the usual case:
/// ids, names, paths). Beyond what JSON requires, DEL and the line and
/// paragraph separators U+2028/U+2029 are escaped too: log shippers and
/// JavaScript readers split lines on them, and a client chooses the path.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        return;
    }
    buf.push(b'"');
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        match c {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes()),
        }
    }
    buf.push(b'"');
}

/// Writes one access-log line through `tracing` (text format).
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
        shadow = r.shadow,
        duration_ms = r.duration_ms,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_printing_targets_never_log_below_info() {
        use tracing::Level;
        for t in [
            "pingora_proxy",
            "pingora_proxy::proxy_h1",
            "pingora_core::protocols::http::v1::client",
        ] {
            assert!(!never_secret(t, &Level::TRACE), "{t}");
            assert!(!never_secret(t, &Level::DEBUG), "{t}");
            assert!(never_secret(t, &Level::INFO), "{t}");
            assert!(never_secret(t, &Level::ERROR), "{t}");
        }
        for t in ["keygate", "pingora_core::server", "pingora_proxy_x", "h2"] {
            assert!(never_secret(t, &Level::TRACE), "{t}");
        }
    }

    #[test]
    fn json_line_matches_the_tracing_shape_and_escapes() {
        let mut buf = Vec::new();
        write_json_line(
            &mut buf,
            &AccessRecord {
                request_id: "r1",
                client: "127.0.0.1",
                method: "GET",
                path: "/a\"b\\c\u{1}",
                route: "company",
                status: 200,
                outcome: "proxied",
                key_id: Some("k1"),
                company: Some("acme"),
                workspace: None,
                upstream: Some("api"),
                shadow: None,
                duration_ms: 1.5,
            },
            1_795_000_000_000_000,
        );
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\u{1}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["key_id"], "k1");
        assert!(v.get("workspace").is_none());
        assert_eq!(v["target"], "keygate::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(
            v["timestamp"], "2026-11-18T11:06:40.000000Z",
            "the injected time"
        );
    }

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        for (ms, text) in [
            (0.0, "0.000"),
            (0.0004, "0.000"),
            (0.0006, "0.001"),
            (1.5, "1.500"),
            (12.3456, "12.346"),
            (61_000.25, "61000.250"),
        ] {
            let mut buf = Vec::new();
            let r = AccessRecord {
                request_id: "r",
                client: "-",
                method: "GET",
                path: "/",
                route: "-",
                status: 0,
                outcome: "proxied",
                key_id: None,
                company: None,
                workspace: None,
                upstream: None,
                shadow: None,
                duration_ms: ms,
            };
            write_json_line(&mut buf, &r, 0);
            let line = String::from_utf8(buf).unwrap();
            assert!(
                line.contains(&format!(",\"duration_ms\":{text},")),
                "{ms}: {line}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["status"], 0);
        }
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        for s in [
            "plain",
            "a\"b",
            "back\\slash",
            "tab\t",
            "\u{7f}",
            "é",
            "line\u{2028}sep\u{2029}",
            "\u{1}\n\r",
            "\u{e2}\u{20ac}",
        ] {
            let mut buf = Vec::new();
            json_str(&mut buf, s);
            let back: String = serde_json::from_slice(&buf).unwrap();
            assert_eq!(back, s);
            let raw = String::from_utf8(buf).unwrap();
            assert!(
                !raw.contains(['\u{2028}', '\u{2029}', '\u{7f}', '\n']),
                "{raw:?}"
            );
        }
        let mut buf = Vec::new();
        json_str(&mut buf, "/a\u{2028}b");
        assert_eq!(buf, br#""/a\u2028b""#);
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pingoras_client_fault_error_lines_are_dropped() {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(Guard);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "pingora_proxy", "Fail to proxy: Downstream ReadError context: while reading request headers cause: x");
            tracing::error!(target: "pingora_proxy", "Fail to proxy: upstream refused");
            tracing::error!(target: "keygate", "while reading request headers is ours");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("cause: x"), "{out}");
        assert!(out.contains("upstream refused"), "{out}");
        assert!(out.contains("is ours"), "{out}");
    }
}
