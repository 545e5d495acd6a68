//! Auth = "none".

use super::*;

#[test]
fn auth_none_route_skips_every_key_check() {
    let p = policy();
    let bad = format!("Bearer {REVOKED}");
    for auth in [
        Authorization::Absent,
        Authorization::Many,
        Authorization::One(b"Basic dXNlcjpwYXNz"),
        Authorization::One(b"Bearer ord_unknown000000000000000000000000000"),
        Authorization::One(bad.as_bytes()),
        Authorization::One(b"Bearer \xff\xfe"),
    ] {
        assert_eq!(
            passed(run(&p, "POST", "/healthz", auth, false, NOW)),
            allowed("health", None, None),
            "{auth:?}"
        );
    }
}
