//! Encoded path tricks: dot segments and encoded separators.

use super::*;

/// `GET target` with one header line and `Connection: close`; its answer.
#[track_caller]
fn get_closing(fx: &Fx, target: &str, header: &str) -> Reply {
    let req = head("GET", target, &[header, "Connection: close"]);
    exchange(fx.port(), req.as_bytes()).unwrap_or_else(|| panic!("{target}: closed"))
}

#[test]
fn encoded_dot_segments_and_separators_are_400_invalid_request_path() {
    let fx = fixture();
    let auth = format!("Authorization: Bearer {}", fx.admin);
    for target in [
        "/api/v1/company/%2e%2e/x",
        "/api/v1/company/%2E%2e/x",
        "/api/v1/company/%2e%2E/keys/x",
        "/api/v1/company/.%2E/x",
        "/api/v1/company/%2E./x",
        "/api/v1/company/%2e/x",
        "/api/v1/company/%2E",
        "/api/v1/company/x/%2e%2e",
        "/api/v1/company/../x",
        "/api/v1/company/./x",
        "/api/v1/company/x/..",
        "/api/v1/company/a%2Fb",
        "/api/v1/company/a%2fb",
        "/api/v1/company/%2F%2Fevil",
        "/api/v1/company/a%5Cb",
        "/api/v1/company/a%5cb",
        "/api/v1/company/a\\b",
        "/api/v1/company/a%00b",
        "/api/v1/company/%00",
        "/api/v1/company/a%zzb",
        "/api/v1/company/a%2",
        "/api/v1/company/%c0%ae%c0%ae/x",
        "/api/v1/company/%2e%2e%2fkeys/x?q=1",
        "/api/v1/workspaces/%2e%2e/posts/x",
        "/healthz/%2e%2e",
    ] {
        let r = get_closing(&fx, target, &auth);
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Control: the same bytes in the query string are not the path.
    let r = get_closing(&fx, "/api/v1/company/x?next=%2e%2e%2F%5c%00", &auth);
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/x?next=%2e%2e%2F%5c%00");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// Tomcat, Spring and Jetty drop `;params` from a segment before resolving
/// dots, so `..;` is `..` to them: a keyless request under a public route, or
/// a workspace key under its own workspace, must not climb into another route.
#[test]
fn dot_segments_with_path_parameters_are_400_before_any_route() {
    let up = Upstream::start();
    let addr = up.addr;
    let public = "[[routes]]\nname = \"public\"\npath = \"/public/**\"\nupstream = \"api\"\nauth = \"none\"\nscope = \"none\"\n";
    let fx = fixture_with_config(up, standard_config(addr, "", public));
    let ws = format!("Authorization: Bearer {}", fx.ws);
    for (target, auth) in [
        ("/public/..;/api/v1/company/x", None),
        ("/public/..;x=1/api/v1/company/x", None),
        ("/public/%2e%2e;/api/v1/company/x", None),
        ("/public/.%2e;jsessionid=a/api/v1/company/x", None),
        ("/public/.;/x", None),
        ("/public/..%3b/api/v1/company/x", None),
        ("/public/..%3B/api/v1/company/x", None),
        (
            "/api/v1/workspaces/ws_a/..;/ws_b/posts/r",
            Some(ws.as_str()),
        ),
        (
            "/api/v1/workspaces/ws_a/posts/..;/..;/ws_b/posts/r",
            Some(ws.as_str()),
        ),
    ] {
        let headers: Vec<&str> = auth.into_iter().chain(["Connection: close"]).collect();
        let r = exchange(fx.port(), head("GET", target, &headers).as_bytes())
            .unwrap_or_else(|| panic!("{target}: closed"));
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Control: parameters on a plain segment are the upstream's business.
    let r = exchange(
        fx.port(),
        head("GET", "/public/a;jsessionid=1/b", &["Connection: close"]).as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/public/a;jsessionid=1/b");
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}

/// A backend that merges slashes serves `/api/v1/company//keys/x` as
/// `/api/v1/company/keys/x`: if `//` were routed, the empty segment would
/// miss the admin-only `keys/**` route and the tenant-bound
/// `workspaces/{workspace}/**` one, and the broad company route would let a
/// read-only key of another company through.
#[test]
fn empty_segments_are_400_before_they_can_skip_a_stricter_route() {
    let fx = fixture();
    let reader = format!("Authorization: Bearer {}", fx.reader);
    for target in [
        "/api/v1/company//keys/x",
        "/api/v1/company/keys//x",
        "/api/v1/company/workspaces//ws_a/x",
        "/api/v1/company///workspaces/ws_a/x",
        "//api/v1/company/keys/x",
        "/healthz//",
        // Read leniently (case folded, `;params` and trailing dots and blanks
        // dropped, as Express, Spring and IIS do), these are the stricter
        // route's paths too.
        "/api/v1/company/Keys/x",
        "/api/v1/company/KEYS/x",
        "/api/v1/company/keys;jsessionid=1/x",
        "/api/v1/company/keys./x",
        "/api/v1/company/keys%20/x",
        "/api/v1/company/keys%09/x",
        "/api/v1/company/keys%3bx/x",
        "/api/v1/company/Workspaces/ws_b/x",
    ] {
        let r = get_closing(&fx, target, &reader);
        assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    }
    assert_eq!(fx.up.count(), 0, "{:?}", fx.up.seen());
    // Without the empty segment the stricter route answers as it should.
    let r = get_closing(&fx, "/api/v1/company/keys/x", &reader);
    assert_denied(
        &r,
        403,
        "FORBIDDEN",
        "API key is missing the required scope: admin",
    );
    // Control: a trailing slash is one empty segment at the end, not `//`.
    let r = get_closing(&fx, "/api/v1/company/things/", &reader);
    assert_eq!(r.status, 200);
    assert_eq!(fx.up.last().url, "/api/v1/company/things/");
    // Control: other segments in any case, or with dots inside, are the broad
    // route's as they were.
    for target in [
        "/api/v1/company/Things/x",
        "/api/v1/company/keys.json",
        "/api/v1/company/keysmith/x",
    ] {
        let r = get_closing(&fx, target, &reader);
        assert_eq!(r.status, 200, "{target}");
    }
    fx.assert_serving();
    fx.assert_no_secrets_logged();
}
