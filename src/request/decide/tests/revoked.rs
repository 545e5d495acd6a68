//! Row 8: revoked.

use super::*;

#[test]
fn revoked_key_is_403_with_age() {
    let p = policy();
    let r = with_key(&p, "GET", "/api/v1/profiles/me", REVOKED);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("profiles".into()),
            denial: Denial::Revoked { ago: 2 * 86400 }
        })
    );
    let d = Denial::Revoked { ago: 2 * 86400 };
    assert_body(&d, 403, "FORBIDDEN", "API key was revoked 2 days ago");
    assert_eq!(d.www_authenticate(), None);
}

#[test]
fn revocation_age_uses_the_largest_whole_unit() {
    let p = policy();
    let header = format!("Bearer {REVOKED}");
    let revoked = NOW - 2 * DAY;
    for (after, text) in [
        (0, "API key was revoked 0 seconds ago"),
        (1, "API key was revoked 1 second ago"),
        (45, "API key was revoked 45 seconds ago"),
        (61, "API key was revoked 1 minute ago"),
        (3 * HOUR, "API key was revoked 3 hours ago"),
        (DAY + 1, "API key was revoked 1 day ago"),
    ] {
        let d = denial(run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            revoked + after,
        ));
        assert_eq!(d.message(), text);
    }
    // Before its revocation instant the key works.
    let r = run(
        &p,
        "GET",
        "/api/v1/profiles/me",
        Authorization::One(header.as_bytes()),
        false,
        revoked - 1,
    );
    assert_eq!(
        passed(r),
        allowed("profiles", Some("revoked"), Some("ws_marketing"))
    );
}

#[test]
fn revocation_comes_before_key_type_workspace_and_scope() {
    let p = policy();
    for (method, path) in [
        ("GET", "/api/v1/company/x"),
        ("GET", "/api/v1/workspaces/ws_sales/posts"),
        ("DELETE", "/api/v1/profiles/me"),
    ] {
        assert_eq!(
            denial(with_key(&p, method, path, REVOKED)),
            Denial::Revoked { ago: 2 * 86400 },
            "{method} {path}"
        );
    }
}

#[test]
fn future_revocation_and_expiry_do_not_deny() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/profiles/me", ENDS_LATER)),
        allowed("profiles", Some("ends_later"), Some("ws_marketing"))
    );
}
