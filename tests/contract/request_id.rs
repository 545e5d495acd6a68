//! CONTRACT §4 `X-Request-Id`: echoed when sane, replaced otherwise.

use super::*;

#[test]
fn request_id_is_echoed_when_sane_and_replaced_otherwise() {
    let fx = fixture("", "");
    let gw = &fx.gw;
    let with_id = |path: &str, key: Option<&str>, id: &str| {
        let mut r = gw.client.get(gw.url(path)).header("x-request-id", id);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        Reply::from_reqwest(r.send().unwrap())
    };
    let path = "/api/v1/company/x";

    // Sane: echoed to the client and passed to the upstream.
    let sane = "client-req_42.abc:DEF";
    let r = with_id(path, Some(&fx.k.admin), sane);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some(sane));
    assert_eq!(fx.up.last().header("x-request-id"), Some(sane));
    // Also on denials.
    let r = with_id(path, None, sane);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some(sane));
    let r = with_id("/nope", None, sane);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some(sane));

    // Insane: replaced, with the replacement sent upstream.
    let long = "a".repeat(300);
    // A key pasted as the id (the client's own or another's) would be
    // echoed, sent upstream and logged: it is not a sane id.
    let pasted = fx.k.reader.clone();
    // Glued to what comes before it, it is still the key.
    let glued = format!("1{pasted}");
    for insane in [
        long.as_str(),
        "has spaces in it",
        "<script>x</script>",
        "",
        pasted.as_str(),
        glued.as_str(),
    ] {
        let r = with_id(path, Some(&fx.k.admin), insane);
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").expect("x-request-id").to_string();
        assert!(!id.is_empty() && id != insane, "{insane:?} kept");
        assert!(id.len() <= 128 && !id.contains(' '));
        assert_eq!(fx.up.last().header("x-request-id"), Some(id.as_str()));
        let r = with_id(path, None, insane);
        assert_eq!(r.status, 401);
        let id = r.header("x-request-id").expect("x-request-id on a denial");
        assert!(
            !id.is_empty() && id != insane,
            "{insane:?} kept on a denial"
        );
    }

    // None sent: a fresh one each time, the same one the upstream saw.
    let a = get(gw, path, Some(&fx.k.admin));
    let a_id = a.header("x-request-id").expect("generated id").to_string();
    assert_eq!(fx.up.last().header("x-request-id"), Some(a_id.as_str()));
    let b = get(gw, path, Some(&fx.k.admin));
    let b_id = b.header("x-request-id").expect("generated id").to_string();
    assert_ne!(a_id, b_id);
    let d1 = get(gw, path, None);
    let d2 = get(gw, path, None);
    assert_ne!(d1.header("x-request-id"), d2.header("x-request-id"));
    assert!(d1.header("x-request-id").is_some_and(|v| !v.is_empty()));
    assert_no_secret_in(&gw.log(), "the gateway log");
}
