//! Patterns and first match.

use super::*;

#[test]
fn star_matches_exactly_one_non_empty_segment() {
    let p = policy();
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/items/42", ACME_READER)).route,
        "item"
    );
    assert_eq!(
        passed(with_key(&p, "POST", "/api/v1/items/42/meta", ACME_WRITER)).route,
        "item_meta"
    );
    for path in [
        "/api/v1/items",
        "/api/v1/items/",
        "/api/v1/items/42/other",
        "/api/v1/items/42/meta/x",
    ] {
        assert_eq!(
            denial(with_key(&p, "GET", path, ACME_READER)).status(),
            404,
            "{path}"
        );
    }
    // An empty segment before another is refused before any route (row 1).
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/items//meta", ACME_READER)).status(),
        400
    );
}

#[test]
fn double_star_matches_zero_or_more_segments() {
    let p = policy();
    for path in [
        "/api/v1/company",
        "/api/v1/company/",
        "/api/v1/company/a",
        "/api/v1/company/a/b/c",
        "/docs",
    ] {
        assert!(
            with_key(&p, "GET", path, ACME_ADMIN).is_ok(),
            "{path} should match a ** route"
        );
    }
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/companyx", ACME_ADMIN)).status(),
        404
    );
}

#[test]
fn first_matching_route_wins() {
    let p = policy();
    // "/api/v1/company/keys/..." also matches "company", which only needs read.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/company/keys/list",
            ACME_READER
        )),
        Denial::MissingScope(Scope::Admin)
    );
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/company/keys/list", ACME_ADMIN)).route,
        "company_keys"
    );
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces/ws_sales/x",
            ACME_READER
        )),
        allowed("company_workspace", Some("acme_reader"), Some("ws_sales"))
    );
    // No workspace segment after "workspaces": the broader route takes it.
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/workspaces",
            ACME_READER
        )),
        allowed("company", Some("acme_reader"), None)
    );
}

#[test]
fn route_order_is_what_decides() {
    // The same two patterns in the other order: the broad one shadows the other.
    let config = CONFIG.replace(
        "[[routes]]\nname = \"company_keys\"\npath = \"/api/v1/company/keys/**\"",
        "[[routes]]\nname = \"company_first\"\npath = \"/api/v1/company/**\"\nupstream = \"api\"\nauth = \"company\"\nscope = \"auto\"\n\n\
         [[routes]]\nname = \"company_keys\"\npath = \"/api/v1/company/keys/**\"",
    );
    let p = policy_from(&config, &snapshot());
    assert_eq!(
        passed(with_key(
            &p,
            "GET",
            "/api/v1/company/keys/list",
            ACME_READER
        )),
        allowed("company_first", Some("acme_reader"), None)
    );
}

#[test]
fn literal_segments_compare_percent_decoded() {
    let p = policy();
    // Literal segments compare percent-decoded.
    assert_eq!(
        passed(with_key(&p, "GET", "/api/v1/%63ompany/x", ACME_ADMIN)).route,
        "company"
    );
}
