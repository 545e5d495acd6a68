//! Wire-level client faults, black box: requests Pingora's HTTP/1 parser
//! refuses (answered with keygate's JSON, logged and counted, never proxied),
//! request heads and bodies that stop arriving (408 at `header_timeout_ms` /
//! `body_timeout_ms`, not an upstream timeout), TLS connections that never
//! send a hello or send something else, and HTTP/2 connections that sit idle,
//! never finish a HEADERS block or never send the client preface. Each test
//! also checks that the gateway keeps serving and that nothing was logged at
//! ERROR.

use crate::support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls::{self, ClientConnection, StreamOwned};

// ------------------------------------------------------------------ helpers --

const BAD_REQUEST: &str = r#"{"code":"BAD_REQUEST","message":"Invalid request"}"#;
const CONNECT_REFUSED: &str =
    r#"{"code":"METHOD_NOT_ALLOWED","message":"Method CONNECT is not supported"}"#;
const HEAD_TIMEOUT: &str =
    r#"{"code":"REQUEST_TIMEOUT","message":"Request head not received in time"}"#;
const BODY_TIMEOUT: &str =
    r#"{"code":"REQUEST_TIMEOUT","message":"Request body not received in time"}"#;

/// The upstream-timeout counter, which a client's stall must never move.
const UPSTREAM_TIMEOUTS: &str = r#"keygate_upstream_errors_total{kind="timeout",upstream="api"}"#;

/// The gateway, its echo upstream, a company `admin` key (id `k_admin`) and,
/// for TLS fixtures, the PKI the listener's certificate comes from.
struct Fx {
    up: Upstream,
    gw: Gateway,
    admin: String,
    pki: Option<Pki>,
}

/// `config` with `lines` added to its `[server]` table.
fn with_server_lines(config: &str, lines: &str) -> String {
    const ANCHOR: &str = "grace_period_secs = 5\n";
    assert!(config.contains(ANCHOR), "no [server] anchor in the config");
    config.replacen(ANCHOR, &format!("{ANCHOR}{lines}"), 1)
}

/// A plain-HTTP gateway with `server` lines in `[server]`, the config text
/// then passed through `edit`.
fn plain_fixture(server: &str, edit: impl FnOnce(String) -> String) -> Fx {
    let up = Upstream::start();
    let config = edit(with_server_lines(&standard_config(up.addr, "", ""), server));
    let mut snap = Snapshot::new();
    let admin = snap.company_key("k_admin", "acme").scopes(&["admin"]).add();
    let gw = Gateway::start(&config, &snap.render());
    Fx {
        up,
        gw,
        admin,
        pki: None,
    }
}

/// A gateway with a TLS listener on `{https}` (plain HTTP allowed beside it),
/// `header_timeout_ms = 500` and `keepalive_timeout_secs = 1`.
fn tls_fixture() -> Fx {
    let up = Upstream::start();
    let pki = Pki::new();
    let config = with_server_lines(
        &standard_config(up.addr, "", ""),
        "header_timeout_ms = 500\nkeepalive_timeout_secs = 1\n\n[server.tls]\nlisten = [\"127.0.0.1:{https}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nplain_http = \"allow\"\n",
    );
    let mut snap = Snapshot::new();
    let admin = snap.company_key("k_admin", "acme").scopes(&["admin"]).add();
    let gw = start_with_files(&config, &snap.render(), |d| pki.write(d));
    Fx {
        up,
        gw,
        admin,
        pki: Some(pki),
    }
}

impl Fx {
    fn port(&self) -> u16 {
        self.gw.ports.http
    }

    fn https_port(&self) -> u16 {
        self.gw.ports.https
    }

    fn pki(&self) -> &Pki {
        self.pki.as_ref().expect("a TLS fixture")
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port())
    }

    /// A plain authorized request still gets through, end to end.
    #[track_caller]
    fn assert_serving(&self) {
        let before = self.up.count();
        let r = self
            .gw
            .get("/api/v1/company/still-serving", Some(&self.admin));
        assert_eq!(r.status().as_u16(), 200, "the gateway still serves");
        assert_eq!(self.up.count(), before + 1);
        assert_eq!(self.up.last().url, "/api/v1/company/still-serving");
    }

    /// An authorized HTTPS request over HTTP/2 (reqwest, ALPN h2) gets through.
    #[track_caller]
    fn assert_serving_h2(&self) {
        let before = self.up.count();
        let resp = self
            .pki()
            .client(self.https_port())
            .get(self.https_url("/api/v1/company/still-serving-h2"))
            .bearer_auth(&self.admin)
            .send()
            .expect("an HTTPS answer");
        assert_eq!(resp.status(), 200, "the TLS listener still serves");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "over HTTP/2");
        assert_eq!(self.up.count(), before + 1);
        assert_eq!(self.up.last().url, "/api/v1/company/still-serving-h2");
    }

    /// The access-log line of the request with this `X-Request-Id`.
    fn access_line(&self, request_id: &str) -> serde_json::Value {
        self.gw.access_line(request_id)
    }

    /// No line of the log is at level ERROR.
    #[track_caller]
    fn assert_no_error_logged(&self) {
        self.gw.assert_no_error_logged();
    }

    /// No key, key hash (either form) or bearer credential is in the log.
    #[track_caller]
    fn assert_no_secrets_logged(&self) {
        assert_keys_kept_out_of(&self.gw.log(), std::slice::from_ref(&self.admin));
    }

    /// Waits for a counter to reach `value`, then checks it is exactly that.
    #[track_caller]
    fn assert_metric_settles(&self, series: &str, value: f64) {
        let got = wait_for(
            &format!("{series} to reach {value}"),
            Duration::from_secs(10),
            || {
                let v = self.gw.metric(series).unwrap_or(0.0);
                (v >= value).then_some(v)
            },
        );
        assert_eq!(got, value, "{series}");
    }
}

/// A gateway-made answer: the status, `Content-Type: application/json`, an
/// `X-Request-Id`, and exactly `body`. Returns the request id.
#[track_caller]
fn assert_answer(r: &Reply, status: u16, body: &str, what: &str) -> String {
    assert_eq!(
        r.status,
        status,
        "{what}: status (body {:?})",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: content-type in {:?}",
        r.headers
    );
    assert_eq!(String::from_utf8_lossy(&r.body), body, "{what}: body");
    let id = r
        .header("x-request-id")
        .unwrap_or_else(|| panic!("{what}: no x-request-id in {:?}", r.headers))
        .to_string();
    assert!(!id.is_empty(), "{what}: empty x-request-id");
    id
}

/// A request id the gateway made: 32 lowercase hex digits.
fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How reading a connection to its end turned out.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed: a read returned 0 bytes.
    Eof,
    /// A read failed (reset, broken pipe): closed too.
    Broken(ErrorKind),
    /// Still open at the deadline.
    Open,
}

impl End {
    fn closed(&self) -> bool {
        *self != End::Open
    }
}

/// The outcome of [`read_until_closed`].
#[derive(Debug)]
struct Closing {
    end: End,
    /// From `since` to the end (or the deadline).
    after: Duration,
    /// Bytes that arrived before the end.
    bytes: Vec<u8>,
}

/// Reads `tcp` until the peer closes it or `deadline` passes.
fn read_until_closed(tcp: &mut TcpStream, since: Instant, deadline: Instant) -> Closing {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break End::Open;
        }
        tcp.set_read_timeout(Some(left)).unwrap();
        match tcp.read(&mut chunk) {
            Ok(0) => break End::Eof,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => break End::Broken(e.kind()),
        }
    };
    Closing {
        end,
        after: since.elapsed(),
        bytes,
    }
}

// -------------------------------------------------------------- raw TLS --

/// A blocking TLS client connection to the gateway's TLS port, trusting only
/// the fixture's CA, offering `alpn`; the handshake is complete on return.
fn tls_connect(pki: &Pki, port: u16, alpn: &[&[u8]]) -> StreamOwned<ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("a TLS handshake with the gateway");
    }
    tls
}

// ------------------------------------------------------------ raw HTTP/2 --

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// The ACK flag of SETTINGS and PING.
const ACK: u8 = 0x1;
/// END_STREAM on HEADERS. (END_HEADERS is 0x4; the stalled test leaves it off.)
const END_STREAM: u8 = 0x1;

/// One HTTP/2 frame on the wire: 9-byte header, then the payload.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24);
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A frame the server sent.
#[derive(Debug)]
struct Frame {
    ty: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// What waiting for the next frame ended with.
#[derive(Debug)]
enum Next {
    Frame(Frame),
    /// EOF, close_notify, reset or a TLS error: the connection is over.
    Closed,
    /// Nothing more by the deadline.
    Quiet,
}

/// A hand-driven HTTP/2 client connection over TLS (ALPN h2).
struct H2 {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl H2 {
    /// Connects and completes the TLS handshake, checking ALPN picked h2.
    /// Sends nothing.
    fn connect(pki: &Pki, port: u16) -> H2 {
        let tls = tls_connect(pki, port, &[b"h2"]);
        assert_eq!(
            tls.conn.alpn_protocol(),
            Some(&b"h2"[..]),
            "the gateway negotiates h2"
        );
        H2 {
            tls,
            buf: Vec::new(),
        }
    }

    /// Writes bytes; `false` if the connection is already gone.
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.tls
            .write_all(bytes)
            .and_then(|_| self.tls.flush())
            .is_ok()
    }

    /// The client preface and an empty SETTINGS frame.
    fn send_preface(&mut self) {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        assert!(self.send(&out), "the preface could not be sent");
    }

    /// The next whole frame, or how the wait ended.
    fn next(&mut self, deadline: Instant) -> Next {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Next::Frame(f);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Quiet;
            }
            self.tls.sock.set_read_timeout(Some(left)).unwrap();
            match self.tls.read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Next::Closed,
            }
        }
    }

    /// Answers what a well-behaved idle client answers: SETTINGS with an ACK,
    /// PING with a PING ACK of the same payload. Returns whether `f` was the
    /// server's ACK of our SETTINGS.
    fn answer(&mut self, f: &Frame) -> bool {
        match (f.ty, f.flags & ACK) {
            (SETTINGS, 0) => {
                let _ = self.send(&frame(SETTINGS, ACK, 0, &[]));
                false
            }
            (SETTINGS, _) => true,
            (PING, 0) => {
                let _ = self.send(&frame(PING, ACK, 0, &f.payload));
                false
            }
            _ => false,
        }
    }

    /// After the preface: reads until the server's SETTINGS has been
    /// acknowledged by us and ours by it.
    fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut theirs, mut ours) = (false, false);
        while !(theirs && ours) {
            match self.next(deadline) {
                Next::Frame(f) => {
                    if f.ty == SETTINGS && f.flags & ACK == 0 {
                        theirs = true;
                    }
                    if self.answer(&f) {
                        ours = true;
                    }
                }
                Next::Closed => panic!("closed during the SETTINGS exchange"),
                Next::Quiet => panic!("no SETTINGS exchange within 5 s"),
            }
        }
    }
}

// ------------------------------------------------------- parser refusals --

/// Sends one raw request on a fresh connection and checks what comes back is
/// keygate's refusal (exact body, generated id, no `Server` header) and that
/// the connection is then closed. Returns the request id.
#[track_caller]
fn assert_refused(fx: &Fx, what: &str, request: &[u8], status: u16, body: &str) -> String {
    let mut c = Conn::connect(fx.port());
    // A write error means the server closed early; it may still have answered.
    let _ = c.send(request);
    let r = c
        .read_reply()
        .unwrap_or_else(|| panic!("{what}: closed without an answer"));
    let id = assert_answer(&r, status, body, what);
    assert!(
        is_generated_id(&id),
        "{what}: x-request-id {id:?} is not 32 lowercase hex digits"
    );
    assert!(
        r.all("server").is_empty(),
        "{what}: a Server header: {:?}",
        r.headers
    );
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "{what}: connection kept open"
    );
    assert!(
        c.buf.is_empty(),
        "{what}: more after the answer: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    id
}

#[test]
fn requests_the_http1_parser_refuses_get_keygates_json_answer_and_are_closed() {
    let fx = plain_fixture("", |c| c);
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let target = "/api/v1/company/x";
    let many: Vec<String> = (0..300).map(|i| format!("x-h{i}: 1")).collect();
    let mut many_lines = vec![auth.as_str()];
    many_lines.extend(many.iter().map(String::as_str));
    let mut bad_utf8 = b"GET /api/v1/company/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    bad_utf8.extend_from_slice(format!("{auth}\r\n\r\n").as_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "{}5\r\nhello\r\n0\r\n\r\n",
                head(
                    "POST",
                    target,
                    &[&auth, "Transfer-Encoding: chunked, identity"]
                )
            )
            .into_bytes(),
        ),
        (
            "two different Content-Length values",
            format!(
                "{}xy",
                head(
                    "POST",
                    target,
                    &[&auth, "Content-Length: 1", "Content-Length: 2"]
                )
            )
            .into_bytes(),
        ),
        (
            "an obs-fold header line",
            head("GET", target, &[&auth, "X-A: a\r\n  folded"]).into_bytes(),
        ),
        (
            "a bare CR in a header value",
            head("GET", target, &[&auth, "X-A: a\rb"]).into_bytes(),
        ),
        (
            "more than 256 headers",
            head("GET", target, &many_lines).into_bytes(),
        ),
        ("a request-target that is not UTF-8", bad_utf8),
    ];
    let series_400 = r#"keygate_requests_total{route="unmatched",status="400"}"#;
    let series_405 = r#"keygate_requests_total{route="unmatched",status="405"}"#;
    let before_400 = fx.gw.metric(series_400).unwrap_or(0.0);
    let before_405 = fx.gw.metric(series_405).unwrap_or(0.0);

    let mut refused: Vec<(&str, String, u16)> = Vec::new();
    for (what, request) in &cases {
        let id = assert_refused(&fx, what, request, 400, BAD_REQUEST);
        refused.push((*what, id, 400));
    }
    // With a Host that agrees with the authority (`head` would add another).
    let connect = format!(
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n{auth}\r\nConnection: close\r\n\r\n"
    );
    let id = assert_refused(&fx, "CONNECT", connect.as_bytes(), 405, CONNECT_REFUSED);
    refused.push(("CONNECT", id, 405));

    // Each refusal has its access-log line, under the id it was answered with.
    for (what, id, status) in &refused {
        let line = fx.access_line(id);
        assert_eq!(line["status"], *status, "{what}: {line}");
        assert_eq!(line["outcome"], "invalid_request", "{what}: {line}");
        assert_eq!(line["route"], "unmatched", "{what}: {line}");
        assert_eq!(line["method"], "-", "{what}: {line}");
        assert_eq!(line["path"], "-", "{what}: {line}");
    }
    fx.assert_metric_settles(series_400, before_400 + cases.len() as f64);
    fx.assert_metric_settles(series_405, before_405 + 1.0);
    assert_eq!(
        fx.up.count(),
        0,
        "a refused request was proxied: {:?}",
        fx.up.seen()
    );
    fx.assert_serving();
    fx.assert_no_error_logged();
    fx.assert_no_secrets_logged();
}

// ------------------------------------------------------------ slow heads --

#[test]
fn a_request_head_that_stops_arriving_is_408_and_a_silent_client_is_closed() {
    let fx = plain_fixture("header_timeout_ms = 500\n", |c| c);
    let series = r#"keygate_requests_total{route="unmatched",status="408"}"#;
    let partial = format!(
        "GET /api/v1/company/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n",
        fx.admin
    );
    let started = Instant::now();
    let mut c = Conn::connect(fx.port());
    assert!(c.send(partial.as_bytes()));
    let r = c.read_reply().expect("an answer to the unfinished head");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(450) && after < Duration::from_secs(3),
        "408 after {after:?}"
    );
    let id = assert_answer(&r, 408, HEAD_TIMEOUT, "unfinished head");
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "connection kept open after the 408"
    );
    assert!(c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
    let line = fx.access_line(&id);
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    assert_eq!(line["route"], "unmatched", "{line}");
    fx.assert_metric_settles(series, 1.0);

    // Connected, never a byte: closed without a word once the head is late.
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", fx.port())).unwrap();
    let closing = read_until_closed(&mut silent, started, started + Duration::from_secs(3));
    assert_eq!(closing.end, End::Eof, "silent client: {closing:?}");
    assert!(
        closing.bytes.is_empty(),
        "silent client was sent {:?}",
        String::from_utf8_lossy(&closing.bytes)
    );
    assert!(
        closing.after >= Duration::from_millis(450),
        "silent client closed after {:?}, before the header timeout",
        closing.after
    );

    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    fx.assert_serving();
    fx.assert_no_error_logged();
    fx.assert_no_secrets_logged();
}

// ------------------------------------------------------------ slow bodies --

/// POSTs a `Content-Length: 100` body with the admin key, sends 10 bytes of
/// it and then nothing; checks the 408, its access line and that the upstream
/// timeout counter did not move. Returns how long the answer took.
#[track_caller]
fn assert_trickled_body_is_408(fx: &Fx) -> Duration {
    assert_trickled_body_is_408_with(fx, &[])
}

/// [`assert_trickled_body_is_408`] with more request headers; an answer
/// `100 Continue` before the 408 is read past.
#[track_caller]
fn assert_trickled_body_is_408_with(fx: &Fx, extra: &[&str]) -> Duration {
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let mut c = Conn::connect(fx.port());
    let mut lines = vec![auth.as_str(), "Content-Length: 100"];
    lines.extend(extra);
    let request = head("POST", "/api/v1/company/x", &lines);
    assert!(c.send(request.as_bytes()));
    assert!(c.send(b"0123456789"));
    let started = Instant::now();
    let mut r = c.read_reply().expect("an answer to the trickled body");
    if r.status == 100 {
        r = c.read_reply().expect("a final answer after 100 Continue");
    }
    let after = started.elapsed();
    let id = assert_answer(&r, 408, BODY_TIMEOUT, "trickled body");
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "connection kept open after a cut body"
    );
    let line = fx.access_line(&id);
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    assert_eq!(line["path"], "/api/v1/company/x", "{line}");
    assert_eq!(line["key_id"], "k_admin", "{line}");
    assert_eq!(
        fx.gw.metric(UPSTREAM_TIMEOUTS).unwrap_or(0.0),
        0.0,
        "a client's stall was counted as an upstream timeout"
    );
    // The truncated body never reached the upstream whole.
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    after
}

#[test]
fn a_trickled_body_is_408_at_the_body_timeout_not_an_upstream_timeout() {
    // read_timeout_ms = 2000 (standard config) is longer than the body timeout.
    let fx = plain_fixture("body_timeout_ms = 500\n", |c| c);
    let after = assert_trickled_body_is_408(&fx);
    assert!(after < Duration::from_secs(5), "408 after {after:?}");
    fx.assert_serving();
    assert_eq!(fx.gw.metric(UPSTREAM_TIMEOUTS).unwrap_or(0.0), 0.0);
    fx.assert_no_error_logged();
    fx.assert_no_secrets_logged();
}

/// The upstream's `100 Continue` reaches the client first (the upstream
/// started reading the body); the body then stalls. The client still gets
/// its 408, not an empty reply, and the access line says 408.
#[test]
fn a_trickled_body_after_100_continue_still_gets_its_408() {
    let fx = plain_fixture("body_timeout_ms = 500\n", |c| c);
    let after = assert_trickled_body_is_408_with(&fx, &["Expect: 100-continue"]);
    assert!(after < Duration::from_secs(5), "408 after {after:?}");
    fx.assert_serving();
    fx.assert_no_error_logged();
    fx.assert_no_secrets_logged();
}

#[test]
fn a_trickled_body_is_408_even_when_the_upstream_read_timeout_is_shorter() {
    let fx = plain_fixture("body_timeout_ms = 5000\n", |c| {
        assert!(c.contains("read_timeout_ms = 2000\n"));
        c.replacen("read_timeout_ms = 2000\n", "read_timeout_ms = 500\n", 1)
    });
    assert_trickled_body_is_408(&fx);
    fx.assert_serving();
    assert_eq!(fx.gw.metric(UPSTREAM_TIMEOUTS).unwrap_or(0.0), 0.0);
    fx.assert_no_error_logged();
    fx.assert_no_secrets_logged();
}

// -------------------------------------------------------------------- TLS --

#[test]
fn tls_connections_without_a_client_hello_are_closed_and_the_listener_keeps_serving() {
    let fx = tls_fixture();
    // (a) Connected to the TLS port, never a byte.
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", fx.https_port())).unwrap();
    let closing = read_until_closed(&mut silent, started, started + Duration::from_secs(3));
    assert!(
        closing.end.closed(),
        "silent TLS client kept open: {closing:?}"
    );
    assert!(
        closing.after >= Duration::from_millis(450),
        "silent TLS client closed after {:?}, before the header timeout",
        closing.after
    );

    // (b) Plain HTTP where a ClientHello belongs.
    let started = Instant::now();
    let mut garbage = TcpStream::connect(("127.0.0.1", fx.https_port())).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let closing = read_until_closed(&mut garbage, started, started + Duration::from_secs(5));
    assert!(closing.end.closed(), "non-TLS bytes kept open: {closing:?}");

    // (c) The listener still serves, over HTTP/2; and so does plain HTTP.
    fx.assert_serving_h2();
    fx.assert_serving();
    fx.assert_no_error_logged();
    assert_no_secret_in(&fx.gw.log(), "the gateway log");
}

#[test]
fn keepalive_timeout_zero_closes_every_connection_after_its_answer() {
    let fx = plain_fixture("keepalive_timeout_secs = 0\n", |c| c);
    let auth = format!("Authorization: Bearer {}", fx.admin);
    for (what, request) in [
        (
            "an allowed request",
            head("GET", "/api/v1/company/once", &[&auth]),
        ),
        ("a denied one", head("GET", "/api/v1/company/once", &[])),
    ] {
        let mut conn = Conn::connect(fx.gw.ports.http);
        assert!(conn.send(request.as_bytes()));
        let r = conn.read_reply().expect("an answer");
        assert!(r.closes(), "{what}: {r:?}");
        assert!(
            conn.is_closed_within(Duration::from_secs(5)),
            "{what}: the connection stays open"
        );
    }
    fx.assert_serving();
}

#[test]
fn a_kept_alive_connection_is_closed_silently_once_idle_for_the_keepalive_timeout() {
    let fx = plain_fixture(
        "header_timeout_ms = 500\nkeepalive_timeout_secs = 1\n",
        |c| c,
    );
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let mut conn = Conn::connect(fx.port());
    // Four requests 700 ms apart: each answer restarts the idle clock, and a
    // head's own deadline (500 ms) runs from its first byte, not from the
    // answer before it. The connection outlives the keep-alive timeout.
    let opened = Instant::now();
    for n in 0..4 {
        if n > 0 {
            // The idle gap is the scenario, not a wait for the gateway.
            std::thread::sleep(Duration::from_millis(700));
        }
        assert!(
            conn.send(head("GET", "/api/v1/company/kept", &[&auth]).as_bytes()),
            "request {n}: the connection was closed"
        );
        let r = conn
            .read_reply()
            .unwrap_or_else(|| panic!("request {n}: closed instead of answered"));
        assert_eq!(r.status, 200, "request {n}: {r:?}");
        assert!(!r.closes(), "request {n}: {r:?}");
    }
    assert!(opened.elapsed() > Duration::from_millis(1900));
    // Then nothing: closed without a byte, about a second after the answer.
    let since = Instant::now();
    let closing = read_until_closed(&mut conn.stream, since, since + Duration::from_secs(4));
    assert_eq!(closing.end, End::Eof, "idle connection: {closing:?}");
    assert!(
        closing.bytes.is_empty(),
        "idle connection was sent {:?}",
        String::from_utf8_lossy(&closing.bytes)
    );
    assert!(
        closing.after >= Duration::from_millis(900),
        "closed after {:?}, before the 1 s keep-alive timeout",
        closing.after
    );
    assert_eq!(fx.up.count(), 4);
    fx.assert_serving();
    fx.assert_no_error_logged();
}

// ----------------------------------------------------------------- HTTP/2 --

#[test]
fn an_idle_http2_connection_gets_goaway_and_is_closed_after_the_keepalive_timeout() {
    let fx = tls_fixture();
    let mut h2 = H2::connect(fx.pki(), fx.https_port());
    h2.send_preface();
    let started = Instant::now();
    // keepalive_timeout_secs = 1, plus 3 s.
    let deadline = started + Duration::from_secs(4);
    let mut goaway_at = None;
    let closed_at = loop {
        match h2.next(deadline) {
            Next::Frame(f) => {
                if f.ty == GOAWAY && goaway_at.is_none() {
                    goaway_at = Some(started.elapsed());
                }
                h2.answer(&f);
            }
            Next::Closed => break Some(started.elapsed()),
            Next::Quiet => break None,
        }
    };
    let goaway_at = goaway_at.expect("no GOAWAY within keepalive + 3 s");
    let closed_at = closed_at.expect("the idle connection was not closed within keepalive + 3 s");
    assert!(
        goaway_at >= Duration::from_millis(900),
        "GOAWAY after {goaway_at:?}, before the 1 s keep-alive"
    );
    assert!(closed_at >= goaway_at);
    fx.assert_serving_h2();
    fx.assert_serving();
    fx.assert_no_error_logged();
    assert_no_secret_in(&fx.gw.log(), "the gateway log");
}

#[test]
fn http2_headers_never_finished_are_closed_at_the_header_timeout_while_others_are_served() {
    let fx = tls_fixture();
    let connected = Instant::now();
    let mut h2 = H2::connect(fx.pki(), fx.https_port());
    h2.send_preface();
    h2.settle();
    // HEADERS on stream 1 with END_STREAM but not END_HEADERS: a CONTINUATION
    // must follow and never does. HPACK: :method GET, :scheme https, :path /.
    // From here on nothing is written: any other frame would be a protocol
    // error and end the connection for the wrong reason.
    assert!(h2.send(&frame(HEADERS, END_STREAM, 1, &[0x82, 0x87, 0x84])));
    let sent = Instant::now();

    // Meanwhile, a normal HTTP/2 request on another connection is served.
    fx.assert_serving_h2();

    // header_timeout_ms = 500, plus 3 s.
    let deadline = sent + Duration::from_millis(3500);
    let closed_at = loop {
        match h2.next(deadline) {
            Next::Frame(_) => {} // a GOAWAY may come first
            Next::Closed => break Some(connected.elapsed()),
            Next::Quiet => break None,
        }
    };
    let closed_at = closed_at.expect("the stalled HEADERS connection was not closed in time");
    assert!(
        closed_at >= Duration::from_millis(450),
        "closed after {closed_at:?}: before the header timeout, so not by it"
    );
    fx.assert_serving_h2();
    fx.assert_serving();
    fx.assert_no_error_logged();
    assert_no_secret_in(&fx.gw.log(), "the gateway log");
}

/// HTTP/2 `:path` without its leading slash: never routed as `/` (a keyless
/// public route would carry it) and never reaches the upstream. The HTTP/2
/// layer resets the stream (malformed request); were it let through, row 1
/// answers 400.
#[test]
fn http2_path_without_a_leading_slash_never_reaches_the_upstream() {
    let fx = tls_fixture();
    let mut h2 = H2::connect(fx.pki(), fx.https_port());
    h2.send_preface();
    h2.settle();
    // HPACK: :method GET, :scheme https, :authority and :path as literals
    // without indexing (static name indexes 1 and 4).
    let mut block = vec![0x82, 0x87, 0x01, 9];
    block.extend_from_slice(b"localhost");
    let path = b"api/v1/company/x";
    block.push(0x04);
    block.push(path.len() as u8);
    block.extend_from_slice(path);
    assert!(h2.send(&frame(HEADERS, END_STREAM | 0x4, 1, &block)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        match h2.next(deadline) {
            Next::Frame(f) if f.ty == HEADERS => {
                break format!("HEADERS {:02x?}", f.payload.first());
            }
            Next::Frame(f) if f.ty == RST_STREAM || f.ty == GOAWAY => {
                break format!("frame {}", f.ty);
            }
            Next::Frame(f) => {
                h2.answer(&f);
            }
            Next::Closed => break "closed".to_string(),
            Next::Quiet => panic!("no answer to the stream"),
        }
    };
    // 0x8c: `:status 400` from HPACK's static table.
    assert!(
        answer == "HEADERS Some(8c)" || answer == format!("frame {RST_STREAM}"),
        "{answer}"
    );
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    fx.assert_serving_h2();
}

#[test]
fn http2_connection_without_a_client_preface_is_closed_at_the_header_timeout() {
    let fx = tls_fixture();
    let mut h2 = H2::connect(fx.pki(), fx.https_port());
    // TLS done, ALPN h2, then nothing: not even the preface. Whatever the
    // server sends (its SETTINGS, a GOAWAY) goes unanswered.
    let handshaken = Instant::now();
    let deadline = handshaken + Duration::from_millis(3500);
    let closed = loop {
        match h2.next(deadline) {
            Next::Frame(_) => {}
            Next::Closed => break true,
            Next::Quiet => break false,
        }
    };
    assert!(
        closed,
        "a connection without a preface was kept open for {:?}",
        handshaken.elapsed()
    );
    fx.assert_serving_h2();
    fx.assert_serving();
    fx.assert_no_error_logged();
    assert_no_secret_in(&fx.gw.log(), "the gateway log");
}
