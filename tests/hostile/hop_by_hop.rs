//! Hop-by-hop abuse: `Connection` nominating identity or forwarding headers.

use super::*;

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
