//! CONTRACT §4 precedence: the first failing row answers.

use super::*;

#[test]
fn first_failing_row_answers() {
    let fx = fixture("", "");
    let gw = &fx.gw;
    let k = &fx.k;
    // 1 before 2 (and before everything else).
    let r = raw(gw.ports.http, &raw_get("/nope/%2e%2e/x", ""));
    assert_denied(&r, 400, "BAD_REQUEST", "Invalid request path");
    // 2 before 5.
    assert_denied(
        &get(gw, "/nope", None),
        404,
        "NOT_FOUND",
        "No route for GET /nope",
    );
    // 3 before 5, 6, 9.
    for key in [None, Some("ord_c_bogus"), Some(k.admin.as_str())] {
        assert_denied(
            &send(gw, "DELETE", "/api/v1/workspaces/ws_a/records/1", key),
            405,
            "METHOD_NOT_ALLOWED",
            "Method DELETE is not allowed on this route",
        );
    }
    // 5 before 9 and 12: a POST without a key on an admin-only company route.
    assert_denied(
        &send(gw, "POST", "/api/v1/company/keys/k1", None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    // 6 before 9.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.mismatch_workspace)),
        401,
        "UNAUTHORIZED",
        "Invalid or unauthorized API key",
    );
    // 7 before 8.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.expired_and_revoked)),
        401,
        "UNAUTHORIZED",
        "API key expired 3 hours ago",
    );
    // 7 before 10.
    assert_denied(
        &get(gw, "/api/v1/profiles/me", Some(&k.expired)),
        401,
        "UNAUTHORIZED",
        "API key expired 3 hours ago",
    );
    // 8 before 9 and 11.
    assert_denied(
        &get(gw, "/api/v1/company/x", Some(&k.revoked)),
        403,
        "FORBIDDEN",
        "API key was revoked 2 days ago",
    );
    assert_denied(
        &get(gw, "/api/v1/workspaces/ws_b/posts/1", Some(&k.revoked)),
        403,
        "FORBIDDEN",
        "API key was revoked 2 days ago",
    );
    // 9 before 11 and 12.
    assert_denied(
        &send(
            gw,
            "POST",
            "/api/v1/company/workspaces/ws_g/x",
            Some(&k.ws_reader),
        ),
        403,
        "FORBIDDEN",
        "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
    );
    // 10 before 11.
    assert_denied(
        &get(gw, "/api/v1/workspaces/ws_g/records/1", Some(&k.admin)),
        403,
        "FORBIDDEN",
        "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.",
    );
    // 11 before 12.
    assert_denied(
        &send(
            gw,
            "POST",
            "/api/v1/workspaces/ws_b/posts/1",
            Some(&k.ws_reader),
        ),
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_b",
    );
    // 12 before 13: an exhausted key still gets the scope answer.
    for _ in 0..2 {
        assert_eq!(get(gw, "/api/v1/company/x", Some(&k.limited)).status, 200);
    }
    assert_eq!(get(gw, "/api/v1/company/x", Some(&k.limited)).status, 429);
    assert_denied(
        &send(gw, "POST", "/api/v1/company/x", Some(&k.limited)),
        403,
        "FORBIDDEN",
        "API key is missing the required scope: write:all",
    );
    assert_eq!(fx.up.count(), 2);
}

#[test]
fn rate_limit_answers_before_the_upstream_is_tried() {
    let dead = free_port();
    let (snap, k) = snapshot();
    let gw = Gateway::start(
        &standard_config(([127, 0, 0, 1], dead).into(), "", ""),
        &snap.render(),
    );
    for _ in 0..2 {
        let r = get(&gw, "/api/v1/company/x", Some(&k.limited));
        assert_denied(&r, 502, "BAD_GATEWAY", "Upstream api is unavailable");
    }
    let r = get(&gw, "/api/v1/company/x", Some(&k.limited));
    assert_eq!(r.status, 429, "13 before 14");
}
