//! Row 3: method.

use super::*;

#[test]
fn method_not_in_route_is_405_with_allow_value() {
    let p = policy();
    let r = run(
        &p,
        "DELETE",
        "/docs/intro",
        Authorization::Absent,
        false,
        NOW,
    );
    let Err(Denied { route, denial: d }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(route.as_deref(), Some("docs"));
    assert_eq!(
        d,
        Denial::MethodNotAllowed {
            method: Method::DELETE,
            allowed: "GET, HEAD".into()
        }
    );
    assert_body(
        &d,
        405,
        "METHOD_NOT_ALLOWED",
        "Method DELETE is not allowed on this route",
    );
}

#[test]
fn method_check_comes_before_https_and_key_checks() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    // No key, plain HTTP, a read-only key: the method answers first.
    let d = denial(run(
        &p,
        "PATCH",
        "/api/v1/workspaces/ws_marketing/records/1",
        Authorization::Absent,
        false,
        NOW,
    ));
    assert_eq!(
        d,
        Denial::MethodNotAllowed {
            method: Method::PATCH,
            allowed: "GET, POST, PUT, DELETE".into()
        }
    );
}

#[test]
fn listed_methods_pass_the_method_check() {
    let p = policy();
    for m in ["GET", "HEAD"] {
        assert_eq!(
            passed(run(&p, m, "/docs/a/b", Authorization::Absent, false, NOW)),
            allowed("docs", None, None)
        );
    }
}
