//! TLS termination (HTTPS, HTTP/2, certificate reload, plain HTTP refused) and
//! upstream pools (health checks, round robin, TLS to the upstream).

use crate::support::*;
use std::time::Duration;

fn tls_config(upstream: std::net::SocketAddr, plain_http: &str) -> String {
    standard_config(upstream, "", "").replace(
        "grace_period_secs = 5\n",
        &format!(
            "grace_period_secs = 5\n\n[server.tls]\nlisten = [\"127.0.0.1:{{https}}\"]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nplain_http = \"{plain_http}\"\n"
        ),
    )
}

#[test]
fn https_and_http2_clients_are_served_and_upstream_is_told_https() {
    let up = Upstream::start();
    let pki = Pki::new();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = start_with_files(&tls_config(up.addr, "allow"), &snap.render(), |d| {
        pki.write(d)
    });
    let client = pki.client(gw.ports.https);
    let url = format!("https://localhost:{}/api/v1/company/x", gw.ports.https);
    let resp = client.get(&url).bearer_auth(&key).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        up.last().header("forwarded"),
        Some("for=127.0.0.1;proto=https")
    );
    assert_eq!(up.last().header("x-keygate-key-id"), Some("k1"));
    // HTTP/2 carries each cookie as a field of its own; the HTTP/1.1
    // upstream gets them as one (RFC 9113 §8.2.3).
    let resp = client
        .get(&url)
        .bearer_auth(&key)
        .header("cookie", "a=1")
        .header("cookie", "b=2; c=3")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("cookie"), Some("a=1; b=2; c=3"));
    // A head over `max_header_bytes` (64 KiB) is keygate's JSON 431 over
    // HTTP/2 too, not the HTTP/2 layer's bare one.
    let big = client
        .get(&url)
        .bearer_auth(&key)
        .header("x-big", "a".repeat(100 * 1024))
        .send()
        .unwrap();
    assert_eq!(big.version(), reqwest::Version::HTTP_2);
    assert_json_error(
        big,
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
        "Request header fields too large",
    );

    let h1 = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], gw.ports.https).into())
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).bearer_auth(&key).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    // A denial over HTTP/2 is the same JSON.
    let resp = client.get(&url).send().unwrap();
    assert_json_error(resp, 401, "UNAUTHORIZED", "Missing bearer token");
    // Plain HTTP is allowed on this config.
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));
    // A TCP check that connects and closes (the readiness probe is one) is
    // routine: no line at the default level. A client that speaks no TLS is
    // worth one.
    drop(std::net::TcpStream::connect(("127.0.0.1", gw.ports.https)).unwrap());
    let mut junk = std::net::TcpStream::connect(("127.0.0.1", gw.ports.https)).unwrap();
    std::io::Write::write_all(&mut junk, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    wait_for("the junk handshake logged", Duration::from_secs(10), || {
        gw.log().contains("TLS handshake failed").then_some(())
    });
    assert_eq!(
        gw.log().matches("TLS handshake failed").count(),
        1,
        "{}",
        gw.log()
    );
}

#[test]
fn plain_http_is_refused_when_rejecting_but_https_works() {
    let up = Upstream::start();
    let pki = Pki::new();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = start_with_files(&tls_config(up.addr, "reject"), &snap.render(), |d| {
        pki.write(d)
    });
    assert_json_error(
        gw.get("/api/v1/company/x", Some(&key)),
        403,
        "FORBIDDEN",
        "HTTPS is required",
    );
    assert_json_error(
        gw.get("/healthz", None),
        403,
        "FORBIDDEN",
        "HTTPS is required",
    );
    assert_eq!(up.count(), 0);
    let resp = pki
        .client(gw.ports.https)
        .get(format!(
            "https://localhost:{}/api/v1/company/x",
            gw.ports.https
        ))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        gw.metric(r#"keygate_auth_denials_total{reason="https_required",route="company"}"#),
        Some(1.0)
    );
}

/// `[server.tls]` added by reload with `plain_http = "reject"`: its
/// listener waits for a restart, and so does the refusal of plain HTTP, or
/// every client would be refused with nowhere to go.
#[test]
fn rejecting_plain_http_added_by_reload_waits_for_the_tls_listener() {
    let up = Upstream::start();
    let pki = Pki::new();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let plain = standard_config(up.addr, "", "");
    let gw = start_with_files(&plain, &snap.render(), |d| pki.write(d));
    gw.write_config(&tls_config(up.addr, "reject"));
    let resp = gw.client.post(gw.admin_url("/reload")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().unwrap();
    assert_eq!(
        report["report"]["restart_required"],
        serde_json::json!(["server.tls.listen", "server.tls.plain_http"])
    );
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);
    assert_eq!(gw.get("/healthz", None).status(), 200);
    assert!(
        gw.log().contains("server.tls.plain_http"),
        "the held setting is logged: {}",
        gw.log()
    );
    // Back to the file it started with: nothing waits any more.
    gw.write_config(&plain);
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);
}

#[test]
fn certificates_are_re_read_on_reload_and_a_bad_one_is_refused() {
    let up = Upstream::start();
    let first = Pki::new();
    let second = Pki::new();
    let snap = Snapshot::new();
    let gw = start_with_files(&tls_config(up.addr, "allow"), &snap.render(), |d| {
        first.write(d)
    });
    let url = format!("https://localhost:{}/healthz", gw.ports.https);
    assert_eq!(
        first
            .client(gw.ports.https)
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert!(second.client(gw.ports.https).get(&url).send().is_err());

    // A key that does not match the certificate is refused; the old one serves.
    write_atomic(&gw.dir.path().join("cert.pem"), &second.cert_pem);
    assert_eq!(gw.reload_by_signal(), "failure");
    assert_eq!(
        first
            .client(gw.ports.https)
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );

    second.write(gw.dir.path());
    assert_eq!(gw.reload_by_signal(), "success");
    assert_eq!(
        second
            .client(gw.ports.https)
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert!(first.client(gw.ports.https).get(&url).send().is_err());
}

/// Waits until `/readyz` shows server `address` of upstream `upstream` as
/// unhealthy; returns that `/readyz` answer.
fn wait_marked_down(gw: &Gateway, upstream: &str, address: &str) -> serde_json::Value {
    wait_for(
        &format!("the health check to mark {address} of {upstream} down"),
        Duration::from_secs(15),
        || {
            let v: serde_json::Value = gw
                .client
                .get(gw.admin_url("/readyz"))
                .send()
                .ok()?
                .json()
                .ok()?;
            let server = v["upstreams"]
                .as_array()?
                .iter()
                .find(|u| u["name"] == upstream)?["servers"]
                .as_array()?
                .iter()
                .find(|s| s["address"] == address)?
                .clone();
            (server["healthy"] == false).then_some(v)
        },
    )
}

#[test]
fn dead_server_is_marked_unhealthy_and_skipped_without_errors() {
    let live = Upstream::start();
    let dead_port = free_port();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let extra = format!(
        "[[upstreams]]\nname = \"pool\"\nservers = [\"127.0.0.1:{dead_port}\", \"{}\"]\nconnect_timeout_ms = 500\nhealth_check = {{ path = \"/healthz\", interval_secs = 1 }}\n",
        live.addr
    );
    let route = "[[routes]]\nname = \"pool\"\npath = \"/pool/**\"\nupstream = \"pool\"\nauth = \"company\"\n";
    let gw = Gateway::start(&standard_config(live.addr, &extra, route), &snap.render());
    let readyz = wait_marked_down(&gw, "pool", &format!("127.0.0.1:{dead_port}"));
    assert_eq!(
        readyz["status"], "ready",
        "one unhealthy server does not make the gateway unready"
    );
    let errors_before = gw
        .metric(r#"keygate_upstream_errors_total{kind="connect",upstream="pool"}"#)
        .unwrap_or(0.0);
    for _ in 0..20 {
        assert_eq!(gw.get("/pool/x", Some(&key)).status(), 200);
    }
    assert_eq!(
        gw.metric(r#"keygate_upstream_errors_total{kind="connect",upstream="pool"}"#)
            .unwrap_or(0.0),
        errors_before,
        "the unhealthy server is not tried"
    );
    assert!(
        live.seen().iter().any(|s| s.url == "/healthz"),
        "probed with the path"
    );
}

/// One server, health-checked and failing its check: refused at once as
/// unavailable, and the request never reaches it (the one-server pick still
/// asks its health).
#[test]
fn a_lone_server_marked_down_is_not_tried() {
    let live = Upstream::start();
    let sick = Upstream::start();
    sick.status.store(503, std::sync::atomic::Ordering::SeqCst);
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let extra = format!(
        "[[upstreams]]\nname = \"lone\"\nservers = [\"{}\"]\nhealth_check = {{ path = \"/healthz\", interval_secs = 1 }}\n",
        sick.addr
    );
    let route = "[[routes]]\nname = \"lone\"\npath = \"/lone/**\"\nupstream = \"lone\"\nauth = \"company\"\n";
    let gw = Gateway::start(&standard_config(live.addr, &extra, route), &snap.render());
    wait_marked_down(&gw, "lone", &sick.addr.to_string());
    assert_json_error(
        gw.get("/lone/x", Some(&key)),
        502,
        "BAD_GATEWAY",
        "Upstream lone is unavailable",
    );
    let urls: Vec<String> = sick.seen().into_iter().map(|s| s.url).collect();
    assert!(!urls.is_empty(), "the health check reached the server");
    assert!(
        urls.iter().all(|u| u == "/healthz"),
        "only the health check reaches a server marked down: {urls:?}"
    );
}

#[test]
fn round_robin_spreads_requests_and_a_refused_connect_is_retried_elsewhere() {
    let a = Upstream::start();
    let b = Upstream::start();
    let dead_port = free_port();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let extra = format!(
        "[[upstreams]]\nname = \"pool\"\nservers = [\"{}\", \"127.0.0.1:{dead_port}\", \"{}\"]\nconnect_timeout_ms = 500\n",
        a.addr, b.addr
    );
    let route = "[[routes]]\nname = \"pool\"\npath = \"/pool/**\"\nupstream = \"pool\"\nauth = \"company\"\n";
    let gw = Gateway::start(&standard_config(a.addr, &extra, route), &snap.render());
    for _ in 0..30 {
        assert_eq!(gw.get("/pool/x", Some(&key)).status(), 200);
    }
    assert!(
        a.count() >= 5 && b.count() >= 5,
        "a={} b={}",
        a.count(),
        b.count()
    );
    assert!(
        gw.metric(r#"keygate_upstream_errors_total{kind="connect",upstream="pool"}"#)
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn upstream_tls_verifies_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let up = Upstream::start_tls(&pki.cert_pem, &pki.key_pem);
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let extra = format!(
        "[[upstreams]]\nname = \"secure\"\nservers = [\"{}\"]\ntls = true\nsni = \"localhost\"\nca_file = \"ca.pem\"\n\n[[upstreams]]\nname = \"untrusted\"\nservers = [\"{}\"]\ntls = true\nsni = \"localhost\"\n",
        up.addr, up.addr
    );
    let routes = "[[routes]]\nname = \"secure\"\npath = \"/secure/**\"\nupstream = \"secure\"\nauth = \"company\"\n\n[[routes]]\nname = \"untrusted\"\npath = \"/untrusted/**\"\nupstream = \"untrusted\"\nauth = \"company\"\n";
    let gw = start_with_files(
        &standard_config(up.addr, &extra, routes),
        &snap.render(),
        |d| pki.write(d),
    );
    let resp = gw.get("/secure/x", Some(&key));
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-key-id"), Some("k1"));
    assert_json_error(
        gw.get("/untrusted/x", Some(&key)),
        502,
        "BAD_GATEWAY",
        "Upstream untrusted is unavailable",
    );
}

#[test]
fn upstream_connections_are_reused() {
    let up = Upstream::start();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &snap.render());
    for _ in 0..10 {
        assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 200);
    }
    assert!(
        up.connections() < 10,
        "10 sequential requests used {} upstream connections",
        up.connections()
    );
}
