//! CONTRACT §5: exactly what the upstream sees.

use super::*;

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
