//! CONTRACT §3 route matching: segment by segment, first match wins.

use super::*;

#[test]
fn routes_match_segment_by_segment_and_first_match_wins() {
    let routes = r#"
[[routes]]
name = "star"
path = "/m/star/*"
upstream = "api"
auth = "none"

[[routes]]
name = "star_mid"
path = "/m/mid/*/end"
upstream = "api"
auth = "none"

[[routes]]
name = "deep"
path = "/m/deep/**"
upstream = "api"
auth = "none"

[[routes]]
name = "order_open"
path = "/m/order/**"
upstream = "api"
auth = "none"

[[routes]]
name = "order_locked"
path = "/m/order/locked"
upstream = "api"
auth = "company"

[[routes]]
name = "lock_exact"
path = "/m/lock/exact"
upstream = "api"
auth = "company"

[[routes]]
name = "lock_rest"
path = "/m/lock/**"
upstream = "api"
auth = "none"

[[routes]]
name = "ws_root"
path = "/m/ws/{workspace}"
upstream = "api"
auth = "any"
"#;
    let fx = fixture("", routes);
    let gw = &fx.gw;
    let open = |path: &str| {
        let r = get(gw, path, None);
        assert_eq!(r.status, 200, "{path} should be proxied");
        assert_eq!(fx.up.last().url, path);
    };
    let no_route = |path: &str, no_query: &str| {
        let r = get(gw, path, None);
        assert_denied(
            &r,
            404,
            "NOT_FOUND",
            &format!("No route for GET {no_query}"),
        );
    };
    // `*`: exactly one segment.
    open("/m/star/a");
    open("/m/star/a?x=/b/c");
    no_route("/m/star", "/m/star");
    no_route("/m/star/a/b", "/m/star/a/b");
    open("/m/mid/anything/end");
    no_route("/m/mid/end", "/m/mid/end");
    no_route("/m/mid/a/b/end", "/m/mid/a/b/end");
    // `**`: zero or more.
    open("/m/deep");
    open("/m/deep/a");
    open("/m/deep/a/b/c/d");
    no_route("/m/deeper", "/m/deeper");
    // First match in file order.
    open("/m/order/locked");
    assert_denied(
        &get(gw, "/m/lock/exact", None),
        401,
        "UNAUTHORIZED",
        "Missing bearer token",
    );
    open("/m/lock/other");
    // Query strings are ignored by matching.
    no_route("/m/star?to=/m/star/a", "/m/star");
    // `{workspace}` binds one segment.
    assert_eq!(get(gw, "/m/ws/ws_b", Some(&fx.k.admin)).status, 200);
    assert_eq!(fx.up.last().header("x-keygate-workspace"), Some("ws_b"));
    assert_denied(
        &get(gw, "/m/ws/ws_b", Some(&fx.k.ws)),
        403,
        "FORBIDDEN",
        "API key does not have access to workspace ws_b",
    );
    no_route("/m/ws/ws_a/more", "/m/ws/ws_a/more");
    no_route("/m/ws", "/m/ws");
    // `{workspace}/posts/**` with zero trailing segments.
    assert_eq!(
        get(gw, "/api/v1/workspaces/ws_a/posts", Some(&fx.k.ws)).status,
        200
    );
    assert_eq!(fx.up.last().header("x-keygate-workspace"), Some("ws_a"));
}
