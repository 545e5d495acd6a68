//! Row 5: missing token.

use super::*;

#[test]
fn missing_token_is_401() {
    let p = policy();
    let path = "/api/v1/company/workspaces";
    for auth in [
        Authorization::Absent,
        Authorization::One(b""),
        Authorization::One(b"Bearer"),
        Authorization::One(b"Bearer    "),
        Authorization::One(b"Basic dXNlcjpwYXNz"),
        Authorization::One(b"Token ord_c_abc"),
        Authorization::One(b"Bearer:ord_c_abc"),
        Authorization::One(b"\xffBearer ord_c_abc"),
    ] {
        let r = run(&p, "GET", path, auth, false, NOW);
        assert_eq!(
            r,
            Err(Denied {
                route: Some("company".into()),
                denial: Denial::MissingToken
            }),
            "{auth:?}"
        );
    }
    let d = Denial::MissingToken;
    assert_body(&d, 401, "UNAUTHORIZED", "Missing bearer token");
    assert_eq!(d.www_authenticate(), Some("Bearer"));
}

#[test]
fn bearer_is_case_insensitive_and_token_ends_at_whitespace() {
    let p = policy();
    for header in [
        format!("bearer {ACME_ADMIN}"),
        format!("BEARER   {ACME_ADMIN}"),
        format!("Bearer\t{ACME_ADMIN}"),
        format!("Bearer {ACME_ADMIN} trailing words"),
    ] {
        assert_eq!(
            passed(run(
                &p,
                "GET",
                "/api/v1/company",
                Authorization::One(header.as_bytes()),
                false,
                NOW
            )),
            allowed("company", Some("acme_admin"), None),
            "{header:?}"
        );
    }
}
