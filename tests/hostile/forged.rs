//! Forged identity, request-id and forwarding headers, in any spelling.

use super::*;

/// Forged identity, request-id and forwarding headers in assorted spellings.
const FORGED: [&str; 24] = [
    "X_Keygate_Key_Id: evil",
    "x-keygate-key-id: evil",
    "x-keygate-company: evil",
    "X-KEYGATE-SCOPES: admin",
    "X-Keygate-Key-Type: company",
    "x_keygate_workspace: evil",
    "X-Keygate-Anything-Else: evil",
    "X_KEYGATE_: evil",
    "X-Forwarded-For: 6.6.6.6",
    "x_forwarded_for: 6.6.6.6",
    "X_Forwarded_Proto: https",
    "x_request_id: evil",
    "Forwarded: for=6.6.6.6;proto=https;host=evil",
    "forwarded: for=6.6.6.6",
    "X-Real-IP: 6.6.6.6",
    "x_real_ip: 6.6.6.6",
    "X-Forwarded-Host: evil",
    "X-Forwarded-Port: evil",
    // URL and method overrides: what a backend would serve instead.
    "X-Original-URL: evil",
    "X-Rewrite-URL: evil",
    "X-Override-URL: evil",
    "X-HTTP-Method-Override: evil",
    "X-HTTP-Method: evil",
    "X-Method-Override: evil",
];

/// Headers no client may set, whatever their spelling.
fn forged_survivors(seen: &Seen) -> Vec<(String, String)> {
    seen.headers
        .iter()
        .filter(|(n, v)| {
            let folded = n.replace('_', "-").to_ascii_lowercase();
            v == "evil"
                || v.contains("6.6.6.6")
                || n.contains('_')
                || (folded == "x-keygate-scopes" && v == "admin")
                || (folded == "x-forwarded-proto" && v == "https")
        })
        .cloned()
        .collect()
}

#[test]
fn forged_identity_headers_are_stripped_in_any_spelling() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.ws);
    let mut lines = vec![auth.as_str()];
    lines.extend(FORGED);
    lines.push("Connection: close");
    let r = exchange(
        fx.port(),
        head("POST", "/api/v1/workspaces/ws_a/records/1", &lines).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_ws"),
            ("x-keygate-key-type", "workspace"),
            ("x-keygate-company", "acme"),
            ("x-keygate-workspace", "ws_a"),
            ("x-keygate-scopes", "read:all write:all"),
        ])
    );
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.all("forwarded"), vec!["for=127.0.0.1;proto=http"]);
    assert_eq!(seen.all("x-real-ip"), Vec::<&str>::new());
    assert_eq!(seen.all("x-forwarded-host"), Vec::<&str>::new());
    assert_eq!(seen.all("x-request-id").len(), 1);
    // The same on a company route with a company key.
    let auth = format!("Authorization: Bearer {}", fx.reader);
    let mut lines = vec![auth.as_str()];
    lines.extend(FORGED);
    lines.push("Connection: close");
    let r = exchange(
        fx.port(),
        head("GET", "/api/v1/company/workspaces/ws_b/x", &lines).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    let seen = fx.up.last();
    assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
    assert_eq!(
        identity(&seen),
        pairs(&[
            ("x-keygate-key-id", "k_reader"),
            ("x-keygate-key-type", "company"),
            ("x-keygate-company", "acme"),
            ("x-keygate-workspace", "ws_b"),
            ("x-keygate-scopes", "read:all"),
        ])
    );
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

#[test]
fn forged_identity_headers_are_stripped_on_auth_none_routes() {
    let fx = fixture();
    // Without a key, and with a valid key: an `auth = "none"` route sets no
    // identity, and client copies never pass.
    let auth = format!("Authorization: Bearer {}", fx.admin);
    for with_key in [false, true] {
        let mut lines: Vec<&str> = FORGED.to_vec();
        if with_key {
            lines.push(&auth);
        }
        lines.push("Connection: close");
        let r = exchange(fx.port(), head("GET", "/healthz", &lines).as_bytes()).expect("an answer");
        assert_eq!(r.status, 200, "with key: {with_key}");
        let seen = fx.up.last();
        assert_eq!(seen.url, "/healthz");
        assert_eq!(forged_survivors(&seen), vec![], "{:?}", seen.headers);
        assert_eq!(identity(&seen), vec![], "with key: {with_key}");
        assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
        assert_eq!(seen.all("forwarded"), vec!["for=127.0.0.1;proto=http"]);
        assert_eq!(seen.header("authorization"), None);
    }
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}
