//! Shadow routes (CONTRACT §8), black box: every failed check of rows 4-13
//! proxied with `x-keygate-shadow`, the identity the upstream gets when a key
//! authenticated, nothing of keygate's in the client's answer, the counters,
//! the access-log field, the start-up warning, and switching by reload.

use crate::support::*;
use std::time::Duration;

const SHADOW_ROUTES: &str = r#"
[[routes]]
name = "shadow_company"
path = "/api/v1/shadow/company/**"
upstream = "api"
auth = "company"
scope = "auto"
enforce = "shadow"

[[routes]]
name = "shadow_ws"
path = "/api/v1/shadow/ws/{workspace}/**"
upstream = "api"
auth = "workspace"
scope = "auto"
enforce = "shadow"
"#;

struct Keys {
    admin: String,
    reader: String,
    ws: String,
    expired: String,
    revoked: String,
    limited: String,
}

fn snapshot() -> (Snapshot, Keys) {
    let mut s = Snapshot::new()
        .workspace("ws_a", "acme")
        .workspace("ws_b", "acme");
    let keys = Keys {
        admin: s.company_key("k_admin", "acme").scopes(&["admin"]).add(),
        reader: s
            .company_key("k_reader", "acme")
            .scopes(&["read:all"])
            .add(),
        ws: s
            .workspace_key("k_ws", "acme", "ws_a")
            .scopes(&["read:all", "write:all"])
            .add(),
        expired: s
            .company_key("k_expired", "acme")
            .scopes(&["admin"])
            .extra("expires_at = \"2020-01-01T00:00:00Z\"")
            .add(),
        revoked: s
            .company_key("k_revoked", "acme")
            .scopes(&["admin"])
            .extra("revoked_at = \"2020-01-01T00:00:00Z\"")
            .add(),
        limited: s
            .company_key("k_limited", "acme")
            .scopes(&["read:all"])
            .extra("rate_limit = { requests = 2, per_secs = 60 }")
            .add(),
    };
    (s, keys)
}

/// Headers of keygate's own that a shadow route's client must never see.
const KEYGATE_HEADERS: [&str; 7] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "www-authenticate",
    "retry-after",
];

#[track_caller]
fn assert_only_the_upstreams_answer(r: &reqwest::blocking::Response, what: &str) {
    assert_eq!(r.status().as_u16(), 200, "{what}: the upstream's answer");
    for h in KEYGATE_HEADERS {
        assert!(
            r.headers().get(h).is_none(),
            "{what}: {h} sent to the client"
        );
    }
    assert!(
        r.headers().get("x-request-id").is_some(),
        "{what}: X-Request-Id"
    );
}

fn shadow_series(route: &str, reason: &str) -> String {
    format!("keygate_shadow_denials_total{{reason=\"{reason}\",route=\"{route}\"}}")
}

#[test]
fn shadow_routes_proxy_every_failed_check_and_tell_the_upstream_why() {
    let up = Upstream::start();
    let (snap, k) = snapshot();
    let gw = Gateway::start(&standard_config(up.addr, "", SHADOW_ROUTES), &snap.render());
    let unknown = mint("ord_c_");
    // (method, path, key, reason told, key id named)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "GET",
            "/api/v1/shadow/company/a",
            None,
            Some("missing_token"),
            None,
        ),
        (
            "GET",
            "/api/v1/shadow/company/a",
            Some(&unknown),
            Some("invalid_key"),
            None,
        ),
        (
            "GET",
            "/api/v1/shadow/company/a",
            Some(&k.expired),
            Some("expired"),
            None,
        ),
        (
            "GET",
            "/api/v1/shadow/company/a",
            Some(&k.revoked),
            Some("revoked"),
            None,
        ),
        (
            "GET",
            "/api/v1/shadow/company/a",
            Some(&k.ws),
            Some("wrong_key_type"),
            Some("k_ws"),
        ),
        (
            "GET",
            "/api/v1/shadow/ws/ws_b/x",
            Some(&k.ws),
            Some("workspace"),
            Some("k_ws"),
        ),
        (
            "POST",
            "/api/v1/shadow/company/a",
            Some(&k.reader),
            Some("scope"),
            Some("k_reader"),
        ),
        (
            "GET",
            "/api/v1/shadow/company/a",
            Some(&k.admin),
            None,
            Some("k_admin"),
        ),
        (
            "GET",
            "/api/v1/shadow/ws/ws_a/x",
            Some(&k.ws),
            None,
            Some("k_ws"),
        ),
    ];
    for (method, path, key, reason, named) in &cases {
        let what = format!("{method} {path} -> {reason:?}");
        let mut req = gw
            .client
            .request(method.parse().unwrap(), gw.url(path))
            .header("X-Keygate-Shadow", "forged")
            .header("x_keygate_shadow", "forged");
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let r = req.send().unwrap();
        assert_only_the_upstreams_answer(&r, &what);
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let seen = up.last();
        assert_eq!(seen.url, *path, "{what}");
        assert_eq!(
            seen.all("x-keygate-shadow"),
            reason.iter().copied().collect::<Vec<_>>(),
            "{what}"
        );
        assert!(
            !seen.headers.iter().any(|(_, v)| v == "forged"),
            "{what}: a forged x-keygate-shadow reached the upstream"
        );
        assert_eq!(seen.header("x-keygate-key-id"), *named, "{what}: identity");
        if named.is_some() {
            assert_eq!(seen.header("x-keygate-company"), Some("acme"), "{what}");
        } else {
            let identity: Vec<_> = identity(&seen)
                .into_iter()
                .filter(|(n, _)| n != "x-keygate-shadow")
                .collect();
            assert_eq!(identity, vec![], "{what}: no identity without a key");
        }
        assert_eq!(seen.header("authorization"), None, "{what}");
        let line = wait_for("the access line", Duration::from_secs(10), || {
            gw.log()
                .lines()
                .find(|l| l.contains("keygate::access") && l.contains(&request_id))
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        });
        assert_eq!(line["outcome"], "proxied", "{what}: {line}");
        assert_eq!(line["status"], 200, "{what}: {line}");
        match reason {
            Some(reason) => assert_eq!(line["shadow"], *reason, "{what}: {line}"),
            None => assert!(line.get("shadow").is_none(), "{what}: {line}"),
        }
    }
    // Row 13: the limited key's third request would be a 429; proxied and told.
    let mut told = Vec::new();
    for _ in 0..3 {
        let r = gw.get("/api/v1/shadow/company/limited", Some(&k.limited));
        assert_only_the_upstreams_answer(&r, "limited key");
        told.push(up.last().header("x-keygate-shadow").map(str::to_string));
    }
    assert_eq!(told, [None, None, Some("rate_limited".to_string())]);

    // Counted as shadow denials only, every route x reason from the start.
    for (reason, n) in [
        ("missing_token", 1.0),
        ("invalid_key", 1.0),
        ("expired", 1.0),
        ("revoked", 1.0),
        ("wrong_key_type", 1.0),
        ("scope", 1.0),
        ("rate_limited", 1.0),
        ("https_required", 0.0),
        ("workspace", 0.0),
    ] {
        assert_eq!(
            gw.metric(&shadow_series("shadow_company", reason)),
            Some(n),
            "{reason}"
        );
    }
    assert_eq!(
        gw.metric(&shadow_series("shadow_ws", "workspace")),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(&shadow_series("company", "scope")),
        Some(0.0),
        "zero series"
    );
    for route in ["shadow_company", "shadow_ws"] {
        for reason in [
            "missing_token",
            "invalid_key",
            "scope",
            "workspace",
            "wrong_key_type",
        ] {
            let series =
                format!("keygate_auth_denials_total{{reason=\"{reason}\",route=\"{route}\"}}");
            assert_eq!(gw.metric(&series), Some(0.0), "{series}");
        }
        let series = format!("keygate_rate_limited_total{{route=\"{route}\"}}");
        assert_eq!(gw.metric(&series), Some(0.0), "{series}");
    }
    // Enforced routes beside them still answer.
    let r = gw.get("/api/v1/company/x", None);
    assert_json_error(r, 401, "UNAUTHORIZED", "Missing bearer token");

    // The start-up warning, one per shadow route, and the same from check.
    let log = gw.log();
    for route in ["shadow_company", "shadow_ws"] {
        let warning =
            format!("warning: route {route} is in shadow mode: denials are logged, not enforced");
        assert!(log.contains(&warning), "start-up log lacks {warning:?}");
    }
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout
            .matches(" is in shadow mode: denials are logged, not enforced")
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains(
        "warning: route shadow_company is in shadow mode: denials are logged, not enforced"
    ));
    assert_no_secret_in(&log, "the gateway log");
}

#[test]
fn switching_a_route_between_on_and_shadow_applies_on_reload() {
    let up = Upstream::start();
    let (snap, _) = snapshot();
    let on = SHADOW_ROUTES.replace("enforce = \"shadow\"\n", "enforce = \"on\"\n");
    let gw = Gateway::start(&standard_config(up.addr, "", &on), &snap.render());
    let r = gw.get("/api/v1/shadow/company/a", None);
    assert_json_error(r, 401, "UNAUTHORIZED", "Missing bearer token");

    gw.write_config(&standard_config(up.addr, "", SHADOW_ROUTES));
    let report: serde_json::Value = gw
        .client
        .post(gw.admin_url("/reload"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let changed = report["report"]["routes_changed"].as_array().unwrap();
    assert!(
        changed.iter().any(|r| r == "shadow_company") && changed.iter().any(|r| r == "shadow_ws"),
        "{report}"
    );
    let r = gw.get("/api/v1/shadow/company/a", None);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(up.last().header("x-keygate-shadow"), Some("missing_token"));

    gw.write_config(&standard_config(up.addr, "", &on));
    assert_eq!(gw.reload_by_signal(), "success");
    let r = gw.get("/api/v1/shadow/company/a", None);
    assert_json_error(r, 401, "UNAUTHORIZED", "Missing bearer token");
    // A shadow route without a key check is refused, and the old config stays.
    let keyless = SHADOW_ROUTES.replace("auth = \"company\"", "auth = \"none\"");
    gw.write_config(&standard_config(up.addr, "", &keyless));
    assert_eq!(gw.reload_by_signal(), "failure");
    let r = gw.get("/api/v1/shadow/company/a", None);
    assert_json_error(r, 401, "UNAUTHORIZED", "Missing bearer token");
    assert!(
        gw.log()
            .contains("enforce = \\\"shadow\\\" needs a keyed route"),
        "logged why"
    );
}
