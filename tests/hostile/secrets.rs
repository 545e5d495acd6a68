//! Secrets: no log level and no hostile traffic puts a key, key hash or
//! bearer value in the log; no guessed probe gets a special answer.

use super::*;
use std::time::Duration;

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

/// An upstream that answers with the request it got: Pingora's error quotes
/// those bytes, `Authorization` among them when it is forwarded. The error
/// line keygate writes instead has it blanked out.
#[test]
fn an_upstream_echoing_the_request_gets_no_key_into_the_error_line() {
    use std::io::{Read, Write};
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = echo.local_addr().unwrap();
    echo.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            match echo.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s.write_all(&got);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["admin"]).add();
    let config = standard_config(
        addr,
        "[upstream_headers]\nforward_authorization = true\n",
        "",
    );
    let gw = Gateway::start(&config, &snap.render());
    let r = gw.get("/api/v1/company/x", Some(&key));
    assert_eq!(r.status().as_u16(), 502);
    server.join().unwrap();
    let log = gw.log();
    let line = wait_for("keygate's error line", Duration::from_secs(10), || {
        gw.log()
            .lines()
            .find(|l| l.contains("proxy failed"))
            .map(str::to_owned)
    });
    assert!(line.contains("[redacted]"), "{line}");
    assert!(
        !log.contains("Fail to proxy"),
        "Pingora's own line is replaced:\n{log}"
    );
    assert_keys_kept_out_of(&gw.log(), &[key]);
}
