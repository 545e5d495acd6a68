//! Hostile clients and broken peers, black box: request smuggling attempts,
//! hop-by-hop abuse, forged identity headers, encoded path tricks, oversized
//! heads, odd request targets, slow and vanishing clients, upstreams that reset
//! or never answer. Each test asserts the exact outcome (where Pingora answers
//! before keygate's code runs, what Pingora does), that nothing unintended
//! reached the upstream, that the gateway keeps serving, and that no secret
//! reached the log.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

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
    let admin = s.key("k_admin", "company", "acme", None, &["admin"], "");
    let reader = s.key("k_reader", "company", "acme", None, &["read:all"], "");
    let ws = s.key(
        "k_ws",
        "workspace",
        "acme",
        Some("ws_a"),
        &["read:all", "write:all"],
        "",
    );
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

// ------------------------------------------------------------- smuggling --

/// Pingora (RFC 9112 §6.3) drops `Content-Length` when `Transfer-Encoding` is
/// present, reads the body as chunked and turns keep-alive off, then hands
/// the request to keygate as usual. The hidden request is never served either
/// way; this test holds the stricter line that such a request is refused
/// outright and never proxied (as nginx and most gateways do).
#[test]
fn content_length_with_transfer_encoding_never_reaches_the_upstream() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    // The chunked body hides a request; read by Content-Length it would end
    // inside the chunk framing and the rest would be parsed as a new request.
    let smuggled = "GET /healthz?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let mut outcomes = Vec::new();
    for (name, te_first) in [("CL then TE", false), ("TE then CL", true)] {
        let before = fx.up.count();
        let cl = "Content-Length: 4";
        let te = "Transfer-Encoding: chunked";
        let lines = if te_first {
            [auth.as_str(), te, cl]
        } else {
            [auth.as_str(), cl, te]
        };
        let req = format!("{}{chunked}", head("POST", "/api/v1/company/x", &lines));
        let mut c = Conn::connect(fx.port());
        let _ = c.send(req.as_bytes());
        let reply = c.read_reply();
        let closed = c.is_closed_within(Duration::from_secs(5));
        // Whatever else happens, the hidden request is never served.
        assert!(
            fx.up.seen().iter().all(|s| !s.url.contains("smuggled")),
            "{name}: a smuggled request reached the upstream"
        );
        assert!(closed, "{name}: connection kept open");
        let upstream: Vec<String> = fx.up.seen()[before..]
            .iter()
            .map(|s| {
                format!(
                    "{} {} te={:?} cl={:?} body={:?}",
                    s.method,
                    s.url,
                    s.header("transfer-encoding"),
                    s.header("content-length"),
                    String::from_utf8_lossy(&s.body)
                )
            })
            .collect();
        outcomes.push((name, reply.map(|r| r.status), upstream));
    }
    // Refused with 400 before any other check, and nothing upstream.
    assert!(
        outcomes
            .iter()
            .all(|(_, status, up)| *status == Some(400) && up.is_empty()),
        "Content-Length + Transfer-Encoding was proxied: {outcomes:#?}"
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn content_length_with_transfer_encoding_is_refused_before_auth_and_closes() {
    let fx = fixture();
    // No key: the framing check answers first and nothing reads past the
    // ambiguous body.
    let smuggled = "GET /healthz?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let req = format!(
        "{}{chunked}",
        head(
            "POST",
            "/api/v1/company/x",
            &["Content-Length: 4", "Transfer-Encoding: chunked"]
        )
    );
    let mut c = Conn::connect(fx.port());
    assert!(c.send(req.as_bytes()));
    let r = c.read_reply().expect("an answer");
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request");
    assert!(
        r.closes(),
        "Connection: close expected, got {:?}",
        r.headers
    );
    assert!(c.is_closed_within(Duration::from_secs(5)));
    assert!(c.buf.is_empty(), "a second response: {:?}", c.buf);
    assert_eq!(fx.up.count(), 0);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
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

#[test]
fn conflicting_or_broken_framing_is_refused_with_json_before_any_check() {
    let mut fx = fixture();
    let unknown = fx.unknown_key("ord_c_");
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let bad_auth = format!("Authorization: Bearer {unknown}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "two different Content-Length headers",
            vec!["Content-Length: 5", "Content-Length: 6"],
            "hello!",
        ),
        (
            "one Content-Length with two values",
            vec!["Content-Length: 5, 6"],
            "hello!",
        ),
        ("a negative Content-Length", vec!["Content-Length: -1"], ""),
        (
            "a non-numeric Content-Length",
            vec!["Content-Length: 1e3"],
            "",
        ),
        (
            "a final encoding that is not chunked",
            vec!["Transfer-Encoding: chunked, identity"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "whitespace before the colon",
            vec!["Content-Length : 5"],
            "hello",
        ),
    ];
    for (name, framing, body) in &cases {
        for a in [&auth, &bad_auth] {
            let mut lines = vec![a.as_str()];
            lines.extend(framing.iter().copied());
            let req = format!("{}{body}", head("POST", "/api/v1/company/x", &lines));
            let mut c = Conn::connect(fx.port());
            let _ = c.send(req.as_bytes());
            // Refused by Pingora's parser, answered by keygate.
            let r = c
                .read_reply()
                .unwrap_or_else(|| panic!("{name}: no answer"));
            assert_refused_head(&fx, &mut c, &r, name);
        }
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    let refused = fx
        .gw
        .metric("keygate_requests_total{route=\"unmatched\",status=\"400\"}");
    assert_eq!(refused, Some((cases.len() * 2) as f64), "each counted");
    // Identical duplicates are one length (RFC 9110 §8.6): accepted.
    let req = format!(
        "{}hello",
        head(
            "POST",
            "/api/v1/company/dup",
            &[
                &auth,
                "Content-Length: 5",
                "Content-Length: 5",
                "Connection: close"
            ]
        )
    );
    let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().body, b"hello");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// -------------------------------------------------------- hop-by-hop abuse --

#[test]
fn connection_nominating_identity_headers_cannot_strip_or_forge_them() {
    let fx = fixture();
    for connection in [
        "x-keygate-key-id",
        "X-Keygate-Key-Id, x-keygate-company, x-keygate-scopes",
        "x-keygate-workspace, x-keygate-key-type",
        "x-request-id",
        "authorization",
        "keep-alive, x_keygate_key_id, X-Request-Id",
    ] {
        let auth = format!("Authorization: Bearer {}", fx.ws);
        let conn = format!("Connection: {connection}");
        let req = head(
            "GET",
            "/api/v1/workspaces/ws_a/posts/1",
            &[
                &auth,
                &conn,
                "X-Keygate-Key-Id: evil",
                "x_keygate_company: evil",
                "X-Request-Id: client-chosen-id",
            ],
        );
        let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
        assert_eq!(
            r.status,
            200,
            "Connection: {connection}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let seen = fx.up.last();
        assert_eq!(seen.url, "/api/v1/workspaces/ws_a/posts/1");
        assert_eq!(
            identity(&seen),
            pairs(&[
                ("x-keygate-key-id", "k_ws"),
                ("x-keygate-key-type", "workspace"),
                ("x-keygate-company", "acme"),
                ("x-keygate-workspace", "ws_a"),
                ("x-keygate-scopes", "read:all write:all"),
            ]),
            "Connection: {connection}"
        );
        assert_eq!(seen.header("x-request-id"), Some("client-chosen-id"));
        assert_eq!(r.header("x-request-id"), Some("client-chosen-id"));
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("connection"), None, "Connection forwarded");
        assert!(
            seen.headers.iter().all(|(_, v)| v != "evil"),
            "Connection: {connection}: {:?}",
            seen.headers
        );
    }
    assert_eq!(fx.up.count(), 6);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn connection_nominating_forwarding_headers_is_refused_and_smuggles_nothing() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    // Pingora refuses (when it builds the upstream request, so after keygate's
    // decision) to let a client nominate Host or the forwarding headers, and
    // refuses nominations that are not HTTP tokens; keygate maps that to its
    // generic 400 and nothing is sent upstream.
    for connection in [
        "X-Forwarded-For",
        "x-forwarded-proto",
        "X-Forwarded-Host",
        "host",
        "\"X-Forwarded-For\"",
        "close, x-forwarded-for",
        ":authority",
    ] {
        let conn = format!("Connection: {connection}");
        let req = head(
            "GET",
            "/api/v1/company/nominated",
            &[
                &auth,
                &conn,
                "X-Forwarded-For: 6.6.6.6",
                "X-Keygate-Key-Id: evil",
            ],
        );
        let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request");
        assert!(r.closes(), "Connection: {connection}: {:?}", r.headers);
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Ten or more nominations are refused the same way.
    let many: Vec<String> = (0..12).map(|i| format!("x-n{i}")).collect();
    let conn = format!("Connection: {}", many.join(", "));
    let r = exchange(
        fx.port(),
        head("GET", "/api/v1/company/nominated", &[&auth, &conn]).as_bytes(),
    )
    .expect("an answer");
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request");
    assert_eq!(fx.up.count(), 0);
    // A nominated underscore spelling is just another extension header:
    // removed by Pingora, and keygate still sets the real values.
    let req = head(
        "GET",
        "/api/v1/company/nominated",
        &[
            &auth,
            "Connection: x_forwarded_for",
            "x_forwarded_for: 6.6.6.6",
            "Connection: close",
        ],
    );
    let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert!(seen.headers.iter().all(|(_, v)| !v.contains("6.6.6.6")));
    assert_eq!(seen.header("x-keygate-key-id"), Some("k_admin"));
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// --------------------------------------------------- forged identity headers --

/// Forged identity, request-id and forwarding headers in assorted spellings.
const FORGED: [&str; 17] = [
    "X_Keygate_Key_Id: evil",
    "x-keygate-key-id: evil",
    "x-keygate-company: evil",
    "X-KEYGATE-SCOPES: admin",
    "X-Keygate-Key-Type: company",
    "x_keygate_workspace: evil",
    "X-Keygate-Anything-Else: evil",
    "X_KEYGATE_: evil",
    "X-Forwarded-For: 6.6.6.6",
    "x_forwarded_for: 6.6.6.6",
    "X_Forwarded_Proto: https",
    "x_request_id: evil",
    "Forwarded: for=6.6.6.6;proto=https;host=evil",
    "forwarded: for=6.6.6.6",
    "X-Real-IP: 6.6.6.6",
    "x_real_ip: 6.6.6.6",
    "X-Forwarded-Host: evil",
];

/// Headers no client may set, whatever their spelling.
fn forged_survivors(seen: &Seen) -> Vec<(String, String)> {
    seen.headers
        .iter()
        .filter(|(n, v)| {
            let folded = n.replace('_', "-").to_ascii_lowercase();
            v == "evil"
                || v.contains("6.6.6.6")
                || n.contains('_')
                || (folded == "x-keygate-scopes" && v == "admin")
                || (folded == "x-forwarded-proto" && v == "https")
        })
        .cloned()
        .collect()
}

#[test]
fn forged_identity_headers_are_stripped_in_any_spelling() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.ws);
    let mut lines = vec![auth.as_str()];
    lines.extend(FORGED);
    lines.push("Connection: close");
    let r = exchange(
        fx.port(),
        head("POST", "/api/v1/workspaces/ws_a/records/1", &lines).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_ws"),
            ("x-keygate-key-type", "workspace"),
            ("x-keygate-company", "acme"),
            ("x-keygate-workspace", "ws_a"),
            ("x-keygate-scopes", "read:all write:all"),
        ])
    );
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.all("forwarded"), vec!["for=127.0.0.1;proto=http"]);
    assert_eq!(seen.all("x-real-ip"), Vec::<&str>::new());
    assert_eq!(seen.all("x-forwarded-host"), Vec::<&str>::new());
    assert_eq!(seen.all("x-request-id").len(), 1);
    // The same on a company route with a company key.
    let auth = format!("Authorization: Bearer {}", fx.reader);
    let mut lines = vec![auth.as_str()];
    lines.extend(FORGED);
    lines.push("Connection: close");
    let r = exchange(
        fx.port(),
        head("GET", "/api/v1/company/workspaces/ws_b/x", &lines).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_reader"),
            ("x-keygate-key-type", "company"),
            ("x-keygate-company", "acme"),
            ("x-keygate-workspace", "ws_b"),
            ("x-keygate-scopes", "read:all"),
        ])
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn forged_identity_headers_are_stripped_on_auth_none_routes() {
    let fx = fixture();
    // Without a key, and with a valid key: an `auth = "none"` route sets no
    // identity, and client copies never pass.
    let auth = format!("Authorization: Bearer {}", fx.admin);
    for with_key in [false, true] {
        let mut lines: Vec<&str> = FORGED.to_vec();
        if with_key {
            lines.push(&auth);
        }
        lines.push("Connection: close");
        let r = exchange(fx.port(), head("GET", "/healthz", &lines).as_bytes()).expect("an answer");
        assert_eq!(r.status, 200, "with key: {with_key}");
        let seen = fx.up.last();
        assert_eq!(seen.url, "/healthz");
        assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
        assert_eq!(identity(&seen), vec![], "with key: {with_key}");
        assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
        assert_eq!(seen.all("forwarded"), vec!["for=127.0.0.1;proto=http"]);
        assert_eq!(seen.header("authorization"), None);
    }
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ----------------------------------------------------------------- paths --

#[test]
fn encoded_dot_segments_and_separators_are_400_invalid_request_path() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    for target in [
        "/api/v1/company/%2e%2e/x",
        "/api/v1/company/%2E%2e/x",
        "/api/v1/company/%2e%2E/keys/x",
        "/api/v1/company/.%2E/x",
        "/api/v1/company/%2E./x",
        "/api/v1/company/%2e/x",
        "/api/v1/company/%2E",
        "/api/v1/company/x/%2e%2e",
        "/api/v1/company/../x",
        "/api/v1/company/./x",
        "/api/v1/company/x/..",
        "/api/v1/company/a%2Fb",
        "/api/v1/company/a%2fb",
        "/api/v1/company/%2F%2Fevil",
        "/api/v1/company/a%5Cb",
        "/api/v1/company/a%5cb",
        "/api/v1/company/a\\b",
        "/api/v1/company/a%00b",
        "/api/v1/company/%00",
        "/api/v1/company/a%zzb",
        "/api/v1/company/a%2",
        "/api/v1/company/%c0%ae%c0%ae/x",
        "/api/v1/company/%2e%2e%2fkeys/x?q=1",
        "/api/v1/workspaces/%2e%2e/posts/x",
        "/healthz/%2e%2e",
    ] {
        let req = head("GET", target, &[&auth, "Connection: close"]);
        let r = exchange(fx.port(), req.as_bytes()).unwrap_or_else(|| panic!("{target}: closed"));
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Control: the same bytes in the query string are not the path.
    let req = head(
        "GET",
        "/api/v1/company/x?next=%2e%2e%2F%5c%00",
        &[&auth, "Connection: close"],
    );
    let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/x?next=%2e%2e%2F%5c%00");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// Tomcat, Spring and Jetty drop `;params` from a segment before resolving
/// dots, so `..;` is `..` to them: a keyless request under a public route, or
/// a workspace key under its own workspace, must not climb into another route.
#[test]
fn dot_segments_with_path_parameters_are_400_before_any_route() {
    let up = Upstream::start();
    let addr = up.addr;
    let public = "[[routes]]\nname = \"public\"\npath = \"/public/**\"\nupstream = \"api\"\nauth = \"none\"\nscope = \"none\"\n";
    let fx = fixture_with_config(up, standard_config(addr, "", public));
    let ws = format!("Authorization: Bearer {}", fx.ws);
    for (target, auth) in [
        ("/public/..;/api/v1/company/x", None),
        ("/public/..;x=1/api/v1/company/x", None),
        ("/public/%2e%2e;/api/v1/company/x", None),
        ("/public/.%2e;jsessionid=a/api/v1/company/x", None),
        ("/public/.;/x", None),
        ("/public/..%3b/api/v1/company/x", None),
        ("/public/..%3B/api/v1/company/x", None),
        (
            "/api/v1/workspaces/ws_a/..;/ws_b/posts/r",
            Some(ws.as_str()),
        ),
        (
            "/api/v1/workspaces/ws_a/posts/..;/..;/ws_b/posts/r",
            Some(ws.as_str()),
        ),
    ] {
        let headers: Vec<&str> = auth.into_iter().chain(["Connection: close"]).collect();
        let r = exchange(fx.port(), head("GET", target, &headers).as_bytes())
            .unwrap_or_else(|| panic!("{target}: closed"));
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Control: parameters on a plain segment are the upstream's business.
    let r = exchange(
        fx.port(),
        head("GET", "/public/a;jsessionid=1/b", &["Connection: close"]).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/public/a;jsessionid=1/b");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ------------------------------------------------------------ large heads --

/// Sends a head with `count` extra headers of `value_len` bytes each (and the
/// admin key); the connection and the response, if any.
fn big_head(fx: &Fx, count: usize, value_len: usize) -> (Conn, Option<Reply>) {
    let value = "v".repeat(value_len);
    let mut req = format!(
        "GET /api/v1/company/big HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n",
        fx.admin
    );
    for i in 0..count {
        req.push_str(&format!("x-filler-{i}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut c = Conn::connect(fx.port());
    let _ = c.send(req.as_bytes());
    let reply = c.read_reply();
    (c, reply)
}

#[test]
fn oversized_heads_and_too_many_headers_never_reach_the_upstream() {
    let fx = fixture();
    // Under Pingora's own caps (1 MiB, 256 fields) but over keygate's
    // `max_header_bytes` (64 KiB) / `max_headers` (100): keygate's JSON 431,
    // and the connection stays usable (the head was read whole, no body).
    let next = head(
        "GET",
        "/api/v1/company/next",
        &[&format!("Authorization: Bearer {}", fx.admin)],
    );
    for (name, count, len) in [
        ("64 KB in 64 headers", 64, 1024),
        ("64 KB in one header", 1, 64 * 1024),
        ("150 small headers", 150, 1),
    ] {
        let (mut c, reply) = big_head(&fx, count, len);
        let r = reply.unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_denied(
            &r,
            431,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
            "Request header fields too large",
        );
        assert_eq!(fx.up.count(), 0, "{name} reached the upstream");
        assert!(c.send(next.as_bytes()), "{name}: closed after the 431");
        let r = c.read_reply().expect("the next request on the connection");
        assert_eq!(r.status, 200, "{name}: next request");
        assert_eq!(fx.up.last().url, "/api/v1/company/next");
        fx.up.clear();
    }
    // Over Pingora's caps: refused before keygate's checks run, with
    // keygate's JSON 400 (or a reset while the client is still writing), and
    // the connection is closed.
    for (name, count, len) in [
        ("2 MB in one header", 1, 2 * 1024 * 1024),
        ("2 MB in 256 headers", 256, 8 * 1024),
        ("300 small headers", 300, 1),
    ] {
        let (mut c, reply) = big_head(&fx, count, len);
        if let Some(r) = reply {
            assert_refused_head(&fx, &mut c, &r, name);
        }
        assert_eq!(fx.up.count(), 0, "{name} reached the upstream");
    }
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ---------------------------------------------------------- odd targets --

#[test]
fn absolute_form_target_is_routed_and_authorized_like_origin_form() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let reader = format!("Authorization: Bearer {}", fx.reader);
    let req = |target: &str, auth: Option<&str>, host: &str| {
        let mut h = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n");
        if let Some(a) = auth {
            h.push_str(a);
            h.push_str("\r\n");
        }
        h.push_str("Connection: close\r\n\r\n");
        exchange(fx.port(), h.as_bytes()).expect("an answer")
    };
    let abs = "http://example.com/api/v1/company/x?q=1";
    // Authorized: proxied, the path routed exactly as origin-form.
    let r = req(abs, Some(&auth), "example.com");
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let seen = fx.up.last();
    // Pingora forwards the target in absolute form, Host from its authority.
    assert_eq!(seen.url, abs);
    assert_eq!(seen.header("host"), Some("example.com"));
    assert_eq!(seen.header("x-keygate-key-id"), Some("k_admin"));
    // The same auth checks, in the same order.
    assert_denied(
        &req(abs, None, "example.com"),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    assert_denied(
        &req(
            "http://example.com/api/v1/company/keys/x",
            Some(&reader),
            "example.com",
        ),
        403,
        "FORBIDDEN",
        "API key is missing the required scope: admin",
    );
    assert_denied(
        &req("http://example.com/nope", Some(&auth), "example.com"),
        404,
        "NOT_FOUND",
        "No route for GET /nope",
    );
    assert_denied(
        &req(
            "http://example.com/api/v1/company/%2e%2e/keys/x",
            Some(&auth),
            "example.com",
        ),
        400,
        "BAD_REQUEST",
        "Invalid request path",
    );
    assert_denied(
        &req(
            "http://example.com/api/v1/workspaces/ws_b/posts/1",
            Some(&format!("Authorization: Bearer {}", fx.ws)),
            "example.com",
        ),
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_b",
    );
    let count = fx.up.count();
    assert_eq!(count, 1);
    // An absolute-form target whose authority disagrees with Host: refused
    // by Pingora's parser, answered with keygate's JSON.
    let r = req(abs, Some(&auth), "other.example");
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request");
    assert_eq!(r.header("server"), None);
    assert_eq!(fx.up.count(), count);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn asterisk_and_authority_form_targets_never_reach_the_upstream() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let r = exchange(
        fx.port(),
        head("OPTIONS", "*", &[&auth, "Connection: close"]).as_bytes(),
    )
    .expect("an answer");
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    let r = exchange(
        fx.port(),
        head("CONNECT", "example.com:443", &[&auth, "Connection: close"]).as_bytes(),
    );
    // Pingora refuses authority-form CONNECT (no Host) before keygate
    // runs; the answer is keygate's JSON, closed.
    let r = r.expect("an answer to CONNECT");
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request");
    assert!(r.closes());
    // With a Host that agrees, Pingora's 405: keygate's words for it.
    let r = exchange(
        fx.port(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .expect("an answer to CONNECT with Host");
    assert_denied(
        &r,
        405,
        "METHOD_NOT_ALLOWED",
        "Method CONNECT is not supported",
    );
    assert!(r.closes());
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ------------------------------------------------- bodies and keep-alive --

#[test]
fn a_body_sent_with_an_early_denial_is_never_parsed_as_a_request() {
    let mut fx = fixture();
    let port = fx.port();
    let unknown = fx.unknown_key("ord_");
    // The body is a whole request; if it were left unread on a reused
    // connection it would be served as the next one.
    let smuggled = "GET /healthz?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let next = head(
        "GET",
        "/api/v1/company/after",
        &[&format!("Authorization: Bearer {}", fx.admin)],
    );
    let bad_auth = format!("Authorization: Bearer {unknown}");
    let cl = format!("Content-Length: {}", smuggled.len());
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let denied: Vec<(u16, String)> = vec![
        (
            401,
            format!("{}{smuggled}", head("POST", "/api/v1/company/x", &[&cl])),
        ),
        (
            401,
            format!(
                "{}{smuggled}",
                head("POST", "/api/v1/company/x", &[&bad_auth, &cl])
            ),
        ),
        (
            401,
            format!(
                "{}{chunked}",
                head("POST", "/api/v1/company/x", &["Transfer-Encoding: chunked"])
            ),
        ),
        (404, format!("{}{smuggled}", head("PUT", "/nope", &[&cl]))),
    ];
    for (status, first) in &denied {
        for pipelined in [true, false] {
            let mut c = Conn::connect(port);
            if pipelined {
                // Denied request, its body and the next request in one write.
                assert!(c.send(format!("{first}{next}").as_bytes()));
            } else {
                assert!(c.send(first.as_bytes()));
            }
            let r = c.read_reply().expect("an answer to the denied request");
            assert_eq!(r.status, *status, "{first:?}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            // keygate closes rather than drain an unread body.
            assert!(r.closes(), "{first:?}: {:?}", r.headers);
            if !pipelined {
                // The next request only after the denial arrived.
                let _ = c.send(next.as_bytes());
            }
            match c.read_reply() {
                None => {}
                Some(second) => {
                    assert_eq!(second.status, 200, "second answer: {second:?}");
                    assert_eq!(second.json()["url"], "/api/v1/company/after");
                    assert_eq!(fx.up.last().url, "/api/v1/company/after");
                }
            }
        }
    }
    assert!(
        fx.up.seen().iter().all(|s| !s.url.contains("smuggled")),
        "a body was served as a request: {:?}",
        fx.up.seen().iter().map(|s| &s.url).collect::<Vec<_>>()
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ------------------------------------------------------------- slow peers --

#[test]
fn slowloris_clients_do_not_stop_the_gateway_serving_others() {
    let fx = fixture();
    // Many connections, each stuck in the middle of a request head.
    let partial = format!(
        "GET /api/v1/company/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nX-Slow: aaaa",
        fx.admin
    );
    let mut slow: Vec<Conn> = (0..200)
        .map(|_| {
            let mut c = Conn::connect(fx.port());
            assert!(c.send(partial.as_bytes()));
            c
        })
        .collect();
    // Others are served promptly meanwhile, on new and on kept-alive connections.
    let started = Instant::now();
    for i in 0..20 {
        let r = fx
            .gw
            .get(&format!("/api/v1/company/meanwhile/{i}"), Some(&fx.admin));
        assert_eq!(r.status().as_u16(), 200);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "20 requests took {elapsed:?} beside 200 stalled heads"
    );
    assert_eq!(fx.up.count(), 20);
    // The stalled heads got no answer and nothing of theirs went upstream
    // (they have `[server] header_timeout_ms`, 10 s by default, to finish;
    // `slow_request_heads_and_bodies_are_cut_at_their_timeouts` waits for it).
    for c in slow.iter_mut().take(5) {
        assert!(!c.is_closed_within(Duration::from_millis(100)));
        assert!(c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
    }
    // Finishing one stalled head still gets it served.
    let c = &mut slow[0];
    assert!(c.send(b"\r\nConnection: close\r\n\r\n"));
    let r = c.read_reply().expect("an answer to the completed head");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/slow");
    drop(slow);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// A gateway whose client timeouts are short enough to wait for.
fn fixture_with_client_timeouts() -> Fx {
    let up = Upstream::start();
    let config = standard_config(up.addr, "", "").replace(
        "grace_period_secs = 5\n",
        "grace_period_secs = 5\nheader_timeout_ms = 600\nbody_timeout_ms = 600\nkeepalive_timeout_secs = 3\n",
    );
    fixture_with_config(up, config)
}

/// Sends `bytes` one at a time, 100 ms apart, until the server closes the
/// connection; how long that took, or `None` if all were sent first.
fn dribble(c: &mut Conn, bytes: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    for b in bytes {
        if !c.send(&[*b]) || c.is_closed_within(Duration::from_millis(100)) {
            return Some(started.elapsed());
        }
    }
    None
}

#[test]
fn slow_request_heads_and_bodies_are_cut_at_their_timeouts() {
    let fx = fixture_with_client_timeouts();
    // Connected, never a byte: closed once the first head is late.
    let mut silent = Conn::connect(fx.port());
    assert!(
        silent.is_closed_within(Duration::from_secs(5)),
        "silent client"
    );
    assert!(silent.buf.is_empty());

    // A byte every 100 ms: every single read is prompt (Pingora's own timer
    // never fires), the whole head is late, so the client gets a 408 and
    // the connection is closed while it is still sending.
    let dribbled = format!(
        "GET /api/v1/company/dribble HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nX-Pad: {}\r\n\r\n",
        fx.admin,
        "a".repeat(200)
    );
    let mut slow = Conn::connect(fx.port());
    let cut = dribble(&mut slow, dribbled.as_bytes()).expect("a dribbled head is cut off");
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    let late = slow.read_reply().expect("a 408 before the close");
    assert_denied(
        &late,
        408,
        "REQUEST_TIMEOUT",
        "Request head not received in time",
    );
    assert!(late.closes());
    let line = fx.access_line(late.header("x-request-id").unwrap());
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    assert_eq!(line["route"], "unmatched", "{line}");
    fx.assert_never_upstream("/api/v1/company/dribble");

    // On a kept-alive connection the idle time before the next request is
    // keep-alive time, not head time: the second head's clock starts with
    // its first byte.
    let mut kept = Conn::connect(fx.port());
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let get = |path: &str| head("GET", path, &[auth.as_str()]);
    assert!(kept.send(get("/api/v1/company/first").as_bytes()));
    assert_eq!(kept.read_reply().expect("first answer").status, 200);
    // Idle for longer than header_timeout_ms (the scenario, not a wait for
    // the gateway): the connection stays open for keep-alive.
    assert!(!kept.is_closed_within(Duration::from_millis(1200)));
    assert!(kept.send(get("/api/v1/company/second").as_bytes()));
    let second = kept
        .read_reply()
        .expect("second answer on the kept-alive connection");
    assert_eq!(second.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/second");
    // Past keep-alive (3 s), the idle connection is closed.
    assert!(
        kept.is_closed_within(Duration::from_secs(8)),
        "idle keep-alive"
    );

    // A body that stops arriving: the request ends within the body timeout,
    // logged, and the truncated body never reaches the upstream whole.
    let mut stalled = Conn::connect(fx.port());
    let lines = [
        "Content-Length: 1000".to_string(),
        "X-Request-Id: stalled-body".to_string(),
        format!("Authorization: Bearer {}", fx.admin),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(stalled.send(head("POST", "/api/v1/company/upload", &refs).as_bytes()));
    assert!(stalled.send(b"0123456789"));
    let started = Instant::now();
    let reply = stalled.read_reply();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let line = fx.access_line("stalled-body");
    assert_eq!(line["path"], "/api/v1/company/upload", "{line}");
    assert_eq!(line["key_id"], "k_admin", "{line}");
    let reply = reply.expect("an answer to the stalled body");
    assert_denied(
        &reply,
        408,
        "REQUEST_TIMEOUT",
        "Request body not received in time",
    );
    assert!(
        reply.closes(),
        "the connection is not reused after a cut body"
    );
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    fx.assert_never_upstream("/api/v1/company/upload");

    // Each cut head was logged, without its contents.
    let log = fx.gw.log();
    let cuts = log
        .lines()
        .filter(|l| l.contains("request head not received in time"))
        .count();
    assert!(cuts >= 2, "{log}");
    assert!(
        !log.contains("\"level\":\"ERROR\""),
        "client faults are no errors: {log}"
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn client_vanishing_mid_body_is_logged_and_the_gateway_keeps_serving() {
    let fx = fixture();
    for (id, key) in [
        ("vanish-authorized", Some(&fx.admin)),
        ("vanish-denied", None),
    ] {
        let auth = key.map(|k| format!("Authorization: Bearer {k}"));
        let rid = format!("X-Request-Id: {id}");
        let mut lines = vec!["Content-Length: 100000", rid.as_str()];
        if let Some(a) = &auth {
            lines.push(a);
        }
        let mut c = Conn::connect(fx.port());
        assert!(c.send(head("POST", "/api/v1/company/upload", &lines).as_bytes()));
        assert!(c.send(b"0123456789"));
        // The denied request may already be answered and its connection
        // closed by the gateway (an early 401 does not wait for the body), in
        // which case the socket is no longer connected: vanishing is then moot.
        let _ = c.stream.shutdown(Shutdown::Both);
        drop(c);
        let line = fx.access_line(id);
        assert_eq!(line["path"], "/api/v1/company/upload", "{line}");
        assert_eq!(line["route"], "company", "{line}");
        if key.is_some() {
            // Proxied, then the client went away: no status was sent.
            assert_eq!(line["key_id"], "k_admin", "{line}");
            assert_eq!(line["status"], 0, "{line}");
            assert_eq!(line["outcome"], "client_error", "{line}");
        } else {
            assert_eq!(line["status"], 401, "{line}");
            assert_eq!(line["outcome"], "missing_token", "{line}");
        }
    }
    // The truncated body never arrived whole upstream.
    fx.assert_never_upstream("/api/v1/company/upload");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// A one-shot upstream on a raw socket: for each of `plans`, accepts one
/// connection, reads a request head, writes the given bytes and drops the
/// socket. Returns its address and the thread to join.
fn broken_upstream(plans: Vec<Vec<u8>>) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for plan in plans {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while find(&buf, b"\r\n\r\n").is_none() {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(&plan);
            let _ = s.flush();
            drop(s);
            served += 1;
        }
        served
    });
    (addr, handle)
}

#[test]
fn upstream_resetting_mid_response_is_bounded_and_logged() {
    let (addr, upstream) = broken_upstream(vec![
        // A head promising 100000 bytes, a few of them, then the socket drops.
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\npartial"
            .to_vec(),
        // Nothing at all: the connection closes after the request.
        Vec::new(),
    ]);
    let up = Upstream::start();
    let fx = fixture_on(up, addr);
    let auth = format!("Authorization: Bearer {}", fx.admin);

    let started = Instant::now();
    let mut c = Conn::connect(fx.port());
    assert!(
        c.send(
            head(
                "GET",
                "/api/v1/company/truncated",
                &[&auth, "X-Request-Id: reset-mid-response"]
            )
            .as_bytes()
        )
    );
    // The head and the bytes that came are relayed, then the connection ends
    // short of the promised length.
    let head_end = loop {
        if let Some(i) = find(&c.buf, b"\r\n\r\n") {
            break i;
        }
        assert_eq!(c.fill(), ReadEnd::Data, "no response head");
    };
    let text = String::from_utf8_lossy(&c.buf[..head_end]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-length: 100000"), "{text}");
    assert!(
        c.is_closed_within(Duration::from_secs(10)),
        "client left hanging"
    );
    let body = c.buf.len() - head_end - 4;
    assert!(body < 100_000, "a whole body arrived");
    assert!(started.elapsed() < Duration::from_secs(10));
    let line = fx.access_line("reset-mid-response");
    // The status went out before the upstream failed; the outcome says so.
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["outcome"], "upstream_error", "{line}");
    assert_eq!(line["key_id"], "k_admin", "{line}");

    // An upstream that closes without answering: 502, promptly.
    let r = exchange(
        fx.port(),
        head(
            "GET",
            "/api/v1/company/nothing",
            &[
                &auth,
                "X-Request-Id: reset-before-response",
                "Connection: close",
            ],
        )
        .as_bytes(),
    )
    .expect("an answer");
    assert_denied(&r, 502, "BAD_GATEWAY", "Upstream api is unavailable");
    let line = fx.access_line("reset-before-response");
    assert_eq!(line["status"], 502, "{line}");
    assert_eq!(line["outcome"], "upstream_error", "{line}");
    assert_eq!(upstream.join().unwrap(), 2);

    // The gateway still answers (the upstream is gone now: 502 again).
    let r = fx.gw.get("/api/v1/company/after", Some(&fx.admin));
    assert_eq!(r.status().as_u16(), 502);
    let r = fx.gw.get("/healthz/nope", None);
    assert_eq!(r.status().as_u16(), 404);
    fx.assert_no_secrets_logged();
}

#[test]
fn upstream_never_answering_is_504_and_logged() {
    let fx = fixture();
    // read_timeout_ms = 2000 in the standard config.
    fx.up
        .delay_ms
        .store(6000, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let r = exchange(
        fx.port(),
        head(
            "GET",
            "/api/v1/company/slow",
            &[
                &format!("Authorization: Bearer {}", fx.admin),
                "X-Request-Id: never-answers",
                "Connection: close",
            ],
        )
        .as_bytes(),
    )
    .expect("an answer");
    let elapsed = started.elapsed();
    assert_denied(&r, 504, "GATEWAY_TIMEOUT", "Upstream api timed out");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(5000),
        "504 after {elapsed:?}"
    );
    let line = fx.access_line("never-answers");
    assert_eq!(line["status"], 504, "{line}");
    assert_eq!(line["outcome"], "upstream_timeout", "{line}");
    fx.up.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

// ---------------------------------------------------------------- secrets --

/// `RUST_LOG=trace` turns on every library's debug and trace lines, some of
/// which print whole request heads: none of them may carry a key, even when the upstream
/// is told the `Authorization` header.
#[test]
fn no_log_level_prints_a_key() {
    let up = Upstream::start();
    let config = standard_config(
        up.addr,
        "[upstream_headers]\nforward_authorization = true\n",
        "",
    );
    let (s, admin, reader, ws) = snapshot();
    let gw = Gateway::spawn_logging(&config, &s.render(), |_| {}, "trace");
    gw.wait_ready();
    let mut fx = Fx {
        up,
        gw,
        secrets: vec![admin.clone(), reader.clone(), ws.clone()],
        admin,
        reader,
        ws,
    };
    let unknown = fx.unknown_key("ord_c_");
    for key in [&fx.admin, &fx.ws, &unknown] {
        for target in [
            "/api/v1/company/x",
            "/api/v1/workspaces/ws_a/posts/1",
            "/nope",
        ] {
            let a = format!("Authorization: Bearer {key}");
            let r = exchange(
                fx.port(),
                head("GET", target, &[&a, "Connection: close"]).as_bytes(),
            );
            assert!(r.is_some(), "{target}: answered");
        }
    }
    assert_eq!(
        fx.up
            .last()
            .header("authorization")
            .map(|v| v.starts_with("Bearer ")),
        Some(true),
        "the upstream was told the key, so Pingora held it"
    );
    // The level took: libraries' debug lines are there (Pingora's own
    // `Sending header to upstream` among them, were it not held back).
    wait_for("debug lines in the log", Duration::from_secs(10), || {
        fx.gw.log().contains("\"level\":\"DEBUG\"").then_some(())
    });
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn no_key_hash_or_bearer_value_reaches_the_log_under_hostile_traffic() {
    let mut fx = fixture();
    let port = fx.port();
    let unknown_c = fx.unknown_key("ord_c_");
    let unknown_w = fx.unknown_key("ord_");
    let foreign = fx.unknown_key("sk_live_");
    let mut requests: Vec<String> = Vec::new();
    for key in [
        &fx.admin, &fx.reader, &fx.ws, &unknown_c, &unknown_w, &foreign,
    ] {
        let a = format!("Authorization: Bearer {key}");
        let lower = format!("authorization: bearer    {key}");
        for target in [
            "/api/v1/company/x",
            "/api/v1/company/keys/x",
            "/api/v1/workspaces/ws_b/posts/1",
            "/api/v1/company/%2e%2e/x",
            "/nope",
        ] {
            requests.push(head("GET", target, &[&a, "Connection: close"]));
            requests.push(head("DELETE", target, &[&lower, "Connection: close"]));
        }
        // Broken framing, two Authorization headers, a huge head, a bad
        // nomination: the paths where Pingora or an error handler log.
        requests.push(head(
            "POST",
            "/api/v1/company/x",
            &[&a, "Content-Length: 1", "Content-Length: 2"],
        ));
        requests.push(head(
            "GET",
            "/api/v1/company/x",
            &[&a, &a, "Connection: close"],
        ));
        requests.push(head(
            "GET",
            "/api/v1/company/x",
            &[&a, "Connection: x-forwarded-for"],
        ));
        requests.push(head(
            "GET",
            &format!("/api/v1/company/x?api_key_hash={}", hash(key)),
            &[&format!("X-Api-Key: {key}"), "Connection: close"],
        ));
        requests.push(format!(
            "GET /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\n{a}\r\nX-Big: {}\r\n\r\n",
            "b".repeat(200 * 1024)
        ));
        requests.push(format!(
            "GET /api/v1/company/x HTTP/1.1\r\n{a}\r\nBroken header line\r\n\r\n"
        ));
    }
    for r in &requests {
        let _ = exchange(port, r.as_bytes());
    }
    // A keep-alive client vanishing mid-request with a key in its head.
    let mut c = Conn::connect(port);
    assert!(c.send(
        format!(
            "POST /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 50\r\n\r\nabc",
            fx.admin
        )
        .as_bytes()
    ));
    drop(c);
    fx.assert_serving();
    // Every request that reached keygate has its access-log line.
    wait_for("access-log lines", Duration::from_secs(10), || {
        let n = fx
            .gw
            .log()
            .lines()
            .filter(|l| l.contains("keygate::access"))
            .count();
        (n >= 60).then_some(())
    });
    fx.assert_no_secrets_logged();
}

#[test]
fn a_guessed_readiness_probe_gets_no_special_answer() {
    let fx = fixture();
    let r = exchange(
        fx.port(),
        head(
            "GET",
            "/nowhere",
            &[
                "x-keygate-probe: 00000000000000000000000000000000",
                "Connection: close",
            ],
        )
        .as_bytes(),
    )
    .expect("an answer");
    assert_denied(&r, 404, "NOT_FOUND", "No route for GET /nowhere");
    assert_eq!(r.header("x-keygate-probe"), None);
    fx.assert_serving();
}
