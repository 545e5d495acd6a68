//! Bad input: huge headers and bodies on denied requests.

use super::*;

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
