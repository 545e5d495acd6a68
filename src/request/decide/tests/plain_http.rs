//! Row 4: plain HTTP.

use super::*;

#[test]
fn plain_http_reject_is_403_before_key_checks() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let r = run(
        &p,
        "GET",
        "/api/v1/company/workspaces",
        Authorization::Absent,
        false,
        NOW,
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::HttpsRequired
        })
    );
    assert_body(
        &Denial::HttpsRequired,
        403,
        "FORBIDDEN",
        "HTTPS is required",
    );
    // Even a good key on a public route is refused over plain HTTP.
    let header = format!("Bearer {ACME_ADMIN}");
    let d = denial(run(
        &p,
        "GET",
        "/healthz",
        Authorization::One(header.as_bytes()),
        false,
        NOW,
    ));
    assert_eq!(d, Denial::HttpsRequired);
}

#[test]
fn tls_requests_pass_plain_http_reject() {
    let mut p = policy();
    p.plain_http = PlainHttp::Reject;
    let d = denial(run(
        &p,
        "GET",
        "/api/v1/company/workspaces",
        Authorization::Absent,
        true,
        NOW,
    ));
    assert_eq!(d, Denial::MissingToken);
    let header = format!("Bearer {ACME_ADMIN}");
    assert_eq!(
        passed(run(
            &p,
            "GET",
            "/api/v1/company/workspaces",
            Authorization::One(header.as_bytes()),
            true,
            NOW
        )),
        allowed("company", Some("acme_admin"), None)
    );
}

#[test]
fn plain_http_allowed_by_default() {
    let p = policy();
    assert_eq!(p.plain_http, PlainHttp::Allow);
    assert!(with_key(&p, "GET", "/api/v1/company/x", ACME_ADMIN).is_ok());
}
