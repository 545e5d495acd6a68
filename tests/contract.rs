//! The external contract, black box: CONTRACT §3 (route matching), §4 (every
//! row of the status table, their order, bearer parsing, `WWW-Authenticate`,
//! rate-limit headers, `X-Request-Id`) and §5 (exactly what the upstream sees),
//! plus hostile input (odd paths, huge headers, bodies on denied requests).

use crate::util::*;

// ------------------------------------------------------------------ helpers --

/// One request on a fresh connection (`Connection: close`), its response.
fn raw(port: u16, request: &[u8]) -> Reply {
    exchange(port, request).expect("a response")
}

/// `GET target` with extra header lines (each ending in `\r\n`).
fn raw_get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

fn get(gw: &Gateway, path: &str, key: Option<&str>) -> Reply {
    Reply::from_reqwest(gw.get(path, key))
}

fn send(gw: &Gateway, method: &str, path: &str, key: Option<&str>) -> Reply {
    Reply::from_reqwest(gw.request(method, path, key))
}

/// GET with a raw `Authorization` value.
fn get_auth(gw: &Gateway, path: &str, authorization: &str) -> Reply {
    Reply::from_reqwest(
        gw.client
            .get(gw.url(path))
            .header("authorization", authorization)
            .send()
            .unwrap(),
    )
}

/// RFC 3339 for `secs` seconds ago (negative: in the future).
fn ago(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        - time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

const MINUTE: i64 = 60;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A header name lowercased with `_` read as `-`, as some backends do.
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A snapshot record whose type disagrees with the prefix of the key
/// presented: returns the key to present.
fn mismatched(snap: &mut Snapshot, id: &str, record_type: &str, ws: Option<&str>) -> String {
    let real = snap.key(id, record_type, "acme", ws, &["admin"], "");
    let other_prefix = if record_type == "company" {
        "ord_"
    } else {
        "ord_c_"
    };
    let presented = mint(other_prefix);
    let record = snap.keys.last_mut().unwrap();
    record.toml = record.toml.replace(&hash(&real), &hash(&presented));
    record.key = presented.clone();
    presented
}

/// Keys of the shared fixture.
struct Keys {
    /// company acme, admin.
    admin: String,
    /// company acme, read:all.
    reader: String,
    /// company acme, write:all.
    writer: String,
    /// company acme, read:all write:all.
    rw: String,
    /// workspace ws_a (acme), read:all write:all.
    ws: String,
    /// workspace ws_a (acme), read:all.
    ws_reader: String,
    /// company globex, admin.
    globex: String,
    /// company acme, expired 3 h 20 min ago.
    expired: String,
    /// workspace ws_a, expired 1 day 5 min ago.
    expired_day: String,
    /// workspace ws_a, revoked 2 days 1 hour ago.
    revoked: String,
    /// company acme, revoked 65 s ago.
    revoked_minute: String,
    /// company acme, expired 3 h 20 min ago and revoked 2 days ago.
    expired_and_revoked: String,
    /// company acme, read:all, 2 requests per 60 s.
    limited: String,
    /// company record, presented with a workspace prefix.
    mismatch_company: String,
    /// workspace record, presented with a company prefix.
    mismatch_workspace: String,
}

struct Fx {
    up: Upstream,
    gw: Gateway,
    k: Keys,
}

fn snapshot() -> (Snapshot, Keys) {
    let mut s = Snapshot::new()
        .workspace("ws_a", "acme")
        .workspace("ws_b", "acme")
        .workspace("ws_g", "globex");
    let admin = s.key("k_admin", "company", "acme", None, &["admin"], "");
    let reader = s.key("k_reader", "company", "acme", None, &["read:all"], "");
    let writer = s.key("k_writer", "company", "acme", None, &["write:all"], "");
    let rw = s.key(
        "k_rw",
        "company",
        "acme",
        None,
        &["read:all", "write:all"],
        "",
    );
    let ws = s.key(
        "k_ws",
        "workspace",
        "acme",
        Some("ws_a"),
        &["read:all", "write:all"],
        "",
    );
    let ws_reader = s.key(
        "k_ws_reader",
        "workspace",
        "acme",
        Some("ws_a"),
        &["read:all"],
        "",
    );
    let globex = s.key("k_globex", "company", "globex", None, &["admin"], "");
    let expired = s.key(
        "k_expired",
        "company",
        "acme",
        None,
        &["read:all"],
        &format!("expires_at = {:?}", ago(3 * HOUR + 20 * MINUTE)),
    );
    let expired_day = s.key(
        "k_expired_day",
        "workspace",
        "acme",
        Some("ws_a"),
        &["read:all"],
        &format!("expires_at = {:?}", ago(DAY + 5 * MINUTE)),
    );
    let revoked = s.key(
        "k_revoked",
        "workspace",
        "acme",
        Some("ws_a"),
        &["read:all"],
        &format!("revoked_at = {:?}", ago(2 * DAY + HOUR)),
    );
    let revoked_minute = s.key(
        "k_revoked_minute",
        "company",
        "acme",
        None,
        &["admin"],
        &format!("revoked_at = {:?}", ago(65)),
    );
    let expired_and_revoked = s.key(
        "k_expired_and_revoked",
        "company",
        "acme",
        None,
        &["admin"],
        &format!(
            "expires_at = {:?}\nrevoked_at = {:?}",
            ago(3 * HOUR + 20 * MINUTE),
            ago(2 * DAY + HOUR)
        ),
    );
    let limited = s.key(
        "k_limited",
        "company",
        "acme",
        None,
        &["read:all"],
        "rate_limit = { requests = 2, per_secs = 60 }",
    );
    let mismatch_company = mismatched(&mut s, "k_mismatch_company", "company", None);
    let mismatch_workspace = mismatched(&mut s, "k_mismatch_workspace", "workspace", Some("ws_a"));
    let keys = Keys {
        admin,
        reader,
        writer,
        rw,
        ws,
        ws_reader,
        globex,
        expired,
        expired_day,
        revoked,
        revoked_minute,
        expired_and_revoked,
        limited,
        mismatch_company,
        mismatch_workspace,
    };
    (s, keys)
}

/// The standard routes (plus `extra_routes` before them) on a fresh upstream.
fn fixture(extra_top: &str, extra_routes: &str) -> Fx {
    let up = Upstream::start();
    let (snap, k) = snapshot();
    let gw = Gateway::start(
        &standard_config(up.addr, extra_top, extra_routes),
        &snap.render(),
    );
    Fx { up, gw, k }
}

fn tls_reject_config(upstream: std::net::SocketAddr) -> String {
    let config = standard_config(upstream, "", "");
    let tls = "grace_period_secs = 5\n\n[server.tls]\nlisten = [\"127.0.0.1:{https}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nplain_http = \"reject\"\n";
    assert!(config.contains("grace_period_secs = 5\n"));
    config.replace("grace_period_secs = 5\n", tls)
}

// --------------------------------------------------------- §4, row by row --

#[test]
fn odd_paths_are_400_and_never_reach_the_upstream() {
    let fx = fixture("", "");
    let auth = format!("Authorization: Bearer {}\r\n", fx.k.admin);
    for target in [
        "/api/v1/company/../keys/x",
        "/api/v1/company/./x",
        "/api/v1/company/x/..",
        "/api/v1/company/%2e%2e/keys/x",
        "/api/v1/company/%2E%2E/keys/x",
        "/api/v1/company/.%2e/keys/x",
        "/api/v1/company/%2e/x",
        "/api/v1/company/a%2Fb",
        "/api/v1/company/a%2fb",
        "/api/v1/company/a\\b",
        "/api/v1/company/a%5Cb",
        "/api/v1/company/a%00b",
        "/healthz/..",
        "/nope/../healthz",
    ] {
        let r = raw(fx.gw.ports.http, &raw_get(target, &auth));
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
        // Also without a key: row 1 comes before everything.
        let r = raw(fx.gw.ports.http, &raw_get(target, ""));
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "an odd path reached the upstream");
    // Dots inside a segment are ordinary.
    let r = get(&fx.gw, "/api/v1/company/a..b/.c/d.", Some(&fx.k.admin));
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/a..b/.c/d.");
}

#[test]
fn unmatched_path_is_404_naming_method_and_path_without_query() {
    let fx = fixture("", "");
    let r = get(&fx.gw, "/the/path?x=1&y=/api/v1/company/a", None);
    assert_denied(&r, 404, "NOT_FOUND", "No route for GET /the/path");
    let r = send(&fx.gw, "DELETE", "/nothing/here", Some(&fx.k.admin));
    assert_denied(&r, 404, "NOT_FOUND", "No route for DELETE /nothing/here");
    let r = get(&fx.gw, "/", None);
    assert_denied(&r, 404, "NOT_FOUND", "No route for GET /");
    // Literal segments match exactly, letter case included.
    let r = get(&fx.gw, "/API/v1/company/x", Some(&fx.k.admin));
    assert_denied(&r, 404, "NOT_FOUND", "No route for GET /API/v1/company/x");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn method_outside_route_methods_is_405_with_allow() {
    let fx = fixture("", "");
    let path = "/api/v1/workspaces/ws_a/records/1";
    for key in [Some(fx.k.ws.as_str()), None, Some("ord_bogus")] {
        let r = send(&fx.gw, "DELETE", path, key);
        assert_denied(
            &r,
            405,
            "METHOD_NOT_ALLOWED",
            "Method DELETE is not allowed on this route",
        );
        let allow = r.header("allow").expect("Allow header on a 405");
        let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        methods.sort_unstable();
        assert_eq!(methods, ["GET", "POST"], "Allow: {allow}");
    }
    let r = send(&fx.gw, "PUT", path, Some(&fx.k.ws));
    assert_denied(
        &r,
        405,
        "METHOD_NOT_ALLOWED",
        "Method PUT is not allowed on this route",
    );
    assert_eq!(fx.up.count(), 0);
    assert_eq!(get(&fx.gw, path, Some(&fx.k.ws)).status, 200);
    assert_eq!(send(&fx.gw, "POST", path, Some(&fx.k.ws)).status, 200);
}

#[test]
fn plain_http_is_403_when_https_is_required_after_path_route_and_method_checks() {
    let up = Upstream::start();
    let pki = Pki::new();
    let (snap, k) = snapshot();
    let gw = start_with_files(&tls_reject_config(up.addr), &snap.render(), |d| {
        pki.write(d)
    });
    // Rows 1-3 answer before row 4.
    let r = raw(gw.ports.http, &raw_get("/api/v1/company/%2e%2e/x", ""));
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    assert_denied(
        &get(&gw, "/the/path", None),
        404,
        "NOT_FOUND",
        "No route for GET /the/path",
    );
    assert_denied(
        &send(
            &gw,
            "DELETE",
            "/api/v1/workspaces/ws_a/records/1",
            Some(&k.ws),
        ),
        405,
        "METHOD_NOT_ALLOWED",
        "Method DELETE is not allowed on this route",
    );
    // Row 4, with a good key, with none, with a bad one, on a public route.
    for key in [Some(k.admin.as_str()), None, Some("ord_c_bogus")] {
        let r = get(&gw, "/api/v1/company/x", key);
        assert_denied(&r, 403, "FORBIDDEN", "HTTPS is required");
    }
    assert_denied(
        &get(&gw, "/healthz", None),
        403,
        "FORBIDDEN",
        "HTTPS is required",
    );
    assert_eq!(up.count(), 0);

    // Over HTTPS the next rows answer.
    let client = pki.client(gw.ports.https);
    let url = |p: &str| format!("https://localhost:{}{p}", gw.ports.https);
    let r = Reply::from_reqwest(client.get(url("/api/v1/company/x")).send().unwrap());
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");
    let r = Reply::from_reqwest(
        client
            .get(url("/api/v1/company/x"))
            .bearer_auth(&k.admin)
            .send()
            .unwrap(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
}

#[test]
fn missing_bearer_token_is_401_with_bearer_challenge() {
    let fx = fixture("", "");
    let path = "/api/v1/company/x";
    assert_denied(
        &get(&fx.gw, path, None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    for authorization in [
        "Basic dXNlcjpwYXNz".to_string(),
        format!("Token {}", fx.k.admin),
        format!("Bearer{}", fx.k.admin),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer     ".to_string(),
        "bearer".to_string(),
        String::new(),
        fx.k.admin.clone(),
    ] {
        let r = get_auth(&fx.gw, path, &authorization);
        assert_eq!(r.status, 401, "Authorization: {authorization:?}");
        assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");
    }
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn invalid_key_is_401_for_unknown_prefix_unknown_hash_and_type_mismatch() {
    let fx = fixture("", "");
    let path = "/api/v1/company/x";
    let unknown_hash = mint("ord_c_");
    let too_short_after_prefix = "ord_c_".to_string();
    let wrong_case_prefix = fx.k.admin.replacen("ord_c_", "ORD_C_", 1);
    for token in [
        mint("sk_live_"),
        mint("xord_c_"),
        unknown_hash,
        too_short_after_prefix,
        wrong_case_prefix,
        format!("{}x", fx.k.admin),
        fx.k.mismatch_company.clone(),
        fx.k.mismatch_workspace.clone(),
    ] {
        let r = get(&fx.gw, path, Some(&token));
        assert_eq!(r.status, 401, "token {token:?}");
        assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    }
    // The mismatched records do not authenticate on routes of either type.
    let r = get(&fx.gw, "/api/v1/profiles/me", Some(&fx.k.mismatch_company));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    let r = get(
        &fx.gw,
        "/api/v1/workspaces/ws_a/posts/1",
        Some(&fx.k.mismatch_workspace),
    );
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn expired_key_is_401_with_age() {
    let fx = fixture("", "");
    let r = get(&fx.gw, "/api/v1/company/x", Some(&fx.k.expired));
    assert_denied(&r, 401, "UNAUTHORIZED", "API key expired 3 hours ago");
    let r = get(&fx.gw, "/api/v1/profiles/me", Some(&fx.k.expired_day));
    assert_denied(&r, 401, "UNAUTHORIZED", "API key expired 1 day ago");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn revoked_key_is_403_with_age() {
    let fx = fixture("", "");
    let r = get(&fx.gw, "/api/v1/profiles/me", Some(&fx.k.revoked));
    assert_denied(&r, 403, "FORBIDDEN", "API key was revoked 2 days ago");
    assert_eq!(r.header("www-authenticate"), None);
    let r = get(&fx.gw, "/api/v1/company/x", Some(&fx.k.revoked_minute));
    assert_denied(&r, 403, "FORBIDDEN", "API key was revoked 1 minute ago");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn key_type_must_match_the_route_with_exact_messages() {
    let fx = fixture("", "");
    let company_msg = "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.";
    let workspace_msg = "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.";
    for path in [
        "/api/v1/company/x",
        "/api/v1/company/keys/k1",
        "/api/v1/company/workspaces/ws_a/x",
    ] {
        let r = get(&fx.gw, path, Some(&fx.k.ws));
        assert_denied(&r, 403, "FORBIDDEN", company_msg);
    }
    for path in ["/api/v1/profiles/me", "/api/v1/workspaces/ws_a/records/1"] {
        let r = get(&fx.gw, path, Some(&fx.k.admin));
        assert_denied(&r, 403, "FORBIDDEN", workspace_msg);
    }
    assert_eq!(fx.up.count(), 0);
    // `auth = "any"` takes both.
    let path = "/api/v1/workspaces/ws_a/posts/1";
    assert_eq!(get(&fx.gw, path, Some(&fx.k.ws)).status, 200);
    assert_eq!(get(&fx.gw, path, Some(&fx.k.admin)).status, 200);
}

#[test]
fn workspace_outside_the_keys_reach_is_403_naming_it() {
    let fx = fixture("", "");
    let cases: [(&str, &str, &str); 6] = [
        // A workspace key only reaches its own workspace.
        ("/api/v1/workspaces/ws_b/posts/1", &fx.k.ws, "ws_b"),
        ("/api/v1/workspaces/ws_g/records/1", &fx.k.ws, "ws_g"),
        // A company key only reaches its company's workspaces.
        ("/api/v1/workspaces/ws_g/posts/1", &fx.k.admin, "ws_g"),
        ("/api/v1/company/workspaces/ws_g/x", &fx.k.admin, "ws_g"),
        ("/api/v1/company/workspaces/ws_a/x", &fx.k.globex, "ws_a"),
        // An unknown workspace is denied the same way.
        ("/api/v1/company/workspaces/ws_x/x", &fx.k.admin, "ws_x"),
    ];
    for (path, key, ws) in cases {
        let r = get(&fx.gw, path, Some(key));
        assert_denied(
            &r,
            403,
            "FORBIDDEN",
            &format!("API key does not have access to workspace {ws}"),
        );
    }
    assert_eq!(fx.up.count(), 0);
    for (path, key) in [
        ("/api/v1/workspaces/ws_a/posts/1", &fx.k.ws),
        ("/api/v1/workspaces/ws_b/posts/1", &fx.k.admin),
        ("/api/v1/company/workspaces/ws_b/x", &fx.k.admin),
        ("/api/v1/company/workspaces/ws_g/x", &fx.k.globex),
    ] {
        assert_eq!(get(&fx.gw, path, Some(key)).status, 200, "{path}");
    }
}

#[test]
fn missing_scope_is_403_with_insufficient_scope_challenge() {
    let fx = fixture("", "");
    let cases: [(&str, &str, &str, &str); 6] = [
        ("POST", "/api/v1/company/x", &fx.k.reader, "write:all"),
        ("DELETE", "/api/v1/company/x", &fx.k.reader, "write:all"),
        // write:all does not include read:all.
        ("GET", "/api/v1/company/x", &fx.k.writer, "read:all"),
        ("HEAD", "/api/v1/company/x", &fx.k.writer, "read:all"),
        ("GET", "/api/v1/company/keys/k1", &fx.k.rw, "admin"),
        ("PATCH", "/api/v1/profiles/me", &fx.k.ws_reader, "write:all"),
    ];
    for (method, path, key, scope) in cases {
        let r = send(&fx.gw, method, path, Some(key));
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!(r#"Bearer error="insufficient_scope", scope="{scope}""#).as_str()),
            "{method} {path}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        if method != "HEAD" {
            assert_denied(
                &r,
                403,
                "FORBIDDEN",
                &format!("API key is missing the required scope: {scope}"),
            );
        }
    }
    assert_eq!(fx.up.count(), 0);
    // admin includes both; OPTIONS is a read.
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        let r = send(&fx.gw, method, "/api/v1/company/keys/k1", Some(&fx.k.admin));
        assert_eq!(r.status, 200, "{method}");
    }
    assert_eq!(
        send(&fx.gw, "OPTIONS", "/api/v1/company/x", Some(&fx.k.reader)).status,
        200
    );
    assert_eq!(
        send(&fx.gw, "POST", "/api/v1/company/x", Some(&fx.k.writer)).status,
        200
    );
}

#[test]
fn empty_bucket_is_429_with_retry_after_and_rate_limit_headers() {
    let fx = fixture("", "");
    let path = "/api/v1/company/x";
    // Requests denied by rows 1-12 take no token.
    for _ in 0..3 {
        let r = send(&fx.gw, "POST", path, Some(&fx.k.limited));
        assert_denied(
            &r,
            403,
            "FORBIDDEN",
            "API key is missing the required scope: write:all",
        );
    }
    let policy = r#""default";q=2;w=60"#;

    let r1 = get(&fx.gw, path, Some(&fx.k.limited));
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r1.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(r1.header("x-ratelimit-reset"), Some("30"));
    assert_eq!(r1.header("ratelimit-policy"), Some(policy));
    assert_eq!(r1.header("ratelimit"), Some(r#""default";r=1;t=30"#));

    let r2 = get(&fx.gw, path, Some(&fx.k.limited));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r2.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r2.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((55..=60).contains(&reset), "reset {reset}");
    assert_eq!(r2.header("ratelimit-policy"), Some(policy));
    assert_eq!(
        r2.header("ratelimit"),
        Some(format!(r#""default";r=0;t={reset}"#).as_str())
    );

    let r3 = get(&fx.gw, path, Some(&fx.k.limited));
    let retry: u64 = r3
        .header("retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_denied(
        &r3,
        429,
        "TOO_MANY_REQUESTS",
        &format!("Rate limit of 2 requests per 60s exceeded. Quota resets in {retry} seconds"),
    );
    assert_eq!(r3.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r3.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = r3.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((retry..=60).contains(&reset), "reset {reset}");
    assert_eq!(r3.header("ratelimit-policy"), Some(policy));
    assert_eq!(
        r3.header("ratelimit"),
        Some(format!(r#""default";r=0;t={reset}"#).as_str())
    );
    assert_eq!(fx.up.count(), 2, "the 429 reached the upstream");

    // Another key has its own bucket, at the default limit.
    let r = get(&fx.gw, path, Some(&fx.k.reader));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("1"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""default";q=100;w=60"#)
    );
    assert_eq!(r.header("ratelimit"), Some(r#""default";r=99;t=1"#));
}

#[test]
fn unreachable_upstream_is_502_naming_it() {
    let dead = free_port();
    let extra = format!(
        "[[upstreams]]\nname = \"billing\"\nservers = [\"127.0.0.1:{dead}\"]\nconnect_timeout_ms = 1000\nread_timeout_ms = 2000\n"
    );
    let route = "[[routes]]\nname = \"billing\"\npath = \"/billing/**\"\nupstream = \"billing\"\nauth = \"company\"\n\n[[routes]]\nname = \"billing_public\"\npath = \"/billing-public\"\nupstream = \"billing\"\nauth = \"none\"\n";
    let fx = fixture(&extra, route);
    let r = get(&fx.gw, "/billing/invoices", Some(&fx.k.admin));
    assert_denied(&r, 502, "BAD_GATEWAY", "Upstream billing is unavailable");
    // The request passed rows 1-12 and took a token: the figures go out too.
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""default";q=100;w=60"#)
    );
    let r = get(&fx.gw, "/billing-public", None);
    assert_denied(&r, 502, "BAD_GATEWAY", "Upstream billing is unavailable");
    // Auth still answers first.
    let r = get(&fx.gw, "/billing/invoices", None);
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");
    // The other upstream is unaffected.
    assert_eq!(
        get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin)).status,
        200
    );

    // The contract's own wording, on the default upstream name.
    let (snap, k) = snapshot();
    let gw = Gateway::start(
        &standard_config(([127, 0, 0, 1], dead).into(), "", ""),
        &snap.render(),
    );
    let r = get(&gw, "/api/v1/company/x", Some(&k.admin));
    assert_denied(&r, 502, "BAD_GATEWAY", "Upstream api is unavailable");
}

#[test]
fn slow_upstream_is_504_naming_it() {
    let slow = Upstream::start();
    slow.delay_ms
        .store(1500, std::sync::atomic::Ordering::SeqCst);
    let extra = format!(
        "[[upstreams]]\nname = \"slow\"\nservers = [\"{}\"]\nconnect_timeout_ms = 1000\nread_timeout_ms = 300\n",
        slow.addr
    );
    let route = "[[routes]]\nname = \"slow\"\npath = \"/slow/**\"\nupstream = \"slow\"\nauth = \"company\"\n";
    let fx = fixture(&extra, route);
    let r = get(&fx.gw, "/slow/report", Some(&fx.k.admin));
    assert_denied(&r, 504, "GATEWAY_TIMEOUT", "Upstream slow timed out");
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    assert_eq!(slow.count(), 1, "the request did reach the slow upstream");
    // The gateway keeps serving.
    assert_eq!(
        get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin)).status,
        200
    );
}

// ------------------------------------------------------------- precedence --

#[test]
fn first_failing_row_answers() {
    let fx = fixture("", "");
    let gw = &fx.gw;
    let k = &fx.k;
    // 1 before 2 (and before everything else).
    let r = raw(gw.ports.http, &raw_get("/nope/%2e%2e/x", ""));
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    // 2 before 5.
    assert_denied(
        &get(gw, "/nope", None),
        404,
        "NOT_FOUND",
        "No route for GET /nope",
    );
    // 3 before 5, 6, 9.
    for key in [None, Some("ord_c_bogus"), Some(k.admin.as_str())] {
        assert_denied(
            &send(gw, "DELETE", "/api/v1/workspaces/ws_a/records/1", key),
            405,
            "METHOD_NOT_ALLOWED",
            "Method DELETE is not allowed on this route",
        );
    }
    // 5 before 9 and 12: a POST without a key on an admin-only company route.
    assert_denied(
        &send(gw, "POST", "/api/v1/company/keys/k1", None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    // 6 before 9.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.mismatch_workspace)),
        401,
        "UNAUTHORIZED",
        "Invalid or unauthorized API key",
    );
    // 7 before 8.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.expired_and_revoked)),
        401,
        "UNAUTHORIZED",
        "API key expired 3 hours ago",
    );
    // 7 before 10.
    assert_denied(
        &get(gw, "/api/v1/profiles/me", Some(&k.expired)),
        401,
        "UNAUTHORIZED",
        "API key expired 3 hours ago",
    );
    // 8 before 9 and 11.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.revoked)),
        403,
        "FORBIDDEN",
        "API key was revoked 2 days ago",
    );
    assert_denied(
        &get(gw, "/api/v1/workspaces/ws_b/posts/1", Some(&k.revoked)),
        403,
        "FORBIDDEN",
        "API key was revoked 2 days ago",
    );
    // 9 before 11 and 12.
    assert_denied(
        &send(
            gw,
            "POST",
            "/api/v1/company/workspaces/ws_g/x",
            Some(&k.ws_reader),
        ),
        403,
        "FORBIDDEN",
        "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
    );
    // 10 before 11.
    assert_denied(
        &get(gw, "/api/v1/workspaces/ws_g/records/1", Some(&k.admin)),
        403,
        "FORBIDDEN",
        "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.",
    );
    // 11 before 12.
    assert_denied(
        &send(
            gw,
            "POST",
            "/api/v1/workspaces/ws_b/posts/1",
            Some(&k.ws_reader),
        ),
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_b",
    );
    // 12 before 13: an exhausted key still gets the scope answer.
    for _ in 0..2 {
        assert_eq!(get(gw, "/api/v1/company/x", Some(&k.limited)).status, 200);
    }
    assert_eq!(get(gw, "/api/v1/company/x", Some(&k.limited)).status, 429);
    assert_denied(
        &send(gw, "POST", "/api/v1/company/x", Some(&k.limited)),
        403,
        "FORBIDDEN",
        "API key is missing the required scope: write:all",
    );
    assert_eq!(fx.up.count(), 2);
}

#[test]
fn rate_limit_answers_before_the_upstream_is_tried() {
    let dead = free_port();
    let (snap, k) = snapshot();
    let gw = Gateway::start(
        &standard_config(([127, 0, 0, 1], dead).into(), "", ""),
        &snap.render(),
    );
    for _ in 0..2 {
        let r = get(&gw, "/api/v1/company/x", Some(&k.limited));
        assert_denied(&r, 502, "BAD_GATEWAY", "Upstream api is unavailable");
    }
    let r = get(&gw, "/api/v1/company/x", Some(&k.limited));
    assert_eq!(r.status, 429, "13 before 14");
}

// ------------------------------------------------------------ bearer parsing --

#[test]
fn bearer_scheme_is_case_insensitive_and_token_ends_at_first_whitespace() {
    let fx = fixture("", "");
    let path = "/api/v1/company/x";
    let key = &fx.k.admin;
    for authorization in [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("BEARER {key}"),
        format!("bEaReR {key}"),
        format!("Bearer     {key}"),
        format!("Bearer {key} trailing words"),
        format!("Bearer   {key}    "),
    ] {
        let r = get_auth(&fx.gw, path, &authorization);
        assert_eq!(r.status, 200, "Authorization: {authorization:?}");
        assert_eq!(fx.up.last().header("x-keygate-key-id"), Some("k_admin"));
    }
    // A token that runs on past the key is another token.
    let r = get_auth(&fx.gw, path, &format!("Bearer {key}extra"));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
}

#[test]
fn two_authorization_headers_are_401_invalid_key() {
    let fx = fixture("", "");
    let key = &fx.k.admin;
    for (first, second) in [
        (key.as_str(), key.as_str()),
        (key.as_str(), fx.k.reader.as_str()),
        (key.as_str(), ""),
    ] {
        let extra = format!("Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n");
        let r = raw(fx.gw.ports.http, &raw_get("/api/v1/company/x", &extra));
        assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    }
    // Through a real client too.
    let r = Reply::from_reqwest(
        fx.gw
            .client
            .get(fx.gw.url("/api/v1/company/x"))
            // `header()` appends: two header lines go out.
            .header("authorization", format!("Bearer {key}"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .unwrap(),
    );
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn non_utf8_authorization_is_401_and_the_gateway_keeps_serving() {
    let fx = fixture("", "");
    let port = fx.gw.ports.http;
    let build = |value: &[u8]| {
        let mut req =
            b"GET /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ".to_vec();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        req
    };
    let mut invalid = b"Bearer ord_c_".to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0x80]);
    invalid.extend_from_slice(b"abcdefghijklmnopqrstuvwxyz0123456789");
    let r = raw(port, &build(&invalid));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");

    let mut key_then_junk = format!("Bearer {}", fx.k.admin).into_bytes();
    key_then_junk.extend_from_slice(&[0xff, 0xfe]);
    let r = raw(port, &build(&key_then_junk));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");

    let r = raw(port, &build(&[0xff, 0xfe, 0x20, 0x80]));
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");

    let mut scheme_junk = vec![0xc2, 0xa0];
    scheme_junk.extend_from_slice(format!("Bearer {}", fx.k.admin).as_bytes());
    let r = raw(port, &build(&scheme_junk));
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");

    assert_eq!(fx.up.count(), 0);
    let r = get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin));
    assert_eq!(r.status, 200, "the gateway still serves");
    assert!(
        !fx.gw.log().contains("panicked"),
        "a panic in the log:\n{}",
        fx.gw.log()
    );
}

// ------------------------------------------------------------- request id --

#[test]
fn request_id_is_echoed_when_sane_and_replaced_otherwise() {
    let fx = fixture("", "");
    let gw = &fx.gw;
    let with_id = |path: &str, key: Option<&str>, id: &str| {
        let mut r = gw.client.get(gw.url(path)).header("x-request-id", id);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        Reply::from_reqwest(r.send().unwrap())
    };
    let path = "/api/v1/company/x";

    // Sane: echoed to the client and passed to the upstream.
    let sane = "client-req_42.abc:DEF";
    let r = with_id(path, Some(&fx.k.admin), sane);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some(sane));
    assert_eq!(fx.up.last().header("x-request-id"), Some(sane));
    // Also on denials.
    let r = with_id(path, None, sane);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some(sane));
    let r = with_id("/nope", None, sane);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some(sane));

    // Insane: replaced, with the replacement sent upstream.
    let long = "a".repeat(300);
    for insane in [long.as_str(), "has spaces in it", "<script>x</script>", ""] {
        let r = with_id(path, Some(&fx.k.admin), insane);
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").expect("x-request-id").to_string();
        assert!(!id.is_empty() && id != insane, "{insane:?} kept");
        assert!(id.len() <= 128 && !id.contains(' '));
        assert_eq!(fx.up.last().header("x-request-id"), Some(id.as_str()));
        let r = with_id(path, None, insane);
        assert_eq!(r.status, 401);
        let id = r.header("x-request-id").expect("x-request-id on a denial");
        assert!(
            !id.is_empty() && id != insane,
            "{insane:?} kept on a denial"
        );
    }

    // None sent: a fresh one each time, the same one the upstream saw.
    let a = get(gw, path, Some(&fx.k.admin));
    let a_id = a.header("x-request-id").expect("generated id").to_string();
    assert_eq!(fx.up.last().header("x-request-id"), Some(a_id.as_str()));
    let b = get(gw, path, Some(&fx.k.admin));
    let b_id = b.header("x-request-id").expect("generated id").to_string();
    assert_ne!(a_id, b_id);
    let d1 = get(gw, path, None);
    let d2 = get(gw, path, None);
    assert_ne!(d1.header("x-request-id"), d2.header("x-request-id"));
    assert!(d1.header("x-request-id").is_some_and(|v| !v.is_empty()));
}

// ------------------------------------------------- §5 what the upstream sees --

#[test]
fn upstream_sees_exact_identity_headers() {
    let fx = fixture("", "");
    let gw = &fx.gw;
    let common = |seen: &Seen| {
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("forwarded"), Some("for=127.0.0.1;proto=http"));
        assert!(seen.header("x-request-id").is_some_and(|v| !v.is_empty()));
    };

    // Company key, no {workspace}: no workspace header.
    assert_eq!(get(gw, "/api/v1/company/x", Some(&fx.k.rw)).status, 200);
    let seen = fx.up.last();
    common(&seen);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_rw"),
            ("x-keygate-key-type", "company"),
            ("x-keygate-company", "acme"),
            ("x-keygate-scopes", "read:all write:all"),
        ])
    );

    // Company key through a {workspace} route: the workspace it reached.
    for path in [
        "/api/v1/company/workspaces/ws_b/x",
        "/api/v1/workspaces/ws_b/posts/7",
    ] {
        assert_eq!(get(gw, path, Some(&fx.k.admin)).status, 200, "{path}");
        let seen = fx.up.last();
        common(&seen);
        assert_eq!(
            identity(&seen),
            pairs(&[
                ("x-keygate-key-id", "k_admin"),
                ("x-keygate-key-type", "company"),
                ("x-keygate-company", "acme"),
                ("x-keygate-workspace", "ws_b"),
                ("x-keygate-scopes", "admin"),
            ]),
            "{path}"
        );
    }

    // Workspace key: its own workspace, with or without {workspace}.
    for path in ["/api/v1/profiles/me", "/api/v1/workspaces/ws_a/posts/7"] {
        assert_eq!(get(gw, path, Some(&fx.k.ws)).status, 200, "{path}");
        let seen = fx.up.last();
        common(&seen);
        assert_eq!(
            identity(&seen),
            pairs(&[
                ("x-keygate-key-id", "k_ws"),
                ("x-keygate-key-type", "workspace"),
                ("x-keygate-company", "acme"),
                ("x-keygate-workspace", "ws_a"),
                ("x-keygate-scopes", "read:all write:all"),
            ]),
            "{path}"
        );
    }

    // `auth = "none"`: no identity at all, even with a valid key presented.
    assert_eq!(get(gw, "/healthz", Some(&fx.k.admin)).status, 200);
    let seen = fx.up.last();
    common(&seen);
    assert_eq!(identity(&seen), vec![]);
}

#[test]
fn client_copies_of_identity_headers_are_removed_in_any_spelling() {
    let fx = fixture("", "");
    let spoof = "X-Keygate-Key-Id: evil\r\n\
                 x-keygate-key-type: evil\r\n\
                 X-KEYGATE-COMPANY: evil\r\n\
                 X-KeyGate-Workspace: evil\r\n\
                 x-keygate-scopes: evil\r\n\
                 X_KEYGATE_KEY_ID: evil\r\n\
                 x_keygate_workspace: evil\r\n\
                 X-Keygate_Company: evil\r\n\
                 X-Keygate-Something-New: evil\r\n\
                 X-Forwarded-For: 6.6.6.6\r\n\
                 x_forwarded_for: 6.6.6.6\r\n\
                 X-Forwarded-Proto: evil\r\n\
                 X_Forwarded_Proto: evil\r\n";
    let no_evil = |seen: &Seen| {
        for (n, v) in &seen.headers {
            assert!(
                v != "evil" && v != "6.6.6.6",
                "client copy reached the upstream: {n}: {v}"
            );
        }
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
        assert!(
            !seen
                .headers
                .iter()
                .any(|(n, _)| n.contains('_') && folded(n).starts_with("x-")),
            "an underscore spelling reached the upstream: {:?}",
            seen.headers
        );
    };

    // Company key: exactly its own identity, no workspace.
    let auth = format!("Authorization: Bearer {}\r\n", fx.k.reader);
    let r = raw(
        fx.gw.ports.http,
        &raw_get("/api/v1/company/x", &format!("{auth}{spoof}")),
    );
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    no_evil(&seen);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_reader"),
            ("x-keygate-key-type", "company"),
            ("x-keygate-company", "acme"),
            ("x-keygate-scopes", "read:all"),
        ])
    );

    // Through a normal client too (names lowercased on the wire).
    let r = fx
        .gw
        .client
        .get(fx.gw.url("/api/v1/workspaces/ws_a/posts/1"))
        .bearer_auth(&fx.k.ws)
        .header("x-keygate-key-id", "evil")
        .header("x_keygate_key_id", "evil")
        .header("x-keygate-workspace", "evil")
        .header("x-keygate-scopes", "evil")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fx.up.last();
    no_evil(&seen);
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

    // `auth = "none"`: client copies removed, nothing set.
    let r = raw(fx.gw.ports.http, &raw_get("/healthz", spoof));
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    no_evil(&seen);
    assert_eq!(identity(&seen), vec![]);
}

#[test]
fn hop_by_hop_nomination_does_not_drop_the_identity_headers() {
    let fx = fixture("", "");
    let auth = format!("Authorization: Bearer {}\r\n", fx.k.ws);
    let expected = pairs(&[
        ("x-keygate-key-id", "k_ws"),
        ("x-keygate-key-type", "workspace"),
        ("x-keygate-company", "acme"),
        ("x-keygate-workspace", "ws_a"),
        ("x-keygate-scopes", "read:all write:all"),
    ]);
    for connection in [
        "x-keygate-key-id",
        "X-Keygate-Key-Id, x-keygate-workspace, x-request-id",
        "keep-alive, x-keygate-company, x-keygate-scopes, x-keygate-key-type",
    ] {
        // `Connection: close` is added by raw_get after this one.
        let extra = format!("{auth}Connection: {connection}\r\nX-Keygate-Key-Id: evil\r\n");
        let r = raw(fx.gw.ports.http, &raw_get("/api/v1/profiles/me", &extra));
        assert_eq!(
            r.status,
            200,
            "Connection: {connection}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let seen = fx.up.last();
        assert_eq!(identity(&seen), expected, "Connection: {connection}");
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert!(seen.header("x-request-id").is_some());
    }
    // Nominating a forwarding header: either refused before the upstream
    // (Pingora's own defence), or proxied with the headers intact.
    for connection in ["x-forwarded-for", "X-Forwarded-Proto, x-keygate-key-id"] {
        let before = fx.up.count();
        let extra = format!("{auth}Connection: {connection}\r\n");
        let r = raw(fx.gw.ports.http, &raw_get("/api/v1/profiles/me", &extra));
        if r.status == 200 {
            let seen = fx.up.last();
            assert_eq!(identity(&seen), expected, "Connection: {connection}");
            assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
            assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        } else {
            assert_eq!(r.status, 400, "Connection: {connection}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(fx.up.count(), before, "Connection: {connection}");
        }
    }
}

#[test]
fn authorization_reaches_the_upstream_only_when_configured() {
    let fx = fixture("", "");
    assert_eq!(
        get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin)).status,
        200
    );
    assert_eq!(fx.up.last().header("authorization"), None);
    assert_eq!(get(&fx.gw, "/healthz", Some(&fx.k.admin)).status, 200);
    assert_eq!(fx.up.last().header("authorization"), None);
    let r = get_auth(
        &fx.gw,
        "/api/v1/company/x",
        &format!("bearer   {}", fx.k.admin),
    );
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().header("authorization"), None);

    let fx = fixture("[upstream_headers]\nforward_authorization = true\n", "");
    assert_eq!(
        get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin)).status,
        200
    );
    let seen = fx.up.last();
    let expected = format!("Bearer {}", fx.k.admin);
    assert_eq!(seen.header("authorization"), Some(expected.as_str()));
    // The identity headers are set as usual.
    assert_eq!(seen.header("x-keygate-key-id"), Some("k_admin"));
}

#[test]
fn method_query_and_body_reach_the_upstream_unchanged() {
    let fx = fixture("", "");
    let target = "/api/v1/company/items/42?b=2&a=1&a=3&x=%20y%2Fz&empty=";
    let mut body = b"{\"name\":\"caf\xc3\xa9\"}\n".to_vec();
    body.extend_from_slice(&[0, 1, 2, 0xff, 0xfe]);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = fx
            .gw
            .client
            .request(method.parse().unwrap(), fx.gw.url(target))
            .bearer_auth(&fx.k.admin)
            .header("content-type", "application/octet-stream")
            .header("x-custom", "kept as is")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let seen = fx.up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.url, target);
        assert_eq!(seen.body, body, "{method} body");
        assert_eq!(
            seen.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(seen.header("x-custom"), Some("kept as is"));
    }
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = send(&fx.gw, method, target, Some(&fx.k.admin));
        assert_eq!(r.status, 200, "{method}");
        let seen = fx.up.last();
        assert_eq!(seen.method, method);
        assert_eq!(seen.url, target);
        assert!(seen.body.is_empty());
    }
    // The upstream's own answer reaches the client (status and body).
    fx.up.status.store(201, std::sync::atomic::Ordering::SeqCst);
    let r = get(&fx.gw, "/api/v1/company/echo", Some(&fx.k.admin));
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["url"], "/api/v1/company/echo");
}

// ---------------------------------------------------------- route matching --

#[test]
fn routes_match_segment_by_segment_and_first_match_wins() {
    let routes = r#"
[[routes]]
name = "star"
path = "/m/star/*"
upstream = "api"
auth = "none"

[[routes]]
name = "star_mid"
path = "/m/mid/*/end"
upstream = "api"
auth = "none"

[[routes]]
name = "deep"
path = "/m/deep/**"
upstream = "api"
auth = "none"

[[routes]]
name = "order_open"
path = "/m/order/**"
upstream = "api"
auth = "none"

[[routes]]
name = "order_locked"
path = "/m/order/locked"
upstream = "api"
auth = "company"

[[routes]]
name = "lock_exact"
path = "/m/lock/exact"
upstream = "api"
auth = "company"

[[routes]]
name = "lock_rest"
path = "/m/lock/**"
upstream = "api"
auth = "none"

[[routes]]
name = "ws_root"
path = "/m/ws/{workspace}"
upstream = "api"
auth = "any"
"#;
    let fx = fixture("", routes);
    let gw = &fx.gw;
    let open = |path: &str| {
        let r = get(gw, path, None);
        assert_eq!(r.status, 200, "{path} should be proxied");
        assert_eq!(fx.up.last().url, path);
    };
    let no_route = |path: &str, no_query: &str| {
        let r = get(gw, path, None);
        assert_denied(
            &r,
            404,
            "NOT_FOUND",
            &format!("No route for GET {no_query}"),
        );
    };
    // `*`: exactly one segment.
    open("/m/star/a");
    open("/m/star/a?x=/b/c");
    no_route("/m/star", "/m/star");
    no_route("/m/star/a/b", "/m/star/a/b");
    open("/m/mid/anything/end");
    no_route("/m/mid/end", "/m/mid/end");
    no_route("/m/mid/a/b/end", "/m/mid/a/b/end");
    // `**`: zero or more.
    open("/m/deep");
    open("/m/deep/a");
    open("/m/deep/a/b/c/d");
    no_route("/m/deeper", "/m/deeper");
    // First match in file order.
    open("/m/order/locked");
    assert_denied(
        &get(gw, "/m/lock/exact", None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    open("/m/lock/other");
    // Query strings are ignored by matching.
    no_route("/m/star?to=/m/star/a", "/m/star");
    // `{workspace}` binds one segment.
    assert_eq!(get(gw, "/m/ws/ws_b", Some(&fx.k.admin)).status, 200);
    assert_eq!(fx.up.last().header("x-keygate-workspace"), Some("ws_b"));
    assert_denied(
        &get(gw, "/m/ws/ws_b", Some(&fx.k.ws)),
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_b",
    );
    no_route("/m/ws/ws_a/more", "/m/ws/ws_a/more");
    no_route("/m/ws", "/m/ws");
    // `{workspace}/posts/**` with zero trailing segments.
    assert_eq!(
        get(gw, "/api/v1/workspaces/ws_a/posts", Some(&fx.k.ws)).status,
        200
    );
    assert_eq!(fx.up.last().header("x-keygate-workspace"), Some("ws_a"));
}

// --------------------------------------------------------------- bad input --

fn get_with_big_header(gw: &Gateway, key: Option<&str>, size: usize) -> reqwest::Result<u16> {
    let mut req = gw
        .client
        .get(gw.url("/api/v1/company/x"))
        .header("x-big", "a".repeat(size));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().map(|r| r.status().as_u16())
}

#[test]
fn huge_headers_are_refused_and_the_gateway_keeps_serving() {
    let fx = fixture("", "");
    // No key: refused by the gateway, not by a crash.
    let status = get_with_big_header(&fx.gw, None, 100 * 1024).expect("an answer");
    assert_eq!(status, 431, "100 KB header");
    // Many small headers: over `max_headers` (100 by default).
    let mut req = fx.gw.client.get(fx.gw.url("/api/v1/company/x"));
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.bearer_auth(&fx.k.admin).send().unwrap();
    assert_json_error(
        r,
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
        "Request header fields too large",
    );
    // Far past any header limit: a 4xx or the connection dropped.
    let huge = "a".repeat(2 * 1024 * 1024);
    let mut c = Conn::connect(fx.gw.ports.http);
    let req = format!(
        "GET /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {huge}\r\nConnection: close\r\n\r\n"
    );
    if c.send(req.as_bytes())
        && let Some(r) = c.read_reply()
    {
        assert!((400..500).contains(&r.status), "2 MB header: {}", r.status);
    }
    assert_eq!(fx.up.count(), 0);
    let r = get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin));
    assert_eq!(r.status, 200, "the gateway still serves");
}

#[test]
fn header_of_100_kb_is_431_even_with_a_valid_key() {
    let fx = fixture("", "");
    let status = get_with_big_header(&fx.gw, Some(&fx.k.admin), 100 * 1024).expect("an answer");
    assert_eq!(status, 431, "a 100 KB head is over the 64 KiB default");
    assert_eq!(fx.up.count(), 0, "nothing reached the upstream");
    assert_eq!(
        get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin)).status,
        200
    );
}

#[test]
fn denied_request_with_a_body_does_not_desynchronise_keep_alive() {
    let fx = fixture("", "");
    let port = fx.gw.ports.http;
    // The body looks like a request: if the gateway left it unread and reused
    // the connection, it would parse it as the next request.
    let smuggled = "GET /healthz?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let valid = format!(
        "GET /api/v1/company/after HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        fx.k.admin
    );
    let denied_requests = [
        // Content-Length body, 401.
        format!(
            "POST /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        // Chunked body, 404.
        format!(
            "POST /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        ),
        // Content-Length body, 403 (scope).
        format!(
            "POST /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            fx.k.reader,
            smuggled.len()
        ),
    ];
    let expected = [401, 404, 403];
    for (request, status) in denied_requests.iter().zip(expected) {
        let mut c = Conn::connect(port);
        assert!(c.send(request.as_bytes()));
        let first = c.read_reply().expect("a response to the denied request");
        assert_eq!(first.status, status);
        assert_eq!(first.header("content-type"), Some("application/json"));
        // Either the connection is closed cleanly, or it serves the next
        // request correctly.
        if c.send(valid.as_bytes()) {
            match c.read_reply() {
                None => {}
                Some(next) => {
                    assert_eq!(next.status, 200, "second response {next:?}");
                    assert_eq!(next.json()["url"], "/api/v1/company/after");
                }
            }
        }
    }
    // Nothing smuggled reached the upstream.
    assert!(
        fx.up.seen().iter().all(|s| !s.url.contains("smuggled")),
        "{:?}",
        fx.up.seen().iter().map(|s| &s.url).collect::<Vec<_>>()
    );
    // A denial without a body keeps the connection usable.
    let mut c = Conn::connect(port);
    assert!(c.send(b"GET /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    let first = c.read_reply().unwrap();
    assert_denied(&first, 401, "UNAUTHORIZED", "Missing bearer token");
    assert!(c.send(valid.as_bytes()));
    let next = c.read_reply().expect("keep-alive after a bodiless denial");
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["url"], "/api/v1/company/after");
}
