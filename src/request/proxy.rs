//! The Pingora glue: [`Proxy`] implements `ProxyHttp`, and each phase calls
//! one function of the request path ([`precheck`], [`decide`], the limiter,
//! [`headers`], [`respond`], [`failure::classify`]) and writes what it
//! returns. It decides nothing itself; every answer it writes comes from a
//! [`Denial`]. Pingora types stop here: what the path needs of them is
//! turned into plain data first.

use crate::config::Enforcement;
use crate::gateway::Gateway;
use crate::model::denial::Denial;
use crate::model::pattern::routed_path;
use crate::request::ctx::{Ctx, Ending, IpText};
use crate::request::decide::{Authorization, Decision, Request, decide, rate_limited};
use crate::request::failure::{self, Facts, Failure, Kind, Side};
use crate::request::precheck::{HeadFacts, HeadLimits, precheck};
use crate::request::respond::respond;
use crate::request::{PROBE_HEADER, Shared, headers};
use crate::snapshot::KeyRecord;
use crate::telemetry::log::AccessRecord;
use crate::telemetry::metrics::UpstreamErrorKind;
use async_trait::async_trait;
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use std::borrow::Cow;
use std::sync::Arc;

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

/// What keygate reads of a request head, found in one pass over its fields:
/// a lookup by name hashes the name, once per header looked for, while a
/// client sends a handful of fields.
struct HeadScan<'a> {
    /// What [`precheck`] reads.
    facts: HeadFacts,
    /// The first `x-keygate-probe` value.
    probe: Option<&'a HeaderValue>,
    /// The first `x-request-id` value.
    request_id: Option<&'a HeaderValue>,
}

fn scan_head(session: &Session) -> HeadScan<'_> {
    let req = session.req_header();
    let (mut transfer_encoding, mut content_length) = (false, false);
    let (mut probe, mut request_id) = (None, None);
    let mut fields = 0;
    for (n, v) in &req.headers {
        fields += n.as_str().len() + v.len() + 4;
        if *n == TRANSFER_ENCODING {
            transfer_encoding = true;
        } else if *n == CONTENT_LENGTH {
            content_length = true;
        } else if *n == headers::name::X_KEYGATE_PROBE {
            probe = probe.or(Some(v));
        } else if *n == headers::name::X_REQUEST_ID {
            request_id = request_id.or(Some(v));
        }
    }
    // Pingora drops `Content-Length` when a `Transfer-Encoding` is present:
    // only then is the raw head consulted.
    content_length = content_length
        || (transfer_encoding
            && session.as_http1().is_some_and(|h1| {
                h1.get_headers_raw_bytes()
                    .split(|&b| b == b'\n')
                    .any(|line| {
                        line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:")
                    })
            }));
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    HeadScan {
        facts: HeadFacts {
            fields: req.headers.len(),
            bytes: line + fields,
            transfer_encoding,
            content_length,
        },
        probe,
        request_id,
    }
}

/// Whether the client has had the head of its final answer. A `100
/// Continue` the upstream sent (forwarded as Pingora does) is not one: the
/// answer to a failure after it (a body that stalls, an upstream that gives
/// up) still goes out, where the client would otherwise be left with an
/// empty reply. A `101` switched protocols and is final.
fn final_head_sent(session: &Session) -> bool {
    session.response_written().is_some_and(|r| {
        !r.status.is_informational() || r.status == http::StatusCode::SWITCHING_PROTOCOLS
    })
}

/// The plain facts of a Pingora error, for [`failure::classify`].
fn failure_facts(e: &Error, body_done: bool, ctx: &Ctx) -> Facts {
    let side = match e.esource() {
        ErrorSource::Upstream => Side::Upstream,
        ErrorSource::Downstream => Side::Downstream,
        ErrorSource::Internal | ErrorSource::Unset => Side::Internal,
    };
    let kind = match e.etype() {
        ErrorType::ConnectTimedout => Kind::ConnectTimedOut,
        ErrorType::ReadTimedout => Kind::ReadTimedOut,
        ErrorType::WriteTimedout => Kind::WriteTimedOut,
        ErrorType::ReadError => Kind::ReadError,
        ErrorType::WriteError => Kind::WriteError,
        ErrorType::ConnectionClosed => Kind::Closed,
        _ => Kind::Other,
    };
    Facts {
        side,
        kind,
        body_done,
        connect_failed: ctx.connect_failed,
        routed: ctx.route.is_some(),
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> Option<IpText> {
    match session.client_addr()? {
        PeerAddr::Inet(a) => Some(IpText::of(a.ip())),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Names the key that authenticated, and its workspace, for the upstream and
/// the access log.
fn identify(ctx: &mut Ctx, (slot, key): (usize, &KeyRecord), workspace: Option<Cow<'_, str>>) {
    ctx.key_slot = Some(slot);
    ctx.workspace = match (workspace, &key.workspace) {
        (None, _) => None,
        (Some(_), Some(own)) => Some(Arc::clone(own)),
        (Some(bound), None) => Some(Arc::from(&*bound)),
    };
}

impl Proxy {
    /// The gateway of this request: the live one, loaded once per request.
    fn load(&self, ctx: &mut Ctx) {
        if ctx.gateway.is_none() && ctx.settled.is_none() {
            ctx.gateway = Some(self.shared.state.load_full());
        }
    }

    /// Runs the decision and the limiter on a request of `gw`: `None` to
    /// proxy it, or the denial to answer with.
    fn admit(
        &self,
        session: &Session,
        facts: &HeadFacts,
        ctx: &mut Ctx,
        gw: &Gateway,
    ) -> Option<Denial> {
        let limits = &gw.config.server;
        let head = HeadLimits {
            max_bytes: limits.max_header_bytes,
            max_fields: limits.max_headers,
        };
        if let Some(denial) = precheck(facts, head) {
            return Some(denial);
        }
        let req = session.req_header();
        let mut auth = req.headers.get_all(AUTHORIZATION).iter();
        let authorization = match (auth.next(), auth.next()) {
            (None, _) => Authorization::Absent,
            (Some(v), None) => Authorization::One(v.as_bytes()),
            (Some(_), Some(_)) => Authorization::Many,
        };
        let request = Request {
            method: &req.method,
            path: routed_path(req.raw_path(), req.uri.path()),
            authorization,
            tls: ctx.tls,
        };
        let now = self.shared.clock.unix_secs();
        let allow = match decide(&request, &gw.policy, now) {
            Decision::Deny {
                route,
                denial,
                key,
                workspace,
            } => {
                ctx.route = route;
                if let Some(key) = key {
                    identify(ctx, key, workspace);
                }
                return Some(denial);
            }
            Decision::Allow(allow) => allow,
        };
        ctx.route = Some(allow.route);
        ctx.shadow = allow.shadow;
        let (slot, key) = allow.key?;
        identify(ctx, (slot, key), allow.workspace);
        gw.policy.keys.touch(slot, now);
        // Only requests that passed rows 1-12 take a token.
        if ctx.shadow.is_some() {
            return None;
        }
        let route = &gw.policy.routes[allow.route];
        // A rotated key draws from its chain's bucket: old and new, one limit.
        let (bucket, limited_as) = gw.policy.keys.bucket(slot);
        let limit = gw.limit_of(limited_as);
        let outcome = self.shared.limiter.check(bucket, limit);
        if outcome.unavailable {
            // The fleet's limiter is unreachable and the operator chose to
            // refuse: no figures to show. A shadow route refuses nothing.
            return match route.enforce {
                Enforcement::On => Some(Denial::LimiterUnavailable),
                Enforcement::Shadow => None,
            };
        }
        if route.enforce == Enforcement::On {
            ctx.rate = Some(outcome);
        }
        if outcome.allowed {
            return None;
        }
        let denial = Denial::RateLimited {
            limit,
            retry_after: outcome.retry_after_secs,
        };
        match rate_limited(route, denial) {
            Ok(shadow) => {
                ctx.shadow = shadow;
                None
            }
            Err(denial) => Some(denial),
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    /// Boxed: Pingora moves the context with each future that holds it
    /// (three times a request), and 8 bytes move faster than 450.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(self.shared.lifecycle.enter()))
    }

    /// No downstream modules. Pingora's default is its response compression
    /// module at level 0: it compresses nothing, yet each request built its
    /// context (an allocation) and ran it in four phases. keygate passes
    /// answers on as the upstream encoded them.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Runs the whole decision and the limiter. `Ok(true)`: a denial was
    /// written and the request ends here; `Ok(false)`: proxy it.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        crate::request::downstream::head_received(session);
        let head = scan_head(session);
        if head
            .probe
            .is_some_and(|v| v.as_bytes() == self.shared.probe.as_bytes())
        {
            ctx.outcome = Ending::Probe;
            let mut resp = ResponseHeader::build(204, Some(1))?;
            resp.insert_header(PROBE_HEADER, self.shared.probe.as_str())?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        let facts = head.facts;
        let gw = self.shared.state.load_full();
        ctx.request_id = headers::request_id(head.request_id, &gw.policy.prefixes);
        // Pingora decides keep-alive again once it has read a head (from the
        // request's own `Connection`), so the close chosen before the read
        // does not hold; it is chosen again here. While the listeners are
        // handed over or the gateway drains, the answer says `Connection:
        // close` and a kept-alive client reconnects (to the new process)
        // instead of sending its next request on a connection about to be
        // dropped; `keepalive_timeout_secs = 0` closes after every answer.
        let lifecycle = &self.shared.lifecycle;
        if lifecycle.is_handing_over()
            || lifecycle.is_draining()
            || gw.config.server.keepalive_timeout.is_none()
        {
            session.set_keepalive(None);
        }
        session.set_read_timeout(Some(gw.config.server.body_timeout));
        session.set_write_timeout(Some(gw.config.server.send_timeout));
        // A request sent before the answer to the one before it (HTTP/1.1
        // pipelining, RFC 9112 §9.3.2) is served after it, in order, as nginx
        // and HAProxy do; by default Pingora closes the connection and drops
        // it.
        session.set_pipelining_enabled(true);
        ctx.client = client_ip(session);
        ctx.tls = is_tls(session);
        let denial = self.admit(session, &facts, ctx, &gw);
        if let Some(reason) = ctx.shadow {
            gw.route_metrics(ctx.route).shadow(reason);
        }
        ctx.gateway = Some(gw);
        let Some(denial) = denial else {
            return Ok(false);
        };
        if let Some(gw) = &ctx.gateway {
            let metrics = gw.route_metrics(ctx.route);
            match (&denial, denial.reason()) {
                (_, Some(reason)) => metrics.denial(reason),
                (Denial::RateLimited { .. }, None) => metrics.rate_limited.inc(),
                _ => {}
            }
        }
        ctx.outcome = Ending::of(&denial);
        respond(session, ctx, &denial).await?;
        Ok(true)
    }

    /// The next healthy server of the route's upstream, skipping those that
    /// already failed to connect for this request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let upstream = ctx
            .gateway
            .as_deref()
            .and_then(|gw| gw.upstream_of(ctx.route))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route in context"))?;
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
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let gw = ctx
            .gateway
            .as_deref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no state in context"))?;
        headers::for_upstream(upstream_request, ctx, gw)
    }

    /// Adds the request id and the rate-limit headers to the upstream's
    /// answer, then lets go of the gateway state (see [`Ctx::settle`]).
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        headers::for_client(upstream_response, ctx)?;
        ctx.outcome = Ending::Proxied;
        ctx.settle();
        Ok(())
    }

    /// Counts the failed attempt and retries on the next healthy server while
    /// there is one: nothing was sent, so any method may be retried.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(upstream) = ctx
            .gateway
            .as_deref()
            .and_then(|gw| gw.upstream_of(ctx.route))
        {
            let kind = if e.etype() == &ErrorType::ConnectTimedout {
                UpstreamErrorKind::Timeout
            } else {
                UpstreamErrorKind::Connect
            };
            upstream.metrics.error(kind);
            ctx.tried.push(peer._address.clone());
            e.set_retry(ctx.tried.len() < upstream.server_count());
        }
        ctx.connect_failed = true;
        e
    }

    /// Classifies the failure, counts it, and writes its answer when nothing
    /// has been sent to the client yet. `error_code` 0: no answer.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        self.load(ctx);
        let upstream = match (&ctx.settled, &ctx.gateway) {
            (Some(settled), _) => Some(Arc::clone(&settled.upstream)),
            (None, Some(gw)) => gw.upstream_of(ctx.route).map(Arc::clone),
            (None, None) => None,
        };
        let failure = failure::classify(failure_facts(e, session.is_body_done(), ctx));
        if let (
            Failure::Upstream {
                count: Some(kind), ..
            },
            Some(up),
        ) = (failure, &upstream)
        {
            up.metrics.error(kind);
        }
        if let Some(ending) = failure.ending() {
            ctx.outcome = ending;
        }
        match failure {
            Failure::ClientStoppedReading => tracing::info!(
                request_id = ctx.request_id(),
                "client stopped reading the response for send_timeout_ms; connection closed"
            ),
            Failure::ClientStalledBody => tracing::info!(
                request_id = ctx.request_id(),
                "client stopped sending its request body; answered 408"
            ),
            _ => {}
        }
        let denial = failure.denial(upstream.as_ref().map(|u| &u.name));
        let code = denial.as_ref().map_or(0, Denial::status);
        if let Some(denial) = &denial
            && !final_head_sent(session)
        {
            // Pingora drops the client connection after a failed proxy
            // attempt; say so, or a keep-alive client would reuse a dead socket.
            session.set_keepalive(None);
            if let Err(err) = respond(session, ctx, denial).await {
                tracing::debug!(error = %err, "could not write error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Always `true`: Pingora's own error line is replaced by keygate's. A
    /// client hanging up or stalling mid-request is routine (its access-log
    /// line says `client_error`) and gets none; any other failure gets one
    /// line, with secrets blanked out: Pingora's text may quote a peer's
    /// bytes, and an upstream that echoes the request quotes its
    /// `Authorization` (with `forward_authorization = true`).
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, error: &Error) -> bool {
        // Runs after `fail_to_proxy`, which has classified the failure.
        let routine = ctx.outcome == Ending::ClientError
            || (error.esource() == &ErrorSource::Downstream
                && matches!(
                    error.etype(),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
                ));
        if !routine {
            let gw = self.shared.state.load();
            tracing::error!(
                request_id = ctx.request_id(),
                error = %gw.policy.prefixes.redact(&error.to_string()),
                "proxy failed"
            );
        }
        true
    }

    /// Counts the request and writes its access-log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if ctx.outcome == Ending::Probe {
            return;
        }
        self.load(ctx);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        // Either what the request kept after the upstream answered, or the
        // gateway it was decided on.
        let (metrics, route, upstream, company, key_id) = match (&ctx.settled, &ctx.gateway) {
            (Some(s), _) => (
                &s.metrics,
                Some(&*s.route),
                Some(&*s.upstream.name),
                s.company.as_deref(),
                s.key_id.as_ref().map(|k| k.as_str()),
            ),
            (None, Some(gw)) => {
                let route = ctx.route.and_then(|r| gw.policy.routes.get(r));
                let key = ctx.key_slot.map(|s| gw.policy.keys.record(s));
                (
                    gw.route_metrics(ctx.route),
                    route.map(|r| &*r.name),
                    gw.upstream_of(ctx.route).map(|u| &*u.name),
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
        let req = session.req_header();
        // A key the client put in its path or method is not written out.
        let prefixes = &self.shared.state.load().policy.prefixes;
        let (mut masked_path, mut masked_method) = (String::new(), String::new());
        let mask = |text: &'_ str, into: &mut String| {
            if prefixes.holds_key_shape(text.as_bytes()) {
                *into = prefixes.redact(text);
                true
            } else {
                false
            }
        };
        let mut path = routed_path(req.raw_path(), req.uri.path());
        if mask(path, &mut masked_path) {
            path = &masked_path;
        }
        let mut method = req.method.as_str();
        if mask(method, &mut masked_method) {
            method = &masked_method;
        }
        self.shared.access_log.record(&AccessRecord {
            request_id: ctx.request_id(),
            client: ctx.client.as_ref().map_or("-", |c| c.as_str()),
            method,
            path,
            route: route.unwrap_or(crate::telemetry::metrics::UNMATCHED),
            status,
            outcome: ctx.outcome.label(e.is_some()),
            key_id,
            company,
            workspace: ctx.workspace.as_deref(),
            upstream,
            shadow: ctx.shadow.map(|s| s.as_str()),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }
}
