//! The admin listener (its own address, loopback by default):
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once config and snapshot are loaded and the listeners
//!   accept; 503 from the moment SIGTERM arrives. The body reports each
//!   upstream's health; an unhealthy upstream does not make the gateway unready.
//! - `GET /keys`: key metadata with `last_used_at` (the fleet's latest with
//!   `[cluster]`), never a hash.
//! - `POST /reload`: like SIGHUP; 200 with what was loaded, 422 with the errors.
//!
//! With `[admin] token_hash` set, `/keys` and `/reload` need that bearer token;
//! `/metrics` and the probes stay open. It keeps answering through the SIGTERM
//! grace period (so `/readyz` can say 503), unlike the proxy listeners.

use crate::cluster::FleetReader;
use crate::control::reload::Reloader;
use crate::gateway::Gateway;
use crate::model::denial::{Denial, json_body};
use crate::model::key::{BearerError, KeyDigest, bearer_token};
use crate::request::Shared;
use crate::snapshot::{KeyIndex, format_time};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time a client has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin HTTP service.
pub struct AdminService {
    listener: Mutex<Option<std::net::TcpListener>>,
    handler: Handler,
}

/// Answers admin requests; cheap to clone into each connection's task.
#[derive(Clone)]
struct Handler {
    shared: Arc<Shared>,
    reloader: Arc<Reloader>,
    fleet: FleetReader,
}

/// A response: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Body,
    www_authenticate: bool,
    /// `Allow` of a 405.
    allow: Option<Arc<str>>,
}

enum Body {
    /// Sent whole, with a Content-Length.
    Full(Bytes),
    /// `GET /keys`: written a slice of records at a time (chunked), so a
    /// million keys cost the admin listener one slice of memory, not the
    /// whole document (and not a `serde_json::Value` per field).
    Keys(Arc<Gateway>, i64),
}

/// Records serialized into one chunk of a `/keys` answer.
const KEYS_PER_CHUNK: usize = 1024;

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Body::Full(Bytes::from(value.to_string())),
            www_authenticate: false,
            allow: None,
        }
    }

    /// The answer keygate gives to `denial` anywhere: the same body.
    fn denial(denial: &Denial) -> Reply {
        Reply {
            status: denial.status(),
            content_type: "application/json",
            body: Body::Full(denial.body()),
            www_authenticate: denial.status() == 401,
            allow: match denial {
                Denial::MethodNotAllowed { allowed, .. } => Some(Arc::clone(allowed)),
                _ => None,
            },
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: Body::Full(json_body(code, message)),
            www_authenticate: status == 401,
            allow: None,
        }
    }
}

impl AdminService {
    /// Serves on an already bound listener (bound at start-up, so a busy port
    /// fails `keygate run` at once with a clear message).
    pub fn new(
        listener: std::net::TcpListener,
        shared: Arc<Shared>,
        reloader: Arc<Reloader>,
        fleet: FleetReader,
    ) -> Self {
        AdminService {
            listener: Mutex::new(Some(listener)),
            handler: Handler {
                shared,
                reloader,
                fleet,
            },
        }
    }
}

impl Handler {
    async fn serve(self, tcp: tokio::net::TcpStream) {
        let stream: Stream = tcp.into();
        let mut session = ServerSession::new_http1(Box::new(stream));
        match tokio::time::timeout(REQUEST_TIMEOUT, session.read_request()).await {
            Ok(Ok(true)) => {}
            _ => return,
        }
        session.set_keepalive(None);
        // A reader that stalls (a slow `/keys` download) is cut off, so it
        // cannot pin an old gateway state in memory for ever.
        let send_timeout = self.shared.state.load().config.server.send_timeout;
        session.set_write_timeout(Some(send_timeout));
        let reply = self.route(&mut session).await;
        let head_only = session.req_header().method == http::Method::HEAD;
        // Every answer names its request, as the proxy's do.
        let id_name = &crate::request::headers::name::X_REQUEST_ID;
        let request_id = crate::request::headers::request_id(
            session.req_header().headers.get(id_name),
            &self.shared.state.load().policy.prefixes,
        );
        let Ok(mut resp) = ResponseHeader::build(reply.status, Some(5)) else {
            return;
        };
        let length = match &reply.body {
            Body::Full(b) => resp.insert_header("content-length", b.len().to_string()),
            Body::Keys(..) => resp.insert_header("transfer-encoding", "chunked"),
        };
        let headers_ok = resp
            .insert_header("content-type", reply.content_type)
            .is_ok()
            && length.is_ok()
            && resp.insert_header("cache-control", "no-store").is_ok()
            && resp.insert_header(id_name.clone(), request_id).is_ok()
            && (!reply.www_authenticate
                || resp.insert_header("www-authenticate", "Bearer").is_ok())
            && reply
                .allow
                .as_deref()
                .is_none_or(|a| resp.insert_header("allow", a).is_ok());
        if !headers_ok {
            return;
        }
        // Pingora times body writes only; the head gets the same bound here.
        match tokio::time::timeout(send_timeout, session.write_response_header(Box::new(resp)))
            .await
        {
            Ok(Ok(())) => {}
            _ => return,
        }
        if !head_only {
            match reply.body {
                Body::Full(b) => {
                    let _ = session.write_response_body(b, true).await;
                }
                Body::Keys(gw, now) => {
                    let keys = &gw.policy.keys;
                    for range in chunk_ranges(keys.len()) {
                        if gw.config.cluster.is_some() {
                            self.fleet.fleet_last_used(keys, range.clone()).await;
                        }
                        let last = range.end == keys.len();
                        let chunk = key_list_chunk(keys, now, range.start, range.end);
                        if session.write_response_body(chunk, last).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let _ = session.finish().await;
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let is_get = method == http::Method::GET || method == http::Method::HEAD;
        match (path.as_str(), is_get, method == http::Method::POST) {
            ("/metrics", true, _) => self.metrics(),
            ("/healthz", true, _) => Reply::json(200, json!({"status": "ok"})),
            ("/readyz", true, _) => self.readyz(),
            ("/keys", true, _) => match self.authorize(session) {
                Some(denied) => denied,
                None => self.keys(),
            },
            ("/reload", _, true) => match self.authorize(session) {
                Some(denied) => denied,
                None => self.reload().await,
            },
            ("/metrics" | "/healthz" | "/readyz" | "/keys" | "/reload", _, _) => {
                Reply::denial(&Denial::MethodNotAllowed {
                    method,
                    allowed: if path == "/reload" {
                        "POST"
                    } else {
                        "GET, HEAD"
                    }
                    .into(),
                })
            }
            _ => Reply::denial(&Denial::NoRoute {
                method,
                path: path.into(),
            }),
        }
    }

    /// `None` when allowed; the 401 reply otherwise.
    fn authorize(&self, session: &ServerSession) -> Option<Reply> {
        let gw = self.shared.state.load();
        let expected = gw.config.admin.token_hash?;
        let values = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        match bearer_token(values) {
            Err(BearerError::Missing) => {
                Some(Reply::error(401, "UNAUTHORIZED", "Missing bearer token"))
            }
            Err(BearerError::Ambiguous) => {
                Some(Reply::error(401, "UNAUTHORIZED", "Invalid admin token"))
            }
            Ok(token) if KeyDigest::of(token).ct_eq(&expected) => None,
            Ok(_) => Some(Reply::error(401, "UNAUTHORIZED", "Invalid admin token")),
        }
    }

    fn metrics(&self) -> Reply {
        let gw = self.shared.state.load();
        gw.record_key_gauges(&self.shared.metrics, self.shared.clock.unix_secs());
        let metrics = &self.shared.metrics;
        metrics.buckets.set(self.shared.limiter.len() as i64);
        // A counter mirrored from the limiter's own: raise it by what is new.
        let untracked = self.shared.limiter.untracked();
        metrics
            .untracked
            .inc_by(untracked.saturating_sub(metrics.untracked.get()));
        let dropped = self.shared.access_log.dropped();
        metrics
            .log_dropped
            .inc_by(dropped.saturating_sub(metrics.log_dropped.get()));
        Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: Body::Full(Bytes::from(self.shared.metrics.render())),
            www_authenticate: false,
            allow: None,
        }
    }

    fn readyz(&self) -> Reply {
        let gw = self.shared.state.load();
        let lc = &self.shared.lifecycle;
        let (status, word) = if lc.is_draining() {
            (503, "draining")
        } else if lc.is_ready() {
            (200, "ready")
        } else {
            (503, "starting")
        };
        let upstreams: Vec<_> = gw
            .upstreams
            .iter()
            .map(|u| {
                json!({
                    "name": &*u.name,
                    "healthy": u.is_healthy(),
                    "servers": u.health(),
                })
            })
            .collect();
        let mut body = json!({"status": word, "upstreams": upstreams});
        // A degraded fleet does not make the gateway unready: it still
        // limits, as `on_unavailable` says.
        if gw.config.cluster.is_some() {
            let fleet = crate::cluster::status(self.shared.limiter.fleet());
            // Up once a sync has succeeded, as `keygate_cluster_up` says:
            // before the first one the instance only assumes it is alone.
            let synced = self.shared.metrics.cluster.up.get() == 1;
            body["cluster"] = json!({
                "up": synced && fleet.is_some_and(|f| f.up),
                "instances": fleet.map_or(0, |f| f.instances),
            });
        }
        Reply::json(status, body)
    }

    fn keys(&self) -> Reply {
        Reply {
            status: 200,
            content_type: "application/json",
            body: Body::Keys(self.shared.state.load_full(), self.shared.clock.unix_secs()),
            www_authenticate: false,
            allow: None,
        }
    }

    async fn reload(&self) -> Reply {
        match self.reloader.reload_async("POST /reload").await {
            Ok(report) => Reply::json(200, json!({"status": "reloaded", "report": report})),
            Err(problems) => Reply::json(
                422,
                json!({
                    "status": "refused",
                    "errors": problems.0.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                }),
            ),
        }
    }
}

/// One key as `/keys` lists it: every field but the hash.
#[derive(serde::Serialize)]
struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    #[serde(rename = "type")]
    key_type: &'static str,
    company: &'a str,
    workspace: Option<&'a str>,
    scopes: Vec<&'static str>,
    state: &'static str,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    rate_limit: Option<RateView>,
    replaces: Option<&'a str>,
    replaced_by: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct RateView {
    requests: u32,
    per_secs: u32,
    burst: u32,
}

/// The `/keys` array in chunks of [`KEYS_PER_CHUNK`] records, each with
/// whether it is the last (there is always at least one: `[]`).
#[cfg(test)]
fn key_list_chunks(keys: &KeyIndex, now: i64) -> impl Iterator<Item = (Bytes, bool)> + '_ {
    chunk_ranges(keys.len()).map(move |r| {
        (
            key_list_chunk(keys, now, r.start, r.end),
            r.end == keys.len(),
        )
    })
}

/// The slots of each `/keys` chunk (at least one, possibly empty: `[]`).
fn chunk_ranges(total: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..total.div_ceil(KEYS_PER_CHUNK).max(1)).map(move |i| {
        let start = i * KEYS_PER_CHUNK;
        start..(start + KEYS_PER_CHUNK).min(total)
    })
}

/// Records `start..end` of the `/keys` array, with the opening bracket on the
/// first chunk and the closing one on the last.
fn key_list_chunk(keys: &KeyIndex, now: i64, start: usize, end: usize) -> Bytes {
    let records = keys.records();
    let mut out = Vec::with_capacity((end - start) * 320 + 2);
    if start == 0 {
        out.push(b'[');
    }
    for (slot, k) in records.iter().enumerate().take(end).skip(start) {
        if slot > 0 {
            out.push(b',');
        }
        let view = KeyView {
            id: k.id(),
            name: k.name(),
            description: k.description(),
            key_type: k.key_type.as_str(),
            company: &k.company,
            workspace: k.workspace.as_deref(),
            scopes: k.scopes.iter().map(|s| s.as_str()).collect(),
            state: k.state(now).as_str(),
            replaces: k.replaces(),
            replaced_by: keys.replaced_by(slot),
            created_at: format_time(k.created_at),
            expires_at: k.expires_at.map(format_time),
            revoked_at: k.revoked_at.map(format_time),
            last_used_at: keys.last_used(slot).map(format_time),
            rate_limit: k.rate_limit.map(|l| RateView {
                requests: l.requests.get(),
                per_secs: l.per_secs.get(),
                burst: l.burst.get(),
            }),
        };
        // Writing to a Vec cannot fail, and every field serializes.
        let _ = serde_json::to_writer(&mut out, &view);
    }
    if end == records.len() {
        out.push(b']');
    }
    Bytes::from(out)
}

/// Runs the accept loop on the service's runtime. It ignores the shutdown
/// watch on purpose: the process exit ends it, after the grace period.
#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener failed");
                return;
            }
        };
        let lifecycle = Arc::clone(&self.handler.shared.lifecycle);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        tokio::spawn(self.handler.clone().serve(tcp));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // On SIGTERM the admin listener keeps answering (readyz says
                // 503 through the grace); after a hand-over the new process
                // answers on the same socket, so this one stops taking it.
                _ = shutdown.changed(), if !*shutdown.borrow() => {
                    if lifecycle.is_handing_over() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::KeyDigest;

    fn index(n: usize) -> KeyIndex {
        let keys: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{{\"id\":\"k{i}\",\"name\":\"n {i}\",\"type\":\"company\",\"company\":\"acme\",\
                     \"scopes\":[\"admin\",\"read:all\"],\"hash\":\"{}\",\"created_at\":\"2026-11-01T10:00:00Z\"\
                     {}}}",
                    KeyDigest::of(format!("key {i}").as_bytes()).to_text(),
                    if i % 2 == 0 {
                        ",\"rate_limit\":{\"requests\":5,\"per_secs\":60}"
                    } else {
                        ",\"revoked_at\":\"2026-11-02T00:00:00Z\",\"description\":\"a \\\"quoted\\\" one\""
                    }
                )
            })
            .collect();
        let text = format!("{{\"keys\":[{}]}}", keys.join(","));
        KeyIndex::parse(std::path::Path::new("keys.json"), &text).unwrap()
    }

    /// The chunks, as the admin listener writes them, joined; only the last
    /// is marked last.
    fn listing(keys: &KeyIndex, now: i64) -> Vec<u8> {
        let chunks: Vec<(Bytes, bool)> = key_list_chunks(keys, now).collect();
        assert_eq!(chunks.len(), keys.len().div_ceil(KEYS_PER_CHUNK).max(1));
        let lasts: Vec<bool> = chunks.iter().map(|(_, last)| *last).collect();
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
        assert_eq!(lasts.last(), Some(&true));
        chunks.into_iter().flat_map(|(c, _)| c.to_vec()).collect()
    }

    #[test]
    fn key_listing_is_one_json_array_across_chunks() {
        let now = 1_800_000_000;
        for n in [
            0,
            1,
            KEYS_PER_CHUNK,
            KEYS_PER_CHUNK + 1,
            2 * KEYS_PER_CHUNK + 7,
        ] {
            let keys = index(n);
            if n > 0 {
                keys.touch(0, now);
            }
            let text = listing(&keys, now);
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{n} keys: {e}"));
            assert_eq!(list.len(), n);
            for (i, k) in list.iter().enumerate() {
                assert_eq!(k["id"], format!("k{i}"));
                let fields: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(
                    fields,
                    [
                        "id",
                        "name",
                        "description",
                        "type",
                        "company",
                        "workspace",
                        "scopes",
                        "state",
                        "created_at",
                        "expires_at",
                        "revoked_at",
                        "last_used_at",
                        "rate_limit",
                        "replaces",
                        "replaced_by"
                    ]
                );
            }
            if n > 1 {
                assert_eq!(
                    list[0]["rate_limit"],
                    serde_json::json!({"requests": 5, "per_secs": 60, "burst": 5})
                );
                assert_eq!(list[0]["last_used_at"], "2027-01-15T08:00:00Z");
                assert_eq!(list[1]["state"], "revoked");
                assert_eq!(list[1]["description"], "a \"quoted\" one");
                assert_eq!(list[1]["scopes"], serde_json::json!(["read:all", "admin"]));
                assert!(list[1]["rate_limit"].is_null() && list[1]["workspace"].is_null());
            }
            assert!(!String::from_utf8_lossy(&text).contains("sha256"));
        }
    }
}
