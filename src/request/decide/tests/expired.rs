//! Row 7: expired.

use super::*;

#[test]
fn expired_key_is_401_with_age() {
    let p = policy();
    let r = with_key(&p, "GET", "/api/v1/profiles/me", EXPIRED);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("profiles".into()),
            denial: Denial::Expired { ago: 3 * 3600 }
        })
    );
    let d = Denial::Expired { ago: 3 * 3600 };
    assert_body(&d, 401, "UNAUTHORIZED", "API key expired 3 hours ago");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn expired_and_revoked_key_gets_the_expired_401() {
    let p = policy();
    let d = denial(with_key(
        &p,
        "GET",
        "/api/v1/profiles/me",
        EXPIRED_AND_REVOKED,
    ));
    assert_eq!(d, Denial::Expired { ago: 3600 });
    assert_body(&d, 401, "UNAUTHORIZED", "API key expired 1 hour ago");
}

#[test]
fn expiry_comes_before_key_type_workspace_and_scope() {
    let p = policy();
    // A workspace key on a company route, another workspace, no write scope:
    // the expiry answers.
    for (method, path, key) in [
        ("GET", "/api/v1/company/x", EXPIRED),
        ("POST", "/api/v1/workspaces/ws_sales/posts", EXPIRED),
        ("GET", "/api/v1/profiles/me", EXPIRED_COMPANY),
        (
            "GET",
            "/api/v1/company/workspaces/ws_research/x",
            EXPIRED_COMPANY,
        ),
    ] {
        assert!(
            matches!(
                denial(with_key(&p, method, path, key)),
                Denial::Expired { .. }
            ),
            "{method} {path}"
        );
    }
}

#[test]
fn key_expires_at_its_instant() {
    let p = policy();
    let header = format!("Bearer {EXPIRED}");
    let at = |now| {
        run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            now,
        )
    };
    let expires = NOW - 3 * HOUR;
    assert_eq!(
        passed(at(expires - 1)),
        allowed("profiles", Some("expired"), Some("ws_marketing"))
    );
    assert_eq!(denial(at(expires)), Denial::Expired { ago: 0 });
}

#[test]
fn expiry_age_uses_the_largest_whole_unit() {
    let p = policy();
    let header = format!("Bearer {EXPIRED}");
    let expires = NOW - 3 * HOUR;
    for (after, text) in [
        (1, "API key expired 1 second ago"),
        (59, "API key expired 59 seconds ago"),
        (60, "API key expired 1 minute ago"),
        (150, "API key expired 2 minutes ago"),
        (HOUR, "API key expired 1 hour ago"),
        (3 * HOUR + 59 * 60, "API key expired 3 hours ago"),
        (DAY - 1, "API key expired 23 hours ago"),
        (DAY, "API key expired 1 day ago"),
        (2 * DAY + 5 * HOUR, "API key expired 2 days ago"),
    ] {
        let d = denial(run(
            &p,
            "GET",
            "/api/v1/profiles/me",
            Authorization::One(header.as_bytes()),
            false,
            expires + after,
        ));
        assert_eq!(d.message(), text);
        assert_eq!(body_json(&d)["message"], text);
    }
}
