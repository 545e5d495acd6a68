//! CONTRACT §4 bearer parsing: scheme, token end, repeated and non-UTF-8 `Authorization`.

use super::*;

#[test]
fn bearer_scheme_is_case_insensitive_and_token_ends_at_first_whitespace() {
    let fx = fixture("", "");
    let path = "/api/v1/company/x";
    let key = &fx.k.admin;
    for authorization in [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("BEARER {key}"),
        format!("bEaReR {key}"),
        format!("Bearer     {key}"),
        format!("Bearer {key} trailing words"),
        format!("Bearer   {key}    "),
    ] {
        let r = get_auth(&fx.gw, path, &authorization);
        assert_eq!(r.status, 200, "Authorization: {authorization:?}");
        assert_eq!(fx.up.last().header("x-keygate-key-id"), Some("k_admin"));
    }
    // A token that runs on past the key is another token.
    let r = get_auth(&fx.gw, path, &format!("Bearer {key}extra"));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
}

#[test]
fn two_authorization_headers_are_401_invalid_key() {
    let fx = fixture("", "");
    let key = &fx.k.admin;
    for (first, second) in [
        (key.as_str(), key.as_str()),
        (key.as_str(), fx.k.reader.as_str()),
        (key.as_str(), ""),
    ] {
        let extra = format!("Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n");
        let r = raw(fx.gw.ports.http, &raw_get("/api/v1/company/x", &extra));
        assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    }
    // Through a real client too.
    let r = Reply::from_reqwest(
        fx.gw
            .client
            .get(fx.gw.url("/api/v1/company/x"))
            // `header()` appends: two header lines go out.
            .header("authorization", format!("Bearer {key}"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .unwrap(),
    );
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");
    assert_eq!(fx.up.count(), 0);
}

#[test]
fn non_utf8_authorization_is_401_and_the_gateway_keeps_serving() {
    let fx = fixture("", "");
    let port = fx.gw.ports.http;
    let build = |value: &[u8]| {
        let mut req =
            b"GET /api/v1/company/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ".to_vec();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        req
    };
    let mut invalid = b"Bearer ord_c_".to_vec();
    invalid.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0x80]);
    invalid.extend_from_slice(b"abcdefghijklmnopqrstuvwxyz0123456789");
    let r = raw(port, &build(&invalid));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");

    let mut key_then_junk = format!("Bearer {}", fx.k.admin).into_bytes();
    key_then_junk.extend_from_slice(&[0xff, 0xfe]);
    let r = raw(port, &build(&key_then_junk));
    assert_denied(&r, 401, "UNAUTHORIZED", "Invalid or unauthorized API key");

    let r = raw(port, &build(&[0xff, 0xfe, 0x20, 0x80]));
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");

    let mut scheme_junk = vec![0xc2, 0xa0];
    scheme_junk.extend_from_slice(format!("Bearer {}", fx.k.admin).as_bytes());
    let r = raw(port, &build(&scheme_junk));
    assert_denied(&r, 401, "UNAUTHORIZED", "Missing bearer token");

    assert_eq!(fx.up.count(), 0);
    let r = get(&fx.gw, "/api/v1/company/x", Some(&fx.k.admin));
    assert_eq!(r.status, 200, "the gateway still serves");
    assert!(
        !fx.gw.log().contains("panicked"),
        "a panic in the log:\n{}",
        fx.gw.log()
    );
}
