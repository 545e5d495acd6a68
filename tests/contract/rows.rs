//! CONTRACT §4, row by row: every status row of the table, its body and headers.

use super::*;

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
    // A read in another case is still a read: a write-only key does not read
    // through a backend that folds the method's case.
    for method in ["get", "Head", "options"] {
        let r = send(&fx.gw, method, "/api/v1/company/x", Some(&fx.k.writer));
        assert_eq!(r.status, 403, "{method}");
        assert_eq!(
            send(&fx.gw, method, "/api/v1/company/x", Some(&fx.k.reader)).status,
            200,
            "{method}"
        );
    }
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

#[test]
fn a_key_refused_after_it_authenticated_is_named_in_the_access_log() {
    let fx = fixture("", "");
    let line = |method: &str, path: &str, key: &str, id: &str| {
        let r = fx
            .gw
            .client
            .request(method.parse().unwrap(), fx.gw.url(path))
            .header("Authorization", format!("Bearer {key}"))
            .header("X-Request-Id", id)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "{id}");
        fx.gw.access_line(id)
    };
    // Rows 9-12: the key is known, and so is whose it is.
    for (method, path, key, id, outcome, workspace) in [
        (
            "GET",
            "/api/v1/company/x",
            &fx.k.ws,
            "r9",
            "wrong_key_type",
            Some("ws_a"),
        ),
        (
            "GET",
            "/api/v1/profiles/me",
            &fx.k.admin,
            "r10",
            "wrong_key_type",
            None,
        ),
        (
            "GET",
            "/api/v1/workspaces/ws_b/posts/1",
            &fx.k.ws,
            "r11",
            "workspace",
            Some("ws_a"),
        ),
        (
            "POST",
            "/api/v1/company/x",
            &fx.k.reader,
            "r12",
            "scope",
            None,
        ),
    ] {
        let l = line(method, path, key, id);
        assert_eq!(l["outcome"], outcome, "{id}: {l}");
        let expected = match id {
            "r9" | "r11" => "k_ws",
            "r10" => "k_admin",
            _ => "k_reader",
        };
        assert_eq!(l["key_id"], expected, "{id}: {l}");
        assert_eq!(l["company"], "acme", "{id}: {l}");
        assert_eq!(l["workspace"].as_str(), workspace, "{id}: {l}");
    }
    // A revoked key did not authenticate: not named.
    let l = line("GET", "/api/v1/profiles/me", &fx.k.revoked, "r8");
    assert_eq!(l["outcome"], "revoked");
    assert!(l.get("key_id").is_none_or(|v| v.is_null()), "{l}");
    // A key the client put in its path is not written out.
    let r = fx
        .gw
        .client
        .get(fx.gw.url(&format!("/nope/{}/x", fx.k.admin)))
        .header("X-Request-Id", "in-path")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let l = fx.gw.access_line("in-path");
    assert_eq!(l["path"], "/nope/ord_c_[redacted]/x", "{l}");
    assert_no_secret_in(&fx.gw.log(), "the gateway log");
}
