//! Client connections: the deadline on a request head, and keep-alive.
//!
//! Pingora times a request head per read (60 s between two reads), so a
//! client sending one byte a minute holds a connection for ever. keygate
//! serves its listeners through [`ClientApp`], which wraps every HTTP/1
//! connection in a [`ClientStream`]: from the accept (first request) or the
//! first byte (later requests on a kept-alive connection) the whole head must
//! arrive within `[server] header_timeout_ms`, or the connection is closed
//! and the fact logged. The proxy marks the head as received with
//! [`head_received`]. HTTP/2 connections (TLS with ALPN `h2`) are handed to
//! Pingora unchanged: their framing has its own flow control.
//!
//! The timeouts are read from the live state for each connection and each
//! request, so a reload applies them to what comes next.

use crate::proxy::{Proxy, Shared};
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static HEAD: Arc<HeadClock>;
}

/// Tells the connection serving the current task that its request head has
/// been read, ending the head deadline. A no-op outside an HTTP/1 connection
/// of [`ClientApp`].
pub fn head_received() {
    let _ = HEAD.try_with(|clock| clock.received());
}

/// Which request of a connection is being read, and which one's head is in.
#[derive(Debug, Default)]
struct HeadClock {
    /// Request number (1 = first) the connection is reading.
    request: AtomicU32,
    /// Request number whose head has been received.
    received: AtomicU32,
}

impl HeadClock {
    fn next_request(&self) -> u32 {
        self.request.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn received(&self) {
        let n = self.request.load(Ordering::Relaxed);
        self.received.store(n, Ordering::Relaxed);
    }
}

/// An HTTP/1 client connection whose reads fail with `TimedOut` once the head
/// of the request being read is late.
pub struct ClientStream {
    inner: Stream,
    clock: Arc<HeadClock>,
    timeout: Duration,
    /// The request the deadline below belongs to, and the deadline.
    armed: Option<(u32, Instant)>,
    /// The timer of the deadline, made only when a read has to wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    /// Wraps `inner`; the first request's deadline runs from now.
    fn new(inner: Stream, clock: Arc<HeadClock>, timeout: Duration) -> Self {
        let first = clock.next_request();
        ClientStream {
            inner,
            clock,
            timeout,
            armed: Some((first, Instant::now() + timeout)),
            timer: None,
        }
    }

    fn peer(&self) -> String {
        self.inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_else(|| "unknown".into())
    }
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
        let request = self.clock.request.load(Ordering::Relaxed);
        if self.clock.received.load(Ordering::Relaxed) == request {
            // Head in: bodies and idle keep-alive have timeouts of their own.
            if self.armed.is_some() {
                self.armed = None;
                self.timer = None;
            }
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        let deadline = match this.armed {
            Some((n, deadline)) if n == request => deadline,
            _ => {
                // A later request: its clock starts with its first byte.
                this.armed = None;
                this.timer = None;
                if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    this.armed = Some((request, Instant::now() + this.timeout));
                }
                return polled;
            }
        };
        if polled.is_ready() {
            return polled;
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let peer = this.peer();
        tracing::info!(
            client = %peer,
            timeout_ms = this.timeout.as_millis() as u64,
            "request head not received in time; connection closed"
        );
        // Stays expired: every later read fails too.
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
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

/// The listeners' application: Pingora's HTTP proxy, with keygate's client
/// timeouts around each HTTP/1 connection.
pub struct ClientApp {
    proxy: Arc<HttpProxy<Proxy>>,
    shared: Arc<Shared>,
}

impl ClientApp {
    /// Serves `proxy` under the timeouts of the live state in `shared`.
    pub fn new(proxy: HttpProxy<Proxy>, shared: Arc<Shared>) -> Self {
        ClientApp {
            proxy: Arc::new(proxy),
            shared,
        }
    }

    /// Keep-alive for the next request, in Pingora's terms (`None`: close
    /// after the response; Pingora reads `Some(0)` as "no limit").
    fn keepalive(&self, shutdown: &ShutdownWatch) -> Option<u64> {
        if *shutdown.borrow() {
            return None;
        }
        let idle = self.shared.state.load().config.server.keepalive_timeout;
        idle.map(|d| d.as_secs().max(1))
    }
}

#[async_trait]
impl ServerApp for ClientApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let timeout = self.shared.state.load().config.server.header_timeout;
        let clock = Arc::new(HeadClock::default());
        let stream = ClientStream::new(stream, Arc::clone(&clock), timeout);
        let mut session = ServerSession::new_http1(Box::new(stream));
        loop {
            session.set_keepalive(self.keepalive(shutdown));
            let served = HEAD
                .scope(
                    Arc::clone(&clock),
                    self.proxy.process_new_http(session, shutdown),
                )
                .await?;
            let (stream, settings) = served.consume();
            clock.next_request();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await
    }
}
