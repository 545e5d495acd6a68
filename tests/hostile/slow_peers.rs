//! Slow peers: slowloris clients, slow heads and bodies, clients vanishing
//! mid-body, upstreams that reset mid-response or never answer, and a stdout
//! nobody reads.

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

#[test]
fn slowloris_clients_do_not_stop_the_gateway_serving_others() {
    let fx = fixture();
    // Many connections, each stuck in the middle of a request head.
    let partial = format!(
        "GET /api/v1/company/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nX-Slow: aaaa",
        fx.admin
    );
    let mut slow: Vec<Conn> = (0..200)
        .map(|_| {
            let mut c = Conn::connect(fx.port());
            assert!(c.send(partial.as_bytes()));
            c
        })
        .collect();
    // Others are served promptly meanwhile, on new and on kept-alive connections.
    let started = Instant::now();
    for i in 0..20 {
        let r = fx
            .gw
            .get(&format!("/api/v1/company/meanwhile/{i}"), Some(&fx.admin));
        assert_eq!(r.status().as_u16(), 200);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "20 requests took {elapsed:?} beside 200 stalled heads"
    );
    assert_eq!(fx.up.count(), 20);
    // The stalled heads got no answer and nothing of theirs went upstream
    // (they have `[server] header_timeout_ms`, 10 s by default, to finish;
    // `slow_request_heads_and_bodies_are_cut_at_their_timeouts` waits for it).
    for c in slow.iter_mut().take(5) {
        assert!(!c.is_closed_within(Duration::from_millis(100)));
        assert!(c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
    }
    // Finishing one stalled head still gets it served.
    let c = &mut slow[0];
    assert!(c.send(b"\r\nConnection: close\r\n\r\n"));
    let r = c.read_reply().expect("an answer to the completed head");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/slow");
    drop(slow);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// A gateway whose client timeouts are short enough to wait for.
fn fixture_with_client_timeouts() -> Fx {
    let up = Upstream::start();
    let config = standard_config(up.addr, "", "").replace(
        "grace_period_secs = 5\n",
        "grace_period_secs = 5\nheader_timeout_ms = 600\nbody_timeout_ms = 600\nkeepalive_timeout_secs = 3\n",
    );
    fixture_with_config(up, config)
}

/// Sends `bytes` one at a time, 100 ms apart, until the server closes the
/// connection; how long that took, or `None` if all were sent first.
fn dribble(c: &mut Conn, bytes: &[u8]) -> Option<Duration> {
    let started = Instant::now();
    for b in bytes {
        if !c.send(&[*b]) || c.is_closed_within(Duration::from_millis(100)) {
            return Some(started.elapsed());
        }
    }
    None
}

#[test]
fn slow_request_heads_and_bodies_are_cut_at_their_timeouts() {
    let fx = fixture_with_client_timeouts();
    // Connected, never a byte: closed once the first head is late.
    let mut silent = Conn::connect(fx.port());
    assert!(
        silent.is_closed_within(Duration::from_secs(5)),
        "silent client"
    );
    assert!(silent.buf.is_empty());

    // A byte every 100 ms: every single read is prompt (Pingora's own timer
    // never fires), the whole head is late, so the client gets a 408 and
    // the connection is closed while it is still sending.
    let dribbled = format!(
        "GET /api/v1/company/dribble HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nX-Pad: {}\r\n\r\n",
        fx.admin,
        "a".repeat(200)
    );
    let mut slow = Conn::connect(fx.port());
    let cut = dribble(&mut slow, dribbled.as_bytes()).expect("a dribbled head is cut off");
    assert!(cut < Duration::from_secs(5), "cut after {cut:?}");
    let late = slow.read_reply().expect("a 408 before the close");
    assert_denied(
        &late,
        408,
        "REQUEST_TIMEOUT",
        "Request head not received in time",
    );
    assert!(late.closes());
    let line = fx.access_line(late.header("x-request-id").unwrap());
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    assert_eq!(line["route"], "unmatched", "{line}");
    fx.assert_never_upstream("/api/v1/company/dribble");

    // On a kept-alive connection the idle time before the next request is
    // keep-alive time, not head time: the second head's clock starts with
    // its first byte.
    let mut kept = Conn::connect(fx.port());
    let auth = format!("Authorization: Bearer {}", fx.admin);
    let get = |path: &str| head("GET", path, &[auth.as_str()]);
    assert!(kept.send(get("/api/v1/company/first").as_bytes()));
    assert_eq!(kept.read_reply().expect("first answer").status, 200);
    // Idle for longer than header_timeout_ms (the scenario, not a wait for
    // the gateway): the connection stays open for keep-alive.
    assert!(!kept.is_closed_within(Duration::from_millis(1200)));
    assert!(kept.send(get("/api/v1/company/second").as_bytes()));
    let second = kept
        .read_reply()
        .expect("second answer on the kept-alive connection");
    assert_eq!(second.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/second");
    // Past keep-alive (3 s), the idle connection is closed.
    assert!(
        kept.is_closed_within(Duration::from_secs(8)),
        "idle keep-alive"
    );

    // A body that stops arriving: the request ends within the body timeout,
    // logged, and the truncated body never reaches the upstream whole.
    let mut stalled = Conn::connect(fx.port());
    let lines = [
        "Content-Length: 1000".to_string(),
        "X-Request-Id: stalled-body".to_string(),
        format!("Authorization: Bearer {}", fx.admin),
    ];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(stalled.send(head("POST", "/api/v1/company/upload", &refs).as_bytes()));
    assert!(stalled.send(b"0123456789"));
    let started = Instant::now();
    let reply = stalled.read_reply();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let line = fx.access_line("stalled-body");
    assert_eq!(line["path"], "/api/v1/company/upload", "{line}");
    assert_eq!(line["key_id"], "k_admin", "{line}");
    let reply = reply.unwrap_or_else(|| {
        panic!(
            "no answer to the stalled body (read ended with {:?}); logged {line}; gateway log:\n{}",
            stalled.ended_with,
            fx.gw.log()
        )
    });
    assert_denied(
        &reply,
        408,
        "REQUEST_TIMEOUT",
        "Request body not received in time",
    );
    assert!(
        reply.closes(),
        "the connection is not reused after a cut body"
    );
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "client_error", "{line}");
    fx.assert_never_upstream("/api/v1/company/upload");

    // Each cut head was logged, without its contents.
    let log = fx.gw.log();
    let cuts = log
        .lines()
        .filter(|l| l.contains("request head not received in time"))
        .count();
    assert!(cuts >= 2, "{log}");
    assert!(
        !log.contains("\"level\":\"ERROR\""),
        "client faults are no errors: {log}"
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn client_vanishing_mid_body_is_logged_and_the_gateway_keeps_serving() {
    let fx = fixture();
    for (id, key) in [
        ("vanish-authorized", Some(&fx.admin)),
        ("vanish-denied", None),
    ] {
        let auth = key.map(|k| format!("Authorization: Bearer {k}"));
        let rid = format!("X-Request-Id: {id}");
        let mut lines = vec!["Content-Length: 100000", rid.as_str()];
        if let Some(a) = &auth {
            lines.push(a);
        }
        let mut c = Conn::connect(fx.port());
        assert!(c.send(head("POST", "/api/v1/company/upload", &lines).as_bytes()));
        assert!(c.send(b"0123456789"));
        // The denied request may already be answered and its connection
        // closed by the gateway (an early 401 does not wait for the body), in
        // which case the socket is no longer connected: vanishing is then moot.
        let _ = c.stream.shutdown(Shutdown::Both);
        drop(c);
        let line = fx.access_line(id);
        assert_eq!(line["path"], "/api/v1/company/upload", "{line}");
        assert_eq!(line["route"], "company", "{line}");
        if key.is_some() {
            // Proxied, then the client went away: no status was sent.
            assert_eq!(line["key_id"], "k_admin", "{line}");
            assert_eq!(line["status"], 0, "{line}");
            assert_eq!(line["outcome"], "client_error", "{line}");
        } else {
            assert_eq!(line["status"], 401, "{line}");
            assert_eq!(line["outcome"], "missing_token", "{line}");
        }
    }
    // The truncated body never arrived whole upstream.
    fx.assert_never_upstream("/api/v1/company/upload");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// A one-shot upstream on a raw socket: for each of `plans`, accepts one
/// connection, reads a request head, writes the given bytes and drops the
/// socket. Returns its address and the thread to join.
fn broken_upstream(plans: Vec<Vec<u8>>) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for plan in plans {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while find(&buf, b"\r\n\r\n").is_none() {
                match s.read(&mut chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = s.write_all(&plan);
            let _ = s.flush();
            drop(s);
            served += 1;
        }
        served
    });
    (addr, handle)
}

#[test]
fn upstream_resetting_mid_response_is_bounded_and_logged() {
    let (addr, upstream) = broken_upstream(vec![
        // A head promising 100000 bytes, a few of them, then the socket drops.
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\npartial"
            .to_vec(),
        // Nothing at all: the connection closes after the request.
        Vec::new(),
    ]);
    let up = Upstream::start();
    let fx = fixture_on(up, addr);
    let auth = format!("Authorization: Bearer {}", fx.admin);

    let started = Instant::now();
    let mut c = Conn::connect(fx.port());
    assert!(
        c.send(
            head(
                "GET",
                "/api/v1/company/truncated",
                &[&auth, "X-Request-Id: reset-mid-response"]
            )
            .as_bytes()
        )
    );
    // The head and the bytes that came are relayed, then the connection ends
    // short of the promised length.
    let head_end = loop {
        if let Some(i) = find(&c.buf, b"\r\n\r\n") {
            break i;
        }
        assert_eq!(c.fill(), ReadEnd::Data, "no response head");
    };
    let text = String::from_utf8_lossy(&c.buf[..head_end]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-length: 100000"), "{text}");
    assert!(
        c.is_closed_within(Duration::from_secs(10)),
        "client left hanging"
    );
    let body = c.buf.len() - head_end - 4;
    assert!(body < 100_000, "a whole body arrived");
    assert!(started.elapsed() < Duration::from_secs(10));
    let line = fx.access_line("reset-mid-response");
    // The status went out before the upstream failed; the outcome says so.
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["outcome"], "upstream_error", "{line}");
    assert_eq!(line["key_id"], "k_admin", "{line}");

    // An upstream that closes without answering: 502, promptly.
    let r = exchange(
        fx.port(),
        head(
            "GET",
            "/api/v1/company/nothing",
            &[
                &auth,
                "X-Request-Id: reset-before-response",
                "Connection: close",
            ],
        )
        .as_bytes(),
    )
    .expect("an answer");
    assert_denied(&r, 502, "BAD_GATEWAY", "Upstream api is unavailable");
    let line = fx.access_line("reset-before-response");
    assert_eq!(line["status"], 502, "{line}");
    assert_eq!(line["outcome"], "upstream_error", "{line}");
    assert_eq!(upstream.join().unwrap(), 2);

    // The gateway still answers (the upstream is gone now: 502 again).
    let r = fx.gw.get("/api/v1/company/after", Some(&fx.admin));
    assert_eq!(r.status().as_u16(), 502);
    let r = fx.gw.get("/healthz/nope", None);
    assert_eq!(r.status().as_u16(), 404);
    fx.assert_no_secrets_logged();
}

#[test]
fn upstream_never_answering_is_504_and_logged() {
    let fx = fixture();
    // read_timeout_ms = 2000 in the standard config.
    fx.up
        .delay_ms
        .store(6000, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let r = exchange(
        fx.port(),
        head(
            "GET",
            "/api/v1/company/slow",
            &[
                &format!("Authorization: Bearer {}", fx.admin),
                "X-Request-Id: never-answers",
                "Connection: close",
            ],
        )
        .as_bytes(),
    )
    .expect("an answer");
    let elapsed = started.elapsed();
    assert_denied(&r, 504, "GATEWAY_TIMEOUT", "Upstream api timed out");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(5000),
        "504 after {elapsed:?}"
    );
    let line = fx.access_line("never-answers");
    assert_eq!(line["status"], 504, "{line}");
    assert_eq!(line["outcome"], "upstream_timeout", "{line}");
    fx.up.delay_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// Nobody reads the gateway's stdout (a stalled log shipper keeps the pipe
/// full): requests are served all the same, and every access line arrives
/// once the pipe is read again.
#[test]
fn a_stdout_nobody_reads_holds_up_no_request() {
    let up = Upstream::start();
    let mut gw = Gateway::prepare(
        &standard_config(up.addr, "", ""),
        &Snapshot::new().render(),
        |_| {},
        "info",
        &[],
    );
    let (reader, writer) = std::io::pipe().unwrap();
    gw.launch_with_stdout(std::process::Stdio::from(writer));
    gw.wait_ready();
    // Several times what the pipe (64 KiB) and one batch (64 KiB) hold:
    // a request thread that wrote its lines itself would stop here.
    const N: usize = 2000;
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..N {
        let r = client.get(gw.url("/healthz")).send();
        let status = r.map(|r| r.status().as_u16());
        assert!(
            matches!(status, Ok(200)),
            "request {i} of {N} with stdout unread: {status:?}"
        );
    }
    // Now read: every line is there, none was dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(n @ 1..) => n,
                _ => break,
            };
            if tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let count = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.contains(r#""message":"request""#) && l.contains(r#""route":"health""#))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&out) < N && Instant::now() < deadline {
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
            out.extend_from_slice(&bytes);
        }
    }
    assert_eq!(count(&out), N, "every access line reaches stdout");
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("log lines were dropped"), "nothing dropped");
    assert!(
        text.contains(r#""message":"ready""#),
        "operational lines too"
    );
    drop(gw);
    drain.join().unwrap();
}
