//! Row 2: route.

use super::*;

#[test]
fn no_route_is_404_with_method_and_path() {
    let p = policy();
    let r = run(&p, "DELETE", "/the/path", Authorization::Absent, false, NOW);
    let d = match r {
        Err(Denied {
            route: None,
            denial,
        }) => denial,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        d,
        Denial::NoRoute {
            method: Method::DELETE,
            path: "/the/path".into()
        }
    );
    assert_body(&d, 404, "NOT_FOUND", "No route for DELETE /the/path");
}

#[test]
fn no_route_wins_over_missing_key_and_plain_http() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v2/x",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d.message(), "No route for GET /api/v2/x");
}

#[test]
fn literal_route_does_not_match_longer_or_trailing_slash_paths() {
    let p = policy();
    for path in ["/healthz/", "/healthz/x", "/healthzz", "/"] {
        let d = denial(run(&p, "GET", path, Authorization::Absent, false, NOW));
        assert_eq!(d.status(), 404, "{path}");
    }
}
