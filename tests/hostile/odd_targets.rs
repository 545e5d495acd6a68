//! Odd request targets: absolute, asterisk and authority form.

use super::*;

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

/// Pingora reads a target that is neither origin- nor absolute-form (`admin`
/// without its slash, `x:/admin`) as the path `/` but forwards it as sent: a
/// public catch-all would pass it, keyless, to a backend that may read it as
/// `/api/v1/company/...`. Row 1 refuses it, and the log shows it as sent.
#[test]
fn targets_without_a_leading_slash_are_400_even_under_a_public_catch_all() {
    let up = Upstream::start();
    let addr = up.addr;
    let public = "[[routes]]\nname = \"public\"\npath = \"/**\"\nupstream = \"api\"\nauth = \"none\"\nscope = \"none\"\n";
    let fx = fixture_with_config(up, standard_config(addr, "", public));
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let path = "Invalid request path";
    // `http:` without `//` is Pingora's to refuse (its authority check).
    for (n, (target, auth, message)) in [
        ("api/v1/company/keys/x", None, path),
        ("api/v1/company/keys/x", Some(auth.as_str()), path),
        ("x:/api/v1/company/keys/x", None, path),
        ("foo:bar://host/api/v1/company/keys/x", None, path),
        ("keys", None, path),
        ("http:/api/v1/company/keys/x", None, "Invalid request"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("odd-target-{n}");
        let id_header = format!("X-Request-Id: {id}");
        let mut headers: Vec<&str> = auth.into_iter().collect();
        headers.push(&id_header);
        headers.push("Connection: close");
        let r = exchange(fx.port(), head("GET", target, &headers).as_bytes())
            .unwrap_or_else(|| panic!("{target}: closed"));
        assert_denied(&r, 400, "BAD_REQUEST", message);
        if message == path {
            let line = fx.access_line(&id);
            assert_eq!(line["path"], target, "{line}");
            assert_eq!(line["status"], 400, "{line}");
        }
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Control: the catch-all serves origin-form targets keyless.
    let r = exchange(
        fx.port(),
        head("GET", "/anything", &["Connection: close"]).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/anything");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}
