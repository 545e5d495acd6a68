//! Row 12: scope.

use super::*;

#[test]
fn missing_write_scope_is_403_with_scope_in_header() {
    let p = policy();
    let r = with_key(&p, "POST", "/api/v1/company/workspaces", ACME_READER);
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::MissingScope(Scope::Write)
        })
    );
    let d = Denial::MissingScope(Scope::Write);
    assert_body(
        &d,
        403,
        "FORBIDDEN",
        "API key is missing the required scope: write:all",
    );
    assert_eq!(
        d.www_authenticate(),
        Some(r#"Bearer error="insufficient_scope", scope="write:all""#)
    );
}

#[test]
fn auto_scope_needs_read_for_get_head_options() {
    let p = policy();
    let path = "/api/v1/workspaces/ws_marketing/posts/1";
    for m in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(
            passed(with_key(&p, m, path, MKT_READ)),
            allowed("posts", Some("mkt_read"), Some("ws_marketing")),
            "{m}"
        );
        assert_eq!(
            denial(with_key(&p, m, path, MKT_WRITE)),
            Denial::MissingScope(Scope::Read),
            "{m}: write does not grant read"
        );
    }
    assert_eq!(
        Denial::MissingScope(Scope::Read).message(),
        "API key is missing the required scope: read:all"
    );
}

#[test]
fn auto_scope_needs_write_for_other_methods() {
    let p = policy();
    let path = "/api/v1/workspaces/ws_marketing/posts/1";
    for m in ["POST", "PUT", "PATCH", "DELETE", "PURGE"] {
        assert_eq!(
            passed(with_key(&p, m, path, MKT_WRITE)),
            allowed("posts", Some("mkt_write"), Some("ws_marketing")),
            "{m}"
        );
        assert_eq!(
            denial(with_key(&p, m, path, MKT_READ)),
            Denial::MissingScope(Scope::Write),
            "{m}"
        );
    }
}

#[test]
fn admin_grants_read_and_write() {
    let p = policy();
    for m in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(
            passed(with_key(&p, m, "/api/v1/company/workspaces", ACME_ADMIN)),
            allowed("company", Some("acme_admin"), None),
            "{m}"
        );
        assert_eq!(
            passed(with_key(&p, m, "/api/v1/profiles/me", MKT_ADMIN)),
            allowed("profiles", Some("mkt_admin"), Some("ws_marketing")),
            "{m}"
        );
    }
}

#[test]
fn admin_route_needs_admin_whatever_the_method() {
    let p = policy();
    for (m, key) in [
        ("GET", ACME_READER),
        ("POST", ACME_WRITER),
        ("GET", ACME_WRITER),
    ] {
        let d = denial(with_key(&p, m, "/api/v1/company/keys", key));
        assert_eq!(d, Denial::MissingScope(Scope::Admin), "{m}");
        assert_eq!(d.message(), "API key is missing the required scope: admin");
        assert_eq!(
            d.www_authenticate(),
            Some(r#"Bearer error="insufficient_scope", scope="admin""#)
        );
    }
    assert_eq!(
        passed(with_key(
            &p,
            "DELETE",
            "/api/v1/company/keys/k1",
            ACME_ADMIN
        )),
        allowed("company_keys", Some("acme_admin"), None)
    );
}

#[test]
fn fixed_scope_route_ignores_the_method() {
    let p = policy();
    // "item" requires read:all even for POST; "item_meta" write:all even for GET.
    assert_eq!(
        passed(with_key(&p, "POST", "/api/v1/items/1", MKT_READ)).route,
        "item"
    );
    assert_eq!(
        denial(with_key(&p, "POST", "/api/v1/items/1", MKT_WRITE)),
        Denial::MissingScope(Scope::Read)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/1/meta", MKT_WRITE)).route,
        "item_meta"
    );
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/items/1/meta", MKT_READ)),
        Denial::MissingScope(Scope::Write)
    );
}

#[test]
fn scope_none_route_needs_only_a_valid_key() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "DELETE", "/api/v1/open/x", ACME_NO_SCOPE)),
        allowed("open", Some("acme_no_scope"), None)
    );
    // Still a key route: no key is still a 401.
    assert_eq!(
        denial(run(
            &p,
            "GET",
            "/api/v1/open/x",
            Authorization::Absent,
            false,
            NOW
        )),
        Denial::MissingToken
    );
}
