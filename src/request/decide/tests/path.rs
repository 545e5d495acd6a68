//! Row 1: path.

use super::*;

#[test]
fn dot_segment_path_is_400_before_route_lookup() {
    let p = policy();
    for path in [
        "/api/v1/company/../keys/x",
        "/api/v1/company/./x",
        "/api/v1/company/%2e%2E/x",
        "/api/v1/company/.%2e",
        "/api/v1/company/%2E/x",
        "/api/v1/company/a%2Fb",
        "/api/v1/company/a\\b",
        "/api/v1/company/a%5Cb",
        "/api/v1/company/a%00b",
        "/api/v1/company/a\0b",
        "/api/v1/company/%zz",
    ] {
        let r = with_key(&p, "GET", path, ACME_ADMIN);
        assert_eq!(
            r,
            Err(Denied {
                route: None,
                denial: Denial::BadPath
            }),
            "{path:?}"
        );
    }
}

#[test]
fn bad_path_with_no_route_is_400_not_404() {
    let p = policy();
    let d = denial(run(
        &p,
        "GET",
        "/nowhere/../x",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d, Denial::BadPath);
    assert_body(&d, 400, "BAD_REQUEST", "Invalid request path");
    assert_eq!(
        &d.body()[..],
        br#"{"code":"BAD_REQUEST","message":"Invalid request path"}"#
    );
}

#[test]
fn bad_path_wins_over_plain_http_reject_and_missing_token() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v1/company/%2e%2e",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(d, Denial::BadPath);
}
