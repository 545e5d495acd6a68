//! Oversized heads and too many headers.

use super::*;

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
