//! Rows 9-10: key type.

use super::*;

#[test]
fn workspace_key_on_company_route_is_403() {
    let p = policy();
    // Even an admin workspace key, and before any scope or workspace check.
    for (method, path, key) in [
        ("GET", "/api/v1/company/workspaces", MKT_RW),
        ("POST", "/api/v1/company/keys/new", MKT_ADMIN),
        ("GET", "/api/v1/company/workspaces/ws_sales/x", MKT_RW),
        (
            "GET",
            "/api/v1/company/workspaces/ws_marketing/x",
            MKT_WRITE,
        ),
    ] {
        let d = denial(with_key(&p, method, path, key));
        assert_eq!(d, Denial::NeedsCompanyKey, "{method} {path}");
    }
    assert_body(
        &Denial::NeedsCompanyKey,
        403,
        "FORBIDDEN",
        "This endpoint requires a company API key. Use a company-scoped API key to access company-level resources.",
    );
}

#[test]
fn company_key_on_workspace_route_is_403() {
    let p = policy();
    for (method, path, key) in [
        ("GET", "/api/v1/profiles/me", ACME_ADMIN),
        (
            "GET",
            "/api/v1/workspaces/ws_marketing/records/1",
            ACME_ADMIN,
        ),
        // Another company's workspace and no scope: the key type answers first.
        (
            "POST",
            "/api/v1/workspaces/ws_marketing/records",
            GLOBEX_ADMIN,
        ),
        (
            "POST",
            "/api/v1/workspaces/ws_marketing/records",
            ACME_NO_SCOPE,
        ),
    ] {
        let d = denial(with_key(&p, method, path, key));
        assert_eq!(d, Denial::NeedsWorkspaceKey, "{method} {path}");
    }
    assert_body(
        &Denial::NeedsWorkspaceKey,
        403,
        "FORBIDDEN",
        "This endpoint requires a workspace API key. Use a workspace-scoped API key to access workspace resources.",
    );
}

#[test]
fn any_route_accepts_both_key_types() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/7", ACME_READER)),
        allowed("item", Some("acme_reader"), None)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/7", MKT_READ)),
        allowed("item", Some("mkt_read"), Some("ws_marketing"))
    );
}
