//! Row 6: invalid key.

use super::*;

#[test]
fn unknown_hash_is_invalid_key() {
    let p = policy();
    let r = with_key(
        &p,
        "GET",
        "/api/v1/company",
        "ord_c_NotInTheSnapshot0000000000000000000",
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::InvalidKey
        })
    );
    let d = Denial::InvalidKey;
    assert_body(&d, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn unknown_prefix_is_invalid_even_when_its_hash_is_listed() {
    let p = policy();
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/company", FOREIGN_PREFIX)),
        Denial::InvalidKey
    );
    // A bare prefix is not a key either.
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/company", "ord_c_")),
        Denial::InvalidKey
    );
}

#[test]
fn oversized_token_is_invalid_even_when_its_hash_is_listed() {
    let p = policy();
    let key = oversized_key();
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/profiles/me", &key)),
        Denial::InvalidKey
    );
}

#[test]
fn company_record_presented_with_workspace_prefix_is_invalid_key() {
    let p = policy();
    // The record grants admin on company routes, but the key text says
    // "workspace": the disagreement refuses it outright.
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/company",
            COMPANY_RECORD_WS_PREFIX
        )),
        Denial::InvalidKey
    );
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/workspaces/ws_marketing/posts",
            COMPANY_RECORD_WS_PREFIX
        )),
        Denial::InvalidKey
    );
}

#[test]
fn workspace_record_presented_with_company_prefix_is_invalid_key() {
    let p = policy();
    assert_eq!(
        denial(with_key(
            &p,
            "GET",
            "/api/v1/profiles/me",
            WORKSPACE_RECORD_CO_PREFIX
        )),
        Denial::InvalidKey
    );
}

#[test]
fn two_authorization_headers_are_invalid_key() {
    let p = policy();
    let r = run(
        &p,
        "GET",
        "/api/v1/company",
        Authorization::Many,
        false,
        NOW,
    );
    assert_eq!(
        r,
        Err(Denied {
            route: Some("company".into()),
            denial: Denial::InvalidKey
        })
    );
}

#[test]
fn non_utf8_token_is_invalid_key() {
    let p = policy();
    for header in [
        &b"Bearer ord_c_\xff\xfe\xfd000000000000000000000000000000"[..],
        &b"Bearer \xc3\x28abc"[..],
    ] {
        assert_eq!(
            denial(run(
                &p,
                "GET",
                "/api/v1/company",
                Authorization::One(header),
                false,
                NOW
            )),
            Denial::InvalidKey,
            "{header:?}"
        );
    }
}

#[test]
fn invalid_key_comes_before_expiry() {
    let p = policy();
    // The expired key's text with one character changed is just unknown.
    let tampered = EXPIRED.replace("Expired", "Expirex");
    assert_eq!(
        denial(with_key(&p, "GET", "/api/v1/profiles/me", &tampered)),
        Denial::InvalidKey
    );
}
