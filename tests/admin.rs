//! The admin listener, metrics and access log (CONTRACT §6).

use crate::support::*;
use std::process::Command;
use std::time::Duration;

struct Setup {
    up: Upstream,
    gw: Gateway,
    company: String,
    ws: String,
    reader: String,
    limited: String,
    keys_text: String,
}

fn setup(edit_config: impl Fn(String) -> String) -> Setup {
    let up = Upstream::start();
    let mut snap = Snapshot::new().workspace("ws_a", "acme");
    let company = snap
        .company_key("k_company", "acme")
        .scopes(&["admin"])
        .add();
    let ws = snap
        .workspace_key("k_ws", "acme", "ws_a")
        .scopes(&["read:all"])
        .add();
    let reader = snap
        .company_key("k_reader", "acme")
        .scopes(&["read:all"])
        .add();
    let limited = snap
        .company_key("k_limited", "acme")
        .scopes(&["read:all"])
        .extra("rate_limit = { requests = 1, per_secs = 3600 }")
        .add();
    snap.workspace_key("k_revoked", "acme", "ws_a")
        .scopes(&["read:all"])
        .extra("revoked_at = \"2026-01-01T00:00:00Z\"")
        .add();
    snap.company_key("k_expired", "acme")
        .scopes(&["read:all"])
        .extra("expires_at = \"2026-01-01T00:00:00Z\"")
        .add();
    let keys_text = snap.render();
    let gw = Gateway::start(&edit_config(standard_config(up.addr, "", "")), &keys_text);
    Setup {
        up,
        gw,
        company,
        ws,
        reader,
        limited,
        keys_text,
    }
}

#[test]
fn counters_equal_the_requests_sent() {
    let s = setup(|c| c);
    let gw = &s.gw;
    for _ in 0..3 {
        assert_eq!(gw.get("/api/v1/company/a", Some(&s.company)).status(), 200);
    }
    assert_eq!(gw.get("/api/v1/company/a", None).status(), 401);
    assert_eq!(
        gw.get("/api/v1/company/a", Some("ord_c_unknownunknown"))
            .status(),
        401
    );
    assert_eq!(gw.get("/api/v1/company/a", Some(&s.ws)).status(), 403);
    assert_eq!(
        gw.request("POST", "/api/v1/company/a", Some(&s.reader))
            .status(),
        403
    );
    assert_eq!(gw.get("/api/v1/company/a", Some(&s.limited)).status(), 200);
    assert_eq!(gw.get("/api/v1/company/a", Some(&s.limited)).status(), 429);
    assert_eq!(gw.get("/nowhere", None).status(), 404);
    let raw = exchange(
        gw.ports.http,
        b"GET /a/%2e%2e/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("a response");
    assert_eq!(raw.status, 400);
    assert_eq!(gw.get("/healthz", None).status(), 200);

    let m = |series: &str| gw.metric(series).unwrap_or(0.0);
    assert_eq!(
        m(r#"keygate_requests_total{route="company",status="200"}"#),
        4.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="company",status="401"}"#),
        2.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="company",status="403"}"#),
        2.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="company",status="429"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="unmatched",status="400"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_requests_total{route="health",status="200"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_auth_denials_total{reason="missing_token",route="company"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_auth_denials_total{reason="invalid_key",route="company"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_auth_denials_total{reason="wrong_key_type",route="company"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_auth_denials_total{reason="scope",route="company"}"#),
        1.0
    );
    assert_eq!(
        m(r#"keygate_auth_denials_total{reason="bad_path",route="unmatched"}"#),
        1.0
    );
    assert_eq!(m(r#"keygate_rate_limited_total{route="company"}"#), 1.0);
    assert_eq!(
        m(r#"keygate_request_duration_seconds_count{route="company"}"#),
        9.0
    );
    assert_eq!(m(r#"keygate_keys{state="active",type="company"}"#), 3.0);
    assert_eq!(m(r#"keygate_keys{state="expired",type="company"}"#), 1.0);
    assert_eq!(m(r#"keygate_keys{state="active",type="workspace"}"#), 1.0);
    assert_eq!(m(r#"keygate_keys{state="revoked",type="workspace"}"#), 1.0);
    assert_eq!(m(r#"keygate_reloads_total{result="success"}"#), 1.0);
    assert!(m("keygate_last_reload_success_timestamp_seconds") > 1.7e9);
    assert_eq!(m("keygate_rate_limit_buckets"), 2.0);
    assert_eq!(
        s.up.count(),
        5,
        "only allowed requests reached the upstream"
    );
}

#[test]
fn upstream_errors_are_counted_by_kind() {
    let up = Upstream::start();
    let dead = free_port();
    let mut snap = Snapshot::new();
    let key = snap.company_key("k1", "acme").scopes(&["read:all"]).add();
    let extra = format!(
        "[[upstreams]]\nname = \"dead\"\nservers = [\"127.0.0.1:{dead}\"]\nconnect_timeout_ms = 500\n"
    );
    let route = "[[routes]]\nname = \"dead\"\npath = \"/dead/**\"\nupstream = \"dead\"\nauth = \"company\"\n";
    let gw = Gateway::start(&standard_config(up.addr, &extra, route), &snap.render());
    assert_eq!(gw.get("/dead/x", Some(&key)).status(), 502);
    up.delay_ms.store(3000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(gw.get("/api/v1/company/x", Some(&key)).status(), 504);
    assert_eq!(
        gw.metric(r#"keygate_upstream_errors_total{kind="connect",upstream="dead"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"keygate_upstream_errors_total{kind="timeout",upstream="api"}"#),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(r#"keygate_requests_total{route="dead",status="502"}"#),
        Some(1.0)
    );
}

#[test]
fn metrics_pass_promtool_check_metrics() {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        panic!("promtool is required (Debian package `prometheus`; `./dev test` installs it)");
    };
    assert!(out.status.success());
    let s = setup(|c| c);
    s.gw.get("/api/v1/company/a", Some(&s.company));
    s.gw.get("/api/v1/company/a", None);
    let text =
        s.gw.client
            .get(s.gw.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keys_lists_metadata_and_last_use_never_a_hash() {
    let s = setup(|c| c);
    let before: serde_json::Value =
        s.gw.client
            .get(s.gw.admin_url("/keys"))
            .send()
            .unwrap()
            .json()
            .unwrap();
    let list = before.as_array().unwrap();
    assert_eq!(list.len(), 6);
    let k = list.iter().find(|k| k["id"] == "k_ws").unwrap();
    assert_eq!(k["type"], "workspace");
    assert_eq!(k["company"], "acme");
    assert_eq!(k["workspace"], "ws_a");
    assert_eq!(k["scopes"], serde_json::json!(["read:all"]));
    assert_eq!(k["created_at"], "2026-11-01T10:00:00Z");
    assert_eq!(k["last_used_at"], serde_json::Value::Null);
    let revoked = list.iter().find(|k| k["id"] == "k_revoked").unwrap();
    assert_eq!(revoked["revoked_at"], "2026-01-01T00:00:00Z");
    assert_eq!(revoked["state"], "revoked");

    assert_eq!(s.gw.get("/api/v1/profiles/me", Some(&s.ws)).status(), 200);
    let after =
        s.gw.client
            .get(s.gw.admin_url("/keys"))
            .send()
            .unwrap()
            .text()
            .unwrap();
    let after_json: serde_json::Value = serde_json::from_str(&after).unwrap();
    let k = after_json
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "k_ws")
        .unwrap();
    assert!(k["last_used_at"].as_str().unwrap().starts_with("20"), "{k}");
    assert!(!after.contains("sha256"), "no hash in /keys");
    assert!(!after.contains("hash"), "no hash field in /keys");
    // last_used_at survives a reload.
    s.gw.write_keys(&s.keys_text);
    assert_eq!(s.gw.reload_by_signal(), "success");
    let again: serde_json::Value =
        s.gw.client
            .get(s.gw.admin_url("/keys"))
            .send()
            .unwrap()
            .json()
            .unwrap();
    let k2 = again
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "k_ws")
        .unwrap();
    assert_eq!(k2["last_used_at"], k["last_used_at"]);
}

#[test]
fn keys_listing_of_thousands_is_streamed_as_one_array() {
    let up = Upstream::start();
    let mut text = Snapshot::new().workspace("ws_a", "acme").render();
    const BULK: usize = 2500;
    for i in 0..BULK {
        // Hashes of strings no test presents: not minted keys.
        text.push_str(&format!(
            "[[keys]]\nid = \"bulk_{i}\"\nname = \"bulk {i}\"\ntype = \"workspace\"\n\
             company = \"acme\"\nworkspace = \"ws_a\"\nscopes = [\"read:all\"]\n\
             hash = \"{}\"\ncreated_at = \"2026-11-01T10:00:00Z\"\n\n",
            hash(&format!("bulk listing {i}"))
        ));
    }
    let gw = Gateway::start(&standard_config(up.addr, "", ""), &text);
    let resp = gw.client.get(gw.admin_url("/keys")).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("content-length").is_none());
    let body = resp.text().unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), BULK);
    for (i, k) in list.iter().enumerate() {
        assert_eq!(k["id"], format!("bulk_{i}"));
        assert_eq!(k["state"], "active");
    }
    assert!(!body.contains("sha256"));
    let head = gw.client.head(gw.admin_url("/keys")).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.bytes().unwrap().len(), 0);
    // Still serving afterwards.
    assert_eq!(
        gw.client
            .get(gw.admin_url("/healthz"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn admin_token_guards_keys_and_reload_but_not_probes() {
    let token = "admin-token-for-tests";
    let s = setup(|c| {
        c.replace(
            "[admin]\n",
            &format!("[admin]\ntoken_hash = \"{}\"\n", hash(token)),
        )
    });
    let gw = &s.gw;
    for (method, path) in [("GET", "/keys"), ("POST", "/reload")] {
        let r = gw
            .client
            .request(method.parse().unwrap(), gw.admin_url(path))
            .send()
            .unwrap();
        assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
        assert_json_error_no_id(r, 401, "UNAUTHORIZED", "Missing bearer token");
        let r = gw
            .client
            .request(method.parse().unwrap(), gw.admin_url(path))
            .bearer_auth("wrong")
            .send()
            .unwrap();
        assert_json_error_no_id(r, 401, "UNAUTHORIZED", "Invalid admin token");
        let r = gw
            .client
            .request(method.parse().unwrap(), gw.admin_url(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
    }
    // Every answer names its request: the client's sane id, or a new one.
    for path in ["/metrics", "/healthz", "/readyz", "/keys"] {
        let r = gw.client.get(gw.admin_url(path)).send().unwrap();
        assert_eq!(
            r.status(),
            if path == "/keys" { 401 } else { 200 },
            "{path}"
        );
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}: {id:?}"
        );
        let r = gw
            .client
            .get(gw.admin_url(path))
            .header("x-request-id", "probe-7")
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-request-id"], "probe-7", "{path}");
    }
}

fn assert_json_error_no_id(
    resp: reqwest::blocking::Response,
    status: u16,
    code: &str,
    message: &str,
) {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body, serde_json::json!({"code": code, "message": message}));
}

#[test]
fn probes_and_unknown_admin_paths() {
    let s = setup(|c| c);
    let gw = &s.gw;
    let r = gw.client.get(gw.admin_url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let r: serde_json::Value = gw
        .client
        .get(gw.admin_url("/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["upstreams"][0]["name"], "api");
    assert_eq!(r["upstreams"][0]["healthy"], true);
    assert_eq!(
        r["upstreams"][0]["servers"][0]["address"],
        s.up.addr.to_string()
    );
    assert_json_error_no_id(
        gw.client.get(gw.admin_url("/nope")).send().unwrap(),
        404,
        "NOT_FOUND",
        "No route for GET /nope",
    );
    assert_json_error_no_id(
        gw.client.delete(gw.admin_url("/metrics")).send().unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
        "Method DELETE is not allowed on this route",
    );
    for (method, path, allow) in [
        ("DELETE", "/metrics", "GET, HEAD"),
        ("POST", "/keys", "GET, HEAD"),
        ("GET", "/reload", "POST"),
    ] {
        let r = gw
            .client
            .request(method.parse().unwrap(), gw.admin_url(path))
            .send()
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    let m = gw.client.get(gw.admin_url("/metrics")).send().unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[test]
fn access_log_has_one_json_line_per_request_and_no_secret() {
    let s = setup(|c| c);
    let gw = &s.gw;
    let r = gw
        .client
        .get(gw.url("/api/v1/company/a?api_key=secret-in-query"))
        .bearer_auth(&s.company)
        .header("x-request-id", "trace-123")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.get("/api/v1/company/a", Some(&s.ws));
    gw.get(
        "/api/v1/company/a",
        Some("ord_c_not_a_real_key_but_secret_anyway"),
    );
    let line = wait_for("the access-log line", Duration::from_secs(5), || {
        gw.log()
            .lines()
            .find(|l| l.contains("\"request_id\":\"trace-123\""))
            .map(str::to_string)
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for (field, value) in [
        ("method", "GET"),
        ("path", "/api/v1/company/a"),
        ("route", "company"),
        ("outcome", "proxied"),
        ("key_id", "k_company"),
        ("company", "acme"),
        ("upstream", "api"),
        ("client", "127.0.0.1"),
    ] {
        assert_eq!(v[field], value, "{field} in {line}");
    }
    assert_eq!(v["status"], 200);
    assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(v["timestamp"].is_string());
    wait_for("three access lines", Duration::from_secs(5), || {
        (gw.log().matches("\"target\":\"keygate::access\"").count() >= 3).then_some(())
    });
    let log = gw.log();
    for secret in [
        s.company.as_str(),
        s.ws.as_str(),
        "ord_c_not_a_real_key_but_secret_anyway",
    ] {
        assert!(!log.contains(secret), "a key reached the log");
        assert!(!log.contains(&hash(secret)), "a key hash reached the log");
        assert!(
            !log.contains(&hash(secret)[7..]),
            "a key hash reached the log"
        );
    }
    assert!(
        !log.contains("secret-in-query"),
        "query strings stay out of the log"
    );
    assert!(
        !log.to_ascii_lowercase().contains("bearer "),
        "no Authorization value"
    );
}
