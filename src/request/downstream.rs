//! Client connections: the TLS handshake, the deadline on a request head, the
//! answers to heads Pingora's parser refuses, and HTTP/2 connection limits.
//!
//! Pingora times a request head per read (60 s between two reads), so a
//! client sending one byte a minute holds a connection for ever. keygate
//! serves its listeners through [`ClientApp`], which wraps every connection in
//! a [`ClientStream`]:
//!
//! - TLS: the handshake is done here, within `header_timeout_ms`; a client
//!   that never says hello, or says something else, is closed and logged at
//!   info level (Pingora would wait 60 s and log an error).
//! - HTTP/1: from the accept (first request) or the first byte (later
//!   requests on a kept-alive connection) the whole head must arrive within
//!   `[server] header_timeout_ms`. A late head with bytes already sent is
//!   answered 408 (JSON), counted and logged as `client_error`; a connection
//!   that sent nothing is closed silently. The proxy marks the head as
//!   received with [`head_received`].
//! - HTTP/1 heads that Pingora's parser refuses (ambiguous framing, obs-fold,
//!   bare CR, more than 256 fields, a non-UTF-8 target, `CONNECT`): Pingora
//!   writes an empty 400 (405 for `CONNECT`) before any keygate code runs.
//!   The stream replaces that answer with keygate's JSON one, with an
//!   `X-Request-Id`, and the connection counts and logs it (`invalid_request`).
//!   Anything written on a connection before its head was handed to keygate
//!   can only be such a refusal.
//! - HTTP/2 (TLS with ALPN `h2`): the client preface and every header block
//!   (a HEADERS frame until the frame that carries END_HEADERS) must arrive
//!   within `header_timeout_ms`, and a connection with no stream open for
//!   `keepalive_timeout_secs` gets a GOAWAY and is closed.
//!
//! The timeouts are read from the live state for each connection and each
//! request, so a reload applies them to what comes next.

use crate::model::denial::Denial;
use crate::request::Shared;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{self as h2, H2Accept};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    ALPN, Digest, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest,
    Ssl, Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Tells the connection of `session` that its request head has been read
/// and handed to keygate, ending the head deadline (and the window in which
/// anything written is Pingora's own refusal). A no-op on HTTP/2 and on
/// connections that are not a [`ClientApp`]'s.
pub fn head_received(session: &ServerSession) {
    if let Some(stream) = session.stream()
        && let Some(client) = stream.as_any().downcast_ref::<ClientStream>()
        && let Watch::Http1(w) = &client.watch
    {
        w.clock.received();
    }
}

/// An answer keygate gave on a connection before any request reached the
/// proxy: a refused head or a late one.
#[derive(Debug)]
struct Refusal {
    denial: Denial,
    request_id: HeaderValue,
    client: String,
    since: Instant,
}

/// Which request of a connection is being read, and which one's head is in.
#[derive(Debug, Default)]
struct HeadClock {
    /// Request number (1 = first) the connection is reading.
    request: AtomicU32,
    /// Request number whose head has been received.
    received: AtomicU32,
    /// What the stream answered by itself, for the connection to count and log.
    refusal: Mutex<Option<Refusal>>,
}

impl HeadClock {
    fn next_request(&self) -> u32 {
        self.request.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn received(&self) {
        let n = self.request.load(Ordering::Relaxed);
        self.received.store(n, Ordering::Relaxed);
    }

    fn head_pending(&self) -> bool {
        self.received.load(Ordering::Relaxed) != self.request.load(Ordering::Relaxed)
    }

    fn take_refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The HTTP/1 head deadline of a [`ClientStream`].
struct Http1Watch {
    clock: Arc<HeadClock>,
    /// The request the deadline below belongs to, and the deadline.
    armed: Option<(u32, Instant)>,
    /// Whether the request being read has sent a byte yet.
    began: bool,
    /// keygate's own answer, replacing Pingora's, and how much of it is out.
    answer: Option<(Bytes, usize)>,
}

/// HTTP/2 frame boundaries, followed to time the preface and header blocks.
struct H2Watch {
    /// Preface bytes still to come.
    preface_left: usize,
    /// The frame header being read.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: usize,
    /// When the open preface or header block must be complete.
    deadline: Option<Instant>,
}

const H2_PREFACE_LEN: usize = 24;
const H2_HEADERS: u8 = 0x1;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

impl H2Watch {
    fn new(deadline: Instant) -> Self {
        H2Watch {
            preface_left: H2_PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            deadline: Some(deadline),
        }
    }

    /// Follows the frames in `bytes`; `timeout` arms the deadline of a
    /// header block that opens.
    fn observe(&mut self, mut bytes: &[u8], timeout: Duration) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(bytes.len());
            self.preface_left -= n;
            bytes = &bytes[n..];
            if self.preface_left == 0 {
                self.deadline = None;
            }
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < 9 {
                return;
            }
            self.header_len = 0;
            let h = self.header;
            self.payload_left =
                usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let ends = flags & H2_END_HEADERS != 0;
            match kind {
                H2_HEADERS if !ends => {
                    self.deadline
                        .get_or_insert_with(|| Instant::now() + timeout);
                }
                H2_HEADERS | H2_CONTINUATION if ends => self.deadline = None,
                _ => {}
            }
        }
    }
}

enum Watch {
    Http1(Http1Watch),
    H2(H2Watch),
}

/// A client connection whose reads fail with `TimedOut` once the request
/// head (HTTP/1) or header block (HTTP/2) being read is late, and which
/// writes keygate's answer in place of Pingora's refusals.
pub struct ClientStream {
    inner: Stream,
    watch: Watch,
    timeout: Duration,
    /// The timer of the deadline, made only when a read has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    /// An HTTP/1 connection; the first request's deadline runs from now.
    fn http1(inner: Stream, clock: Arc<HeadClock>, timeout: Duration) -> Self {
        let first = clock.next_request();
        ClientStream {
            inner,
            watch: Watch::Http1(Http1Watch {
                clock,
                armed: Some((first, Instant::now() + timeout)),
                began: false,
                answer: None,
            }),
            timeout,
            timer: None,
        }
    }

    /// An HTTP/2 connection; the preface is due within `timeout` from now.
    fn h2(inner: Stream, timeout: Duration) -> Self {
        ClientStream {
            inner,
            watch: Watch::H2(H2Watch::new(Instant::now() + timeout)),
            timeout,
            timer: None,
        }
    }

    fn peer(&self) -> String {
        peer_of(&*self.inner)
    }

    /// Polls the deadline's timer; `Ready` once it has passed.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        if Instant::now() >= deadline {
            return true;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    fn poll_read_http1(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Watch::Http1(w) = &mut self.watch else {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        };
        let request = w.clock.request.load(Ordering::Relaxed);
        if !w.clock.head_pending() {
            // Head in: bodies and idle keep-alive have timeouts of their own.
            if w.armed.is_some() {
                w.armed = None;
                self.timer = None;
            }
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Watch::Http1(w) = &mut self.watch else {
            return polled;
        };
        let got_bytes = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        let deadline = match w.armed {
            Some((n, deadline)) if n == request => deadline,
            _ => {
                // A later request: its clock starts with its first byte.
                w.armed = None;
                w.began = false;
                self.timer = None;
                if got_bytes {
                    w.armed = Some((request, Instant::now() + self.timeout));
                    w.began = true;
                }
                return polled;
            }
        };
        w.began |= got_bytes;
        if polled.is_ready() {
            return polled;
        }
        if !self.expired(cx, deadline) {
            return Poll::Pending;
        }
        let peer = self.peer();
        let Watch::Http1(w) = &mut self.watch else {
            return polled;
        };
        if w.began {
            // Pingora answers nothing to a read error; the answer is written
            // when it shuts the connection down.
            let refusal = Refusal {
                denial: Denial::HeadTimeout,
                request_id: crate::request::headers::new_request_id(),
                client: client_ip(&peer),
                since: deadline - self.timeout,
            };
            w.answer = Some((raw_answer(&refusal.denial, &refusal.request_id), 0));
            *w.clock.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        }
        tracing::info!(
            client = %peer,
            timeout_ms = self.timeout.as_millis() as u64,
            "request head not received in time; connection closed"
        );
        // Stays expired: every later read fails too.
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    }

    fn poll_read_h2(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Watch::H2(w) = &mut self.watch else {
            return polled;
        };
        if let Poll::Ready(Ok(())) = polled {
            w.observe(&buf.filled()[before..], self.timeout);
        }
        let Some(deadline) = w.deadline else {
            self.timer = None;
            return polled;
        };
        // Checked on ready reads too: a header block trickled byte by byte
        // must not outlive its deadline.
        if !self.expired(cx, deadline) {
            return polled;
        }
        tracing::info!(
            client = %self.peer(),
            timeout_ms = self.timeout.as_millis() as u64,
            "HTTP/2 preface or header block not received in time; connection closed"
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "HTTP/2 header block not received in time",
        )))
    }

    /// Writes out what is left of keygate's own answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Watch::Http1(w) = &mut self.watch else {
            return Poll::Ready(Ok(()));
        };
        while let Some((bytes, done)) = &mut w.answer {
            if *done == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether bytes Pingora writes now are its own refusal of a head (they
    /// are swallowed; keygate's answer goes out instead). The first of them
    /// name the status Pingora chose.
    fn refusing(&mut self, first: &[u8]) -> bool {
        let Watch::Http1(w) = &mut self.watch else {
            return false;
        };
        if w.answer.is_some() {
            return true;
        }
        if !w.clock.head_pending() {
            return false;
        }
        let denial = if first.get(9..12) == Some(b"405") {
            Denial::ConnectNotSupported
        } else {
            Denial::InvalidRequest
        };
        let refusal = Refusal {
            denial,
            request_id: crate::request::headers::new_request_id(),
            client: client_ip(&peer_of(&*self.inner)),
            since: w
                .armed
                .map_or_else(Instant::now, |(_, deadline)| deadline - self.timeout),
        };
        w.answer = Some((raw_answer(&refusal.denial, &refusal.request_id), 0));
        *w.clock.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        true
    }
}

fn peer_of(stream: &dyn pingora::protocols::IO) -> String {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().map(|a| a.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The IP part of a peer address as `ip:port` or `[ip]:port`.
fn client_ip(peer: &str) -> String {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => "-".into(),
    }
}

/// A whole HTTP/1.1 response carrying `denial`, closing the connection.
fn raw_answer(denial: &Denial, request_id: &HeaderValue) -> Bytes {
    let body = denial.body();
    let status =
        http::StatusCode::from_u16(denial.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.watch {
            Watch::Http1(_) => self.poll_read_http1(cx, buf),
            Watch::H2(_) => self.poll_read_h2(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refusing(buf) {
            ready!(self.poll_answer(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.refusing(first) {
            ready!(self.poll_answer(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        // A late head's 408 goes out before the connection closes.
        let _ = std::future::poll_fn(|cx| self.poll_answer(cx)).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Streams open on an HTTP/2 connection; wakes the connection when the last
/// one ends.
#[derive(Debug, Default)]
struct OpenStreams {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl OpenStreams {
    fn enter(self: &Arc<Self>) -> StreamGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        StreamGuard(Arc::clone(self))
    }

    /// Returns once no stream is open.
    async fn none_open(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct StreamGuard(Arc<OpenStreams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Malformed HTTP/2 streams tolerated on one connection (as Pingora's own loop).
const MAX_REJECTED_STREAMS: u32 = 32;

/// How long a connection told GOAWAY may take to finish its streams.
const GOAWAY_DRAIN: Duration = Duration::from_secs(5);

/// The listeners' application: Pingora's HTTP proxy, with keygate's TLS
/// handshake and client timeouts around each connection.
pub struct ClientApp<A> {
    proxy: Arc<A>,
    shared: Arc<Shared>,
    /// Set on TLS listeners: the handshake is done here.
    tls: Option<Acceptor>,
}

impl<A: HttpServerApp + Send + Sync + 'static> ClientApp<A> {
    /// Serves `proxy` (Pingora's HTTP proxy) under the timeouts of the live
    /// state in `shared`; with `tls`, every connection first completes a TLS
    /// handshake.
    pub fn new(proxy: Arc<A>, shared: Arc<Shared>, tls: Option<Acceptor>) -> Self {
        ClientApp { proxy, shared, tls }
    }

    /// Keep-alive for the next request, in Pingora's terms (`None`: close
    /// after the response; Pingora reads `Some(0)` as "no limit").
    fn keepalive(&self, shutdown: &ShutdownWatch) -> Option<u64> {
        if *shutdown.borrow() || self.shared.lifecycle.is_handing_over() {
            return None;
        }
        let idle = self.shared.state.load().config.server.keepalive_timeout;
        idle.map(|d| d.as_secs().max(1))
    }

    /// The TLS handshake, within the head timeout.
    async fn handshake(
        &self,
        acceptor: &Acceptor,
        stream: Stream,
        timeout: Duration,
    ) -> Option<Stream> {
        let peer = peer_of(&*stream);
        let Ok(l4) = stream
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
        else {
            tracing::error!("TLS listener handed a stream that is not a socket");
            return None;
        };
        match tokio::time::timeout(timeout, acceptor.tls_handshake(*l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                // A client that closes before finishing its hello (a load
                // balancer's TCP check, the readiness probe, a port scan) is
                // routine: not worth a line at the default level.
                let cause = e.root_cause();
                let closed = cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
                    || cause.to_string().contains("handshake eof");
                if closed {
                    tracing::debug!(client = %peer, cause = %cause, "TLS client closed before its handshake ended");
                } else {
                    tracing::info!(client = %peer, reason = e.etype().as_str(), cause = %cause, "TLS handshake failed; connection closed");
                }
                None
            }
            Err(_) => {
                tracing::info!(
                    client = %peer,
                    timeout_ms = timeout.as_millis() as u64,
                    "TLS handshake not completed in time; connection closed"
                );
                None
            }
        }
    }

    /// Counts and logs an answer the stream gave by itself.
    fn record(&self, refusal: Refusal) {
        let gw = self.shared.state.load();
        let status = refusal.denial.status();
        let metrics = gw.route_metrics(None);
        metrics.request(status);
        let elapsed = refusal.since.elapsed();
        metrics.duration.observe(elapsed.as_secs_f64());
        self.shared
            .access_log
            .record(&crate::telemetry::log::AccessRecord {
                request_id: refusal.request_id.to_str().unwrap_or("-"),
                client: &refusal.client,
                method: "-",
                path: "-",
                route: crate::telemetry::metrics::UNMATCHED,
                status,
                outcome: match refusal.denial {
                    Denial::HeadTimeout => "client_error",
                    _ => "invalid_request",
                },
                key_id: None,
                company: None,
                workspace: None,
                upstream: None,
                shadow: None,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
            });
    }

    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch, timeout: Duration) {
        let clock = Arc::new(HeadClock::default());
        let stream = ClientStream::http1(stream, Arc::clone(&clock), timeout);
        let mut session = ServerSession::new_http1(Box::new(stream));
        loop {
            session.set_keepalive(self.keepalive(shutdown));
            let served = self.proxy.process_new_http(session, shutdown).await;
            if let Some(refusal) = clock.take_refusal() {
                self.record(refusal);
            }
            let Some(served) = served else { return };
            let (stream, settings) = served.consume();
            clock.next_request();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    /// Pingora's HTTP/2 accept loop, with the preface and header blocks
    /// timed by the stream and idle connections closed with a GOAWAY.
    async fn serve_h2(&self, stream: Stream, shutdown: &ShutdownWatch, timeout: Duration) {
        let digest = Arc::new(Digest {
            ssl_digest: stream.get_ssl_digest(),
            timing_digest: stream.get_timing_digest(),
            proxy_digest: stream.get_proxy_digest(),
            socket_digest: stream.get_socket_digest(),
        });
        let stream: Stream = Box::new(ClientStream::h2(stream, timeout));
        let options = h2_options(&self.shared.state.load().config.server);
        let mut conn = match h2::handshake(stream, Some(options)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(
                    reason = e.etype().as_str(),
                    "HTTP/2 handshake failed; connection closed"
                );
                return;
            }
        };
        let open = Arc::new(OpenStreams::default());
        let mut shutdown = shutdown.clone();
        let mut closing: Option<Instant> = None;
        let mut rejected = 0u32;
        loop {
            let idle_for = self.shared.state.load().config.server.keepalive_timeout;
            let idle = async {
                open.none_open().await;
                match idle_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let drained = async {
                match closing {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                biased;
                _ = drained => return,
                changed = shutdown.changed(), if closing.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        conn.graceful_shutdown();
                        closing = Some(Instant::now() + GOAWAY_DRAIN);
                    }
                    continue;
                }
                _ = idle, if closing.is_none() => {
                    conn.graceful_shutdown();
                    closing = Some(Instant::now() + GOAWAY_DRAIN);
                    continue;
                }
                next = h2::HttpSession::from_h2_conn(&mut conn, Arc::clone(&digest)) => next,
            };
            match next {
                Err(_) | Ok(None) => return,
                Ok(Some(H2Accept::Rejected)) => {
                    rejected += 1;
                    if rejected >= MAX_REJECTED_STREAMS {
                        return;
                    }
                }
                Ok(Some(H2Accept::Session(session))) => {
                    let guard = open.enter();
                    let proxy = Arc::clone(&self.proxy);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        proxy
                            .process_new_http(ServerSession::new_http2(session), &shutdown)
                            .await;
                    });
                }
            }
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ClientApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let timeout = self.shared.state.load().config.server.header_timeout;
        let mut stream = stream;
        // While the listeners are handed to a new process, this one stops
        // soon: wait for the client's first bytes (counted in flight, so the
        // drain waits too) before Pingora, which drops a connection with
        // nothing read yet at shutdown, sees it.
        let _held = if self.shared.lifecycle.is_handing_over() {
            let held = self.shared.lifecycle.enter();
            let mut first = [0u8; 1];
            let _ = tokio::time::timeout(timeout, stream.try_peek(&mut first)).await;
            Some(held)
        } else {
            None
        };
        let stream = match &self.tls {
            Some(acceptor) => self.handshake(acceptor, stream, timeout).await?,
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            self.serve_h2(stream, shutdown, timeout).await;
        } else {
            self.serve_http1(stream, shutdown, timeout).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await
    }
}

/// Pingora's bounded HTTP/2 settings, with a header-list limit (the
/// `SETTINGS_MAX_HEADER_LIST_SIZE` a client is told, 64 KiB by default)
/// well above `max_header_bytes`: a head over that gets keygate's JSON 431,
/// as over HTTP/1, instead of the HTTP/2 layer's bare 431 and
/// `REFUSED_STREAM` (which clients such as curl retry). HTTP/2 counts 32
/// bytes a field where a line counts `: ` and CRLF; the pseudo-headers are
/// four more fields.
fn h2_options(server: &crate::config::ServerConfig) -> h2::H2Options {
    let fields = server.max_headers.saturating_add(4);
    let limit = server
        .max_header_bytes
        .saturating_mul(2)
        .saturating_add(fields.saturating_mul(32));
    let mut options = h2::default_h2_options();
    options.max_header_list_size(u32::try_from(limit).unwrap_or(u32::MAX));
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, kind: u8, flags: u8) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len, 0xAB);
        f
    }

    #[tokio::test]
    async fn h2_watch_times_the_preface_and_open_header_blocks() {
        let t = Duration::from_secs(1);
        let mut w = H2Watch::new(Instant::now() + t);
        w.observe(b"PRI * HTTP/2.0\r\n\r\nSM", t);
        assert!(w.deadline.is_some(), "preface incomplete");
        w.observe(b"\r\n\r\n", t);
        assert!(w.deadline.is_none(), "preface done");
        // SETTINGS, then HEADERS with END_HEADERS: nothing armed.
        let mut bytes = frame(6, 0x4, 0);
        bytes.extend(frame(3, H2_HEADERS, H2_END_HEADERS | 0x1));
        w.observe(&bytes, t);
        assert!(w.deadline.is_none());
        // HEADERS without END_HEADERS, split across reads: armed.
        let open = frame(5, H2_HEADERS, 0x1);
        w.observe(&open[..4], t);
        assert!(w.deadline.is_none(), "frame header not complete yet");
        w.observe(&open[4..], t);
        let armed = w.deadline.expect("armed by the open block");
        // A CONTINUATION without END_HEADERS keeps the same deadline.
        w.observe(&frame(2, H2_CONTINUATION, 0), t);
        assert_eq!(w.deadline, Some(armed));
        // The one that ends the block disarms it.
        w.observe(&frame(2, H2_CONTINUATION, H2_END_HEADERS), t);
        assert!(w.deadline.is_none());
        // DATA frames with payloads are skipped whole, even with header-like bytes.
        let mut data = frame(20, 0x0, 0);
        data[9..18].copy_from_slice(&[0, 0, 1, H2_HEADERS, 0, 0, 0, 0, 3]);
        w.observe(&data, t);
        assert!(w.deadline.is_none());
    }

    #[test]
    fn answers_replace_pingoras_refusals_whole() {
        let id = HeaderValue::from_static("abc");
        let raw = raw_answer(&Denial::InvalidRequest, &id);
        let text = std::str::from_utf8(&raw).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 50\r\nx-request-id: abc\r\nconnection: close\r\n\r\n{\"code\":\"BAD_REQUEST\",\"message\":\"Invalid request\"}"
        );
        let raw = raw_answer(&Denial::HeadTimeout, &id);
        assert!(
            std::str::from_utf8(&raw)
                .unwrap()
                .starts_with("HTTP/1.1 408 Request Timeout\r\n")
        );
        assert_eq!(client_ip("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(client_ip("[::1]:5000"), "::1");
        assert_eq!(client_ip("unknown"), "-");
    }
}
