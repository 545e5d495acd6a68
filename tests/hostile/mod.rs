//! Hostile clients and broken peers, black box: request smuggling attempts,
//! hop-by-hop abuse, forged identity headers, encoded path tricks, oversized
//! heads, odd request targets, slow and vanishing clients, upstreams that reset
//! or never answer. Each test asserts the exact outcome (where Pingora answers
//! before keygate's code runs, what Pingora does), that nothing unintended
//! reached the upstream, that the gateway keeps serving, and that no secret
//! reached the log. One file per attack; the shared fixture `Fx` is here.

// Smuggling: CL with TE, conflicting or broken framing.
mod smuggling;
// Hop-by-hop abuse: `Connection` nominating identity or forwarding headers.
mod hop_by_hop;
// Forged identity headers, in any spelling, on authed and auth-none routes.
mod forged;
// Encoded dot segments and separators in paths.
mod paths;
// Oversized heads and too many headers.
mod large_heads;
// Odd request targets: absolute, asterisk and authority form.
mod odd_targets;
// Bodies sent with an early denial, and keep-alive.
mod bodies;
// Slow peers: slowloris, head/body timeouts, vanishing clients, broken upstreams.
mod slow_peers;
// Secrets: every log level and hostile traffic, guessed probes.
mod secrets;

use crate::support::*;
use std::time::Duration;

// ------------------------------------------------------------------ helpers --

/// The gateway, its echo upstream, and the keys of the test snapshot.
struct Fx {
    up: Upstream,
    gw: Gateway,
    /// Company key, `admin` (id `k_admin`).
    admin: String,
    /// Company key, `read:all` (id `k_reader`).
    reader: String,
    /// Workspace key of `ws_a`, `read:all write:all` (id `k_ws`).
    ws: String,
    /// Every key text that was ever presented to the gateway.
    secrets: Vec<String>,
}

fn snapshot() -> (Snapshot, String, String, String) {
    let mut s = Snapshot::new()
        .workspace("ws_a", "acme")
        .workspace("ws_b", "acme");
    let admin = s.company_key("k_admin", "acme").scopes(&["admin"]).add();
    let reader = s
        .company_key("k_reader", "acme")
        .scopes(&["read:all"])
        .add();
    let ws = s
        .workspace_key("k_ws", "acme", "ws_a")
        .scopes(&["read:all", "write:all"])
        .add();
    (s, admin, reader, ws)
}

fn fixture_on(up: Upstream, upstream_addr: std::net::SocketAddr) -> Fx {
    fixture_with_config(up, standard_config(upstream_addr, "", ""))
}

fn fixture_with_config(up: Upstream, config: String) -> Fx {
    let (s, admin, reader, ws) = snapshot();
    let gw = Gateway::start(&config, &s.render());
    let secrets = vec![admin.clone(), reader.clone(), ws.clone()];
    Fx {
        up,
        gw,
        admin,
        reader,
        ws,
        secrets,
    }
}

fn fixture() -> Fx {
    let up = Upstream::start();
    let addr = up.addr;
    fixture_on(up, addr)
}

impl Fx {
    fn port(&self) -> u16 {
        self.gw.ports.http
    }

    /// A key of the right form that is in no snapshot; remembered as a secret.
    fn unknown_key(&mut self, prefix: &str) -> String {
        let k = mint(prefix);
        self.secrets.push(k.clone());
        k
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

    /// No request for `path` reached the upstream.
    #[track_caller]
    fn assert_never_upstream(&self, path: &str) {
        let seen = self.up.seen();
        assert!(
            seen.iter().all(|s| s.url != path),
            "{path} reached the upstream: {seen:?}"
        );
    }

    /// The access-log line of the request with this `X-Request-Id`.
    fn access_line(&self, request_id: &str) -> serde_json::Value {
        self.gw.access_line(request_id)
    }

    /// No key, key hash (either form) or bearer credential is in the log.
    #[track_caller]
    fn assert_no_secrets_logged(&self) {
        assert_keys_kept_out_of(&self.gw.log(), &self.secrets);
    }
}

/// keygate's answer to a head Pingora's parser refused: its JSON body, an
/// `X-Request-Id`, no `Server: Pingora`, the connection closed, and an
/// access-log line saying `invalid_request`.
#[track_caller]
fn assert_refused_head(fx: &Fx, c: &mut Conn, r: &Reply, name: &str) {
    assert_denied(r, 400, "BAD_REQUEST", "Invalid request");
    assert_eq!(r.header("server"), None, "{name}");
    assert!(r.closes(), "{name}");
    assert!(
        c.is_closed_within(Duration::from_secs(5)),
        "{name}: connection kept open"
    );
    let id = r.header("x-request-id").unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}: {id}"
    );
    let line = fx.access_line(id);
    assert_eq!(line["status"], 400, "{name}: {line}");
    assert_eq!(line["outcome"], "invalid_request", "{name}: {line}");
    assert_eq!(line["route"], "unmatched", "{name}: {line}");
    assert_eq!(line["method"], "-", "{name}: {line}");
}
