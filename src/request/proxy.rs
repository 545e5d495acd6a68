//! The Pingora glue: [`Proxy`] implements `ProxyHttp` by calling [`decide`],
//! the limiter and the upstream pools, and by writing what they return. It makes
//! no decision of its own; every answer it writes itself comes from a
//! [`Denial`].

use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::gateway::upstream::Upstream;
use crate::model::denial::Denial;
use crate::request::decide::{Authorization, Decision, Request, decide};
use crate::request::limiter::Outcome;
use crate::request::{PROBE_HEADER, Shared};
use crate::telemetry::metrics::{RouteMetrics, UpstreamErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::Instant;

/// The `ProxyHttp` implementation.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy { shared }
    }
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Pending,
    Proxied,
    Denied(&'static str),
    Probe,
    RateLimited,
    UpstreamError(UpstreamErrorKind),
    ClientError,
}

/// A key id copied out of the index (ids are at most 128 ASCII bytes), so a
/// request can name its key after letting go of the gateway, without a heap
/// allocation.
#[derive(Clone, Copy)]
struct KeyId {
    len: u8,
    bytes: [u8; crate::snapshot::MAX_ID_LEN],
}

impl KeyId {
    fn new(id: &str) -> Self {
        let mut bytes = [0u8; crate::snapshot::MAX_ID_LEN];
        let n = id.len().min(bytes.len());
        bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        KeyId {
            len: n as u8,
            bytes,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("-")
    }
}

/// What the end of a proxied request needs once the upstream has answered:
/// enough to count and log it. The request then lets go of its gateway, so
/// a client reading a long response slowly pins a few handles, not a whole
/// generation of state (key index included) across reloads.
struct Settled {
    metrics: Arc<RouteMetrics>,
    route: Arc<str>,
    upstream: Arc<Upstream>,
    company: Option<Arc<str>>,
    key_id: Option<KeyId>,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    /// The state the request was decided on, until the upstream answers.
    gateway: Option<Arc<Gateway>>,
    /// What is left of it after that.
    settled: Option<Settled>,
    /// Sane client value or a new one; a `HeaderValue` so the upstream and
    /// client copies share one buffer.
    request_id: HeaderValue,
    /// Client IP, formatted once.
    client: Option<String>,
    route: Option<usize>,
    key_slot: Option<usize>,
    workspace: Option<Arc<str>>,
    rate: Option<Outcome>,
    tried: Vec<String>,
    connect_failed: bool,
    outcome: Ending,
    _inflight: crate::request::InflightGuard,
}

/// Headers the client may not set for the upstream: identity (`x-keygate-*`),
/// request id and forwarding headers (a backend trusting `X-Real-IP`,
/// `X-Forwarded-Host` or `Forwarded` must only ever see keygate's word).
/// Compared after folding `_` to `-`, so `X_Keygate_Key_Id` cannot sneak
/// through a backend that treats them alike.
fn is_reserved(name: &str) -> bool {
    const EXACT: [&str; 6] = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ];
    const PREFIX: &str = "x-keygate-";
    let folded_eq = |a: &str, b: &str| {
        a.len() == b.len()
            && a.bytes().zip(b.bytes()).all(|(x, y)| {
                let x = if x == b'_' {
                    b'-'
                } else {
                    x.to_ascii_lowercase()
                };
                x == y
            })
    };
    (name.len() >= PREFIX.len() && folded_eq(&name[..PREFIX.len()], PREFIX))
        || EXACT.iter().any(|e| folded_eq(name, e))
}

/// Whether the request head exceeds the configured limits. Pingora has
/// already read it (up to its own 1 MiB / 256-field cap), so this only decides
/// whether it goes any further.
fn head_too_large(req: &RequestHeader, max_bytes: usize, max_headers: usize) -> bool {
    if req.headers.len() > max_headers {
        return true;
    }
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    let fields: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    line + fields > max_bytes
}

/// `Content-Length` together with `Transfer-Encoding`. Pingora follows RFC 9112
/// (the length is dropped, the body read as chunked, the connection closed),
/// but a backend or a proxy behind us might read the length instead: refuse,
/// as nginx does. Pingora has already removed the length header by now, so
/// the raw head is consulted, only when a `Transfer-Encoding` is present.
fn conflicting_framing(session: &Session) -> bool {
    let headers = &session.req_header().headers;
    if !headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return true;
    }
    session.as_http1().is_some_and(|h1| {
        h1.get_headers_raw_bytes()
            .split(|&b| b == b'\n')
            .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
    })
}

/// Whether a failure is the client's doing: it stopped sending its body
/// (`body_timeout_ms` on our read, or the upstream's read timeout firing while
/// the body it waits for is still incomplete) or stopped reading the
/// response (`send_timeout_ms`). Such a failure is a 408 or a closed
/// connection, `client_error`, never an upstream error.
fn client_fault(e: &Error, body_done: bool) -> bool {
    match (e.esource(), e.etype()) {
        (ErrorSource::Downstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => true,
        (ErrorSource::Upstream, ErrorType::ReadTimedout) => !body_done,
        _ => false,
    }
}

/// A client-supplied request id is kept only if it is short and plain.
fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// A fresh request id: 32 random lowercase hex digits.
pub(crate) fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    // 32 lowercase hex digits are a valid header value.
    hex::encode_to_slice(rand::random::<u128>().to_be_bytes(), &mut buf).map_or_else(
        |_| HeaderValue::from_static("-"),
        |()| HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("-")),
    )
}

/// The request id as text (it only ever holds visible ASCII).
fn request_id_str(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("-")
}

fn client_ip(session: &Session) -> Option<String> {
    match session.client_addr()? {
        PeerAddr::Inet(a) => Some(a.ip().to_string()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The RFC 7239 `Forwarded` value, saying what `x-forwarded-for` and
/// `x-forwarded-proto` say: `for=203.0.113.7;proto=https`, an IPv6 address
/// quoted and bracketed, `for=unknown` without an IP peer.
fn forwarded(client: Option<&str>, tls: bool) -> String {
    let proto = if tls { "https" } else { "http" };
    let mut v = String::with_capacity(64);
    v.push_str("for=");
    match client {
        Some(ip) if ip.contains(':') => {
            v.push_str("\"[");
            v.push_str(ip);
            v.push_str("]\"");
        }
        Some(ip) => v.push_str(ip),
        None => v.push_str("unknown"),
    }
    v.push_str(";proto=");
    v.push_str(proto);
    v
}

/// Adds the five rate-limit headers of an authorized request.
fn rate_headers(h: &mut ResponseHeader, o: &Outcome) -> Result<()> {
    h.insert_header(
        "x-ratelimit-limit",
        HeaderValue::from(o.limit.requests.get()),
    )?;
    h.insert_header("x-ratelimit-remaining", HeaderValue::from(o.remaining))?;
    h.insert_header("x-ratelimit-reset", HeaderValue::from(o.reset_secs))?;
    h.insert_header(
        "ratelimit-policy",
        format!("\"default\";q={};w={}", o.limit.requests, o.limit.per_secs),
    )?;
    h.insert_header(
        "ratelimit",
        format!("\"default\";r={};t={}", o.remaining, o.reset_secs),
    )?;
    Ok(())
}

impl Proxy {
    /// Writes a denial as the whole response.
    async fn respond(&self, session: &mut Session, ctx: &mut Ctx, denial: &Denial) -> Result<()> {
        let body = denial.body();
        let mut resp = ResponseHeader::build(denial.status(), Some(8))?;
        resp.insert_header(CONTENT_TYPE, "application/json")?;
        resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.clone())?;
        if let Some(v) = denial.www_authenticate() {
            resp.insert_header("www-authenticate", v)?;
        }
        match denial {
            Denial::MethodNotAllowed { allowed, .. } => {
                resp.insert_header("allow", &**allowed)?;
            }
            Denial::RateLimited { retry_after, .. } => {
                resp.insert_header("retry-after", retry_after.to_string())?;
            }
            _ => {}
        }
        if let Some(rate) = &ctx.rate {
            rate_headers(&mut resp, rate)?;
        }
        // An unread request body would be drained before the connection is
        // reused; close instead so a large or slow upload cannot hold it.
        if !session.is_body_empty() {
            session.set_keepalive(None);
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    fn gateway(&self, ctx: &mut Ctx) -> Arc<Gateway> {
        Arc::clone(
            ctx.gateway
                .get_or_insert_with(|| self.shared.state.load_full()),
        )
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            gateway: None,
            settled: None,
            request_id: HeaderValue::from_static(""),
            client: None,
            route: None,
            key_slot: None,
            workspace: None,
            rate: None,
            tried: Vec::new(),
            connect_failed: false,
            outcome: Ending::Pending,
            _inflight: self.shared.lifecycle.enter(),
        }
    }

    /// Runs the whole decision and the limiter. `Ok(true)`: a denial was
    /// written and the request ends here; `Ok(false)`: proxy it.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        crate::request::downstream::head_received();
        if let Some(v) = session.req_header().headers.get(PROBE_HEADER)
            && v.as_bytes() == self.shared.probe.as_bytes()
        {
            ctx.outcome = Ending::Probe;
            let mut resp = ResponseHeader::build(204, Some(1))?;
            resp.insert_header(PROBE_HEADER, v.clone())?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        let gw = self.gateway(ctx);
        session.set_read_timeout(Some(gw.config.server.body_timeout));
        session.set_write_timeout(Some(gw.config.server.send_timeout));
        let req = session.req_header();
        ctx.request_id = match req.headers.get("x-request-id") {
            Some(v) if sane_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        ctx.client = client_ip(session);
        let mut auth = req.headers.get_all(AUTHORIZATION).iter();
        let authorization = match (auth.next(), auth.next()) {
            (None, _) => Authorization::Absent,
            (Some(v), None) => Authorization::One(v.as_bytes()),
            (Some(_), Some(_)) => Authorization::Many,
        };
        let request = Request {
            method: &req.method,
            path: req.uri.path(),
            authorization,
            tls: is_tls(session),
        };
        let now = self.shared.clock.unix_secs();
        let limits = &gw.config.server;
        let decision = if conflicting_framing(session) {
            Decision::Deny {
                route: None,
                denial: Denial::InvalidRequest,
            }
        } else if head_too_large(req, limits.max_header_bytes, limits.max_headers) {
            Decision::Deny {
                route: None,
                denial: Denial::HeadersTooLarge,
            }
        } else {
            decide(&request, &gw.policy, now)
        };
        let denial = match decision {
            Decision::Deny { route, denial } => {
                ctx.route = route;
                denial
            }
            Decision::Allow(allow) => {
                ctx.route = Some(allow.route);
                let Some((slot, key)) = allow.key else {
                    return Ok(false);
                };
                ctx.key_slot = Some(slot);
                ctx.workspace = match (allow.workspace, &key.workspace) {
                    (None, _) => None,
                    (Some(_), Some(own)) => Some(Arc::clone(own)),
                    (Some(bound), None) => Some(Arc::from(&*bound)),
                };
                gw.policy.keys.touch(slot, now);
                let limit = key.rate_limit.unwrap_or(gw.config.rate_limit.default);
                let outcome = self.shared.limiter.check(key.id(), limit);
                ctx.rate = Some(outcome);
                if outcome.allowed {
                    return Ok(false);
                }
                Denial::RateLimited {
                    limit,
                    retry_after: outcome.retry_after_secs,
                }
            }
        };
        let metrics = gw.route_metrics(ctx.route);
        ctx.outcome = match denial.reason() {
            Some(reason) => {
                metrics.denial(reason);
                Ending::Denied(reason.as_str())
            }
            None if matches!(denial, Denial::RateLimited { .. }) => {
                metrics.rate_limited.inc();
                Ending::RateLimited
            }
            None => Ending::Denied(match denial {
                Denial::NoRoute { .. } => "no_route",
                Denial::HeadersTooLarge => "headers_too_large",
                Denial::InvalidRequest => "invalid_request",
                _ => "method_not_allowed",
            }),
        };
        self.respond(session, ctx, &denial).await?;
        Ok(true)
    }

    /// The next healthy server of the route's upstream, skipping those that
    /// already failed to connect for this request.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let gw = self.gateway(ctx);
        let route = ctx
            .route
            .and_then(|r| gw.policy.routes.get(r))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
        let upstream = &gw.upstreams[route.upstream];
        match upstream.peer(&ctx.tried) {
            Some(peer) => Ok(peer),
            None => {
                upstream.metrics.error(UpstreamErrorKind::Connect);
                ctx.connect_failed = true;
                let mut e = Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("upstream {} has no healthy server left", upstream.name),
                );
                e.set_retry(false);
                Err(e)
            }
        }
    }

    /// Rewrites the upstream request: client copies of reserved headers out,
    /// `Authorization` out unless configured, identity and forwarding in.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let gw = self.gateway(ctx);
        let reserved: Vec<http::HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|n| is_reserved(n.as_str()))
            .cloned()
            .collect();
        for name in reserved {
            upstream_request.remove_header(&name);
        }
        if !gw.config.upstream_headers.forward_authorization {
            upstream_request.remove_header(&AUTHORIZATION);
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.clone())?;
        let tls = is_tls(session);
        if let Some(ip) = &ctx.client {
            upstream_request.insert_header("x-forwarded-for", ip.as_str())?;
        }
        upstream_request.insert_header("forwarded", forwarded(ctx.client.as_deref(), tls))?;
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        let route_auth = ctx
            .route
            .and_then(|r| gw.policy.routes.get(r))
            .map(|r| r.auth);
        if let (Some(slot), Some(auth)) = (ctx.key_slot, route_auth)
            && auth != AuthMode::None
        {
            let key = gw.policy.keys.record(slot);
            upstream_request.insert_header("x-keygate-key-id", key.id())?;
            upstream_request.insert_header(
                "x-keygate-key-type",
                HeaderValue::from_static(key.key_type.as_str()),
            )?;
            upstream_request.insert_header("x-keygate-company", &*key.company)?;
            if let Some(ws) = &ctx.workspace {
                upstream_request.insert_header("x-keygate-workspace", &**ws)?;
            }
            upstream_request.insert_header(
                "x-keygate-scopes",
                HeaderValue::from_static(key.scopes.header_value()),
            )?;
        }
        Ok(())
    }

    /// Adds the request id and the rate-limit headers to the upstream's answer.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.clone())?;
        if let Some(rate) = &ctx.rate {
            rate_headers(upstream_response, rate)?;
        }
        ctx.outcome = Ending::Proxied;
        if let Some(gw) = ctx.gateway.take()
            && let Some(route) = ctx.route.and_then(|r| gw.policy.routes.get(r))
        {
            let key = ctx.key_slot.map(|s| gw.policy.keys.record(s));
            ctx.settled = Some(Settled {
                metrics: Arc::clone(gw.route_metrics(ctx.route)),
                route: Arc::clone(&route.name),
                upstream: Arc::clone(&gw.upstreams[route.upstream]),
                company: key.map(|k| Arc::clone(&k.company)),
                key_id: key.map(|k| KeyId::new(k.id())),
            });
        }
        Ok(())
    }

    /// Counts the failed attempt and retries on the next healthy server while
    /// there is one: nothing was sent, so any method may be retried.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(gw) = &ctx.gateway
            && let Some(route) = ctx.route.and_then(|r| gw.policy.routes.get(r))
        {
            let upstream = &gw.upstreams[route.upstream];
            let kind = if e.etype() == &ErrorType::ConnectTimedout {
                UpstreamErrorKind::Timeout
            } else {
                UpstreamErrorKind::Connect
            };
            upstream.metrics.error(kind);
            ctx.tried.push(peer._address.to_string());
            e.set_retry(ctx.tried.len() < upstream.server_count());
        }
        ctx.connect_failed = true;
        e
    }

    /// Maps a failure to the contract's 502/504 (or a 400/500 JSON body) when
    /// nothing has been sent to the client yet.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let upstream = match &ctx.settled {
            Some(settled) => Some(Arc::clone(&settled.upstream)),
            None => {
                let gw = self.gateway(ctx);
                ctx.route
                    .and_then(|r| gw.policy.routes.get(r))
                    .map(|r| Arc::clone(&gw.upstreams[r.upstream]))
            }
        };
        let timed_out = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        let client_fault = client_fault(e, session.is_body_done());
        let upstream_failure = !client_fault
            && e.esource() != &ErrorSource::Downstream
            && (ctx.connect_failed || e.esource() == &ErrorSource::Upstream);
        let denial = match upstream {
            Some(up) if upstream_failure => {
                let kind = if timed_out {
                    UpstreamErrorKind::Timeout
                } else {
                    UpstreamErrorKind::Other
                };
                if !ctx.connect_failed {
                    up.metrics.error(kind);
                }
                ctx.outcome = Ending::UpstreamError(if ctx.connect_failed && !timed_out {
                    UpstreamErrorKind::Connect
                } else {
                    kind
                });
                let name = Arc::clone(&up.name);
                if timed_out {
                    Some(Denial::UpstreamTimeout { upstream: name })
                } else {
                    Some(Denial::UpstreamUnavailable { upstream: name })
                }
            }
            _ if client_fault => {
                ctx.outcome = Ending::ClientError;
                if e.etype() == &ErrorType::WriteTimedout {
                    tracing::info!(
                        request_id = request_id_str(&ctx.request_id),
                        "client stopped reading the response for send_timeout_ms; connection closed"
                    );
                    None
                } else {
                    tracing::info!(
                        request_id = request_id_str(&ctx.request_id),
                        "client stopped sending its request body; answered 408"
                    );
                    Some(Denial::RequestTimeout)
                }
            }
            _ => {
                if e.esource() == &ErrorSource::Downstream {
                    ctx.outcome = Ending::ClientError;
                }
                None
            }
        };
        let code = match &denial {
            Some(d) => d.status(),
            None => match e.esource() {
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError
                    | ErrorType::ReadError
                    | ErrorType::ConnectionClosed
                    | ErrorType::WriteTimedout => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if session.response_written().is_none() && code != 0 {
            // Pingora drops the client connection after a failed proxy
            // attempt; say so, or a keep-alive client would reuse a dead socket.
            session.set_keepalive(None);
            let result = match &denial {
                Some(d) => self.respond(session, ctx, d).await,
                None if code == 400 => self.respond(session, ctx, &Denial::InvalidRequest).await,
                None => {
                    write_json(
                        session,
                        code,
                        "INTERNAL_ERROR",
                        "Internal gateway error",
                        request_id_str(&ctx.request_id),
                    )
                    .await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "could not write error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// `true` silences Pingora's error line: a client hanging up or stalling
    /// mid-request is routine, and its access-log line says `client_error`.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, error: &Error) -> bool {
        // Runs after `fail_to_proxy`, which has classified the failure.
        ctx.outcome == Ending::ClientError
            || (error.esource() == &ErrorSource::Downstream
                && matches!(
                    error.etype(),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
                ))
    }

    /// Counts the request and writes its access-log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.outcome == Ending::Probe {
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        // Either what the request kept after the upstream answered, or the
        // gateway it was decided on.
        let gw = match &ctx.settled {
            Some(_) => None,
            None => Some(self.gateway(ctx)),
        };
        let (metrics, route, upstream, company, key_id) = match (&ctx.settled, &gw) {
            (Some(s), _) => (
                &s.metrics,
                Some(&*s.route),
                Some(&*s.upstream.name),
                s.company.as_deref(),
                s.key_id.as_ref().map(KeyId::as_str),
            ),
            (None, Some(gw)) => {
                let route = ctx.route.and_then(|r| gw.policy.routes.get(r));
                let key = ctx.key_slot.map(|s| gw.policy.keys.record(s));
                (
                    gw.route_metrics(ctx.route),
                    route.map(|r| &*r.name),
                    route.map(|r| &*gw.upstreams[r.upstream].name),
                    key.map(|k| &*k.company),
                    key.map(|k| k.id()),
                )
            }
            (None, None) => return,
        };
        if status != 0 {
            metrics.request(status);
        }
        metrics.duration.observe(elapsed.as_secs_f64());
        let outcome = match ctx.outcome {
            Ending::Pending if e.is_some() => "error",
            Ending::Pending | Ending::Proxied => "proxied",
            Ending::Denied(r) => r,
            Ending::Probe => "probe",
            Ending::RateLimited => "rate_limited",
            Ending::UpstreamError(UpstreamErrorKind::Connect) => "upstream_connect",
            Ending::UpstreamError(UpstreamErrorKind::Timeout) => "upstream_timeout",
            Ending::UpstreamError(UpstreamErrorKind::Other) => "upstream_error",
            Ending::ClientError => "client_error",
        };
        let req = session.req_header();
        self.shared
            .access_log
            .record(&crate::telemetry::log::AccessRecord {
                request_id: request_id_str(&ctx.request_id),
                client: ctx.client.as_deref().unwrap_or("-"),
                method: req.method.as_str(),
                path: req.uri.path(),
                route: route.unwrap_or(crate::telemetry::metrics::UNMATCHED),
                status,
                outcome,
                key_id,
                company,
                workspace: ctx.workspace.as_deref(),
                upstream,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
            });
    }
}

async fn write_json(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> Result<()> {
    let body: Bytes = crate::model::denial::json_body(code, message);
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(CONTENT_TYPE, "application/json")?;
    resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    if !request_id.is_empty() {
        resp.insert_header("x-request-id", request_id)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_headers_fold_case_and_underscores() {
        for n in [
            "x-keygate-key-id",
            "x_keygate_key_id",
            "X-KEYGATE-COMPANY",
            "x-keygate-anything",
            "x-request-id",
            "x_forwarded_for",
            "x-forwarded-proto",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        for n in ["x-forwarded-host", "X_Real_IP", "Forwarded"] {
            assert!(is_reserved(n), "{n}");
        }
        for n in [
            "x-keygate",
            "authorization",
            "x-forwarded-port-x",
            "forwarded-for",
            "x-requestid",
        ] {
            assert!(!is_reserved(n), "{n}");
        }
    }

    #[test]
    fn client_stalls_are_told_from_upstream_timeouts() {
        let err = |source, kind| {
            let mut e = Error::new(kind);
            e.esource = source;
            e
        };
        use ErrorSource::{Downstream, Upstream};
        use ErrorType::{ConnectTimedout, ReadTimedout, WriteTimedout};
        for (source, kind, body_done, expected) in [
            (Downstream, ReadTimedout, false, true),
            (Downstream, WriteTimedout, true, true),
            (Upstream, ReadTimedout, false, true),
            (Upstream, ReadTimedout, true, false),
            (Upstream, WriteTimedout, false, false),
            (Upstream, ConnectTimedout, false, false),
            (Downstream, ErrorType::ReadError, false, false),
        ] {
            assert_eq!(
                client_fault(&err(source.clone(), kind.clone()), body_done),
                expected,
                "{source:?} {kind:?} body_done={body_done}"
            );
        }
    }

    #[test]
    fn forwarded_says_what_x_forwarded_says() {
        assert_eq!(
            forwarded(Some("10.1.2.3"), false),
            "for=10.1.2.3;proto=http"
        );
        assert_eq!(forwarded(Some("::1"), true), "for=\"[::1]\";proto=https");
        assert_eq!(forwarded(None, true), "for=unknown;proto=https");
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(sane_request_id(b"abc-123"));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"a b"));
        assert!(!sane_request_id(&[b'a'; 129]));
        assert!(!sane_request_id("é".as_bytes()));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(id, new_request_id());
    }
}
