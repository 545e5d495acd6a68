//! Request smuggling: `Content-Length` with `Transfer-Encoding`, conflicting or broken framing.

use super::*;
use std::time::Duration;

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
    // Identical duplicates are one length (RFC 9110 §8.6): accepted, and the
    // upstream gets that one figure, not the list.
    for framing in [
        &["Content-Length: 5", "Content-Length: 5"][..],
        &["Content-Length: 5, 5"],
    ] {
        let mut lines = vec![auth.as_str(), "Connection: close"];
        lines.extend(framing);
        let req = format!("{}hello", head("POST", "/api/v1/company/dup", &lines));
        let r = exchange(fx.port(), req.as_bytes()).expect("an answer");
        assert_eq!(r.status, 200, "{framing:?}");
        let seen = fx.up.last();
        assert_eq!(seen.body, b"hello", "{framing:?}");
        assert_eq!(seen.header("content-length"), Some("5"), "{framing:?}");
    }
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}
