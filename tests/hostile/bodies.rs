//! Bodies and keep-alive: a body sent with an early denial.

use super::*;

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

/// Requests sent one after another before any answer (HTTP/1.1 pipelining)
/// are each answered, in order, on the same connection: proxied ones, a
/// denial between them, and one with a body.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let before = fx.up.count();
    let requests = [
        head("GET", "/api/v1/company/first", &[&auth]),
        head("GET", "/api/v1/company/denied", &[]),
        format!(
            "{}hello",
            head(
                "POST",
                "/api/v1/company/third",
                &[&auth, "Content-Length: 5"]
            )
        ),
        head("GET", "/api/v1/company/fourth", &[&auth]),
    ];
    let mut c = Conn::connect(fx.port());
    assert!(c.send(requests.concat().as_bytes()));
    let mut answers = Vec::new();
    for _ in 0..requests.len() {
        let r = c.read_reply().expect("an answer for every request");
        assert!(!r.closes(), "closed after {} answers: {r:?}", answers.len());
        answers.push(r);
    }
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 200, 200]);
    for (r, url) in [
        (&answers[0], "/api/v1/company/first"),
        (&answers[2], "/api/v1/company/third"),
        (&answers[3], "/api/v1/company/fourth"),
    ] {
        assert_eq!(r.json()["url"], url);
    }
    let seen = fx.up.seen();
    let urls: Vec<&str> = seen[before..].iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "/api/v1/company/first",
            "/api/v1/company/third",
            "/api/v1/company/fourth"
        ]
    );
    assert_eq!(seen[before + 1].body, b"hello");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}
